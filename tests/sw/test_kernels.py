"""sw.kernels on hand-checkable cases and against naive loops (bit-exactness with LiteRT on real models:
tests/sw/frontends/test_tflite.py)."""

import numpy as np
import pytest

from sim.arith import requantize
from sw import ir
from sw.kernels import graph_forward, run_node


def _graph(node, tin, tout):
    return ir.Graph(tensors=[tin, tout], inputs=(tin.name,), outputs=(tout.name,), nodes=[node])


def test_average_pool_rounds_half_away_and_counts_in_bounds_taps():
    q = ir.Quant(0.1, 0)
    node = ir.AveragePool2D(name="p", inputs=("x",), outputs=("y",), filter=(2, 2), stride=(2, 2),
                            padding=(0, 1, 0, 1))
    g = _graph(node, ir.Tensor("x", (3, 3, 1), q), ir.Tensor("y", (2, 2, 1), q))
    x = np.array([[1, 2, -5], [2, 2, -6], [-3, -4, 7]], np.int8).reshape(1, 3, 3, 1)
    y = graph_forward(g, x).reshape(2, 2)
    # (1+2+2+2)/4 = 1.75 -> 2; (-5-6)/2 = -5.5 -> -6 (away from zero); (-3-4)/2 = -3.5 -> -4; 7/1 = 7.
    assert y.tolist() == [[2, -6], [-4, 7]]


def test_max_pool_ignores_padding_and_clamps():
    q = ir.Quant(0.1, 0)
    node = ir.MaxPool2D(name="p", inputs=("x",), outputs=("y",), filter=(2, 2), stride=(1, 1),
                        padding=(1, 0, 1, 0), act_min=-100, act_max=50)
    g = _graph(node, ir.Tensor("x", (2, 2, 1), q), ir.Tensor("y", (2, 2, 1), q))
    x = np.array([[-128, -120], [100, -127]], np.int8).reshape(1, 2, 2, 1)
    assert graph_forward(g, x).reshape(2, 2).tolist() == [[-100, -100], [50, 50]]


@pytest.mark.parametrize("mult, stride, dilation", [(1, (1, 1), (1, 1)), (2, (2, 1), (1, 2)), (3, (1, 2), (2, 1))])
def test_depthwise_equals_a_naive_loop(mult, stride, dilation):
    rng = np.random.default_rng(mult)
    c, k = 3, 3
    cout = c * mult
    w = rng.integers(-127, 128, (k, k, cout), dtype=np.int8)
    pad = (1, 2, 2, 0)
    m0 = rng.integers(1 << 30, 1 << 31, cout).astype(np.int32)
    shift = rng.integers(-12, -6, cout).astype(np.int32)
    node = ir.DepthwiseConv2D(name="dw", inputs=("x",), outputs=("y",), weight=w,
                              bias=rng.integers(-999, 999, cout).astype(np.int32), weight_scale=np.full(cout, 0.01),
                              multiplier=m0, shift=shift, depth_multiplier=mult, stride=stride, padding=pad,
                              dilation=dilation, act_min=-100)
    h, wd = 7, 6
    oh = ir.conv_output_size(h, k, stride[0], dilation[0], pad[0], pad[1])
    ow = ir.conv_output_size(wd, k, stride[1], dilation[1], pad[2], pad[3])
    tin, tout = ir.Tensor("x", (h, wd, c), ir.Quant(0.05, 7)), ir.Tensor("y", (oh, ow, cout), ir.Quant(0.1, -3))
    g = _graph(node, tin, tout)
    x = rng.integers(-128, 128, (2, h, wd, c), dtype=np.int8)
    acc = np.zeros((2, oh, ow, cout), np.int64)
    for n in range(2):
        for i in range(oh):
            for j in range(ow):
                for oc in range(cout):
                    for a in range(k):
                        for b in range(k):
                            y0 = i * stride[0] - pad[0] + a * dilation[0]
                            x0 = j * stride[1] - pad[2] + b * dilation[1]
                            if 0 <= y0 < h and 0 <= x0 < wd:
                                acc[n, i, j, oc] += int(w[a, b, oc]) * (int(x[n, y0, x0, oc // mult]) - 7)
    acc += node.bias
    want = requantize(acc, m0, shift, -3, -100, 127)
    np.testing.assert_array_equal(graph_forward(g, x), want)


def test_mean_transpose_and_input_checks():
    tin = ir.Tensor("x", (2, 3, 4), ir.Quant(0.1, 5))
    node = ir.Mean(name="m", inputs=("x",), outputs=("y",), multiplier=1 << 30, shift=-2)   # / 8
    g = _graph(node, tin, ir.Tensor("y", (4,), ir.Quant(0.1, -1)))
    x = np.arange(-12, 12, dtype=np.int8).reshape(1, 2, 3, 4)
    sums = (x.astype(np.int64) - 5).sum(axis=(1, 2))
    assert graph_forward(g, x).tolist() == (requantize(sums, 1 << 30, -2, -1)).tolist()
    t = ir.Transpose(name="t", inputs=("x",), outputs=("y",), perm=(2, 0, 1))
    g = _graph(t, tin, ir.Tensor("y", (4, 2, 3), tin.quant))
    np.testing.assert_array_equal(graph_forward(g, x)[0], np.transpose(x[0], (2, 0, 1)))
    with pytest.raises(ValueError, match="must be int8"):
        graph_forward(g, x.astype(np.float32))
    with pytest.raises(ValueError, match="must have shape"):
        graph_forward(g, x[:, :1])
    with pytest.raises(ValueError, match="must be int8 of shape"):
        run_node(g, t, [x[:, :1]])
