"""TFLite frontend: a fully integer-quantized ``.tflite`` model to the graph IR (:mod:`sw.ir`).

The file is parsed with the ``tflite`` schema package (generated FlatBuffers accessors; ``pip install -e
'.[model]'``), one converter per builtin operator in :data:`CONVERTERS`. Semantics are those of TFLite's reference
kernels (``OpResolverType.BUILTIN_REF``): every integer parameter is derived here exactly as the kernels' Prepare
functions derive it -

* CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED: ``QuantizeMultiplier(double(S_in) * double(S_w[c]) /
  double(S_out))`` per output channel (FULLY_CONNECTED rounds once: :data:`FULLY_CONNECTED_ROUNDING`) (a per-tensor weight scale is repeated), the fused activation's clamp from
  CalculateActivationRangeQuantized (float32 division, rounding half away from zero); SAME padding as
  ComputePaddingWithOffset (the odd pixel at the bottom/right).
* ADD: ``left_shift = 20``, ``twice_max = 2 * max(S_a, S_b)``, input multipliers ``S_a / twice_max``,
  ``S_b / twice_max`` and output ``twice_max / (2**20 * S_out)`` through QuantizeMultiplierSmallerThanOneExp.
* SOFTMAX: PreprocessSoftmaxScaling(beta, S_in, 5 integer bits) and ``diff_min = -CalculateInputRadius``.
* AVERAGE_POOL_2D / MAX_POOL_2D: the window at ``out * stride - pad_top/left``, clipped to the input.

Activations must be int8 with one scale and zero point per tensor, weights int8 with zero point 0 (per channel
along the output axis, or per tensor), biases int32. The batch axis (1 in the file) is dropped: IR shapes are per
sample, NHWC as in the file. QUANTIZE (float -> int8) right after a graph input and DEQUANTIZE (int8 -> float)
right before a graph output are dropped; the IR's inputs and outputs are then their int8 tensors
(``graph.metadata["float_inputs"]`` / ``["float_outputs"]`` say so).

Anything else is a :class:`~sw.frontends.common.ModelImportError` naming the operator (index, output tensor, op) and
the cause: an unsupported operator (the message lists :data:`CONVERTERS`), a float or uint8/int16 model, per-axis
activation quantization, non-zero weight zero points, a file that is not TFLite, or a corrupt/truncated one.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from sim.arith import preprocess_softmax_scaling, quantize_multiplier
from sw import ir

from .common import ModelImportError, activation_range, require

__all__ = ["load_tflite", "parse_tflite", "reference_run", "CONVERTERS", "SUPPORTED_OPS"]

# TFLite schema enum values (tflite.TensorType / Padding / ActivationFunctionType), kept here so the module imports
# without the package; load_tflite checks them against the package.
_FLOAT32, _INT32, _UINT8, _INT64, _INT16, _INT8 = 0, 2, 3, 4, 7, 9
_TYPE_NAMES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 5: "string", 6: "bool", 7: "int16",
               9: "int8", 10: "float64", 17: "int4"}
_SAME, _VALID = 0, 1
_ACTIVATIONS = {0: "none", 1: "relu", 2: "relu_n1_to_1", 3: "relu6"}
_ACTIVATION_NAMES = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH", 5: "SIGN_BIT"}

#: How LiteRT's reference FULLY_CONNECTED rounds its requantization. Measured on ai-edge-litert 2.3.0 with
#: BUILTIN_REF (tests/sw/frontends/test_tflite.py re-measures it): one rounding (TFLITE_SINGLE_ROUNDING's formula) -
#: on the two MLPerf Tiny models' FULLY_CONNECTED layers (200 inputs) 0 of 4,400 elements differ that way against 34
#: with gemmlowp's double rounding - while CONV_2D and DEPTHWISE_CONV_2D round twice (with single rounding 361 of
#: 344,064 ResNet-8 convolution outputs differ, with double rounding none). docs/import.md.
FULLY_CONNECTED_ROUNDING = "single"


class _Context:
    """The model being converted: tensor access with checks, and the IR tensors and nodes made so far."""

    def __init__(self, path, buf, model, tfl):
        self.path = path
        self.buf = buf
        self.model = model
        self.tfl = tfl
        self.sub = model.Subgraphs(0)
        self.tensors: dict[str, ir.Tensor] = {}
        self.nodes: list[ir.Node] = []
        self.names: dict[int, str] = {}
        self.alias: dict[int, int] = {}      # tensor index -> tensor it stands for (dropped QUANTIZE/DEQUANTIZE)
        self.op_index = -1
        self.op_name = ""

    # -- errors ------------------------------------------------------------------------------------------------

    def error(self, problem: str, fix: str = "") -> ModelImportError:
        where = f"{self.path}: "
        if self.op_index >= 0:
            op = self.sub.Operators(self.op_index)
            out = self.tensor_name(op.Outputs(0)) if op.OutputsLength() else "?"
            where += f"operator {self.op_index} ({self.op_name}, output tensor {out!r}): "
        return ModelImportError(where + problem + (f"; {fix}" if fix else ""))

    # -- tensors -----------------------------------------------------------------------------------------------

    def raw_tensor(self, index: int):
        if not 0 <= index < self.sub.TensorsLength():
            raise self.error(f"tensor index {index} out of range (the subgraph has {self.sub.TensorsLength()})",
                             "the file is corrupt")
        return self.sub.Tensors(index)

    def tensor_name(self, index: int) -> str:
        if index in self.names:
            return self.names[index]
        t = self.raw_tensor(index)
        name = (t.Name() or b"").decode("utf-8", "replace") or f"tensor{index}"
        if name in self.names.values():
            name = f"{name}#{index}"
        self.names[index] = name
        return name

    def shape(self, index: int) -> tuple:
        t = self.raw_tensor(index)
        return tuple(int(d) for d in t.ShapeAsNumpy()) if t.ShapeLength() else ()

    def type_name(self, index: int) -> str:
        return _TYPE_NAMES.get(self.raw_tensor(index).Type(), f"type {self.raw_tensor(index).Type()}")

    def quant_arrays(self, index: int):
        q = self.raw_tensor(index).Quantization()
        if q is None or q.ScaleLength() == 0:
            return None, None, 0
        scale = q.ScaleAsNumpy().astype(np.float64)
        zp = q.ZeroPointAsNumpy().astype(np.int64) if q.ZeroPointLength() else np.zeros(len(scale), np.int64)
        return scale, zp, int(q.QuantizedDimension())

    def activation(self, index: int, role: str) -> ir.Tensor:
        """The IR tensor of an int8 activation (created on first use)."""
        index = self.alias.get(index, index)
        name = self.tensor_name(index)
        if name in self.tensors:
            return self.tensors[name]
        t = self.raw_tensor(index)
        if t.Type() != _INT8:
            kind = self.type_name(index)
            if t.Type() == _FLOAT32:
                raise self.error(f"{role} tensor {name!r} is float32: this is a float (or partly quantized) model",
                                 "the importer needs a fully integer-quantized model: convert with the TFLite "
                                 "converter's full-integer quantization (optimizations=[tf.lite.Optimize.DEFAULT], "
                                 "a representative_dataset, target_spec.supported_ops=[TFLITE_BUILTINS_INT8])")
            raise self.error(f"{role} tensor {name!r} is {kind}; only int8 activations are supported",
                             "quantize the model to int8 (uint8 and int16 activations are not supported)")
        scale, zp, _ = self.quant_arrays(index)
        if scale is None:
            raise self.error(f"{role} tensor {name!r} is int8 without quantization parameters",
                             "the model must carry a scale and zero point for every activation")
        if len(scale) != 1 or len(zp) != 1:
            raise self.error(f"{role} tensor {name!r} has per-axis quantization ({len(scale)} scales); "
                             f"activations must be quantized per tensor", "re-quantize with per-tensor activations")
        shape = self.shape(index)
        if not shape or shape[0] != 1:
            raise self.error(f"{role} tensor {name!r} has shape {list(shape)}; expected a leading batch axis of 1")
        sig = self.raw_tensor(index).ShapeSignatureAsNumpy() if self.raw_tensor(index).ShapeSignatureLength() else None
        if sig is not None and np.any(sig[1:] < 0):
            raise self.error(f"{role} tensor {name!r} has a dynamic shape {list(sig)}",
                             "only the batch axis may be dynamic")
        per_sample = shape[1:] or (1,)
        try:
            tensor = ir.Tensor(name, per_sample, ir.Quant(float(scale[0]), int(zp[0])))
        except ir.GraphError as exc:
            raise self.error(f"{role} tensor {name!r}: {exc}") from None
        self.tensors[name] = tensor
        return tensor

    def constant(self, index: int, role: str, dtype) -> np.ndarray:
        """The data of a constant tensor (weights, bias, shapes) as ``dtype``."""
        t = self.raw_tensor(index)
        name = self.tensor_name(index)
        want = {np.int8: _INT8, np.int32: _INT32, np.int64: _INT64}[dtype]
        if t.Type() != want:
            if role == "weight" and t.Type() == _FLOAT32:
                raise self.error(f"weight tensor {name!r} is float32: this is a float (or dynamic-range) model",
                                 "the importer needs full-integer quantization (int8 weights and activations)")
            raise self.error(f"{role} tensor {name!r} is {self.type_name(index)}, expected "
                             f"{np.dtype(dtype).name}")
        b = t.Buffer()
        if not 0 < b < self.model.BuffersLength():
            raise self.error(f"{role} tensor {name!r} has no constant data (buffer {b})",
                             "weights, biases and shapes must be constants in the file")
        buffer = self.model.Buffers(b)
        if buffer.Offset() > 1:
            start, size = int(buffer.Offset()), int(buffer.Size())
            if start + size > len(self.buf):
                raise self.error(f"{role} tensor {name!r}: its data lies beyond the end of the file",
                                 "the file is truncated")
            raw = np.frombuffer(self.buf, dtype=np.uint8, count=size, offset=start)
        else:
            raw = buffer.DataAsNumpy() if buffer.DataLength() else np.zeros(0, np.uint8)
        shape = self.shape(index)
        count = int(np.prod(shape, dtype=np.int64))
        itemsize = np.dtype(dtype).itemsize
        if not isinstance(raw, np.ndarray) or raw.size != count * itemsize:
            got = raw.size if isinstance(raw, np.ndarray) else 0
            raise self.error(f"{role} tensor {name!r} of shape {list(shape)} needs {count * itemsize} bytes, the "
                             f"file holds {got}", "the file is corrupt or truncated")
        return np.frombuffer(raw.tobytes(), dtype=np.dtype(dtype).newbyteorder("<")).astype(dtype).reshape(shape)

    def weight_quant(self, index: int, channels: int, axis: int):
        """Per-output-channel scales (float64) of an int8 weight with zero point 0 along ``axis``."""
        name = self.tensor_name(index)
        scale, zp, dim = self.quant_arrays(index)
        if scale is None:
            raise self.error(f"weight tensor {name!r} has no quantization parameters")
        if np.any(zp != 0):
            raise self.error(f"weight tensor {name!r} has non-zero zero points {sorted(set(zp.tolist()))[:4]}",
                             "only symmetric int8 weights (zero point 0) are supported")
        if len(scale) == 1:
            return scale
        if len(scale) != channels or dim != axis:
            raise self.error(f"weight tensor {name!r} is quantized along axis {dim} with {len(scale)} scales; "
                             f"expected per-tensor or {channels} scales along the output-channel axis {axis}")
        return scale

    def bias(self, op, position: int, channels: int) -> np.ndarray:
        if op.InputsLength() <= position or op.Inputs(position) < 0:
            return np.zeros(channels, np.int32)
        b = self.constant(op.Inputs(position), "bias", np.int32).reshape(-1)
        if b.shape != (channels,):
            raise self.error(f"bias has {b.size} values for {channels} output channels")
        return b

    # -- output ------------------------------------------------------------------------------------------------

    def add(self, node: ir.Node) -> None:
        self.nodes.append(node)

    def options(self, op, cls_name: str):
        table = op.BuiltinOptions()
        if table is None:
            return None
        opts = getattr(self.tfl, cls_name)()
        opts.Init(table.Bytes, table.Pos)
        return opts

    def fused(self, code: int, out: ir.Tensor) -> tuple[int, int]:
        if code not in _ACTIVATIONS:
            raise self.error(f"fused activation {_ACTIVATION_NAMES.get(code, code)} is not supported",
                             f"supported: {', '.join(_ACTIVATION_NAMES[c] for c in _ACTIVATIONS)}")
        return activation_range(_ACTIVATIONS[code], out.quant.scale, out.quant.zero_point)

    def node_name(self) -> str:
        return f"{self.op_name.lower()}_{self.op_index}"


def _io(ctx, op, n_in):
    if op.InputsLength() < n_in or op.OutputsLength() != 1:
        raise ctx.error(f"expected at least {n_in} inputs and one output, found {op.InputsLength()} and "
                        f"{op.OutputsLength()}")
    return op


def _requant(ctx, s_in: float, w_scale: np.ndarray, s_out: float, channels: int):
    ws = np.broadcast_to(w_scale, (channels,))
    try:
        m0, shift = quantize_multiplier([float(s_in) * float(s) / float(s_out) for s in ws])
    except ValueError as exc:
        raise ctx.error(f"requantization multiplier out of range: {exc}") from None
    return m0, shift.astype(np.int32)


def _padding(ctx, code, in_hw, kernel, stride, dilation):
    if code == _VALID:
        return (0, 0, 0, 0)
    if code != _SAME:
        raise ctx.error(f"padding {code} is neither SAME nor VALID (corrupt file?)")
    top, bottom = ir.same_padding(in_hw[0], kernel[0], stride[0], dilation[0])
    left, right = ir.same_padding(in_hw[1], kernel[1], stride[1], dilation[1])
    return (top, bottom, left, right)


def _convert_conv2d(ctx, op):
    _io(ctx, op, 2)
    x = ctx.activation(op.Inputs(0), "input")
    out = ctx.activation(op.Outputs(0), "output")
    w = ctx.constant(op.Inputs(1), "weight", np.int8)          # OHWI
    if w.ndim != 4:
        raise ctx.error(f"weight has shape {list(w.shape)}, expected (out, kh, kw, in)")
    cout = w.shape[0]
    if len(x.shape) == 3 and w.shape[3] != x.shape[2]:
        raise ctx.error(f"weight takes {w.shape[3]} input channels, the input has {x.shape[2]} (grouped "
                        f"convolutions are not supported)")
    ws = ctx.weight_quant(op.Inputs(1), cout, 0)
    o = ctx.options(op, "Conv2DOptions")
    stride = (o.StrideH(), o.StrideW())
    dilation = (o.DilationHFactor(), o.DilationWFactor())
    m0, shift = _requant(ctx, x.quant.scale, ws, out.quant.scale, cout)
    lo, hi = ctx.fused(o.FusedActivationFunction(), out)
    ctx.add(ir.Conv2D(name=ctx.node_name(), inputs=(x.name,), outputs=(out.name,),
                      weight=np.ascontiguousarray(w.transpose(1, 2, 3, 0)), bias=ctx.bias(op, 2, cout),
                      weight_scale=ws, multiplier=m0, shift=shift, stride=stride, dilation=dilation,
                      padding=_padding(ctx, o.Padding(), x.shape, w.shape[1:3], stride, dilation),
                      act_min=lo, act_max=hi))


def _convert_depthwise(ctx, op):
    _io(ctx, op, 2)
    x = ctx.activation(op.Inputs(0), "input")
    out = ctx.activation(op.Outputs(0), "output")
    w = ctx.constant(op.Inputs(1), "weight", np.int8)          # (1, KH, KW, C_out)
    if w.ndim != 4 or w.shape[0] != 1:
        raise ctx.error(f"weight has shape {list(w.shape)}, expected (1, kh, kw, channels)")
    cout = w.shape[3]
    cin = x.shape[2] if len(x.shape) == 3 else 0
    if cin == 0 or cout % cin:
        raise ctx.error(f"weight has {cout} output channels for an input of shape {list(x.shape)}")
    ws = ctx.weight_quant(op.Inputs(1), cout, 3)
    o = ctx.options(op, "DepthwiseConv2DOptions")
    stride = (o.StrideH(), o.StrideW())
    dilation = (o.DilationHFactor(), o.DilationWFactor())
    m0, shift = _requant(ctx, x.quant.scale, ws, out.quant.scale, cout)
    lo, hi = ctx.fused(o.FusedActivationFunction(), out)
    # TFLite takes the depth multiplier from the shapes (the option is not always set consistently).
    ctx.add(ir.DepthwiseConv2D(name=ctx.node_name(), inputs=(x.name,), outputs=(out.name,),
                               weight=np.ascontiguousarray(w[0]), bias=ctx.bias(op, 2, cout), weight_scale=ws,
                               multiplier=m0, shift=shift, depth_multiplier=cout // cin, stride=stride,
                               dilation=dilation,
                               padding=_padding(ctx, o.Padding(), x.shape, w.shape[1:3], stride, dilation),
                               act_min=lo, act_max=hi))


def _convert_fully_connected(ctx, op):
    _io(ctx, op, 2)
    x = ctx.activation(op.Inputs(0), "input")
    out = ctx.activation(op.Outputs(0), "output")
    w = ctx.constant(op.Inputs(1), "weight", np.int8)          # (units, K)
    if w.ndim != 2:
        raise ctx.error(f"weight has shape {list(w.shape)}, expected (units, features)")
    units, k = w.shape
    if x.size != k:
        raise ctx.error(f"input {x.name!r} of shape {list(x.shape)} has {x.size} elements per sample, the weight "
                        f"takes {k} (several rows per sample are not supported)")
    o = ctx.options(op, "FullyConnectedOptions")
    if o is not None and o.WeightsFormat() != 0:
        raise ctx.error("shuffled FULLY_CONNECTED weights are not supported", "use the DEFAULT weights format")
    ws = ctx.weight_quant(op.Inputs(1), units, 0)
    m0, shift = _requant(ctx, x.quant.scale, ws, out.quant.scale, units)
    lo, hi = ctx.fused(o.FusedActivationFunction() if o is not None else 0, out)
    fc_out = out
    if out.shape != (units,):
        if out.size != units:
            raise ctx.error(f"output shape {list(out.shape)} does not hold {units} units")
        fc_out = ir.Tensor(out.name + "/flat", (units,), out.quant)
        ctx.tensors[fc_out.name] = fc_out
    ctx.add(ir.FullyConnected(name=ctx.node_name(), inputs=(x.name,), outputs=(fc_out.name,),
                              weight=np.ascontiguousarray(w.T), bias=ctx.bias(op, 2, units), weight_scale=ws,
                              multiplier=m0, shift=shift, act_min=lo, act_max=hi, rounding=FULLY_CONNECTED_ROUNDING))
    if fc_out is not out:
        ctx.add(ir.Reshape(name=ctx.node_name() + "_keepdims", inputs=(fc_out.name,), outputs=(out.name,),
                           shape=out.shape))


def _convert_add(ctx, op):
    _io(ctx, op, 2)
    a = ctx.activation(op.Inputs(0), "input")
    b = ctx.activation(op.Inputs(1), "input")
    out = ctx.activation(op.Outputs(0), "output")
    if a.shape != b.shape:
        raise ctx.error(f"broadcasting ADD ({list(a.shape)} + {list(b.shape)}) is not supported",
                        "both inputs must have the same shape")
    left_shift = 20
    twice_max = 2.0 * max(a.quant.scale, b.quant.scale)
    reals = (a.quant.scale / twice_max, b.quant.scale / twice_max,
             twice_max / (float(1 << left_shift) * out.quant.scale))
    if not reals[2] < 1.0:
        raise ctx.error(f"output rescale {reals[2]} is not below one (TFLite's QuantizeMultiplierSmallerThanOneExp "
                        f"rejects it too)")
    m0, shift = quantize_multiplier(reals)
    o = ctx.options(op, "AddOptions")
    lo, hi = ctx.fused(o.FusedActivationFunction() if o is not None else 0, out)
    ctx.add(ir.Add(name=ctx.node_name(), inputs=(a.name, b.name), outputs=(out.name,),
                   input1_multiplier=int(m0[0]), input1_shift=int(shift[0]),
                   input2_multiplier=int(m0[1]), input2_shift=int(shift[1]),
                   output_multiplier=int(m0[2]), output_shift=int(shift[2]), left_shift=left_shift,
                   act_min=lo, act_max=hi))


def _convert_pool(cls):
    def convert(ctx, op):
        _io(ctx, op, 1)
        x = ctx.activation(op.Inputs(0), "input")
        out = ctx.activation(op.Outputs(0), "output")
        if x.quant != out.quant:
            raise ctx.error(f"input and output quantization differ ({x.quant} vs {out.quant}); TFLite's int8 "
                            f"pooling keeps the input's")
        o = ctx.options(op, "Pool2DOptions")
        filt = (o.FilterHeight(), o.FilterWidth())
        stride = (o.StrideH(), o.StrideW())
        if len(x.shape) != 3:
            raise ctx.error(f"input {x.name!r} of shape {list(x.shape)} is not an image (H, W, C)")
        lo, hi = ctx.fused(o.FusedActivationFunction(), out)
        ctx.add(cls(name=ctx.node_name(), inputs=(x.name,), outputs=(out.name,), filter=filt, stride=stride,
                    padding=_padding(ctx, o.Padding(), x.shape, filt, stride, (1, 1)), act_min=lo, act_max=hi))
    return convert


def _convert_reshape(ctx, op):
    if op.OutputsLength() != 1 or op.InputsLength() < 1:
        raise ctx.error("expected one input (and an optional shape) and one output")
    x = ctx.activation(op.Inputs(0), "input")
    out = ctx.activation(op.Outputs(0), "output")
    if x.quant != out.quant:
        raise ctx.error(f"input and output quantization differ ({x.quant} vs {out.quant}): a RESHAPE that "
                        f"requantizes is not supported")
    ctx.add(ir.Reshape(name=ctx.node_name(), inputs=(x.name,), outputs=(out.name,), shape=out.shape))


def _convert_softmax(ctx, op):
    _io(ctx, op, 1)
    x = ctx.activation(op.Inputs(0), "input")
    out = ctx.activation(op.Outputs(0), "output")
    o = ctx.options(op, "SoftmaxOptions")
    beta = float(o.Beta()) if o is not None else 1.0
    if out.quant != ir.Quant(1.0 / 256.0, -128):
        raise ctx.error(f"int8 SOFTMAX output must have scale 1/256 and zero point -128, not {out.quant}")
    try:
        mult, left, diff_min = preprocess_softmax_scaling(beta, x.quant.scale, 5)
    except ValueError as exc:
        raise ctx.error(str(exc)) from None
    ctx.add(ir.Softmax(name=ctx.node_name(), inputs=(x.name,), outputs=(out.name,), beta=beta,
                       input_multiplier=mult, input_left_shift=left, diff_min=diff_min))


def _convert_transpose(ctx, op):
    _io(ctx, op, 2)
    x = ctx.activation(op.Inputs(0), "input")
    out = ctx.activation(op.Outputs(0), "output")
    perm = ctx.constant(op.Inputs(1), "permutation", np.int32).reshape(-1).tolist()
    if len(perm) != len(x.shape) + 1 or perm[0] != 0:
        raise ctx.error(f"permutation {perm} moves the batch axis", "only per-sample axes may be permuted")
    ctx.add(ir.Transpose(name=ctx.node_name(), inputs=(x.name,), outputs=(out.name,),
                         perm=tuple(p - 1 for p in perm[1:])))


def _boundary_only(ctx, op):
    raise ctx.error("QUANTIZE/DEQUANTIZE inside the graph is not supported (only at the model's inputs and "
                    "outputs)", "re-quantize the model so that every activation is int8")


#: One converter per supported TFLite builtin operator.
CONVERTERS = {
    "CONV_2D": _convert_conv2d,
    "DEPTHWISE_CONV_2D": _convert_depthwise,
    "FULLY_CONNECTED": _convert_fully_connected,
    "ADD": _convert_add,
    "AVERAGE_POOL_2D": _convert_pool(ir.AveragePool2D),
    "MAX_POOL_2D": _convert_pool(ir.MaxPool2D),
    "RESHAPE": _convert_reshape,
    "SOFTMAX": _convert_softmax,
    "TRANSPOSE": _convert_transpose,
    # Only at the model boundary (dropped by _boundary before conversion); anywhere else an error.
    "QUANTIZE": _boundary_only,
    "DEQUANTIZE": _boundary_only,
}
SUPPORTED_OPS = tuple(sorted(CONVERTERS))


def _op_name(ctx, op) -> str:
    from tflite.utils import opcode2name
    idx = op.OpcodeIndex()
    if not 0 <= idx < ctx.model.OperatorCodesLength():
        raise ctx.error(f"operator code index {idx} out of range", "the file is corrupt")
    code = ctx.model.OperatorCodes(idx)
    builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
    if builtin == 32:
        custom = (code.CustomCode() or b"?").decode("utf-8", "replace")
        return f"CUSTOM({custom})"
    try:
        return opcode2name(builtin)
    except ValueError:
        return f"builtin {builtin}"


def _boundary(ctx, ops):
    """Drop QUANTIZE right after a float graph input and DEQUANTIZE right before a float graph output."""
    sub = ctx.sub
    inputs = [int(i) for i in sub.InputsAsNumpy()] if sub.InputsLength() else []
    outputs = [int(i) for i in sub.OutputsAsNumpy()] if sub.OutputsLength() else []
    keep, float_in, float_out = [], [], []
    for index, op, name in ops:
        ins = [op.Inputs(j) for j in range(op.InputsLength())]
        outs = [op.Outputs(j) for j in range(op.OutputsLength())]
        if name == "QUANTIZE" and len(ins) == 1 and ins[0] in inputs and ctx.raw_tensor(ins[0]).Type() == _FLOAT32:
            inputs[inputs.index(ins[0])] = outs[0]
            float_in.append(ctx.tensor_name(ins[0]))
            continue
        if name == "DEQUANTIZE" and len(outs) == 1 and outs[0] in outputs \
                and ctx.raw_tensor(outs[0]).Type() == _FLOAT32:
            outputs[outputs.index(outs[0])] = ins[0]
            float_out.append(ctx.tensor_name(outs[0]))
            continue
        keep.append((index, op, name))
    return keep, inputs, outputs, float_in, float_out


def parse_tflite(buf: bytes, path="<tflite model>") -> ir.Graph:
    """The IR of a TFLite flatbuffer held in ``buf`` (see the module docstring)."""
    tfl = require("tflite", "the TFLite importer")
    if len(buf) < 8 or bytes(buf[4:8]) != b"TFL3":
        head = bytes(buf[:8])
        hint = (" (it looks like an ONNX/protobuf file: load it with the ONNX frontend)" if head[:1] == b"\x08"
                else " (it is a NumPy .npz: load it with sw.model_io)" if head[:2] == b"PK" else "")
        raise ModelImportError(f"{path}: not a TFLite model (no 'TFL3' FlatBuffer identifier){hint}")
    try:
        model = tfl.Model.GetRootAs(buf, 0)
        nsub = model.SubgraphsLength()
        if nsub < 1:
            raise ModelImportError(f"{path}: the model has no subgraph")
        if nsub > 1:
            raise ModelImportError(f"{path}: the model has {nsub} subgraphs; control flow (WHILE/IF/CALL) is not "
                                   f"supported")
        ctx = _Context(path, buf, model, tfl)
        return _convert(ctx)
    except ModelImportError:
        raise
    except (struct.error, IndexError, UnicodeDecodeError, TypeError, ValueError, OverflowError, AttributeError) as exc:
        if isinstance(exc, ir.GraphError):
            raise ModelImportError(f"{path}: the imported graph is inconsistent: {exc}") from None
        raise ModelImportError(f"{path}: corrupt or truncated TFLite file ({type(exc).__name__}: {exc})") from None


def _convert(ctx) -> ir.Graph:
    sub = ctx.sub
    ops = []
    for i in range(sub.OperatorsLength()):
        ctx.op_index = i
        op = sub.Operators(i)
        ctx.op_name = _op_name(ctx, op)
        ops.append((i, op, ctx.op_name))
    ctx.op_index = -1
    if not ops:
        raise ctx.error("the model has no operators")
    ops, inputs, outputs, float_in, float_out = _boundary(ctx, ops)
    for index, op, name in ops:
        ctx.op_index, ctx.op_name = index, name
        convert = CONVERTERS.get(name)
        if convert is None:
            raise ctx.error(f"operator {name} is not supported", f"supported operators: {', '.join(SUPPORTED_OPS)}")
        convert(ctx, op)
    ctx.op_index = -1
    in_names = [ctx.activation(i, "graph input").name for i in inputs]
    out_names = [ctx.activation(i, "graph output").name for i in outputs]
    description = (ctx.model.Description() or b"").decode("utf-8", "replace")
    try:
        return ir.Graph(tensors=ctx.tensors, inputs=in_names, outputs=out_names, nodes=ctx.nodes,
                        name=Path(str(ctx.path)).stem, source="tflite",
                        metadata={"path": str(ctx.path), "description": description,
                                  "float_inputs": float_in, "float_outputs": float_out})
    except ir.GraphError as exc:
        raise ModelImportError(f"{ctx.path}: the imported graph is inconsistent: {exc}") from None


def load_tflite(path) -> ir.Graph:
    """Import a fully integer-quantized ``.tflite`` file as a :class:`sw.ir.Graph`."""
    path = Path(path)
    try:
        buf = path.read_bytes()
    except OSError as exc:
        raise ModelImportError(f"{path}: cannot read the model file ({exc.strerror or exc})") from None
    return parse_tflite(buf, path)


def reference_run(path, inputs, *, num_threads=1) -> np.ndarray:
    """Run the ``.tflite`` model on LiteRT's reference kernels (``OpResolverType.BUILTIN_REF``), one sample at a
    time: ``inputs`` is the int8 batch (N, *input shape per sample) of the model's (single) int8 input; returns the
    int8 output batch (N, *output shape per sample). For a model with a float boundary (QUANTIZE / DEQUANTIZE), the
    int8 values are dequantized into it and the float outputs quantized back with the tensor's parameters."""
    litert = require("ai_edge_litert.interpreter", "the LiteRT reference run")
    interp = litert.Interpreter(model_path=str(path), num_threads=num_threads,
                                experimental_op_resolver_type=litert.OpResolverType.BUILTIN_REF)
    interp.allocate_tensors()
    (inp,) = interp.get_input_details()
    outs = interp.get_output_details()
    out = outs[0]
    x = np.asarray(inputs)
    if x.dtype != np.int8:
        raise ValueError(f"reference_run needs int8 inputs, not {x.dtype}")
    if x.shape[1:] != tuple(inp["shape"][1:]):
        raise ValueError(f"inputs must have shape (N, {', '.join(map(str, inp['shape'][1:]))}), not {x.shape}")
    graph = None
    if inp["dtype"] == np.float32 or out["dtype"] == np.float32:
        graph = load_tflite(path)           # the int8 tensors behind QUANTIZE / DEQUANTIZE
    results = []
    for sample in x:
        v = sample[np.newaxis]
        if inp["dtype"] == np.float32:
            # The model quantizes its float input itself; hand it the real values of the int8 sample.
            v = graph.input.quant.dequantize(v)
        interp.set_tensor(inp["index"], v)
        interp.invoke()
        y = interp.get_tensor(out["index"])
        if y.dtype == np.float32:
            y = graph.output.quant.quantize(y)
        results.append(y[0].copy())
    return np.stack(results)


def _check_enums():
    """The schema enum values this module hard-codes equal the installed package's (run by the tests)."""
    tfl = require("tflite", "the TFLite importer")
    t, p, a = tfl.TensorType, tfl.Padding, tfl.ActivationFunctionType
    assert (t.FLOAT32, t.INT32, t.UINT8, t.INT64, t.INT16, t.INT8) == (_FLOAT32, _INT32, _UINT8, _INT64, _INT16, _INT8)
    assert (p.SAME, p.VALID) == (_SAME, _VALID)
    assert (a.NONE, a.RELU, a.RELU_N1_TO_1, a.RELU6) == (0, 1, 2, 3)
    return True

