"""Post-training quantization of a float network to the int8 scheme of docs/int8-spec.md.

* Weights: symmetric int8 in [-127, 127], one scale per output channel, ``S_w[c] = max|w[:, c]| / 127``.
* Activations: asymmetric int8, one scale and zero point per tensor, from a calibrated range that always includes 0;
  a ReLU output's range is [0, max], so its zero point is -128 and the fused-ReLU clamp is ``act_min = Z_out``.
* Bias: int32, ``round(b / (S_in * S_w[c]))``.
* Requantization: per channel ``(M0, shift) = sim.arith.quantize_multiplier(S_in * S_w[c] / S_out)``.
* Max-pool and flatten keep their input's scale and zero point.

Input images: uint8 pixels are the float model's ``x / 255``; their int8 form uses S = 1/255, Z = -128, which maps
pixel p to exactly ``p - 128``. Float images get a calibrated input range. :meth:`QuantizedNetwork.quantize_input`
does the conversion; the backends take its int8 output.

Rounding of real values to integers (weights, bias, inputs) is to nearest with halves away from zero, as TFLite.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np

from sim.arith import quantize_multiplier
from sw.im2col import fold_zero_point
from sw.network import Conv2D, Dense, Network
from sw.reference import as_image_batch, check_params, dequantize_logits, float_forward, images_to_float

__all__ = ["QuantizationError", "QuantizedLayer", "QuantizedNetwork", "calibrate", "activation_params",
           "quantize", "round_half_away", "float_digest"]

#: Below this real multiplier quantize_multiplier cannot encode a channel (its shift would pass -31); the weights'
#: whole contribution is then under one output LSB and the channel is quantized as all-zero weights.
_MIN_MULTIPLIER = 2.0 ** -32
#: Bias bound for all-zero-weight channels (multiplier 1): anything beyond +-2**24 LSB saturates the same way.
_ZERO_CHANNEL_BIAS_LIMIT = 1 << 24


class QuantizationError(ValueError):
    """The network cannot be quantized as asked (the message names the layer, the cause and the fix)."""


def round_half_away(x) -> np.ndarray:
    """Round to the nearest integer, exact halves away from zero (C's ``round``, as TFLite), as float64."""
    x = np.asarray(x, dtype=np.float64)
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


@dataclass(eq=False)
class QuantizedLayer:
    """Quantization of one layer. ``weight``..``shift`` are set for Conv2D/Dense only (None otherwise).

    Attributes
    ----------
    name, kind : str
        As in the network description (``kind`` is ``"conv2d"``, ``"dense"``, ``"maxpool2d"`` or ``"flatten"``).
    input_scale, input_zero_point, output_scale, output_zero_point
        Per-tensor activation quantization: ``real = scale * (q - zero_point)``.
    act_min, act_max : int
        Output clamp; ``act_min = output_zero_point`` is a fused ReLU.
    weight : int8 ndarray
        HWIO (Conv2D) or (in, units) (Dense), values in [-127, 127].
    bias : int32 ndarray (filters,)
        Scale ``input_scale * weight_scale[c]``, zero point 0, NOT folded with the input zero point.
    weight_scale : float64 ndarray (filters,)
        Per-output-channel weight scale.
    multiplier : int32 ndarray (filters,), shift : int8 ndarray (filters,)
        Requantization ``(M0, shift)`` of ``input_scale * weight_scale / output_scale``.
    """

    name: str
    kind: str
    input_scale: float
    input_zero_point: int
    output_scale: float
    output_zero_point: int
    act_min: int = -128
    act_max: int = 127
    weight: np.ndarray | None = None
    bias: np.ndarray | None = None
    weight_scale: np.ndarray | None = None
    multiplier: np.ndarray | None = None
    shift: np.ndarray | None = None

    @property
    def has_weights(self) -> bool:
        return self.weight is not None

    @property
    def weight_kn(self) -> np.ndarray:
        """The weight as the (K, N) GEMM operand: HWIO reshaped to (KH*KW*C, filters)."""
        return self.weight.reshape(-1, self.weight.shape[-1])

    @property
    def folded_bias(self) -> np.ndarray:
        """The int32 bias with the input zero point folded in, as the accelerator adds it (raw int8 operands)."""
        return fold_zero_point(self.weight_kn, self.bias, int(self.input_zero_point))


@dataclass(eq=False)
class QuantizedNetwork:
    """A network with its int8 parameters; ``layers[i]`` quantizes ``network.layers[i]``."""

    network: Network
    layers: tuple
    input_scale: float
    input_zero_point: int
    #: :func:`float_digest` of the float model this network was quantized from (None: not recorded)
    float_digest: str | None = None

    def __post_init__(self):
        self.layers = tuple(self.layers)

    @property
    def output_scale(self) -> float:
        return self.layers[-1].output_scale

    @property
    def output_zero_point(self) -> int:
        return self.layers[-1].output_zero_point

    def layer(self, name: str) -> QuantizedLayer:
        for q in self.layers:
            if q.name == name:
                return q
        raise KeyError(f"No layer named {name!r}; layers: {[q.name for q in self.layers]}")

    def quantize_input(self, images) -> np.ndarray:
        """int8 network input: ``clamp(round(x / S_in) + Z_in, -128, 127)`` of the float input x.

        ``images`` are uint8 pixels (x = p / 255) or floats, shaped (N, *input_shape) (or (N, H, W) for one
        channel). With the default uint8 quantization (S = 1/255, Z = -128) pixel p becomes exactly p - 128.
        """
        x = as_image_batch(self.network, images)
        if (x.dtype == np.uint8 and self.input_zero_point == -128
                and self.input_scale == np.float64(1.0) / np.float64(255.0)):
            return (x.astype(np.int16) - 128).astype(np.int8)
        x = images_to_float(x).astype(np.float64)
        q = round_half_away(x / self.input_scale) + self.input_zero_point
        return np.clip(q, -128, 127).astype(np.int8)

    def dequantize_output(self, q) -> np.ndarray:
        """Real values of the int8 network output (float32); see :func:`sw.reference.dequantize_logits`."""
        return dequantize_logits(self, q)


def activation_params(lo: float, hi: float) -> tuple[float, int]:
    """Asymmetric int8 ``(scale, zero_point)`` covering [lo, hi] widened to include 0 (0 is then exact).

    ``scale = (hi - lo) / 255`` and ``zero_point = round(-128 - lo / scale)``; an empty range [0, 0] (a dead
    layer) gets [0, 1] so the scale stays positive.
    """
    lo, hi = float(lo), float(hi)
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise QuantizationError(f"Activation range must be finite with lo <= hi, not [{lo}, {hi}]")
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if hi == lo:
        hi = 1.0
    scale = (hi - lo) / 255.0
    zero_point = int(round_half_away(-128.0 - lo / scale))
    return scale, int(np.clip(zero_point, -128, 127))


def calibrate(network: Network, params, sample_images, *, method="minmax", percentile=99.99,
              batch_size=None) -> list[tuple[float, float]]:
    """Float activation ranges of the network on sample images.

    Returns a list aligned with ``network.shapes()``: entry 0 is the input range, entry i + 1 the output range of
    ``network.layers[i]``. Every range includes 0; a ReLU layer's is [0, max]. uint8 images have the fixed input
    range [0, 1] (the whole pixel domain). ``method="minmax"`` takes the extremes, ``"percentile"`` the
    ``100 - percentile`` and ``percentile`` percentiles (clipping rare outliers for a finer scale).
    """
    if method not in ("minmax", "percentile"):
        raise ValueError(f"Calibration method must be 'minmax' or 'percentile', not {method!r}")
    if isinstance(percentile, bool) or not isinstance(percentile, (int, float)) or not 50.0 < percentile <= 100.0:
        raise ValueError(f"Calibration percentile must be a number in (50, 100], not {percentile!r}")
    images = as_image_batch(network, sample_images)
    if len(images) == 0:
        raise ValueError("Calibration needs at least one sample image")
    x = images_to_float(images)
    _, outputs = float_forward(network, params, x, return_layers=True, batch_size=batch_size)

    def stats(v):
        v = v.reshape(-1)
        if method == "minmax":
            lo, hi = float(v.min()), float(v.max())
        else:
            lo, hi = (float(p) for p in np.percentile(v, [100.0 - percentile, percentile]))
        return min(lo, 0.0), max(hi, 0.0)

    ranges = [(0.0, 1.0) if images.dtype == np.uint8 else stats(x)]
    for layer in network.layers:
        lo, hi = stats(outputs[layer.name])
        if getattr(layer, "relu", False):
            lo = 0.0
        ranges.append((lo, hi))
    return ranges


def _quantize_weights(layer, weight, bias, s_in, s_out):
    """Per-channel int8 weights, int32 bias and (M0, shift) of one Conv2D/Dense layer."""
    w_kn = weight.astype(np.float64).reshape(-1, weight.shape[-1])
    b = bias.astype(np.float64)
    max_abs = np.abs(w_kn).max(axis=0)
    w_scale = max_abs / 127.0
    real_m = s_in * w_scale / s_out
    # All-zero channels (and channels too small to encode) keep only their bias: weights 0 and multiplier 1, so the
    # output is round(b / S_out) + Z_out exactly as the float layer's constant b.
    negligible = real_m < _MIN_MULTIPLIER
    w_scale = np.where(negligible, s_out / s_in, w_scale)
    q = np.where(negligible, 0.0, np.clip(round_half_away(w_kn / w_scale), -127, 127))
    q_bias = round_half_away(b / (s_in * w_scale))
    q_bias = np.where(negligible, np.clip(q_bias, -_ZERO_CHANNEL_BIAS_LIMIT, _ZERO_CHANNEL_BIAS_LIMIT), q_bias)
    too_big = np.abs(q_bias) > 2 ** 31 - 1
    if np.any(too_big):
        c = int(np.flatnonzero(too_big)[0])
        raise QuantizationError(
            f"Layer {layer.name!r}: channel {c} bias {b[c]!r} does not fit int32 at scale S_in*S_w = "
            f"{s_in * w_scale[c]!r}; check the weights and the calibration images of this layer")
    try:
        m0, shift = quantize_multiplier(s_in * w_scale / s_out)
    except ValueError as exc:
        raise QuantizationError(f"Layer {layer.name!r}: cannot encode the requantization multiplier ({exc}); "
                                f"the output range is degenerate - calibrate with more representative images") from None
    return (q.reshape(weight.shape).astype(np.int8), q_bias.astype(np.int32), w_scale, m0, shift)


def float_digest(network: Network, params) -> str:
    """SHA-256 (hex) of a float model's content: its network description and every parameter's name, dtype, shape
    and bytes, in name order. It pairs an int8 model with the float model it came from (the int8 file records it);
    it does not depend on how or when the float file was written."""
    h = hashlib.sha256()
    h.update(b"systolic8-float-digest-1\0")
    h.update(network.dumps().encode())
    for key in sorted(params):
        value = np.ascontiguousarray(np.asarray(params[key], dtype=np.float32))
        h.update(f"\0{key}\0{value.dtype.str}\0{value.shape}\0".encode())
        h.update(value.tobytes())
    return h.hexdigest()


def quantize(network: Network, params, sample_images, *, method="minmax", percentile=99.99, ranges=None,
             batch_size=None) -> QuantizedNetwork:
    """Quantize a float network with activation ranges calibrated on ``sample_images``.

    ``ranges`` (as returned by :func:`calibrate`) skips the calibration; ``sample_images`` then only decides the
    input convention and may be None for uint8 inputs of range [0, 1].
    """
    params = check_params(network, params)
    if ranges is None:
        ranges = calibrate(network, params, sample_images, method=method, percentile=percentile,
                           batch_size=batch_size)
    ranges = [tuple(map(float, r)) for r in ranges]
    if len(ranges) != len(network.layers) + 1:
        raise ValueError(f"ranges must have {len(network.layers) + 1} entries (input, then one per layer), "
                         f"not {len(ranges)}")
    in_scale, in_zp = activation_params(*ranges[0])
    s_in, z_in = in_scale, in_zp
    qlayers = []
    for layer, (lo, hi) in zip(network.layers, ranges[1:]):
        if isinstance(layer, (Conv2D, Dense)):
            if layer.relu:
                lo = 0.0
            s_out, z_out = activation_params(lo, hi)
            weight, bias, w_scale, m0, shift = _quantize_weights(
                layer, params[f"{layer.name}.weight"], params[f"{layer.name}.bias"], s_in, s_out)
            qlayers.append(QuantizedLayer(
                name=layer.name, kind=layer.kind, input_scale=s_in, input_zero_point=z_in,
                output_scale=s_out, output_zero_point=z_out,
                act_min=z_out if layer.relu else -128, act_max=127,
                weight=weight, bias=bias, weight_scale=w_scale, multiplier=m0, shift=shift))
            s_in, z_in = s_out, z_out
        else:
            qlayers.append(QuantizedLayer(name=layer.name, kind=layer.kind, input_scale=s_in, input_zero_point=z_in,
                                          output_scale=s_in, output_zero_point=z_in))
    return QuantizedNetwork(network=network, layers=tuple(qlayers), input_scale=in_scale, input_zero_point=in_zp,
                            float_digest=float_digest(network, params))
