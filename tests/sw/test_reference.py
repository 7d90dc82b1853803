"""The NumPy reference paths: the fast GEMM is bit-exact, int8_forward equals an independent loop oracle built on
the spec's un-folded formula and sim.arith.requantize, and float_forward equals a float64 loop convolution."""

import itertools

import numpy as np
import pytest

from sim.arith import gemm_int32, requantize, wrap_int32
from sw.im2col import im2col
from sw.network import Conv2D, Dense, Flatten, MaxPool2D, Network
from sw.quantize import QuantizedLayer, QuantizedNetwork, quantize
from sw.reference import (ParameterError, check_params, dequantize_logits, float_forward, gemm_int32_fast,
                          int8_forward)
from sw.testing import random_images, random_network, random_params


def first_mismatch(got, want):
    idx = tuple(int(i) for i in np.argwhere(got != want)[0])
    return f"first mismatch at {idx}: got {got[idx]}, expected {want[idx]}"


# ---------------------------------------------------------------------------------------------------------------
# Fast GEMM


@pytest.mark.parametrize("m,k,n", [(7, 1, 3), (33, 288, 64), (5, 1024, 9), (5, 1025, 9), (3, 1600, 17)])
def test_fast_gemm_equals_integer_gemm(m, k, n):
    seed = m * 10_000 + k + n
    rng = np.random.default_rng(seed)
    a = rng.integers(-128, 128, size=(m, k), dtype=np.int8)
    b = rng.integers(-128, 128, size=(k, n), dtype=np.int8)
    got, want = gemm_int32_fast(a, b), gemm_int32(a, b)
    assert got.dtype == np.int32
    assert np.array_equal(got, want), f"seed {seed}: {first_mismatch(got, want)}"


@pytest.mark.parametrize("k", [1024, 1025, 65_536, (1 << 17) + 3])
def test_fast_gemm_extreme_magnitudes_and_wrapping(k):
    # -128 * -128 = 2**14 products give the largest partial sums; a final odd product makes the K = 1025 sum
    # 2**24 + 1, which float32 cannot hold (so the float32 path must stop at K = 1024); beyond 2**17 products the
    # int32 sum wraps, which the fast path must reproduce.
    a = np.full((2, k), -128, dtype=np.int8)
    a[:, -1] = 1
    a[1, ::2] = 127
    b = np.full((k, 3), -128, dtype=np.int8)
    b[-1] = 1
    b[:, 2] = 127
    got, want = gemm_int32_fast(a, b), gemm_int32(a, b)
    assert np.array_equal(got, want), f"K {k}: {first_mismatch(got, want)}"
    assert int(want[0, 0]) == int(wrap_int32((k - 1) * 16384 + 1))


def test_fast_gemm_falls_back_for_other_dtypes():
    a = np.array([[2 ** 20, 3]], dtype=np.int32)
    b = np.array([[2 ** 12], [5]], dtype=np.int32)
    assert gemm_int32_fast(a, b)[0, 0] == int(wrap_int32(2 ** 32 + 15))


# ---------------------------------------------------------------------------------------------------------------
# int8 oracle: loops, the un-folded spec formula, sim.arith.requantize


def oracle_layer(layer, q, x, raw=False):
    if isinstance(layer, Conv2D):
        n, h, w, c = x.shape
        oh, ow, f = layer.output_shape((h, w, c))
        top, _, left, _ = layer.padding_amounts(h, w)
        acc = np.tile(q.bias.astype(np.int64), (n, oh, ow, 1))
        xs = x.astype(np.int64) - q.input_zero_point
        wt = q.weight.astype(np.int64)
        for i, j, a, b in itertools.product(range(oh), range(ow), *map(range, layer.kernel)):
            ih, iw = i * layer.stride[0] - top + a, j * layer.stride[1] - left + b
            if 0 <= ih < h and 0 <= iw < w:
                acc[:, i, j, :] += xs[:, ih, iw, :] @ wt[a, b]
    elif isinstance(layer, Dense):
        acc = q.bias.astype(np.int64) + (x.astype(np.int64) - q.input_zero_point) @ q.weight.astype(np.int64)
    elif isinstance(layer, MaxPool2D):
        n, h, w, c = x.shape
        oh, ow, _ = layer.output_shape((h, w, c))
        out = np.full((n, oh, ow, c), -128, dtype=np.int8)
        for i, j, a, b in itertools.product(range(oh), range(ow), *map(range, layer.pool)):
            out[:, i, j] = np.maximum(out[:, i, j], x[:, i * layer.stride[0] + a, j * layer.stride[1] + b])
        return out
    else:
        return x.reshape(len(x), -1)
    if raw:
        return wrap_int32(acc)
    return requantize(wrap_int32(acc), q.multiplier, q.shift, q.output_zero_point, q.act_min, q.act_max)


def random_quantized(seed, n_images=6, **kwargs):
    rng = np.random.default_rng(seed)
    net = random_network(rng, **kwargs)
    params = random_params(rng, net, zero_channels=1)
    images = random_images(rng, net, n_images)
    return net, params, images, quantize(net, params, images)


@pytest.mark.parametrize("seed", range(12))
def test_int8_forward_equals_loop_oracle_every_layer(seed):
    net, _, images, qnet = random_quantized(seed)
    x = qnet.quantize_input(images)
    out, layers = int8_forward(qnet, x, return_layers=True)
    for layer, q in zip(net.layers, qnet.layers):
        if q.weight is not None:
            # The accelerator's operands (raw int8 patches padded with Z_in, folded bias) reproduce the oracle's
            # un-folded accumulators exactly.
            a = x if isinstance(layer, Dense) else im2col(x, layer.kernel, layer.stride,
                                                          layer.padding_amounts(*x.shape[1:3]), q.input_zero_point)
            acc = wrap_int32(gemm_int32(a, q.weight_kn).astype(np.int64) + q.folded_bias)
            want_acc = oracle_layer(layer, q, x, raw=True).reshape(acc.shape)
            assert np.array_equal(acc, want_acc), f"seed {seed} layer {layer.name}: {first_mismatch(acc, want_acc)}"
        want = oracle_layer(layer, q, x)
        got = layers[layer.name]
        assert got.dtype == np.int8 and got.shape == want.shape, f"seed {seed} layer {layer.name}"
        assert np.array_equal(got, want), f"seed {seed} layer {layer.name}: {first_mismatch(got, want)}"
        x = want
    assert np.array_equal(out, x)


@pytest.mark.parametrize("seed", [20, 21])
def test_int8_forward_exact_gemm_and_batching_agree(seed):
    _, _, images, qnet = random_quantized(seed, n_images=9)
    x = qnet.quantize_input(images)
    fast = int8_forward(qnet, x)
    assert np.array_equal(fast, int8_forward(qnet, x, exact_gemm=True)), f"seed {seed}"
    assert np.array_equal(fast, int8_forward(qnet, x, batch_size=2)), f"seed {seed}"


def hand_dense(weight, bias, m0, shift, z_in=0, z_out=0, act_min=-128, act_max=127):
    weight = np.asarray(weight, np.int8)
    units = weight.shape[1]
    net = Network((1, 1, weight.shape[0]), (Flatten("f"), Dense("d", units)))
    ql = QuantizedLayer("d", "dense", 1.0, z_in, 1.0, z_out, act_min, act_max,
                        weight=np.asarray(weight, np.int8), bias=np.asarray(bias, np.int32),
                        weight_scale=np.ones(units), multiplier=np.full(units, m0, np.int32),
                        shift=np.full(units, shift, np.int8))
    return QuantizedNetwork(net, (QuantizedLayer("f", "flatten", 1.0, z_in, 1.0, z_in), ql), 1.0, z_in)


def test_int8_forward_spec_vectors():
    # docs/int8-spec.md: M = 0.5 (M0 = 2**30, shift 0), Z_out = 0: acc 101 -> 51, -101 -> -50, -103 -> -51.
    qnet = hand_dense([[1]], [0], 1 << 30, 0)
    x = np.array([101, -101, -103, 0], dtype=np.int8).reshape(4, 1, 1, 1)
    assert list(int8_forward(qnet, x)[:, 0]) == [51, -50, -51, 0]
    # The same accumulators reached through a zero point and a bias: acc = bias + w * (x - Z_in).
    qnet = hand_dense([[1]], [100], 1 << 30, 0, z_in=-5)  # acc = 100 + (x + 5)
    x = np.array([-4, -105, -5], dtype=np.int8).reshape(3, 1, 1, 1)
    assert list(int8_forward(qnet, x)[:, 0]) == [51, 0, 50]
    # Fused ReLU clamp at Z_out and the output zero point.
    qnet = hand_dense([[1, -1]], [0, 0], 1 << 30, 1, z_out=-10, act_min=-10, act_max=100)
    x = np.array([60], dtype=np.int8).reshape(1, 1, 1, 1)
    assert list(int8_forward(qnet, x)[0]) == [50, -10]


def test_dequantize_logits():
    qnet = hand_dense([[1]], [0], 1 << 30, 0, z_out=3)
    qnet.layers[-1].output_scale = 0.25
    got = dequantize_logits(qnet, np.array([[3], [7], [-128]], dtype=np.int8))
    assert got.dtype == np.float32 and list(got[:, 0]) == [0.0, 1.0, -32.75]


def test_int8_forward_input_errors():
    _, _, images, qnet = random_quantized(3)
    with pytest.raises(ValueError, match=r"needs int8 images, not uint8; quantize them first"):
        int8_forward(qnet, images)
    with pytest.raises(ValueError, match=r"Images must have shape \(N, "):
        int8_forward(qnet, qnet.quantize_input(images)[:, :-1])


# ---------------------------------------------------------------------------------------------------------------
# Float path


def loop_float_layer(layer, params, x):
    if isinstance(layer, Conv2D):
        w, b = params[f"{layer.name}.weight"].astype(np.float64), params[f"{layer.name}.bias"].astype(np.float64)
        n, h, wd, c = x.shape
        oh, ow, f = layer.output_shape((h, wd, c))
        top, _, left, _ = layer.padding_amounts(h, wd)
        y = np.tile(b, (n, oh, ow, 1))
        for i, j, a, bb in itertools.product(range(oh), range(ow), *map(range, layer.kernel)):
            ih, iw = i * layer.stride[0] - top + a, j * layer.stride[1] - left + bb
            if 0 <= ih < h and 0 <= iw < wd:
                y[:, i, j, :] += x[:, ih, iw, :] @ w[a, bb]
    elif isinstance(layer, Dense):
        y = x @ params[f"{layer.name}.weight"].astype(np.float64) + params[f"{layer.name}.bias"]
    elif isinstance(layer, MaxPool2D):
        n, h, wd, c = x.shape
        oh, ow, _ = layer.output_shape((h, wd, c))
        y = np.full((n, oh, ow, c), -np.inf)
        for i, j, a, b in itertools.product(range(oh), range(ow), *map(range, layer.pool)):
            y[:, i, j] = np.maximum(y[:, i, j], x[:, i * layer.stride[0] + a, j * layer.stride[1] + b])
        return y
    else:
        return x.reshape(len(x), -1)
    return np.maximum(y, 0) if layer.relu else y


@pytest.mark.parametrize("seed", range(6))
def test_float_forward_equals_loop_convolution(seed):
    rng = np.random.default_rng(seed)
    net = random_network(rng)
    params = random_params(rng, net)
    images = random_images(rng, net, 4)
    out, layers = float_forward(net, params, images, return_layers=True)
    x = images.astype(np.float64) / 255.0
    for layer in net.layers:
        x = loop_float_layer(layer, params, x)
        got = layers[layer.name]
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, x, rtol=1e-4, atol=1e-5, err_msg=f"seed {seed} layer {layer.name}")
    assert np.array_equal(out, layers[net.layers[-1].name])
    # Float images give the same result as the uint8 pixels they come from.
    assert np.allclose(float_forward(net, params, images.astype(np.float32) / 255), out, atol=1e-6)


def test_mnist_shaped_images_accept_missing_channel_axis():
    net = Network((6, 6, 1), (Conv2D("c", 3, 3), Flatten("f"), Dense("d", 2)))
    params = random_params(np.random.default_rng(0), net)
    images = np.random.default_rng(1).integers(0, 256, size=(2, 6, 6), dtype=np.uint8)
    assert np.array_equal(float_forward(net, params, images), float_forward(net, params, images[..., None]))


def test_check_params_reports_every_problem():
    net = Network((6, 6, 1), (Conv2D("c", 3, 3), Flatten("f"), Dense("d", 2)))
    params = random_params(np.random.default_rng(0), net)
    bad = dict(params, **{"c.weight": np.zeros((3, 3, 2, 3)), "x.bias": np.zeros(2)})
    del bad["d.bias"]
    with pytest.raises(ParameterError, match=r"missing \['d.bias'\]; unexpected \['x.bias'\].*'c.weight' has shape "
                                             r"\(3, 3, 2, 3\), expected \(3, 3, 1, 3\)"):
        check_params(net, bad)
    with pytest.raises(ParameterError, match=r"'d.weight' holds NaN"):
        check_params(net, dict(params, **{"d.weight": np.full((48, 2), np.nan)}))
    with pytest.raises(ValueError, match=r"uint8 pixels or floats, not int8 \(int8 images are already quantized"):
        float_forward(net, params, np.zeros((1, 6, 6, 1), np.int8))


def test_oracle_seeds_cover_every_lowering_corner():
    # The seeds above must keep exercising kernels 1/3/5, strides 1/2, both paddings, overlapping and plain pools,
    # channel counts off the multiple of 8, fused ReLU on and off; re-pick seeds if sw.testing changes.
    seen = set()
    for seed in range(12):
        for layer in random_quantized(seed)[0].layers:
            if isinstance(layer, Conv2D):
                seen |= {("kernel", layer.kernel[0]), ("stride", layer.stride[0]), ("padding", layer.padding),
                         ("relu", layer.relu), ("odd channels", layer.filters % 8 != 0)}
            elif isinstance(layer, MaxPool2D):
                seen.add(("overlapping pool", layer.stride[0] < layer.pool[0]))
    want = {("kernel", 1), ("kernel", 3), ("kernel", 5), ("stride", 1), ("stride", 2), ("padding", "valid"),
            ("padding", "same"), ("relu", True), ("relu", False), ("odd channels", True),
            ("overlapping pool", True), ("overlapping pool", False)}
    assert want <= seen, f"missing: {sorted(want - seen, key=str)}"
