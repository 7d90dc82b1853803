"""The driver and its backends: random small CNNs give bit-identical int8 logits on every backend; bad input gets
clear errors."""

from dataclasses import dataclass

import numpy as np
import pytest

from hw.isa import HardwareConfig
from sw.compiler import CompileError, compile_network
from sw.driver import Driver
from sw.network import Network
from sw.quantize import quantize
from sw.reference import images_to_float
from sw.testing import random_images, random_network, random_params

# A small accelerator keeps the RTL builds and runs short while still forcing tiling in every dimension.
SMALL = HardwareConfig(rows=4, cols=4, act_depth=256, wgt_depth=256, acc_depth=64, param_depth=8, bus_bytes=8)


def random_case(seed, n_images=3):
    rng = np.random.default_rng(seed)
    network = random_network(rng)
    params = random_params(rng, network)
    images = random_images(rng, network, n_images + 16)
    qnet = quantize(network, params, images_to_float(images[n_images:]))
    return network, qnet, images[:n_images]


def assert_same_logits(seed, backend, got, want):
    bad = np.argwhere(got != want)
    assert bad.size == 0, (f"seed {seed}: {backend} logits differ from cpu at image {bad[0][0]} output "
                           f"{bad[0][1]}: {got[tuple(bad[0])]} vs {want[tuple(bad[0])]}")


@pytest.mark.parametrize("seed", range(6))
def test_random_cnns_cpu_golden_verilator_gpu(seed):
    network, qnet, images = random_case(seed)
    want = Driver(qnet, backend="cpu", config=SMALL).run(images).logits
    for backend in ("golden", "verilator", "gpu"):
        result = Driver(qnet, backend=backend, config=SMALL, batch_size=2).run(images)
        assert_same_logits(seed, backend, result.logits, want)
        if backend == "verilator":
            accel = [layer for layer in result.layers if layer.target == "accelerator"]
            assert all(layer.cycles and layer.macs for layer in accel), f"seed {seed}: missing counters {accel}"
            assert all(0 < layer.utilization(SMALL) <= 1 for layer in accel)


def test_parallel_workers_give_the_serial_results():
    """Five one-image batches on three workers: the same logits, counters and callbacks as one worker, in order."""
    seed = 12
    network, qnet, images = random_case(seed, n_images=5)
    want = Driver(qnet, backend="cpu", config=SMALL).run(images).logits
    runs = {}
    for workers in (1, 3):
        driver = Driver(qnet, backend="verilator", config=SMALL, batch_size=1, workers=workers)
        assert driver.workers == workers
        done, programs = [], []
        result = driver.run(images, progress=lambda d, total, cycles: done.append(d),
                            on_program=lambda step, program, counters: programs.append((step.name, counters)))
        assert_same_logits(seed, f"verilator with {workers} workers", result.logits, want)
        assert done == [1, 2, 3, 4, 5], f"progress must report the batches in order: {done}"
        accel = [step.name for step in driver.compiled.steps if step.target == "accelerator"]
        assert sorted(name for name, _ in programs) == sorted(accel * 5)
        assert all(counters["cycles"] > 0 for _, counters in programs)
        runs[workers] = result
    for one, three in zip(runs[1].layers, runs[3].layers):
        assert (one.name, one.macs, one.cycles, one.vectors, one.instructions) == \
            (three.name, three.macs, three.cycles, three.vectors, three.instructions), f"seed {seed}: {one} {three}"
    assert runs[3].workers == 3


def test_workers_are_validated_and_serial_backends_use_one():
    _, qnet, _ = random_case(13)
    for bad in (0, -1, 1.5, True, 1000):
        with pytest.raises(ValueError, match=f"Workers must be an integer from 1 to 256 .*not {bad!r}"):
            Driver(qnet, backend="cpu", config=SMALL, workers=bad)
    assert Driver(qnet, backend="golden", config=SMALL, workers=4).workers == 1


def test_random_cnn_icarus():
    seed = 100
    rng = np.random.default_rng(seed)
    network = random_network(rng, input_shape=(6, 6, 2), conv_layers=1, dense_layers=1)
    params = random_params(rng, network)
    images = random_images(rng, network, 10)
    qnet = quantize(network, params, images_to_float(images[2:]))
    want = Driver(qnet, backend="cpu", config=SMALL).run(images[:2]).logits
    got = Driver(qnet, backend="icarus", config=SMALL, batch_size=2).run(images[:2]).logits
    assert_same_logits(seed, "icarus", got, want)


def test_gpu_backend_says_when_it_falls_back_to_cpu():
    import torch
    _, qnet, _ = random_case(7)
    driver = Driver(qnet, backend="gpu", config=SMALL)
    if torch.cuda.is_available():
        assert driver.note == ""
    else:
        assert "no CUDA GPU" in driver.note


def test_unsupported_layer_is_named():
    @dataclass(frozen=True)
    class AvgPool2D:
        name: str = "avg"

        def output_shape(self, shape):
            return shape

        def param_shapes(self, shape):
            return {}

    _, qnet, _ = random_case(8)
    layers = list(qnet.network.layers)
    layers.insert(1, AvgPool2D())
    qnet.network = Network(qnet.network.input_shape, tuple(layers))
    qnet.layers = tuple(list(qnet.layers[:1]) + [None] + list(qnet.layers[1:]))
    with pytest.raises(CompileError, match="layer 1 \\('avg'\\): AvgPool2D is not supported"):
        compile_network(qnet, SMALL)


def test_bad_backend_and_batch():
    _, qnet, _ = random_case(9)
    with pytest.raises(ValueError, match="Unknown backend 'fpga'"):
        Driver(qnet, backend="fpga")
    with pytest.raises(ValueError, match="Batch size must be a positive integer, not 0"):
        Driver(qnet, backend="cpu", batch_size=0)


def test_wrong_image_shape():
    _, qnet, images = random_case(10)
    with pytest.raises(ValueError):
        Driver(qnet, backend="cpu", config=SMALL).run(images[:, :-1])


@pytest.mark.parametrize("workers", [1, 2])
def test_watchdog_reports_cycles(workers):
    from sim.verilator_backend import SimulationTimeout
    _, qnet, images = random_case(11)
    driver = Driver(qnet, backend="verilator", config=SMALL, max_cycles=50, batch_size=1, workers=workers)
    with pytest.raises(SimulationTimeout, match="50"):
        driver.run(images)


@pytest.mark.parametrize("seed", [11, 12])
def test_model_backend_gives_cpu_logits_and_the_rtl_cycles(seed):
    """BACKEND=model: the CPU int8 logits and, per layer, exactly the cycles the Verilator RTL counts."""
    _, qnet, images = random_case(seed, n_images=5)
    model = Driver(qnet, backend="model", config=SMALL, batch_size=2).run(images)
    cpu = Driver(qnet, backend="cpu", config=SMALL).run(images)
    rtl = Driver(qnet, backend="verilator", config=SMALL, batch_size=2, workers=1).run(images)
    assert_same_logits(seed, "model", model.logits, cpu.logits)
    got = {layer.name: layer.cycles for layer in model.layers if layer.target == "accelerator"}
    want = {layer.name: layer.cycles for layer in rtl.layers if layer.target == "accelerator"}
    assert got == want, f"seed {seed}: model cycles {got}, RTL {want}"


def test_driver_on_a_graph_quantizes_float_inputs_and_checks_shapes():
    from pathlib import Path

    from sw import ir
    from sw.kernels import graph_forward
    from sw.model_io import load_quantized
    root = Path(__file__).resolve().parents[2]
    graph = ir.Graph.from_quantized_network(load_quantized(root / "models" / "mnist_int8.npz"))
    driver = Driver(graph, backend="cpu", config=SMALL)
    real = np.random.default_rng(4).uniform(0, 1, (3, 28, 28, 1)).astype(np.float32)
    q = graph.input.quant.quantize(real)
    result = driver.run(real)
    np.testing.assert_array_equal(result.logits, graph_forward(graph, q))
    assert result.outputs[graph.outputs[0]].shape == (3, 10)
    assert result.accelerator_share == 1.0 and result.macs == 3 * sum(graph.macs().values())
    with pytest.raises(ValueError, match="must have shape"):
        driver.run(real[:, :5])
    with pytest.raises(ValueError, match="int8 .* or real numbers"):
        driver.run(np.zeros((1, 28, 28, 1), np.uint16))
    two = ir.Graph(tensors=[ir.Tensor("a", (4,), ir.Quant(1.0, 0)), ir.Tensor("b", (4,), ir.Quant(1.0, 0)),
                            ir.Tensor("c", (4,), ir.Quant(1.0, 0))], inputs=("a", "b"), outputs=("c",),
                   nodes=[ir.Add(name="add", inputs=("a", "b"), outputs=("c",), input1_multiplier=1 << 30,
                                 input2_multiplier=1 << 30, output_multiplier=1 << 30)])
    with pytest.raises(ValueError, match="one input"):
        Driver(two, backend="cpu")
