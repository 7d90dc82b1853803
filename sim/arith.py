"""The int8 arithmetic of the whole project, once.

Everything that computes an int8 result - the golden model, the instruction-level simulator, the driver's CPU path
and every testbench - imports these functions, so there is a single definition of each rounding step. The
semantics follow TFLite/gemmlowp exactly as written in ``docs/int8-spec.md`` (a copy of the shared spec):

* :func:`srdhm` - SaturatingRoundingDoublingHighMul, with the asymmetric nudge ``1 - 2**30`` for negative products;
* :func:`rdbpot` - RoundingDivideByPOT, rounding exact halves away from zero;
* :func:`requantize` - ``clamp(RDBPOT(SRDHM(acc * 2**left, M0), right) + Z_out, act_min, act_max)``.

All functions are pure, vectorised over NumPy arrays with explicit dtypes, and never import a simulator.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "INT32_MIN", "INT32_MAX", "MIN_SHIFT", "MAX_SHIFT",
    "wrap_int32", "srdhm", "rdbpot", "requantize", "quantize_multiplier",
    "gemm_int32", "quantized_gemm",
]

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1

#: Most negative requantization shift (a right shift by 31).
MIN_SHIFT = -31
#: Largest left shift the hardware supports; the shift field is a 6-bit two's-complement number.
MAX_SHIFT = 31


def wrap_int32(x) -> np.ndarray:
    """Reduce integers modulo 2**32 into int32, as two's-complement hardware does."""
    x = np.asarray(x)
    if x.dtype == np.int32:
        return x
    x = x.astype(np.int64, copy=False)
    return (((x + (1 << 31)) & 0xFFFF_FFFF) - (1 << 31)).astype(np.int32)


def srdhm(a, b) -> np.ndarray:
    """SaturatingRoundingDoublingHighMul of two int32 arrays (broadcast), returning int32."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    x = a * b  # |a*b| <= 2**62: exact in int64
    negative = x < 0
    # nudge: 2**30 for ab >= 0, 1 - 2**30 for ab < 0 (= 2**30 - (2**31 - 1)).
    x += 1 << 30
    x -= negative * np.int64((1 << 31) - 1)
    # Division by 2**31 truncated toward zero: for negative x, floor((x + 2**31 - 1) / 2**31).
    x += (x >> 63) & np.int64((1 << 31) - 1)
    x >>= 31
    saturate = (a == INT32_MIN) & (b == INT32_MIN)
    if np.any(saturate):
        x = np.where(saturate, np.int64(INT32_MAX), x)
    return x.astype(np.int32)


def rdbpot(x, exponent) -> np.ndarray:
    """RoundingDivideByPOT: ``x / 2**exponent`` rounded to nearest, exact halves away from zero.

    ``exponent`` may be an array (per-channel shifts) and must lie in [0, 31].
    """
    x = np.asarray(x, dtype=np.int64)
    e = np.asarray(exponent, dtype=np.int64)
    if np.any((e < 0) | (e > 31)):
        raise ValueError(f"RDBPOT exponent must lie in [0, 31], not {e.min()}..{e.max()}")
    mask = (np.int64(1) << e) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return ((x >> e) + (remainder > threshold)).astype(np.int32)


def _check_shift(shift: np.ndarray) -> None:
    if np.any((shift < MIN_SHIFT) | (shift > MAX_SHIFT)):
        raise ValueError(
            f"Requantization shift must lie in [{MIN_SHIFT}, {MAX_SHIFT}], "
            f"not {int(shift.min())}..{int(shift.max())}")


def requantize(acc, multiplier, shift, zero_point=0, act_min=-128, act_max=127) -> np.ndarray:
    """Requantize int32 accumulators to int8 (per-channel parameters broadcast along the last axis).

    ``y = clamp(RDBPOT(SRDHM(acc * 2**max(shift, 0), multiplier), max(-shift, 0)) + zero_point, act_min, act_max)``

    The left shift wraps modulo 2**32 like the reference C code. ``act_min = zero_point`` is a fused ReLU.
    """
    acc = np.asarray(acc, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    _check_shift(shift)
    if not (-128 <= act_min <= act_max <= 127):
        raise ValueError(f"Clamp bounds must satisfy -128 <= act_min <= act_max <= 127, not [{act_min}, {act_max}]")
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    scaled = wrap_int32(acc << left)
    y = rdbpot(srdhm(scaled, multiplier), right).astype(np.int64)
    return np.clip(y + int(zero_point), act_min, act_max).astype(np.int8)


def quantize_multiplier(real_multiplier) -> tuple[np.ndarray, np.ndarray]:
    """Encode positive real multipliers as ``(M0, shift)`` with ``M = M0 * 2**(shift - 31)``, M0 in [2**30, 2**31).

    ``M0 = round(q * 2**31)`` where ``M = q * 2**shift`` and q in [0.5, 1); a rounding up to 2**31 becomes 2**30
    with shift + 1. A zero multiplier encodes as (0, 0). Returns int32 and int8 arrays.
    """
    m = np.atleast_1d(np.asarray(real_multiplier, dtype=np.float64))
    if np.any(~np.isfinite(m)) or np.any(m < 0):
        raise ValueError("Requantization multipliers must be finite and non-negative")
    m0 = np.zeros(m.shape, dtype=np.int64)
    sh = np.zeros(m.shape, dtype=np.int64)
    for i, v in np.ndenumerate(m):
        if v == 0.0:
            continue
        q, e = math.frexp(float(v))  # v = q * 2**e, q in [0.5, 1)
        q0 = round(q * (1 << 31))
        if q0 == (1 << 31):
            q0 //= 2
            e += 1
        m0[i], sh[i] = q0, e
    if np.any(sh > MAX_SHIFT) or np.any((sh < MIN_SHIFT) & (m0 != 0)):
        raise ValueError(
            f"Real multiplier out of the representable range: the shift must lie in [{MIN_SHIFT}, {MAX_SHIFT}] "
            f"(got {int(sh.min())}..{int(sh.max())}); check the scales")
    return m0.astype(np.int32), sh.astype(np.int8)


def gemm_int32(a, b) -> np.ndarray:
    """int8 x int8 matrix product with int32 accumulation that wraps modulo 2**32 like the hardware.

    ``a`` is (M, K), ``b`` is (K, N). Products are exact in int64; only the final sum is reduced, which equals
    wrapping after every addition because addition modulo 2**32 is associative.
    """
    a = np.asarray(a)
    b = np.asarray(b)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"GEMM shapes do not chain: a {a.shape} x b {b.shape}")
    # int64 sums of up to 2**32 products of magnitude <= 2**14 cannot overflow.
    return wrap_int32(a.astype(np.int64) @ b.astype(np.int64))


def quantized_gemm(a, b, bias, multiplier, shift, zero_point=0, act_min=-128, act_max=127,
                   raw=False) -> np.ndarray:
    """The fused quantized layer the accelerator computes: ``requantize(a @ b + bias)`` per output column.

    With ``raw=True`` the int32 accumulators ``a @ b + bias`` (wrapping) are returned instead of int8.
    """
    acc = wrap_int32(gemm_int32(a, b).astype(np.int64) + np.asarray(bias, dtype=np.int64))
    if raw:
        return acc
    return requantize(acc, multiplier, shift, zero_point, act_min, act_max)
