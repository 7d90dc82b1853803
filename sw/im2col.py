"""Lowering of convolutions to GEMM: patch extraction (im2col) and the input-zero-point fold.

A Conv2D on an NHWC tensor equals a matrix product ``cols @ w_kn`` where ``cols`` is (N*OH*OW, KH*KW*C), one row per
output pixel holding its receptive field in (kh, kw, c) order, and ``w_kn`` is the HWIO weight reshaped to
(KH*KW*C, filters). The accelerator multiplies raw int8 operands, so the input zero point moves into the bias
(:func:`fold_zero_point`) and padding is filled with that zero point, which keeps the fold exact
(docs/int8-spec.md, "Convolution / dense accumulation").
"""

from __future__ import annotations

import numpy as np

from sim.arith import wrap_int32

__all__ = ["im2col", "conv_output_size", "fold_zero_point"]


def _pair(what, value, *, minimum):
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (value, value)
    try:
        value = tuple(value)
    except TypeError:
        value = (value,)
    if len(value) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= minimum
                                  for v in value):
        raise ValueError(f"im2col {what} must be an integer >= {minimum} or a pair of them, not {value!r}")
    return int(value[0]), int(value[1])


def conv_output_size(size: int, kernel: int, stride: int, pad_before: int, pad_after: int) -> int:
    """Output length of one spatial axis: ``(size + pads - kernel) // stride + 1``."""
    return (size + pad_before + pad_after - kernel) // stride + 1


def im2col(x, kernel, stride=(1, 1), padding_amounts=(0, 0, 0, 0), pad_value=0, dilation=(1, 1)) -> np.ndarray:
    """Extract convolution patches of an NHWC tensor as the rows of a matrix.

    Parameters
    ----------
    x : ndarray, shape (N, H, W, C)
        Input activations, any dtype (int8 on the quantized path, float32 on the float path); the result keeps it.
    kernel, stride : int or (int, int)
        Kernel and stride (height, width).
    padding_amounts : (top, bottom, left, right)
        Rows/columns added around the input, e.g. :meth:`sw.network.Conv2D.padding_amounts`.
    pad_value : scalar
        Fill value of the padding: the input zero point on the int8 path, so padded taps contribute
        ``w * (Z_in - Z_in) = 0`` once the zero point is folded into the bias.
    dilation : int or (int, int)
        Spacing of the kernel taps (1: adjacent).

    Returns
    -------
    ndarray, shape (N*OH*OW, KH*KW*C)
        Row ``(n*OH + oh)*OW + ow`` holds the patch of output pixel (n, oh, ow), columns in (kh, kw, c) order -
        the order of an HWIO weight reshaped to (KH*KW*C, filters).
    """
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"im2col needs an NHWC tensor of 4 dimensions, not shape {x.shape}")
    kh, kw = _pair("kernel", kernel, minimum=1)
    sh, sw = _pair("stride", stride, minimum=1)
    dh, dw = _pair("dilation", dilation, minimum=1)
    pads = tuple(padding_amounts)
    if len(pads) != 4 or not all(isinstance(p, (int, np.integer)) and not isinstance(p, bool) and p >= 0
                                 for p in pads):
        raise ValueError(f"im2col padding_amounts must be four non-negative integers (top, bottom, left, right), "
                         f"not {padding_amounts!r}")
    if np.issubdtype(x.dtype, np.integer):
        info = np.iinfo(x.dtype)
        if not (isinstance(pad_value, (int, np.integer)) and info.min <= pad_value <= info.max):
            raise ValueError(f"im2col pad_value must be an integer representable in {x.dtype} "
                             f"([{info.min}, {info.max}]), not {pad_value!r}")
    top, bottom, left, right = (int(p) for p in pads)
    if any(pads):
        x = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), mode="constant", constant_values=pad_value)
    n, h, w, c = x.shape
    ekh, ekw = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    if h < ekh or w < ekw:
        raise ValueError(f"im2col kernel {kh}x{kw} is larger than the padded input {h}x{w}"
                         + (f" (dilation {dh}x{dw})" if (dh, dw) != (1, 1) else ""))
    oh = (h - ekh) // sh + 1
    ow = (w - ekw) // sw + 1
    s_n, s_h, s_w, s_c = x.strides
    # A read-only view (n, oh, ow, kh, kw, c) of the padded input; the reshape makes the single copy, with the
    # channel axis innermost so the copy streams through contiguous memory.
    patches = np.lib.stride_tricks.as_strided(
        x, shape=(n, oh, ow, kh, kw, c), strides=(s_n, s_h * sh, s_w * sw, s_h * dh, s_w * dw, s_c), writeable=False)
    return patches.reshape(n * oh * ow, kh * kw * c)


def fold_zero_point(weight_kn, bias, z_in) -> np.ndarray:
    """Fold the input zero point into the bias: ``bias'[n] = bias[n] - z_in * sum_k weight_kn[k, n]`` (int32).

    With it, ``bias'[n] + sum_k w[k, n] * x[k]`` equals the spec's ``bias[n] + sum_k w[k, n] * (x[k] - z_in)``
    modulo 2**32, so the array multiplies raw int8 values. The result wraps like the hardware's int32.
    """
    w = np.asarray(weight_kn)
    b = np.asarray(bias)
    if w.ndim != 2 or not np.issubdtype(w.dtype, np.integer):
        raise ValueError(f"fold_zero_point needs an integer (K, N) weight matrix, not {w.dtype} of shape {w.shape}")
    if b.shape != (w.shape[1],) or not np.issubdtype(b.dtype, np.integer):
        raise ValueError(f"fold_zero_point needs an integer bias of shape ({w.shape[1]},), "
                         f"not {b.dtype} of shape {b.shape}")
    if not (isinstance(z_in, (int, np.integer)) and not isinstance(z_in, bool) and -128 <= z_in <= 127):
        raise ValueError(f"fold_zero_point z_in must be an int8 zero point in [-128, 127], not {z_in!r}")
    colsum = w.astype(np.int64).sum(axis=0)
    return wrap_int32(b.astype(np.int64) - int(z_in) * colsum)
