"""LoadUnit against a direct Python 2-D copy: random LOADs to all three buffers (any alignment, stride and size)
over a model of the AXI master's read side with random latency, outstanding commands, back-pressure and bus
errors; token order, SYNC, abort, faults, busy/idle, streaming throughput, validation and Verilog."""

from __future__ import annotations

import gc
from collections import deque
from dataclasses import dataclass

import numpy as np
import pytest
from amaranth import Module, Value
from amaranth.back import verilog
from amaranth.lib import wiring

from hw.axi4_master import AXI4Master
from hw.isa import Buffer, Load, Sync, Unit, encode
from hw.load_unit import LoadUnit, read_command_layout, read_data_layout
from hw.read_arbiter import ReadArbiter
from sim.amaranth_helpers import Throttle, run_simulation, stream_get, stream_put

DRAM_BYTES = 4096
PREFIXES = {Buffer.ACT: "act", Buffer.WGT: "wgt", Buffer.PARAM: "param"}


@dataclass(frozen=True)
class Config:
    rows: int
    cols: int
    act_depth: int = 40
    wgt_depth: int = 24
    param_depth: int = 21
    data_width: int = 64
    addr_width: int = 32

    def unit(self) -> LoadUnit:
        return LoadUnit(rows=self.rows, cols=self.cols, act_depth=self.act_depth, wgt_depth=self.wgt_depth,
                        param_depth=self.param_depth, data_width=self.data_width, addr_width=self.addr_width)

    @property
    def bus_bytes(self) -> int:
        return self.data_width // 8

    def entry_bytes(self, buffer) -> int:
        return {Buffer.ACT: self.rows, Buffer.WGT: self.cols, Buffer.PARAM: 9 * self.cols + 3}[Buffer(buffer)]

    def depth(self, buffer) -> int:
        return {Buffer.ACT: self.act_depth, Buffer.WGT: self.wgt_depth, Buffer.PARAM: self.param_depth}[buffer]


CONFIGS = {
    "4x3-bus64": Config(rows=4, cols=3),
    "8x8-bus32": Config(rows=8, cols=8, data_width=32),
    "16x2-bus128": Config(rows=16, cols=2, data_width=128),
    # ACT entries are the widest here, and a 12-bit bus wraps inside the 4 KiB test DRAM.
    "40x4-bus256-wrap": Config(rows=40, cols=4, act_depth=48, data_width=256, addr_width=12),
}


# ---- The AXI master's read side, as the LOAD unit sees it -----------------------------------------------------------

class ReadSlave:
    """Accepts ``rd_cmd`` (up to ``outstanding`` at once), answers each after a random latency with its words from
    ``dram`` (addresses wrap at its size), in command order, ``last`` on the final word and ``error`` on every word
    touching a byte in ``errors`` (a list of ``(lo, hi)`` byte ranges)."""

    def __init__(self, dut, bench, dram, *, seed, cmd_prob=1.0, data_prob=1.0, latency=(0, 6), outstanding=4,
                 errors=()):
        self.dut, self.bench, self.dram = dut, bench, dram
        self.bytes = dut.bytes_per_word
        self.rng = np.random.default_rng(seed)
        self.cmd_throttle = Throttle(cmd_prob, seed + 1)
        self.data_throttle = Throttle(data_prob, seed + 2)
        self.latency, self.outstanding, self.errors = latency, outstanding, errors
        self.pending = deque()
        self.max_in_flight = 0

    def word(self, addr):
        size = len(self.dram)
        value = sum(self.dram[(addr + i) % size] << (8 * i) for i in range(self.bytes))
        error = any(word_touches(addr, self.bytes, lo, hi, size) for lo, hi in self.errors)
        return value, error

    async def accept(self, ctx):
        while True:
            while len(self.pending) >= self.outstanding:
                await ctx.tick()
            cmd = await stream_get(ctx, self.dut.rd_cmd, self.cmd_throttle)
            addr, beats = int(cmd.addr), int(cmd.beats)
            assert addr % self.bytes == 0, f"read command address {addr:#x} is not word aligned"
            self.pending.append((self.bench.cycle + int(self.rng.integers(*self.latency, endpoint=True)), addr, beats))
            self.max_in_flight = max(self.max_in_flight, len(self.pending))

    async def serve(self, ctx):
        while True:
            while not self.pending or self.bench.cycle < self.pending[0][0]:
                await ctx.tick()
            _, addr, beats = self.pending[0]
            for i in range(beats):
                value, error = self.word(addr + i * self.bytes)
                await stream_put(ctx, self.dut.rd_data, {"data": value, "last": i == beats - 1, "error": error},
                                 self.data_throttle)
            self.pending.popleft()


def word_touches(addr, nbytes, lo, hi, size):
    """Whether the word of ``nbytes`` at ``addr`` (wrapping at ``size``) holds a byte of ``[lo, hi)``."""
    return any(lo <= (addr + i) % size < hi for i in range(nbytes))


class Bench:
    """Clock, token supply and an event log of everything the unit does, built by a per-cycle monitor."""

    def __init__(self, dut, *, tokens=0, token_prob=0.3, seed=0):
        self.dut = dut
        self.cycle = 0
        self.events = []        # (cycle, kind, ...) with kind in cmd, pop, write, push, fault
        self.trace = []         # per cycle: dict of busy, idle, pop waiting, accepted
        self.tokens_left = tokens
        self.token_prob = token_prob
        self.rng = np.random.default_rng(seed + 3)
        self.protocol_errors = []

    async def monitor(self, ctx):
        dut = self.dut
        ports = []
        for buffer, prefix in PREFIXES.items():
            ports += [getattr(dut, f"{prefix}_wr_en"), getattr(dut, f"{prefix}_wr_addr"),
                      Value.cast(getattr(dut, f"{prefix}_wr_data"))]
        held = None
        available = 0
        ctx.set(dut.pop_next.ready, 0)
        async for _, _, *v in ctx.tick().sample(
                dut.rd_cmd.valid, dut.rd_cmd.ready, dut.rd_cmd.payload.as_value(), dut.pop_next.valid,
                dut.pop_next.ready, dut.push_next, dut.fault, dut.fault_index, dut.busy, dut.idle,
                dut.instr.valid, dut.instr.ready, *ports):
            cmd_valid, cmd_ready, cmd, pop_valid, pop_ready, push, fault, fault_index, busy, idle, iv, ir = v[:12]
            if held is not None and (not cmd_valid or cmd != held):
                self.protocol_errors.append(f"cycle {self.cycle}: rd_cmd changed before its handshake")
            held = cmd if cmd_valid and not cmd_ready else None
            if cmd_valid and cmd_ready:
                self.events.append((self.cycle, "cmd", cmd))
            if pop_valid and pop_ready:
                self.events.append((self.cycle, "pop"))
                available -= 1
            for n, buffer in enumerate(PREFIXES):
                en, addr, word = v[12 + 3 * n:15 + 3 * n]
                if en:
                    self.events.append((self.cycle, "write", buffer.name, addr, word))
            if push:
                self.events.append((self.cycle, "push"))
            if fault:
                self.events.append((self.cycle, "fault", fault_index))
            self.trace.append({"busy": busy, "idle": idle, "waiting": pop_valid and not pop_ready,
                               "accepted": iv and ir, "pop": pop_valid and pop_ready, "push": push})
            if self.tokens_left and self.rng.random() < self.token_prob:
                self.tokens_left -= 1
                available += 1
            ctx.set(dut.pop_next.ready, available > 0)
            self.cycle += 1


# ---- Reference --------------------------------------------------------------------------------------------------

def row_addresses(cfg, ins):
    mask = (1 << cfg.addr_width) - 1
    return [(ins.dram_addr + y * ins.stride) & mask for y in range(ins.y_size)]


def expected(cfg, program, dram, errors=(), dropped=()):
    """Per instruction: (pops, read commands, buffer writes, completion events) of a direct 2-D copy."""
    groups = []
    size, nb = len(dram), cfg.bus_bytes
    for index, ins in program:
        if index in dropped:
            continue
        pops = [("pop",)] if ins.pop_next else []
        cmds, writes, faulted = [], [], False
        if isinstance(ins, Load):
            entry = cfg.entry_bytes(ins.buffer)
            for y, addr in enumerate(row_addresses(cfg, ins)):
                row = [dram[(addr + q) % size] for q in range(ins.x_size)] + [0] * (entry - ins.x_size)
                beats = (addr % nb + ins.x_size + nb - 1) // nb
                base = addr - addr % nb
                cmds.append(base | beats << cfg.addr_width)
                faulted |= any(word_touches(base + w * nb, nb, lo, hi, size) for w in range(beats)
                               for lo, hi in errors)
                value = int.from_bytes(bytes(row), "little")
                writes.append(("write", ins.buffer.name, ins.buf_addr + y, value))
        done = [("fault", index)] if faulted else [("push",)] if ins.push_next else []
        groups.append((pops, cmds, writes, done))
    return groups


def check_events(bench, groups, what):
    """The unit's observable behaviour equals the reference, event for event, and read commands fall between
    their instruction's pops and its completion."""
    assert not bench.protocol_errors, f"{what}: {bench.protocol_errors[0]}"
    got = [e[1:] for e in bench.events if e[1] != "cmd"]
    want = [e for pops, _, writes, done in groups for e in pops + writes + done]
    for n, (g, w) in enumerate(zip(got, want)):
        assert g == w, f"{what}: event {n} differs: got {describe(g)}, want {describe(w)}"
    assert len(got) == len(want), (f"{what}: {len(got)} events, want {len(want)}; first extra/missing: "
                                   f"{describe((got + [None])[len(want)] if len(got) > len(want) else want[len(got)])}")
    got_cmds = [e[2] for e in bench.events if e[1] == "cmd"]
    want_cmds = [c for _, cmds, _, _ in groups for c in cmds]
    for n, (g, w) in enumerate(zip(got_cmds, want_cmds)):
        assert g == w, f"{what}: read command {n} is {g:#x}, want {w:#x} (addr | beats << addr_width)"
    assert len(got_cmds) == len(want_cmds), f"{what}: {len(got_cmds)} read commands, want {len(want_cmds)}"
    # Commands of instruction i come after its pops and before its completion events.
    seen, start, owner = 0, 0, []
    for pops, cmds, writes, done in groups:
        owner += [(start + len(pops), start + len(pops) + len(writes))] * len(cmds)
        start += len(pops) + len(writes) + len(done)
    n = 0
    for event in bench.events:
        if event[1] == "cmd":
            lo, hi = owner[n]
            assert lo <= seen <= hi, f"{what}: read command {n} issued outside its instruction (cycle {event[0]})"
            n += 1
        else:
            seen += 1


def describe(event):
    if event and event[0] == "write":
        return f"write {event[1]}[{event[2]}] = {event[3]:#x}"
    return repr(event)


def run(cfg, program, dram, *, seed, tokens=None, errors=(), instr_prob=1.0, cmd_prob=1.0, data_prob=1.0,
        latency=(0, 6), outstanding=4, extra=None, deadline=20_000):
    """Feed ``program`` ((index, instruction) pairs) to a LoadUnit; returns the bench after the unit drained."""
    dut = cfg.unit()
    if tokens is None:
        tokens = sum(ins.pop_next for _, ins in program)
    bench = Bench(dut, tokens=tokens, seed=seed)
    slave = ReadSlave(dut, bench, dram, seed=seed, cmd_prob=cmd_prob, data_prob=data_prob, latency=latency,
                      outstanding=outstanding, errors=errors)
    bench.slave = slave

    async def feeder(ctx):
        throttle = Throttle(instr_prob, seed + 4)
        for index, ins in program:
            await stream_put(ctx, dut.instr, {"word": encode(ins), "index": index}, throttle)
        await ctx.tick().until(dut.idle)
        await ctx.tick().repeat(2)

    processes = [feeder] if extra is None else [feeder, extra(dut, bench)]
    run_simulation(dut, *processes, background=[bench.monitor, slave.accept, slave.serve],
                   deadline_cycles=deadline)
    # Finalise the suspended background coroutines now: left to a later garbage collection, their finalisers can
    # run inside pytest's ast.parse of a failure report and trip CPython 3.11.7's "AST constructor recursion
    # depth mismatch" (gh-106905), which turns a test failure into an INTERNALERROR.
    gc.collect()
    return bench


def random_load(rng, cfg, wrap):
    buffer = Buffer(int(rng.integers(0, 3)))
    entry, depth = cfg.entry_bytes(buffer), cfg.depth(buffer)
    x_size = int(rng.integers(1, entry + 1)) if rng.random() < 0.7 else entry
    y_size = int(rng.integers(1, min(20, depth) + 1))
    choice = rng.integers(0, 4)
    stride = [x_size, x_size + int(rng.integers(1, 2 * cfg.bus_bytes)), int(rng.integers(0, 200)), 0][choice]
    stride = min(stride, (DRAM_BYTES - 200) // max(y_size, 1))
    span = (y_size - 1) * stride + x_size
    dram_addr = int(rng.integers(0, DRAM_BYTES)) if wrap else int(rng.integers(0, DRAM_BYTES - span))
    return Load(buffer=buffer, buf_addr=int(rng.integers(0, depth - y_size + 1)), y_size=y_size, x_size=x_size,
                stride=stride, dram_addr=dram_addr, pop_next=bool(rng.random() < 0.3),
                push_next=bool(rng.random() < 0.5))


def random_program(rng, cfg, n):
    wrap = cfg.addr_width == 12
    program = []
    for i in range(n):
        if rng.random() < 0.15:
            ins = Sync(unit=Unit.LOAD, pop_next=bool(rng.random() < 0.5), push_next=bool(rng.random() < 0.5))
        else:
            ins = random_load(rng, cfg, wrap)
        program.append((1000 + 3 * i, ins))
    return program


# ---- Tests ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("seed", range(3))
def test_random_loads(name, seed):
    cfg = CONFIGS[name]
    seed = seed * 100 + list(CONFIGS).index(name)
    rng = np.random.default_rng(seed)
    dram = bytes(rng.integers(0, 256, DRAM_BYTES, dtype=np.uint8))
    program = random_program(rng, cfg, 10)
    probs = dict(instr_prob=float(rng.uniform(0.3, 1)), cmd_prob=float(rng.uniform(0.3, 1)),
                 data_prob=float(rng.uniform(0.3, 1)))
    bench = run(cfg, program, dram, seed=seed, latency=(0, 8), outstanding=int(rng.integers(1, 5)), **probs)
    check_events(bench, expected(cfg, program, dram), f"seed {seed} {name} {probs}")


@pytest.mark.parametrize("seed", range(3))
def test_bus_errors_fault_without_push(seed):
    cfg = CONFIGS["4x3-bus64"]
    rng = np.random.default_rng(seed + 50)
    dram = bytes(rng.integers(0, 256, DRAM_BYTES, dtype=np.uint8))
    program = random_program(rng, cfg, 8)
    # Error ranges around bytes the program reads, so that some instructions fault and others do not.
    loads = [ins for _, ins in program if isinstance(ins, Load)]
    errors = []
    for ins in loads[:2]:
        addr = row_addresses(cfg, ins)[int(rng.integers(0, ins.y_size))] + int(rng.integers(0, ins.x_size))
        errors.append((addr, addr + 1))
    groups = expected(cfg, program, dram, errors=errors)
    faults = [group for group in groups if group[3] and group[3][0][0] == "fault"]
    assert faults, f"seed {seed + 50}: the error ranges {errors} make no instruction fault"
    bench = run(cfg, program, dram, seed=seed, errors=errors, data_prob=0.7)
    check_events(bench, groups, f"seed {seed + 50} errors {errors}")


def test_tokens_pop_before_and_push_after():
    """A LOAD that pops waits for the token without touching the bus; its push follows its last write."""
    cfg = CONFIGS["4x3-bus64"]
    dram = bytes(range(256)) * (DRAM_BYTES // 256)
    program = [(5, Load(buffer=Buffer.PARAM, buf_addr=2, y_size=3, x_size=30, stride=33, dram_addr=0x101,
                        pop_next=True, push_next=True)),
               (6, Sync(unit=Unit.LOAD, pop_next=True, push_next=True)),
               (7, Sync(unit=Unit.LOAD, push_next=True))]
    bench = run(cfg, program, dram, seed=0, tokens=0, extra=lambda dut, bench: grant_tokens(bench, [30, 10]))
    check_events(bench, expected(cfg, program, dram), "tokens")
    assert bench.events[0][1] == "pop", bench.events[:3]
    first_cmd = next(e[0] for e in bench.events if e[1] == "cmd")
    pop_cycle = next(e[0] for e in bench.events if e[1] == "pop")
    assert pop_cycle >= 30 and first_cmd > pop_cycle, (pop_cycle, first_cmd)
    # While waiting for the token the unit is neither busy nor idle; busy from the pop to the push.
    trace = bench.trace
    assert all(not t["busy"] and not t["idle"] for t in trace if t["waiting"]), "busy or idle while waiting"
    pushes = [n for n, t in enumerate(trace) if t["push"]]
    assert not trace[pop_cycle]["busy"], "busy in the cycle of the pop"
    assert all(trace[n]["busy"] for n in range(pop_cycle + 1, pushes[0] + 1)), "not busy while executing"
    last_write = max(e[0] for e in bench.events if e[1] == "write")
    assert pushes[0] == last_write, f"push in cycle {pushes[0]}, last write in cycle {last_write}"
    assert trace[-1]["idle"] and not trace[-1]["busy"]
    # The two SYNCs: pop (second token) then push, and a token-free SYNC just pushes.
    assert [e[1] for e in bench.events[-3:]] == ["pop", "push", "push"]


def grant_tokens(bench, delays):
    """Hand out one token after each of ``delays`` cycles (each counted from the previous grant)."""
    async def process(ctx):
        for delay in delays:
            await ctx.tick().repeat(delay)
            bench.tokens_left += 1
            bench.token_prob = 1.0
        await ctx.tick().until(bench.dut.idle)
    return process


def test_abort_drops_waiting_and_not_started_instructions():
    cfg = CONFIGS["4x3-bus64"]
    dram = bytes(range(256)) * (DRAM_BYTES // 256)
    first = Load(buffer=Buffer.ACT, buf_addr=0, y_size=2, x_size=4, stride=4, dram_addr=0x10, push_next=True)
    waiting = Load(buffer=Buffer.WGT, buf_addr=1, y_size=2, x_size=3, stride=3, dram_addr=0x20, pop_next=True,
                   push_next=True)
    sync = Sync(unit=Unit.LOAD, push_next=True)
    later = Load(buffer=Buffer.ACT, buf_addr=3, y_size=1, x_size=2, dram_addr=0x30, push_next=True)
    kept = Load(buffer=Buffer.ACT, buf_addr=5, y_size=1, x_size=3, dram_addr=0x40, push_next=True)
    program = [(10, first), (11, waiting), (12, sync), (13, later), (9, kept)]

    def abort(dut, bench):
        async def process(ctx):
            # Raise abort (index 10) once the LOAD 11 waits for its token; 12 and 13 arrive while it is high
            # and are dropped too; index 9 is not above abort_index and runs.
            await ctx.tick().until(dut.pop_next.valid)
            await ctx.tick().repeat(5)
            ctx.set(dut.abort_index, 10)
            ctx.set(dut.abort, 1)
            await ctx.tick()
            # The token arrives as soon as the (registered) abort is seen: the dropped LOAD must not take it.
            bench.tokens_left, bench.token_prob = 1, 1.0
        return process

    bench = run(cfg, program, dram, seed=0, tokens=0, extra=abort)
    check_events(bench, expected(cfg, program, dram, dropped={11, 12, 13}), "abort")
    assert all(e[1] != "pop" for e in bench.events), "a dropped instruction popped a token"
    assert bench.trace[-1]["idle"]


def test_abort_spares_started_load():
    """Abort with a smaller index while a LOAD streams: it completes and pushes."""
    cfg = CONFIGS["8x8-bus32"]
    dram = bytes(range(256)) * (DRAM_BYTES // 256)
    program = [(20, Load(buffer=Buffer.PARAM, buf_addr=0, y_size=6, x_size=75, stride=80, dram_addr=0x203,
                         push_next=True))]

    def abort(dut, bench):
        async def process(ctx):
            await ctx.tick().until(dut.rd_cmd.valid & dut.rd_cmd.ready)
            ctx.set(dut.abort_index, 3)
            ctx.set(dut.abort, 1)
            await ctx.tick().until(dut.idle)
        return process

    bench = run(cfg, program, dram, seed=1, extra=abort, data_prob=0.5)
    check_events(bench, expected(cfg, program, dram), "abort after start")


def test_streaming_throughput():
    """Many-row LOADs: commands run ahead of the data and the words stream at one per cycle."""
    cfg = CONFIGS["8x8-bus32"]
    rng = np.random.default_rng(7)
    dram = bytes(rng.integers(0, 256, DRAM_BYTES, dtype=np.uint8))
    ins = Load(buffer=Buffer.PARAM, buf_addr=1, y_size=20, x_size=75, stride=77, dram_addr=0x3, push_next=True)
    latency = 5
    bench = run(cfg, [(0, ins)], dram, seed=7, latency=(latency, latency), outstanding=8)
    check_events(bench, expected(cfg, [(0, ins)], dram), "throughput")
    beats = sum((a % 4 + 75 + 3) // 4 for a in row_addresses(cfg, ins))
    cmds = [e[0] for e in bench.events if e[1] == "cmd"]
    writes = [e[0] for e in bench.events if e[1] == "write"]
    assert bench.slave.max_in_flight >= 2, "no read command was issued while earlier data was pending"
    cycles = writes[-1] - cmds[0]
    assert cycles <= beats + latency + 4, f"{cycles} cycles from first command to last write for {beats} words"


class MasterHarness(wiring.Component):
    """The unit behind the real read arbiter (as requester 1) and AXI4 master, as the accelerator top connects it."""

    def __init__(self, cfg):
        self.unit = cfg.unit()
        self.master = AXI4Master(addr_width=cfg.addr_width, data_width=cfg.data_width)
        self.arbiter = ReadArbiter(cmd_shape=self.master.rd_cmd.payload.shape(),
                                   data_shape=self.master.rd_data.payload.shape())
        super().__init__({})

    def elaborate(self, platform):
        m = Module()
        m.submodules.unit, m.submodules.master, m.submodules.arbiter = self.unit, self.master, self.arbiter
        wiring.connect(m, self.unit.rd_cmd, self.arbiter.rd_cmd_1)
        wiring.connect(m, self.arbiter.rd_data_1, self.unit.rd_data)
        wiring.connect(m, self.arbiter.rd_cmd, self.master.rd_cmd)
        wiring.connect(m, self.master.rd_data, self.arbiter.rd_data)
        return m


def axi_read_slave(bus, dram, nbytes, errors, seed):
    """AR and R processes of an AXI4 slave over ``dram``: random AR ready, random R gaps, SLVERR on a beat that
    touches a byte of ``errors``."""
    bursts = deque()
    rng = np.random.default_rng(seed + 5)

    async def address(ctx):
        async for _, _, valid, ready, addr, length in ctx.tick().sample(bus.ar.valid, bus.ar.ready, bus.ar.addr,
                                                                         bus.ar.len):
            if valid and ready:
                bursts.append((addr, length + 1))
            ctx.set(bus.ar.ready, bool(rng.random() < 0.7))

    async def read(ctx):
        while True:
            while not bursts:
                await ctx.tick()
            addr, beats = bursts.popleft()
            for i in range(beats):
                while rng.random() < 0.3:
                    await ctx.tick()
                word = addr + i * nbytes
                ctx.set(bus.r.data, sum(dram[(word + b) % len(dram)] << (8 * b) for b in range(nbytes)))
                error = any(word_touches(word, nbytes, lo, hi, len(dram)) for lo, hi in errors)
                ctx.set(bus.r.resp, 2 if error else 0)
                ctx.set(bus.r.last, i == beats - 1)
                ctx.set(bus.r.valid, 1)
                await ctx.tick().until(bus.r.ready)
                ctx.set(bus.r.valid, 0)

    return [address, read]


@pytest.mark.parametrize("name", ["8x8-bus32", "40x4-bus256-wrap"])
def test_through_axi_master(name):
    """Random LOADs through the real ReadArbiter and AXI4Master, with an AXI4 slave model on the bus."""
    cfg = CONFIGS[name]
    seed = 77 + list(CONFIGS).index(name)
    rng = np.random.default_rng(seed)
    dram = bytes(rng.integers(0, 256, DRAM_BYTES, dtype=np.uint8))
    program = random_program(rng, cfg, 6)
    loads = [ins for _, ins in program if isinstance(ins, Load)]
    addr = row_addresses(cfg, loads[-1])[0]
    errors = [(addr, addr + 1)]
    harness = MasterHarness(cfg)
    bench = Bench(harness.unit, tokens=sum(ins.pop_next for _, ins in program), seed=seed)

    async def feeder(ctx):
        for index, ins in program:
            await stream_put(ctx, harness.unit.instr, {"word": encode(ins), "index": index})
        await ctx.tick().until(harness.unit.idle)
        await ctx.tick().repeat(2)

    slave = axi_read_slave(harness.master.bus, dram, cfg.bus_bytes, errors, seed)
    run_simulation(harness, feeder, background=[bench.monitor, *slave], deadline_cycles=30_000)
    gc.collect()
    check_events(bench, expected(cfg, program, dram, errors=errors), f"seed {seed} {name} through the AXI master")


def test_layouts_match_axi_master_and_arbiter():
    master = AXI4Master(addr_width=32, data_width=64)
    unit = CONFIGS["4x3-bus64"].unit()
    assert read_command_layout(32, 64) == master.rd_cmd.payload.shape()
    assert read_data_layout(64) == master.rd_data.payload.shape()
    arbiter = ReadArbiter(cmd_shape=master.rd_cmd.payload.shape(), data_shape=master.rd_data.payload.shape())
    m = Module()
    m.submodules += [master, unit, arbiter]
    wiring.connect(m, unit.rd_cmd, arbiter.rd_cmd_1)
    wiring.connect(m, arbiter.rd_data_1, unit.rd_data)
    wiring.connect(m, arbiter.rd_cmd, master.rd_cmd)
    wiring.connect(m, master.rd_data, arbiter.rd_data)


@pytest.mark.parametrize("kwargs, match", [
    ({"rows": 0}, r"Row count must be a positive integer, not 0"),
    ({"cols": "8"}, r"Column count must be a positive integer, not '8'"),
    ({"act_depth": 0}, r"ACT depth must be an integer from 1 to 65536, not 0"),
    ({"wgt_depth": 1 << 17}, r"WGT depth must be an integer from 1 to 65536, not 131072"),
    ({"param_depth": True}, r"PARAM depth must be an integer from 1 to 65536, not True"),
    ({"data_width": 48}, r"AXI data width must be one of \(32, 64, 128, 256\), not 48"),
    ({"addr_width": 8}, r"Address width must be an integer from 12 to 64, not 8"),
])
def test_parameter_validation(kwargs, match):
    params = dict(rows=4, cols=4, act_depth=16, wgt_depth=16, param_depth=4) | kwargs
    with pytest.raises(ValueError, match=match):
        LoadUnit(**params)


def test_properties():
    unit = CONFIGS["8x8-bus32"].unit()
    assert (unit.rows, unit.cols, unit.act_depth, unit.wgt_depth, unit.param_depth) == (8, 8, 40, 24, 21)
    assert (unit.bytes_per_word, unit.entry_bytes(Buffer.PARAM), unit.command_latency, unit.write_latency) == \
        (4, 75, 2, 1)
    assert len(unit.param_wr_data) == 8 * 75 and len(unit.act_wr_addr) == 6


@pytest.mark.parametrize("name", ["4x3-bus64", "40x4-bus256-wrap"])
def test_verilog(name):
    text = verilog.convert(CONFIGS[name].unit(), name="load_unit")
    assert "module load_unit" in text and "rd_cmd__valid" in text and "param_wr_data" in text
