"""The compiler's use of the exact cycle model: tiling choice, per-layer predictions equal to the RTL counters."""

import numpy as np
import pytest

from hw.isa import HardwareConfig
from sim.programs import candidate_tilings
from sw.compiler import choose_tiling, compile_network, predict_gemm
from sw.driver import Driver
from sw.quantize import quantize
from sw.reference import images_to_float
from sw.testing import random_images, random_network, random_params

SMALL = HardwareConfig(rows=4, cols=4, act_depth=256, wgt_depth=256, acc_depth=64, param_depth=8, bus_bytes=8)


@pytest.mark.parametrize("m, k, n", [(300, 40, 30), (32, 200, 64), (7, 9, 5), (1000, 9, 8)])
def test_choose_tiling_takes_the_fastest_predicted_candidate(m, k, n):
    chosen = choose_tiling(m, k, n, SMALL)
    candidates = candidate_tilings(m, k, n, SMALL, limit=2)
    assert chosen in candidates
    cycles = {t: predict_gemm(m, k, n, SMALL, t)["cycles"] for t in candidates}
    assert cycles[chosen] == min(cycles.values()), cycles


@pytest.mark.parametrize("seed", range(3))
def test_predicted_layer_cycles_equal_the_rtl_counters(seed):
    """CompiledNetwork.predicted_cycles (no simulation) equals each layer's CYCLES counter on the Verilator RTL."""
    rng = np.random.default_rng(seed)
    network = random_network(rng)
    params = random_params(rng, network)
    images = random_images(rng, network, 20)
    qnet = quantize(network, params, images_to_float(images[4:]))
    batch = images[:4]
    result = Driver(qnet, backend="verilator", config=SMALL, batch_size=len(batch)).run(batch)
    predicted = compile_network(qnet, SMALL).predicted_cycles(len(batch))
    measured = {layer.name: layer.cycles for layer in result.layers if layer.target == "accelerator"}
    assert predicted == measured, f"seed {seed}: predicted {predicted}, RTL {measured}"


def test_choose_batch_prefers_the_smallest_batch_near_the_best():
    rng = np.random.default_rng(7)
    network = random_network(rng)
    qnet = quantize(network, random_params(rng, network), images_to_float(random_images(rng, network, 8)))
    compiled = compile_network(qnet, SMALL)
    per_image = {b: sum(compiled.predicted_cycles(b).values()) / b for b in (1, 2, 4, 8)}
    chosen = compiled.choose_batch((1, 2, 4, 8))
    assert per_image[chosen] <= min(per_image.values()) * 1.01
    assert all(per_image[b] > min(per_image.values()) * 1.01 for b in (1, 2, 4, 8) if b < chosen)


@pytest.mark.parametrize("seed", range(3))
def test_network_macs_per_image_counts_what_the_compiler_runs(seed):
    from sw.perf import network_macs_per_image
    rng = np.random.default_rng(seed)
    network = random_network(rng)
    images = random_images(rng, network, 4)
    qnet = quantize(network, random_params(rng, network), images_to_float(images))
    compiled = compile_network(qnet, SMALL)
    # Count from the GEMM operands the compiler actually builds for one image (im2col output x weights).
    x, macs = qnet.quantize_input(images[:1]), 0
    for step in compiled.steps:
        if step.target == "accelerator":
            ops = compiled.gemm_operands(step, x)
            macs += ops["a"].shape[0] * ops["a"].shape[1] * ops["w"].shape[1]
            x = np.zeros((1,) + tuple(step.output_shape), np.int8)   # only shapes matter here
        else:
            x = compiled.run_host(step, x)
    assert network_macs_per_image(network) == macs


# ---- the graph IR -----------------------------------------------------------------------------------------------


def test_compile_graph_targets_raw_steps_and_listing():
    from pathlib import Path

    from sw.compiler import CompileError, compile_graph
    from sw.frontends import load_model
    root = Path(__file__).resolve().parents[2]
    graph = load_model(root / "models" / "mlperf-tiny" / "dscnn_kws_int8.tflite")
    compiled = compile_graph(graph, SMALL)
    targets = {s.kind: s.target for s in compiled.steps}
    assert targets == {"conv2d": "accelerator", "fully_connected": "accelerator", "depthwise_conv2d": "host",
                       "average_pool2d": "host", "reshape": "host", "softmax": "host"}
    assert [s.name for s in compiled.steps if s.raw] == ["fully_connected_11"]     # single rounding: raw int32
    accel, total = compiled.macs()
    assert total == sum(graph.macs().values()) and accel == total - 4 * 72_000
    predicted = compiled.predicted_cycles(2)
    assert set(predicted) == {s.name for s in compiled.steps if s.target == "accelerator"}
    assert all(c > 0 for c in predicted.values())
    assert compiled.choose_batch((1, 2)) in (1, 2)
    assert compiled.steps[0].gemm_shape(2) == (2 * 25 * 5, 10 * 4 * 1, 64)
    listing = compiled.listing(1)
    assert "GEMM M=125 K=40 N=64" in listing and "raw" in listing and "depthwise_conv2d  host" in listing
    with pytest.raises(CompileError, match="host only"):
        compile_graph(graph, SMALL, depthwise="accelerator")
    with pytest.raises(TypeError, match="sw.ir.Graph"):
        compile_graph(object(), SMALL)
