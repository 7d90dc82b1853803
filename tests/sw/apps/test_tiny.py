"""MLPerf Tiny through every backend, element by element against LiteRT BUILTIN_REF (a small slice of
``make tiny-check``, which runs 100 inputs per model), the icarus RTL on single layers, and ``sw.apps.tiny``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from sw import ir
from sw.apps import tiny
from sw.driver import Driver
from sw.frontends import load_model
from sw.frontends.tflite import reference_run
from sw.kernels import graph_forward

ROOT = Path(__file__).resolve().parents[3]
RESNET8 = ROOT / "models" / "mlperf-tiny" / "resnet8_cifar10_int8.tflite"
DSCNN = ROOT / "models" / "mlperf-tiny" / "dscnn_kws_int8.tflite"


def _first_mismatch(got, want, seed):
    bad = np.argwhere(got != want)
    if len(bad):
        i = tuple(bad[0])
        return f"seed {seed}: {len(bad)} elements differ, first at {i}: got {got[i]}, LiteRT {want[i]}"
    return None


@pytest.mark.parametrize("path", [RESNET8, DSCNN], ids=["resnet8", "dscnn"])
def test_every_backend_equals_litert(path):
    graph = load_model(path)
    seed = 21
    x = np.random.default_rng(seed).integers(-128, 128, (3,) + graph.input.shape, dtype=np.int8)
    want = reference_run(path, x).reshape(3, -1)
    cycles = {}
    for backend in ("cpu", "gpu", "golden", "verilator", "model"):
        result = Driver(graph, backend=backend, batch_size=2, workers=1).run(x)
        problem = _first_mismatch(result.logits, want, seed)
        assert problem is None, f"{path.name} on {backend}: {problem}"
        if backend in ("verilator", "model"):
            cycles[backend] = {layer.name: layer.cycles for layer in result.layers if layer.target == "accelerator"}
            share = result.accelerator_share
            assert share == pytest.approx(1.0 if path == RESNET8 else (2_656_768 - 4 * 72_000) / 2_656_768)
    # The exact cycle model predicts every accelerator layer's RTL counter.
    assert cycles["model"] == cycles["verilator"]


def _litert_tensors(path, x):
    interp = Interpreter(model_path=str(path), experimental_op_resolver_type=OpResolverType.BUILTIN_REF,
                         experimental_preserve_all_tensors=True)
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], x[np.newaxis])
    interp.invoke()
    return {d["name"]: interp.get_tensor(d["index"])[0] for d in interp.get_tensor_details()}


def _single_node_graph(graph, name):
    node = graph.node(name)
    tensors = [graph.tensors[t] for t in node.inputs] + [graph.output_tensor(node)]
    return ir.Graph(tensors=tensors, inputs=node.inputs, outputs=node.outputs, nodes=[node], name=name)


def test_icarus_runs_a_dscnn_layer_bit_exact():
    """The cocotb + Icarus RTL runs at about 500 cycles/s, so the suite gives it DS-CNN's FULLY_CONNECTED layer (one
    program of about 700 cycles for three inputs: the raw int32 accumulators that the host requantizes with LiteRT's
    single rounding), fed with and compared against the tensors LiteRT's reference kernels computed. The GEMM
    lowering of convolutions (im2col with zero-point padding) is the same code the verilator and golden backends
    run on both models above."""
    graph = load_model(DSCNN)
    name = "fully_connected_11"
    sub = _single_node_graph(graph, name)
    node = sub.nodes[0]
    rng = np.random.default_rng(5)
    refs = [_litert_tensors(DSCNN, rng.integers(-128, 128, graph.input.shape, dtype=np.int8)) for _ in range(3)]
    xin = np.stack([r[node.inputs[0]].reshape(sub.input.shape) for r in refs])
    want = np.stack([r[node.output].reshape(-1) for r in refs])
    result = Driver(sub, backend="icarus", batch_size=3).run(xin)
    problem = _first_mismatch(result.logits, want, 5)
    assert problem is None, f"{name} on icarus: {problem}"
    assert result.layers[0].cycles > 0 and result.layers[0].target == "accelerator"


def test_tiny_app_report(tmp_path, capsys):
    out = tmp_path / "tiny.json"
    assert tiny.main(["--backend", "model", "--n", "2", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    text = capsys.readouterr().out
    assert "resnet8" in text and "dscnn" in text and "latency" in text
    for model in report["models"]:
        graph = load_model(ROOT / model["file"])
        assert model["macs_per_inference"] == sum(graph.macs().values())
        for entry in model["arrays"]:
            assert entry["mismatched_elements"] == 0
            # Latency is cycles over the measured Fmax; the model backend's cycles are the exact model's.
            assert entry["latency_ms"] == pytest.approx(entry["cycles_per_inference"] / (entry["fmax_mhz"] * 1e3))
            assert entry["cycles_per_inference"] == entry["cycle_model_cycles_per_inference"]
            accel = [layer for layer in entry["layers"] if layer["target"] == "accelerator"]
            assert sum(layer["cycles"] for layer in accel) == pytest.approx(entry["cycles_per_inference"])
            assert 0 < entry["utilization"] <= 1
    assert tiny.main(["--backend", "fpga"]) == 2
    assert tiny.main(["--models", "mobilenet"]) == 2


def test_graph_forward_equals_the_legacy_int8_path():
    """One driver path: the legacy MNIST network runs as its graph and equals sw.reference.int8_forward."""
    from sw.model_io import load_quantized
    from sw.reference import int8_forward
    qnet = load_quantized(ROOT / "models" / "mnist_int8.npz")
    x = np.random.default_rng(2).integers(-128, 128, (5, 28, 28, 1), dtype=np.int8)
    np.testing.assert_array_equal(graph_forward(ir.Graph.from_quantized_network(qnet), x), int8_forward(qnet, x))
