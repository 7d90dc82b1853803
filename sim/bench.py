"""`make bench`: how fast each simulator runs the accelerator, MNIST throughput and per-layer cycles, in one run.

    python -m sim.bench [--rows 8 --cols 8 --bus-bytes 8] [--images 256] [--workers N] [--quick] [--out PATH]

Everything is measured in the same process, minutes apart, because the machine is shared and noisy: read the
ratios, not the absolute figures. Three sections, printed as tables and written to ``build/reports/bench.json``:

1. **Simulators.** One GEMM program (:func:`sim.programs.gemm_program`) on one generated Verilog file, run by the
   fast Verilator harness (:mod:`sim.verilator_backend`, repeated until ``--min-seconds``, in three rounds
   interleaved with the same harness built with the ``BASELINE`` options, best round each), by cocotb on Verilator
   and on Icarus (the host model of :mod:`sim.cocotb_host`, as the testbenches use it) and by Amaranth's own
   simulator on the Amaranth design (:mod:`sim.amaranth_axi`, capped at ``--amaranth-cycles``). Each run's final
   DRAM image is compared byte for byte with the golden result; the speed is every simulated cycle (reset and
   register accesses included) over the seconds the simulation ran (builds, elaboration and process start-up
   excluded), with the ratio to the fast backend.
2. **MNIST.** ``--images`` test images through the RTL on the Verilator backend with ``--workers`` threads
   (:mod:`sw.driver`), checked against the CPU int8 path; images/s, the projected wall time for the 10,000-image
   test set (``projected_from`` says from what), and the share of host Python. Then the speed-up over the baseline
   harness (``mnist.baseline.speedup``): the first program of each layer run again on the ``FAST`` and the
   ``BASELINE`` builds in one thread, three interleaved rounds, the best of each, results compared. Without
   ``--quick`` also one worker on part of the images, for the scaling.
3. **Layers.** Per accelerator layer: MACs, RTL cycles, utilization ``MACs / (cycles * rows * cols)``, the
   SCALE-Sim weight-stationary estimate ``ceil(K/R) * ceil(N/C) * (2R + C + M - 2) - 1`` per program (M = output
   pixels x images, N = filters, K = kh * kw * cin) summed over the batches, the ratio RTL / SCALE-Sim, and
   ``model``: :func:`sim.cycle_model.predict_cycles` of each program's instructions, summed the same way, when
   that module exists (else null; computed after the timed run, so it does not slow the MNIST figures).

The cocotb runs execute :mod:`sim.cocotb_job` (the ``icarus`` backend's job runner) inside the simulator. Their
compiler and simulator output goes to ``build/bench/logs/<simulator>-<rows>x<cols>.log`` (``--verbose`` shows it);
the tables are also drawn into ``bench.png`` beside the JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import importlib.util
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

__all__ = ["BACKENDS", "run_bench", "scalesim_cycles", "main", "DEFAULT_OUT"]

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "build" / "reports" / "bench.json"
BUILD_DIR = ROOT / "build" / "bench"
#: The simulators compared, fastest first; the first is the reference of the ratios. ``verilator-baseline`` is the
#: same harness built with :data:`sim.verilator_backend.BASELINE` (the options before the speed work: fabric PEs,
#: so its Verilog differs from the others' in the PE multipliers only).
BACKENDS = ("verilator", "verilator-baseline", "cocotb-verilator", "cocotb-icarus", "amaranth")
LOG_DIR = ROOT / "build" / "bench" / "logs"
TEST_SET_IMAGES = 10_000


def scalesim_cycles(m: int, k: int, n: int, rows: int, cols: int) -> int:
    """SCALE-Sim's weight-stationary cycles for an (m x k) @ (k x n) GEMM on a rows x cols array:
    ``ceil(K/R) * ceil(N/C) * (2R + C + M - 2) - 1`` (each weight tile: fill R rows, stream M vectors, drain)."""
    for name, value in (("m", m), ("k", k), ("n", n), ("rows", rows), ("cols", cols)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, not {value!r}")
    return -(-k // rows) * -(-n // cols) * (2 * rows + cols + m - 2) - 1


# ---- 1. Simulators ----------------------------------------------------------------------------------------------

def _config(rows: int, cols: int, bus_bytes: int):
    from hw.isa import HardwareConfig
    from sw.driver import DEFAULT_CONFIG

    return HardwareConfig(rows=rows, cols=cols, act_depth=DEFAULT_CONFIG.act_depth,
                          wgt_depth=DEFAULT_CONFIG.wgt_depth, acc_depth=DEFAULT_CONFIG.acc_depth,
                          param_depth=DEFAULT_CONFIG.param_depth, bus_bytes=bus_bytes)


def bench_program(config, shape, *, seed: int = 2024):
    """The GEMM program every simulator runs: random int8 operands, a realistic per-column requantization."""
    from sim.arith import quantize_multiplier
    from sim.programs import gemm_program

    m, k, n = shape
    rng = np.random.default_rng(seed)
    multiplier, shift = quantize_multiplier(1.0 / (np.sqrt(k) * 128 * rng.uniform(0.5, 2.0, n)))
    return gemm_program(rng.integers(-128, 128, (m, k)), rng.integers(-128, 128, (k, n)),
                        rng.integers(-(1 << 14), 1 << 14, n), multiplier, shift, int(rng.integers(-20, 20)), -128,
                        127, config=config)


def _dram_check(final: np.ndarray, program) -> tuple[bool, str | None]:
    expected = program.expected_dram
    if final.shape != expected.shape:
        return False, f"DRAM image of {final.size} bytes, expected {expected.size}"
    where = np.flatnonzero(final != expected)
    if where.size == 0:
        return True, None
    first = int(where[0])
    return False, (f"{where.size} byte(s) differ from the golden result; first at {first:#x}: "
                   f"{int(final[first]):#04x}, expected {int(expected[first]):#04x}")


def _entry(name, *, completed, cycles, program_cycles, wall_s, cpu_s, setup_s, final, program, note=""):
    ok, mismatch = _dram_check(final, program) if completed else (False, "not completed within the cycle budget")
    return {"backend": name, "completed": bool(completed), "cycles": int(cycles),
            "program_cycles": int(program_cycles), "wall_s": round(wall_s, 4), "cpu_s": round(cpu_s, 4),
            "setup_s": round(setup_s, 2), "cycles_per_s": cycles / wall_s if wall_s > 0 else None,
            "cycles_per_cpu_s": cycles / cpu_s if cpu_s > 0 else None, "dram_ok": ok, "first_mismatch": mismatch,
            "note": note}


def run_harnesses(config, program, options: dict, *, min_seconds: float = 2.0, rounds: int = 3) -> dict:
    """The Verilator harness built with each of ``options`` ({entry name: BuildOptions}): the program again and
    again, ``rounds`` rounds interleaving the builds, each round ``min_seconds / rounds`` of simulation per build;
    the best round counts (the machine is shared: the best round is the one least disturbed)."""
    from sim.verilator_backend import VerilatorAccelerator

    accelerators, setup = {}, {}
    for name, opts in options.items():
        t0 = time.perf_counter()
        accelerators[name] = VerilatorAccelerator(config, options=opts)
        setup[name] = time.perf_counter() - t0
    best = {name: None for name in options}
    first, runs = {}, dict.fromkeys(options, 0)
    try:
        for _ in range(rounds):
            for name, accelerator in accelerators.items():
                cycles = wall = cpu = 0
                while wall < min_seconds / rounds or cycles == 0:
                    dram = program.dram.copy()
                    wall0, cpu0 = time.perf_counter(), time.thread_time()
                    result = accelerator.run(dram, program.prog_addr, program.prog_len, max_cycles=10_000_000)
                    wall += time.perf_counter() - wall0
                    cpu += time.thread_time() - cpu0
                    cycles += result.total_cycles
                    runs[name] += 1
                    first.setdefault(name, (dram, result))
                if best[name] is None or cycles / cpu > best[name][0] / best[name][2]:
                    best[name] = (cycles, wall, cpu)
    finally:
        for accelerator in accelerators.values():
            accelerator.close()
    entries = {}
    for name, accelerator in accelerators.items():
        dram, result = first[name]
        cycles, wall, cpu = best[name]
        entry = _entry(name, completed=result.done, cycles=cycles, program_cycles=result.counters["cycles"],
                       wall_s=wall, cpu_s=cpu, setup_s=setup[name], final=dram, program=program,
                       note=f"{options[name].name} build, best of {rounds} interleaved rounds, {runs[name]} runs"
                            + (", built now" if accelerator.build.built else ""))
        entry["verilog_sha256"] = hashlib.sha256(accelerator.build.verilog.read_bytes()).hexdigest()
        entry["verilog_path"] = str(accelerator.build.verilog)
        entries[name] = entry
    return entries


@contextlib.contextmanager
def _output_to(path: Path | None):
    """Send this process's stdout and stderr (file descriptors 1 and 2, so subprocesses too: compilers,
    simulators, cocotb) to ``path``; ``None`` leaves them alone. On an exception the log's tail is printed."""
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    try:
        with open(path, "w") as log:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            try:
                yield
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
    except BaseException:
        tail = path.read_text(errors="replace").splitlines()[-20:]
        print("\n".join(tail) + f"\n(full log: {path})", file=sys.stderr)
        raise
    finally:
        os.close(saved[0])
        os.close(saved[1])


def run_cocotb_backend(simulator: str, verilog: Path, config, program, *, max_cycles: int) -> dict:
    """cocotb (``simulator`` = icarus or verilator) running :mod:`sim.cocotb_job` on ``verilog``; a watchdog
    expiry fails the run (the cocotb log names it)."""
    from sim.cocotb_runner import run_cocotb

    slug = f"{config.rows}x{config.cols}_b{config.bus_bytes}"
    with tempfile.TemporaryDirectory() as tmp:
        job, out = Path(tmp) / "job.npz", Path(tmp) / "result.npz"
        np.savez(job, dram=program.dram, prog_addr=program.prog_addr, prog_len=program.prog_len,
                 max_cycles=max_cycles)
        t0 = time.perf_counter()
        run_cocotb(simulator, verilog=verilog, toplevel="accelerator",
                   test_module=Path(__file__).with_name("cocotb_job.py"),
                   build_dir=BUILD_DIR / f"cocotb_{simulator}" / slug, extra_env={"JOB_FILE": job, "RESULT_FILE": out})
        elapsed = time.perf_counter() - t0
        with np.load(out, allow_pickle=False) as result:
            dram = result["dram"].copy()
            info = json.loads(str(result["info"]))
    return _entry(f"cocotb-{simulator}", completed=True, cycles=info["total_cycles"],
                  program_cycles=info["counters"]["cycles"], wall_s=info["wall_s"], cpu_s=info["cpu_s"],
                  setup_s=elapsed - info["wall_s"], final=dram, program=program)


def run_amaranth(config, program, *, max_cycles: int) -> dict:
    from .amaranth_axi import run_program

    dram = program.dram.copy()
    result = run_program(config, dram, program.prog_addr, program.prog_len, max_cycles=max_cycles)
    note = f"stopped after {result.cycles} cycles" if not result.completed else ""
    if result.protocol_errors:
        note += f" AXI protocol errors: {result.protocol_errors[:3]}"
    return _entry("amaranth", completed=result.completed, cycles=result.total_cycles,
                  program_cycles=result.counters["cycles"], wall_s=result.wall_s, cpu_s=result.cpu_s,
                  setup_s=result.setup_s,
                  final=dram, program=program, note=note.strip())


def bench_simulators(config, shape, backends, *, min_seconds, cocotb_cycles, amaranth_cycles, log,
                     verbose=False) -> dict:
    from hw.generate import generate_accelerator
    from sim.verilator_backend import BASELINE, FAST

    program = bench_program(config, shape)
    harnesses = {name: opts for name, opts in (("verilator", FAST), ("verilator-baseline", BASELINE))
                 if name in backends}
    if harnesses:
        log(f"bench: {', '.join(harnesses)} ...")
        fast_entries = run_harnesses(config, program, harnesses, min_seconds=min_seconds)
    # The other simulators run the Verilog of the default (FAST) harness.
    out_dir = BUILD_DIR / "rtl" / f"{config.rows}x{config.cols}_b{config.bus_bytes}"
    verilog, _ = generate_accelerator(rows=config.rows, cols=config.cols, act_depth=config.act_depth,
                                      wgt_depth=config.wgt_depth, acc_depth=config.acc_depth,
                                      param_depth=config.param_depth, data_width=8 * config.bus_bytes,
                                      dsp_pes=config.rows * config.cols if FAST.dsp_pes else 0, out_dir=out_dir)
    sha = hashlib.sha256(verilog.read_bytes()).hexdigest()
    entries = []
    same_verilog = True
    logs = {}
    for name in backends:
        if name in harnesses:
            entry = fast_entries[name]
            entry.pop("verilog_path")
            if name == "verilator":     # the harness generates its own copy; the other runs use this file
                same_verilog = entry.pop("verilog_sha256") == sha
            else:
                entry.pop("verilog_sha256")
        else:
            path = None if verbose else LOG_DIR / f"{name}-{config.rows}x{config.cols}.log"
            log(f"bench: {name} ..." + (f" (log: {path.relative_to(ROOT)})" if path else ""))
            with _output_to(path):
                if name == "cocotb-verilator":
                    entry = run_cocotb_backend("verilator", verilog, config, program, max_cycles=cocotb_cycles)
                elif name == "cocotb-icarus":
                    entry = run_cocotb_backend("icarus", verilog, config, program, max_cycles=cocotb_cycles)
                elif name == "amaranth":
                    entry = run_amaranth(config, program, max_cycles=amaranth_cycles)
                else:
                    raise ValueError(f"Unknown simulator {name!r}; choose from {', '.join(BACKENDS)}")
            if path:
                logs[name] = str(path)
        entries.append(entry)
    fast = next((e for e in entries if e["backend"] == "verilator"), None)
    for entry in entries:
        for key, ratio in (("cycles_per_s", "ratio"), ("cycles_per_cpu_s", "ratio_cpu")):
            reference, speed = (fast or {}).get(key), entry[key]
            entry[ratio] = speed / reference if reference and speed else None
    m, k, n = shape
    counted = {e["program_cycles"] for e in entries if e["completed"]}
    return {"verilog": {"path": str(verilog), "sha256": sha, "same_for_all": same_verilog}, "logs": logs,
            "program": {"m": m, "k": k, "n": n, "instructions": program.prog_len,
                        "dram_bytes": int(program.dram.size),
                        "cycles": counted.pop() if len(counted) == 1 else None},
            # Every simulator runs the same RTL against the same zero-latency memory: the CYCLES counters agree.
            "cycles_agree": len({e["program_cycles"] for e in entries if e["completed"]}) <= 1,
            "simulators": entries}


# ---- 2./3. MNIST and layers -------------------------------------------------------------------------------------

def _cycle_model():
    """``sim.cycle_model.predict_cycles`` if that module exists, else None."""
    if importlib.util.find_spec("sim.cycle_model") is None:
        return None
    return getattr(importlib.import_module("sim.cycle_model"), "predict_cycles", None)


def harness_speedup(config, programs, *, rounds: int = 3) -> dict:
    """Simulated cycles per CPU-second of the :data:`~sim.verilator_backend.FAST` and
    :data:`~sim.verilator_backend.BASELINE` harnesses on the same ``programs`` (GemmPrograms), in one thread,
    ``rounds`` rounds interleaving the two; the best round of each counts. ``speedup`` = fast / baseline.
    Both runs' final DRAM images and counters must agree (else ValueError)."""
    from sim.verilator_backend import BASELINE, FAST, VerilatorAccelerator

    if not programs:
        raise ValueError("harness_speedup needs at least one program")
    builds = {"fast": FAST, "baseline": BASELINE}
    accelerators = {name: VerilatorAccelerator(config, options=opts) for name, opts in builds.items()}
    best = dict.fromkeys(builds, 0.0)
    finals = {}
    try:
        for _ in range(rounds):
            for name, accelerator in accelerators.items():
                cycles, outputs = 0, []
                cpu0 = time.thread_time()
                for program in programs:
                    dram = program.dram.copy()
                    result = accelerator.run(dram, program.prog_addr, program.prog_len, max_cycles=50_000_000)
                    cycles += result.total_cycles
                    outputs.append((dram, result.counters))
                cpu = time.thread_time() - cpu0
                best[name] = max(best[name], cycles / cpu if cpu > 0 else 0.0)
                finals[name] = outputs
    finally:
        for accelerator in accelerators.values():
            accelerator.close()
    for index, ((fast_dram, fast_counters), (base_dram, base_counters)) in enumerate(zip(finals["fast"],
                                                                                          finals["baseline"])):
        if fast_counters != base_counters or not np.array_equal(fast_dram, base_dram):
            raise ValueError(f"the fast and the baseline harness disagree on program {index}: counters "
                             f"{fast_counters} vs {base_counters}")
    return {"fast_cycles_per_cpu_s": best["fast"], "baseline_cycles_per_cpu_s": best["baseline"],
            "speedup": best["fast"] / best["baseline"] if best["baseline"] else None, "rounds": rounds,
            "programs": len(programs), "fast_options": FAST.describe(), "baseline_options": BASELINE.describe()}


def bench_mnist(config, *, images: int, batch: int, workers: int | None, single_worker_images: int, log,
                speedup_rounds: int = 3) -> dict:
    from sw.driver import Driver
    from sw.mnist import load_mnist
    from sw.mnist_app import INT8_MODEL
    from sw.model_io import load_quantized

    qnet = load_quantized(INT8_MODEL)
    pixels, _ = load_mnist("test")
    pixels = pixels[:images]
    predict = _cycle_model()
    per_layer = {}
    programs = []       # instruction lists for the cycle model, which runs after the timed run
    lock = threading.Lock()

    captured = {}       # the first program of each layer: the speed-up measurement runs them again

    def observe(step, program, counters):
        with lock:
            captured.setdefault(step.name, program)
        m, n = program.c_shape
        k = step.gemm_shape(1)[1]
        estimate = scalesim_cycles(m, k, n, config.rows, config.cols)
        with lock:
            totals = per_layer.setdefault(step.name, {"scalesim": 0, "model": 0.0, "modelled": 0, "programs": 0})
            totals["scalesim"] += estimate
            totals["programs"] += 1
            if predict is not None:     # the model's timing depends on the instructions only, not on the DRAM
                programs.append((step.name, program.program))

    reference = Driver(qnet, backend="cpu", config=config).run(pixels)
    driver = Driver(qnet, backend="verilator", config=config, batch_size=batch, workers=workers)
    log(f"bench: MNIST, {len(pixels)} images on {driver.workers} worker(s) ...")
    t0, cpu0 = time.perf_counter(), time.process_time()
    result = driver.run(pixels, on_program=observe)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    mismatched = np.flatnonzero(np.any(result.logits != reference.logits, axis=1))
    host = sum(layer.host_s for layer in result.layers)
    busy = host + sum(layer.sim_s for layer in result.layers)
    cycles = result.cycles or 0
    report = {"images": len(pixels), "batch": batch, "workers": driver.workers, "wall_s": round(wall, 3),
              "images_per_s": len(pixels) / wall, "cycles_per_image": cycles / len(pixels),
              "sim_cycles_per_s": cycles / wall, "projected_test_set_s": TEST_SET_IMAGES * wall / len(pixels),
              "projected_from": (f"{len(pixels)} images ({-(-len(pixels) // batch)} batches of up to {batch}) on "
                                 f"{driver.workers} worker(s) in {wall:.1f} s, scaled linearly to "
                                 f"{TEST_SET_IMAGES:,} images (build, CPU reference and cycle model excluded)"),
              "host_fraction": host / busy if busy else None,
              # CPU-seconds per second: up to `workers` when every worker had a core of its own.
              "cores_used": cpu / wall, "mismatches": int(mismatched.size),
              "mismatched_images": mismatched[:20].tolist(), "single_worker": None}
    if single_worker_images and driver.workers > 1:
        subset = pixels[:single_worker_images]
        log(f"bench: MNIST, {len(subset)} images on 1 worker ...")
        single = Driver(qnet, backend="verilator", config=config, batch_size=batch, workers=1)
        t0, cpu0 = time.perf_counter(), time.process_time()
        logits = single.run(subset).logits
        seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        report["single_worker"] = {"images": len(subset), "wall_s": round(seconds, 3),
                                   "images_per_s": len(subset) / seconds, "cores_used": cpu / seconds,
                                   "mismatches": int(np.any(logits != reference.logits[:len(subset)], axis=1).sum())}
        report["speedup"] = report["images_per_s"] / report["single_worker"]["images_per_s"]
    log(f"bench: speed-up over the baseline harness ({len(captured)} MNIST programs, interleaved, best of "
        f"{speedup_rounds}) ...")
    report["baseline"] = harness_speedup(config, [captured[name] for name in sorted(captured)],
                                         rounds=speedup_rounds)
    report["baseline"]["projected_test_set_s"] = report["projected_test_set_s"] * report["baseline"]["speedup"]
    errors = []
    for name, instructions in programs:
        try:
            per_layer[name]["model"] += float(predict(instructions, config))
            per_layer[name]["modelled"] += 1
        except Exception as exc:    # a model under construction must not cost the measurements
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
    layers = []
    for stats in result.layers:
        if stats.target != "accelerator":
            continue
        totals = per_layer.get(stats.name, {"scalesim": 0, "model": 0.0, "modelled": 0, "programs": 0})
        model = totals["model"] if predict is not None and totals["modelled"] == totals["programs"] else None
        layers.append({
            "name": stats.name, "macs": stats.macs, "cycles": stats.cycles,
            "utilization": stats.utilization(config), "scalesim_cycles": totals["scalesim"],
            "rtl_over_scalesim": stats.cycles / totals["scalesim"] if stats.cycles and totals["scalesim"] else None,
            "model": model, "host_s": round(stats.host_s, 3), "sim_s": round(stats.sim_s, 3)})
    return {"mnist": report, "layers": layers, "cycle_model": {
        "available": predict is not None, "errors": errors[:10]}}


# ---- Report -----------------------------------------------------------------------------------------------------

def _fmt_ratio(ratio):
    if ratio is None:
        return "-"
    return f"{ratio:.2f}" if ratio >= 0.1 else f"1/{1 / ratio:,.0f}"


def summary(report: dict) -> str:
    c = report["config"]
    m = report["machine"]
    lines = [f"{m['cpus']} CPUs, load average {m['load_before']} before and {m['load_after']} after "
             "(other processes share the cores: compare ratios, not absolute figures)"]
    sims = report.get("simulators")
    if sims:
        p = sims["program"]
        lines.append(f"Simulators on {c['rows']}x{c['cols']} (bus {c['bus_bytes']} bytes), one Verilog "
                     f"(sha256 {sims['verilog']['sha256'][:12]}), one GEMM {p['m']}x{p['k']}x{p['n']} "
                     f"({p['instructions']} instructions, CYCLES "
                     + (f"{p['cycles']:,} on every simulator)" if sims["cycles_agree"] and p["cycles"] is not None
                        else "DIFFERENT: " + ", ".join(f"{e['backend']} {e['program_cycles']}"
                                                       for e in sims["simulators"]) + ")"))
        lines.append(f"  {'simulator':<18}{'cycles':>11}{'sim s':>8}{'cycles/s':>12}{'ratio':>8}"
                     f"{'cycles/CPU-s':>14}{'ratio':>8}  DRAM")
        for e in sims["simulators"]:
            speed = f"{e['cycles_per_s']:,.0f}" if e["cycles_per_s"] else "-"
            cpu_speed = f"{e['cycles_per_cpu_s']:,.0f}" if e["cycles_per_cpu_s"] else "-"
            dram = "ok" if e["dram_ok"] else f"WRONG: {e['first_mismatch']}"
            lines.append(f"  {e['backend']:<18}{e['cycles']:>11,}{e['wall_s']:>8.2f}{speed:>12}"
                         f"{_fmt_ratio(e['ratio']):>8}{cpu_speed:>14}{_fmt_ratio(e['ratio_cpu']):>8}  {dram}"
                         + (f"  ({e['note']})" if e["note"] else ""))
    mnist = report.get("mnist")
    if mnist:
        line = (f"MNIST: {mnist['images']} images, batch {mnist['batch']}, {mnist['workers']} worker(s): "
                f"{mnist['images_per_s']:.1f} images/s, {mnist['cycles_per_image']:,.0f} cycles/image, "
                f"{mnist['sim_cycles_per_s'] / 1e6:.2f} M cycles/s, {mnist['cores_used']:.2f} cores busy")
        lines.append(line)
        single = mnist.get("single_worker")
        if single:
            lines.append(f"  1 worker: {single['images_per_s']:.1f} images/s on {single['images']} images, "
                         f"{single['cores_used']:.2f} cores busy (x{mnist['speedup']:.2f} with {mnist['workers']})")
        lines.append(f"  projected {TEST_SET_IMAGES:,} images: {mnist['projected_test_set_s']:,.0f} s, from "
                     f"{mnist['projected_from']}")
        lines.append(f"  host Python {100 * (mnist['host_fraction'] or 0):.0f}% of the workers' busy time;  "
                     f"mismatches vs CPU int8: {mnist['mismatches']}")
        base = mnist.get("baseline")
        if base:
            lines.append(f"  speed-up over the baseline harness: x{base['speedup']:.2f} (model "
                         f"{base['fast_cycles_per_cpu_s'] / 1e6:.2f} vs {base['baseline_cycles_per_cpu_s'] / 1e6:.2f}"
                         f" M cycles per CPU-second on the same {base['programs']} MNIST programs, one thread, "
                         f"interleaved, best of {base['rounds']}; the baseline would take "
                         f"{base['projected_test_set_s']:,.0f} s for {TEST_SET_IMAGES:,} images)")
            lines.append(f"    fast: {base['fast_options']};  baseline: {base['baseline_options']}")
        lines.append(f"  {'layer':<8}{'MACs':>14}{'cycles':>12}{'util':>8}{'SCALE-Sim':>12}{'RTL/SS':>8}{'model':>12}")
        model_errors = (report.get("cycle_model") or {}).get("errors")
        if model_errors:
            lines.append(f"  sim.cycle_model.predict_cycles failed: {model_errors[0]}")
        for layer in report["layers"]:
            model = f"{layer['model']:,.0f}" if layer["model"] is not None else "-"
            ratio = f"{layer['rtl_over_scalesim']:.2f}" if layer["rtl_over_scalesim"] else "-"
            lines.append(f"  {layer['name']:<8}{layer['macs']:>14,}{layer['cycles'] or 0:>12,}"
                         f"{100 * (layer['utilization'] or 0):>7.1f}%{layer['scalesim_cycles']:>12,}{ratio:>8}"
                         f"{model:>12}")
    return "\n".join(lines)


def run_bench(*, rows=8, cols=8, bus_bytes=8, images=256, batch=32, workers=None, quick=False,
              backends=BACKENDS, gemm=None, min_seconds=None, cocotb_cycles=200_000, amaranth_cycles=None,
              mnist=True, out=DEFAULT_OUT, log=None, verbose=False, plot=True) -> dict:
    """Run the bench and write ``out`` (JSON); returns the report (see the module docstring)."""
    log = log or (lambda text: print(text, file=sys.stderr, flush=True))
    config = _config(rows, cols, bus_bytes)
    for name in backends:
        if name not in BACKENDS:
            raise ValueError(f"Unknown simulator {name!r}; choose from {', '.join(BACKENDS)}")
    gemm = tuple(gemm) if gemm else ((2 * cols, 2 * rows, cols) if quick else (8 * cols, 8 * rows, 4 * cols))
    min_seconds = min_seconds if min_seconds is not None else (0.3 if quick else 2.0)
    amaranth_cycles = amaranth_cycles if amaranth_cycles is not None else (20_000 if quick else 100_000)
    from .verilator_backend import OPTIONS

    report = {"version": 1, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "platform": platform.platform(), "load_before": _load_average()},
              "config": {"rows": rows, "cols": cols, "bus_bytes": bus_bytes, "act_depth": config.act_depth,
                         "wgt_depth": config.wgt_depth, "acc_depth": config.acc_depth,
                         "param_depth": config.param_depth},
              "quick": bool(quick),
              "verilator_build": {name: {"verilator": list(o.verilator_flags), "make": list(o.make_flags),
                                         "cxx": list(o.cxx_flags), "dsp_pes": o.dsp_pes, "pgo": o.pgo}
                                  for name, o in OPTIONS.items()},
              "simulators": None, "mnist": None, "layers": [], "cycle_model": None}
    if backends:
        report["simulators"] = bench_simulators(config, gemm, backends, min_seconds=min_seconds,
                                                cocotb_cycles=cocotb_cycles, amaranth_cycles=amaranth_cycles,
                                                log=log, verbose=verbose)
    if mnist and images > 0:
        single = 0 if quick else max(batch, images // 4)
        report.update(bench_mnist(config, images=images, batch=batch, workers=workers,
                                  single_worker_images=single, log=log, speedup_rounds=1 if quick else 3))
    report["machine"]["load_after"] = _load_average()
    if out:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        report["plot"] = str(out.with_suffix(".png")) if plot else None
        out.write_text(json.dumps(report, indent=2) + "\n")
        if plot:
            plot_report(report, out.with_suffix(".png"))
    return report


def plot_report(report: dict, path: Path) -> Path:
    """The bench's tables as one PNG: simulated cycles/s of each simulator (log scale, ratio to the fast harness
    on each bar) and, with the MNIST section, cycles per layer from the RTL, SCALE-Sim and the cycle model."""
    try:
        import matplotlib
    except ImportError as exc:
        raise ImportError("the bench's plot needs matplotlib: pip install -e .[plot] (or pass --no-plot)") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sims = [e for e in (report.get("simulators") or {}).get("simulators", []) if e["cycles_per_cpu_s"]]
    layers = report.get("layers") or []
    panels = [p for p in ("sims", "layers") if (p == "sims" and sims) or (p == "layers" and layers)]
    fig, axes = plt.subplots(1, max(len(panels), 1), figsize=(6.5 * max(len(panels), 1), 4.5), squeeze=False)
    c = report["config"]
    for ax, panel in zip(axes[0], panels):
        if panel == "sims":
            speeds = [e["cycles_per_cpu_s"] for e in sims]
            bars = ax.bar(range(len(sims)), speeds, color=["tab:green" if e["backend"] == "verilator" else
                                                             "tab:blue" for e in sims])
            ax.set_yscale("log")
            for bar, e in zip(bars, sims):
                ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height(),
                        f"{e['cycles_per_cpu_s']:,.0f}\n({_fmt_ratio(e['ratio_cpu'])})", ha="center",
                        va="bottom", fontsize=8)
            ax.set_xticks(range(len(sims)), [e["backend"] for e in sims], rotation=15, fontsize=8)
            ax.set_ylabel("simulated cycles per CPU-second (log)")
            ax.set_ylim(top=max(speeds) * 8)
            ax.set_title(f"Simulators, {c['rows']}x{c['cols']}: one GEMM program (ratio to verilator)", fontsize=9)
        else:
            x = np.arange(len(layers))
            series = [("RTL", [l["cycles"] or 0 for l in layers]),
                      ("SCALE-Sim closed form", [l["scalesim_cycles"] for l in layers]),
                      ("exact cycle model", [l["model"] or 0 for l in layers])]
            for i, (label, values) in enumerate(series):
                ax.bar(x + (i - 1) * 0.27, values, 0.27, label=label)
            for i, layer in enumerate(layers):
                ax.text(i - 0.27, layer["cycles"] or 0, f"{100 * (layer['utilization'] or 0):.1f}%\nutil.",
                        ha="center", va="bottom", fontsize=7)
            ax.set_yscale("log")
            ax.set_xticks(x, [l["name"] for l in layers])
            ax.set_ylabel("cycles over the run's images (log)")
            ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))
            mnist = report["mnist"]
            ax.set_title(f"MNIST layers, {mnist['images']} images: {mnist['images_per_s']:.1f} images/s, "
                         + (f"x{mnist['baseline']['speedup']:.2f} over the baseline harness"
                            if (mnist.get("baseline") or {}).get("speedup") else ""), fontsize=9)
            ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _load_average():
    """The 1-minute load average (other processes compete for the cores), or None where unknown."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _shape(text: str) -> tuple[int, int, int]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or min(values) < 1:
        raise argparse.ArgumentTypeError(f"--gemm takes M,K,N (three positive integers), not {text!r}")
    return values


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sim.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--cols", type=int, default=8)
    parser.add_argument("--bus-bytes", type=int, default=8, choices=(4, 8, 16))
    parser.add_argument("--images", type=int, default=None, help="MNIST images (default 256, --quick 16)")
    parser.add_argument("--batch", type=int, default=None, help="images per accelerator run (default 32, --quick 8)")
    parser.add_argument("--workers", "--jobs", "-j", dest="workers", type=int, default=None,
                        help="MNIST batches simulated at once (default: one per core)")
    parser.add_argument("--quick", action="store_true", help="tiny budgets: a check that everything runs")
    parser.add_argument("--backends", default=",".join(BACKENDS),
                        help=f"simulators to compare, comma-separated (default {','.join(BACKENDS)}; '' for none)")
    parser.add_argument("--gemm", type=_shape, default=None, help="M,K,N of the simulators' program")
    parser.add_argument("--min-seconds", type=float, default=None, help="simulation time of the fast backend")
    parser.add_argument("--amaranth-cycles", type=int, default=None, help="cycle budget of the Amaranth run")
    parser.add_argument("--no-mnist", action="store_true", help="skip the MNIST and layer sections")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--no-plot", action="store_true", help="do not draw the PNG beside the JSON")
    parser.add_argument("--verbose", "-v", action="store_true",
                        help=f"show the simulators' build and run output (default: logs in {LOG_DIR.relative_to(ROOT)})")
    args = parser.parse_args(argv)
    for name in ("rows", "cols", "images", "batch", "workers", "amaranth_cycles"):
        value = getattr(args, name)
        if value is not None and value < (0 if name == "images" else 1):
            parser.error(f"--{name.replace('_', '-')} must be a positive integer, not {value}")
    backends = tuple(b for b in args.backends.split(",") if b)
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        parser.error(f"unknown simulator(s) {', '.join(unknown)}; choose from {', '.join(BACKENDS)}")
    report = run_bench(rows=args.rows, cols=args.cols, bus_bytes=args.bus_bytes,
                       images=args.images if args.images is not None else (16 if args.quick else 256),
                       batch=args.batch or (8 if args.quick else 32), workers=args.workers, quick=args.quick,
                       backends=backends, gemm=args.gemm, min_seconds=args.min_seconds,
                       amaranth_cycles=args.amaranth_cycles, mnist=not args.no_mnist, out=args.out,
                       verbose=args.verbose, plot=not args.no_plot)
    print(summary(report))
    print(f"wrote {args.out}" + (f" and {report['plot']}" if report.get("plot") else ""))
    logs = (report.get("simulators") or {}).get("logs")
    if logs:
        print(f"simulator logs: {', '.join(logs.values())}")
    sims = report["simulators"] or {}
    wrong = [e["backend"] for e in sims.get("simulators", []) if e["completed"] and not e["dram_ok"]]
    mnist = report["mnist"] or {}
    if wrong or mnist.get("mismatches") or (mnist.get("single_worker") or {}).get("mismatches"):
        print(f"error: wrong results from {', '.join(wrong) or 'the MNIST run'}", file=sys.stderr)
        return 1
    if sims and not sims["verilog"]["same_for_all"]:
        print("error: the Verilator harness was built from other Verilog than the cocotb runs", file=sys.stderr)
        return 1
    if not sims.get("cycles_agree", True):
        print("error: the simulators disagree on the program's CYCLES counter (see the table)", file=sys.stderr)
        return 1
    return 0


# ---- cocotb entry point -----------------------------------------------------------------------------------------
if __name__ == "__main__":
    sys.exit(main())
