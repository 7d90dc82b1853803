"""NumPy reference inference: the float model and the bit-exact int8 model every backend must match.

* :func:`float_forward` runs the float32 network (conv, max-pool, flatten, dense, fused ReLU).
* :func:`int8_forward` runs a :class:`sw.quantize.QuantizedNetwork` with the accelerator's arithmetic exactly: per
  Conv2D/Dense layer, im2col with the padding filled with the input zero point, a GEMM on the raw int8 operands with
  the zero point folded into the bias (:func:`sw.im2col.fold_zero_point`), then :func:`sim.arith.requantize` with the
  fused-ReLU clamp. Max-pool works on the int8 values (max commutes with the monotone dequantization), flatten is
  an NHWC reshape.

Speed: the GEMM runs in floating point where that is provably exact (:func:`gemm_int32_fast`); everything that
rounds is :mod:`sim.arith`. ``exact_gemm=True`` calls :func:`sim.arith.quantized_gemm` instead, for cross-checks.
"""

from __future__ import annotations

import numpy as np

from sim.arith import gemm_int32, quantized_gemm, requantize, wrap_int32
from sw.im2col import fold_zero_point, im2col
from sw.network import Conv2D, Dense, Flatten, MaxPool2D, Network

__all__ = [
    "ParameterError", "check_params", "as_image_batch", "images_to_float",
    "float_forward", "int8_forward", "dequantize_logits",
    "gemm_int32_fast", "max_pool", "conv2d_float", "dense_float", "conv2d_int8", "dense_int8",
]

#: Working-set budget (matrix elements) that sets the automatic batch size.
_BATCH_ELEMENTS = 1 << 22

# Exactness limits of the floating-point GEMM. Every product of two int8 values has magnitude <= 2**14, and every
# partial sum of K of them - whatever order or blocking the BLAS uses, with or without FMA - is an integer of
# magnitude <= K * 2**14. Such integers are exact in float32 up to 2**24 and in float64 up to 2**53, so no step rounds.
_FLOAT32_MAX_K = 1 << 10
_FLOAT64_MAX_K = 1 << 39


class ParameterError(ValueError):
    """Parameters that do not match the network (the message names the key and the cause)."""


def check_params(network: Network, params) -> dict[str, np.ndarray]:
    """Check that ``params`` holds exactly the network's parameters with the right shapes and finite values.

    Returns a new dict of float32 arrays. Raises :class:`ParameterError` listing every problem.
    """
    if not isinstance(network, Network):
        raise TypeError(f"network must be a sw.network.Network, not {type(network).__name__}")
    try:
        keys = set(params.keys())
    except AttributeError:
        raise ParameterError(f"params must be a mapping of '<layer>.weight'/'<layer>.bias' to arrays, "
                             f"not {type(params).__name__}") from None
    expected = network.param_shapes()
    problems = []
    missing = sorted(set(expected) - keys)
    extra = sorted(keys - set(expected))
    if missing:
        problems.append(f"missing {missing}")
    if extra:
        problems.append(f"unexpected {extra} (the network has no such parameters)")
    out = {}
    for key, shape in expected.items():
        if key not in keys:
            continue
        arr = np.asarray(params[key])
        if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
            problems.append(f"{key!r} has dtype {arr.dtype}, expected a real number type")
            continue
        if arr.shape != shape:
            problems.append(f"{key!r} has shape {arr.shape}, expected {shape}")
            continue
        if not np.all(np.isfinite(arr)):
            problems.append(f"{key!r} holds NaN or infinite values")
            continue
        out[key] = arr.astype(np.float32)
    if problems:
        raise ParameterError("Parameters do not match the network: " + "; ".join(problems)
                             + f". Expected shapes: {expected}")
    return out


def as_image_batch(network: Network, images) -> np.ndarray:
    """Return ``images`` as a batch of shape (N, *network.input_shape), keeping the dtype.

    A single-channel network also accepts (N, H, W) images (e.g. MNIST), given a trailing channel axis here.
    """
    x = np.asarray(images)
    want = tuple(network.input_shape)
    if x.shape[1:] == want:
        return x
    if want[-1] == 1 and len(want) == 3 and x.shape[1:] == want[:-1]:
        return x[..., np.newaxis]
    raise ValueError(f"Images must have shape (N, {', '.join(map(str, want))})"
                     + (f" or (N, {want[0]}, {want[1]})" if len(want) == 3 and want[-1] == 1 else "")
                     + f" for this network, not {x.shape}")


def images_to_float(images) -> np.ndarray:
    """Float model input: uint8 pixels map to ``x / 255`` in [0, 1]; float images pass through (as float32)."""
    x = np.asarray(images)
    if x.dtype == np.uint8:
        return (x.astype(np.float32) / np.float32(255.0))
    if np.issubdtype(x.dtype, np.floating):
        return x.astype(np.float32, copy=False)
    raise ValueError(f"Float model images must be uint8 pixels or floats, not {x.dtype}"
                     + (" (int8 images are already quantized: run them through int8_forward)"
                        if x.dtype == np.int8 else ""))


def _batch_size(network: Network, batch_size) -> int:
    if batch_size is not None:
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive integer, not {batch_size!r}")
        return batch_size
    per_image = 1
    shapes = network.shapes()
    for layer, shape_in, shape_out in zip(network.layers, shapes, shapes[1:]):
        size_out = int(np.prod(shape_out))
        if isinstance(layer, Conv2D):
            per_image = max(per_image, shape_out[0] * shape_out[1] * layer.kernel[0] * layer.kernel[1] * shape_in[2],
                            size_out)
        else:
            per_image = max(per_image, int(np.prod(shape_in)), size_out)
    return max(1, _BATCH_ELEMENTS // per_image)


def gemm_int32_fast(a, b) -> np.ndarray:
    """Bit-exact, fast equivalent of :func:`sim.arith.gemm_int32` for int8 operands.

    int8 x int8 products summed over K are integers of magnitude <= K * 2**14, exact in float32 for K <= 2**10 and
    in float64 for K <= 2**39, whatever summation order the BLAS picks; so a floating-point matmul followed by an
    exact conversion and the 2**32 wrap equals the integer GEMM. Other dtypes fall back to ``gemm_int32``.
    """
    a = np.asarray(a)
    b = np.asarray(b)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"GEMM shapes do not chain: a {a.shape} x b {b.shape}")
    if a.dtype != np.int8 or b.dtype != np.int8 or a.shape[1] > _FLOAT64_MAX_K:
        return gemm_int32(a, b)
    return wrap_int32(_gemm_int64(a, b))


def _gemm_int64(a, b) -> np.ndarray:
    """Exact, unwrapped int8 x int8 matrix product as int64 through a float BLAS matmul (see gemm_int32_fast)."""
    if a.dtype != np.int8 or b.dtype != np.int8 or a.shape[1] > _FLOAT64_MAX_K:
        return np.asarray(a, dtype=np.int64) @ np.asarray(b, dtype=np.int64)
    ftype = np.float32 if a.shape[1] <= _FLOAT32_MAX_K else np.float64
    return (a.astype(ftype) @ b.astype(ftype)).astype(np.int64)


def max_pool(x, pool, stride) -> np.ndarray:
    """Max-pool an NHWC tensor (any dtype) over ``pool`` windows every ``stride``, without padding."""
    x = np.asarray(x)
    n, h, w, c = x.shape
    ph, pw = pool
    sh, sw = stride
    oh = (h - ph) // sh + 1
    ow = (w - pw) // sw + 1
    s_n, s_h, s_w, s_c = x.strides
    windows = np.lib.stride_tricks.as_strided(
        x, shape=(n, oh, ow, ph, pw, c), strides=(s_n, s_h * sh, s_w * sw, s_h, s_w, s_c), writeable=False)
    return windows.max(axis=(3, 4))


# ---------------------------------------------------------------------------------------------------------------
# Float path


def conv2d_float(x, layer: Conv2D, weight, bias) -> np.ndarray:
    """Float Conv2D (+ fused ReLU) of an NHWC float32 batch with an HWIO weight."""
    n, h, w, c = x.shape
    oh, ow, f = layer.output_shape((h, w, c))
    cols = im2col(x, layer.kernel, layer.stride, layer.padding_amounts(h, w), 0.0)
    y = cols @ weight.reshape(-1, f) + bias
    if layer.relu:
        np.maximum(y, 0, out=y)
    return y.reshape(n, oh, ow, f)


def dense_float(x, layer: Dense, weight, bias) -> np.ndarray:
    """Float Dense (+ fused ReLU) of an (N, in) float32 batch with an (in, units) weight."""
    y = x @ weight + bias
    if layer.relu:
        np.maximum(y, 0, out=y)
    return y


def _float_layer(layer, x, params):
    if isinstance(layer, Conv2D):
        return conv2d_float(x, layer, params[f"{layer.name}.weight"], params[f"{layer.name}.bias"])
    if isinstance(layer, Dense):
        return dense_float(x, layer, params[f"{layer.name}.weight"], params[f"{layer.name}.bias"])
    if isinstance(layer, MaxPool2D):
        return max_pool(x, layer.pool, layer.stride)
    if isinstance(layer, Flatten):
        return x.reshape(x.shape[0], -1)
    raise TypeError(f"Unsupported layer {layer!r}")


def float_forward(network: Network, params, images, *, return_layers=False, batch_size=None):
    """Run the float32 network on a batch of NHWC images.

    ``images`` are floats, or uint8 pixels which map to ``x / 255``. Returns the float32 output (N, *output_shape);
    with ``return_layers=True`` returns ``(output, {layer name: float32 output of that layer})``.
    """
    params = check_params(network, params)
    x_all = images_to_float(as_image_batch(network, images))
    bs = _batch_size(network, batch_size)
    outs: dict[str, list] = {layer.name: [] for layer in network.layers}
    final = []
    for start in range(0, max(len(x_all), 1), bs):
        x = x_all[start:start + bs]
        for layer in network.layers:
            x = _float_layer(layer, x, params).astype(np.float32, copy=False)
            if return_layers:
                outs[layer.name].append(x)
        final.append(x)
    y = np.concatenate(final)
    if return_layers:
        return y, {name: np.concatenate(parts) for name, parts in outs.items()}
    return y


# ---------------------------------------------------------------------------------------------------------------
# int8 path


def _gemm_requant(a, w_kn, qlayer, exact_gemm):
    """``requantize(a @ w_kn + bias')`` with the input zero point folded into ``bias'`` - the accelerator's layer."""
    bias = fold_zero_point(w_kn, qlayer.bias, qlayer.input_zero_point)
    args = (qlayer.multiplier, qlayer.shift, qlayer.output_zero_point, qlayer.act_min, qlayer.act_max)
    if exact_gemm:
        return quantized_gemm(a, w_kn, bias, *args)
    # Adding the bias before the single wrap equals quantized_gemm's wrap(wrap(a @ w) + bias): both are mod 2**32.
    acc = _gemm_int64(a, w_kn)
    acc += bias.astype(np.int64)
    return requantize(wrap_int32(acc), *args)


def conv2d_int8(x, layer: Conv2D, qlayer, *, exact_gemm=False) -> np.ndarray:
    """Quantized Conv2D of an NHWC int8 batch: im2col padded with Z_in, folded-bias GEMM, requantize + clamp."""
    n, h, w, c = x.shape
    oh, ow, f = layer.output_shape((h, w, c))
    cols = im2col(x, layer.kernel, layer.stride, layer.padding_amounts(h, w), int(qlayer.input_zero_point))
    y = _gemm_requant(cols, qlayer.weight.reshape(-1, f), qlayer, exact_gemm)
    return y.reshape(n, oh, ow, f)


def dense_int8(x, layer: Dense, qlayer, *, exact_gemm=False) -> np.ndarray:
    """Quantized Dense of an (N, in) int8 batch: folded-bias GEMM, requantize + clamp."""
    return _gemm_requant(x, qlayer.weight, qlayer, exact_gemm)


def _int8_layer(layer, qlayer, x, exact_gemm):
    if isinstance(layer, Conv2D):
        return conv2d_int8(x, layer, qlayer, exact_gemm=exact_gemm)
    if isinstance(layer, Dense):
        return dense_int8(x, layer, qlayer, exact_gemm=exact_gemm)
    if isinstance(layer, MaxPool2D):
        return max_pool(x, layer.pool, layer.stride)
    if isinstance(layer, Flatten):
        return x.reshape(x.shape[0], -1)
    raise TypeError(f"Unsupported layer {layer!r}")


def int8_forward(qnet, images, *, return_layers=False, batch_size=None, exact_gemm=False):
    """Run a :class:`sw.quantize.QuantizedNetwork` on int8 NHWC images with the accelerator's exact arithmetic.

    ``images`` must already be quantized (``qnet.quantize_input(pixels)``). Returns the int8 output
    (N, *output_shape); with ``return_layers=True`` returns ``(output, {layer name: int8 output of that layer})``.
    ``exact_gemm=True`` uses :func:`sim.arith.quantized_gemm` (slow integer GEMM) instead of the float GEMM.
    """
    network = qnet.network
    x_all = as_image_batch(network, images)
    if x_all.dtype != np.int8:
        raise ValueError(f"int8_forward needs int8 images, not {x_all.dtype}; "
                         f"quantize them first with qnet.quantize_input(images)")
    bs = _batch_size(network, batch_size)
    outs: dict[str, list] = {layer.name: [] for layer in network.layers}
    final = []
    for start in range(0, max(len(x_all), 1), bs):
        x = x_all[start:start + bs]
        for layer, qlayer in zip(network.layers, qnet.layers):
            x = _int8_layer(layer, qlayer, x, exact_gemm)
            if return_layers:
                outs[layer.name].append(x)
        final.append(x)
    y = np.concatenate(final)
    if return_layers:
        return y, {name: np.concatenate(parts) for name, parts in outs.items()}
    return y


def dequantize_logits(qnet, q) -> np.ndarray:
    """Real values of the network's int8 output: ``S_out * (q - Z_out)`` as float32."""
    q = np.asarray(q)
    if not np.issubdtype(q.dtype, np.integer):
        raise ValueError(f"dequantize_logits needs integer (int8) outputs, not {q.dtype}")
    last = qnet.layers[-1]
    return (last.output_scale * (q.astype(np.float64) - last.output_zero_point)).astype(np.float32)
