"""Post-training quantization: the formulas of docs/int8-spec.md, and errors within the bounds the scales imply."""

import numpy as np
import pytest

from sim.arith import quantize_multiplier
from sw.network import Conv2D, Dense, Flatten, MaxPool2D, Network
from sw.quantize import QuantizationError, activation_params, calibrate, quantize, round_half_away
from sw.reference import conv2d_float, dense_float, dequantize_logits, float_forward, int8_forward
from sw.testing import random_images, random_network, random_params


def random_quantized(seed, n_images=16, **kwargs):
    rng = np.random.default_rng(seed)
    net = random_network(rng, **kwargs)
    params = random_params(rng, net, zero_channels=1)
    images = random_images(rng, net, n_images)
    return net, params, images, quantize(net, params, images)


def worst(err, bound):
    idx = tuple(int(i) for i in np.unravel_index(np.argmax(err - bound), err.shape))
    return f"worst at {idx}: error {err[idx]!r} > bound {bound[idx]!r}"


def test_round_half_away():
    assert list(round_half_away([0.5, 1.5, 2.5, -0.5, -1.5, 0.49, -2.51])) == [1, 2, 3, -1, -2, 0, -3]


@pytest.mark.parametrize("lo,hi,scale,zp", [
    (0.0, 2.55, 0.01, -128),         # ReLU range: zero point at the bottom
    (-2.55, 0.0, 0.01, 127),         # all-negative range: zero point at the top
    (-1.0, 1.55, 0.01, -28),         # asymmetric: -128 - (-1.0 / 0.01)
    (0.5, 2.55, 0.01, -128),         # the range is widened to include 0
    (0.0, 0.0, 1 / 255, -128),       # a dead layer still gets a positive scale
])
def test_activation_params(lo, hi, scale, zp):
    s, z = activation_params(lo, hi)
    assert s == pytest.approx(scale, rel=1e-12) and z == zp
    # Real 0 is exactly representable: q = Z.
    assert isinstance(z, int) and -128 <= z <= 127


def test_activation_params_rejects_bad_ranges():
    with pytest.raises(QuantizationError, match=r"finite with lo <= hi, not \[1.0, -1.0\]"):
        activation_params(1.0, -1.0)
    with pytest.raises(QuantizationError, match=r"finite"):
        activation_params(0.0, float("inf"))


def test_weight_bias_and_multiplier_formulas():
    net = Network((1, 1, 3), (Flatten("f"), Dense("d", 4, relu=True)))
    w = np.array([[0.5, 0.0, 1e-30, 0.2],
                  [-1.0, 0.0, 0.0, -0.15],
                  [0.25, 0.0, 0.0, 0.05]], dtype=np.float32)
    b = np.array([0.1, 0.3, -0.2, 0.0], dtype=np.float32)
    ranges = [(0.0, 1.0), (0.0, 1.0), (0.0, 2.0)]
    qnet = quantize(net, {"d.weight": w, "d.bias": b}, None, ranges=ranges)
    q = qnet.layer("d")
    s_in, s_out = 1 / 255, 2 / 255
    assert (qnet.input_scale, qnet.input_zero_point) == (s_in, -128)
    assert (q.output_scale, q.output_zero_point, q.act_min, q.act_max) == (pytest.approx(s_out), -128, -128, 127)
    # Channel 0: max|w| = 1 -> S_w = 1/127; 0.5 * 127 = 63.5 rounds away from zero to 64.
    assert q.weight.dtype == np.int8 and list(q.weight[:, 0]) == [64, -127, 32]
    assert q.weight_scale[0] == pytest.approx(1 / 127)
    assert list(q.weight[:, 3]) == [127, -95, 32]  # -0.15 / (0.2 / 127) = -95.25, 0.05 -> 31.75
    # Bias: round(b / (S_in * S_w)), int32.
    assert q.bias.dtype == np.int32
    assert q.bias[0] == round_half_away(0.1 / (s_in * (1 / 127)))
    # Channels 1 (all zero) and 2 (too small to encode) keep only their bias: weights 0 and multiplier 1.
    assert not q.weight[:, 1].any() and not q.weight[:, 2].any()
    np.testing.assert_allclose(s_in * q.weight_scale[1:3] / s_out, 1.0, rtol=1e-12)
    assert q.bias[1] == round_half_away(0.3 / s_out)
    # Multipliers are exactly quantize_multiplier of S_in * S_w / S_out.
    m0, shift = quantize_multiplier(s_in * q.weight_scale / q.output_scale)
    assert np.array_equal(q.multiplier, m0) and np.array_equal(q.shift, shift)
    assert q.multiplier.dtype == np.int32 and q.shift.dtype == np.int8
    # End to end: the constant channels give their bias (ReLU'd), within half an output LSB.
    out = dequantize_logits(qnet, int8_forward(qnet, qnet.quantize_input(np.array([[[[0, 128, 255]]]], np.uint8))))
    assert abs(out[0, 1] - 0.3) <= s_out / 2 and out[0, 2] == 0.0


def test_pool_and_flatten_keep_scale_relu_sets_clamp():
    net = Network((6, 6, 2), (Conv2D("c", 3, 3, relu=True), MaxPool2D("p", 2), Flatten("f"), Dense("d", 5)))
    rng = np.random.default_rng(5)
    qnet = quantize(net, random_params(rng, net), random_images(rng, net, 8))
    c, p, f, d = qnet.layers
    assert (c.output_zero_point, c.act_min, c.act_max) == (-128, -128, 127)
    for layer in (p, f):
        assert (layer.input_scale, layer.input_zero_point) == (c.output_scale, c.output_zero_point)
        assert (layer.output_scale, layer.output_zero_point) == (c.output_scale, c.output_zero_point)
        assert layer.weight is None
    assert (d.input_scale, d.input_zero_point) == (c.output_scale, c.output_zero_point)
    assert (d.act_min, d.act_max) == (-128, 127)


@pytest.mark.parametrize("seed", range(8))
def test_quantized_tensors_are_in_range(seed):
    net, _, _, qnet = random_quantized(seed)
    for layer, q in zip(net.layers, qnet.layers):
        if q.weight is None:
            continue
        assert q.weight.dtype == np.int8 and q.weight.min() >= -127 and q.weight.max() <= 127, f"seed {seed}"
        # Every channel uses the full weight range unless it was all-zero.
        nonzero = np.abs(q.weight_kn).max(axis=0)
        assert set(np.unique(nonzero)) <= {0, 127}, f"seed {seed} layer {layer.name}: {nonzero}"
        assert np.all((q.multiplier >= 1 << 30)), f"seed {seed} layer {layer.name}"
        assert np.all((q.shift >= -31) & (q.shift <= 31)), f"seed {seed} layer {layer.name}"


@pytest.mark.parametrize("seed", range(10))
def test_layer_errors_within_the_bounds_the_scales_imply(seed):
    """Each Conv2D/Dense fed the dequantized int8 input of the quantized network:

    * against the same layer with DEquantized weights and bias (float64), the int8 result is off by at most one
      output LSB (requantization's double rounding, half an LSB each);
    * against the float layer, the error is at most that plus the weight rounding, S_w[c] / 2 * sum |x|, plus the
      bias rounding, S_in * S_w[c] / 2.
    Both float results are clamped to the int8 output range first (a clamp is 1-Lipschitz, so bounds survive it).
    """
    net, params, images, qnet = random_quantized(seed)
    x = qnet.quantize_input(images)
    _, outs = int8_forward(qnet, x, return_layers=True)
    for layer, q in zip(net.layers, qnet.layers):
        y = outs[layer.name]
        if q.weight is not None:
            run = conv2d_float if isinstance(layer, Conv2D) else dense_float
            x_deq = q.input_scale * (x.astype(np.float64) - q.input_zero_point)
            y_deq = q.output_scale * (y.astype(np.float64) - q.output_zero_point)
            lo = q.output_scale * (q.act_min - q.output_zero_point)
            hi = q.output_scale * (q.act_max - q.output_zero_point)
            w_deq = q.weight.astype(np.float64) * q.weight_scale
            b_deq = q.bias.astype(np.float64) * q.input_scale * q.weight_scale
            lsb = q.output_scale * (1 + 1e-6)
            err = np.abs(y_deq - np.clip(run(x_deq, layer, w_deq, b_deq), lo, hi))
            assert np.all(err <= lsb), f"seed {seed} layer {layer.name} vs dequantized weights: {worst(err, lsb)}"

            w = params[f"{layer.name}.weight"].astype(np.float64)
            b = params[f"{layer.name}.bias"].astype(np.float64)
            plain = Conv2D(layer.name, layer.filters, layer.kernel, layer.stride, layer.padding) \
                if isinstance(layer, Conv2D) else Dense(layer.name, layer.units)
            abs_sum = run(np.abs(x_deq), plain, np.ones_like(w), np.zeros_like(b))  # sum |x| over each receptive field
            bound = lsb + q.weight_scale / 2 * abs_sum + q.input_scale * q.weight_scale / 2
            err = np.abs(y_deq - np.clip(run(x_deq, layer, w, b), lo, hi))
            assert np.all(err <= bound), f"seed {seed} layer {layer.name} vs float weights: {worst(err, bound)}"
        x = y


@pytest.mark.parametrize("seed", range(20))
def test_int8_logits_close_to_float(seed):
    # Calibrated on the same images, so nothing clips: over 60 seeds the worst error was 4.2 output LSBs
    # (1.6 % of the logit range); the bound leaves 2x margin and argmax must mostly agree.
    net, params, images, qnet = random_quantized(seed, n_images=32)
    f = float_forward(net, params, images)
    d = dequantize_logits(qnet, int8_forward(qnet, qnet.quantize_input(images)))
    err = np.abs(d - f)
    assert err.max() <= 8 * qnet.output_scale, f"seed {seed}: max error {err.max()} = " \
                                               f"{err.max() / qnet.output_scale:.2f} output LSBs"
    assert (d.argmax(1) == f.argmax(1)).mean() >= 0.8, f"seed {seed}"


def test_calibrate_minmax_and_percentile():
    rng = np.random.default_rng(9)
    net = Network((8, 8, 3), (Conv2D("c1", 5, 3, padding="same"), Conv2D("c2", 7, 3, relu=True),
                              MaxPool2D("p", 2), Flatten("f"), Dense("d", 3)))
    params = random_params(rng, net)
    images = random_images(rng, net, 20)
    ranges = calibrate(net, params, images)
    _, outs = float_forward(net, params, images, return_layers=True)
    assert len(ranges) == len(net.layers) + 1
    assert ranges[0] == (0.0, 1.0)  # uint8 pixels: the whole [0, 1] domain
    c1 = outs["c1"]
    assert ranges[1] == (min(float(c1.min()), 0.0), max(float(c1.max()), 0.0))
    assert ranges[2] == (0.0, float(outs["c2"].max()))  # ReLU: [0, max]
    pct = calibrate(net, params, images, method="percentile", percentile=99.0)
    assert pct[1][0] > ranges[1][0] and pct[1][1] < ranges[1][1]
    assert pct[1][1] == pytest.approx(np.percentile(c1, 99.0), rel=1e-6)
    # Float images are calibrated (range widened to include 0).
    assert calibrate(net, params, images.astype(np.float32) / 255 + 0.5)[0] == (0.0, pytest.approx(1.5))
    qnet = quantize(net, params, images, method="percentile", percentile=99.0)
    assert qnet.layers[1].output_scale < quantize(net, params, images).layers[1].output_scale


def test_quantize_input():
    net = Network((2, 2, 1), (Flatten("f"), Dense("d", 2)))
    params = random_params(np.random.default_rng(0), net)
    pixels = np.arange(0, 256, dtype=np.uint8)[:252].reshape(63, 2, 2)
    qnet = quantize(net, params, pixels)
    got = qnet.quantize_input(pixels)
    assert got.dtype == np.int8 and got.shape == (63, 2, 2, 1)
    assert np.array_equal(got[..., 0].astype(np.int16), pixels.astype(np.int16) - 128)
    # Float inputs: round(x / S) + Z with halves away from zero, clamped.
    qnet.input_scale, qnet.input_zero_point = 0.5, 3
    x = np.array([0.25, -0.25, 100.0, -100.0], dtype=np.float32).reshape(1, 2, 2, 1)
    assert list(qnet.quantize_input(x).ravel()) == [4, 2, 127, -128]


def test_quantize_errors():
    net = Network((2, 2, 1), (Flatten("f"), Dense("d", 2, relu=True)))
    params = {"d.weight": np.full((4, 2), 0.5, np.float32), "d.bias": np.array([0.0, -1e12], np.float32)}
    images = np.zeros((1, 2, 2), np.uint8)
    with pytest.raises(ValueError, match=r"method must be 'minmax' or 'percentile', not 'mean'"):
        quantize(net, params, images, method="mean")
    with pytest.raises(ValueError, match=r"percentile must be a number in \(50, 100\], not 20"):
        calibrate(net, params, images, method="percentile", percentile=20)
    with pytest.raises(ValueError, match=r"ranges must have 3 entries"):
        quantize(net, params, images, ranges=[(0, 1)])
    with pytest.raises(QuantizationError, match=r"Layer 'd': channel 1 bias .* does not fit int32"):
        quantize(net, params, images, ranges=[(0.0, 1.0), (0.0, 1.0), (0.0, 1.0)])
    with pytest.raises(ValueError, match=r"at least one sample image"):
        quantize(net, params, images[:0])
