"""The ``icarus`` backend: accelerator programs on the RTL under cocotb and Icarus Verilog.

Slow (300-700 simulated cycles per second on the 8x8 accelerator, some 2,000 times slower than the Verilator
harness) - it exists to cross-check the fast Verilator backend on a second, independent simulator, on small cases.
Each run is one cocotb simulation of :mod:`sim.cocotb_job`; the Verilog is generated once per configuration
(cached by :func:`hw.generate.generate_accelerator`) and compiled once by iverilog.

Because a run can take hours, the backend says how long: :func:`expect_cycles` (called with the exact cycle model's
total before a run of many programs) warns up front when the work would take more than :data:`SLOW_WARNING_S`, and
every :meth:`IcarusAccelerator.run` reports its program's predicted cycles (:func:`sim.cycle_model.predict_cycles`
of the instructions in the DRAM image), a heartbeat with the elapsed time and the ETA every
:data:`HEARTBEAT_S` seconds, and at its end the measured cycles/s and the ETA of what is left. Speeds come from the
programs run so far, before the first one from the last run's speed (``build/icarus/speed.json``), else
:data:`TYPICAL_CYCLES_PER_S`.
"""

from __future__ import annotations

import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from hw.generate import generate_accelerator
from hw.isa import INSTRUCTION_BYTES, HardwareConfig, decode

from .cocotb_runner import run_cocotb

__all__ = ["IcarusAccelerator", "RunPlan", "expect_cycles", "format_duration", "predicted_program_cycles",
           "slow_warning", "PLAN", "TYPICAL_CYCLES_PER_S", "SLOW_WARNING_S", "HEARTBEAT_S"]

ROOT = Path(__file__).resolve().parent.parent
SPEED_FILE = ROOT / "build" / "icarus" / "speed.json"
#: Simulated cycles per second assumed before anything was measured (cocotb + Icarus, 8x8 accelerator).
TYPICAL_CYCLES_PER_S = 500.0
#: Work estimated to take longer than this gets an up-front warning.
SLOW_WARNING_S = 180.0
#: Seconds between progress lines while a program runs.
HEARTBEAT_S = 30.0


def format_duration(seconds: float) -> str:
    """``42 s``, ``7.5 min``, ``3.2 h``, ``2.1 days``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _default_log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _stored_speed() -> float | None:
    try:
        value = float(json.loads(SPEED_FILE.read_text())["cycles_per_s"])
        return value if value > 0 else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _store_speed(cycles_per_s: float) -> None:
    try:
        SPEED_FILE.parent.mkdir(parents=True, exist_ok=True)
        SPEED_FILE.write_text(json.dumps({"cycles_per_s": round(cycles_per_s, 1),
                                          "when": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n")
    except OSError:
        pass


def slow_warning(cycles: int, *, cycles_per_s: float | None = None, what: str = "this run") -> str | None:
    """The warning for ``cycles`` of Icarus simulation when they would take more than :data:`SLOW_WARNING_S`
    (None otherwise), with the estimate and what to do instead."""
    speed = cycles_per_s or _stored_speed() or TYPICAL_CYCLES_PER_S
    seconds = cycles / speed
    if seconds <= SLOW_WARNING_S:
        return None
    return (f"warning: {what} is {cycles:,} cycles of RTL simulation (exact cycle model); Icarus runs about "
            f"{speed:,.0f} cycles/s, so it will take about {format_duration(seconds)}. The icarus backend is a "
            f"cross-check on a second simulator for small cases (a few images); the verilator backend runs the same "
            f"RTL about 2,000 times faster.")


class RunPlan:
    """What a run of several programs expects in total, for the ETA of the whole run (thread-safe)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.reset()

    def reset(self, total_cycles: int | None = None) -> None:
        with self._lock:
            self.total_cycles = total_cycles
            self.done_cycles = 0
            self.done_seconds = 0.0
            self.programs = 0

    def finished(self, cycles: int, seconds: float) -> None:
        with self._lock:
            self.done_cycles += cycles
            self.done_seconds += seconds
            self.programs += 1

    def speed(self) -> float:
        """Measured cycles/s of the programs so far, else the stored or the typical speed."""
        with self._lock:
            if self.done_seconds > 0 and self.done_cycles > 0:
                return self.done_cycles / self.done_seconds
        return _stored_speed() or TYPICAL_CYCLES_PER_S

    def remaining_cycles(self, running_cycles_left: int = 0) -> int | None:
        """Cycles of the whole run still to simulate (None without a total)."""
        with self._lock:
            if self.total_cycles is None:
                return None
            return max(self.total_cycles - self.done_cycles, running_cycles_left, 0)


#: The plan of this process's Icarus runs (:func:`expect_cycles` sets it).
PLAN = RunPlan()


def expect_cycles(total_cycles: int, *, what: str = "this run", log=_default_log) -> str | None:
    """Announce ``total_cycles`` of coming Icarus simulation (the exact cycle model's figure): sets the whole-run
    ETA of the progress lines and logs :func:`slow_warning` when the work would take long. Returns the warning."""
    PLAN.reset(int(total_cycles))
    warning = slow_warning(int(total_cycles), what=what)
    if warning and log is not None:
        log(warning)
    return warning


def predicted_program_cycles(dram: np.ndarray, prog_addr: int, prog_len: int, config: HardwareConfig) -> int | None:
    """CYCLES of the program in ``dram`` from :func:`sim.cycle_model.predict_cycles`, or None where the model
    does not apply (an illegal or faulting program: it stops early)."""
    try:
        from .cycle_model import predict_cycles

        base = prog_addr & ~0xF
        blob = np.asarray(dram, dtype=np.uint8)[base:base + INSTRUCTION_BYTES * prog_len].tobytes()
        if len(blob) != INSTRUCTION_BYTES * prog_len:
            return None
        program = [decode(int.from_bytes(blob[i:i + INSTRUCTION_BYTES], "little"))
                   for i in range(0, len(blob), INSTRUCTION_BYTES)]
        return int(predict_cycles(program, config))
    except Exception:   # the estimate is advisory: a program the model rejects still runs
        return None


class _ProgramProgress:
    """Heartbeat lines while one program runs, and its summary line at the end."""

    def __init__(self, index: int, predicted: int | None, plan: RunPlan, log, every: float):
        self.index, self.predicted, self.plan, self.log, self.every = index, predicted, plan, log, every
        self._done = threading.Event()
        self.start = time.perf_counter()

    def line(self, elapsed: float) -> str:
        speed = self.plan.speed()
        text = f"icarus: program {self.index}: {format_duration(elapsed)} elapsed"
        if self.predicted:
            simulated = min(self.predicted, int(elapsed * speed))
            text += (f", about {100 * simulated / self.predicted:.0f}% of its {self.predicted:,} cycles at "
                     f"~{speed:,.0f} cycles/s; ETA {format_duration((self.predicted - simulated) / speed)}")
            left = self.plan.remaining_cycles(self.predicted - simulated)
            if left is not None:
                left = max(left - simulated, self.predicted - simulated)
                text += f" for this program, {format_duration(left / speed)} for the run"
        return text

    def __enter__(self):
        if self.log is not None:
            self.log(f"icarus: program {self.index}: "
                     + (f"{self.predicted:,} cycles (exact cycle model), about "
                        f"{format_duration(self.predicted / self.plan.speed())}" if self.predicted
                        else "cycles unknown (the cycle model does not apply)") + " ...")
            self._thread = threading.Thread(target=self._beat, daemon=True, name="s8-icarus-progress")
            self._thread.start()
        return self

    def _beat(self):
        while not self._done.wait(self.every):
            self.log(self.line(time.perf_counter() - self.start))

    def __exit__(self, *exc):
        self._done.set()
        if self.log is not None:
            self._thread.join()


class IcarusAccelerator:
    """The accelerator's RTL for ``config`` under cocotb and Icarus Verilog.

    ``log(text)`` receives the progress lines (default: stderr; None: silent); ``heartbeat`` is the seconds
    between them while a program runs.
    """

    def __init__(self, config: HardwareConfig, *, build_dir: Path | str | None = None, log=_default_log,
                 heartbeat: float = HEARTBEAT_S):
        self.config = config
        self.log, self.heartbeat = log, heartbeat
        self.runs = 0
        name = (f"accelerator_{config.rows}x{config.cols}_{config.act_depth}_{config.wgt_depth}_"
                f"{config.acc_depth}_{config.param_depth}_{8 * config.bus_bytes}")
        self.build_dir = Path(build_dir) if build_dir else ROOT / "build" / "icarus" / name
        start = time.perf_counter()
        self.verilog, _ = generate_accelerator(rows=config.rows, cols=config.cols, act_depth=config.act_depth,
                                               wgt_depth=config.wgt_depth, acc_depth=config.acc_depth,
                                               param_depth=config.param_depth, data_width=8 * config.bus_bytes,
                                               out_dir=self.build_dir)
        if log is not None and time.perf_counter() - start > 2:
            log(f"icarus: generated {self.verilog} in {time.perf_counter() - start:.0f} s")

    def run(self, dram, prog_addr, prog_len, *, max_cycles=5_000_000):
        """Returns (final DRAM image, {"status", "error", "error_index", "counters"})."""
        dram = np.asarray(dram, dtype=np.uint8)
        predicted = predicted_program_cycles(dram, prog_addr, prog_len, self.config)
        self.runs += 1
        with tempfile.TemporaryDirectory() as tmp, _ProgramProgress(self.runs, predicted, PLAN, self.log,
                                                                    self.heartbeat) as progress:
            job, result = Path(tmp) / "job.npz", Path(tmp) / "result.npz"
            np.savez(job, dram=dram, prog_addr=prog_addr, prog_len=prog_len, max_cycles=max_cycles)
            run_cocotb("icarus", verilog=self.verilog, toplevel="accelerator",
                       test_module=Path(__file__).with_name("cocotb_job.py"), build_dir=self.build_dir / "icarus",
                       extra_env={"JOB_FILE": job, "RESULT_FILE": result})
            with np.load(result, allow_pickle=False) as out:
                final, info = out["dram"].copy(), json.loads(str(out["info"]))
        self._finished(info, time.perf_counter() - progress.start)
        return final, info

    def _finished(self, info: dict, elapsed: float) -> None:
        cycles = int(info.get("total_cycles") or info["counters"]["cycles"])
        seconds = float(info.get("wall_s") or elapsed)
        PLAN.finished(cycles, seconds)
        speed = PLAN.speed()
        _store_speed(speed)
        if self.log is not None:
            left = PLAN.remaining_cycles()
            self.log(f"icarus: program {self.runs} done: {cycles:,} cycles in {format_duration(seconds)} "
                     f"({cycles / seconds if seconds > 0 else 0:,.0f} cycles/s)"
                     + (f"; ETA {format_duration(left / speed)} for the {left:,} cycles left" if left else ""))
