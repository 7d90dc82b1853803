"""InstructionFetch against a Python model of the AXI master's read side (random latency, back-pressure from the
dispatcher, bus errors, stop)."""

import random

import pytest

from hw.instruction_fetch import InstructionFetch
from sim.amaranth_helpers import Throttle, run_simulation, stream_get


def make_memory(seed, size=4096):
    rng = random.Random(seed)
    return bytes(rng.randrange(256) for _ in range(size))


def rtl_fetch(memory, *, prog_addr, prog_len, seed, data_width=64, error_words=(), stop_after=None, take_prob=0.5):
    dut = InstructionFetch(data_width=data_width)
    bus_bytes = data_width // 8
    got = []
    state = {"pending": []}

    async def slave(ctx):
        rng = random.Random(seed)
        queue = []
        while True:
            ctx.set(dut.rd_cmd.ready, rng.random() < 0.7)
            if queue and rng.random() < 0.8:
                addr, last = queue[0]
                word = int.from_bytes(memory[addr:addr + bus_bytes], "little")
                ctx.set(dut.rd_data.payload, {"data": word, "last": last, "error": addr in error_words})
                ctx.set(dut.rd_data.valid, 1)
            else:
                ctx.set(dut.rd_data.valid, 0)
            _, _, cmd_valid, cmd_ready, cmd, data_valid, data_ready = await ctx.tick().sample(
                dut.rd_cmd.valid, dut.rd_cmd.ready, dut.rd_cmd.payload, dut.rd_data.valid, dut.rd_data.ready)
            if data_valid and data_ready:
                queue.pop(0)
            if cmd_valid and cmd_ready:
                queue += [(cmd.addr + i * bus_bytes, i == cmd.beats - 1) for i in range(cmd.beats)]

    async def tb(ctx):
        ctx.set(dut.prog_addr, prog_addr)
        ctx.set(dut.prog_len, prog_len)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        throttle = Throttle(take_prob, seed)
        while True:
            if stop_after is not None and len(got) == stop_after:
                ctx.set(dut.stop, 1)
                await ctx.tick().repeat(50)
                state["idle"] = ctx.get(dut.idle)
                return
            entry = await stream_get(ctx, dut.instr, throttle)
            got.append((entry.word, entry.index, entry.bus_error, entry.overrun))
            if entry.overrun:
                return

    run_simulation(dut, tb, background=[slave], deadline_cycles=40 * prog_len + 400)
    return got, state


def want_fetch(memory, prog_addr, prog_len, error_words=(), bus_bytes=8):
    base = prog_addr & ~15
    out = []
    for i in range(prog_len):
        addr = base + 16 * i
        word = int.from_bytes(memory[addr:addr + 16], "little")
        err = any(a in error_words for a in range(addr, addr + 16, bus_bytes))
        out.append((word, i, int(err), 0))
    return out + [(0, prog_len, 0, 1)]


@pytest.mark.parametrize("seed,prog_len,data_width", [(1, 23, 64), (2, 1, 64), (3, 0, 64), (4, 41, 32), (5, 17, 128),
                                                      (6, 64, 64)])
def test_fetch_random(seed, prog_len, data_width):
    memory = make_memory(seed)
    prog_addr = 0x100 + 16 * seed + 3  # low 4 bits are ignored
    got, _ = rtl_fetch(memory, prog_addr=prog_addr, prog_len=prog_len, seed=seed, data_width=data_width)
    want = want_fetch(memory, prog_addr, prog_len, bus_bytes=data_width // 8)
    for i, (g, w) in enumerate(zip(got, want)):
        g = (g[0] if not g[3] else 0,) + tuple(g[1:])
        assert g == w, f"seed {seed}: entry {i} got {g} want {w}"
    assert len(got) == len(want), f"seed {seed}: {len(got)} entries, want {len(want)}"


def test_fetch_bus_error_marks_the_word():
    memory = make_memory(7)
    errors = {0x100 + 16 * 2 + 8}
    got, _ = rtl_fetch(memory, prog_addr=0x100, prog_len=4, seed=7, error_words=errors)
    assert [g[2] for g in got] == [0, 0, 1, 0, 0]


def test_fetch_stop_goes_idle():
    memory = make_memory(8)
    got, state = rtl_fetch(memory, prog_addr=0x100, prog_len=40, seed=8, stop_after=5)
    assert len(got) == 5 and state["idle"]
