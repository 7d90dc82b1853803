"""TokenQueue: pushes and pops against a counter model, including simultaneous push and pop."""

import random

import pytest

from hw.token_queue import TokenQueue
from sim.amaranth_helpers import run_simulation


def test_token_queue_random():
    seed = 5
    rng = random.Random(seed)
    dut = TokenQueue()
    log = []

    async def tb(ctx):
        count = 0
        for cycle in range(400):
            push, want_pop = rng.random() < 0.5, rng.random() < 0.5
            ctx.set(dut.push, push)
            ctx.set(dut.pop.valid, want_pop)
            assert ctx.get(dut.pop.ready) == (count > 0), f"seed {seed} cycle {cycle}: ready with count {count}"
            taken = want_pop and count > 0
            await ctx.tick()
            count += push - taken
            log.append(count)
            assert ctx.get(dut.count) == count, f"seed {seed} cycle {cycle}: count {ctx.get(dut.count)} != {count}"

    run_simulation(dut, tb, deadline_cycles=500)
    assert max(log) > 2


def test_token_queue_width_validation():
    with pytest.raises(ValueError, match="at least 9 bits, not 8"):
        TokenQueue(width=8)
