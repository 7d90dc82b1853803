"""Golden arithmetic against hand-computed values and the spec's edge vectors (docs/int8-spec.md)."""

import numpy as np
import pytest

from sim.arith import (INT32_MAX, INT32_MIN, MAX_SHIFT, MIN_SHIFT, gemm_int32, quantize_multiplier,
                       quantized_gemm, rdbpot, requantize, srdhm, wrap_int32)


def srdhm_scalar(a, b):
    """Line-by-line transcription of the spec in Python integers, as an independent oracle."""
    if a == b == INT32_MIN:
        return INT32_MAX
    ab = a * b
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    x = ab + nudge
    return x // (1 << 31) if x >= 0 else -((-x) // (1 << 31))


def rdbpot_scalar(x, e):
    mask = (1 << e) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> e) + (1 if remainder > threshold else 0)


def test_srdhm_spec_vectors():
    assert srdhm(INT32_MIN, INT32_MIN) == INT32_MAX
    assert srdhm(101, 1 << 30) == 51
    assert srdhm(-101, 1 << 30) == -50
    assert srdhm(INT32_MIN, INT32_MAX) == -INT32_MAX  # -2**31 * (2**31-1) / 2**31, nudged toward zero


def test_rdbpot_spec_vectors():
    assert list(rdbpot([5, -5, 3, -3], 1)) == [3, -3, 2, -2]
    assert rdbpot(INT32_MIN, 31) == -1
    assert rdbpot(INT32_MAX, 31) == 1
    assert rdbpot(7, 0) == 7


def test_requantize_spec_vectors():
    # M = 0.5: M0 = 2**30, shift 0.
    assert list(requantize([101, -101, -103], 1 << 30, 0)) == [51, -50, -51]


@pytest.mark.parametrize("shift", range(MIN_SHIFT, MAX_SHIFT + 1))
def test_requantize_every_shift(shift):
    rng = np.random.default_rng(1000 + shift)
    acc = rng.integers(INT32_MIN, INT32_MAX, size=400, endpoint=True, dtype=np.int64)
    acc[:4] = [INT32_MIN, INT32_MAX, 0, -1]
    m0 = rng.integers(INT32_MIN, INT32_MAX, size=400, endpoint=True, dtype=np.int64)
    m0[:2] = INT32_MIN
    zp = int(rng.integers(-128, 128))
    got = requantize(acc, m0, shift, zp, -128, 127)
    left, right = max(shift, 0), max(-shift, 0)
    for i in range(acc.size):
        scaled = int(wrap_int32(int(acc[i]) << left))
        want = min(max(rdbpot_scalar(srdhm_scalar(scaled, int(m0[i])), right) + zp, -128), 127)
        assert got[i] == want, f"seed {1000 + shift} element {i}: acc={acc[i]} m0={m0[i]} got {got[i]} want {want}"


def test_requantize_exact_halves_both_directions():
    # right shift by 2 of +/-6 (=1.5) rounds away from zero to +/-2; +/-2 (=0.5) to +/-1.
    # RDBPOT by 2: +/-6 (1.5) and +/-10 (2.5) round away from zero; +/-2 (0.5) too.
    assert list(rdbpot([6, -6, 2, -2, 10, -10], 2)) == [2, -2, 1, -1, 3, -3]
    # Through the whole requantizer with M0 = 2**30 (x0.5) and shift -1 (x0.5): acc 6 -> SRDHM 3 -> 1.5 -> 2.
    assert list(requantize([6, -6, 2, -2], 1 << 30, -1)) == [2, -2, 1, -1]


def test_requantize_clamp_and_relu():
    assert list(requantize([-1000, 1000, 0], 1 << 30, 0, zero_point=-5, act_min=-5, act_max=100)) == [-5, 100, -5]
    with pytest.raises(ValueError, match="act_min"):
        requantize([0], 1 << 30, 0, act_min=10, act_max=5)
    with pytest.raises(ValueError, match="shift"):
        requantize([0], 1 << 30, 32)


def test_quantize_multiplier():
    m0, sh = quantize_multiplier([0.5, 0.75, 1.0, 3.0, 2.0 ** -20, 0.0])
    assert list(m0) == [1 << 30, 3 << 29, 1 << 30, 3 << 29, 1 << 30, 0]
    assert list(sh) == [0, 0, 1, 2, -19, 0]
    # Rounding up to 2**31 renormalises.
    m0, sh = quantize_multiplier([1.0 - 2.0 ** -40])
    assert (m0[0], sh[0]) == (1 << 30, 1)
    rng = np.random.default_rng(7)
    real = rng.uniform(1e-6, 4.0, size=200)
    m0, sh = quantize_multiplier(real)
    np.testing.assert_allclose(m0 * 2.0 ** (sh.astype(np.float64) - 31), real, rtol=2 ** -30)
    with pytest.raises(ValueError, match="non-negative"):
        quantize_multiplier([-1.0])


def test_gemm_wraps_like_hardware():
    a = np.full((1, 1 << 17), -128, dtype=np.int8)
    b = np.full((1 << 17, 1), -128, dtype=np.int8)
    # 2**17 * 2**14 = 2**31 -> wraps to INT32_MIN.
    assert gemm_int32(a, b)[0, 0] == INT32_MIN
    a = np.array([[1, -2, 3]], dtype=np.int8)
    b = np.array([[4], [5], [-6]], dtype=np.int8)
    assert gemm_int32(a, b)[0, 0] == 4 - 10 - 18
    with pytest.raises(ValueError, match="do not chain"):
        gemm_int32(a, a)


def test_quantized_gemm_hand_computed():
    a = np.array([[10, -20], [3, 4]], dtype=np.int8)
    b = np.array([[1, 2], [3, -4]], dtype=np.int8)
    bias = np.array([100, -7])
    acc = quantized_gemm(a, b, bias, 0, 0, raw=True)
    assert acc.tolist() == [[10 - 60 + 100, 20 + 80 - 7], [3 + 12 + 100, 6 - 16 - 7]]
    out = quantized_gemm(a, b, bias, [1 << 30, 1 << 30], [0, -1], zero_point=1)
    # col 0 (M = 0.5): 50 -> 25, 115 -> 57.5 -> 58; then + 1.
    # col 1 (M = 0.25, double rounding): 93 -> SRDHM 46.5 -> 47 -> RDBPOT 23.5 -> 24 (a single rounding gives 23);
    # -17 -> SRDHM -8.5 -> -8 (negative half toward zero) -> RDBPOT -4; then + 1.
    assert out.tolist() == [[26, 25], [59, -3]]


# ---- TFLite / gemmlowp primitives of the imported models (bit-exactness against LiteRT: tests/sw/frontends)


def test_quantize_multiplier_rounds_halves_away_and_flushes_like_tflite():
    from sim.arith import quantize_multiplier
    # q * 2**31 = 2**30 + 0.5 exactly: std::round goes up (Python's round would go to even).
    m0, sh = quantize_multiplier([(2 ** 30 + 0.5) / 2 ** 31])
    assert (int(m0[0]), int(sh[0])) == (2 ** 30 + 1, 0)
    # Below 2**-32 the shift would pass -31: TFLite flushes to (0, 0).
    m0, sh = quantize_multiplier([2.0 ** -33, 2.0 ** -31])
    assert list(m0) == [0, 1 << 30] and list(sh) == [0, -30]


def test_single_rounding_formula():
    from sim.arith import multiply_by_quantized_multiplier, multiply_by_quantized_multiplier_single_round
    x = np.arange(-3000, 3000, dtype=np.int64)
    m, s = 1 << 30, -3                      # x * 0.5 / 8 = x / 16
    single = multiply_by_quantized_multiplier_single_round(x, m, s)
    np.testing.assert_array_equal(single, np.floor(x / 16 + 0.5).astype(np.int32))   # halves toward +inf
    double = multiply_by_quantized_multiplier(x, m, s)
    # Double rounding: SRDHM halves (negative halves toward zero), then RDBPOT away from zero.
    expect = rdbpot(srdhm(x, m), 3)
    np.testing.assert_array_equal(double, expect)
    assert np.any(single != double)
    with pytest.raises(ValueError, match="single-rounding shift"):
        multiply_by_quantized_multiplier_single_round(x, m, 31)


def test_gemmlowp_exp_and_reciprocal_approximate_the_real_functions():
    from sim.arith import (exp_on_negative_values, get_reciprocal, one_over_one_plus_x_for_x_in_0_1,
                           rounding_half_sum, saturating_rounding_multiply_by_pot)
    a = np.linspace(-31.9, -0.001, 4001)
    raw = np.round(a * 2 ** 26).astype(np.int64)               # Q5.26
    got = exp_on_negative_values(raw, 5).astype(np.float64) / 2 ** 31
    # gemmlowp's polynomial and barrel shifter are good to about 2**-22 (bit-exactness: tests/sw/frontends).
    np.testing.assert_allclose(got, np.exp(raw / 2 ** 26), atol=2.0 ** -21)
    assert exp_on_negative_values(np.array([0]), 5)[0] == INT32_MAX
    x = np.linspace(0, 0.999, 999)
    raw = np.round(x * 2 ** 31).astype(np.int64)
    got = one_over_one_plus_x_for_x_in_0_1(raw).astype(np.float64) / 2 ** 31
    np.testing.assert_allclose(got, 1 / (1 + raw / 2 ** 31), atol=2e-9)
    # GetReciprocal of a Q12.19 sum s: value in [0.5, 1) times 2**-num_bits_over_unit ~ 1/s.
    s = np.array([1 << 19, 3 << 19, 1000 << 19, (1 << 19) + 12345])
    recip, bits = get_reciprocal(s, 12)
    np.testing.assert_allclose(recip / 2 ** 31 * 2.0 ** -bits, 2 ** 19 / s, rtol=1e-8)
    assert list(rounding_half_sum([3, -3, 4], [0, 0, 1])) == [2, -2, 3]
    assert list(saturating_rounding_multiply_by_pot([1 << 29, -(1 << 29), 5], 2)) == [INT32_MAX, INT32_MIN, 20]


def test_preprocess_softmax_scaling():
    from sim.arith import calculate_input_radius, preprocess_softmax_scaling
    m0, left, diff_min = preprocess_softmax_scaling(1.0, 0.1, 5)
    # 0.1 * 2**26 = 6710886.4 = 0.8 * 2**23: shift 23, M0 = round(0.8 * 2**31).
    assert (m0, left) == (round(0.8 * 2 ** 31), 23)
    assert diff_min == -calculate_input_radius(5, 23) == -((31 * 2 ** 26) // 2 ** 23)
