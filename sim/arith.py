"""The int8 arithmetic of the whole project, once.

Everything that computes an int8 result - the golden model, the instruction-level simulator, the driver's CPU path
and every testbench - imports these functions, so there is a single definition of each rounding step. The
semantics follow TFLite/gemmlowp exactly as written in ``docs/int8-spec.md`` (a copy of the shared spec):

* :func:`srdhm` - SaturatingRoundingDoublingHighMul, with the asymmetric nudge ``1 - 2**30`` for negative products;
* :func:`rdbpot` - RoundingDivideByPOT, rounding exact halves away from zero;
* :func:`requantize` - ``clamp(RDBPOT(SRDHM(acc * 2**left, M0), right) + Z_out, act_min, act_max)``, built on
  :func:`multiply_by_quantized_multiplier` (TFLite's MultiplyByQuantizedMultiplier);
* :func:`quantize_multiplier` - TFLite's QuantizeMultiplier (frexp, rounding half away from zero, flush below 2**-31);
* the gemmlowp fixed-point functions TFLite's int8 SOFTMAX uses (:func:`exp_on_negative_values`,
  :func:`one_over_one_plus_x_for_x_in_0_1`, :func:`get_reciprocal`, :func:`saturating_rounding_multiply_by_pot`,
  :func:`rounding_half_sum`) and its parameter preparation (:func:`preprocess_softmax_scaling`).

All functions are pure, vectorised over NumPy arrays with explicit dtypes, and never import a simulator.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "INT32_MIN", "INT32_MAX", "MIN_SHIFT", "MAX_SHIFT",
    "wrap_int32", "srdhm", "rdbpot", "requantize", "quantize_multiplier",
    "gemm_int32", "quantized_gemm",
    "multiply_by_quantized_multiplier", "multiply_by_quantized_multiplier_greater_than_one",
    "multiply_by_quantized_multiplier_single_round", "ROUNDINGS",
    "saturating_rounding_multiply_by_pot", "rounding_half_sum", "count_leading_zeros32",
    "exp_on_interval_between_negative_one_quarter_and_0_excl", "exp_on_negative_values",
    "one_over_one_plus_x_for_x_in_0_1", "get_reciprocal", "preprocess_softmax_scaling", "calculate_input_radius",
    "round_half_away",
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


def multiply_by_quantized_multiplier(x, multiplier, shift) -> np.ndarray:
    """TFLite's MultiplyByQuantizedMultiplier (double rounding): ``RDBPOT(SRDHM(x * 2**left, M0), right)``.

    ``left = max(shift, 0)``, ``right = max(-shift, 0)``; the left shift wraps modulo 2**32 like the C code. With
    ``shift <= 0`` this is also MultiplyByQuantizedMultiplierSmallerThanOneExp (ADD's rescaling). int32 result;
    ``multiplier`` and ``shift`` broadcast along the last axis (per channel).
    """
    shift = np.asarray(shift, dtype=np.int64)
    _check_shift(shift)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    scaled = wrap_int32(np.asarray(x, dtype=np.int64) << left)
    return rdbpot(srdhm(scaled, multiplier), right)


def multiply_by_quantized_multiplier_greater_than_one(x, multiplier, left_shift) -> np.ndarray:
    """TFLite's MultiplyByQuantizedMultiplierGreaterThanOne: ``SRDHM(x * 2**left_shift, M0)`` (wrapping shift)."""
    left = np.asarray(left_shift, dtype=np.int64)
    if np.any((left < 0) | (left > 31)):
        raise ValueError(f"left shift must lie in [0, 31], not {left.min()}..{left.max()}")
    return srdhm(wrap_int32(np.asarray(x, dtype=np.int64) << left), multiplier)


def multiply_by_quantized_multiplier_single_round(x, multiplier, shift) -> np.ndarray:
    """MultiplyByQuantizedMultiplier as TFLite builds it with TFLITE_SINGLE_ROUNDING: one rounding,
    ``(x * M0 + 2**(30 - shift)) >> (31 - shift)`` (exact halves toward +infinity), ``shift <= 30``. LiteRT 2.3's
    reference FULLY_CONNECTED rounds this way (measured: docs/import.md); the accelerator's epilogue does not, so
    such layers store raw int32 accumulators and requantize on the host."""
    shift = np.asarray(shift, dtype=np.int64)
    if np.any((shift < MIN_SHIFT) | (shift > 30)):
        raise ValueError(f"single-rounding shift must lie in [{MIN_SHIFT}, 30], not {shift.min()}..{shift.max()}")
    total = 31 - shift
    y = (np.asarray(x, dtype=np.int64) * np.asarray(multiplier, dtype=np.int64) + (np.int64(1) << (total - 1))) >> total
    return wrap_int32(y)


#: Requantization rounding schemes: ``"double"`` (gemmlowp/TFLite default: SRDHM then RDBPOT; the hardware's) and
#: ``"single"`` (TFLITE_SINGLE_ROUNDING).
ROUNDINGS = {"double": multiply_by_quantized_multiplier, "single": multiply_by_quantized_multiplier_single_round}


def requantize(acc, multiplier, shift, zero_point=0, act_min=-128, act_max=127, rounding="double") -> np.ndarray:
    """Requantize int32 accumulators to int8 (per-channel parameters broadcast along the last axis).

    ``y = clamp(RDBPOT(SRDHM(acc * 2**max(shift, 0), multiplier), max(-shift, 0)) + zero_point, act_min, act_max)``

    The left shift wraps modulo 2**32 like the reference C code. ``act_min = zero_point`` is a fused ReLU.
    ``rounding="single"`` uses :func:`multiply_by_quantized_multiplier_single_round` instead (not the hardware's).
    """
    if not (-128 <= act_min <= act_max <= 127):
        raise ValueError(f"Clamp bounds must satisfy -128 <= act_min <= act_max <= 127, not [{act_min}, {act_max}]")
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding must be one of {sorted(ROUNDINGS)}, not {rounding!r}")
    y = ROUNDINGS[rounding](acc, multiplier, shift).astype(np.int64)
    return np.clip(y + int(zero_point), act_min, act_max).astype(np.int8)


def round_half_away(x) -> np.ndarray:
    """Round to the nearest integer, exact halves away from zero (C's ``std::round``, TFLite's TfLiteRound)."""
    x = np.asarray(x, dtype=np.float64)
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def quantize_multiplier(real_multiplier) -> tuple[np.ndarray, np.ndarray]:
    """Encode non-negative real multipliers as ``(M0, shift)`` with ``M = M0 * 2**(shift - 31)``, M0 in [2**30, 2**31).

    Exactly TFLite's QuantizeMultiplier: ``q, shift = frexp(M)`` (q in [0.5, 1)), ``M0 = round(q * 2**31)`` with
    halves away from zero (``std::round``; ``q * 2**31`` is exact in float64, so is the rounding); a rounding up to
    2**31 becomes 2**30 with ``shift + 1``; a zero multiplier, and one whose shift would fall below -31 (M below about
    2**-32: every product shifted out), encode as (0, 0). A shift above 31 (M >= 2**31) is an error. Returns int32
    and int8 arrays.
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
        q0 = math.floor(q * (1 << 31) + 0.5)
        if q0 == (1 << 31):
            q0 //= 2
            e += 1
        if e < MIN_SHIFT:
            continue            # TFLite flushes it to zero
        m0[i], sh[i] = q0, e
    if np.any(sh > MAX_SHIFT):
        raise ValueError(
            f"Real multiplier out of the representable range: the shift must lie in [{MIN_SHIFT}, {MAX_SHIFT}] "
            f"(got up to {int(sh.max())}); check the scales")
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


# ---------------------------------------------------------------------------------------------------------------
# gemmlowp fixed point (the int8 SOFTMAX of TFLite's reference kernels). A FixedPoint<int32, I> value is its raw
# int32 ``r`` meaning ``r * 2**(I - 31)``; a product of two is SRDHM of the raws (integer bits add), a sum the raw
# sum (wrapping), Rescale<I_dst> a saturating multiply by 2**(I_src - I_dst).

#: exp(-1/8), 1/3, exp(-2**k) for k = -2..4, 48/17 and -32/17 as gemmlowp's fixed-point constants.
_EXP_M1_8 = 1895147668
_ONE_THIRD = 715827883
_EXP_BARREL = ((-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308), (2, 39332535), (3, 720401),
               (4, 242))
_48_OVER_17 = 1515870810
_NEG_32_OVER_17 = -1010580540


def saturating_rounding_multiply_by_pot(x, exponent: int) -> np.ndarray:
    """gemmlowp SaturatingRoundingMultiplyByPOT<exponent>: a saturating left shift, or RDBPOT for exponent < 0."""
    x = np.asarray(x, dtype=np.int64)
    if exponent == 0:
        return x.astype(np.int32)
    if exponent < 0:
        return rdbpot(x, -exponent)
    threshold = (1 << (31 - exponent)) - 1
    y = np.where(x > threshold, INT32_MAX, np.where(x < -threshold, INT32_MIN, x << exponent))
    return y.astype(np.int32)


def rounding_half_sum(a, b) -> np.ndarray:
    """gemmlowp RoundingHalfSum for int32: ``(a + b + sign(a + b)) / 2`` truncated toward zero."""
    s = np.asarray(a, dtype=np.int64) + np.asarray(b, dtype=np.int64)
    t = s + np.where(s >= 0, 1, -1)
    return np.where(t >= 0, t // 2, -((-t) // 2)).astype(np.int32)


def _add(a, b) -> np.ndarray:
    return wrap_int32(np.asarray(a, dtype=np.int64) + np.asarray(b, dtype=np.int64))


def exp_on_interval_between_negative_one_quarter_and_0_excl(a) -> np.ndarray:
    """exp(a) for a FixedPoint<int32, 0> ``a`` in [-1/4, 0): a Taylor expansion around -1/8 (gemmlowp)."""
    x = _add(a, 1 << 28)                           # a + 1/8
    x2 = srdhm(x, x)
    x3 = srdhm(x2, x)
    x4 = srdhm(x2, x2)
    x4_over_4 = saturating_rounding_multiply_by_pot(x4, -2)
    poly = saturating_rounding_multiply_by_pot(_add(srdhm(_add(x4_over_4, x3), _ONE_THIRD), x2), -1)
    return _add(_EXP_M1_8, srdhm(_EXP_M1_8, _add(x, poly)))


def exp_on_negative_values(a, integer_bits: int) -> np.ndarray:
    """exp(a) of a FixedPoint<int32, integer_bits> ``a <= 0`` as a FixedPoint<int32, 0> (gemmlowp's barrel shifter)."""
    a = np.asarray(a, dtype=np.int64)
    frac = 31 - integer_bits
    one_quarter = 1 << (frac - 2)
    a_mod_quarter_minus_one_quarter = (a & (one_quarter - 1)) - one_quarter
    result = exp_on_interval_between_negative_one_quarter_and_0_excl(
        saturating_rounding_multiply_by_pot(a_mod_quarter_minus_one_quarter, integer_bits)).astype(np.int64)
    remainder = a_mod_quarter_minus_one_quarter - a
    for exponent, multiplier in _EXP_BARREL:
        if integer_bits > exponent:
            bit = (remainder & (1 << (frac + exponent))) != 0
            result = np.where(bit, srdhm(result, multiplier).astype(np.int64), result)
    if integer_bits > 5:
        result = np.where(a < -(1 << (36 - integer_bits)), 0, result)
    return np.where(a == 0, INT32_MAX, result).astype(np.int32)


def one_over_one_plus_x_for_x_in_0_1(a) -> np.ndarray:
    """1 / (1 + a) for a FixedPoint<int32, 0> ``a`` in [0, 1), as a FixedPoint<int32, 0> (three Newton steps)."""
    half_denominator = rounding_half_sum(a, INT32_MAX)
    x = _add(_48_OVER_17, srdhm(half_denominator, _NEG_32_OVER_17))      # FixedPoint<int32, 2>
    for _ in range(3):
        one_minus = _add(1 << 29, -srdhm(half_denominator, x).astype(np.int64))
        x = _add(x, saturating_rounding_multiply_by_pot(srdhm(x, one_minus), 2))
    return saturating_rounding_multiply_by_pot(x, 1)


def count_leading_zeros32(x) -> np.ndarray:
    """Leading zero bits of non-negative int32 values as 32-bit words (32 for 0)."""
    x = np.asarray(x, dtype=np.int64)
    bits = np.zeros(x.shape, dtype=np.int64)
    for k in range(32):
        bits += x >= (1 << k)
    return 32 - bits


def get_reciprocal(x, x_integer_digits: int) -> tuple[np.ndarray, np.ndarray]:
    """TFLite's GetReciprocal of a positive FixedPoint<int32, x_integer_digits>: ``(raw of 1/x scaled into [0.5, 1)
    as FixedPoint<int32, 0>, num_bits_over_unit)``."""
    x = np.asarray(x, dtype=np.int64)
    headroom_plus_one = count_leading_zeros32(x)
    num_bits_over_unit = x_integer_digits - headroom_plus_one
    shifted_sum_minus_one = wrap_int32(((x << headroom_plus_one) & 0xFFFF_FFFF) - (1 << 31))
    return one_over_one_plus_x_for_x_in_0_1(shifted_sum_minus_one), num_bits_over_unit


def calculate_input_radius(input_integer_bits: int, input_left_shift: int, total_signed_bits: int = 31) -> int:
    """TFLite's CalculateInputRadius: the largest input difference whose rescaled value still fits."""
    max_input_rescaled = (1.0 * ((1 << input_integer_bits) - 1) * (1 << (total_signed_bits - input_integer_bits))
                          / (1 << input_left_shift))
    return int(math.floor(max_input_rescaled))


def preprocess_softmax_scaling(beta: float, input_scale: float, input_integer_bits: int = 5) -> tuple[int, int, int]:
    """TFLite's int8 SOFTMAX preparation: ``(input_multiplier, input_left_shift, diff_min)``.

    ``beta * S_in * 2**(31 - input_integer_bits)`` (capped at 2**31 - 1) through QuantizeMultiplier (its shift must
    be >= 0: QuantizeMultiplierGreaterThanOne), and ``diff_min = -CalculateInputRadius(input_integer_bits, shift)``.
    ``beta`` and ``input_scale`` are the file's float32 values, widened to float64 as the C++ does.
    """
    real = min(float(beta) * float(input_scale) * float(1 << (31 - input_integer_bits)), float((1 << 31) - 1))
    m0, shift = quantize_multiplier(real)
    m0, shift = int(m0[0]), int(shift[0])
    if shift < 0:
        raise ValueError(f"softmax input multiplier {real} is below one (beta * input scale too small)")
    return m0, shift, -calculate_input_radius(input_integer_bits, shift)
