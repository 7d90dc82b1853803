"""The ONNX importer's converters: one function per ONNX op type (:data:`CONVERTERS`), each turning a node - its
int8 inputs, constants and attributes - into IR nodes through the :class:`sw.frontends.onnx_graph.Importer`.

A compute op on dequantized inputs (QDQ) returns a pending result that the following ``QuantizeLinear`` emits with
its output quantization and any fused ``Relu`` / ``Clip`` clamp; a QOperator op (``QLinearConv``, ...) builds the
same pending result and emits it at once with its own output quantization, so both forms share one converter."""

from __future__ import annotations

import math

import numpy as np

from sim.arith import preprocess_softmax_scaling, quantize_multiplier
from sw import ir

from .onnx_graph import _UNIT, _Act, _Float, _FloatInput, _Pending, _QConst, _quant

__all__ = ["CONVERTERS", "SUPPORTED_OPS"]

# ---------------------------------------------------------------------------------------------------------------
# Quantize / Dequantize
# ---------------------------------------------------------------------------------------------------------------

def _qdq_params(imp, node):
    imp.check_attrs(node, {"axis", "saturate", "block_size", "output_dtype"})
    a = imp.attrs(node)
    if a.get("block_size", 0):
        raise imp.error(node, f"attribute 'block_size' = {a['block_size']}: blocked quantization is not supported")
    scale = imp.const(node, 1, "scale")
    zp = imp.const(node, 2, "zero point", optional=True)
    if zp is None:       # ONNX: zero point 0 of the output_dtype attribute's type, uint8 without it
        dtype = np.uint8
        if a.get("output_dtype"):
            dtype = imp.onnx.helper.tensor_dtype_to_np_dtype(a["output_dtype"])
        zp = np.zeros(scale.shape, dtype)
    return scale, zp, a.get("axis", 1)


def _quantize_linear(imp, node):
    scale, zp, axis = _qdq_params(imp, node)
    out = node.output[0]
    v = imp.get(node, 0)
    where = f"node {node.name!r} (QuantizeLinear)"
    if isinstance(v, _FloatInput):
        quant = _quant(scale, zp, f"{imp.where}: {where}")
        if v.act is not None:
            if imp.quant_of(v.act) != quant:
                raise imp.error(node, f"graph input {v.name!r} is quantized twice with different parameters")
            imp.values[out] = v.act
            return
        rank = len(v.shape)
        shape = (v.shape[2], v.shape[3], v.shape[1]) if rank == 4 else tuple(v.shape[1:])
        imp.tensors[v.name] = ir.Tensor(v.name, shape, quant)
        v.act = _Act(v.name, v.shape, "nchw" if rank == 4 else "plain")
        imp.values[out] = v.act
    elif isinstance(v, _Pending):
        quant = _quant(scale, zp, f"{imp.where}: {where}")
        # Relu / Clip before QuantizeLinear clamp the real values: the int8 bounds are those values quantized as
        # QuantizeLinear does (float32 division, round half to even)
        lo = -128 if v.lo == -math.inf else \
            max(-128, quant.zero_point + int(np.rint(np.float32(v.lo) / np.float32(quant.scale))))
        hi = 127 if v.hi == math.inf else \
            min(127, quant.zero_point + int(np.rint(np.float32(v.hi) / np.float32(quant.scale))))
        if lo > hi:
            raise imp.error(node, f"the fused clamp [{v.lo}, {v.hi}] is empty at scale {quant.scale}")
        imp.current = v.node          # the IR node(s) come from the op, not from this QuantizeLinear
        imp.values[out] = v.emit(out, quant, lo, hi)
    elif isinstance(v, _Float):
        quant = _quant(scale, zp, f"{imp.where}: {where}")
        imp.values[out] = imp.requantize(v.act, quant, -128, 127, out, imp.node_base(node))
    elif isinstance(v, np.ndarray):
        raise imp.error(node, f"quantizes the constant {node.input[0]!r} at load time; store quantized weights "
                        f"(as onnxruntime does) instead")
    else:
        raise imp.error(node, f"input {node.input[0]!r} is already quantized")


def _dequantize_linear(imp, node):
    scale, zp, axis = _qdq_params(imp, node)
    v = imp.get(node, 0)
    out = node.output[0]
    if isinstance(v, np.ndarray):
        scale = np.asarray(scale, np.float32)
        if scale.size == 1:
            axis_ = None
        else:
            axis_ = axis % v.ndim
            if scale.ndim != 1 or scale.shape[0] != v.shape[axis_]:
                raise imp.error(node, f"scale of shape {scale.shape} does not match axis {axis} of {v.shape}")
        imp.values[out] = _QConst(v, scale.reshape(-1), np.asarray(zp).reshape(-1), axis_, node.input[0])
    elif isinstance(v, _Act):
        quant = _quant(scale, zp, f"{imp.where}: node {node.name!r} (DequantizeLinear)")
        if quant != imp.quant_of(v):
            raise imp.error(node, f"dequantizes {node.input[0]!r} with {quant}, but it was quantized with "
                            f"{imp.quant_of(v)}")
        imp.values[out] = _Float(v)
    else:
        raise imp.error(node, f"input {node.input[0]!r} is not an int8 tensor or a quantized constant")


# ---------------------------------------------------------------------------------------------------------------
# Weights, bias and requantization parameters
# ---------------------------------------------------------------------------------------------------------------

def _weight(imp, node, w: _QConst, channel_axis, channels, what="weight"):
    """int8 weight values and per-channel (or per-tensor) scales, checked: symmetric, quantized per output channel."""
    if w.q.dtype != np.int8:
        raise imp.error(node, f"{what} {w.source!r} is {w.q.dtype}; only int8 weights are supported "
                        f"(quantize with weight_type=QuantType.QInt8)")
    if np.any(w.zero_point != 0):
        raise imp.error(node, f"{what} {w.source!r} has non-zero zero points {np.unique(w.zero_point)[:4]}; only "
                        f"symmetric weights (zero point 0) are supported")
    if w.axis is not None and w.axis != channel_axis:
        raise imp.error(node, f"{what} {w.source!r} is quantized along axis {w.axis}; per-channel scales must be "
                        f"along the output-channel axis {channel_axis}")
    scale = np.asarray(w.scale, np.float64)
    if not np.all(np.isfinite(scale) & (scale > 0)):
        raise imp.error(node, f"{what} {w.source!r} has non-positive or non-finite scales")
    if scale.size not in (1, channels):
        raise imp.error(node, f"{what} {w.source!r} has {scale.size} scales for {channels} output channels")
    return w.q, scale


def _bias(imp, node, b, s_in, w_scale, channels):
    """int32 bias with scale S_in * S_w[c]; ``b`` is a _QConst (QDQ) or an int32 array (QOperator) or None."""
    if b is None:
        return np.zeros(channels, np.int32)
    if isinstance(b, _QConst):
        if b.q.dtype != np.int32:
            raise imp.error(node, f"bias {b.source!r} is {b.q.dtype}; an int32 bias is needed")
        if np.any(b.zero_point != 0):
            raise imp.error(node, f"bias {b.source!r} has non-zero zero points")
        expect = np.broadcast_to(np.float32(s_in) * np.asarray(w_scale, np.float32), (channels,))
        got = np.broadcast_to(np.asarray(b.scale, np.float64), (channels,))
        if not np.allclose(got, expect, rtol=1e-5, atol=0):
            i = int(np.argmax(np.abs(got - expect) / expect))
            raise imp.error(node, f"bias {b.source!r} scale {got[i]:.8g} (channel {i}) is not input scale x weight "
                            f"scale = {expect[i]:.8g}; the int32 bias must use scale S_in * S_w")
        q = b.q
    elif isinstance(b, np.ndarray):
        if b.dtype != np.int32:
            raise imp.error(node, f"bias is {b.dtype}; an int32 bias is needed")
        q = b
    else:
        raise imp.error(node, "the bias must be a quantized constant (int32 DequantizeLinear initializer)")
    q = np.asarray(q).reshape(-1)
    if q.shape != (channels,):
        raise imp.error(node, f"bias has {q.size} values for {channels} output channels")
    return q.astype(np.int32)


def _requant_params(s_in, w_scale, s_out, channels):
    """Per-channel (multiplier, shift) of S_in * S_w[c] / S_out, computed in double from the float32 scales (TFLite)."""
    real = float(s_in) * np.broadcast_to(np.asarray(w_scale, np.float64), (channels,)) / float(s_out)
    m, s = quantize_multiplier(real)
    return m, s.astype(np.int32)


def _add_params(s1, s2, s_out, left_shift=20):
    """TFLite's int8 ADD rescaling (PrepareGeneralSubOp): inputs to a common scale 2*max(S1, S2) / 2**20."""
    twice_max = 2.0 * max(s1, s2)
    m1, e1 = quantize_multiplier(s1 / twice_max)
    m2, e2 = quantize_multiplier(s2 / twice_max)
    mo, eo = quantize_multiplier(twice_max / ((1 << left_shift) * s_out))
    return dict(input1_multiplier=int(m1[0]), input1_shift=int(e1[0]), input2_multiplier=int(m2[0]),
                input2_shift=int(e2[0]), output_multiplier=int(mo[0]), output_shift=int(eo[0]),
                left_shift=left_shift)


def _softmax_params(imp, node, s_in, beta=1.0):
    """TFLite's int8 SOFTMAX parameters (PreprocessSoftmaxScaling with 5 integer bits, CalculateInputRadius)."""
    try:
        m, e, diff_min = preprocess_softmax_scaling(beta, s_in, 5)
    except ValueError as exc:
        raise imp.error(node, str(exc)) from None
    return dict(beta=beta, input_multiplier=m, input_left_shift=e, diff_min=diff_min)


# ---------------------------------------------------------------------------------------------------------------
# Convolution
# ---------------------------------------------------------------------------------------------------------------

def _auto_pad(imp, node, mode, in_hw, kernel, stride, dilation, pads):
    if mode in ("", "NOTSET"):
        if pads is None:
            return (0, 0, 0, 0)
        if len(pads) != 4 or any(p < 0 for p in pads):
            raise imp.error(node, f"attribute 'pads' = {list(pads)}: four non-negative values are needed")
        t, l, b, r = pads
        return (t, b, l, r)
    if mode == "VALID":
        return (0, 0, 0, 0)
    if mode in ("SAME_UPPER", "SAME_LOWER"):
        out = []
        for size, k, s, d in zip(in_hw, kernel, stride, dilation):
            before, after = ir.same_padding(size, k, s, d)
            out.append((before, after) if mode == "SAME_UPPER" else (after, before))
        return (out[0][0], out[0][1], out[1][0], out[1][1])
    raise imp.error(node, f"attribute 'auto_pad' = {mode!r} is not supported (NOTSET, VALID, SAME_UPPER, SAME_LOWER)")


def _window_attrs(imp, node, in_hw, kernel, allowed, dilation_ok=True):
    imp.check_attrs(node, allowed)
    a = imp.attrs(node)
    if "kernel_shape" in a and tuple(a["kernel_shape"]) != tuple(kernel):
        raise imp.error(node, f"attribute 'kernel_shape' = {list(a['kernel_shape'])} disagrees with the weight "
                        f"{list(kernel)}")
    if len(kernel) != 2:
        raise imp.error(node, f"a {len(kernel)}-D window is not supported (2-D only)")
    stride = tuple(a.get("strides", (1, 1)))
    dilation = tuple(a.get("dilations", (1, 1)))
    for what, v in (("strides", stride), ("dilations", dilation)):
        if len(v) != 2 or any(x < 1 for x in v):
            raise imp.error(node, f"attribute {what!r} = {list(v)}: two values >= 1 are needed (2-D windows)")
    if not dilation_ok and dilation != (1, 1):
        raise imp.error(node, f"attribute 'dilations' = {list(dilation)} is not supported (only [1, 1])")
    auto = a.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    pads = _auto_pad(imp, node, auto, in_hw, kernel, stride, dilation, a.get("pads"))
    return stride, dilation, pads, a


def _build_conv(imp, node, act: _Act, w: _QConst, b):
    """The pending int8 Conv2D / DepthwiseConv2D of a Conv node (group 1 or group == C_in)."""
    if act.layout != "nchw":
        raise imp.error(node, f"needs a 4-D NCHW input, not shape {list(act.shape)}")
    _, cin, h, wd = act.shape
    if w.q.ndim != 4:
        raise imp.error(node, f"weight {w.source!r} of shape {list(w.q.shape)}: only 2-D convolutions are supported")
    cout, cin_g, kh, kw = w.q.shape
    a = imp.attrs(node)
    group = int(a.get("group", 1))
    stride, dilation, pads, _ = _window_attrs(
        imp, node, (h, wd), (kh, kw), {"group", "kernel_shape", "strides", "dilations", "pads", "auto_pad"})
    weight, w_scale = _weight(imp, node, w, 0, cout)
    s_in = imp.quant_of(act).scale
    bias = _bias(imp, node, b, s_in, w_scale, cout)
    base = imp.node_base(node)
    if group == 1:
        if cin_g != cin:
            raise imp.error(node, f"weight has {cin_g} input channels, the input {cin}")
        cls, kernel = ir.Conv2D, np.transpose(weight, (2, 3, 1, 0))       # OIHW -> HWIO
        extra = {}
    elif group == cin and cin_g == 1 and cout % cin == 0:
        cls, kernel = ir.DepthwiseConv2D, np.transpose(weight[:, 0], (1, 2, 0))   # (C*m, KH, KW) -> (KH, KW, C*m)
        extra = {"depth_multiplier": cout // cin}
    else:
        raise imp.error(node, f"attribute 'group' = {group} is not supported: group 1 (convolution) or group = "
                        f"input channels {cin} (depthwise) only")

    def emit(out, quant, lo, hi):
        m, s = _requant_params(s_in, w_scale, quant.scale, cout)
        t = imp.add_node(cls, base, [act.tensor], out, quant, weight=np.ascontiguousarray(kernel), bias=bias,
                         weight_scale=w_scale, multiplier=m, shift=s, stride=stride, padding=pads,
                         dilation=dilation, act_min=lo, act_max=hi, **extra)
        return imp.act_from_ir(t, act.shape[0], "nchw")
    return _Pending(node, emit)


def _conv(imp, node):
    act = imp.act_of(node, 0)
    w = imp.get(node, 1)
    if not isinstance(w, _QConst):
        raise imp.error(node, f"weight {node.input[1]!r} must be a constant int8 initializer behind a "
                        f"DequantizeLinear (a non-constant or float weight is not supported)")
    b = imp.get(node, 2, optional=True)
    imp.values[node.output[0]] = _build_conv(imp, node, act, w, b)


def _qlinear_conv(imp, node):
    act = imp.act_of(node, 0)
    _check_input_quant(imp, node, act, 1, 2)
    w = _qconst_from_inputs(imp, node, 3, 4, 5, axis=0)
    b = imp.const(node, 8, "bias", optional=True)
    pend = _build_conv(imp, node, act, w, b)
    _finalize(imp, node, pend, 6, 7)


def _check_input_quant(imp, node, act, si, zi):
    zp = imp.const(node, zi, "zero point", optional=True)
    q = _quant(imp.const(node, si, "scale"), np.uint8(0) if zp is None else zp,
               f"{imp.where}: node {node.name!r} ({node.op_type})")
    if q != imp.quant_of(act):
        raise imp.error(node, f"input {act.tensor!r} is read with {q} but was produced with {imp.quant_of(act)}")


def _qconst_from_inputs(imp, node, qi, si, zi, axis):
    q = imp.const(node, qi, "weight")
    s = np.asarray(imp.const(node, si, "weight scale"), np.float32).reshape(-1)
    z = imp.const(node, zi, "weight zero point", optional=True)
    z = np.zeros(s.shape, q.dtype) if z is None else np.asarray(z).reshape(-1)
    return _QConst(q, s, z, None if s.size == 1 else axis, node.input[qi])


def _finalize(imp, node, pend: _Pending, si, zi):
    """Emit a QOperator node's pending result with the output quantization of inputs (si, zi)."""
    zp = imp.const(node, zi, "output zero point", optional=True) if zi is not None else None
    quant = _quant(imp.const(node, si, "output scale"), np.uint8(0) if zp is None else zp,   # ONNX's default
                   f"{imp.where}: node {node.name!r} ({node.op_type})")
    imp.values[node.output[0]] = pend.emit(node.output[0], quant, -128, 127)


# ---------------------------------------------------------------------------------------------------------------
# Fully connected (Gemm, MatMul)
# ---------------------------------------------------------------------------------------------------------------

def _build_fc(imp, node, act: _Act, w: _QConst, b, trans_b):
    """A pending FullyConnected: ``act`` (N, K) times the (K, N) weight (after transB) plus bias."""
    if len(act.shape) != 2:
        raise imp.error(node, f"needs a 2-D (batch, features) input, not shape {list(act.shape)} (flatten first)")
    if w.q.ndim != 2:
        raise imp.error(node, f"weight {w.source!r} of shape {list(w.q.shape)} must be 2-D")
    q = w.q.T if trans_b else w.q                       # (K, N)
    k, n = q.shape
    channel_axis = 0 if trans_b else 1
    weight, w_scale = _weight(imp, node, w, channel_axis, n)
    if act.shape[1] != k:
        raise imp.error(node, f"weight takes {k} features, the input {list(act.shape)} has {act.shape[1]}")
    weight = np.ascontiguousarray(weight.T if trans_b else weight)
    if act.layout == "flat_nchw":
        # The IR input is the (H, W, C) tensor; ONNX row i is element (c, h, w) in C, H, W order.
        h, wd, c = imp.ir_shape(act)
        order = np.arange(c * h * wd).reshape(c, h, wd).transpose(1, 2, 0).reshape(-1)
        weight = np.ascontiguousarray(weight[order])
    s_in = imp.quant_of(act).scale
    bias = _bias(imp, node, b, s_in, w_scale, n)
    base = imp.node_base(node)

    def emit(out, quant, lo, hi):
        m, s = _requant_params(s_in, w_scale, quant.scale, n)
        t = imp.add_node(ir.FullyConnected, base, [act.tensor], out, quant, weight=weight, bias=bias,
                         weight_scale=w_scale, multiplier=m, shift=s, act_min=lo, act_max=hi)
        return imp.act_from_ir(t, act.shape[0], "plain")
    return _Pending(node, emit)


def _gemm_attrs(imp, node, allowed):
    imp.check_attrs(node, allowed)
    a = imp.attrs(node)
    if a.get("transA", 0):
        raise imp.error(node, f"attribute 'transA' = {a['transA']} is not supported (0 only)")
    for what in ("alpha", "beta"):
        if what in a and a[what] != 1.0:
            raise imp.error(node, f"attribute {what!r} = {a[what]} is not supported (1.0 only)")
    return int(a.get("transB", 0))


def _gemm(imp, node):
    trans_b = _gemm_attrs(imp, node, {"alpha", "beta", "transA", "transB"})
    act = imp.act_of(node, 0)
    w = imp.get(node, 1)
    if not isinstance(w, _QConst):
        raise imp.error(node, f"weight {node.input[1]!r} must be a constant int8 initializer behind a "
                        f"DequantizeLinear")
    b = imp.get(node, 2, optional=True)
    if isinstance(b, _QConst) and b.q.ndim == 2 and b.q.shape[0] == 1:
        b = _QConst(b.q.reshape(-1), b.scale, b.zero_point, b.axis, b.source)
    imp.values[node.output[0]] = _build_fc(imp, node, act, w, b, trans_b)


def _matmul(imp, node):
    imp.check_attrs(node, set())
    act = imp.act_of(node, 0)
    w = imp.get(node, 1)
    if not isinstance(w, _QConst):
        raise imp.error(node, f"the second operand {node.input[1]!r} must be a constant int8 weight behind a "
                        f"DequantizeLinear (activation x activation products are not supported)")
    imp.values[node.output[0]] = _build_fc(imp, node, act, w, None, False)


def _qlinear_matmul(imp, node):
    imp.check_attrs(node, set())
    act = imp.act_of(node, 0)
    _check_input_quant(imp, node, act, 1, 2)
    w = _qconst_from_inputs(imp, node, 3, 4, 5, axis=1)
    _finalize(imp, node, _build_fc(imp, node, act, w, None, False), 6, 7)


def _qgemm(imp, node):
    trans_b = _gemm_attrs(imp, node, {"alpha", "transA", "transB"})
    act = imp.act_of(node, 0)
    _check_input_quant(imp, node, act, 1, 2)
    w = _qconst_from_inputs(imp, node, 3, 4, 5, axis=0 if trans_b else 1)
    b = imp.const(node, 6, "bias", optional=True)
    pend = _build_fc(imp, node, act, w, b, trans_b)
    if len(node.input) < 8 or not node.input[7]:
        imp.values[node.output[0]] = pend     # float output: a later QuantizeLinear decides
    else:
        _finalize(imp, node, pend, 7, 8 if len(node.input) > 8 and node.input[8] else None)


# ---------------------------------------------------------------------------------------------------------------
# Add, pooling, activations, softmax
# ---------------------------------------------------------------------------------------------------------------

def _build_add(imp, node, a: _Act, b: _Act):
    a = imp.materialize(a, imp.node_base(node) + "/a") if a.layout != b.layout else a
    b = imp.materialize(b, imp.node_base(node) + "/b") if a.layout != b.layout else b
    if a.shape != b.shape or a.layout != b.layout:
        raise imp.error(node, f"inputs of shapes {list(a.shape)} and {list(b.shape)}: broadcasting is not "
                        f"supported (two activations of one shape only)")
    qa, qb = imp.quant_of(a), imp.quant_of(b)
    base = imp.node_base(node)

    def emit(out, quant, lo, hi):
        t = imp.add_node(ir.Add, base, [a.tensor, b.tensor], out, quant, act_min=lo, act_max=hi,
                         **_add_params(qa.scale, qb.scale, quant.scale))
        return imp.act_from_ir(t, a.shape[0], a.layout)
    return _Pending(node, emit)


def _add(imp, node):
    imp.check_attrs(node, set())
    for i in (0, 1):
        v = imp.get(node, i)
        if isinstance(v, (np.ndarray, _QConst)):
            raise imp.error(node, f"input {i} {node.input[i]!r} is a constant; Add of a constant is not supported "
                            f"(residual Add of two activations only)")
    imp.values[node.output[0]] = _build_add(imp, node, imp.act_of(node, 0), imp.act_of(node, 1))


def _qlinear_add(imp, node):
    imp.check_attrs(node, set())
    a, b = imp.act_of(node, 0), imp.act_of(node, 3)
    _check_input_quant(imp, node, a, 1, 2)
    _check_input_quant(imp, node, b, 4, 5)
    _finalize(imp, node, _build_add(imp, node, a, b), 6, 7)


def _pool_geometry(imp, node, act, allowed, dilation_ok):
    if act.layout != "nchw":
        raise imp.error(node, f"needs a 4-D NCHW input, not shape {list(act.shape)}")
    a = imp.attrs(node)
    if "kernel_shape" not in a:
        raise imp.error(node, "attribute 'kernel_shape' is missing")
    kernel = tuple(a["kernel_shape"])
    _, c, h, w = act.shape
    stride, dilation, pads, a = _window_attrs(imp, node, (h, w), kernel, allowed, dilation_ok)
    if a.get("ceil_mode", 0):
        for size, k, s, p0, p1 in ((h, kernel[0], stride[0], pads[0], pads[1]),
                                   (w, kernel[1], stride[1], pads[2], pads[3])):
            if (size + p0 + p1 - k) % s:
                raise imp.error(node, "attribute 'ceil_mode' = 1 changes the output size here; only ceil_mode 0 "
                                "(or a ceil_mode that does not change the shape) is supported")
    return kernel, stride, pads, a


def _build_average_pool(imp, node, act: _Act):
    kernel, stride, pads, a = _pool_geometry(
        imp, node, act, {"kernel_shape", "strides", "pads", "auto_pad", "ceil_mode", "count_include_pad",
                         "channels_last", "dilations"}, dilation_ok=False)
    if a.get("channels_last", 0):
        raise imp.error(node, "attribute 'channels_last' = 1 is not supported (NCHW only)")
    include_pad = bool(a.get("count_include_pad", 0)) and any(pads)
    q_in = imp.quant_of(act)
    c = act.shape[1]
    base = imp.node_base(node)

    def emit(out, quant, lo, hi):
        if quant == q_in and not include_pad:
            t = imp.add_node(ir.AveragePool2D, base, [act.tensor], out, quant, filter=kernel, stride=stride,
                             padding=pads, act_min=lo, act_max=hi)
        elif include_pad or not any(pads):
            # Divide by the whole window: a depthwise convolution with unit weights and multiplier
            # S_in / (S_out * KH * KW) (padded taps read the zero point, i.e. contribute 0).
            m, s = quantize_multiplier(np.full(c, q_in.scale / (quant.scale * kernel[0] * kernel[1] * _UNIT)))
            t = imp.add_node(ir.DepthwiseConv2D, base, [act.tensor], out, quant,
                             weight=np.full(kernel + (c,), _UNIT, np.int8), bias=np.zeros(c, np.int32),
                             weight_scale=np.full(1, 1.0 / _UNIT), multiplier=m, shift=s.astype(np.int32),
                             stride=stride,
                             padding=pads, act_min=lo, act_max=hi)
        else:
            mid = imp.add_node(ir.AveragePool2D, base, [act.tensor], imp.unique_tensor_name(f"{out}/pooled"), q_in,
                               filter=kernel, stride=stride, padding=pads)
            return imp.requantize(imp.act_from_ir(mid, act.shape[0], "nchw"), quant, lo, hi, out, base)
        return imp.act_from_ir(t, act.shape[0], "nchw")
    return _Pending(node, emit)


def _average_pool(imp, node):
    imp.values[node.output[0]] = _build_average_pool(imp, node, imp.act_of(node, 0))


def _qlinear_average_pool(imp, node):
    act = imp.act_of(node, 0)
    _check_input_quant(imp, node, act, 1, 2)
    _finalize(imp, node, _build_average_pool(imp, node, act), 3, 4)


def _build_global_average_pool(imp, node, act: _Act):
    if act.layout != "nchw":
        raise imp.error(node, f"needs a 4-D NCHW input, not shape {list(act.shape)}")
    q_in = imp.quant_of(act)
    _, c, h, w = act.shape
    base = imp.node_base(node)

    def emit(out, quant, lo, hi):
        m, s = quantize_multiplier(q_in.scale / (quant.scale * h * w))
        t = imp.add_node(ir.Mean, base, [act.tensor], out, quant, multiplier=int(m[0]), shift=int(s[0]),
                         keep_dims=True, act_min=lo, act_max=hi)
        return imp.act_from_ir(t, act.shape[0], "nchw")
    return _Pending(node, emit)


def _global_average_pool(imp, node):
    imp.check_attrs(node, set())
    imp.values[node.output[0]] = _build_global_average_pool(imp, node, imp.act_of(node, 0))


def _qlinear_global_average_pool(imp, node):
    imp.check_attrs(node, {"channels_last"})
    if imp.attrs(node).get("channels_last", 0):
        raise imp.error(node, "attribute 'channels_last' = 1 is not supported (NCHW only)")
    act = imp.act_of(node, 0)
    _check_input_quant(imp, node, act, 1, 2)
    _finalize(imp, node, _build_global_average_pool(imp, node, act), 3, 4)


def _reduce_mean(imp, node):
    """ReduceMean over H and W of an NCHW tensor (what ``adaptive_avg_pool2d(x, 1)`` exports): a global average."""
    imp.check_attrs(node, {"axes", "keepdims", "noop_with_empty_axes"})
    a = imp.attrs(node)
    act = imp.act_of(node, 0)
    axes = a.get("axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        axes = [int(v) for v in np.asarray(imp.const(node, 1, "axes")).reshape(-1)]
    rank = len(act.shape)
    if act.layout != "nchw" or axes is None or sorted(x % rank for x in axes) != [2, 3]:
        raise imp.error(node, f"axes {axes} on shape {list(act.shape)}: only the mean over H and W (axes [2, 3]) of "
                        f"an NCHW tensor is supported (global average pooling)")
    keep = bool(a.get("keepdims", 1))
    pend = _build_global_average_pool(imp, node, act)
    if keep:
        imp.values[node.output[0]] = pend
        return
    base = imp.node_base(node)

    def emit(out, quant, lo, hi):
        mid = pend.emit(imp.unique_tensor_name(f"{out}/keepdims"), quant, lo, hi)
        t = imp.add_node(ir.Reshape, f"{base}/squeeze", [mid.tensor], out, quant, shape=(act.shape[1],))
        return imp.act_from_ir(t, act.shape[0], "plain")
    imp.values[node.output[0]] = _Pending(node, emit)


def _max_pool(imp, node):
    if len(node.output) > 1 and node.output[1]:
        raise imp.error(node, "the Indices output is not supported")
    v = imp.get(node, 0)
    act = imp.act_of(node, 0)
    kernel, stride, pads, a = _pool_geometry(
        imp, node, act, {"kernel_shape", "strides", "pads", "auto_pad", "ceil_mode", "dilations",
                         "storage_order"}, dilation_ok=False)
    q = imp.quant_of(act)
    t = imp.add_node(ir.MaxPool2D, imp.node_base(node), [act.tensor], imp.unique_tensor_name(node.output[0]), q,
                     filter=kernel, stride=stride, padding=pads)
    out = imp.act_from_ir(t, act.shape[0], "nchw")
    # max commutes with the (monotonic) quantization: DQ -> MaxPool is the DQ of the int8 max pool
    imp.values[node.output[0]] = _Float(out) if isinstance(v, _Float) else out


def _clamp_of(imp, node):
    if node.op_type == "Relu":
        imp.check_attrs(node, set())
        return 0.0, math.inf
    imp.check_attrs(node, {"min", "max"})
    a = imp.attrs(node)
    lo, hi = a.get("min", -math.inf), a.get("max", math.inf)
    if len(node.input) > 1 and node.input[1]:
        lo = float(np.asarray(imp.const(node, 1, "min")).reshape(()))
    if len(node.input) > 2 and node.input[2]:
        hi = float(np.asarray(imp.const(node, 2, "max")).reshape(()))
    return float(lo), float(hi)


def _int_clip(imp, node, act):
    """Clip on an int8 tensor (a Brevitas-style Q -> Clip -> DQ narrowing the integer range): the bounds are integers
    of the tensor's own type (uint8 bounds shift by -128 like the values)."""
    if node.op_type == "Relu":
        raise imp.error(node, "Relu on an integer tensor is not supported (onnxruntime fuses it into the producer; "
                        "quantize the model with the Relu in float)")
    bounds = []
    for i, default in ((1, -128), (2, 127)):
        if len(node.input) > i and node.input[i]:
            c = np.asarray(imp.const(node, i, "min" if i == 1 else "max"))
            if c.dtype not in (np.int8, np.uint8) or c.size != 1:
                raise imp.error(node, f"Clip bound {node.input[i]!r} of an int8 tensor must be an int8 or uint8 "
                                f"scalar, not {c.dtype} of shape {c.shape}")
            v = int(c.reshape(())) - (128 if c.dtype == np.uint8 else 0)
            bounds.append(max(-128, min(127, v)))
        else:
            bounds.append(default)
    lo, hi = bounds
    if lo > hi:
        raise imp.error(node, f"Clip bounds [{lo}, {hi}] are empty")
    return imp.requantize(act, imp.quant_of(act), lo, hi, node.output[0], imp.node_base(node))


def _relu_clip(imp, node):
    v = imp.get(node, 0)
    if isinstance(v, _Act):
        imp.values[node.output[0]] = _int_clip(imp, node, v)
        return
    lo, hi = _clamp_of(imp, node)
    if isinstance(v, _Pending):
        imp.values[node.output[0]] = _Pending(v.node, v.emit, max(v.lo, lo), min(v.hi, hi))
    elif isinstance(v, _Float):
        act = v.act
        base = imp.node_base(node)

        def emit(out, quant, qlo, qhi):
            return imp.requantize(act, quant, qlo, qhi, out, base)
        imp.values[node.output[0]] = _Pending(node, emit, lo, hi)
    else:
        imp.act_of(node, 0)  # raises the right error


def _build_softmax(imp, node, act: _Act):
    imp.check_attrs(node, {"axis", "opset"})
    a = imp.attrs(node)
    rank = len(act.shape)
    axis = a.get("axis", -1 if imp.opset.get("ai.onnx", 13) >= 13 else 1)
    if axis % rank != rank - 1 or act.layout == "nchw" and rank == 4:
        raise imp.error(node, f"attribute 'axis' = {axis} on shape {list(act.shape)}: only a softmax over the last "
                        f"axis of a non-image tensor is supported")
    act = imp.materialize(act, imp.node_base(node))
    q_in = imp.quant_of(act)
    base = imp.node_base(node)
    params = _softmax_params(imp, node, q_in.scale)
    fixed = ir.Quant(1.0 / 256.0, -128)

    def emit(out, quant, lo, hi):
        if quant == fixed and (lo, hi) == (-128, 127):
            t = imp.add_node(ir.Softmax, base, [act.tensor], out, fixed, **params)
            return imp.act_from_ir(t, act.shape[0], act.layout)
        mid = imp.add_node(ir.Softmax, base, [act.tensor], imp.unique_tensor_name(f"{out}/softmax"), fixed, **params)
        return imp.requantize(imp.act_from_ir(mid, act.shape[0], act.layout), quant, lo, hi, out, base)
    return _Pending(node, emit)


def _softmax(imp, node):
    imp.values[node.output[0]] = _build_softmax(imp, node, imp.act_of(node, 0))


def _qlinear_softmax(imp, node):
    act = imp.act_of(node, 0)
    _check_input_quant(imp, node, act, 1, 2)
    _finalize(imp, node, _build_softmax(imp, node, act), 3, 4)


# ---------------------------------------------------------------------------------------------------------------
# Layout: Reshape, Flatten, Squeeze, Unsqueeze, Transpose, Identity
# ---------------------------------------------------------------------------------------------------------------

def _layout(fn):
    """A layout converter ``fn(imp, node, act) -> act`` on int8 tensors (QOperator), dequantized ones (QDQ: the
    result is the dequantized layout op) and pending float results (onnxruntime leaves e.g. ReduceMean -> Reshape
    -> QuantizeLinear: the layout op applies once the producer is quantized)."""
    def convert(imp, node):
        v = imp.get(node, 0)
        if imp._all_const(node):          # shape arithmetic on constants
            imp._fold(node)
            return
        if isinstance(v, _QConst) and fn is _identity:
            imp.values[node.output[0]] = v
            return
        if isinstance(v, _Pending):
            def emit(out, quant, lo, hi):
                inner = v.emit(imp.unique_tensor_name(f"{out}/before_{node.op_type.lower()}"), quant, lo, hi)
                return fn(imp, node, inner)
            imp.values[node.output[0]] = _Pending(v.node, emit, v.lo, v.hi)
            return
        act = fn(imp, node, imp.act_of(node, 0))
        imp.values[node.output[0]] = _Float(act) if isinstance(v, _Float) else act
    convert.__name__ = fn.__name__
    convert.__doc__ = fn.__doc__
    return convert


def _reshape_to(imp, node, act: _Act, target: tuple) -> _Act:
    """The activation reshaped (in ONNX element order) to the ONNX shape ``target`` (batch axis kept)."""
    if target[0] != act.shape[0]:
        raise imp.error(node, f"reshapes {list(act.shape)} to {list(target)}: the batch axis must stay first and "
                        f"unchanged")
    if tuple(target) == tuple(act.shape):
        return act
    base = imp.node_base(node)
    q = imp.quant_of(act)
    rest = tuple(target[1:])
    if act.layout == "nchw" and len(rest) == 1:
        h, w, c = imp.ir_shape(act)
        if h * w == 1 or c == 1:     # C,H,W and H,W,C orders coincide
            t = imp.add_node(ir.Reshape, base, [act.tensor], imp.unique_tensor_name(node.output[0]), q, shape=rest)
            return _Act(t, tuple(target), "plain")
        return _Act(act.tensor, tuple(target), "flat_nchw")
    if act.layout == "flat_nchw" and len(rest) == 3:
        h, w, c = imp.ir_shape(act)
        if rest == (c, h, w):
            return _Act(act.tensor, tuple(target), "nchw")
    src = act
    if act.layout == "nchw":
        src_t = imp.add_node(ir.Transpose, f"{base}/to_nchw", [act.tensor],
                             imp.unique_tensor_name(f"{node.output[0]}/nchw"), q, perm=(2, 0, 1))
        src = _Act(src_t, act.shape, "plain")
    src = imp.materialize(src, base)
    if len(rest) == 4 - 1:   # a rank-4 result is an NCHW tensor: its IR tensor is (H, W, C)
        mid = imp.add_node(ir.Reshape, base, [src.tensor], imp.unique_tensor_name(f"{node.output[0]}/chw"), q,
                           shape=rest)
        t = imp.add_node(ir.Transpose, f"{base}/to_nhwc", [mid], imp.unique_tensor_name(node.output[0]), q,
                         perm=(1, 2, 0))
        return _Act(t, tuple(target), "nchw")
    if imp.ir_shape(src) == rest:
        return _Act(src.tensor, tuple(target), "plain")
    t = imp.add_node(ir.Reshape, base, [src.tensor], imp.unique_tensor_name(node.output[0]), q, shape=rest)
    return _Act(t, tuple(target), "plain")


def _reshape(imp, node, act):
    imp.check_attrs(node, {"allowzero"})
    shape = [int(d) for d in np.asarray(imp.const(node, 1, "shape")).reshape(-1)]
    allowzero = imp.attrs(node).get("allowzero", 0)
    out = []
    for i, d in enumerate(shape):
        if d == 0 and not allowzero:
            if i >= len(act.shape):
                raise imp.error(node, f"shape {shape}: a 0 beyond the input's rank {len(act.shape)}")
            d = act.shape[i]
        out.append(d)
    total = int(np.prod(act.shape))
    if out.count(-1) > 1 or any(d < -1 for d in out) or 0 in out:
        raise imp.error(node, f"shape {shape} is not a valid target for {list(act.shape)}")
    if -1 in out:
        known = int(np.prod([d for d in out if d != -1]))
        if known == 0 or total % known:
            raise imp.error(node, f"cannot reshape {list(act.shape)} to {shape}")
        out[out.index(-1)] = total // known
    if int(np.prod(out)) != total:
        raise imp.error(node, f"cannot reshape {list(act.shape)} ({total} elements) to {shape}")
    return _reshape_to(imp, node, act, tuple(out))


def _flatten(imp, node, act):
    imp.check_attrs(node, {"axis"})
    axis = imp.attrs(node).get("axis", 1) % max(len(act.shape), 1)
    if axis != 1:
        raise imp.error(node, f"attribute 'axis' = {axis} is not supported (1: keep the batch axis)")
    return _reshape_to(imp, node, act, (act.shape[0], int(np.prod(act.shape[1:]))))


def _squeeze_unsqueeze(imp, node, act):
    imp.check_attrs(node, {"axes"})
    axes = imp.attrs(node).get("axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        axes = [int(x) for x in np.asarray(imp.const(node, 1, "axes")).reshape(-1)]
    shape = list(act.shape)
    if node.op_type == "Squeeze":
        rank = len(shape)
        axes = [a % rank for a in axes] if axes is not None else [i for i, d in enumerate(shape) if d == 1]
        if any(shape[a] != 1 for a in axes):
            raise imp.error(node, f"attribute 'axes' = {axes}: cannot squeeze non-unit axes of {shape}")
        out = [d for i, d in enumerate(shape) if i not in axes]
    else:
        if axes is None:
            raise imp.error(node, "the axes are missing")
        rank = len(shape) + len(axes)
        axes = sorted(a % rank for a in axes)
        out = shape
        for a in axes:
            out = out[:a] + [1] + out[a:]
    if 0 in axes:
        raise imp.error(node, f"axes {axes}: the batch axis must stay")
    return _reshape_to(imp, node, act, tuple(out))


def _transpose(imp, node, act):
    imp.check_attrs(node, {"perm"})
    act = imp.materialize(act, imp.node_base(node))
    rank = len(act.shape)
    perm = list(imp.attrs(node).get("perm", list(range(rank))[::-1]))
    if sorted(perm) != list(range(rank)) or perm[0] != 0:
        raise imp.error(node, f"attribute 'perm' = {perm}: the batch axis must stay first")
    out_shape = tuple(act.shape[p] for p in perm)

    def ir_axes(layout, r):      # ONNX axis of each IR axis
        return (2, 3, 1) if layout == "nchw" else tuple(range(1, r))
    pos_in = {a: i for i, a in enumerate(ir_axes(act.layout, rank))}
    out_layout = "nchw" if rank == 4 else "plain"
    ir_perm = tuple(pos_in[perm[d]] for d in ir_axes(out_layout, rank))
    if ir_perm == tuple(range(rank - 1)):
        res = _Act(act.tensor, out_shape, out_layout)
    else:
        t = imp.add_node(ir.Transpose, imp.node_base(node), [act.tensor], imp.unique_tensor_name(node.output[0]),
                         imp.quant_of(act), perm=ir_perm)
        res = _Act(t, out_shape, out_layout)
    return res


def _pad(imp, node, act):
    """Constant zero padding of H and W (``F.pad``, TensorFlow-style explicit padding): a 1x1 depthwise
    convolution with unit weights and that padding, whose padded taps read the zero point, i.e. real 0 - exact."""
    imp.check_attrs(node, {"mode", "pads"})
    a = imp.attrs(node)
    mode = a.get("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode != "constant":
        raise imp.error(node, f"attribute 'mode' = {mode!r} is not supported (constant zero padding only)")
    pads = a.get("pads")
    if pads is None:
        pads = [int(v) for v in np.asarray(imp.const(node, 1, "pads")).reshape(-1)]
    rank = len(act.shape)
    if len(node.input) > 3 and node.input[3]:
        axes = [int(v) % rank for v in np.asarray(imp.const(node, 3, "axes")).reshape(-1)]
        full = [0] * (2 * rank)
        for k, ax in enumerate(axes):
            full[ax], full[rank + ax] = pads[k], pads[len(axes) + k]
        pads = full
    q = imp.quant_of(act)
    if len(node.input) > 2 and node.input[2]:
        value = np.asarray(imp.const(node, 2, "constant_value")).reshape(())
        zero = (value.dtype in (np.int8, np.uint8) and int(value) - (128 if value.dtype == np.uint8 else 0)
                == q.zero_point) or (value.dtype.kind == "f" and float(value) == 0.0)
        if not zero:
            raise imp.error(node, f"constant_value {value!r} is not supported (zero padding only: real 0, i.e. "
                            f"the zero point)")
    if act.layout != "nchw" or len(pads) != 8 or any(pads[i] for i in (0, 1, 4, 5)) or min(pads) < 0:
        raise imp.error(node, f"pads {list(pads)} on shape {list(act.shape)}: only non-negative padding of H and W "
                        f"of an NCHW tensor is supported")
    top, left, bottom, right = pads[2], pads[3], pads[6], pads[7]
    c = act.shape[1]
    m, sh = quantize_multiplier(np.full(c, 1.0 / _UNIT))
    t = imp.add_node(ir.DepthwiseConv2D, imp.node_base(node), [act.tensor], imp.unique_tensor_name(node.output[0]),
                     q, weight=np.full((1, 1, c), _UNIT, np.int8), bias=np.zeros(c, np.int32),
                     weight_scale=np.full(1, 1.0 / _UNIT), multiplier=m, shift=sh.astype(np.int32),
                     padding=(top, bottom, left, right))
    return imp.act_from_ir(t, act.shape[0], "nchw")


def _identity(imp, node, act):
    imp.check_attrs(node, set())
    return act


def _shape(imp, node):
    """Shape of an activation: a constant (the batch axis as the model's static size, 1 if symbolic), so the
    shape arithmetic PyTorch's exporter writes around ``view(x.size(0), -1)`` folds away."""
    imp.check_attrs(node, {"start", "end"})
    a = imp.attrs(node)
    v = imp.get(node, 0)
    if isinstance(v, _Pending):
        raise imp.error(node, f"the shape of {node.input[0]!r}, a float tensor no QuantizeLinear quantizes, is "
                        f"not known")
    act = v.act if isinstance(v, _Float) else v if isinstance(v, _Act) else None
    shape = act.shape if act is not None else getattr(v, "shape", None)
    if shape is None:
        imp.act_of(node, 0)   # raises the right error
    dims = np.asarray(shape, np.int64)
    imp.values[node.output[0]] = dims[slice(a.get("start", 0), a.get("end"))]


def _constant(imp, node):
    a = imp.attrs(node)
    if "value" not in a:
        raise imp.error(node, f"only the 'value' attribute is supported, not {sorted(a)}")
    imp.values[node.output[0]] = imp.numpy_helper.to_array(a["value"])


#: Converters by op type (the ONNX domain's and onnxruntime's com.microsoft quantized ops).
CONVERTERS = {
    "QuantizeLinear": _quantize_linear, "DequantizeLinear": _dequantize_linear,
    "Conv": _conv, "Gemm": _gemm, "MatMul": _matmul, "Add": _add,
    "AveragePool": _average_pool, "GlobalAveragePool": _global_average_pool, "ReduceMean": _reduce_mean,
    "MaxPool": _max_pool,
    "Relu": _relu_clip, "Clip": _relu_clip, "Softmax": _softmax,
    "Reshape": _layout(_reshape), "Flatten": _layout(_flatten), "Squeeze": _layout(_squeeze_unsqueeze),
    "Unsqueeze": _layout(_squeeze_unsqueeze), "Transpose": _layout(_transpose), "Identity": _layout(_identity),
    "Pad": _layout(_pad),
    "Constant": _constant, "Shape": _shape,
    "QLinearConv": _qlinear_conv, "QLinearMatMul": _qlinear_matmul, "QGemm": _qgemm, "QLinearAdd": _qlinear_add,
    "QLinearAveragePool": _qlinear_average_pool, "QLinearGlobalAveragePool": _qlinear_global_average_pool,
    "QLinearSoftmax": _qlinear_softmax,
}

#: The op types the importer converts (shape arithmetic on constants is folded besides).
SUPPORTED_OPS = tuple(sorted(CONVERTERS))
