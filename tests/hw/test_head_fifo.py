"""HeadRegisterFIFO: cycle for cycle the same outputs as Amaranth's SyncFIFO under random pushes and pops."""

import random

import pytest
from amaranth import Module
from amaranth.lib import wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from hw.head_fifo import HeadRegisterFIFO
from sim.amaranth_helpers import run_simulation


class Pair(wiring.Component):
    """A HeadRegisterFIFO and a SyncFIFO of the same size, driven by the same inputs."""

    def __init__(self, width, depth):
        self.dut = HeadRegisterFIFO(width=width, depth=depth)
        self.ref = SyncFIFO(width=width, depth=depth)
        super().__init__({"w_data": In(width), "w_en": In(1), "r_en": In(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut, m.submodules.ref = self.dut, self.ref
        for fifo in (self.dut, self.ref):
            m.d.comb += [fifo.w_data.eq(self.w_data), fifo.w_en.eq(self.w_en), fifo.r_en.eq(self.r_en)]
        return m


@pytest.mark.parametrize("depth", [1, 2, 3, 8])
def test_matches_sync_fifo(depth):
    seed = 100 + depth
    rng = random.Random(seed)
    width = 12
    pair = Pair(width, depth)
    seen = {"reads": 0, "full": 0}

    async def tb(ctx):
        for cycle in range(3000):
            # Phases of mostly-writes and mostly-reads so the FIFO fills and drains.
            bias = 0.8 if (cycle // 50) % 2 == 0 else 0.2
            ctx.set(pair.w_en, rng.random() < bias)
            ctx.set(pair.r_en, rng.random() < 1 - bias)
            ctx.set(pair.w_data, rng.getrandbits(width))
            dut, ref = pair.dut, pair.ref
            for name in ("w_rdy", "r_rdy", "level"):
                got, want = ctx.get(getattr(dut, name)), ctx.get(getattr(ref, name))
                assert got == want, f"seed {seed} depth {depth} cycle {cycle}: {name} {got} != SyncFIFO {want}"
            if ctx.get(ref.r_rdy):
                got, want = ctx.get(dut.r_data), ctx.get(ref.r_data)
                assert got == want, f"seed {seed} depth {depth} cycle {cycle}: r_data {got:#x} != SyncFIFO {want:#x}"
                seen["reads"] += ctx.get(pair.r_en)
            seen["full"] += ctx.get(ref.level) == depth
            await ctx.tick()

    run_simulation(pair, tb, deadline_cycles=4000)
    assert seen["reads"] > 300 and seen["full"] > 10, seen


@pytest.mark.parametrize("kwargs,match", [
    ({"width": 0, "depth": 4}, "FIFO width must be a positive integer, not 0"),
    ({"width": 8, "depth": 0}, "FIFO depth must be a positive integer, not 0"),
    ({"width": 8, "depth": True}, "FIFO depth must be a positive integer, not True"),
])
def test_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        HeadRegisterFIFO(**kwargs)
