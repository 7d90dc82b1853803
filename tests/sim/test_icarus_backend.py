"""The icarus backend's time reporting (sim/icarus_backend.py): the up-front warning from the exact cycle model, the
per-program prediction, heartbeat lines with cycles/s and ETA, the measured speed carried to the next program.
The simulator itself is replaced by a stub here (the real runs are in tests/sw/test_driver.py and the cocotb
suites); the prediction is checked against sim.cycle_model on a real program."""

import json

import numpy as np
import pytest

import sim.icarus_backend as ib
from hw.isa import HardwareConfig
from sim.arith import quantize_multiplier
from sim.cycle_model import predict_cycles
from sim.programs import gemm_program

CONFIG = HardwareConfig(rows=4, cols=4, act_depth=64, wgt_depth=64, acc_depth=32, param_depth=8)


@pytest.fixture(autouse=True)
def fresh_plan(tmp_path, monkeypatch):
    monkeypatch.setattr(ib, "SPEED_FILE", tmp_path / "speed.json")
    ib.PLAN.reset()
    yield
    ib.PLAN.reset()


def small_program(seed=7, shape=(20, 9, 6)):
    rng = np.random.default_rng(seed)
    m, k, n = shape
    multiplier, shift = quantize_multiplier(1.0 / (np.sqrt(k) * 128 * rng.uniform(0.5, 2, n)))
    return gemm_program(rng.integers(-128, 128, (m, k)), rng.integers(-128, 128, (k, n)),
                        rng.integers(-1000, 1000, n), multiplier, shift, 0, -128, 127, config=CONFIG)


def test_format_duration():
    assert ib.format_duration(42) == "42 s"
    assert ib.format_duration(450) == "7.5 min"
    assert ib.format_duration(3 * 3600) == "3.0 h"
    assert ib.format_duration(5 * 86400) == "5.0 days"


def test_slow_warning_threshold_and_estimate():
    speed = 500.0
    limit = int(ib.SLOW_WARNING_S * speed)
    assert ib.slow_warning(limit, cycles_per_s=speed) is None
    text = ib.slow_warning(32 * 53_486, cycles_per_s=speed, what="32 images on icarus")
    # 1,711,552 cycles / 500 cycles/s = 3,423.1 s = 57.05 min
    assert text.startswith("warning: 32 images on icarus is 1,711,552 cycles"), text
    assert "about 57.1 min" in text and "verilator" in text, text


def test_stored_speed_is_used_before_a_measurement():
    ib._store_speed(250.0)
    assert json.loads(ib.SPEED_FILE.read_text())["cycles_per_s"] == 250.0
    assert ib.PLAN.speed() == 250.0
    assert "about 2.0 h" in ib.slow_warning(1_800_000)     # 1.8 M cycles at 250 cycles/s = 7,200 s


def test_expect_cycles_warns_and_sets_the_total():
    lines = []
    assert ib.expect_cycles(100, log=lines.append) is None and lines == []
    assert ib.PLAN.total_cycles == 100
    warning = ib.expect_cycles(10_000_000, what="many images", log=lines.append)
    assert lines == [warning] and "many images is 10,000,000 cycles" in warning


def test_predicted_cycles_are_the_cycle_model():
    program = small_program()
    assert ib.predicted_program_cycles(program.dram, program.prog_addr, program.prog_len, CONFIG) == \
        predict_cycles(program.program, CONFIG)
    # A truncated image or garbage: no estimate, no exception (the run itself reports the error).
    assert ib.predicted_program_cycles(program.dram[:100], program.prog_addr, program.prog_len, CONFIG) is None
    assert ib.predicted_program_cycles(np.full(4096, 0xFF, np.uint8), 0, 4, CONFIG) is None


def test_heartbeat_line_eta():
    ib.PLAN.reset(total_cycles=30_000)
    ib.PLAN.finished(10_000, 20.0)           # measured: 500 cycles/s
    progress = ib._ProgramProgress(2, 10_000, ib.PLAN, None, 1.0)
    line = progress.line(10.0)               # 5,000 of 10,000 cycles simulated after 10 s
    assert line == ("icarus: program 2: 10 s elapsed, about 50% of its 10,000 cycles at ~500 cycles/s; "
                    "ETA 10 s for this program, 30 s for the run"), line


def test_run_reports_progress_and_measured_speed(monkeypatch, tmp_path):
    """A stub simulator that takes 0.3 s: heartbeats every 0.05 s, the done line with the job's own speed, and
    the measured speed becomes the estimate for what follows."""
    import time

    program = small_program()
    predicted = predict_cycles(program.program, CONFIG)

    def fake_cocotb(simulator, *, verilog, toplevel, test_module, build_dir, extra_env):
        time.sleep(0.3)
        with np.load(extra_env["JOB_FILE"]) as job:
            dram = job["dram"]
        info = {"status": 1, "error": 0, "error_index": 0, "counters": {"cycles": predicted},
                "total_cycles": predicted + 45, "wall_s": 0.25, "cpu_s": 0.25}
        np.savez(extra_env["RESULT_FILE"], dram=dram, info=np.array(json.dumps(info)))

    monkeypatch.setattr(ib, "run_cocotb", fake_cocotb)
    monkeypatch.setattr(ib, "generate_accelerator", lambda **kwargs: (tmp_path / "a.v", tmp_path / "a.json"))
    lines = []
    accel = ib.IcarusAccelerator(CONFIG, build_dir=tmp_path, log=lines.append, heartbeat=0.05)
    ib.expect_cycles(3 * predicted, log=lines.append)
    final, info = accel.run(program.dram, program.prog_addr, program.prog_len)
    assert np.array_equal(final, program.dram) and info["counters"]["cycles"] == predicted
    assert lines[0] == f"icarus: program 1: {predicted:,} cycles (exact cycle model), about " \
                       f"{ib.format_duration(predicted / ib.TYPICAL_CYCLES_PER_S)} ..."
    beats = [line for line in lines if "elapsed" in line]
    assert beats and all(line.startswith("icarus: program 1: ") and "ETA" in line for line in beats), lines
    speed = (predicted + 45) / 0.25
    assert lines[-1] == (f"icarus: program 1 done: {predicted + 45:,} cycles in 0 s ({speed:,.0f} cycles/s); ETA "
                         f"{ib.format_duration((3 * predicted - predicted - 45) / speed)} for the "
                         f"{3 * predicted - predicted - 45:,} cycles left"), lines[-1]
    assert ib.PLAN.speed() == pytest.approx(speed)
    assert json.loads(ib.SPEED_FILE.read_text())["cycles_per_s"] == pytest.approx(speed, abs=0.1)
