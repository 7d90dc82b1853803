"""sw.frontends.tflite and sw.kernels against LiteRT's reference kernels (OpResolverType.BUILTIN_REF).

Every comparison is element by element on seeded random int8 inputs, on the two MLPerf Tiny models shipped in
models/mlperf-tiny and on seeded models built here (tests/sw/frontends/tflite_models.py) with every supported operator, per
tensor and per channel. Intermediate tensors are compared too (LiteRT keeps them with preserve_all_tensors), so a
mismatch names the first node that differs."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from sw import ir
from sw.frontends import ModelImportError, load_model, model_kind
from sw.frontends.tflite import (CONVERTERS, FULLY_CONNECTED_ROUNDING, SUPPORTED_OPS, _check_enums, load_tflite,
                                 parse_tflite, reference_run)
from sw.kernels import graph_forward

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tflite_models import ModelBuilder, edge_cnn  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
MLPERF = ROOT / "models" / "mlperf-tiny"
RESNET8 = MLPERF / "resnet8_cifar10_int8.tflite"
DSCNN = MLPERF / "dscnn_kws_int8.tflite"


def _inputs(graph, n, seed):
    return np.random.default_rng(seed).integers(-128, 128, (n,) + graph.input.shape, dtype=np.int8)


def compare_all_tensors(path, graph, x, seed):
    """Run LiteRT sample by sample keeping every tensor; assert each IR node's output equals LiteRT's."""
    interp = Interpreter(model_path=str(path), experimental_op_resolver_type=OpResolverType.BUILTIN_REF,
                         experimental_preserve_all_tensors=True)
    interp.allocate_tensors()
    index = {d["name"]: d["index"] for d in interp.get_tensor_details()}
    inp = interp.get_input_details()[0]
    _, ours = graph_forward(graph, x, return_tensors=True)
    compared = 0
    for i, sample in enumerate(x):
        v = sample[np.newaxis]
        if inp["dtype"] == np.float32:
            v = graph.input.quant.dequantize(v)
        interp.set_tensor(inp["index"], v)
        interp.invoke()
        for node in graph.nodes:
            if node.output not in index:
                continue
            ref = interp.get_tensor(index[node.output])[0]
            got = ours[node.output][i].reshape(ref.shape)
            if not np.array_equal(ref, got):
                where = np.argwhere(ref != got)[0]
                pytest.fail(f"seed {seed}, sample {i}: node {node.name!r} ({node.op}) differs from LiteRT first at "
                            f"{tuple(where)}: ours {got[tuple(where)]}, LiteRT {ref[tuple(where)]} "
                            f"({int((ref != got).sum())} elements)")
            compared += ref.size
    return compared


@pytest.mark.parametrize("path", [RESNET8, DSCNN], ids=["resnet8", "dscnn"])
def test_mlperf_tiny_imports_and_matches_litert_on_every_tensor(path):
    graph = load_model(path)
    assert graph.source == "tflite"
    ops = [n.op for n in graph.nodes]
    macs = sum(graph.macs().values())
    if path == RESNET8:
        assert ops.count("conv2d") == 9 and ops.count("add") == 3 and macs == 12_501_632
    else:
        assert ops.count("depthwise_conv2d") == 4 and ops.count("conv2d") == 5 and macs == 2_656_768
    assert ops[-1] == "softmax" and graph.output.quant == ir.Quant(1 / 256, -128)
    x = _inputs(graph, 12, seed=11)
    assert compare_all_tensors(path, graph, x, 11) > 0
    # reference_run (the helper the CLI uses) agrees with the graph's output.
    np.testing.assert_array_equal(reference_run(path, x), graph_forward(graph, x))


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("per_channel", [False, True], ids=["per-tensor", "per-channel"])
def test_built_models_every_op_match_litert(tmp_path, seed, per_channel):
    path = tmp_path / "edge.tflite"
    path.write_bytes(edge_cnn(seed, per_channel=per_channel))
    graph = load_tflite(path)
    assert {n.op for n in graph.nodes} == {"conv2d", "depthwise_conv2d", "add", "max_pool2d", "average_pool2d",
                                          "reshape", "fully_connected", "softmax"}
    conv = graph.nodes[0]
    assert conv.weight_scale.shape == ((8,) if per_channel else (1,))
    x = _inputs(graph, 40, seed)
    compare_all_tensors(path, graph, x, seed)
    y = graph_forward(graph, x)
    assert len(np.unique(y)) > 4, "the softmax output is degenerate: the test model's scales are off"


def test_float_boundary_quantize_dequantize_dropped(tmp_path):
    path = tmp_path / "edge_float_io.tflite"
    path.write_bytes(edge_cnn(5, float_boundary=True))
    graph = load_tflite(path)
    assert graph.inputs == ("input_int8",) and graph.outputs == ("softmax",)
    assert graph.metadata["float_inputs"] == ["input"] and graph.metadata["float_outputs"] == ["output"]
    x = _inputs(graph, 20, 5)
    np.testing.assert_array_equal(reference_run(path, x), graph_forward(graph, x))


def test_fully_connected_rounding_is_measured_on_litert(tmp_path):
    """LiteRT's reference FULLY_CONNECTED rounds once; with gemmlowp's double rounding some elements differ. The test
    measures both on a wide FC so the setting stays true for the installed LiteRT."""
    assert FULLY_CONNECTED_ROUNDING == "single"
    rng = np.random.default_rng(3)
    mb = ModelBuilder()
    x = mb.tensor("x", (1, 256), np.int8, scale=0.05, zero_point=3)
    w = rng.integers(-127, 128, (512, 256), dtype=np.int8)
    wt = mb.tensor("w", w.shape, np.int8, scale=0.01, zero_point=0, data=w)
    bt = mb.tensor("b", (512,), np.int32, scale=0.0005, zero_point=0,
                   data=rng.integers(-5000, 5000, 512).astype(np.int32))
    y = mb.tensor("y", (1, 512), np.int8, scale=0.61, zero_point=-1)
    mb.op("FULLY_CONNECTED", [x, wt, bt], [y])
    mb.inputs, mb.outputs = [x], [y]
    path = tmp_path / "fc.tflite"
    path.write_bytes(mb.build())
    graph = load_tflite(path)
    xs = _inputs(graph, 30, 3)
    ref = reference_run(path, xs)
    np.testing.assert_array_equal(graph_forward(graph, xs), ref)
    node = graph.nodes[0]
    double = graph_forward(ir.Graph(tensors=graph.tensors, inputs=graph.inputs, outputs=graph.outputs,
                                    nodes=[node.replace(rounding="double")]), xs)
    assert (double != ref).sum() > 0, "double rounding matched LiteRT everywhere: the FC rounding check is too weak"


def test_schema_enums_match_the_package():
    assert _check_enums()


# ---- bad models: one clear error each -------------------------------------------------------------------------


def _tiny(tmp_path, *, act_dtype=np.int8, w_zp=0, act_scales=1, op="FULLY_CONNECTED", name="m.tflite"):
    mb = ModelBuilder()
    scale = [0.1] * act_scales
    x = mb.tensor("x", (1, 4), act_dtype, scale=None if act_dtype == np.float32 else scale,
                  zero_point=[0] * act_scales)
    if op == "TANH":
        y = mb.tensor("y", (1, 4), np.int8, scale=1 / 128, zero_point=0)
        mb.op("TANH", [x], [y])
    else:
        wdt = np.float32 if act_dtype == np.float32 else np.int8
        wt = mb.tensor("w", (3, 4), wdt, scale=None if wdt == np.float32 else 0.02, zero_point=w_zp,
                       data=np.ones((3, 4), wdt))
        y = mb.tensor("y", (1, 3), act_dtype, scale=None if act_dtype == np.float32 else 0.3, zero_point=0)
        mb.op("FULLY_CONNECTED", [x, wt, -1], [y])
    mb.inputs, mb.outputs = [x], [y]
    path = tmp_path / name
    path.write_bytes(mb.build())
    return path


def test_unsupported_op_names_index_tensor_op_and_lists_supported(tmp_path):
    path = _tiny(tmp_path, op="TANH")
    with pytest.raises(ModelImportError) as info:
        load_tflite(path)
    msg = str(info.value)
    assert "operator 0 (TANH, output tensor 'y')" in msg and "operator TANH is not supported" in msg
    for op in SUPPORTED_OPS:
        assert op in msg
    assert set(CONVERTERS) >= {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD", "AVERAGE_POOL_2D",
                               "MAX_POOL_2D", "RESHAPE", "SOFTMAX"}


@pytest.mark.parametrize("kwargs, match", [
    (dict(act_dtype=np.float32), "float32: this is a float"),
    (dict(act_dtype=np.uint8), "is uint8; only int8 activations"),
    (dict(act_dtype=np.int16), "is int16; only int8 activations"),
    (dict(act_scales=2), "per-axis quantization \\(2 scales\\)"),
    (dict(w_zp=5), "non-zero zero points"),
])
def test_unsupported_quantization_is_one_clear_error(tmp_path, kwargs, match):
    with pytest.raises(ModelImportError, match=match):
        load_tflite(_tiny(tmp_path, **kwargs))


def test_corrupt_truncated_wrong_kind_and_missing_files(tmp_path):
    good = RESNET8.read_bytes()
    truncated = tmp_path / "truncated.tflite"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(ModelImportError, match="truncated|corrupt"):
        load_tflite(truncated)
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(good[:8] + np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    with pytest.raises(ModelImportError, match="corrupt|truncated|out of range"):
        load_tflite(garbage)
    onnx_like = tmp_path / "model.tflite"
    onnx_like.write_bytes(b"\x08\x07\x12\x07pytorch" + bytes(40))
    with pytest.raises(ModelImportError, match="not a TFLite model .*ONNX"):
        load_tflite(onnx_like)
    with pytest.raises(ModelImportError, match="cannot read the model file"):
        load_tflite(tmp_path / "missing.tflite")
    unknown = tmp_path / "weights.bin"
    unknown.write_bytes(b"hello world")
    with pytest.raises(ModelImportError, match="unknown model kind"):
        load_model(unknown)
    with pytest.raises(ModelImportError, match="not a TFLite model"):
        parse_tflite(b"", "empty")


def test_load_model_dispatch():
    assert model_kind(RESNET8) == "tflite"
    npz = ROOT / "models" / "mnist_int8.npz"
    assert model_kind(npz) == "npz"
    graph = load_model(npz)
    assert graph.source == "npz" and graph.nodes[0].op == "conv2d"


def test_missing_extra_says_which_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "tflite", None)
    with pytest.raises(ImportError, match=r"pip install -e '\.\[model\]'"):
        load_tflite(DSCNN)
