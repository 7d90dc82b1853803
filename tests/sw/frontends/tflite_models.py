"""Seeded TFLite test models, built with the ``tflite`` schema package's builder functions and flatbuffers.Builder
(never by hand), for the frontend tests. :class:`ModelBuilder` holds tensors and operators and writes the file;
:func:`edge_cnn` builds a small network with every supported operator."""

from __future__ import annotations

import flatbuffers
import numpy as np
import tflite

_OPTIONS = {
    "CONV_2D": "Conv2DOptions", "DEPTHWISE_CONV_2D": "DepthwiseConv2DOptions", "AVERAGE_POOL_2D": "Pool2DOptions",
    "MAX_POOL_2D": "Pool2DOptions", "FULLY_CONNECTED": "FullyConnectedOptions", "SOFTMAX": "SoftmaxOptions",
    "ADD": "AddOptions", "RESHAPE": "ReshapeOptions",
}
_TYPES = {np.dtype(np.int8): tflite.TensorType.INT8, np.dtype(np.int32): tflite.TensorType.INT32,
          np.dtype(np.float32): tflite.TensorType.FLOAT32, np.dtype(np.uint8): tflite.TensorType.UINT8,
          np.dtype(np.int16): tflite.TensorType.INT16}
_ACT = {"NONE": 0, "RELU": 1, "RELU_N1_TO_1": 2, "RELU6": 3, "TANH": 4}


class ModelBuilder:
    def __init__(self):
        self.tensors = []       # (name, shape, dtype, scales, zero_points, qdim, data or None)
        self.ops = []           # (op name, inputs, outputs, options dict)
        self.inputs, self.outputs = [], []

    def tensor(self, name, shape, dtype=np.int8, scale=None, zero_point=0, data=None, qdim=0) -> int:
        scales = None if scale is None else np.atleast_1d(np.asarray(scale, np.float32))
        zps = None if scale is None else np.broadcast_to(np.asarray(zero_point, np.int64), scales.shape).copy()
        self.tensors.append((name, tuple(shape), np.dtype(dtype), scales, zps, qdim, data))
        return len(self.tensors) - 1

    def op(self, name, inputs, outputs, **options):
        self.ops.append((name, list(inputs), list(outputs), options))
        return outputs[0]

    # -- writing -----------------------------------------------------------------------------------------------

    def _vector(self, b, start, offsets):
        start(b, len(offsets))
        for off in reversed(offsets):
            b.PrependUOffsetTRelative(off)
        return b.EndVector()

    def _options(self, b, name, o):
        kind = _OPTIONS.get(name)
        if kind is None:
            return 0, 0
        act = _ACT[o.get("activation", "NONE")]
        pad = {"SAME": tflite.Padding.SAME, "VALID": tflite.Padding.VALID}[o.get("padding", "VALID")]
        if kind == "Conv2DOptions":
            tflite.Conv2DOptionsStart(b)
            tflite.Conv2DOptionsAddPadding(b, pad)
            tflite.Conv2DOptionsAddStrideH(b, o.get("stride", (1, 1))[0])
            tflite.Conv2DOptionsAddStrideW(b, o.get("stride", (1, 1))[1])
            tflite.Conv2DOptionsAddDilationHFactor(b, o.get("dilation", (1, 1))[0])
            tflite.Conv2DOptionsAddDilationWFactor(b, o.get("dilation", (1, 1))[1])
            tflite.Conv2DOptionsAddFusedActivationFunction(b, act)
            off = tflite.Conv2DOptionsEnd(b)
        elif kind == "DepthwiseConv2DOptions":
            tflite.DepthwiseConv2DOptionsStart(b)
            tflite.DepthwiseConv2DOptionsAddPadding(b, pad)
            tflite.DepthwiseConv2DOptionsAddStrideH(b, o.get("stride", (1, 1))[0])
            tflite.DepthwiseConv2DOptionsAddStrideW(b, o.get("stride", (1, 1))[1])
            tflite.DepthwiseConv2DOptionsAddDepthMultiplier(b, o.get("depth_multiplier", 1))
            tflite.DepthwiseConv2DOptionsAddDilationHFactor(b, o.get("dilation", (1, 1))[0])
            tflite.DepthwiseConv2DOptionsAddDilationWFactor(b, o.get("dilation", (1, 1))[1])
            tflite.DepthwiseConv2DOptionsAddFusedActivationFunction(b, act)
            off = tflite.DepthwiseConv2DOptionsEnd(b)
        elif kind == "Pool2DOptions":
            tflite.Pool2DOptionsStart(b)
            tflite.Pool2DOptionsAddPadding(b, pad)
            tflite.Pool2DOptionsAddStrideH(b, o["stride"][0])
            tflite.Pool2DOptionsAddStrideW(b, o["stride"][1])
            tflite.Pool2DOptionsAddFilterHeight(b, o["filter"][0])
            tflite.Pool2DOptionsAddFilterWidth(b, o["filter"][1])
            tflite.Pool2DOptionsAddFusedActivationFunction(b, act)
            off = tflite.Pool2DOptionsEnd(b)
        elif kind == "FullyConnectedOptions":
            tflite.FullyConnectedOptionsStart(b)
            tflite.FullyConnectedOptionsAddFusedActivationFunction(b, act)
            off = tflite.FullyConnectedOptionsEnd(b)
        elif kind == "SoftmaxOptions":
            tflite.SoftmaxOptionsStart(b)
            tflite.SoftmaxOptionsAddBeta(b, o.get("beta", 1.0))
            off = tflite.SoftmaxOptionsEnd(b)
        elif kind == "AddOptions":
            tflite.AddOptionsStart(b)
            tflite.AddOptionsAddFusedActivationFunction(b, act)
            off = tflite.AddOptionsEnd(b)
        else:
            shape = b.CreateNumpyVector(np.asarray(o["new_shape"], np.int32))
            tflite.ReshapeOptionsStart(b)
            tflite.ReshapeOptionsAddNewShape(b, shape)
            off = tflite.ReshapeOptionsEnd(b)
        return getattr(tflite.BuiltinOptions, kind), off

    def build(self) -> bytes:
        b = flatbuffers.Builder(1024)
        # Buffers: 0 is the empty sentinel; each constant tensor gets its own.
        buffer_offsets, tensor_buffer = [], []
        tflite.BufferStart(b)
        buffer_offsets.append(tflite.BufferEnd(b))
        for (_, _, dtype, _, _, _, data) in self.tensors:
            if data is None:
                tensor_buffer.append(0)
                continue
            raw = np.ascontiguousarray(np.asarray(data, dtype=dtype)).view(np.uint8).reshape(-1)
            vec = b.CreateNumpyVector(raw)
            tflite.BufferStart(b)
            tflite.BufferAddData(b, vec)
            buffer_offsets.append(tflite.BufferEnd(b))
            tensor_buffer.append(len(buffer_offsets) - 1)
        tensor_offsets = []
        for (name, shape, dtype, scales, zps, qdim, _), buf in zip(self.tensors, tensor_buffer):
            name_off = b.CreateString(name)
            shape_off = b.CreateNumpyVector(np.asarray(shape, np.int32))
            q_off = None
            if scales is not None:
                s_off = b.CreateNumpyVector(scales.astype(np.float32))
                z_off = b.CreateNumpyVector(zps.astype(np.int64))
                tflite.QuantizationParametersStart(b)
                tflite.QuantizationParametersAddScale(b, s_off)
                tflite.QuantizationParametersAddZeroPoint(b, z_off)
                tflite.QuantizationParametersAddQuantizedDimension(b, qdim)
                q_off = tflite.QuantizationParametersEnd(b)
            tflite.TensorStart(b)
            tflite.TensorAddShape(b, shape_off)
            tflite.TensorAddType(b, _TYPES[dtype])
            tflite.TensorAddBuffer(b, buf)
            tflite.TensorAddName(b, name_off)
            if q_off is not None:
                tflite.TensorAddQuantization(b, q_off)
            tensor_offsets.append(tflite.TensorEnd(b))
        codes = sorted({name for name, *_ in self.ops})
        op_offsets = []
        for name, ins, outs, o in self.ops:
            ins_off = b.CreateNumpyVector(np.asarray(ins, np.int32))
            outs_off = b.CreateNumpyVector(np.asarray(outs, np.int32))
            opt_type, opt_off = self._options(b, name, o)
            tflite.OperatorStart(b)
            tflite.OperatorAddOpcodeIndex(b, codes.index(name))
            tflite.OperatorAddInputs(b, ins_off)
            tflite.OperatorAddOutputs(b, outs_off)
            if opt_type:
                tflite.OperatorAddBuiltinOptionsType(b, opt_type)
                tflite.OperatorAddBuiltinOptions(b, opt_off)
            op_offsets.append(tflite.OperatorEnd(b))
        code_offsets = []
        for name in codes:
            code = getattr(tflite.BuiltinOperator, name)
            tflite.OperatorCodeStart(b)
            tflite.OperatorCodeAddDeprecatedBuiltinCode(b, min(code, 127))
            tflite.OperatorCodeAddBuiltinCode(b, code)
            tflite.OperatorCodeAddVersion(b, 1)
            code_offsets.append(tflite.OperatorCodeEnd(b))
        t_vec = self._vector(b, tflite.SubGraphStartTensorsVector, tensor_offsets)
        o_vec = self._vector(b, tflite.SubGraphStartOperatorsVector, op_offsets)
        in_vec = b.CreateNumpyVector(np.asarray(self.inputs, np.int32))
        out_vec = b.CreateNumpyVector(np.asarray(self.outputs, np.int32))
        sg_name = b.CreateString("main")
        tflite.SubGraphStart(b)
        tflite.SubGraphAddTensors(b, t_vec)
        tflite.SubGraphAddInputs(b, in_vec)
        tflite.SubGraphAddOutputs(b, out_vec)
        tflite.SubGraphAddOperators(b, o_vec)
        tflite.SubGraphAddName(b, sg_name)
        sg = tflite.SubGraphEnd(b)
        sg_vec = self._vector(b, tflite.ModelStartSubgraphsVector, [sg])
        codes_vec = self._vector(b, tflite.ModelStartOperatorCodesVector, code_offsets)
        buf_vec = self._vector(b, tflite.ModelStartBuffersVector, buffer_offsets)
        desc = b.CreateString("systolic8 test model")
        tflite.ModelStart(b)
        tflite.ModelAddVersion(b, 3)
        tflite.ModelAddOperatorCodes(b, codes_vec)
        tflite.ModelAddSubgraphs(b, sg_vec)
        tflite.ModelAddDescription(b, desc)
        tflite.ModelAddBuffers(b, buf_vec)
        b.Finish(tflite.ModelEnd(b), file_identifier=b"TFL3")
        return bytes(b.Output())


def _act(mb, name, shape, rng, lo=0.02, hi=0.08, zp=None):
    zp = int(rng.integers(-20, 20)) if zp is None else zp
    return mb.tensor(name, (1,) + tuple(shape), np.int8, scale=float(rng.uniform(lo, hi)), zero_point=zp)


def _weights(rng, shape, per_channel, axis, k):
    w = rng.integers(-127, 128, shape, dtype=np.int8)
    channels = shape[axis]
    scale = rng.uniform(0.5, 1.5, channels if per_channel else 1) * 0.02
    return w, scale.astype(np.float32)


def _out_scale(rng, s_in, s_w, k):
    """An output scale that keeps int8 outputs near +-40 for uniform int8 inputs and weights (std ~74 each)."""
    return float(s_in * float(np.mean(s_w)) * np.sqrt(k) * 74 * 73 / 40 * rng.uniform(0.8, 1.25))


def edge_cnn(seed: int, *, per_channel=False, float_boundary=False) -> bytes:
    """A small seeded edge CNN with every supported TFLite op: CONV_2D (stride 2, SAME, RELU6), DEPTHWISE_CONV_2D
    (depth multiplier 2, SAME, RELU), a 1x1 CONV_2D, ADD (residual, RELU), MAX_POOL_2D (SAME, odd size),
    AVERAGE_POOL_2D (SAME: partial windows), RESHAPE, FULLY_CONNECTED (RELU), FULLY_CONNECTED, SOFTMAX. Weights
    per tensor unless ``per_channel``; ``float_boundary`` adds a float32 input + QUANTIZE and DEQUANTIZE + output."""
    rng = np.random.default_rng(seed)
    mb = ModelBuilder()
    s_x = float(rng.uniform(0.01, 0.05))
    x = mb.tensor("input_int8", (1, 11, 9, 3), np.int8, scale=s_x, zero_point=int(rng.integers(-10, 10)))
    if float_boundary:
        xf = mb.tensor("input", (1, 11, 9, 3), np.float32)
        mb.op("QUANTIZE", [xf], [x])
        mb.inputs = [xf]
    else:
        mb.inputs = [x]

    def conv(inp, cin, cout, k, name, out_shape, **opts):
        w, ws = _weights(rng, (cout, k, k, cin), per_channel, 0, k * k * cin)
        wt = mb.tensor(name + "/w", w.shape, np.int8, scale=ws, zero_point=np.zeros(len(ws), np.int64), data=w)
        in_scale = mb.tensors[inp][3][0]
        bs = (in_scale * ws).astype(np.float64)
        bias = rng.integers(-2000, 2000, cout).astype(np.int32)
        bt = mb.tensor(name + "/b", (cout,), np.int32, scale=bs, zero_point=np.zeros(len(bs), np.int64), data=bias)
        s_out = _out_scale(rng, in_scale, ws, k * k * cin)
        out = mb.tensor(name, (1,) + tuple(out_shape), np.int8, scale=s_out, zero_point=int(rng.integers(-20, 20)))
        return mb.op("CONV_2D", [inp, wt, bt], [out], **opts)

    c1 = conv(x, 3, 8, 3, "conv1", (6, 5, 8), padding="SAME", stride=(2, 2), activation="RELU6")
    # depthwise, multiplier 2 -> 16 channels, per-channel along axis 3
    w = rng.integers(-127, 128, (1, 3, 3, 16), dtype=np.int8)
    ws = (rng.uniform(0.5, 1.5, 16) * 0.02).astype(np.float32)
    wt = mb.tensor("dw/w", w.shape, np.int8, scale=ws, zero_point=np.zeros(16, np.int64), data=w, qdim=3)
    bt = mb.tensor("dw/b", (16,), np.int32, scale=mb.tensors[c1][3][0] * ws, zero_point=np.zeros(16, np.int64),
                   data=rng.integers(-500, 500, 16).astype(np.int32))
    dw_out = mb.tensor("dw", (1, 6, 5, 16), np.int8, scale=_out_scale(rng, mb.tensors[c1][3][0], ws, 9),
                       zero_point=int(rng.integers(-20, 20)))
    d1 = mb.op("DEPTHWISE_CONV_2D", [c1, wt, bt], [dw_out], padding="SAME",
               depth_multiplier=2, activation="RELU")
    p1 = conv(d1, 16, 16, 1, "pw", (6, 5, 16))
    r1 = conv(p1, 16, 16, 3, "res", (6, 5, 16), padding="SAME")
    s_add = (mb.tensors[p1][3][0] + mb.tensors[r1][3][0]) * rng.uniform(0.6, 1.0)
    a1 = mb.op("ADD", [p1, r1], [mb.tensor("add", (1, 6, 5, 16), np.int8, scale=s_add, zero_point=-30)],
               activation="RELU")
    mp_q = mb.tensors[a1]
    m1 = mb.tensor("maxpool", (1, 3, 3, 16), np.int8, scale=float(mp_q[3][0]), zero_point=int(mp_q[4][0]))
    mb.op("MAX_POOL_2D", [a1], [m1], padding="SAME", stride=(2, 2), filter=(2, 2))
    ap = mb.tensor("avgpool", (1, 2, 2, 16), np.int8, scale=float(mp_q[3][0]), zero_point=int(mp_q[4][0]))
    mb.op("AVERAGE_POOL_2D", [m1], [ap], padding="SAME", stride=(2, 2), filter=(3, 3))
    shape_t = mb.tensor("shape", (2,), np.int32, data=np.array([1, 64], np.int32))
    flat = mb.tensor("flat", (1, 64), np.int8, scale=float(mp_q[3][0]), zero_point=int(mp_q[4][0]))
    mb.op("RESHAPE", [ap, shape_t], [flat], new_shape=[1, 64])

    def fc(inp, k, units, name, s_out=None, **opts):
        w = rng.integers(-127, 128, (units, k), dtype=np.int8)
        ws = (rng.uniform(0.5, 1.5, units if per_channel else 1) * 0.02).astype(np.float32)
        wt = mb.tensor(name + "/w", w.shape, np.int8, scale=ws, zero_point=np.zeros(len(ws), np.int64), data=w)
        bt = mb.tensor(name + "/b", (units,), np.int32, scale=mb.tensors[inp][3][0] * ws,
                       zero_point=np.zeros(len(ws), np.int64), data=rng.integers(-3000, 3000, units).astype(np.int32))
        s_out = s_out or _out_scale(rng, mb.tensors[inp][3][0], ws, k)
        out = mb.tensor(name, (1, units), np.int8, scale=s_out, zero_point=int(rng.integers(-20, 20)))
        return mb.op("FULLY_CONNECTED", [inp, wt, bt], [out], **opts)

    f1 = fc(flat, 64, 24, "fc1", activation="RELU")
    f2 = fc(f1, 24, 10, "fc2")
    # A beta that puts the logits' real spread (about 40 LSB) at 2-6 units, so the softmax is neither flat nor
    # one-hot.
    beta = float(rng.uniform(0.05, 0.15)) / float(mb.tensors[f2][3][0])
    sm = mb.tensor("softmax", (1, 10), np.int8, scale=1.0 / 256.0, zero_point=-128)
    mb.op("SOFTMAX", [f2], [sm], beta=beta)
    if float_boundary:
        out = mb.tensor("output", (1, 10), np.float32)
        mb.op("DEQUANTIZE", [sm], [out])
        mb.outputs = [out]
    else:
        mb.outputs = [sm]
    return mb.build()
