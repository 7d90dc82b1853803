"""GemmEngine in the Amaranth simulator: tiled GEMMs against the golden engine, latency formulas, validation.

The long randomised runs on generated Verilog are in test_gemm_engine_cocotb.py (Icarus and Verilator).
"""

import numpy as np
import pytest

from hw.gemm_engine import GemmEngine, store_command_layout
from sim.amaranth_helpers import Throttle, reset_registers, run_simulation, stream_get, stream_put
from sim.arith import INT32_MAX, INT32_MIN
from sim.engine_ref import MatmulOp, StoreOp, check_plan, pack_params, ref_engine


def rtl_engine(ops, *, rows, cols, acc_depth, seed=0, prob=1.0, dsp_pes=0, pe_multiplier="fabric", out_throttle=None,
               deadline=None):
    """Run the command list on the RTL with the dependency rules of the engine; returns the STORE output rows.

    ``out_throttle`` (an object with ``next()``) replaces the random ready pattern of the ``out`` stream."""
    dut = GemmEngine(rows=rows, cols=cols, acc_depth=acc_depth, dsp_pes=dsp_pes, pe_multiplier=pe_multiplier)
    st_layout = store_command_layout(acc_depth, cols)
    matmuls = [op for op in ops if isinstance(op, MatmulOp)]
    stores = [op for op in ops if isinstance(op, StoreOp)]
    # Matmuls a store depends on: all before it in program order.
    needs_done = [sum(isinstance(o, MatmulOp) for o in ops[:ops.index(s)]) for s in stores]
    outputs = [[] for _ in stores]
    state = {"done": 0, "stored": 0}

    async def monitor(ctx):
        async for _, _, done in ctx.tick().sample(dut.mm_done):
            state["done"] += done

    async def mm_driver(ctx):
        for i, op in enumerate(matmuls):
            # A matmul may overwrite its accumulator half only once the store two chunks back has drained it.
            earlier_stores = [j for j, s in enumerate(stores) if ops.index(s) < ops.index(op) and s.region == op.region]
            while earlier_stores and state["stored"] <= earlier_stores[-1]:
                await ctx.tick()
            await stream_put(ctx, dut.mm_cmd, {"acc_addr": op.acc_addr, "count": op.count,
                                               "accumulate": int(op.accumulate)}, Throttle(prob, seed + 1))

    async def weight_driver(ctx):
        throttle = Throttle(prob, seed + 2)
        for op in matmuls:
            for r in range(rows):
                await stream_put(ctx, dut.weights, [int(v) for v in op.weights[r]], throttle)

    async def act_driver(ctx):
        throttle = Throttle(prob, seed + 3)
        for op in matmuls:
            for vec in op.act:
                await stream_put(ctx, dut.act, [int(v) for v in vec], throttle)

    async def st_driver(ctx):
        throttle = Throttle(prob, seed + 4)
        for j, op in enumerate(stores):
            while state["done"] < needs_done[j]:
                await ctx.tick()
            await stream_put(ctx, dut.st_cmd, st_layout.const({"acc_addr": op.acc_addr, "count": op.count,
                                                                "params": op.params}), throttle)

    async def out_collector(ctx):
        throttle = out_throttle or Throttle(prob, seed + 5)
        for j, op in enumerate(stores):
            for _ in range(op.count):
                row = await stream_get(ctx, dut.out, throttle)
                outputs[j].append([int(v) for v in row])
            state["stored"] = j + 1

    sim_cycles = 200 + sum(op.count + rows * 3 for op in ops) * (4 if prob < 1 else 1) * (40 if out_throttle else 1)
    run_simulation(dut, mm_driver, weight_driver, act_driver, st_driver, out_collector,
                   background=[monitor], deadline_cycles=deadline or sim_cycles)
    return [np.array(o, dtype=np.int64).reshape(-1, cols) for o in outputs]


CASES = [
    # rows, cols, acc_depth, M, K, N, raw, prob, seed, dsp_pes (PEs with the DSP multiplier, row-major),
    # pe_multiplier (the other PEs')
    (1, 1, 8, 3, 2, 2, False, 1.0, 1, 0, "fabric"),
    (2, 3, 16, 7, 5, 4, False, 0.6, 2, 0, "fabric"),
    (3, 2, 16, 9, 7, 5, True, 0.6, 3, 0, "fabric"),
    (4, 4, 32, 20, 9, 6, False, 1.0, 4, 0, "fabric"),
    (4, 4, 32, 20, 9, 6, False, 0.6, 5, 9, "fabric"),
    (4, 4, 32, 20, 9, 6, False, 0.6, 6, 5, "carry"),
]


@pytest.mark.parametrize("rows,cols,acc_depth,m,k,n,raw,prob,seed,dsp_pes,pe_multiplier", CASES)
def test_engine_random_gemm(rows, cols, acc_depth, m, k, n, raw, prob, seed, dsp_pes, pe_multiplier):
    rng = np.random.default_rng(seed)
    a = rng.integers(-128, 128, size=(m, k), dtype=np.int64)
    w = rng.integers(-128, 128, size=(k, n), dtype=np.int64)
    bias = rng.integers(INT32_MIN, INT32_MAX, size=n, endpoint=True)
    mult = rng.integers(INT32_MIN, INT32_MAX, size=n, endpoint=True)
    shift = rng.integers(-31, 32, size=n)
    zp = int(rng.integers(-128, 128))
    lo, hi = sorted(int(v) for v in rng.integers(-128, 128, size=2))
    ops, golden, direct = check_plan(a, w, bias, mult, shift, zp, lo, hi, raw, rows=rows, cols=cols,
                                     acc_depth=acc_depth)
    np.testing.assert_array_equal(golden, direct)  # the schedule itself is right
    want = ref_engine(ops, rows=rows, cols=cols, acc_depth=acc_depth)
    got = rtl_engine(ops, rows=rows, cols=cols, acc_depth=acc_depth, seed=seed, prob=prob, dsp_pes=dsp_pes,
                     pe_multiplier=pe_multiplier)
    assert len(got) == len(want)
    for j, (g, w_) in enumerate(zip(got, want)):
        assert g.shape == w_.shape, f"seed {seed}: store {j} shape {g.shape} want {w_.shape}"
        bad = np.argwhere(g != w_)
        assert bad.size == 0, (f"seed {seed} ({dsp_pes} DSP PEs, {pe_multiplier}): store {j} first mismatch at row {bad[0][0]} col {bad[0][1]}: "
                               f"got {g[tuple(bad[0])]} want {w_[tuple(bad[0])]}")


@pytest.mark.parametrize("rows", [1, 3, 4])
def test_engine_extreme_column_sums(rows):
    """The array's partial sums are only ``psum_width`` bits: the largest column sums (every product +2**14, or
    every product -128 * 127) must be exact, and sign-extend correctly into the accumulator over 40 K tiles."""
    cols, acc_depth = 2, 8
    engine = GemmEngine(rows=rows, cols=cols, acc_depth=acc_depth)
    assert engine.psum_width == 16 + (rows - 1).bit_length()
    weights = np.array([[-128, 127]] * rows)
    act = np.full((3, rows), -128)
    ops = [MatmulOp(acc_addr=0, count=3, accumulate=t > 0, weights=weights, act=act, region=0) for t in range(40)]
    raw = pack_params(cols, 0, 0, 0, 0, -128, 127, True)
    ops.append(StoreOp(acc_addr=0, count=3, params=raw, dest=(0, 0, 3, cols), region=0))
    want, = ref_engine(ops, rows=rows, cols=cols, acc_depth=acc_depth)
    assert want[0, 0] == 40 * rows * 2 ** 14 and want[0, 1] == -40 * rows * 128 * 127
    got, = rtl_engine(ops, rows=rows, cols=cols, acc_depth=acc_depth)
    bad = np.argwhere(got != want)
    assert bad.size == 0, (f"rows {rows}: first mismatch at row {bad[0][0]} col {bad[0][1]}: "
                           f"got {got[tuple(bad[0])]} want {want[tuple(bad[0])]}")


@pytest.mark.parametrize("offset", [1, 2])
def test_engine_accumulates_rows_written_just_before(offset):
    """Back-to-back MATMULs where each starts ``offset`` rows before the previous one's end, accumulating: a row is
    read while its previous value is still in the read-modify-write pipeline (1 or 2 cycles earlier) and must be
    forwarded."""
    rows, cols, acc_depth, seed = 2, 3, 32, 40 + offset
    rng = np.random.default_rng(seed)
    count = GemmEngine(rows=rows, cols=cols, acc_depth=acc_depth).min_overlapped_count  # streams back to back
    ops, addr = [], 0
    for t in range(5):
        ops.append(MatmulOp(acc_addr=addr, count=count, accumulate=t > 0,
                            weights=rng.integers(-128, 128, size=(rows, cols)),
                            act=rng.integers(-128, 128, size=(count, rows)), region=0))
        addr += count - offset
    total = addr + offset
    ops.append(StoreOp(acc_addr=0, count=total, params=pack_params(cols, 0, 0, 0, 0, -128, 127, True),
                       dest=(0, 0, total, cols), region=0))
    want, = ref_engine(ops, rows=rows, cols=cols, acc_depth=acc_depth)
    got, = rtl_engine(ops, rows=rows, cols=cols, acc_depth=acc_depth, seed=seed)
    bad = np.argwhere(got != want)
    assert bad.size == 0, (f"seed {seed}: first mismatch at row {bad[0][0]} col {bad[0][1]}: "
                           f"got {got[tuple(bad[0])]} want {want[tuple(bad[0])]}")


def _compare(seed, got, want):
    bad = np.argwhere(got != want)
    assert bad.size == 0, (f"seed {seed}: first mismatch at row {bad[0][0]} col {bad[0][1]}: "
                           f"got {got[tuple(bad[0])]} want {want[tuple(bad[0])]}")


@pytest.mark.parametrize("offset", [1, 2])
def test_engine_overwrites_rows_written_just_before(offset):
    """Back-to-back MATMULs where each starts ``offset`` rows before the previous one's end and some *overwrite*:
    the row written one or two cycles earlier is still in the read-modify-write pipeline, and an overwrite must
    not take it (forwarding is for accumulating rows only). A program can do this: a MATMUL that recomputes the
    last rows of the previous one."""
    rows, cols, acc_depth, seed = 2, 3, 32, 50 + offset
    rng = np.random.default_rng(seed)
    count = GemmEngine(rows=rows, cols=cols, acc_depth=acc_depth).min_overlapped_count  # streams back to back
    ops, addr = [], 0
    for t, accumulate in enumerate([False, False, True, False, True, False]):
        ops.append(MatmulOp(acc_addr=addr, count=count, accumulate=accumulate,
                            weights=rng.integers(-128, 128, size=(rows, cols)),
                            act=rng.integers(-128, 128, size=(count, rows)), region=0))
        addr += count - offset
    total = addr + offset
    ops.append(StoreOp(acc_addr=0, count=total, params=pack_params(cols, 0, 0, 0, 0, -128, 127, True),
                       dest=(0, 0, total, cols), region=0))
    want, = ref_engine(ops, rows=rows, cols=cols, acc_depth=acc_depth)
    got, = rtl_engine(ops, rows=rows, cols=cols, acc_depth=acc_depth, seed=seed)
    _compare(seed, got, want)


@pytest.mark.parametrize("rows,acc_depth,seed", [(1, 2, 61), (1, 4, 62), (2, 2, 63), (3, 4, 64), (2, 8, 65)])
def test_engine_short_matmuls_on_few_rows(rows, acc_depth, seed):
    """Many short MATMULs (1 to acc_depth vectors, addresses wrapping around a tiny accumulator) with random accumulate
    bits, unthrottled: every forwarding case of the read-modify-write pipeline against the golden engine."""
    cols = 2
    rng = np.random.default_rng(seed)
    ops = []
    for _ in range(40):
        count = int(rng.integers(1, acc_depth + 1))    # a MATMUL writes each of its rows once
        ops.append(MatmulOp(acc_addr=int(rng.integers(acc_depth)), count=count, accumulate=bool(rng.integers(2)),
                            weights=rng.integers(-128, 128, size=(rows, cols)),
                            act=rng.integers(-128, 128, size=(count, rows)), region=0))
    ops.insert(0, MatmulOp(acc_addr=0, count=acc_depth, accumulate=False, weights=np.ones((rows, cols), int),
                           act=np.ones((acc_depth, rows), int), region=0))
    ops.append(StoreOp(acc_addr=0, count=acc_depth, params=pack_params(cols, 0, 0, 0, 0, -128, 127, True),
                       dest=(0, 0, acc_depth, cols), region=0))
    want, = ref_engine(ops, rows=rows, cols=cols, acc_depth=acc_depth)
    got, = rtl_engine(ops, rows=rows, cols=cols, acc_depth=acc_depth, seed=seed, deadline=5000)
    _compare(seed, got, want)


class _Bursts:
    """A ready pattern of long stalls: ``stall`` cycles low, then ``go`` cycles high, repeated."""

    def __init__(self, stall, go):
        self.pattern, self.i = [False] * stall + [True] * go, 0

    def next(self):
        self.i += 1
        return self.pattern[(self.i - 1) % len(self.pattern)]


@pytest.mark.parametrize("stall,go", [(30, 1), (25, 3), (17, 2)])
def test_engine_store_holds_rows_through_long_stalls(stall, go):
    """``out.ready`` low long enough to fill the epilogue pipeline and both registers of the STORE read side's
    skid buffer: no row is lost, duplicated or overwritten."""
    rows, cols, acc_depth, seed = 2, 2, 32, 70 + stall
    rng = np.random.default_rng(seed)
    count = 24
    ops = [MatmulOp(acc_addr=0, count=count, accumulate=False, weights=rng.integers(-128, 128, size=(rows, cols)),
                    act=rng.integers(-128, 128, size=(count, rows)), region=0),
           StoreOp(acc_addr=0, count=count, params=pack_params(cols, 0, 0, 0, 0, -128, 127, True),
                   dest=(0, 0, count, cols), region=0),
           StoreOp(acc_addr=3, count=7, params=pack_params(cols, 5, 1 << 30, -3, 2, -100, 100, False),
                   dest=(0, 0, 7, cols), region=0)]
    want = ref_engine(ops, rows=rows, cols=cols, acc_depth=acc_depth)
    got = rtl_engine(ops, rows=rows, cols=cols, acc_depth=acc_depth, seed=seed, out_throttle=_Bursts(stall, go))
    for g, w in zip(got, want):
        _compare(seed, g, w)


@pytest.mark.parametrize("rows,cols,count", [(1, 1, 1), (3, 2, 5), (4, 4, 1), (4, 4, 17), (2, 5, 3)])
def test_engine_matmul_latency(rows, cols, count):
    """Cycles from the MATMUL handshake to mm_idle rising equal the documented formula."""
    dut = GemmEngine(rows=rows, cols=cols, acc_depth=32)
    measured = {}

    async def tb(ctx):
        ctx.set(dut.weights.valid, 1)
        ctx.set(dut.act.valid, 1)
        ctx.set(dut.mm_cmd.payload, {"acc_addr": 0, "count": count, "accumulate": 0})
        ctx.set(dut.mm_cmd.valid, 1)
        await ctx.tick().until(dut.mm_cmd.ready)  # handshake at this edge
        ctx.set(dut.mm_cmd.valid, 0)
        cycles = 1  # handshake in cycle t; we are now in cycle t + 1
        while not ctx.get(dut.mm_idle):
            await ctx.tick()
            cycles += 1
        measured["latency"] = cycles

    run_simulation(dut, tb, deadline_cycles=500)
    assert measured["latency"] == dut.matmul_latency(count)


def vector_issue_cycles(rows, cols, count, n_tiles):
    """Cycles in which the engine accepted a vector, for ``n_tiles`` MATMULs of ``count`` vectors offered eagerly."""
    dut = GemmEngine(rows=rows, cols=cols, acc_depth=64)
    issues = []

    async def feeder(ctx):
        ctx.set(dut.weights.valid, 1)
        ctx.set(dut.act.valid, 1)
        for t in range(n_tiles):
            await stream_put(ctx, dut.mm_cmd, {"acc_addr": 0, "count": count, "accumulate": 0})

    async def monitor(ctx):
        cycle = 0
        async for _, _, valid, ready in ctx.tick().sample(dut.act.valid, dut.act.ready):
            if valid and ready:
                issues.append(cycle)
            cycle += 1

    async def wait_idle(ctx):
        await ctx.tick().repeat(5)
        await ctx.tick().until(dut.mm_idle)

    run_simulation(dut, feeder, wait_idle, background=[monitor], deadline_cycles=2000)
    return issues


@pytest.mark.parametrize("rows,cols", [(3, 4), (4, 2)])
def test_engine_back_to_back_matmuls_have_no_idle_cycles(rows, cols):
    """Tiles of min_overlapped_count vectors stream back to back: N tiles take exactly N * count more cycles."""
    count = GemmEngine(rows=rows, cols=cols, acc_depth=64).min_overlapped_count
    n_tiles = 5
    issues = vector_issue_cycles(rows, cols, count, n_tiles)
    assert len(issues) == n_tiles * count
    assert issues[-1] - issues[0] == n_tiles * count - 1, f"vector issue cycles have gaps: {issues}"


@pytest.mark.parametrize("rows,cols", [(3, 4), (4, 2)])
def test_engine_min_overlapped_count_is_tight(rows, cols):
    """One vector fewer per tile than min_overlapped_count leaves idle cycles between tiles."""
    count = GemmEngine(rows=rows, cols=cols, acc_depth=64).min_overlapped_count - 1
    n_tiles = 5
    issues = vector_issue_cycles(rows, cols, count, n_tiles)
    assert len(issues) == n_tiles * count
    assert issues[-1] - issues[0] > n_tiles * count - 1, f"no gaps with {count} vectors per tile: {issues}"


def test_engine_store_latency():
    dut = GemmEngine(rows=2, cols=2, acc_depth=8)
    layout = store_command_layout(8, 2)
    measured = {}

    async def tb(ctx):
        ctx.set(dut.out.ready, 1)
        params = {"bias": [0, 0], "multiplier": [0, 0], "shift": [0, 0], "zero_point": 0, "act_min": -128,
                  "act_max": 127, "raw": 1}
        ctx.set(dut.st_cmd.payload, layout.const({"acc_addr": 0, "count": 1, "params": params}))
        ctx.set(dut.st_cmd.valid, 1)
        await ctx.tick().until(dut.st_cmd.ready)
        ctx.set(dut.st_cmd.valid, 0)
        cycles = 1  # handshake in cycle t; we are now in cycle t + 1
        while not ctx.get(dut.out.valid):
            await ctx.tick()
            cycles += 1
        measured["latency"] = cycles

    run_simulation(dut, tb, deadline_cycles=100)
    assert measured["latency"] == dut.store_latency


def test_engine_st_idle_waits_for_the_last_row():
    """``st_idle`` (no STORE work accepted and unfinished) stays low from the command until the last row has left
    through ``out``, also while ``out`` stalls with rows in the epilogue."""
    dut = GemmEngine(rows=2, cols=2, acc_depth=8)
    layout = store_command_layout(8, 2)
    count = 5
    log = {"idle_with_rows_due": [], "delivered": 0, "idle_after": None}

    async def tb(ctx):
        params = {"bias": [0, 0], "multiplier": [0, 0], "shift": [0, 0], "zero_point": 0, "act_min": -128,
                  "act_max": 127, "raw": 1}
        ctx.set(dut.st_cmd.payload, layout.const({"acc_addr": 0, "count": count, "params": params}))
        ctx.set(dut.st_cmd.valid, 1)
        await ctx.tick().until(dut.st_cmd.ready)
        ctx.set(dut.st_cmd.valid, 0)
        for cycle in range(120):
            ready = cycle >= 40 and cycle % 3 == 0      # a long stall, then a row every third cycle
            ctx.set(dut.out.ready, ready)
            idle, valid = ctx.get(dut.st_idle), ctx.get(dut.out.valid)
            if idle and log["delivered"] < count:
                log["idle_with_rows_due"].append(cycle)
            await ctx.tick()
            log["delivered"] += int(valid and ready)
        log["idle_after"] = ctx.get(dut.st_idle)

    run_simulation(dut, tb, deadline_cycles=400)
    assert log["delivered"] == count, log
    assert not log["idle_with_rows_due"], f"st_idle high with rows still due in cycles {log['idle_with_rows_due']}"
    assert log["idle_after"], "st_idle did not rise after the last row"


@pytest.mark.parametrize("kwargs,match", [
    ({"rows": 0}, "Row count must be a positive integer, not 0"),
    ({"cols": 0}, "Column count must be a positive integer, not 0"),
    ({"acc_depth": 100}, "Accumulator depth must be a power of two of at least 2, not 100"),
    ({"acc_depth": 1}, "Accumulator depth must be a power of two of at least 2, not 1"),
])
def test_engine_parameter_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GemmEngine(**kwargs)


def test_reset_reaches_control_only():
    # The datapath (array, skew and de-skew, read-modify-write rows, STORE rows and parameters, epilogue data) has no
    # reset: only valid bits, counters and commands do. So the bits on the reset net grow with the sideband's valid
    # bits (one per pipeline stage) and the counters' widths, not with rows x cols or a row of partial sums.
    small, large = GemmEngine(rows=2, cols=2), GemmEngine(rows=8, cols=8)
    bits = {n: sum(reset_registers(engine).values()) for n, engine in ((2, small), (8, large))}
    growth = bits[8] - bits[2]
    stages = large.pipeline_depth - small.pipeline_depth
    assert 0 < growth <= 2 * stages, (bits, sorted(reset_registers(large).items()))
    # No reset register is as wide as a row of partial sums.
    widest = max(reset_registers(large).items(), key=lambda item: item[1])
    assert widest[1] < large.cols * large.psum_width, widest
