"""sw.ir: node checks, graph validation errors and the legacy QuantizedNetwork conversion."""

from pathlib import Path

import numpy as np
import pytest

from sw import ir
from sw.ir import Add, Conv2D, FullyConnected, Graph, GraphError, Quant, Reshape, Softmax, Tensor


def _conv(name="c", inputs=("x",), outputs=("y",), cin=3, cout=4, k=3, **kw):
    rng = np.random.default_rng(0)
    return Conv2D(name=name, inputs=inputs, outputs=outputs,
                  weight=rng.integers(-127, 128, (k, k, cin, cout), dtype=np.int8),
                  bias=np.zeros(cout, np.int32), weight_scale=np.full(cout, 0.01),
                  multiplier=np.full(cout, 1 << 30, np.int32), shift=np.full(cout, -3, np.int32), **kw)


def _graph(nodes, tensors, inputs=("x",), outputs=("y",)):
    return Graph(tensors=tensors, inputs=inputs, outputs=outputs, nodes=nodes)


Q = Quant(0.05, -3)


def test_conv_shapes_padding_dilation_stride():
    node = _conv(stride=(2, 1), padding=(1, 2, 0, 1), dilation=(1, 2))
    # H: (8 + 3 - 3) // 2 + 1 = 5; W: (8 + 1 - 5) // 1 + 1 = 5
    g = _graph([node], [Tensor("x", (8, 8, 3), Q), Tensor("y", (5, 5, 4), Q)])
    assert g.macs() == {"c": 5 * 5 * 4 * 27}
    assert "conv2d" in g.summary()


def test_wrong_output_shape_names_node():
    with pytest.raises(GraphError, match=r"node 0: node 'c' \(conv2d\): output 'y' has shape"):
        _graph([_conv()], [Tensor("x", (8, 8, 3), Q), Tensor("y", (8, 8, 4), Q)])


def test_channel_mismatch():
    with pytest.raises(GraphError, match="3 input channels"):
        _graph([_conv()], [Tensor("x", (8, 8, 5), Q), Tensor("y", (6, 6, 4), Q)])


def test_topological_order_and_single_producer():
    r1 = Reshape(name="r1", inputs=("a",), outputs=("b",), shape=(12,))
    r0 = Reshape(name="r0", inputs=("x",), outputs=("a",), shape=(3, 4))
    ts = [Tensor("x", (12,), Q), Tensor("a", (3, 4), Q), Tensor("b", (12,), Q)]
    with pytest.raises(GraphError, match="topological order"):
        _graph([r1, r0], ts, outputs=("b",))
    g = _graph([r0, r1], ts, outputs=("b",))
    assert g.producer("b") is r1 and g.consumers("a") == [r1] and g.producer("x") is None
    with pytest.raises(GraphError, match="already has a producer"):
        _graph([r0, Reshape(name="r2", inputs=("x",), outputs=("a",), shape=(3, 4))], ts, outputs=("a",))


def test_layout_ops_keep_quantization():
    with pytest.raises(GraphError, match="must keep the input's quantization"):
        _graph([Reshape(name="r", inputs=("x",), outputs=("y",), shape=(4, 3))],
               [Tensor("x", (12,), Q), Tensor("y", (4, 3), Quant(0.1, 0))])


def test_parameter_errors():
    with pytest.raises(GraphError, match="weight must be int8"):
        Conv2D(name="c", inputs=("x",), outputs=("y",), weight=np.zeros((1, 1, 1, 1), np.float32),
               bias=np.zeros(1, np.int32), weight_scale=[1.0], multiplier=[1 << 30], shift=[0])
    with pytest.raises(GraphError, match="multiplier must be 0 or lie in"):
        FullyConnected(name="f", inputs=("x",), outputs=("y",), weight=np.zeros((4, 2), np.int8),
                       bias=np.zeros(2, np.int32), weight_scale=[1.0], multiplier=[5, 5], shift=[0, 0])
    with pytest.raises(GraphError, match="clamp must satisfy"):
        _conv(act_min=10, act_max=0)
    with pytest.raises(GraphError, match="padding must be four"):
        _conv(padding=(1, 1))
    with pytest.raises(GraphError, match="takes 2 input"):
        Add(name="a", inputs=("x",), outputs=("y",))
    with pytest.raises(GraphError, match="zero point must lie"):
        Quant(1.0, 200)
    with pytest.raises(GraphError, match="positive"):
        Quant(0.0, 0)


def test_add_needs_same_shapes_and_softmax_output_quant():
    ts = [Tensor("x", (4,), Q), Tensor("z", (5,), Q), Tensor("y", (4,), Q)]
    add = Add(name="a", inputs=("x", "z"), outputs=("y",), input1_multiplier=1 << 30, input2_multiplier=1 << 30,
              output_multiplier=1 << 30)
    with pytest.raises(GraphError, match="same shape"):
        _graph([add], ts, inputs=("x", "z"))
    with pytest.raises(GraphError, match="scale 1/256"):
        _graph([Softmax(name="s", inputs=("x",), outputs=("y",))], [Tensor("x", (4,), Q), Tensor("y", (4,), Q)])


def test_from_quantized_network():
    from sw.model_io import load_quantized
    from sw.quantize import QuantizedNetwork
    qnet = load_quantized(Path(__file__).resolve().parents[2] / "models" / "mnist_int8.npz")
    assert isinstance(qnet, QuantizedNetwork)
    g = Graph.from_quantized_network(qnet)
    assert [n.op for n in g.nodes] == ["conv2d", "max_pool2d", "conv2d", "max_pool2d", "reshape",
                                       "fully_connected", "fully_connected"]
    assert g.macs() == qnet.network.macs()
    assert g.output.quant == Quant(qnet.output_scale, qnet.output_zero_point)
    assert set(ir.OPS) >= {"conv2d", "depthwise_conv2d", "fully_connected", "add", "average_pool2d", "mean",
                           "max_pool2d", "reshape", "transpose", "softmax"}
