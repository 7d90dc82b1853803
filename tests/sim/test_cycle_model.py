"""The cycle model (sim/cycle_model.py) against the RTL: every counter register (CYCLES, the three busy counters,
VECTORS, INSTRUCTIONS) of the Verilator backend with its default memory model, cycle for cycle - over 1000 random
GEMM programs (random shapes and tilings) on three configurations (2x2 with a 4-byte bus, 4x4, the default 8x8),
random well-formed instruction streams, directed programs and the four MNIST layers at batch 32."""

import dataclasses
import time

import numpy as np
import pytest

from hw.isa import Buffer, HardwareConfig, Halt, Load, Matmul, Store, Sync, Unit, to_bytes
from sim.cycle_model import predict, predict_cycles
from sim.fuzz import random_stream
from sim.programs import gemm_program, plan_tiling
from sim.verilator_backend import COUNTERS, VerilatorAccelerator

CONFIGS = {
    # 4-byte bus (4 beats per instruction, PARAM rows of 6-7 words), 2-row K tiles, 2 PARAM entries for many N tiles.
    "2x2": HardwareConfig(rows=2, cols=2, act_depth=32, wgt_depth=8, acc_depth=16, param_depth=2, bus_bytes=4),
    # The configuration of tests/sim/test_verilator_backend.py (one build for both).
    "4x4": HardwareConfig(rows=4, cols=4, act_depth=64, wgt_depth=64, acc_depth=32, param_depth=8),
    "8x8": HardwareConfig(),
}
#: (largest M/K/N, programs per test case, test cases) per configuration: 1040 random GEMMs in all.
GEMM_PLAN = {"2x2": (24, 100, 4), "4x4": (40, 100, 4), "8x8": (72, 60, 4)}
MNIST_LAYERS = {"conv1": (21632, 9, 32), "conv2": (3872, 288, 64), "dense1": (32, 1600, 512), "dense2": (32, 512, 10)}

_accelerators = {}


def accelerator(name):
    """One Verilator model per configuration and test process (the builds are cached on disk)."""
    if name not in _accelerators:
        _accelerators[name] = VerilatorAccelerator(CONFIGS[name])
    return _accelerators[name]


def rtl_counters(name, dram, prog_addr, prog_len, context):
    result = accelerator(name).run(dram, prog_addr, prog_len, max_cycles=20_000_000)
    assert result.ok, f"{context}: the RTL run failed: {result}"
    return result.counters


class Tally:
    """Model-versus-RTL comparisons of one test: the error distribution and the first mismatch."""

    def __init__(self, what):
        self.what, self.cases, self.errors, self.first = what, 0, [], None

    def add(self, context, rtl, model):
        self.cases += 1
        if model != rtl:
            self.errors.append(model["cycles"] - rtl["cycles"])
            if self.first is None:
                diff = {k: (rtl[k], model[k]) for k in COUNTERS if rtl[k] != model[k]}
                self.first = f"{context}: (RTL, model) {diff}"

    def check(self):
        if self.errors:
            worst = max(self.errors, key=abs)
            raise AssertionError(f"{self.what}: {self.cases - len(self.errors)} of {self.cases} programs exact; "
                                 f"CYCLES error (model - RTL) up to {worst:+d}; first mismatch: {self.first}")


def _depth(rng, limit):
    """A buffer depth from 1 to ``limit``, log-uniform (shallow buffers as often as deep ones)."""
    return int(np.exp(rng.uniform(0, np.log(limit + 1))))


def random_gemm(rng, config, max_dim):
    """A random GEMM program for ``config``'s array and bus, tiled for random buffer depths up to ``config``'s.

    Timing depends on the array size and the bus, not on the depths (they only bound the addresses a program
    uses), so programs planned for shallower buffers run on the built hardware and vary the tiling: chunk rows,
    K groups, single or double buffering, more N tiles than PARAM entries.
    """
    while True:
        plan = dataclasses.replace(config, act_depth=_depth(rng, config.act_depth),
                                   wgt_depth=_depth(rng, config.wgt_depth), acc_depth=_depth(rng, config.acc_depth),
                                   param_depth=_depth(rng, config.param_depth))
        m, k, n = (int(rng.integers(1, max_dim + 1)) for _ in range(3))
        t = plan_tiling(m, k, n, plan)
        if t.m_chunks * t.k_tiles * t.n_tiles <= 250:    # MATMULs: keep each program short
            break
    raw = bool(rng.random() < 0.3)
    program = gemm_program(rng.integers(-128, 128, (m, k)), rng.integers(-128, 128, (k, n)),
                           rng.integers(-1000, 1000, n), 1 << 30, -8, int(rng.integers(-5, 5)), raw=raw,
                           config=plan, rng=rng, with_expected=False)
    depths = f"act {plan.act_depth} wgt {plan.wgt_depth} acc {plan.acc_depth} param {plan.param_depth}"
    return program, f"M={m} K={k} N={n} raw={raw}, planned for {depths}: {program.tiling}"


@pytest.mark.parametrize("name,chunk", [(name, chunk) for name, plan in GEMM_PLAN.items() for chunk in range(plan[2])])
def test_random_gemms_match_rtl_exactly(name, chunk):
    """Random shapes, tilings, epilogue modes and DRAM placements (so row alignments vary) of
    sim.programs.gemm_program."""
    config = CONFIGS[name]
    max_dim, count, _ = GEMM_PLAN[name]
    seed = 7000 + 100 * list(CONFIGS).index(name) + chunk
    rng = np.random.default_rng(seed)
    tally = Tally(f"{name} random GEMMs, seed {seed}")
    for case in range(count):
        program, shape = random_gemm(rng, config, max_dim)
        context = f"seed {seed} case {case} ({shape})"
        rtl = rtl_counters(name, program.dram.copy(), program.prog_addr, program.prog_len, context)
        tally.add(context, rtl, predict(program.program, config))
    tally.check()


def random_program(rng, config, length):
    """A random instruction stream the dispatcher accepts, races allowed (they change data, never timing): the
    fuzzer's generator (one source), ``sim.fuzz.random_stream``."""
    return random_stream(rng, config, length)


@pytest.mark.parametrize("name", CONFIGS)
def test_random_instruction_streams_match_rtl_exactly(name):
    """Programs no compiler writes: SYNCs, token waits across all four queues, odd strides and alignments,
    PARAM loads, raw and int8 stores of any width."""
    config = CONFIGS[name]
    seed = 8000 + list(CONFIGS).index(name)
    rng = np.random.default_rng(seed)
    tally = Tally(f"{name} random instruction streams, seed {seed}")
    for case in range(60):
        program = random_program(rng, config, int(rng.integers(1, 50)))
        dram = rng.integers(0, 256, 1 << 16, dtype=np.uint8)
        prog_addr = 16 * int(rng.integers(0, 0x3000 // 16))
        dram[prog_addr:prog_addr + 16 * len(program)] = np.frombuffer(to_bytes(program), dtype=np.uint8)
        context = f"seed {seed} case {case} ({len(program)} instructions)"
        rtl = rtl_counters(name, dram, prog_addr, len(program), context)
        tally.add(context, rtl, predict(program, config))
    tally.check()


def _directed():
    """Small programs that isolate one mechanism each (name, program) on the 4x4 configuration."""
    push = dict(push_next=True)
    cases = {"halt only": []}
    for rows in (1, 2, 7, 30):
        cases[f"lone LOAD of {rows} rows"] = [Load(buffer=Buffer.ACT, y_size=rows, x_size=4, stride=4,
                                                   dram_addr=0x2000)]
        cases[f"lone misaligned LOAD of {rows} rows"] = [Load(buffer=Buffer.WGT, y_size=rows, x_size=3, stride=5,
                                                              dram_addr=0x2007)]
    cases["PARAM LOAD"] = [Load(buffer=Buffer.PARAM, y_size=3, x_size=39, stride=39, dram_addr=0x2001)]
    for count in (1, 5, 16):
        cases[f"lone MATMUL of {count}"] = [Matmul(count=count, k_rows=4)]
        cases[f"lone STORE of {count} int8 rows"] = [Store(count=count, n_cols=4, stride=4, dram_addr=0x2000)]
        cases[f"lone STORE of {count} raw misaligned rows"] = [Store(count=count, n_cols=3, raw=True, stride=13,
                                                                     dram_addr=0x2FF3)]
    for count in (1, 8, 20, 32):
        cases[f"back-to-back MATMULs of {count}"] = [Matmul(count=count, k_rows=4, acc_addr=0)] * 6
    cases["SYNC chain through all units"] = [Sync(unit=Unit.LOAD, **push), Sync(unit=Unit.COMPUTE, pop_prev=True,
                                             **push), Sync(unit=Unit.STORE, pop_prev=True, push_prev=True),
                                             Sync(unit=Unit.COMPUTE, pop_next=True, push_prev=True),
                                             Sync(unit=Unit.LOAD, pop_next=True)] * 3
    cases["LOAD -> MATMUL -> STORE"] = [Load(y_size=16, x_size=4, stride=4, dram_addr=0x2000, **push),
                                        Matmul(count=16, k_rows=4, pop_prev=True, **push),
                                        Store(count=16, n_cols=4, stride=4, dram_addr=0x3000, pop_prev=True)]
    cases["SYNC waits for a MATMUL"] = [Matmul(count=20, k_rows=4), Sync(unit=Unit.COMPUTE, push_next=True),
                                        Store(count=2, n_cols=1, stride=1, dram_addr=0x3000, pop_prev=True)]
    cases["unit queue full"] = [Matmul(count=30, k_rows=4)] * 12 + [Load(y_size=1, x_size=1)]
    cases["LOADs compete with fetch"] = [Load(y_size=1, x_size=4 - i % 4, stride=1, dram_addr=0x2000 + i)
                                         for i in range(40)]
    return {name: program + [Halt()] for name, program in cases.items()}


DIRECTED = _directed()


@pytest.mark.parametrize("case", DIRECTED)
def test_directed_programs_match_rtl_exactly(case):
    program = DIRECTED[case]
    dram = np.zeros(1 << 14, dtype=np.uint8)
    dram[:16 * len(program)] = np.frombuffer(to_bytes(program), dtype=np.uint8)
    rtl = rtl_counters("4x4", dram, 0, len(program), case)
    model = predict(program, CONFIGS["4x4"])
    assert model == {k: rtl[k] for k in COUNTERS}, f"{case}: RTL {rtl}, model {model}"


@pytest.mark.parametrize("layer", MNIST_LAYERS)
def test_mnist_layers_batch_32_match_rtl_exactly(layer):
    """The GEMMs of the MNIST CNN for a batch of 32 images on the default 8x8 accelerator."""
    m, k, n = MNIST_LAYERS[layer]
    seed = 9000 + list(MNIST_LAYERS).index(layer)
    rng = np.random.default_rng(seed)
    config = CONFIGS["8x8"]
    program = gemm_program(rng.integers(-128, 128, (m, k)), rng.integers(-128, 128, (k, n)),
                           rng.integers(-1000, 1000, n), 1 << 30, -9, config=config, with_expected=False)
    start = time.perf_counter()
    model = predict(program.program, config)
    seconds = time.perf_counter() - start
    rtl = rtl_counters("8x8", program.dram.copy(), program.prog_addr, program.prog_len, layer)
    assert model == {k: rtl[k] for k in COUNTERS}, f"{layer} (M={m} K={k} N={n}, seed {seed}): RTL {rtl}, model {model}"
    # A generous bound: the model is an event simulation, about a second for conv2's 1.1M cycles.
    assert seconds < 30, f"{layer}: the model took {seconds:.1f} s for {rtl['cycles']} cycles"
    assert predict_cycles(program.program, config) == rtl["cycles"]


@pytest.mark.parametrize("program,config,error,match", [
    ([Load()], HardwareConfig(), ValueError, "must end with a HALT"),
    ([], HardwareConfig(), ValueError, "must end with a HALT"),
    ([Halt(), Halt()], HardwareConfig(), ValueError, "instruction 0 is a HALT before the end"),
    ([Load(pop_next=True), Halt()], HardwareConfig(), ValueError, "COMPUTE->LOAD token .* TOKEN_DEADLOCK"),
    ([Sync(unit=Unit.STORE, push_prev=True)] * 256 + [Halt()], HardwareConfig(), ValueError,
     "instruction 255 pushes .* TOKEN_OVERFLOW"),
    ([Matmul(count=4, k_rows=9), Halt()], HardwareConfig(), ValueError, "instruction 0 is OUT_OF_RANGE"),
    ([Load(pop_prev=True), Halt()], HardwareConfig(), ValueError, "instruction 0 is illegal"),
    ([b"\x01" * 16, Halt()], HardwareConfig(), TypeError, "not a hw.isa instruction .* hw.isa.decode"),
    ([Halt()], {"rows": 8}, TypeError, "config must be a hw.isa.HardwareConfig"),
    ([Halt()], HardwareConfig(bus_bytes=2), ValueError, r"bus_bytes must be 4, 8 or 16 .*not 2"),
])
def test_bad_input_is_refused(program, config, error, match):
    with pytest.raises(error, match=match):
        predict(program, config)


@pytest.mark.parametrize("field", ["drain", "epilogue", "read_latency"])
def test_an_off_by_one_model_is_caught(monkeypatch, field):
    """The comparisons are not vacuous: one latency of the model off by one cycle breaks them."""
    import sim.cycle_model as cycle_model

    config = CONFIGS["4x4"]
    rng = np.random.default_rng(9100)
    program, shape = random_gemm(rng, config, 24)
    rtl = rtl_counters("4x4", program.dram.copy(), program.prog_addr, program.prog_len, shape)
    right = cycle_model._timing(config)
    monkeypatch.setattr(cycle_model, "_timing",
                        lambda c: dataclasses.replace(right, **{field: getattr(right, field) + 1}))
    tally = Tally(f"{field} + 1")
    tally.add(f"seed 9100 ({shape})", rtl, predict(program.program, config))
    with pytest.raises(AssertionError, match=r"0 of 1 programs exact; CYCLES error .* first mismatch: seed 9100"):
        tally.check()
