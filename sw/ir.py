"""The quantized graph IR: the contract between model frontends and the compiler.

Frontends (``sw.frontends``: TFLite, ONNX, the toolkit's own ``.npz``) produce a :class:`Graph`; the compiler and
the driver consume it and never learn which file format a model came from. Everything format-specific - layout
(NCHW vs NHWC, flatten order), fused activations, how a runtime derives its integer requantization parameters - is
settled in the frontend, once.

Conventions
-----------
* **Tensors** (:class:`Tensor`) are int8 activations with a shape *per sample* (no batch axis): images are
  (H, W, C) NHWC, feature vectors (N,). Each has one per-tensor :class:`Quant`: ``real = scale * (q - zero_point)``;
  ``scale`` is a Python float (float64) holding exactly the file's value (a float32 widened without rounding).
* **Nodes** are listed in topological order; every node reads tensors that are graph inputs or outputs of earlier
  nodes, and writes new tensors (each tensor has one producer). A DAG, so residual connections are two ``Add``
  inputs.
* **Weights** are int8 (per-channel or per-tensor scale, zero point 0), bias int32 (zero point 0, scale
  ``S_in * S_w[c]``, *not* folded with the input zero point). Conv2D weights are HWIO (KH, KW, C_in, C_out);
  depthwise (KH, KW, C_in * depth_multiplier) with output channel ``c * depth_multiplier + m`` reading input
  channel ``c``; fully connected (K, N), input flattened row-major (NHWC order).
* **Requantization** parameters are integers computed by the frontend exactly as the source runtime does
  (``multiplier`` int32 in [2**30, 2**31) or 0, ``shift`` int32 with positive = left; one entry per output
  channel, a per-tensor weight scale repeated): ``y = clamp(MultiplyByQuantizedMultiplier(acc, multiplier, shift)
  + Z_out, act_min, act_max)`` with :func:`sim.arith.requantize`. Fused ReLU / ReLU6 / clamps are ``act_min`` /
  ``act_max``. ``rounding`` says how MultiplyByQuantizedMultiplier rounds: ``"double"`` (gemmlowp's SRDHM then
  RDBPOT, TFLite's default and the accelerator's epilogue) or ``"single"`` (TFLITE_SINGLE_ROUNDING; LiteRT's
  reference FULLY_CONNECTED rounds so).
* Padding is explicit: ``(top, bottom, left, right)``. Conv taps in the padding read the input zero point (they
  contribute nothing); pooling ignores padded taps (average pool divides by the in-bounds count).

:meth:`Graph.validate` checks all of it and raises :class:`GraphError` naming the node (index, name, op) and the
cause. :func:`sw.kernels.graph_forward` (the int8 reference kernels, bit-exact with TFLite's) runs a graph.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

__all__ = [
    "GraphError", "Quant", "Tensor", "Node",
    "Conv2D", "DepthwiseConv2D", "FullyConnected", "Add", "AveragePool2D", "Mean", "MaxPool2D",
    "Reshape", "Transpose", "Softmax",
    "OPS", "Graph", "conv_output_size", "same_padding",
]


class GraphError(ValueError):
    """A graph that is malformed or inconsistent (the message names the node or tensor and the cause)."""


@dataclass(frozen=True)
class Quant:
    """Per-tensor int8 quantization: ``real = scale * (q - zero_point)``."""
    scale: float
    zero_point: int

    def __post_init__(self):
        object.__setattr__(self, "scale", float(self.scale))
        if isinstance(self.zero_point, bool) or not isinstance(self.zero_point, (int, np.integer)):
            raise GraphError(f"zero point must be an integer, not {self.zero_point!r}")
        object.__setattr__(self, "zero_point", int(self.zero_point))
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise GraphError(f"quantization scale must be finite and positive, not {self.scale!r}")
        if not -128 <= self.zero_point <= 127:
            raise GraphError(f"int8 zero point must lie in [-128, 127], not {self.zero_point}")

    def quantize(self, x) -> np.ndarray:
        """int8 of real values: ``clamp(round(x / scale) + zero_point)``, halves away from zero (TFLite)."""
        v = np.asarray(x, dtype=np.float64) / self.scale
        v = np.sign(v) * np.floor(np.abs(v) + 0.5) + self.zero_point
        return np.clip(v, -128, 127).astype(np.int8)

    def dequantize(self, q) -> np.ndarray:
        """Real values (float32) of int8 ``q``."""
        return (self.scale * (np.asarray(q, dtype=np.float64) - self.zero_point)).astype(np.float32)


@dataclass(frozen=True)
class Tensor:
    """An int8 activation tensor: a name, its shape per sample and its quantization."""
    name: str
    shape: tuple
    quant: Quant

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise GraphError(f"tensor names must be non-empty strings, not {self.name!r}")
        try:
            shape = tuple(int(d) for d in self.shape)
        except (TypeError, ValueError):
            raise GraphError(f"tensor {self.name!r}: shape must be a tuple of integers, not {self.shape!r}") from None
        if any(d <= 0 for d in shape):
            raise GraphError(f"tensor {self.name!r}: every dimension must be positive, not {shape}")
        object.__setattr__(self, "shape", shape)
        if not isinstance(self.quant, Quant):
            raise GraphError(f"tensor {self.name!r}: quant must be a sw.ir.Quant, not {type(self.quant).__name__}")

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


def conv_output_size(size: int, kernel: int, stride: int, dilation: int, pad_before: int, pad_after: int) -> int:
    """Output length of one spatial axis of a convolution or pooling window."""
    effective = (kernel - 1) * dilation + 1
    return (size + pad_before + pad_after - effective) // stride + 1


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow 'SAME' padding of one axis as (before, after); the odd pixel goes after."""
    effective = (kernel - 1) * dilation + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def _pair(node, what, value, minimum=1):
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (value, value)
    try:
        value = tuple(value)
    except TypeError:
        raise node.error(f"{what} must be an integer or a pair of them, not {value!r}") from None
    if len(value) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= minimum
                                  for v in value):
        raise node.error(f"{what} must be a pair of integers >= {minimum}, not {value!r}")
    return tuple(int(v) for v in value)


def _padding(node, value):
    try:
        value = tuple(value)
    except TypeError:
        value = ()
    if len(value) != 4 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 0
                                  for v in value):
        raise node.error(f"padding must be four non-negative integers (top, bottom, left, right), not {value!r}")
    return tuple(int(v) for v in value)


def _array(node, what, value, dtype, shape=None):
    arr = np.asarray(value)
    if arr.dtype != dtype:
        info = np.iinfo(dtype)
        if not np.issubdtype(arr.dtype, np.integer) or (arr.size and (arr.min() < info.min or arr.max() > info.max)):
            raise node.error(f"{what} must be {np.dtype(dtype).name}, not {arr.dtype}")
        arr = arr.astype(dtype)
    if shape is not None and arr.shape != tuple(shape):
        raise node.error(f"{what} must have shape {tuple(shape)}, not {arr.shape}")
    arr = np.ascontiguousarray(arr)
    arr.setflags(write=False)
    return arr


def _act_range(node):
    for what in ("act_min", "act_max"):
        v = getattr(node, what)
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise node.error(f"{what} must be an integer, not {v!r}")
        object.__setattr__(node, what, int(v))
    if not -128 <= node.act_min <= node.act_max <= 127:
        raise node.error(f"clamp must satisfy -128 <= act_min <= act_max <= 127, not [{node.act_min}, {node.act_max}]")


@dataclass(frozen=True, eq=False)
class Node:
    """Base of the IR's operators: a name, input and output tensor names. Subclasses add their parameters."""
    name: str
    inputs: tuple
    outputs: tuple

    #: The op's name in the IR (``"conv2d"``, ...); :data:`OPS` maps it to the class.
    op: ClassVar[str] = ""
    #: Number of activation inputs.
    arity: ClassVar[int] = 1
    #: Whether the op is GEMM-shaped (the accelerator can run it).
    gemm: ClassVar[bool] = False

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise GraphError(f"{self.op} node: name must be a non-empty string, not {self.name!r}")
        for what in ("inputs", "outputs"):
            names = getattr(self, what)
            names = (names,) if isinstance(names, str) else tuple(names)
            if not all(isinstance(n, str) and n for n in names):
                raise self.error(f"{what} must be tensor names, not {names!r}")
            object.__setattr__(self, what, names)
        if len(self.inputs) != self.arity:
            raise self.error(f"takes {self.arity} input tensor(s), not {len(self.inputs)}: {self.inputs}")
        if len(self.outputs) != 1:
            raise self.error(f"has one output tensor, not {len(self.outputs)}: {self.outputs}")
        self._check()

    def error(self, problem: str) -> GraphError:
        return GraphError(f"node {self.name!r} ({self.op}): {problem}")

    def _check(self) -> None:
        """Check the node's own parameters (shapes against the graph's tensors are checked by infer)."""

    @property
    def output(self) -> str:
        return self.outputs[0]

    def infer(self, inputs: list) -> tuple:
        """The output shape per sample from the input :class:`Tensor` s (raises GraphError if inconsistent)."""
        raise NotImplementedError

    def check_quant(self, inputs: list, output: Tensor) -> None:
        """Check the quantization rules of the op (e.g. pooling keeps its input's scale)."""

    def macs(self, inputs: list, output: Tensor) -> int:
        """Multiply-accumulates per sample (0 for ops without multiplies)."""
        return 0

    def params(self) -> dict:
        """The node's parameters (everything except name, inputs, outputs) as a dict."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name not in ("name", "inputs", "outputs")}

    def replace(self, **changes) -> "Node":
        return dataclasses.replace(self, **changes)


def _requant_fields(node, channels):
    object.__setattr__(node, "multiplier", _array(node, "multiplier", node.multiplier, np.int32, (channels,)))
    object.__setattr__(node, "shift", _array(node, "shift", node.shift, np.int32, (channels,)))
    m = node.multiplier
    if np.any((m < 0) | ((m != 0) & (m < (1 << 30)))):
        raise node.error("multiplier must be 0 or lie in [2**30, 2**31) (sim.arith.quantize_multiplier's range)")
    if np.any((node.shift < -31) | (node.shift > 31)):
        raise node.error(f"shift must lie in [-31, 31], not {node.shift.min()}..{node.shift.max()}")
    _act_range(node)


def _weight_scale(node, channels):
    ws = np.atleast_1d(np.asarray(node.weight_scale, dtype=np.float64))
    if ws.ndim != 1 or ws.shape[0] not in (1, channels):
        raise node.error(f"weight_scale must hold 1 (per-tensor) or {channels} (per-channel) scales, not shape "
                         f"{ws.shape}")
    if not np.all(np.isfinite(ws) & (ws > 0)):
        raise node.error("weight scales must be finite and positive")
    ws.setflags(write=False)
    object.__setattr__(node, "weight_scale", ws)


def _weights_and_bias(node, weight_ndim, channels_axis=-1):
    w = np.asarray(node.weight)
    if w.dtype != np.int8:
        raise node.error(f"weight must be int8, not {w.dtype}")
    if w.ndim != weight_ndim:
        raise node.error(f"weight must have {weight_ndim} dimensions, not shape {w.shape}")
    w = np.ascontiguousarray(w)
    w.setflags(write=False)
    object.__setattr__(node, "weight", w)
    channels = w.shape[channels_axis]
    b = np.asarray(node.bias)
    if b.dtype not in (np.int32, np.int64) or b.shape != (channels,):
        raise node.error(f"bias must be int32 of shape ({channels},), not {b.dtype} of shape {b.shape}")
    if b.dtype == np.int64 and b.size and (b.min() < -(1 << 31) or b.max() >= (1 << 31)):
        raise node.error("bias values must fit int32")
    b = np.ascontiguousarray(b.astype(np.int32))
    b.setflags(write=False)
    object.__setattr__(node, "bias", b)
    _weight_scale(node, channels)
    _requant_fields(node, channels)
    if node.rounding not in ("double", "single"):
        raise node.error(f"rounding must be 'double' (TFLite's default, the accelerator's) or 'single' "
                         f"(TFLITE_SINGLE_ROUNDING), not {node.rounding!r}")
    if node.rounding == "single" and np.any(node.shift > 30):
        raise node.error("single rounding needs shifts <= 30")
    return channels


@dataclass(frozen=True, eq=False)
class Conv2D(Node):
    """2-D convolution of an (H, W, C_in) tensor with an HWIO int8 weight, int32 bias and per-channel requantization."""
    weight: np.ndarray = None         # int8 (KH, KW, C_in, C_out)
    bias: np.ndarray = None           # int32 (C_out,)
    weight_scale: np.ndarray = None   # float64 (C_out,) or (1,)
    multiplier: np.ndarray = None     # int32 (C_out,)
    shift: np.ndarray = None          # int32 (C_out,)
    stride: tuple = (1, 1)
    padding: tuple = (0, 0, 0, 0)     # top, bottom, left, right
    dilation: tuple = (1, 1)
    act_min: int = -128
    act_max: int = 127
    rounding: str = "double"          # sim.arith.ROUNDINGS

    op: ClassVar[str] = "conv2d"
    gemm: ClassVar[bool] = True

    def _check(self):
        _weights_and_bias(self, 4)
        object.__setattr__(self, "stride", _pair(self, "stride", self.stride))
        object.__setattr__(self, "dilation", _pair(self, "dilation", self.dilation))
        object.__setattr__(self, "padding", _padding(self, self.padding))

    @property
    def kernel(self) -> tuple:
        return tuple(self.weight.shape[:2])

    @property
    def filters(self) -> int:
        return int(self.weight.shape[3])

    def infer(self, inputs):
        (x,) = inputs
        if len(x.shape) != 3:
            raise self.error(f"needs an (H, W, C) input, not {x.shape} ({x.name!r})")
        h, w, c = x.shape
        if c != self.weight.shape[2]:
            raise self.error(f"weight has {self.weight.shape[2]} input channels, input {x.name!r} has {c}")
        return _window_output(self, h, w, self.kernel, self.stride, self.dilation, self.padding) + (self.filters,)

    def macs(self, inputs, output):
        kh, kw, cin, _ = self.weight.shape
        return output.size * kh * kw * cin

    @property
    def weight_kn(self) -> np.ndarray:
        """The weight as the (K, N) GEMM operand (KH*KW*C_in, C_out), rows in (kh, kw, c) order."""
        return self.weight.reshape(-1, self.filters)


def _window_output(node, h, w, kernel, stride, dilation, padding):
    top, bottom, left, right = padding
    oh = conv_output_size(h, kernel[0], stride[0], dilation[0], top, bottom)
    ow = conv_output_size(w, kernel[1], stride[1], dilation[1], left, right)
    if oh <= 0 or ow <= 0:
        raise node.error(f"window {kernel} (dilation {dilation}) does not fit the padded input "
                         f"{h + top + bottom}x{w + left + right}")
    return oh, ow


@dataclass(frozen=True, eq=False)
class DepthwiseConv2D(Node):
    """Depthwise convolution: output channel ``c * depth_multiplier + m`` filters input channel ``c``."""
    weight: np.ndarray = None         # int8 (KH, KW, C_in * depth_multiplier)
    bias: np.ndarray = None           # int32 (C_out,)
    weight_scale: np.ndarray = None   # float64 (C_out,) or (1,)
    multiplier: np.ndarray = None
    shift: np.ndarray = None
    depth_multiplier: int = 1
    stride: tuple = (1, 1)
    padding: tuple = (0, 0, 0, 0)
    dilation: tuple = (1, 1)
    act_min: int = -128
    act_max: int = 127
    rounding: str = "double"

    op: ClassVar[str] = "depthwise_conv2d"

    def _check(self):
        _weights_and_bias(self, 3)
        if isinstance(self.depth_multiplier, bool) or not isinstance(self.depth_multiplier, (int, np.integer)) \
                or self.depth_multiplier < 1:
            raise self.error(f"depth_multiplier must be an integer >= 1, not {self.depth_multiplier!r}")
        object.__setattr__(self, "depth_multiplier", int(self.depth_multiplier))
        if self.weight.shape[2] % self.depth_multiplier:
            raise self.error(f"{self.weight.shape[2]} output channels are not a multiple of the depth multiplier "
                             f"{self.depth_multiplier}")
        object.__setattr__(self, "stride", _pair(self, "stride", self.stride))
        object.__setattr__(self, "dilation", _pair(self, "dilation", self.dilation))
        object.__setattr__(self, "padding", _padding(self, self.padding))

    @property
    def kernel(self) -> tuple:
        return tuple(self.weight.shape[:2])

    def infer(self, inputs):
        (x,) = inputs
        if len(x.shape) != 3:
            raise self.error(f"needs an (H, W, C) input, not {x.shape} ({x.name!r})")
        h, w, c = x.shape
        if c * self.depth_multiplier != self.weight.shape[2]:
            raise self.error(f"input {x.name!r} has {c} channels; with depth multiplier {self.depth_multiplier} "
                             f"the weight needs {c * self.depth_multiplier} output channels, not "
                             f"{self.weight.shape[2]}")
        return _window_output(self, h, w, self.kernel, self.stride, self.dilation, self.padding) \
            + (self.weight.shape[2],)

    def macs(self, inputs, output):
        kh, kw, _ = self.weight.shape
        return output.size * kh * kw


@dataclass(frozen=True, eq=False)
class FullyConnected(Node):
    """``y = requantize(x_flat @ weight + bias)``: x flattened row-major (NHWC order) to K features."""
    weight: np.ndarray = None         # int8 (K, N)
    bias: np.ndarray = None           # int32 (N,)
    weight_scale: np.ndarray = None
    multiplier: np.ndarray = None
    shift: np.ndarray = None
    act_min: int = -128
    act_max: int = 127
    rounding: str = "double"

    op: ClassVar[str] = "fully_connected"
    gemm: ClassVar[bool] = True

    def _check(self):
        _weights_and_bias(self, 2)

    @property
    def units(self) -> int:
        return int(self.weight.shape[1])

    @property
    def weight_kn(self) -> np.ndarray:
        return self.weight

    def infer(self, inputs):
        (x,) = inputs
        if x.size != self.weight.shape[0]:
            raise self.error(f"weight takes {self.weight.shape[0]} input features, input {x.name!r} of shape "
                             f"{x.shape} has {x.size}")
        return (self.units,)

    def macs(self, inputs, output):
        return int(self.weight.size)


@dataclass(frozen=True, eq=False)
class Add(Node):
    """Element-wise add of two same-shaped int8 tensors with TFLite's integer rescaling.

    ``a' = MBQM_exp((a - Z_a) * 2**left_shift, input1_multiplier, input1_shift)``, the same for b, then
    ``y = clamp(MBQM_exp(a' + b', output_multiplier, output_shift) + Z_out, act_min, act_max)`` where MBQM_exp is
    MultiplyByQuantizedMultiplier(SmallerThanOneExp): :func:`sim.arith.multiply_by_quantized_multiplier`.
    """
    input1_multiplier: int = 0
    input1_shift: int = 0
    input2_multiplier: int = 0
    input2_shift: int = 0
    output_multiplier: int = 0
    output_shift: int = 0
    left_shift: int = 20
    act_min: int = -128
    act_max: int = 127

    op: ClassVar[str] = "add"
    arity: ClassVar[int] = 2

    def _check(self):
        for what in ("input1_multiplier", "input1_shift", "input2_multiplier", "input2_shift",
                     "output_multiplier", "output_shift", "left_shift"):
            v = getattr(self, what)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise self.error(f"{what} must be an integer, not {v!r}")
            object.__setattr__(self, what, int(v))
        for what in ("input1_multiplier", "input2_multiplier", "output_multiplier"):
            v = getattr(self, what)
            if not (v == 0 or (1 << 30) <= v < (1 << 31)):
                raise self.error(f"{what} must be 0 or lie in [2**30, 2**31), not {v}")
        for what in ("input1_shift", "input2_shift", "output_shift"):
            if not -31 <= getattr(self, what) <= 31:
                raise self.error(f"{what} must lie in [-31, 31], not {getattr(self, what)}")
        if not 0 <= self.left_shift <= 24:
            raise self.error(f"left_shift must lie in [0, 24], not {self.left_shift}")
        _act_range(self)

    def infer(self, inputs):
        a, b = inputs
        if a.shape != b.shape:
            raise self.error(f"inputs must have the same shape (no broadcasting), not {a.shape} ({a.name!r}) and "
                             f"{b.shape} ({b.name!r})")
        return a.shape


def _pool_check(node):
    object.__setattr__(node, "filter", _pair(node, "filter", node.filter))
    object.__setattr__(node, "stride", _pair(node, "stride", node.stride))
    object.__setattr__(node, "padding", _padding(node, node.padding))
    top, bottom, left, right = node.padding
    if top >= node.filter[0] or bottom >= node.filter[0] or left >= node.filter[1] or right >= node.filter[1]:
        raise node.error(f"padding {node.padding} must be smaller than the filter {node.filter} (a window would hold "
                         f"padding only)")
    _act_range(node)


def _pool_infer(node, inputs):
    (x,) = inputs
    if len(x.shape) != 3:
        raise node.error(f"needs an (H, W, C) input, not {x.shape} ({x.name!r})")
    h, w, c = x.shape
    return _window_output(node, h, w, node.filter, node.stride, (1, 1), node.padding) + (c,)


def _same_quant(node, inputs, output):
    if inputs[0].quant != output.quant:
        raise node.error(f"output {output.name!r} must keep the input's quantization {inputs[0].quant}, not "
                         f"{output.quant} (insert a requantization)")


@dataclass(frozen=True, eq=False)
class _Pool2D(Node):
    """The fields and checks both pools share: window, stride, padding and the output clamp."""
    filter: tuple = (2, 2)
    stride: tuple = (2, 2)
    padding: tuple = (0, 0, 0, 0)
    act_min: int = -128
    act_max: int = 127

    def _check(self):
        _pool_check(self)

    def infer(self, inputs):
        return _pool_infer(self, inputs)

    check_quant = _same_quant


@dataclass(frozen=True, eq=False)
class AveragePool2D(_Pool2D):
    """Average pool; the sum of the in-bounds taps divided by their count, rounded half away from zero (TFLite).

    Input and output share one quantization."""
    op: ClassVar[str] = "average_pool2d"


@dataclass(frozen=True, eq=False)
class MaxPool2D(_Pool2D):
    """Max pool over the in-bounds taps (padding ignored); input and output share one quantization."""
    op: ClassVar[str] = "max_pool2d"


@dataclass(frozen=True, eq=False)
class Mean(Node):
    """Mean over H and W of an (H, W, C) tensor (global average pool), with its own requantization:

    ``y[c] = clamp(MultiplyByQuantizedMultiplier(sum_hw (x - Z_in), multiplier, shift) + Z_out, act_min, act_max)``
    with ``multiplier, shift`` encoding ``S_in / (S_out * H * W)`` (the frontend computes them as its runtime
    does). ``keep_dims`` gives an output (1, 1, C), otherwise (C,)."""
    multiplier: int = 0
    shift: int = 0
    keep_dims: bool = False
    act_min: int = -128
    act_max: int = 127

    op: ClassVar[str] = "mean"

    def _check(self):
        for what in ("multiplier", "shift"):
            v = getattr(self, what)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise self.error(f"{what} must be an integer, not {v!r}")
            object.__setattr__(self, what, int(v))
        if not (self.multiplier == 0 or (1 << 30) <= self.multiplier < (1 << 31)):
            raise self.error(f"multiplier must be 0 or lie in [2**30, 2**31), not {self.multiplier}")
        if not -31 <= self.shift <= 31:
            raise self.error(f"shift must lie in [-31, 31], not {self.shift}")
        object.__setattr__(self, "keep_dims", bool(self.keep_dims))
        _act_range(self)

    def infer(self, inputs):
        (x,) = inputs
        if len(x.shape) != 3:
            raise self.error(f"needs an (H, W, C) input, not {x.shape} ({x.name!r})")
        return (1, 1, x.shape[2]) if self.keep_dims else (x.shape[2],)


@dataclass(frozen=True, eq=False)
class Reshape(Node):
    """Layout only: the same bytes in row-major order under a new per-sample shape."""
    shape: tuple = ()

    op: ClassVar[str] = "reshape"

    def _check(self):
        try:
            shape = tuple(int(d) for d in self.shape)
        except (TypeError, ValueError):
            raise self.error(f"shape must be a tuple of integers, not {self.shape!r}") from None
        if not shape or any(d <= 0 for d in shape):
            raise self.error(f"shape must be positive integers, not {shape}")
        object.__setattr__(self, "shape", shape)

    def infer(self, inputs):
        (x,) = inputs
        if int(np.prod(self.shape)) != x.size:
            raise self.error(f"cannot reshape {x.shape} ({x.size} elements) to {self.shape}")
        return self.shape

    check_quant = _same_quant


@dataclass(frozen=True, eq=False)
class Transpose(Node):
    """Layout only: permute the per-sample axes (``perm`` as numpy.transpose, without the batch axis)."""
    perm: tuple = ()

    op: ClassVar[str] = "transpose"

    def _check(self):
        try:
            perm = tuple(int(d) for d in self.perm)
        except (TypeError, ValueError):
            raise self.error(f"perm must be a tuple of integers, not {self.perm!r}") from None
        if sorted(perm) != list(range(len(perm))):
            raise self.error(f"perm must be a permutation of 0..{len(perm) - 1}, not {perm}")
        object.__setattr__(self, "perm", perm)

    def infer(self, inputs):
        (x,) = inputs
        if len(self.perm) != len(x.shape):
            raise self.error(f"perm {self.perm} does not match the input's {len(x.shape)} axes {x.shape}")
        return tuple(x.shape[p] for p in self.perm)

    check_quant = _same_quant


@dataclass(frozen=True, eq=False)
class Softmax(Node):
    """int8 softmax over the last axis with TFLite's fixed-point arithmetic (gemmlowp exp and reciprocal).

    ``input_multiplier``, ``input_left_shift`` and ``diff_min`` are TFLite's PreprocessSoftmaxScaling of
    ``beta * S_in`` with 5 integer bits; the output is quantized with scale 1/256 and zero point -128."""
    beta: float = 1.0
    input_multiplier: int = 0
    input_left_shift: int = 0
    diff_min: int = 0

    op: ClassVar[str] = "softmax"

    def _check(self):
        object.__setattr__(self, "beta", float(self.beta))
        for what in ("input_multiplier", "input_left_shift", "diff_min"):
            v = getattr(self, what)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise self.error(f"{what} must be an integer, not {v!r}")
            object.__setattr__(self, what, int(v))
        if not 0 <= self.input_multiplier < (1 << 31):
            raise self.error(f"input_multiplier must lie in [0, 2**31), not {self.input_multiplier}")
        if not 0 <= self.input_left_shift <= 31:
            raise self.error(f"input_left_shift must lie in [0, 31], not {self.input_left_shift}")
        if self.diff_min > 0:
            raise self.error(f"diff_min must be <= 0, not {self.diff_min}")

    def infer(self, inputs):
        return inputs[0].shape

    def check_quant(self, inputs, output):
        if output.quant != Quant(1.0 / 256.0, -128):
            raise self.error(f"int8 softmax output {output.name!r} must have scale 1/256 and zero point -128 "
                             f"(TFLite's), not {output.quant}")


#: The IR's operators by op name.
OPS = {cls.op: cls for cls in (Conv2D, DepthwiseConv2D, FullyConnected, Add, AveragePool2D, MaxPool2D, Mean,
                               Reshape, Transpose, Softmax)}


@dataclass(eq=False)
class Graph:
    """A quantized network: tensors by name, input and output tensor names, and nodes in topological order.

    ``source`` says where it came from (``"tflite"``, ``"onnx"``, ``"npz"``, ...; informational only) and
    ``metadata`` holds anything a frontend wants to record (never read by the compiler). The constructor
    validates (:meth:`validate`)."""

    tensors: dict
    inputs: tuple
    outputs: tuple
    nodes: tuple
    name: str = "graph"
    source: str = ""
    metadata: dict = field(default_factory=dict)

    def __post_init__(self):
        if isinstance(self.tensors, (list, tuple)):
            tensors = {}
            for t in self.tensors:
                if not isinstance(t, Tensor):
                    raise GraphError(f"tensors must be sw.ir.Tensor objects, not {type(t).__name__}")
                if t.name in tensors:
                    raise GraphError(f"tensor name {t.name!r} is used twice")
                tensors[t.name] = t
            self.tensors = tensors
        else:
            self.tensors = dict(self.tensors)
        self.inputs = (self.inputs,) if isinstance(self.inputs, str) else tuple(self.inputs)
        self.outputs = (self.outputs,) if isinstance(self.outputs, str) else tuple(self.outputs)
        self.nodes = tuple(self.nodes)
        self.validate()

    # -- queries -----------------------------------------------------------------------------------------------

    def tensor(self, name: str) -> Tensor:
        try:
            return self.tensors[name]
        except KeyError:
            raise KeyError(f"no tensor named {name!r} in graph {self.name!r}") from None

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(f"no node named {name!r} in graph {self.name!r}; nodes: {[n.name for n in self.nodes]}")

    def producer(self, tensor: str) -> Node | None:
        """The node writing ``tensor`` (None for a graph input)."""
        for n in self.nodes:
            if tensor in n.outputs:
                return n
        return None

    def consumers(self, tensor: str) -> list:
        return [n for n in self.nodes if tensor in n.inputs]

    def input_tensors(self, node: Node) -> list:
        return [self.tensors[t] for t in node.inputs]

    def output_tensor(self, node: Node) -> Tensor:
        return self.tensors[node.output]

    @property
    def input(self) -> Tensor:
        """The single input tensor (error for a graph with several)."""
        if len(self.inputs) != 1:
            raise GraphError(f"graph {self.name!r} has {len(self.inputs)} inputs: {self.inputs}")
        return self.tensors[self.inputs[0]]

    @property
    def output(self) -> Tensor:
        """The single output tensor (error for a graph with several)."""
        if len(self.outputs) != 1:
            raise GraphError(f"graph {self.name!r} has {len(self.outputs)} outputs: {self.outputs}")
        return self.tensors[self.outputs[0]]

    def macs(self) -> dict:
        """Multiply-accumulates per sample of every node that has any: ``{node name: MACs}``."""
        out = {}
        for n in self.nodes:
            m = n.macs(self.input_tensors(n), self.output_tensor(n))
            if m:
                out[n.name] = m
        return out

    def summary(self) -> str:
        """One line per node: index, name, op, input shapes -> output shape, quantization, MACs."""
        lines = [f"# graph {self.name!r} ({self.source or 'built in memory'}): {len(self.nodes)} nodes, "
                 f"inputs {', '.join(f'{t} {self.tensors[t].shape}' for t in self.inputs)}"]
        for i, n in enumerate(self.nodes):
            out = self.output_tensor(n)
            ins = ", ".join("x".join(map(str, self.tensors[t].shape)) for t in n.inputs)
            macs = n.macs(self.input_tensors(n), out)
            lines.append(f"{i:3d} {n.name:<28} {n.op:<17} {ins} -> {'x'.join(map(str, out.shape))}  "
                         f"S={out.quant.scale:.6g} Z={out.quant.zero_point}" + (f"  MACs {macs:,}" if macs else ""))
        return "\n".join(lines)

    # -- validation --------------------------------------------------------------------------------------------

    def validate(self) -> None:
        """Check the whole graph; raises :class:`GraphError` naming the node (index, name, op) or tensor."""
        for name, t in self.tensors.items():
            if not isinstance(t, Tensor):
                raise GraphError(f"tensor {name!r} must be a sw.ir.Tensor, not {type(t).__name__}")
            if t.name != name:
                raise GraphError(f"tensor stored under {name!r} is named {t.name!r}")
        if not self.inputs:
            raise GraphError(f"graph {self.name!r} has no inputs")
        if not self.outputs:
            raise GraphError(f"graph {self.name!r} has no outputs")
        if not self.nodes:
            raise GraphError(f"graph {self.name!r} has no nodes")
        available = set()
        for t in self.inputs:
            if t not in self.tensors:
                raise GraphError(f"graph input {t!r} is not among the tensors")
            if t in available:
                raise GraphError(f"graph input {t!r} is listed twice")
            available.add(t)
        names = set()
        for i, n in enumerate(self.nodes):
            where = f"node {i} {n.name!r} ({getattr(n, 'op', '?')})"
            if not isinstance(n, Node) or type(n).op not in OPS:
                raise GraphError(f"{where}: not an IR operator ({type(n).__name__}); operators: {sorted(OPS)}")
            if n.name in names:
                raise GraphError(f"{where}: node name used twice")
            names.add(n.name)
            for t in n.inputs:
                if t not in self.tensors:
                    raise GraphError(f"{where}: input tensor {t!r} does not exist")
                if t not in available:
                    raise GraphError(f"{where}: input tensor {t!r} is not produced by an earlier node or a graph "
                                     f"input (nodes must be in topological order)")
            out = n.output
            if out not in self.tensors:
                raise GraphError(f"{where}: output tensor {out!r} does not exist")
            if out in available:
                raise GraphError(f"{where}: output tensor {out!r} already has a producer")
            ins = self.input_tensors(n)
            try:
                shape = tuple(n.infer(ins))
                if shape != self.tensors[out].shape:
                    raise n.error(f"output {out!r} has shape {self.tensors[out].shape}, the op gives {shape}")
                n.check_quant(ins, self.tensors[out])
            except GraphError as exc:
                raise GraphError(f"node {i}: {exc}") from None
            available.add(out)
        for t in self.outputs:
            if t not in available:
                raise GraphError(f"graph output {t!r} is not produced by any node or input")

    # -- conversions -------------------------------------------------------------------------------------------

    @classmethod
    def from_quantized_network(cls, qnet) -> "Graph":
        """The IR of a legacy :class:`sw.quantize.QuantizedNetwork` (the toolkit's MNIST-style CNN files).

        Conv2D/Dense keep their weights, bias, per-channel requantization and fused-ReLU clamp; 'same' padding
        becomes explicit (TensorFlow's convention, as :meth:`sw.network.Conv2D.padding_amounts`); MaxPool2D
        (no padding) and Flatten (an NHWC reshape) keep their input's quantization. Tensors are named after the
        layers (``input``, then each layer's name)."""
        network = qnet.network
        shapes = network.shapes()
        tensors = [Tensor("input", shapes[0], Quant(qnet.input_scale, qnet.input_zero_point))]
        nodes = []
        prev = "input"
        for layer, q, shape_in, shape_out in zip(network.layers, qnet.layers, shapes, shapes[1:]):
            out = layer.name
            tensors.append(Tensor(out, shape_out, Quant(q.output_scale, q.output_zero_point)))
            common = dict(name=layer.name, inputs=(prev,), outputs=(out,))
            if layer.kind == "conv2d":
                nodes.append(Conv2D(**common, weight=q.weight, bias=q.bias, weight_scale=q.weight_scale,
                                    multiplier=q.multiplier, shift=q.shift.astype(np.int32), stride=layer.stride,
                                    padding=layer.padding_amounts(shape_in[0], shape_in[1]),
                                    act_min=q.act_min, act_max=q.act_max))
            elif layer.kind == "dense":
                nodes.append(FullyConnected(**common, weight=q.weight, bias=q.bias, weight_scale=q.weight_scale,
                                            multiplier=q.multiplier, shift=q.shift.astype(np.int32),
                                            act_min=q.act_min, act_max=q.act_max))
            elif layer.kind == "maxpool2d":
                nodes.append(MaxPool2D(**common, filter=layer.pool, stride=layer.stride))
            elif layer.kind == "flatten":
                nodes.append(Reshape(**common, shape=shape_out))
            else:
                raise GraphError(f"layer {layer.name!r}: kind {layer.kind!r} has no IR operator")
            prev = out
        return cls(tensors=tensors, inputs=("input",), outputs=(prev,), nodes=nodes,
                   name=getattr(network, "name", "network"), source="npz",
                   metadata={"layer_kinds": {layer.name: layer.kind for layer in network.layers}})
