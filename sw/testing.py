"""Seeded random networks, parameters and images for tests of the quantizer, the reference and the compiler.

``random_network(rng)`` draws small CNNs that exercise every lowering corner: conv kernels 1/3/5, strides 1/2,
'valid' and 'same' padding (odd and even totals), max-pools with and without overlap, channel and unit counts that
are not multiples of 8, and dense stacks. Everything is a pure function of the NumPy Generator passed in.
"""

from __future__ import annotations

import numpy as np

from sw.network import Conv2D, Dense, Flatten, MaxPool2D, Network

__all__ = ["random_network", "random_params", "random_images", "ODD_CHANNELS"]

#: Channel/unit counts used by the generator: none is a multiple of 8 except 16 (a full array tile).
ODD_CHANNELS = (1, 2, 3, 5, 7, 9, 11, 13, 16, 17, 20)


def _choice(rng, seq):
    return seq[int(rng.integers(len(seq)))]


def random_network(rng: np.random.Generator, *, input_shape=None, conv_layers=None, dense_layers=None,
                   kernels=(1, 3, 5), strides=(1, 2), paddings=("valid", "same"), channels=ODD_CHANNELS,
                   pool_probability=0.4, relu_probability=0.7, name="net") -> Network:
    """A random small CNN: conv (+pool) blocks, then Flatten and Dense layers.

    Parameters
    ----------
    rng : numpy.random.Generator
    input_shape : (H, W, C) or None
        Default: H, W in [5, 14], C from ``channels`` (at most 5).
    conv_layers, dense_layers : int or None
        Number of Conv2D and Dense layers (default 1-3 and 1-2). ``conv_layers=0`` gives a Flatten + dense network.
    kernels, strides, paddings, channels
        The values drawn from. A 'valid' kernel larger than the current feature map is replaced by 'same'.
    pool_probability, relu_probability : float
        Chance of a MaxPool2D after a conv, and of a fused ReLU on a conv / hidden dense layer (the last layer never
        has one: it produces logits).
    """
    if input_shape is None:
        input_shape = (int(rng.integers(5, 15)), int(rng.integers(5, 15)),
                       _choice(rng, tuple(c for c in channels if c <= 5) or (1,)))
    input_shape = tuple(int(v) for v in input_shape)
    if len(input_shape) != 3:
        raise ValueError(f"random_network input_shape must be (H, W, C), not {input_shape!r}")
    n_conv = int(rng.integers(1, 4)) if conv_layers is None else conv_layers
    n_dense = int(rng.integers(1, 3)) if dense_layers is None else dense_layers
    if n_dense < 1:
        raise ValueError(f"random_network needs at least one dense layer (the logits), not {n_dense!r}")
    layers = []
    h, w, _ = input_shape
    for i in range(n_conv):
        k = _choice(rng, kernels)
        s = _choice(rng, strides)
        pad = _choice(rng, paddings)
        if pad == "valid" and (k > h or k > w):
            pad = "same"
        conv = Conv2D(f"conv{i + 1}", _choice(rng, channels), (k, k), (s, s), pad,
                      relu=bool(rng.random() < relu_probability))
        layers.append(conv)
        h, w, _ = conv.output_shape((h, w, 1))
        if h >= 2 and w >= 2 and rng.random() < pool_probability:
            p = 2 if min(h, w) < 3 else _choice(rng, (2, 3))
            ps = _choice(rng, (p, 1)) if p == 3 else 2
            pool = MaxPool2D(f"pool{i + 1}", (p, p), (ps, ps))
            layers.append(pool)
            h, w, _ = pool.output_shape((h, w, 1))
    layers.append(Flatten("flatten"))
    for i in range(n_dense):
        last = i == n_dense - 1
        layers.append(Dense(f"dense{i + 1}", _choice(rng, (3, 5, 7, 10, 13, 19, 33)),
                            relu=bool(not last and rng.random() < relu_probability)))
    return Network(input_shape, tuple(layers))


def random_params(rng: np.random.Generator, network: Network, *, bias_scale=0.1, zero_channels=0) -> dict:
    """He-initialised float32 weights and normal biases; ``zero_channels`` all-zero output channels per layer."""
    params = {}
    for key, shape in network.param_shapes().items():
        if key.endswith(".weight"):
            fan_in = int(np.prod(shape[:-1]))
            w = rng.normal(0.0, np.sqrt(2.0 / fan_in), size=shape)
            for c in rng.choice(shape[-1], size=min(zero_channels, shape[-1] - 1), replace=False):
                w[..., c] = 0.0
            params[key] = w.astype(np.float32)
        else:
            params[key] = rng.normal(0.0, bias_scale, size=shape).astype(np.float32)
    return params


def random_images(rng: np.random.Generator, network: Network, n: int) -> np.ndarray:
    """``n`` uint8 images of the network's input shape, with smooth structure rather than pure noise."""
    h, w, c = network.input_shape
    base = rng.integers(0, 256, size=(n, h, w, c)).astype(np.float64)
    # Blur and stretch so neighbouring pixels correlate like real images and the whole pixel range is used.
    blur = (base + np.roll(base, 1, axis=1) + np.roll(base, 1, axis=2)) / 3.0
    lo, hi = blur.min(), blur.max()
    return np.round((blur - lo) / max(hi - lo, 1.0) * 255.0).astype(np.uint8)
