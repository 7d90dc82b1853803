"""sw.frontends.onnx: QDQ, QOperator and float+PTQ ONNX models built here (seeded onnx.helper graphs quantized by
onnxruntime) -> the graph IR; the IR's int8 reference kernels against onnxruntime within the bounds of docs/onnx.md;
every bad-model case with its message."""

from __future__ import annotations

import logging

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

from sw import ir
from sw.frontends import onnx as fe
from sw.kernels import graph_forward

SEED = 16

# Agreement with onnxruntime, as docs/onnx.md states it (measured there on these models and seeds): every element
# within AGREE_MAX_DIFF LSB, at least AGREE_WITHIN_1 of them within 1 LSB.
AGREE_MAX_DIFF = 2
AGREE_WITHIN_1 = 0.99


# ---------------------------------------------------------------------------------------------------------------
# Model builders (float ONNX graphs from seeded weights; onnxruntime quantizes them)
# ---------------------------------------------------------------------------------------------------------------

class _Builder:
    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits = [], []
        self.n = 0

    def const(self, arr, name=None):
        self.n += 1
        name = name or f"c{self.n}"
        self.inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    def op(self, op_type, inputs, **attrs):
        self.n += 1
        out = f"t{self.n}_{op_type.lower()}"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=f"{op_type.lower()}_{self.n}", **attrs))
        return out

    def conv(self, x, cin, cout, k, group=1, bias=True, **attrs):
        fan_in = cin // group * k * k
        w = self.rng.normal(0, 1.5 / np.sqrt(fan_in), (cout, cin // group, k, k)).astype(np.float32)
        ins = [x, self.const(w)]
        if bias:
            ins.append(self.const(self.rng.normal(0, 0.1, cout).astype(np.float32)))
        return self.op("Conv", ins, group=group, kernel_shape=[k, k], **attrs)

    def gemm(self, x, k, n, trans_b=1):
        w = self.rng.normal(0, 1.5 / np.sqrt(k), (n, k) if trans_b else (k, n)).astype(np.float32)
        return self.op("Gemm", [x, self.const(w), self.const(self.rng.normal(0, 0.1, n).astype(np.float32))],
                       transB=trans_b)

    def matmul(self, x, k, n):
        return self.op("MatMul", [x, self.const(self.rng.normal(0, 1.5 / np.sqrt(k), (k, n)).astype(np.float32))])

    def model(self, inputs, outputs, opset=17):
        g = helper.make_graph(self.nodes, "test_model",
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs],
                              self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
        m.ir_version = 8
        onnx.checker.check_model(m)
        return m


INPUT_SHAPE = (1, 3, 11, 11)


def every_op_model(seed=SEED):
    """Conv (asymmetric pads, dilation, SAME_UPPER / SAME_LOWER, stride 2), depthwise Conv (multiplier 2), Relu,
    Clip (ReLU6), residual Add, AveragePool (count_include_pad 0 and 1 with padding), MaxPool (padded),
    GlobalAveragePool, Squeeze, Transpose, Flatten, Gemm (transB 0 and 1), MatMul, Softmax; two outputs."""
    b = _Builder(seed)
    x = "x"
    c1 = b.op("Relu", [b.conv(x, 3, 8, 3, pads=[0, 1, 1, 0])])                          # 10x10
    dw = b.op("Clip", [b.conv(c1, 8, 16, 3, group=8, auto_pad="SAME_UPPER", strides=[2, 2]),
                       b.const(np.float32(0.0)), b.const(np.float32(6.0))])              # 5x5x16
    c3 = b.conv(dw, 16, 16, 3, dilations=[2, 2], pads=[2, 2, 2, 2])                      # 5x5x16
    add = b.op("Add", [c3, dw])
    ap1 = b.op("AveragePool", [add], kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=0)
    ap2 = b.op("AveragePool", [ap1], kernel_shape=[2, 2], pads=[0, 0, 1, 1], count_include_pad=1)
    mp = b.op("MaxPool", [ap2], kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 1, 1])   # 3x3
    c4 = b.op("Relu", [b.conv(mp, 16, 12, 2, auto_pad="SAME_LOWER", strides=[2, 2])])    # 2x2x12
    tr = b.op("Transpose", [c4], perm=[0, 1, 3, 2])
    fl = b.op("Flatten", [tr], axis=1)                                                  # 48, C-major
    g1 = b.op("Relu", [b.gemm(fl, 48, 20)])
    logits = b.matmul(g1, 20, 10)
    b.nodes.append(helper.make_node("Softmax", [logits], ["probs"], name="softmax", axis=-1))
    gap = b.op("GlobalAveragePool", [add])
    sq = b.op("Squeeze", [gap, b.const(np.array([2, 3], np.int64))])
    b.nodes.append(helper.make_node("Gemm", [sq, b.const(b.rng.normal(0, 0.3, (16, 4)).astype(np.float32)),
                                             b.const(np.zeros(4, np.float32))], ["aux"], name="aux_gemm"))
    return b.model([("x", INPUT_SHAPE)], [("probs", (1, 10)), ("aux", (1, 4))])


def layout_model(seed=SEED):
    """Reshape of an NCHW tensor (the flatten trap), an NCHW -> 2-D -> NCHW reshape round trip, Unsqueeze."""
    b = _Builder(seed)
    c1 = b.op("Relu", [b.conv("x", 2, 5, 3)])                                           # 5x4x4 (C, H, W)
    r1 = b.op("Reshape", [c1, b.const(np.array([1, -1], np.int64))])                    # 80
    r2 = b.op("Reshape", [r1, b.const(np.array([1, 5, 4, 4], np.int64))])               # back to NCHW
    c2 = b.conv(r2, 5, 3, 1)
    r3 = b.op("Reshape", [c2, b.const(np.array([1, 3, 16], np.int64))])                 # (C, H*W) plain 3-D
    t3 = b.op("Transpose", [r3], perm=[0, 2, 1])                                        # (H*W, C)
    f3 = b.op("Flatten", [t3])
    b.nodes.append(helper.make_node("Gemm", [f3, b.const(b.rng.normal(0, 0.2, (48, 6)).astype(np.float32)),
                                             b.const(np.zeros(6, np.float32))], ["logits"], name="fc"))
    return b.model([("x", (1, 2, 6, 6))], [("logits", (1, 6))])


class _Reader(CalibrationDataReader):
    def __init__(self, name, data):
        self.it = iter([{name: d[None]} for d in data])

    def get_next(self):
        return next(self.it, None)


def calibration_data(shape, n=24, seed=SEED):
    return np.random.default_rng(seed + 1).normal(0, 1, (n,) + tuple(shape[1:])).astype(np.float32)


def ort_quantize(model, tmp_path, fmt="QDQ", activation=QuantType.QInt8, name="q", per_channel=True):
    src = tmp_path / f"{name}_float.onnx"
    dst = tmp_path / f"{name}_{fmt}.onnx"
    onnx.save(model, src)
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    logging.getLogger().setLevel(logging.ERROR)
    quantize_static(str(src), str(dst), _Reader(model.graph.input[0].name, calibration_data(shape)),
                    quant_format=getattr(QuantFormat, fmt), per_channel=per_channel, activation_type=activation,
                    weight_type=QuantType.QInt8)
    return dst


def random_inputs(graph, n=32, seed=SEED):
    t = graph.tensors[graph.inputs[0]]
    return np.random.default_rng(seed).integers(-128, 128, (n,) + t.shape).astype(np.int8)


def check_agreement(path, graph, x, label):
    ours = graph_forward(graph, x)
    ref = fe.reference_run(path, x)
    if not isinstance(ours, dict):
        ours, ref = {graph.outputs[0]: ours}, {graph.outputs[0]: ref}
    stats = {}
    for name in graph.outputs:
        s = fe.agreement(ours[name], ref[name])
        stats[name] = s
        d = np.abs(ours[name].astype(int) - ref[name].astype(int))
        first = np.argwhere(d > AGREE_MAX_DIFF)
        assert s["max_diff"] <= AGREE_MAX_DIFF and s["within_1"] >= AGREE_WITHIN_1, (
            f"{label} seed {SEED}: output {name!r} vs onnxruntime {s}; first element beyond {AGREE_MAX_DIFF} LSB: "
            f"{first[0].tolist() if len(first) else None}")
    return stats


# ---------------------------------------------------------------------------------------------------------------
# Supported models
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def every_op_qdq(tmp_path_factory):
    return ort_quantize(every_op_model(), tmp_path_factory.mktemp("qdq"))


def test_qdq_every_op_imports_and_agrees(every_op_qdq):
    g = fe.load_onnx(every_op_qdq)
    ops = {n.op for n in g.nodes}
    assert {"conv2d", "depthwise_conv2d", "add", "average_pool2d", "max_pool2d", "mean", "fully_connected",
            "softmax", "transpose", "reshape"} <= ops, ops
    assert g.metadata["onnx"]["format"] == "qdq"
    assert g.tensors[g.inputs[0]].shape == (11, 11, 3)        # NHWC per sample
    dw = next(n for n in g.nodes if n.op == "depthwise_conv2d" and n.weight.shape[:2] == (3, 3))
    assert dw.depth_multiplier == 2 and dw.stride == (2, 2) and dw.padding == (0, 1, 0, 1)   # SAME_UPPER: the odd pixel after
    first = g.nodes[0]
    assert first.op == "conv2d" and first.padding == (0, 1, 1, 0)    # ONNX [top, left, bottom, right]
    check_agreement(every_op_qdq, g, random_inputs(g), "QDQ every-op")


def test_qoperator_every_op_imports_and_agrees(tmp_path):
    path = ort_quantize(every_op_model(), tmp_path, "QOperator")
    kinds = {n.op_type for n in onnx.load(path).graph.node}
    assert {"QLinearConv", "QLinearAdd", "QGemm", "QLinearAveragePool", "QLinearGlobalAveragePool",
            "QLinearMatMul", "QLinearSoftmax"} <= kinds, kinds
    g = fe.load_onnx(path)
    assert g.metadata["onnx"]["format"] == "qoperator"
    check_agreement(path, g, random_inputs(g), "QOperator every-op")


def test_uint8_activations_shift_zero_points(tmp_path):
    p8 = ort_quantize(every_op_model(), tmp_path, "QDQ", QuantType.QUInt8, name="u8")
    g = fe.load_onnx(p8)
    m = onnx.load(p8)
    zp = next(numpy_helper.to_array(i) for i in m.graph.initializer if i.name == "x_zero_point")
    assert zp.dtype == np.uint8 and g.tensors["x"].quant.zero_point == int(zp) - 128
    check_agreement(p8, g, random_inputs(g), "QDQ uint8")


def test_layout_ops_and_reshape_round_trip(tmp_path):
    path = ort_quantize(layout_model(), tmp_path)
    g = fe.load_onnx(path)
    check_agreement(path, g, random_inputs(g), "layout")
    # the NCHW -> (N, 80) -> NCHW round trip needs no data movement at all
    assert [n.op for n in g.nodes].count("transpose") <= 2, g.summary()


def test_float_model_with_calibration_equals_onnxruntime_ptq(tmp_path):
    model = every_op_model()
    src = tmp_path / "float.onnx"
    onnx.save(model, src)
    cal = calibration_data(INPUT_SHAPE)
    qpath = tmp_path / "ptq.onnx"
    g = fe.load_onnx(src, calibration=cal, quantized_path=qpath)
    assert g.metadata["onnx"]["format"] == "float+ptq" and qpath.exists()
    check_agreement(qpath, g, random_inputs(g), "float+PTQ")
    # the reference run of the float model re-quantizes it identically
    x = random_inputs(g, 4)
    ref_a = fe.reference_run(src, x, calibration=cal)
    ref_b = fe.reference_run(qpath, x)
    for k in ref_b:
        np.testing.assert_array_equal(ref_a[k], ref_b[k])


def test_float_inputs_round_trip(every_op_qdq):
    g = fe.load_onnx(every_op_qdq)
    x = calibration_data(INPUT_SHAPE, 3)
    (q,) = fe.to_graph_inputs(g, x)
    t = g.tensors["x"]
    assert q.shape == (3, 11, 11, 3) and q.dtype == np.int8
    expect = np.clip(np.rint(x / np.float32(t.quant.scale)) + t.quant.zero_point, -128, 127).transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(q, expect)
    ys = graph_forward(g, q)
    probs, aux = fe.from_graph_outputs(g, ys["probs"], ys["aux"])
    assert probs.dtype == np.float32 and probs.shape == (3, 10) and aux.shape == (3, 4)


def test_ops_table_lists_every_converter():
    assert {"Conv", "Gemm", "MatMul", "Add", "AveragePool", "GlobalAveragePool", "MaxPool", "Relu", "Clip",
            "Reshape", "Flatten", "Transpose", "Softmax", "QuantizeLinear", "DequantizeLinear", "QLinearConv",
            "QLinearMatMul", "QGemm", "QLinearAdd", "QLinearAveragePool", "QLinearGlobalAveragePool"} \
        <= set(fe.SUPPORTED_OPS)


# ---------------------------------------------------------------------------------------------------------------
# Bad models: each error names the node, its op type and the cause
# ---------------------------------------------------------------------------------------------------------------

def _qdq_conv_model(tmp_path, *, conv_attrs=None, weight_zp=0, act_scale_shape=(), weight_const=True, op="Conv",
                    name="bad"):
    """x -> Q -> DQ -> Conv(DQ(w_int8), DQ(b_int32)) -> Q -> DQ -> y, written by hand (the QDQ form)."""
    rng = np.random.default_rng(SEED)
    sx = np.full(act_scale_shape, 0.02, np.float32)
    zx = np.zeros(act_scale_shape, np.int8)
    w = rng.integers(-127, 128, (4, 4, 3, 3)).astype(np.int8)
    sw = np.full(4, 0.01, np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in
             ((sx, "sx"), (zx, "zx"), (sw, "sw"), (np.full(4, weight_zp, np.int8), "zw"),
              (np.float32(0.05), "sy"), (np.int8(0), "zy"), (rng.integers(-50, 50, 4).astype(np.int32), "b"),
              (sw * np.float32(0.02), "sb"), (np.zeros(4, np.int32), "zb"))]
    nodes = [helper.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"], name="qx"),
             helper.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["xd"], name="dqx"),
             helper.make_node("DequantizeLinear", ["b", "sb", "zb"], ["bd"], name="dqb", axis=0)]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 6, 6])]
    if weight_const:
        inits.append(numpy_helper.from_array(w, "w"))
        nodes.append(helper.make_node("DequantizeLinear", ["w", "sw", "zw"], ["wd"], name="dqw", axis=0))
    else:
        inputs.append(helper.make_tensor_value_info("wd", TensorProto.FLOAT, [4, 4, 3, 3]))
    nodes += [helper.make_node(op, ["xd", "wd", "bd"], ["yf"], name="the_conv", kernel_shape=[3, 3],
                               **(conv_attrs or {})),
              helper.make_node("QuantizeLinear", ["yf", "sy", "zy"], ["yq"], name="qy"),
              helper.make_node("DequantizeLinear", ["yq", "sy", "zy"], ["y"], name="dqy")]
    g = helper.make_graph(nodes, "bad", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4, 4])],
                          inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    path = tmp_path / f"{name}.onnx"
    onnx.save(m, path)
    return path


def test_hand_written_qdq_conv_is_exact(tmp_path):
    path = _qdq_conv_model(tmp_path, conv_attrs={"pads": [1, 1, 1, 1]})
    g = fe.load_onnx(path)
    (conv,) = g.nodes
    assert conv.op == "conv2d" and conv.weight.shape == (3, 3, 4, 4)
    check_agreement(path, g, random_inputs(g), "hand-written QDQ conv")


@pytest.mark.parametrize("kw, match", [
    (dict(conv_attrs={"group": 2}), r"node 'the_conv' \(Conv\): attribute 'group' = 2 is not supported: group 1 "
                                    r"\(convolution\) or group = input channels 4 \(depthwise\)"),
    (dict(conv_attrs={"auto_pad": "BOGUS"}), r"node 'the_conv' \(Conv\): attribute 'auto_pad' = 'BOGUS' is not "
                                             r"supported \(NOTSET, VALID, SAME_UPPER, SAME_LOWER\)"),
    (dict(weight_zp=3), r"node 'the_conv' \(Conv\): weight 'w' has non-zero zero points .* only symmetric"),
    (dict(act_scale_shape=(4,)), r"node 'qx' \(QuantizeLinear\): per-axis activation quantization"),
    (dict(weight_const=False), r"node 'the_conv' \(Conv\): weight 'wd' must be a constant int8 initializer"),
    (dict(op="ConvTranspose"), r"node 'the_conv' \(ConvTranspose\): op type 'ConvTranspose' is not supported; "
                               r"supported ops: .*Conv, .*QLinearConv"),
])
def test_unsupported_names_node_op_and_attribute(tmp_path, kw, match):
    path = _qdq_conv_model(tmp_path, **kw)
    with pytest.raises(fe.OnnxImportError, match=match):
        fe.load_onnx(path)


def test_unsupported_attribute_is_named(tmp_path):
    path = _qdq_conv_model(tmp_path, conv_attrs={"pads": [1, 1, 1, 1]})
    m = onnx.load(path)
    conv = next(n for n in m.graph.node if n.name == "the_conv")
    conv.attribute.append(helper.make_attribute("frobnicate", 1))
    with pytest.raises(fe.OnnxImportError, match=r"'the_conv' \(Conv\): attribute 'frobnicate' is not supported "
                                                  r"\(supported: \['auto_pad', 'dilations', 'group'"):
        fe.load_onnx(m)


def test_broadcast_add_and_constant_add(tmp_path):
    b = _Builder(SEED)
    c = b.conv("x", 3, 4, 1)
    b.nodes.append(helper.make_node("Add", [c, b.const(np.ones((1, 4, 1, 1), np.float32))], ["y"], name="bias_add"))
    path = ort_quantize(b.model([("x", (1, 3, 4, 4))], [("y", (1, 4, 4, 4))]), tmp_path)
    with pytest.raises(fe.OnnxImportError, match=r"node 'bias_add' \(Add\): input 1 .* constant; Add of a constant"):
        fe.load_onnx(path)


def test_float_model_without_calibration(tmp_path):
    path = tmp_path / "float.onnx"
    onnx.save(layout_model(), path)
    with pytest.raises(fe.FloatModelError, match=r"float.onnx' is a float model .* calibration"):
        fe.load_onnx(path)
    with pytest.raises(fe.FloatModelError, match="calibration"):
        fe.reference_run(path, np.zeros((1, 6, 6, 2), np.int8))


def test_bad_calibration_data(tmp_path):
    path = tmp_path / "float.onnx"
    onnx.save(layout_model(), path)
    with pytest.raises(fe.OnnxImportError, match=r"calibration data of shape \(3, 6, 6, 2\) does not fit input "
                                                 r"'x' of shape \[1, 2, 6, 6\]"):
        fe.load_onnx(path, calibration=np.zeros((3, 6, 6, 2), np.float32))
    with pytest.raises(fe.OnnxImportError, match="NaN"):
        fe.load_onnx(path, calibration=np.full((3, 2, 6, 6), np.nan, np.float32))


def test_corrupt_truncated_and_wrong_kind_files(tmp_path, every_op_qdq):
    data = every_op_qdq.read_bytes()
    cut = tmp_path / "truncated.onnx"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(fe.OnnxImportError, match=r"truncated\.onnx'.*(corrupt|truncated)"):
        fe.load_onnx(cut)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(np.random.default_rng(SEED).integers(0, 256, 4096).astype(np.uint8).tobytes())
    with pytest.raises(fe.OnnxImportError, match=r"junk\.onnx'"):
        fe.load_onnx(junk)
    text = tmp_path / "text.onnx"
    text.write_text("this is not a model\n")
    with pytest.raises(fe.OnnxImportError, match=r"text\.onnx'"):
        fe.load_onnx(text)
    tfl = tmp_path / "model.onnx"
    tfl.write_bytes(b"\x1c\x00\x00\x00TFL3" + bytes(64))
    with pytest.raises(fe.OnnxImportError, match="TFLite flatbuffer, not an ONNX"):
        fe.load_onnx(tfl)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(fe.OnnxImportError, match="empty"):
        fe.load_onnx(empty)
    with pytest.raises(fe.OnnxImportError, match="no such file"):
        fe.load_onnx(tmp_path / "missing.onnx")


def test_unquantized_activation_is_an_error(tmp_path):
    # Softmax's output left in float: the importer refuses rather than drop it
    path = _qdq_conv_model(tmp_path)
    m = onnx.load(path)
    m.graph.node.append(helper.make_node("Relu", ["y"], ["z"], name="float_relu"))
    del m.graph.output[:]
    m.graph.output.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 4, 4, 4]))
    with pytest.raises(fe.OnnxImportError, match=r"graph output 'z' is a float tensor that no QuantizeLinear"):
        fe.load_onnx(m)
