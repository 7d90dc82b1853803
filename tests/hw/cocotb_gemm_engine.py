"""cocotb testbench for the generated GEMM engine Verilog (run by test_gemm_engine_cocotb.py on both simulators).

Random GEMMs are tiled with :func:`sim.engine_ref.plan_gemm`, streamed through all five streams with seeded random
back-pressure and checked row by row against :func:`sim.engine_ref.ref_engine` (which itself is checked against the
direct fused GEMM). Configuration comes from the environment: ROWS, COLS, ACC_DEPTH, SEED, CASES, MAX_DIM, PROB.
"""

import os

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import RisingEdge

from hw.gemm_engine import matmul_command_layout, store_command_layout
from sim.arith import INT32_MAX, INT32_MIN, quantized_gemm
from sim.cocotb_streams import StreamBench
from sim.packing import pack_lanes, unpack_lanes
from sim.engine_ref import MatmulOp, StoreOp, assemble, plan_gemm, ref_engine

ROWS = int(os.environ.get("ROWS", "4"))
COLS = int(os.environ.get("COLS", "4"))
ACC_DEPTH = int(os.environ.get("ACC_DEPTH", "64"))
SEED = int(os.environ.get("SEED", "1"))
CASES = int(os.environ.get("CASES", "4"))
MAX_DIM = int(os.environ.get("MAX_DIM", "20"))
PROB = float(os.environ.get("PROB", "0.7"))


def random_case(rng, index):
    """A random fused GEMM: shapes 1..MAX_DIM, parameters over their full ranges, some extreme cases."""
    m, k, n = (int(rng.integers(1, MAX_DIM + 1)) for _ in range(3))
    kind = index % 4
    if kind == 0:
        # Extreme operands over a long K: every product is +2**14 and sums grow to K * 2**14.
        k = max(k, 3 * ROWS + 1)
        a = np.full((m, k), -128, dtype=np.int64)
        w = np.full((k, n), -128, dtype=np.int64)
    else:
        a = rng.integers(-128, 128, size=(m, k))
        w = rng.integers(-128, 128, size=(k, n))
    bias = rng.integers(INT32_MIN, INT32_MAX, size=n, endpoint=True)
    mult = rng.integers(INT32_MIN, INT32_MAX, size=n, endpoint=True)
    shift = rng.integers(-31, 32, size=n)
    zp = int(rng.integers(-128, 128))
    if kind == 1:
        lo, hi = zp, 127  # fused ReLU
        mult = rng.integers(1 << 30, 1 << 31, size=n)  # quantizer-like multipliers
        shift = rng.integers(-12, 1, size=n)
        bias = rng.integers(-(1 << 16), 1 << 16, size=n)
    else:
        lo, hi = sorted(int(v) for v in rng.integers(-128, 128, size=2))
    raw = kind == 3
    return a, w, bias, mult, shift, zp, lo, hi, raw


class EngineBench:
    """Drives a command list through the engine honouring its ordering rules; collects STORE outputs."""

    def __init__(self, dut, seed, prob):
        self.dut = dut
        self.bench = StreamBench(dut.clk, seed=seed)
        self.mm_cmd = self.bench.source(dut, "mm_cmd", valid_prob=prob)
        self.weights = self.bench.source(dut, "weights", valid_prob=prob)
        self.act = self.bench.source(dut, "act", valid_prob=prob)
        self.st_cmd = self.bench.source(dut, "st_cmd", valid_prob=prob)
        self.out = self.bench.sink(dut, "out", ready_prob=prob)
        self.mm_done = 0
        self.bench.monitors.append(self._count_done)
        self.mm_layout = matmul_command_layout(ACC_DEPTH)
        self.st_layout = store_command_layout(ACC_DEPTH, COLS)

    def _count_done(self):
        self.mm_done += int(self.dut.mm_done.value)

    async def run(self, ops):
        matmuls = [op for op in ops if isinstance(op, MatmulOp)]
        stores = [op for op in ops if isinstance(op, StoreOp)]
        position = {id(op): i for i, op in enumerate(ops)}
        # Dependencies: a STORE waits for every earlier MATMUL; a MATMUL waits until the latest earlier STORE of
        # the same accumulator half has delivered all its rows.
        store_index = {id(s): j for j, s in enumerate(stores)}
        mm_wait = []
        for op in matmuls:
            earlier = [s for s in stores if position[id(s)] < position[id(op)] and s.region == op.region]
            mm_wait.append(store_index[id(earlier[-1])] if earlier else -1)
        st_wait = [sum(isinstance(o, MatmulOp) for o in ops[:position[id(s)]]) for s in stores]
        rows_needed = np.cumsum([s.count for s in stores])
        done_before = self.mm_done
        for op in matmuls:
            for r in range(ROWS):
                self.weights.send(pack_lanes(op.weights[r], 8))
            for vec in op.act:
                self.act.send(pack_lanes(vec, 8))
        received = []
        self.out.on_receive = lambda word: received.append(unpack_lanes(word, COLS, 32))
        next_mm = next_st = 0

        def schedule():
            nonlocal next_mm, next_st
            while next_mm < len(matmuls) and (mm_wait[next_mm] < 0 or
                                              len(received) >= rows_needed[mm_wait[next_mm]]):
                op = matmuls[next_mm]
                self.mm_cmd.send(self.mm_layout.const({"acc_addr": op.acc_addr, "count": op.count,
                                                       "accumulate": int(op.accumulate)}).as_bits())
                next_mm += 1
            while next_st < len(stores) and self.mm_done - done_before >= st_wait[next_st]:
                op = stores[next_st]
                self.st_cmd.send(self.st_layout.const({"acc_addr": op.acc_addr, "count": op.count,
                                                       "params": op.params}).as_bits())
                next_st += 1
            return next_mm == len(matmuls) and next_st == len(stores) and len(received) == rows_needed[-1]

        budget = 1000 + int(sum(op.count + 3 * ROWS for op in matmuls) + sum(s.count for s in stores)) * 8
        await self.bench.run_until(schedule, max_cycles=budget, what=f"{len(ops)} engine commands")
        outputs, at = [], 0
        for s in stores:
            outputs.append(np.array(received[at:at + s.count], dtype=np.int64))
            at += s.count
        return outputs


async def reset(dut):
    for name in ("mm_cmd", "weights", "act", "st_cmd"):
        getattr(dut, f"{name}__valid").value = 0
    dut.out__ready.value = 0
    dut.rst.value = 1
    for _ in range(3):
        await RisingEdge(dut.clk)
    dut.rst.value = 0


@cocotb.test()
async def random_gemms(dut):
    """Random fused GEMMs back to back with back-pressure; every output element checked exactly."""
    Clock(dut.clk, 10, unit="ns").start()
    await reset(dut)
    rng = np.random.default_rng(SEED)
    tb = EngineBench(dut, SEED, PROB)
    for index in range(CASES):
        a, w, bias, mult, shift, zp, lo, hi, raw = random_case(rng, index)
        ops = plan_gemm(a, w, bias, mult, shift, zp, lo, hi, raw, rows=ROWS, cols=COLS, acc_depth=ACC_DEPTH)
        want = ref_engine(ops, rows=ROWS, cols=COLS, acc_depth=ACC_DEPTH)
        start = tb.bench.cycle
        got = await tb.run(ops)
        for j, (g, w_) in enumerate(zip(got, want)):
            bad = np.argwhere(g != w_)
            assert bad.size == 0, (
                f"SEED={SEED} case {index} (M,K,N)={a.shape[0], a.shape[1], w.shape[1]} raw={raw}: store {j} "
                f"first mismatch at row {bad[0][0]} col {bad[0][1]}: got {g[tuple(bad[0])]} want {w_[tuple(bad[0])]}")
        direct = quantized_gemm(a, w, bias, mult, shift, zp, lo, hi, raw=raw).astype(np.int64)
        np.testing.assert_array_equal(assemble(ops, got, direct.shape, np.int64), direct,
                                      err_msg=f"SEED={SEED} case {index}: assembled result differs")
        dut._log.info("case %d: M,K,N=%s raw=%s, %d commands in %d cycles", index,
                      (a.shape[0], a.shape[1], w.shape[1]), raw, len(ops), tb.bench.cycle - start)
