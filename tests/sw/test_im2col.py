"""im2col and the zero-point fold against direct nested-loop convolutions and the spec's un-folded formula."""

import itertools

import numpy as np
import pytest

from sim.arith import gemm_int32, wrap_int32
from sw.im2col import conv_output_size, fold_zero_point, im2col
from sw.network import Conv2D


def direct_conv_acc(x, w, stride, pads, z_in, bias):
    """The spec's accumulation by nested loops: acc = bias + sum over in-bounds taps of w * (x - Z_in) (int64)."""
    n, h, wd, c = x.shape
    kh, kw, _, f = w.shape
    top, bottom, left, right = pads
    oh = conv_output_size(h, kh, stride[0], top, bottom)
    ow = conv_output_size(wd, kw, stride[1], left, right)
    acc = np.tile(bias.astype(np.int64), (n, oh, ow, 1))
    x64 = x.astype(np.int64) - z_in
    w64 = w.astype(np.int64)
    for i, j, a, b in itertools.product(range(oh), range(ow), range(kh), range(kw)):
        ih, iw = i * stride[0] - top + a, j * stride[1] - left + b
        if 0 <= ih < h and 0 <= iw < wd:  # taps in the padding contribute nothing
            acc[:, i, j, :] += x64[:, ih, iw, :] @ w64[a, b]
    return acc


def direct_patches(x, kernel, stride, pads, pad_value):
    """im2col by loops over output pixels and taps, padding read as pad_value."""
    n, h, wd, c = x.shape
    kh, kw = kernel
    top, bottom, left, right = pads
    oh = conv_output_size(h, kh, stride[0], top, bottom)
    ow = conv_output_size(wd, kw, stride[1], left, right)
    out = np.empty((n, oh, ow, kh, kw, c), dtype=x.dtype)
    for i, j, a, b in itertools.product(range(oh), range(ow), range(kh), range(kw)):
        ih, iw = i * stride[0] - top + a, j * stride[1] - left + b
        out[:, i, j, a, b, :] = x[:, ih, iw, :] if (0 <= ih < h and 0 <= iw < wd) else pad_value
    return out.reshape(n * oh * ow, kh * kw * c)


def first_mismatch(got, want):
    idx = tuple(int(i) for i in np.argwhere(got != want)[0])
    return f"first mismatch at {idx}: got {got[idx]}, expected {want[idx]}"


CASES = [(k, s, pad, c) for k in (1, 3, 5) for s in (1, 2) for pad in ("valid", "same") for c in (1, 3, 5, 9)]


@pytest.mark.parametrize("kernel,stride,padding,channels", CASES)
def test_im2col_gemm_equals_direct_convolution(kernel, stride, padding, channels):
    seed = 1000 * kernel + 100 * stride + 10 * channels + (padding == "same")
    rng = np.random.default_rng(seed)
    h, w, filters = int(rng.integers(kernel, 12)), int(rng.integers(kernel, 12)), int(rng.integers(1, 12))
    layer = Conv2D("c", filters, kernel, stride, padding)
    z_in = int(rng.integers(-128, 128))
    x = rng.integers(-128, 128, size=(2, h, w, channels), dtype=np.int8)
    wt = rng.integers(-127, 128, size=(kernel, kernel, channels, filters), dtype=np.int8)
    bias = rng.integers(-2 ** 20, 2 ** 20, size=filters).astype(np.int32)
    pads = layer.padding_amounts(h, w)

    cols = im2col(x, layer.kernel, layer.stride, pads, z_in)
    want_cols = direct_patches(x, layer.kernel, layer.stride, pads, z_in)
    assert cols.dtype == np.int8
    assert np.array_equal(cols, want_cols), f"seed {seed}: patches differ, {first_mismatch(cols, want_cols)}"

    oh, ow, _ = layer.output_shape((h, w, channels))
    w_kn = wt.reshape(-1, filters)
    got = wrap_int32(gemm_int32(cols, w_kn).astype(np.int64) + fold_zero_point(w_kn, bias, z_in))
    got = got.reshape(2, oh, ow, filters)
    want = wrap_int32(direct_conv_acc(x, wt, layer.stride, pads, z_in, bias))
    assert np.array_equal(got, want), f"seed {seed}: accumulators differ, {first_mismatch(got, want)}"


def test_im2col_rectangular_kernel_stride_and_asymmetric_padding():
    rng = np.random.default_rng(7)
    x = rng.integers(-128, 128, size=(3, 7, 10, 6), dtype=np.int8)
    for kernel, stride, pads in [((3, 1), (1, 2), (1, 1, 0, 0)), ((1, 5), (2, 1), (0, 1, 2, 2)),
                                 ((2, 2), (2, 2), (0, 1, 0, 1)), ((4, 3), (3, 2), (2, 1, 1, 0))]:
        got = im2col(x, kernel, stride, pads, -7)
        want = direct_patches(x, kernel, stride, pads, -7)
        assert np.array_equal(got, want), f"{kernel} {stride} {pads}: {first_mismatch(got, want)}"


def test_im2col_column_order_matches_hwio_weights():
    # One output pixel, so the GEMM row is the whole input in (kh, kw, c) order: the same order as HWIO reshaped.
    x = np.arange(2 * 3 * 4, dtype=np.int8).reshape(1, 2, 3, 4)
    cols = im2col(x, (2, 3), 1, (0, 0, 0, 0), 0)
    assert cols.shape == (1, 24)
    assert list(cols[0]) == list(range(24))
    w = np.arange(2 * 3 * 4 * 2).reshape(2, 3, 4, 2)
    assert list(w.reshape(-1, 2)[:, 0]) == [w[a, b, c, 0] for a in range(2) for b in range(3) for c in range(4)]


def test_im2col_strided_view_input():
    base = np.random.default_rng(4).integers(-128, 128, size=(3, 12, 9, 10), dtype=np.int8)
    x = base[::2, ::2, 1:, 3:8]  # a non-contiguous view: strides must be honoured
    got = im2col(x, 3, (2, 1), (1, 1, 0, 2), 5)
    assert np.array_equal(got, direct_patches(np.ascontiguousarray(x), (3, 3), (2, 1), (1, 1, 0, 2), 5))
    assert np.array_equal(im2col(x, 2, 1), direct_patches(np.ascontiguousarray(x), (2, 2), (1, 1), (0,) * 4, 0))


def test_im2col_float_keeps_dtype():
    x = np.random.default_rng(3).normal(size=(2, 5, 5, 3)).astype(np.float32)
    cols = im2col(x, 3, 2, (1, 1, 1, 1), 0.0)
    assert cols.dtype == np.float32
    assert np.array_equal(cols, direct_patches(x, (3, 3), (2, 2), (1, 1, 1, 1), 0.0))


def test_fold_equals_unfolded_formula_with_wrapping():
    # Extreme operands and a bias near INT32_MAX so both sides wrap modulo 2**32.
    rng = np.random.default_rng(11)
    k, n = 70_000, 5
    w = rng.choice(np.array([-127, 127, 0, 1], dtype=np.int8), size=(k, n))
    x = rng.choice(np.array([-128, 127], dtype=np.int8), size=(4, k))
    bias = np.array([2 ** 31 - 1, -2 ** 31, 0, 12345, -1], dtype=np.int32)
    for z_in in (-128, -1, 0, 1, 127):
        folded = fold_zero_point(w, bias, z_in)
        assert folded.dtype == np.int32
        got = wrap_int32(gemm_int32(x, w).astype(np.int64) + folded)
        # The un-folded formula in int64 (exact: |sum| < 2**35), wrapped once at the end.
        want = bias.astype(np.int64) + (x.astype(np.int64) - z_in) @ w.astype(np.int64)
        want = wrap_int32(want)
        assert np.array_equal(got, want), f"z_in {z_in}: {first_mismatch(got, want)}"


def test_fold_zero_point_formula():
    w = np.array([[1, -2], [3, 4], [-5, 6]], dtype=np.int8)
    bias = np.array([10, -20], dtype=np.int32)
    assert list(fold_zero_point(w, bias, 3)) == [10 - 3 * (1 + 3 - 5), -20 - 3 * (-2 + 4 + 6)]
    assert list(fold_zero_point(w, bias, 0)) == [10, -20]


@pytest.mark.parametrize("call,match", [
    (lambda: im2col(np.zeros((2, 3, 3), np.int8), 1), r"NHWC tensor of 4 dimensions, not shape \(2, 3, 3\)"),
    (lambda: im2col(np.zeros((1, 3, 3, 1), np.int8), 5), r"kernel 5x5 is larger than the padded input 3x3"),
    (lambda: im2col(np.zeros((1, 3, 3, 1), np.int8), 0), r"kernel must be an integer >= 1 .* not \(0, 0\)"),
    (lambda: im2col(np.zeros((1, 3, 3, 1), np.int8), 1, (1, -1)), r"stride must be an integer >= 1"),
    (lambda: im2col(np.zeros((1, 3, 3, 1), np.int8), 1, 1, (1, 1)), r"padding_amounts must be four non-negative"),
    (lambda: im2col(np.zeros((1, 3, 3, 1), np.int8), 1, 1, (1, 1, 1, 1), 200),
     r"pad_value must be an integer representable in int8 \(\[-128, 127\]\), not 200"),
    (lambda: fold_zero_point(np.zeros((3, 2), np.int8), np.zeros(3, np.int32), 0), r"bias of shape \(2,\)"),
    (lambda: fold_zero_point(np.zeros((3, 2), np.int8), np.zeros(2, np.int32), 128), r"z_in must be an int8 zero"),
])
def test_errors_name_the_cause(call, match):
    with pytest.raises(ValueError, match=match):
        call()
