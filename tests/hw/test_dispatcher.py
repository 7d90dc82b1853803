"""Dispatcher: random instruction streams against the ISA's own decoder, range rules and token accounting."""

import random

import pytest

from hw.dispatcher import TOKEN_QUEUES, Dispatcher, _queue_for
from hw.isa import (FLAG_NAMES, TOKEN_MAX, Buffer, ErrorCode, Halt, HardwareConfig, IllegalInstruction, Load,
                    Matmul, Store, Sync, Unit, decode, encode, unit_of)
from sim.amaranth_helpers import Throttle, run_simulation, stream_get, stream_put

CONFIG = HardwareConfig(rows=4, cols=3, act_depth=32, wgt_depth=16, acc_depth=16, param_depth=4)


def reference(words, config=CONFIG):
    """Expected (dispatched [(unit, word, index)], error, error_index) for a word sequence (no HALT handling)."""
    balance = dict.fromkeys(TOKEN_QUEUES, 0)
    out = []
    for index, word in enumerate(words):
        try:
            instr = decode(word)
        except IllegalInstruction:
            return out, ErrorCode.ILLEGAL_INSTRUCTION, index
        if config.check(instr) is not None:
            return out, ErrorCode.OUT_OF_RANGE, index
        if isinstance(instr, Halt):
            return out, None, index
        unit = unit_of(instr)
        pops = [_queue_for(unit, f) for f in FLAG_NAMES if f.startswith("pop") and getattr(instr, f)]
        pushes = [_queue_for(unit, f) for f in FLAG_NAMES if f.startswith("push") and getattr(instr, f)]
        if any(balance[q] == 0 for q in pops):
            return out, ErrorCode.TOKEN_DEADLOCK, index
        for q in pops:
            balance[q] -= 1
        if any(balance[q] >= TOKEN_MAX for q in pushes):
            return out, ErrorCode.TOKEN_OVERFLOW, index
        for q in pushes:
            balance[q] += 1
        out.append((unit, word, index))
    return out, ErrorCode.PROGRAM_OVERRUN, len(words)


def random_word(rng, balance, fault_rate=0.012):
    """Mostly legal instructions (tokens popped only when available), with rare faults of every kind."""
    def size(limit):  # in range, or (rarely) zero or past the limit
        return rng.randrange(1, limit + 1) if rng.random() > fault_rate else rng.choice([0, limit + 1])

    kind = rng.random()
    unit = Unit.LOAD if kind < 0.3 else Unit.COMPUTE if kind < 0.6 else Unit.STORE if kind < 0.85 else None
    sync_unit = rng.choice(list(Unit))
    u = unit if unit is not None else sync_unit
    flags = {}
    for f in FLAG_NAMES:
        q = _queue_for(u, f)
        if q is None:
            continue
        if f.startswith("pop"):
            flags[f] = balance[q] > 0 and rng.random() < 0.5 or rng.random() < fault_rate / 2
        else:
            flags[f] = rng.random() < 0.5 and balance[q] < TOKEN_MAX or rng.random() < fault_rate / 2
    if unit == Unit.LOAD:
        buffer = rng.choice(list(Buffer))
        depth = CONFIG.depth(buffer)
        y = size(4)
        instr = Load(buffer=buffer, buf_addr=rng.randrange(depth - min(y, depth) + 1 + (rng.random() < fault_rate)),
                     y_size=y, x_size=size(CONFIG.row_bytes(buffer)), stride=rng.randrange(100),
                     dram_addr=rng.randrange(1 << 20), **flags)
    elif unit == Unit.COMPUTE:
        count, k = size(4), size(CONFIG.rows)
        instr = Matmul(act_addr=rng.randrange(CONFIG.act_depth - 4), wgt_addr=rng.randrange(CONFIG.wgt_depth - 4),
                       acc_addr=rng.randrange(CONFIG.acc_depth - 4 + (rng.random() < fault_rate) * 8),
                       count=count, k_rows=k, accumulate=rng.random() < 0.5, **flags)
    elif unit == Unit.STORE:
        instr = Store(acc_addr=rng.randrange(CONFIG.acc_depth - 4), count=size(4),
                      param_addr=rng.randrange(CONFIG.param_depth + (rng.random() < fault_rate)),
                      n_cols=size(CONFIG.cols), stride=rng.randrange(100), dram_addr=rng.randrange(1 << 20),
                      raw=rng.random() < 0.5, **flags)
    elif rng.random() < 0.97:
        instr = Sync(unit=sync_unit, **flags)
    else:
        instr = Halt()
    word = encode(instr)
    corruption = rng.random()
    if corruption < fault_rate / 3:
        word = (word & ~0x7) | rng.choice([0, 6, 7])        # illegal opcode
    elif corruption < 2 * fault_rate / 3:
        word |= 1 << rng.randrange(120, 128)                # reserved bits
    elif corruption < fault_rate:
        word |= 1 << rng.randrange(3, 7)                    # a flag the unit may not use (sometimes legal)
    return word


def random_program(rng, length, fault_rate=0.012):
    words, balance = [], dict.fromkeys(TOKEN_QUEUES, 0)
    for _ in range(length):
        words.append(random_word(rng, balance, fault_rate))
        try:
            instr = decode(words[-1])
        except IllegalInstruction:
            continue
        unit = unit_of(instr)
        if unit is None:
            continue
        for f in FLAG_NAMES:
            if getattr(instr, f) and (q := _queue_for(unit, f)) is not None:
                balance[q] += 1 if f.startswith("push") else -1
                balance[q] = max(balance[q], 0)
    return words


def rtl_dispatch(words, *, seed):
    dut = Dispatcher(config=CONFIG, queue_depth=4)
    got = []
    state = {}

    async def feeder(ctx):
        throttle = Throttle(0.7, seed)
        for index, word in enumerate(words):
            await stream_put(ctx, dut.instr, {"word": word, "index": index, "bus_error": 0, "overrun": 0}, throttle)
            if ctx.get(dut.stopped):
                break
        else:
            await stream_put(ctx, dut.instr, {"word": 0, "index": len(words), "bus_error": 0, "overrun": 1})
        # Until dispatch has stopped and the drains have emptied every queue (bounded: the run has a deadline too).
        for _ in range(50):
            await ctx.tick()
            if ctx.get(dut.stopped) and not any(ctx.get(getattr(dut, q).valid) for q in ("load", "compute", "store")):
                break
        await ctx.tick().repeat(2)
        state["error"], state["index"], state["halted"] = (ctx.get(dut.error), ctx.get(dut.error_index),
                                                           ctx.get(dut.halted))

    def drain(name, unit):
        async def tb(ctx):
            throttle = Throttle(0.6, seed + unit)
            while True:
                entry = await stream_get(ctx, getattr(dut, name), throttle)
                got.append((unit, entry.word, entry.index))
        return tb

    run_simulation(dut, feeder, background=[drain("load", Unit.LOAD), drain("compute", Unit.COMPUTE),
                                            drain("store", Unit.STORE)], deadline_cycles=20 * len(words) + 200)
    return sorted(got, key=lambda e: e[2]), state


@pytest.mark.parametrize("seed,fault_rate", [(s, 0.012) for s in range(16)] + [(s, 0.0) for s in range(16, 24)])
def test_dispatcher_random_streams(seed, fault_rate):
    rng = random.Random(seed)
    words = random_program(rng, 60, fault_rate)
    want, error, index = reference(words)
    got, state = rtl_dispatch(words, seed=seed)
    assert got == want, f"seed {seed}: dispatched entries differ; first: " + next(
        (f"got {g} want {w}" for g, w in zip(got, want) if g != w), f"lengths {len(got)} vs {len(want)}")
    if error is None:
        assert state["halted"] and state["error"] == 0, f"seed {seed}: expected a HALT at {index}: {state}"
    else:
        assert (state["error"], state["index"]) == (error, index), f"seed {seed}: {state} vs {error!r} at {index}"


def test_dispatcher_fetch_bus_error_and_overrun():
    dut = Dispatcher(config=CONFIG)
    seen = {}

    async def tb(ctx):
        ctx.set(dut.load.ready, 1)
        await stream_put(ctx, dut.instr, {"word": encode(Load(x_size=1)), "index": 0, "bus_error": 0, "overrun": 0})
        await stream_put(ctx, dut.instr, {"word": encode(Load(x_size=1)), "index": 1, "bus_error": 1, "overrun": 0})
        await ctx.tick().repeat(2)
        seen["fault"] = (ctx.get(dut.error), ctx.get(dut.error_index), ctx.get(dut.stopped))

    run_simulation(dut, tb, deadline_cycles=100)
    assert seen["fault"] == (ErrorCode.BUS_ERROR_FETCH, 1, 1)


def test_dispatcher_token_overflow():
    words = [encode(Sync(unit=Unit.LOAD, push_next=True))] * (TOKEN_MAX + 1) + [encode(Halt())]
    want, error, index = reference(words)
    got, state = rtl_dispatch(words, seed=3)
    assert (error, index) == (ErrorCode.TOKEN_OVERFLOW, TOKEN_MAX)
    assert got == want and (state["error"], state["index"]) == (error, index)


def _out_of_range_with_reserved_bit():
    word = encode(Load(buffer=Buffer.ACT, y_size=0, x_size=1))       # OUT_OF_RANGE ...
    return word | 1 << 127                                              # ... and a reserved bit: ILLEGAL first


@pytest.mark.parametrize("words,error,index", [
    # One instruction with two faults: the documented priority decides (the ISA decoder's order).
    ([encode(Load(x_size=1)), _out_of_range_with_reserved_bit()], ErrorCode.ILLEGAL_INSTRUCTION, 1),
    # A pop from an empty queue and a push onto a full one in the same SYNC: TOKEN_DEADLOCK first.
    ([encode(Sync(unit=Unit.COMPUTE, push_next=True))] * TOKEN_MAX
     + [encode(Sync(unit=Unit.COMPUTE, pop_prev=True, push_next=True)), encode(Halt())],
     ErrorCode.TOKEN_DEADLOCK, TOKEN_MAX),
    # A HALT with any token flag set, the highest (push_next, bit 6) included, is illegal.
    ([encode(Load(x_size=1)), encode(Halt()) | 1 << 6], ErrorCode.ILLEGAL_INSTRUCTION, 1),
    ([encode(Halt()) | 1 << 3], ErrorCode.ILLEGAL_INSTRUCTION, 0),
])
def test_dispatcher_fault_priority(words, error, index):
    want, want_error, want_index = reference(words)
    assert (want_error, want_index) == (error, index), "the reference disagrees with the documented priority"
    got, state = rtl_dispatch(words, seed=5)
    assert got == want and (state["error"], state["index"]) == (error, index), f"{state} vs {error!r} at {index}"
