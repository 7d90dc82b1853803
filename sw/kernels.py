"""int8 reference kernels of the graph IR (:mod:`sw.ir`), bit-exact with TFLite's reference kernels.

Each kernel takes a batch (N, *shape) of int8 activations and the node, and returns the int8 output batch. The
rounding arithmetic is :mod:`sim.arith` (the project's single home of it); this module only arranges tensors.

========================= ===================================================================================
op                        TFLite reference kernel it matches
========================= ===================================================================================
conv2d                    reference_integer_ops::ConvPerChannel (also per-tensor: the scale repeated)
depthwise_conv2d          reference_integer_ops::DepthwiseConvPerChannel
fully_connected           reference_integer_ops::FullyConnected; LiteRT 2.3 rounds it once (``rounding``)
add                       reference_integer_ops::Add (left_shift 20, MultiplyByQuantizedMultiplierSmallerThanOneExp)
average_pool2d            reference_integer_ops::AveragePool (in-bounds count, rounding half away from zero)
max_pool2d                reference_integer_ops::MaxPool
mean                      sum of (x - Z_in) over H, W, one MultiplyByQuantizedMultiplier, + Z_out
softmax                   reference_ops::Softmax<int8, int8> (gemmlowp exp on Q5.26, reciprocal, 1/256 output)
reshape, transpose        layout only
========================= ===================================================================================

Convolutions and fully connected layers compute exactly what the accelerator does: im2col padded with the input
zero point, an int8 x int8 GEMM on the raw operands with the zero point folded into the bias
(:func:`sw.im2col.fold_zero_point`), then :func:`sim.arith.requantize` - equal to TFLite's ``sum w * (x - Z_in)``
over the in-bounds taps (padded taps contribute ``w * 0``), modulo 2**32 where TFLite's int32 would overflow
(undefined behaviour in C++; no real model comes near it).
"""

from __future__ import annotations

import numpy as np

from sim.arith import (get_reciprocal, exp_on_negative_values, multiply_by_quantized_multiplier,
                       multiply_by_quantized_multiplier_greater_than_one, rdbpot, requantize, srdhm, wrap_int32)

from . import ir
from .im2col import fold_zero_point, im2col
from .reference import _gemm_int64

__all__ = ["KERNELS", "run_node", "graph_forward", "gemm_operands", "conv2d", "depthwise_conv2d",
           "fully_connected", "add", "average_pool2d", "max_pool2d", "mean", "softmax", "reshape", "transpose"]


def gemm_operands(node, x, z_in: int) -> dict:
    """The GEMM of a conv2d or fully_connected node on the int8 batch ``x``: ``A`` (im2col or flattened input),
    ``W`` (K, N), the bias with ``z_in`` folded in, and the epilogue parameters - what the accelerator runs."""
    if isinstance(node, ir.Conv2D):
        a = im2col(x, node.kernel, node.stride, node.padding, int(z_in), node.dilation)
    elif isinstance(node, ir.FullyConnected):
        a = x.reshape(x.shape[0], -1)
    else:
        raise TypeError(f"node {node.name!r} ({node.op}) is not GEMM-shaped")
    w = node.weight_kn
    return dict(a=a, w=w, bias=fold_zero_point(w, node.bias, int(z_in)), multiplier=node.multiplier,
                shift=node.shift, act_min=node.act_min, act_max=node.act_max)


def _gemm_requant(node, ops, z_out):
    acc = _gemm_int64(ops["a"], ops["w"])
    acc += ops["bias"].astype(np.int64)
    return requantize(wrap_int32(acc), ops["multiplier"], ops["shift"], z_out, ops["act_min"], ops["act_max"],
                      node.rounding)


def conv2d(node: ir.Conv2D, x, tin: ir.Tensor, tout: ir.Tensor):
    ops = gemm_operands(node, x, tin.quant.zero_point)
    return _gemm_requant(node, ops, tout.quant.zero_point).reshape((len(x),) + tout.shape)


def fully_connected(node: ir.FullyConnected, x, tin: ir.Tensor, tout: ir.Tensor):
    ops = gemm_operands(node, x, tin.quant.zero_point)
    return _gemm_requant(node, ops, tout.quant.zero_point).reshape((len(x),) + tout.shape)


def depthwise_conv2d(node: ir.DepthwiseConv2D, x, tin: ir.Tensor, tout: ir.Tensor):
    """Per tap, the padded input (filled with Z_in, channels repeated ``depth_multiplier`` times) times the weight."""
    n = len(x)
    oh, ow, cout = tout.shape
    top, bottom, left, right = node.padding
    z = tin.quant.zero_point
    xp = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=z).astype(np.int32) - z
    if node.depth_multiplier > 1:
        xp = np.repeat(xp, node.depth_multiplier, axis=-1)
    sh, sw = node.stride
    dh, dw = node.dilation
    acc = np.zeros((n, oh, ow, cout), dtype=np.int64)
    w = node.weight.astype(np.int64)
    for i in range(node.kernel[0]):
        for j in range(node.kernel[1]):
            tap = xp[:, i * dh: i * dh + (oh - 1) * sh + 1: sh, j * dw: j * dw + (ow - 1) * sw + 1: sw, :]
            acc += tap * w[i, j]
    acc += node.bias.astype(np.int64)
    return requantize(wrap_int32(acc), node.multiplier, node.shift, tout.quant.zero_point, node.act_min,
                      node.act_max, node.rounding)


def add(node: ir.Add, a, b, ta: ir.Tensor, tb: ir.Tensor, tout: ir.Tensor):
    def scaled(v, t, m, s):
        shifted = wrap_int32((v.astype(np.int64) - t.quant.zero_point) << node.left_shift)
        return multiply_by_quantized_multiplier(shifted, m, s).astype(np.int64)
    raw = wrap_int32(scaled(a, ta, node.input1_multiplier, node.input1_shift)
                     + scaled(b, tb, node.input2_multiplier, node.input2_shift))
    y = multiply_by_quantized_multiplier(raw, node.output_multiplier, node.output_shift).astype(np.int64)
    return np.clip(y + tout.quant.zero_point, node.act_min, node.act_max).astype(np.int8)


def _pool_windows(node, x, fill):
    """(padded input, in-bounds mask) windows of shape (N, OH, OW, FH, FW, C)."""
    top, bottom, left, right = node.padding
    xp = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=fill)
    n, h, w, c = xp.shape
    fh, fw = node.filter
    sh, sw = node.stride
    oh = (h - fh) // sh + 1
    ow = (w - fw) // sw + 1
    s = xp.strides
    return np.lib.stride_tricks.as_strided(xp, shape=(n, oh, ow, fh, fw, c),
                                           strides=(s[0], s[1] * sh, s[2] * sw, s[1], s[2], s[3]), writeable=False)


def average_pool2d(node: ir.AveragePool2D, x, tin: ir.Tensor, tout: ir.Tensor):
    """Sum of the in-bounds taps divided by their count: ``(acc +- count/2) / count`` truncated (TFLite)."""
    total = _pool_windows(node, x.astype(np.int64), 0).sum(axis=(3, 4))
    ones = np.ones((1,) + x.shape[1:3] + (1,), dtype=np.int64)
    count = _pool_windows(node, ones, 0).sum(axis=(3, 4))
    half = count // 2
    avg = np.where(total > 0, (total + half) // count, -((half - total) // count))
    return np.clip(avg, node.act_min, node.act_max).astype(np.int8)


def max_pool2d(node: ir.MaxPool2D, x, tin: ir.Tensor, tout: ir.Tensor):
    """Maximum over the in-bounds taps (padding filled with -128, which no in-bounds tap is below)."""
    m = _pool_windows(node, x, np.int8(-128)).max(axis=(3, 4))
    return np.clip(m, node.act_min, node.act_max).astype(np.int8)


def mean(node: ir.Mean, x, tin: ir.Tensor, tout: ir.Tensor):
    acc = (x.astype(np.int64) - tin.quant.zero_point).sum(axis=(1, 2))
    y = multiply_by_quantized_multiplier(wrap_int32(acc), node.multiplier, node.shift).astype(np.int64)
    y = np.clip(y + tout.quant.zero_point, node.act_min, node.act_max).astype(np.int8)
    return y.reshape((len(x),) + tout.shape)


def softmax(node: ir.Softmax, x, tin: ir.Tensor, tout: ir.Tensor):
    """TFLite's int8 softmax over the last axis: exp of the Q5.26 scaled difference to the row maximum (gemmlowp),
    the Q12.19 sum, its reciprocal, and a rounding shift to 1/256 units offset by -128."""
    v = x.astype(np.int64)
    diff = v - v.max(axis=-1, keepdims=True)
    valid = diff >= node.diff_min
    rescaled = multiply_by_quantized_multiplier_greater_than_one(diff, node.input_multiplier, node.input_left_shift)
    exps = exp_on_negative_values(rescaled, 5).astype(np.int64)
    sum_of_exps = np.where(valid, rdbpot(exps, 12).astype(np.int64), 0).sum(axis=-1, keepdims=True)
    sum_of_exps = wrap_int32(sum_of_exps)
    reciprocal, num_bits_over_unit = get_reciprocal(sum_of_exps, 12)
    exponent = num_bits_over_unit + 31 - 8
    out = rdbpot(srdhm(reciprocal, exps), exponent).astype(np.int64) - 128
    out = np.where(valid, np.clip(out, -128, 127), -128)
    return out.astype(np.int8)


def reshape(node: ir.Reshape, x, tin: ir.Tensor, tout: ir.Tensor):
    return x.reshape((len(x),) + tout.shape)


def transpose(node: ir.Transpose, x, tin: ir.Tensor, tout: ir.Tensor):
    return np.ascontiguousarray(np.transpose(x, (0,) + tuple(p + 1 for p in node.perm)))


#: The kernel of every IR op.
KERNELS = {"conv2d": conv2d, "depthwise_conv2d": depthwise_conv2d, "fully_connected": fully_connected, "add": add,
           "average_pool2d": average_pool2d, "max_pool2d": max_pool2d, "mean": mean, "softmax": softmax,
           "reshape": reshape, "transpose": transpose}
assert set(KERNELS) == set(ir.OPS), "every IR op needs a reference kernel"


def run_node(graph: ir.Graph, node: ir.Node, inputs: list) -> np.ndarray:
    """The int8 output batch of ``node`` for its int8 input batches (in ``node.inputs`` order)."""
    tensors = graph.input_tensors(node)
    for arr, t in zip(inputs, tensors):
        if arr.dtype != np.int8 or arr.shape[1:] != t.shape:
            raise ValueError(f"node {node.name!r} ({node.op}): input {t.name!r} must be int8 of shape (N, "
                             f"{', '.join(map(str, t.shape))}), not {arr.dtype} {arr.shape}")
    return KERNELS[node.op](node, *inputs, *tensors, graph.output_tensor(node))


def check_inputs(graph: ir.Graph, inputs) -> dict:
    """``{input name: int8 batch}`` from an array (single-input graphs) or a dict, with shapes checked."""
    if not isinstance(inputs, dict):
        inputs = {graph.input.name: inputs}
    out = {}
    for name in graph.inputs:
        if name not in inputs:
            raise ValueError(f"missing graph input {name!r}; inputs: {list(graph.inputs)}")
        x = np.asarray(inputs[name])
        t = graph.tensors[name]
        if x.dtype != np.int8:
            raise ValueError(f"graph input {name!r} must be int8 (quantize it first: real / {t.quant.scale:g} + "
                             f"{t.quant.zero_point}), not {x.dtype}")
        if x.shape[1:] != t.shape:
            raise ValueError(f"graph input {name!r} must have shape (N, {', '.join(map(str, t.shape))}), "
                             f"not {x.shape}")
        out[name] = x
    return out


def graph_forward(graph: ir.Graph, inputs, *, return_tensors=False):
    """Run the whole graph on int8 input batches; returns the output batch (a dict for several outputs), with
    ``return_tensors=True`` also ``{tensor name: batch}`` of every tensor."""
    values = dict(check_inputs(graph, inputs))
    for node in graph.nodes:
        values[node.output] = run_node(graph, node, [values[t] for t in node.inputs])
    outs = {t: values[t] for t in graph.outputs}
    result = outs[graph.outputs[0]] if len(outs) == 1 else outs
    return (result, values) if return_tensors else result
