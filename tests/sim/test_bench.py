"""`make bench` (sim/bench.py): a quick run with tiny budgets writes every JSON field, and every simulator's run of
the shared program - fast Verilator harness, cocotb on Verilator and on Icarus, Amaranth's simulator - leaves the
golden DRAM image and the same CYCLES count. Correctness only: no timing threshold is checked."""

import gc
import json
import warnings

import pytest
from amaranth.hdl import UnusedElaboratable

from sim.bench import BACKENDS, main, scalesim_cycles
from sw.compiler import compile_network
from sw.driver import DEFAULT_CONFIG
from sw.mnist_app import INT8_MODEL
from sw.model_io import load_quantized

SIMULATOR_FIELDS = {"backend", "completed", "cycles", "program_cycles", "wall_s", "cpu_s", "setup_s",
                    "cycles_per_s", "cycles_per_cpu_s", "dram_ok", "first_mismatch", "note", "ratio", "ratio_cpu"}


def test_every_simulator_leaves_the_golden_dram(tmp_path, capfd):
    out = tmp_path / "bench.json"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["--quick", "--rows", "2", "--cols", "2", "--no-mnist", "--out", str(out)]) == 0
        gc.collect()    # a never-elaborated Amaranth object warns when it is collected
    # Nothing builds hardware objects it leaves unused (the cycle model reads its latencies inside a filter).
    unused = [str(w.message) for w in caught if issubclass(w.category, UnusedElaboratable)]
    assert not unused, unused[0]
    report = json.loads(out.read_text())
    # Quiet: the cocotb builds' compiler commands and Verilator warnings go to the named logs, not the terminal.
    printed = capfd.readouterr()
    for name in ("cocotb-verilator", "cocotb-icarus", "amaranth"):
        log = report["simulators"]["logs"][name]
        assert log.endswith(f"{name}-2x2.log") and log in printed.out, (name, log)
    assert "%Warning" not in printed.out + printed.err and "g++ " not in printed.out + printed.err
    assert out.with_suffix(".png").stat().st_size > 10_000 and report["plot"] == str(out.with_suffix(".png"))
    assert report["config"]["rows"] == 2 and report["config"]["cols"] == 2 and report["quick"] is True
    sims = report["simulators"]
    assert len(sims["verilog"]["sha256"]) == 64 and sims["verilog"]["same_for_all"]
    assert sims["program"]["instructions"] > 0
    entries = {e["backend"]: e for e in sims["simulators"]}
    assert tuple(entries) == BACKENDS
    for name, entry in entries.items():
        assert set(entry) == SIMULATOR_FIELDS, f"{name}: fields {sorted(entry)}"
        assert entry["completed"], f"{name} did not finish the program within its budget: {entry}"
        assert entry["dram_ok"], f"{name}: {entry['first_mismatch']}"
        assert entry["cycles"] >= entry["program_cycles"] > 0, f"{name}: {entry}"
    counted = {name: e["program_cycles"] for name, e in entries.items()}
    assert len(set(counted.values())) == 1 and sims["cycles_agree"], f"CYCLES counters differ: {counted}"
    assert sims["program"]["cycles"] == counted["verilator"]
    assert entries["verilator"]["ratio"] == entries["verilator"]["ratio_cpu"] == 1.0
    # The baseline harness: the same program, the same result, its ratio to the default build measured here.
    base = entries["verilator-baseline"]
    assert base["ratio_cpu"] == pytest.approx(base["cycles_per_cpu_s"] / entries["verilator"]["cycles_per_cpu_s"])
    assert "baseline build, best of 3 interleaved rounds" in base["note"], base
    assert set(report["verilator_build"]) == {"fast", "nopgo", "baseline"}
    assert report["verilator_build"]["baseline"]["dsp_pes"] is False and report["verilator_build"]["fast"]["pgo"]
    assert report["mnist"] is None and report["layers"] == []
    assert "cocotb-icarus" in printed.out


def test_mnist_and_layer_sections(tmp_path):
    """Two one-image batches on two workers (the default 8x8 harness that `make mnist` builds)."""
    out = tmp_path / "bench.json"
    assert main(["--backends", "", "--images", "2", "--batch", "1", "--workers", "2", "--quick",
                 "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["simulators"] is None
    mnist = report["mnist"]
    assert mnist["images"] == 2 and mnist["workers"] == 2 and mnist["mismatches"] == 0, mnist
    for key in ("images_per_s", "cycles_per_image", "sim_cycles_per_s", "projected_test_set_s", "host_fraction",
                "cores_used"):
        assert mnist[key] > 0, f"{key}: {mnist[key]}"
    assert mnist["projected_test_set_s"] == pytest.approx(10_000 * mnist["wall_s"] / 2, rel=1e-3)
    assert mnist["projected_from"].startswith("2 images (2 batches of up to 1) on 2 worker(s) in "), mnist
    # The speed-up over the baseline harness: both builds on the same MNIST programs (results compared inside).
    base = mnist["baseline"]
    assert base["programs"] == 4 and base["rounds"] == 1, base
    assert base["fast_cycles_per_cpu_s"] > 0 and base["baseline_cycles_per_cpu_s"] > 0
    assert base["speedup"] == pytest.approx(base["fast_cycles_per_cpu_s"] / base["baseline_cycles_per_cpu_s"])
    assert base["projected_test_set_s"] == pytest.approx(mnist["projected_test_set_s"] * base["speedup"])
    layers = {layer["name"]: layer for layer in report["layers"]}
    assert set(layers) == {"conv1", "conv2", "dense1", "dense2"}
    # The SCALE-Sim column sums the closed form over the programs: here two batches of one image per layer.
    compiled = compile_network(load_quantized(INT8_MODEL), DEFAULT_CONFIG)
    for step in compiled.steps:
        if step.target == "accelerator":
            m, k, n = step.gemm_shape(1)
            assert layers[step.name]["scalesim_cycles"] == 2 * scalesim_cycles(m, k, n, 8, 8), step.name
            assert layers[step.name]["macs"] == 2 * m * k * n, step.name
    for name, layer in layers.items():
        assert layer["cycles"] > 0 and 0 < layer["utilization"] <= 1, layer
        assert layer["cycles"] >= layer["macs"] / 64, f"{name} ran faster than the array's peak: {layer}"
        assert layer["rtl_over_scalesim"] == pytest.approx(layer["cycles"] / layer["scalesim_cycles"])
        assert layer["model"] is None or layer["model"] > 0, layer
    model = report["cycle_model"]
    assert model["errors"] == [], f"sim.cycle_model.predict_cycles failed: {model['errors']}"
    assert all((layer["model"] is not None) == model["available"] for layer in layers.values())


def test_scalesim_closed_form():
    # One weight tile: fill R rows, stream M vectors through R + C - 2 more stages.
    assert scalesim_cycles(1, 1, 1, 1, 1) == 1
    assert scalesim_cycles(100, 8, 8, 8, 8) == 8 + 8 + 8 + 100 - 2 - 1
    assert scalesim_cycles(100, 9, 17, 8, 8) == 2 * 3 * (2 * 8 + 8 + 100 - 2) - 1
    with pytest.raises(ValueError, match="m must be a positive integer, not 0"):
        scalesim_cycles(0, 1, 1, 1, 1)


def test_bad_options():
    with pytest.raises(SystemExit):
        main(["--backends", "verilator,modelsim", "--no-mnist"])
    with pytest.raises(SystemExit):
        main(["--gemm", "4,4", "--no-mnist"])
    with pytest.raises(SystemExit):
        main(["--workers", "0"])
