"""ComputeUnit with the GEMM engine and real buffers: MATMUL instructions against the golden accumulation, token
pushes after completion, SYNC as a barrier, abort of a waiting instruction."""

import numpy as np
import pytest
from amaranth import Module, signed
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory

from hw.compute_unit import ComputeUnit
from hw.gemm_engine import GemmEngine, store_command_layout
from hw.isa import Matmul, Sync, Unit, encode
from sim.amaranth_helpers import Throttle, run_simulation, stream_get, stream_put
from sim.arith import wrap_int32

ROWS, COLS, ACT_DEPTH, WGT_DEPTH, ACC_DEPTH = 3, 4, 32, 16, 16


class Harness(wiring.Component):
    def __init__(self, act, wgt):
        self.unit = ComputeUnit(rows=ROWS, cols=COLS, act_depth=ACT_DEPTH, wgt_depth=WGT_DEPTH, acc_depth=ACC_DEPTH)
        self.engine = GemmEngine(rows=ROWS, cols=COLS, acc_depth=ACC_DEPTH)
        self.act_mem = Memory(shape=data.ArrayLayout(signed(8), ROWS), depth=ACT_DEPTH,
                              init=[[int(v) for v in row] for row in act])
        self.wgt_mem = Memory(shape=data.ArrayLayout(signed(8), COLS), depth=WGT_DEPTH,
                              init=[[int(v) for v in row] for row in wgt])
        super().__init__({})

    def elaborate(self, platform):
        m = Module()
        m.submodules.unit, m.submodules.engine = self.unit, self.engine
        m.submodules.act_mem, m.submodules.wgt_mem = self.act_mem, self.wgt_mem
        u, e = self.unit, self.engine
        for mem, prefix in ((self.act_mem, "act"), (self.wgt_mem, "wgt")):
            rp = mem.read_port()
            m.d.comb += [rp.addr.eq(getattr(u, f"{prefix}_rd_addr")), rp.en.eq(getattr(u, f"{prefix}_rd_en")),
                         getattr(u, f"{prefix}_rd_data").eq(rp.data)]
        wiring.connect(m, u.mm_cmd, e.mm_cmd)
        wiring.connect(m, u.weights, e.weights)
        wiring.connect(m, u.act, e.act)
        m.d.comb += [u.mm_done.eq(e.mm_done), u.mm_idle.eq(e.mm_idle)]
        return m


def golden(instrs, act, wgt):
    acc = np.zeros((ACC_DEPTH, COLS), dtype=np.int64)
    for ins in instrs:
        if not isinstance(ins, Matmul):
            continue
        w = wgt[ins.wgt_addr:ins.wgt_addr + ROWS].astype(np.int64).copy()
        w[ins.k_rows:] = 0
        sums = act[ins.act_addr:ins.act_addr + ins.count].astype(np.int64) @ w
        rows = slice(ins.acc_addr, ins.acc_addr + ins.count)
        acc[rows] = wrap_int32(acc[rows] + sums if ins.accumulate else sums)
    return acc


@pytest.mark.parametrize("seed", range(4))
def test_compute_unit_matmuls(seed):
    rng = np.random.default_rng(seed)
    act = rng.integers(-128, 128, size=(ACT_DEPTH, ROWS))
    wgt = rng.integers(-128, 128, size=(WGT_DEPTH, COLS))
    instrs = []
    for _ in range(10):
        count = int(rng.integers(1, 9))
        instrs.append(Matmul(act_addr=int(rng.integers(0, ACT_DEPTH - count)),
                             wgt_addr=int(rng.integers(0, WGT_DEPTH - ROWS)), acc_addr=int(rng.integers(0, 8)),
                             count=count, k_rows=int(rng.integers(1, ROWS + 1)), accumulate=bool(rng.integers(0, 2)),
                             push_prev=bool(rng.integers(0, 2)), push_next=bool(rng.integers(0, 2))))
    instrs.append(Sync(unit=Unit.COMPUTE, push_next=True))
    dut = Harness(act, wgt)
    pushes = {"prev": 0, "next": 0}
    layout = store_command_layout(ACC_DEPTH, COLS)
    result = []

    async def feeder(ctx):
        for i, ins in enumerate(instrs):
            await stream_put(ctx, dut.unit.instr, {"word": encode(ins), "index": i}, Throttle(0.5, seed))
        # SYNC pushes only after everything before it completed: wait for its push, then read the accumulators.
        want_next = sum(ins.push_next for ins in instrs)
        while pushes["next"] < want_next:
            await ctx.tick()
        assert ctx.get(dut.engine.mm_idle), "SYNC pushed before the engine finished"
        params = {"bias": [0] * COLS, "multiplier": [0] * COLS, "shift": [0] * COLS, "zero_point": 0,
                  "act_min": -128, "act_max": 127, "raw": 1}
        await stream_put(ctx, dut.engine.st_cmd, layout.const({"acc_addr": 0, "count": ACC_DEPTH, "params": params}))
        for _ in range(ACC_DEPTH):
            result.append([int(v) for v in await stream_get(ctx, dut.engine.out)])

    async def tokens(ctx):
        async for _, _, prev, nxt in ctx.tick().sample(dut.unit.push_prev, dut.unit.push_next):
            pushes["prev"] += prev
            pushes["next"] += nxt

    run_simulation(dut, feeder, background=[tokens], deadline_cycles=3000)
    want = golden(instrs, act, wgt)
    got = np.array(result)
    bad = np.argwhere(got != want)
    assert bad.size == 0, f"seed {seed}: first mismatch at acc row {bad[0][0]} col {bad[0][1]}: " \
                          f"{got[tuple(bad[0])]} vs {want[tuple(bad[0])]}"
    assert pushes == {"prev": sum(i.push_prev for i in instrs), "next": sum(i.push_next for i in instrs)}


def test_compute_unit_waits_for_tokens_and_aborts():
    act = np.zeros((ACT_DEPTH, ROWS), dtype=np.int64)
    wgt = np.zeros((WGT_DEPTH, COLS), dtype=np.int64)
    dut = Harness(act, wgt)
    seen = {}

    async def tb(ctx):
        await stream_put(ctx, dut.unit.instr, {"word": encode(Matmul(count=1, k_rows=1, pop_prev=True)), "index": 7})
        await ctx.tick().repeat(10)
        seen["waiting"] = ctx.get(dut.unit.pop_prev.valid) and not ctx.get(dut.unit.mm_cmd.valid)
        ctx.set(dut.unit.abort, 1)
        ctx.set(dut.unit.abort_index, 6)
        await ctx.tick().repeat(2)
        seen["idle"] = ctx.get(dut.unit.idle)

    run_simulation(dut, tb, deadline_cycles=100)
    assert seen == {"waiting": True, "idle": True}
