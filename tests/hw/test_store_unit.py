"""StoreUnit against a Python reference DRAM: the testbench plays the GEMM engine (checks st_cmd's parameters
against the PARAM bytes, returns rows computed with ref_epilogue on a test-held accumulator array) and the AXI
master's write side (random latency, outstanding responses, back-pressure, bus errors); random STOREs with any
alignment/stride/width in int8 and raw mode compared byte for byte over the whole DRAM; token order, SYNC, abort,
faults, busy/idle, streaming throughput, validation and Verilog."""

from __future__ import annotations

import gc
from collections import deque
from dataclasses import dataclass

import numpy as np
import pytest
from amaranth import Module, Value, unsigned
from amaranth.back import verilog
from amaranth.lib import wiring
from amaranth.lib.memory import Memory

from hw.axi4_master import AXI4Master
from hw.gemm_engine import GemmEngine
from hw.isa import Store, Sync, Unit, encode
from hw.store_unit import StoreUnit, param_entry_layout
from sim.amaranth_helpers import Throttle, run_simulation, stream_get, stream_put
from sim.arith import INT32_MAX, INT32_MIN
from sim.golden_blocks import ref_epilogue

DRAM_BYTES = 4096


@dataclass(frozen=True)
class Config:
    rows: int
    cols: int
    acc_depth: int = 32
    param_depth: int = 5
    data_width: int = 64
    addr_width: int = 32

    def unit(self) -> StoreUnit:
        return StoreUnit(rows=self.rows, cols=self.cols, acc_depth=self.acc_depth, param_depth=self.param_depth,
                         data_width=self.data_width, addr_width=self.addr_width)

    @property
    def bus_bytes(self) -> int:
        return self.data_width // 8

    @property
    def param_bytes(self) -> int:
        return 9 * self.cols + 3


CONFIGS = {
    "4x3-bus64": Config(rows=4, cols=3),
    "8x8-bus32": Config(rows=8, cols=8, data_width=32),
    "2x5-bus128": Config(rows=2, cols=5, data_width=128),
    # A 12-bit bus wraps inside the 4 KiB test DRAM.
    "3x9-bus256-wrap": Config(rows=3, cols=9, acc_depth=64, data_width=256, addr_width=12),
}


# ---- PARAM entries and the engine's rows ----------------------------------------------------------------------------

def random_params(rng, cols):
    """In-spec epilogue parameters of one PARAM entry (as ref_epilogue takes them, raw excluded)."""
    bounds = np.sort(rng.integers(-128, 128, size=2))
    return {"bias": rng.integers(INT32_MIN, INT32_MAX, size=cols, endpoint=True) >> int(rng.integers(0, 31)),
            "multiplier": rng.integers(1 << 30, 1 << 31, size=cols),
            "shift": rng.integers(-31, 32, size=cols),
            "zero_point": int(rng.integers(-128, 128)), "act_min": int(bounds[0]), "act_max": int(bounds[1])}


def pack_params(p, cols) -> bytes:
    """The PARAM entry bytes of ``docs/isa.md``: bias, multiplier int32 x cols, shift int8 x cols, zp, min, max."""
    out = b"".join(int(v).to_bytes(4, "little", signed=True) for v in p["bias"])
    out += b"".join(int(v).to_bytes(4, "little", signed=True) for v in p["multiplier"])
    out += b"".join(int(v).to_bytes(1, "little", signed=True) for v in p["shift"])
    out += b"".join(int(p[k]).to_bytes(1, "little", signed=True) for k in ("zero_point", "act_min", "act_max"))
    assert len(out) == 9 * cols + 3
    return out


def engine_rows(acc, ins, params):
    """What the engine returns for ``ins``: the epilogue of its accumulator rows."""
    rows = acc[ins.acc_addr:ins.acc_addr + ins.count]
    return ref_epilogue(rows, dict(params, raw=int(ins.raw)))


def row_bytes(values, ins) -> bytes:
    values = [int(v) for v in values[:ins.n_cols]]
    if ins.raw:
        return b"".join(v.to_bytes(4, "little", signed=True) for v in values)
    return bytes(v & 0xFF for v in values)


def row_addresses(cfg, ins):
    mask = (1 << cfg.addr_width) - 1
    return [(ins.dram_addr + r * ins.stride) & mask for r in range(ins.count)]


# ---- Testbench --------------------------------------------------------------------------------------------------

class Harness(wiring.Component):
    """The unit with a PARAM memory on its read port."""

    def __init__(self, cfg, param_entries):
        self.unit = cfg.unit()
        self.param_mem = Memory(shape=unsigned(8 * cfg.param_bytes), depth=cfg.param_depth,
                                init=[int.from_bytes(e, "little") for e in param_entries])
        super().__init__({})

    def elaborate(self, platform):
        m = Module()
        m.submodules.unit, m.submodules.param_mem = self.unit, self.param_mem
        rp = self.param_mem.read_port()
        m.d.comb += [rp.addr.eq(self.unit.param_rd_addr), rp.en.eq(self.unit.param_rd_en),
                     self.unit.param_rd_data.eq(rp.data)]
        return m


class Bench:
    """Clock, token supply, the engine and the write side of the AXI master, and an event log."""

    def __init__(self, cfg, dut, dram, acc, params, program, *, seed, tokens, errors=(), cmd_prob=1.0,
                 data_prob=1.0, resp_prob=1.0, st_prob=1.0, out_prob=1.0, latency=(0, 6), outstanding=4,
                 rows_fn=None, dropped=()):
        self.cfg, self.dut, self.unit = cfg, dut, dut.unit
        self.dram = dram                  # bytearray, written by the write slave
        self.acc, self.params = acc, params
        # The STOREs the engine will see, in order (the test says which ones the unit should drop).
        self.stores = [(i, ins) for i, ins in program if isinstance(ins, Store) and i not in dropped]
        self.rows_fn = rows_fn or (lambda ins: engine_rows(acc, ins, params[ins.param_addr]))
        self.rng = np.random.default_rng(seed + 3)
        self.throttles = {name: Throttle(p, seed + n) for n, (name, p) in enumerate(
            (("cmd", cmd_prob), ("data", data_prob), ("resp", resp_prob), ("st", st_prob), ("out", out_prob)))}
        self.latency, self.outstanding, self.errors = latency, outstanding, errors
        self.cycle = 0
        self.events, self.trace, self.problems = [], [], []
        self.tokens_left, self.token_prob = tokens, 0.3
        self.commands = deque()           # (addr, beats) of accepted commands whose words are still to come
        self.responses = deque()          # (cycle due, error) of commands whose words all came
        self.overlapped = False           # a write command was accepted while responses were pending
        self.data_cycles = []

    async def monitor(self, ctx):
        u = self.unit
        watched = {"st_cmd": u.st_cmd, "wr_cmd": u.wr_cmd, "wr_data": u.wr_data}
        held = dict.fromkeys(watched)
        available = 0
        ctx.set(u.pop_prev.ready, 0)
        signals = [u.pop_prev.valid, u.pop_prev.ready, u.push_prev, u.fault, u.fault_index, u.busy, u.idle,
                   u.wr_resp.valid, u.wr_resp.ready]
        for s in watched.values():
            signals += [s.valid, s.ready, Value.cast(s.payload)]
        async for _, _, *v in ctx.tick().sample(*signals):
            pop_valid, pop_ready, push, fault, fault_index, busy, idle, resp_valid, resp_ready = v[:9]
            for n, (name, s) in enumerate(watched.items()):
                valid, ready, payload = v[9 + 3 * n:12 + 3 * n]
                if held[name] is not None and (not valid or payload != held[name]):
                    self.problems.append(f"cycle {self.cycle}: {name} changed before its handshake")
                held[name] = payload if valid and not ready else None
                if valid and ready:
                    if name == "st_cmd":
                        self.events.append((self.cycle, "st_cmd"))
                    elif name == "wr_cmd":
                        self.events.append((self.cycle, "cmd"))
                    else:
                        self.data_cycles.append(self.cycle)
            if pop_valid and pop_ready:
                self.events.append((self.cycle, "pop"))
                available -= 1
            if resp_valid and resp_ready:
                self.events.append((self.cycle, "resp"))
            if push:
                self.events.append((self.cycle, "push"))
            if fault:
                self.events.append((self.cycle, "fault", fault_index))
            self.trace.append({"busy": busy, "idle": idle, "waiting": pop_valid and not pop_ready,
                               "pop": pop_valid and pop_ready, "push": push})
            if self.tokens_left and self.rng.random() < self.token_prob:
                self.tokens_left -= 1
                available += 1
            ctx.set(u.pop_prev.ready, available > 0)
            self.cycle += 1

    async def engine(self, ctx):
        """Receives each st_cmd, checks it against the STORE it should belong to and returns that STORE's rows."""
        while True:
            cmd = await stream_get(ctx, self.unit.st_cmd, self.throttles["st"])
            if not self.stores:
                self.problems.append(f"cycle {self.cycle}: an st_cmd with no STORE left to run")
                continue
            index, ins = self.stores.pop(0)
            self.check_command(cmd, index, ins)
            for row in self.rows_fn(ins):
                await stream_put(ctx, self.unit.out, [int(v) for v in row], self.throttles["out"])

    def check_command(self, cmd, index, ins):
        p = self.params[ins.param_addr]
        cols = self.cfg.cols
        want = {"acc_addr": ins.acc_addr, "count": ins.count, "raw": int(ins.raw),
                "bias": [int(v) for v in p["bias"]], "multiplier": [int(v) for v in p["multiplier"]],
                "shift": [((int(v) + 32) & 63) - 32 for v in p["shift"]],
                "zero_point": p["zero_point"], "act_min": p["act_min"], "act_max": p["act_max"]}
        params = cmd.params
        got = {"acc_addr": cmd.acc_addr, "count": cmd.count, "raw": params.raw,
               "bias": [params.bias[c] for c in range(cols)],
               "multiplier": [params.multiplier[c] for c in range(cols)],
               "shift": [params.shift[c] for c in range(cols)],
               "zero_point": params.zero_point, "act_min": params.act_min, "act_max": params.act_max}
        for key in want:
            if got[key] != want[key]:
                self.problems.append(f"st_cmd of STORE {index}: {key} is {got[key]}, want {want[key]}")

    def touches_error(self, addr):
        return any(lo <= addr % len(self.dram) < hi for lo, hi in self.errors)

    async def write_commands(self, ctx):
        """Accepts write commands while fewer than ``outstanding`` are unanswered."""
        while True:
            while len(self.commands) + len(self.responses) >= self.outstanding:
                await ctx.tick()
            cmd = await stream_get(ctx, self.unit.wr_cmd, self.throttles["cmd"])
            if self.commands or self.responses:
                self.overlapped = True
            self.commands.append((int(cmd.addr), int(cmd.beats)))

    async def write_data(self, ctx):
        """Takes the words of the oldest accepted command (applying strobes), then queues its response."""
        nb = self.cfg.bus_bytes
        while True:
            while not self.commands:
                await ctx.tick()
            addr, beats = self.commands[0]
            if addr % nb:
                self.problems.append(f"write command address {addr:#x} is not word aligned")
            error = False
            for w in range(beats):
                word = await stream_get(ctx, self.unit.wr_data, self.throttles["data"])
                value, strb = int(word.data), int(word.strb)
                if strb == 0:
                    self.problems.append(f"word {w} of the write command at {addr:#x} has no strobe set")
                for i in range(nb):
                    if strb >> i & 1:
                        byte_addr = (addr + w * nb + i) % len(self.dram)
                        if self.touches_error(byte_addr):
                            error = True
                        else:
                            self.dram[byte_addr] = value >> (8 * i) & 0xFF
            self.commands.popleft()
            self.responses.append((self.cycle + int(self.rng.integers(*self.latency, endpoint=True)), error))

    async def respond(self, ctx):
        while True:
            while not self.responses or self.cycle < self.responses[0][0]:
                await ctx.tick()
            _, error = self.responses[0]
            await stream_put(ctx, self.unit.wr_resp, {"error": error}, self.throttles["resp"])
            self.responses.popleft()


# ---- Reference --------------------------------------------------------------------------------------------------

def expected(cfg, program, dram, acc, params, errors=(), dropped=(), rows_fn=None):
    """The reference DRAM image and, per instruction, (pops, st_cmd, write commands, responses, completion)."""
    dram = bytearray(dram)
    groups = []
    for index, ins in program:
        if index in dropped:
            continue
        pops = [("pop",)] if ins.pop_prev else []
        body, cmds, faulted = [], 0, False
        if isinstance(ins, Store):
            rows = rows_fn(ins) if rows_fn else engine_rows(acc, ins, params[ins.param_addr])
            body = [("st_cmd",)] + [("resp",)] * ins.count
            cmds = ins.count
            for addr, row in zip(row_addresses(cfg, ins), rows):
                for i, b in enumerate(row_bytes(row, ins)):
                    a = (addr + i) % len(dram)
                    if any(lo <= a < hi for lo, hi in errors):
                        faulted = True
                    else:
                        dram[a] = b
        done = [("fault", index)] if faulted else [("push",)] if ins.push_prev else []
        groups.append((pops, body, cmds, done))
    return dram, groups


def check(bench, want_dram, groups, what):
    assert not bench.problems, f"{what}: {bench.problems[0]}"
    got = [e[1:] for e in bench.events if e[1] != "cmd"]
    want = [e for pops, body, _, done in groups for e in pops + body + done]
    for n, (g, w) in enumerate(zip(got, want)):
        assert g == w, f"{what}: event {n} is {g}, want {w}"
    assert len(got) == len(want), f"{what}: {len(got)} events, want {len(want)}: {got[len(want):] or want[len(got):]}"
    # Write commands come after their STORE's st_cmd and before its completion.
    owner, start = [], 0
    for pops, body, cmds, done in groups:
        owner += [(start + len(pops) + 1, start + len(pops) + len(body))] * cmds
        start += len(pops) + len(body) + len(done)
    seen, n = 0, 0
    for event in bench.events:
        if event[1] == "cmd":
            lo, hi = owner[n]
            assert lo <= seen <= hi, f"{what}: write command {n} outside its STORE (cycle {event[0]})"
            n += 1
        else:
            seen += 1
    assert n == len(owner), f"{what}: {n} write commands, want {len(owner)}"
    bad = [a for a in range(len(want_dram)) if bench.dram[a] != want_dram[a]]
    assert not bad, (f"{what}: {len(bad)} DRAM bytes differ; first at {bad[0]:#x}: got {bench.dram[bad[0]]:#04x}, "
                     f"want {want_dram[bad[0]]:#04x}")


def run(cfg, program, *, seed, params=None, acc=None, dram=None, tokens=None, instr_prob=1.0, extra=None,
        deadline=20_000, **kwargs):
    """Run ``program`` ((index, instruction) pairs) on a StoreUnit; returns (bench, reference DRAM, groups)."""
    rng = np.random.default_rng(seed + 9)
    if params is None:
        params = [random_params(rng, cfg.cols) for _ in range(cfg.param_depth)]
    if acc is None:
        acc = rng.integers(INT32_MIN, INT32_MAX, size=(cfg.acc_depth, cfg.cols), endpoint=True)
        acc >>= rng.integers(0, 32, size=acc.shape)
    if dram is None:
        dram = bytes(rng.integers(0, 256, DRAM_BYTES, dtype=np.uint8))
    if tokens is None:
        tokens = sum(ins.pop_prev for _, ins in program)
    dut = Harness(cfg, [pack_params(p, cfg.cols) for p in params])
    bench = Bench(cfg, dut, bytearray(dram), acc, params, program, seed=seed, tokens=tokens, **kwargs)
    unit = dut.unit

    async def feeder(ctx):
        throttle = Throttle(instr_prob, seed + 7)
        for index, ins in program:
            await stream_put(ctx, unit.instr, {"word": encode(ins), "index": index}, throttle)
        await ctx.tick().until(unit.idle)
        await ctx.tick().repeat(2)

    processes = [feeder] if extra is None else [feeder, extra(unit, bench)]
    background = [bench.monitor, bench.engine, bench.write_commands, bench.write_data, bench.respond]
    run_simulation(dut, *processes, background=background,
                   deadline_cycles=deadline)
    # Finalise the suspended background coroutines now rather than inside pytest's failure reporting, where
    # CPython 3.11.7 can turn their finalisers into an INTERNALERROR (gh-106905).
    gc.collect()
    return bench, dram, acc, params


def random_store(rng, cfg, wrap):
    count = int(rng.integers(1, min(20, cfg.acc_depth) + 1))
    n_cols = int(rng.integers(1, cfg.cols + 1)) if rng.random() < 0.7 else cfg.cols
    raw = bool(rng.random() < 0.5)
    size = 4 * n_cols if raw else n_cols
    stride = [size, size + int(rng.integers(1, 2 * cfg.bus_bytes)), int(rng.integers(0, 200)), 0][rng.integers(0, 4)]
    stride = min(stride, (DRAM_BYTES - 200) // count)
    span = (count - 1) * stride + size
    dram_addr = int(rng.integers(0, DRAM_BYTES)) if wrap else int(rng.integers(0, DRAM_BYTES - span))
    return Store(acc_addr=int(rng.integers(0, cfg.acc_depth - count + 1)), count=count,
                 param_addr=int(rng.integers(0, cfg.param_depth)), n_cols=n_cols, stride=stride,
                 dram_addr=dram_addr, raw=raw, pop_prev=bool(rng.random() < 0.3), push_prev=bool(rng.random() < 0.5))


def random_program(rng, cfg, n):
    program = []
    for i in range(n):
        if rng.random() < 0.15:
            ins = Sync(unit=Unit.STORE, pop_prev=bool(rng.random() < 0.5), push_prev=bool(rng.random() < 0.5))
        else:
            ins = random_store(rng, cfg, cfg.addr_width == 12)
        program.append((500 + 7 * i, ins))
    return program


# ---- Tests ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("seed", range(3))
def test_random_stores(name, seed):
    cfg = CONFIGS[name]
    seed = seed * 100 + list(CONFIGS).index(name)
    rng = np.random.default_rng(seed)
    program = random_program(rng, cfg, 10)
    probs = {k: float(rng.uniform(0.3, 1)) for k in ("instr_prob", "cmd_prob", "data_prob", "resp_prob",
                                                      "st_prob", "out_prob")}
    bench, dram, acc, params = run(cfg, program, seed=seed, latency=(0, 8), outstanding=int(rng.integers(1, 5)),
                                   **probs)
    want_dram, groups = expected(cfg, program, dram, acc, params)
    check(bench, want_dram, groups, f"seed {seed} {name} {probs}")


@pytest.mark.parametrize("seed", range(2))
def test_bus_errors_fault_without_push(seed):
    cfg = CONFIGS["4x3-bus64"]
    rng = np.random.default_rng(seed + 60)
    program = random_program(rng, cfg, 6)
    stores = [ins for _, ins in program if isinstance(ins, Store)]
    errors = []
    for ins in stores[:2]:
        r = int(rng.integers(0, ins.count))
        addr = row_addresses(cfg, ins)[r] + int(rng.integers(0, ins.n_cols))
        errors.append((addr, addr + 1))
    bench, dram, acc, params = run(cfg, program, seed=seed, errors=errors, data_prob=0.7)
    want_dram, groups = expected(cfg, program, dram, acc, params, errors=errors)
    faults = [g for g in groups if g[3] and g[3][0][0] == "fault"]
    assert faults, f"seed {seed + 60}: the error ranges {errors} make no instruction fault"
    check(bench, want_dram, groups, f"seed {seed + 60} errors {errors}")


def test_shift_bytes_feed_six_bit_shift():
    """Out-of-spec shift bytes: st_cmd carries their low 6 bits as signed(6), whatever the high bits hold."""
    cfg = CONFIGS["8x8-bus32"]
    rng = np.random.default_rng(5)
    params = [random_params(rng, cfg.cols) for _ in range(cfg.param_depth)]
    params[3]["shift"] = np.array([0x45, -0x1F, -128, 127, 0x20, -0x21, 31, -31]) .astype(np.int64)
    program = [(0, Store(acc_addr=2, count=3, param_addr=3, n_cols=8, stride=8, dram_addr=0x100, push_prev=True))]
    rows = np.arange(24).reshape(3, 8) - 12
    bench, dram, acc, params = run(cfg, program, seed=5, params=params, rows_fn=lambda ins: rows)
    want_dram, groups = expected(cfg, program, dram, acc, params, rows_fn=lambda ins: rows)
    check(bench, want_dram, groups, "shift bytes")


def test_tokens_pop_before_and_push_after():
    cfg = CONFIGS["4x3-bus64"]
    program = [(5, Store(acc_addr=1, count=4, param_addr=2, n_cols=3, stride=13, dram_addr=0x203, raw=True,
                         pop_prev=True, push_prev=True)),
               (6, Sync(unit=Unit.STORE, pop_prev=True, push_prev=True)),
               (7, Sync(unit=Unit.STORE, push_prev=True))]

    def grant(unit, bench):
        async def process(ctx):
            for delay in (30, 10):
                await ctx.tick().repeat(delay)
                bench.tokens_left, bench.token_prob = bench.tokens_left + 1, 1.0
        return process

    bench, dram, acc, params = run(cfg, program, seed=2, tokens=0, extra=grant, latency=(3, 9))
    want_dram, groups = expected(cfg, program, dram, acc, params)
    check(bench, want_dram, groups, "tokens")
    pop_cycle = bench.events[0][0]
    assert bench.events[0][1] == "pop" and pop_cycle >= 30, bench.events[:2]
    trace = bench.trace
    assert all(not t["busy"] and not t["idle"] for t in trace if t["waiting"]), "busy or idle while waiting"
    pushes = [n for n, t in enumerate(trace) if t["push"]]
    assert not trace[pop_cycle]["busy"], "busy in the cycle of the pop"
    assert all(trace[n]["busy"] for n in range(pop_cycle + 1, pushes[0] + 1)), "not busy while executing"
    last_resp = max(e[0] for e in bench.events if e[1] == "resp")
    assert pushes[0] == last_resp + cfg.unit().completion_latency, (pushes[0], last_resp)
    assert trace[-1]["idle"] and not trace[-1]["busy"]
    assert [e[1] for e in bench.events[-3:]] == ["pop", "push", "push"]


def test_abort_drops_waiting_and_not_started_instructions():
    cfg = CONFIGS["4x3-bus64"]
    first = Store(acc_addr=0, count=2, param_addr=0, n_cols=3, stride=3, dram_addr=0x10, push_prev=True)
    waiting = Store(acc_addr=2, count=2, param_addr=1, n_cols=2, stride=2, dram_addr=0x20, pop_prev=True,
                    push_prev=True)
    sync = Sync(unit=Unit.STORE, push_prev=True)
    later = Store(acc_addr=4, count=1, param_addr=1, n_cols=1, dram_addr=0x30, push_prev=True)
    kept = Store(acc_addr=5, count=1, param_addr=2, n_cols=3, dram_addr=0x40, raw=True, push_prev=True)
    program = [(10, first), (11, waiting), (12, sync), (13, later), (9, kept)]

    def abort(unit, bench):
        async def process(ctx):
            await ctx.tick().until(unit.pop_prev.valid)
            await ctx.tick().repeat(5)
            ctx.set(unit.abort_index, 10)
            ctx.set(unit.abort, 1)
            await ctx.tick()
            # The token arrives as soon as the (registered) abort is seen: the dropped STORE must not take it.
            bench.tokens_left, bench.token_prob = 1, 1.0
        return process

    bench, dram, acc, params = run(cfg, program, seed=3, tokens=0, extra=abort, dropped={11, 12, 13})
    want_dram, groups = expected(cfg, program, dram, acc, params, dropped={11, 12, 13})
    check(bench, want_dram, groups, "abort")
    assert all(e[1] != "pop" for e in bench.events), "a dropped instruction popped a token"
    assert bench.trace[-1]["idle"]


def test_abort_in_the_cycle_before_st_cmd():
    """Abort rising after the PARAM read but before st_cmd is offered still drops the STORE."""
    cfg = CONFIGS["4x3-bus64"]
    program = [(4, Store(acc_addr=0, count=2, param_addr=0, n_cols=3, dram_addr=0x10, push_prev=True))]

    def abort(unit, bench):
        async def process(ctx):
            await ctx.tick().until(unit.param_rd_en)
            ctx.set(unit.abort_index, 3)
            ctx.set(unit.abort, 1)
        return process

    bench, dram, acc, params = run(cfg, program, seed=4, extra=abort, dropped={4})
    want_dram, groups = expected(cfg, program, dram, acc, params, dropped={4})
    check(bench, want_dram, groups, "abort before st_cmd")


def test_streaming_throughput():
    """Back-to-back rows: write commands run ahead of pending responses and words go out one per cycle."""
    for cfg, ins in ((CONFIGS["8x8-bus32"], Store(acc_addr=0, count=20, param_addr=1, n_cols=8, stride=35,
                                                     dram_addr=0x101, raw=True, push_prev=True)),
                     (CONFIGS["4x3-bus64"], Store(acc_addr=0, count=20, param_addr=1, n_cols=1, stride=8,
                                                     dram_addr=0x103, push_prev=True))):
        program = [(0, ins)]
        bench, dram, acc, params = run(cfg, program, seed=11, latency=(4, 4), outstanding=16)
        want_dram, groups = expected(cfg, program, dram, acc, params)
        check(bench, want_dram, groups, f"throughput {ins}")
        assert bench.overlapped, "no write command was accepted while responses were pending"
        nb = cfg.bus_bytes
        size = 4 * ins.n_cols if ins.raw else ins.n_cols
        words = sum((a % nb + size + nb - 1) // nb for a in row_addresses(cfg, ins))
        span = bench.data_cycles[-1] - bench.data_cycles[0] + 1
        assert len(bench.data_cycles) == words and span == words, f"{words} words took {span} cycles"


class MasterHarness(Harness):
    """The unit and its PARAM memory with the real AXI4 master on the write side, as the accelerator top connects it."""

    def __init__(self, cfg, param_entries):
        self.master = AXI4Master(addr_width=cfg.addr_width, data_width=cfg.data_width)
        super().__init__(cfg, param_entries)

    def elaborate(self, platform):
        m = super().elaborate(platform)
        m.submodules.master = self.master
        wiring.connect(m, self.unit.wr_cmd, self.master.wr_cmd)
        wiring.connect(m, self.unit.wr_data, self.master.wr_data)
        wiring.connect(m, self.master.wr_resp, self.unit.wr_resp)
        return m


def axi_write_slave(bus, bench, nbytes, seed):
    """AW, W and B processes of an AXI4 slave writing ``bench.dram``: random ready/valid, SLVERR for a burst with a
    strobed byte in ``bench.errors`` (such bytes are not written)."""
    bursts, responses = deque(), deque()
    rng = np.random.default_rng(seed + 5)

    async def address(ctx):
        async for _, _, valid, ready, addr in ctx.tick().sample(bus.aw.valid, bus.aw.ready, bus.aw.addr):
            if valid and ready:
                bursts.append(addr)
            ctx.set(bus.aw.ready, bool(rng.random() < 0.7))

    async def write(ctx):
        word, error = None, False
        async for _, _, valid, ready, data, strb, last in ctx.tick().sample(
                bus.w.valid, bus.w.ready, bus.w.data, bus.w.strb, bus.w.last):
            if valid and ready:
                if word is None:
                    word = bursts.popleft()
                for i in range(nbytes):
                    if strb >> i & 1:
                        a = (word + i) % len(bench.dram)
                        if bench.touches_error(a):
                            error = True
                        else:
                            bench.dram[a] = data >> (8 * i) & 0xFF
                word += nbytes
                if last:
                    responses.append(error)
                    word, error = None, False
            # W beats are only taken for a burst whose address was accepted, as AXI allows a slave to do.
            ctx.set(bus.w.ready, bool(bursts or word is not None) and bool(rng.random() < 0.7))

    async def respond(ctx):
        while True:
            while not responses:
                await ctx.tick()
            await ctx.tick().repeat(int(rng.integers(1, 4)))
            ctx.set(bus.b.resp, 2 if responses.popleft() else 0)
            ctx.set(bus.b.valid, 1)
            await ctx.tick().until(bus.b.ready)
            ctx.set(bus.b.valid, 0)

    return [address, write, respond]


@pytest.mark.parametrize("name", ["8x8-bus32", "3x9-bus256-wrap"])
def test_through_axi_master(name):
    """Random STOREs through the real AXI4Master, with an AXI4 slave model on the bus and one failing byte."""
    cfg = CONFIGS[name]
    seed = 88 + list(CONFIGS).index(name)
    rng = np.random.default_rng(seed)
    program = random_program(rng, cfg, 6)
    stores = [ins for _, ins in program if isinstance(ins, Store)]
    addr = row_addresses(cfg, stores[-1])[-1]
    errors = [(addr, addr + 1)]
    params = [random_params(rng, cfg.cols) for _ in range(cfg.param_depth)]
    acc = rng.integers(INT32_MIN, INT32_MAX, size=(cfg.acc_depth, cfg.cols), endpoint=True) >> 8
    dram = bytes(rng.integers(0, 256, DRAM_BYTES, dtype=np.uint8))
    harness = MasterHarness(cfg, [pack_params(p, cfg.cols) for p in params])
    bench = Bench(cfg, harness, bytearray(dram), acc, params, program, seed=seed, errors=errors,
                  tokens=sum(ins.pop_prev for _, ins in program))

    async def feeder(ctx):
        for index, ins in program:
            await stream_put(ctx, harness.unit.instr, {"word": encode(ins), "index": index})
        await ctx.tick().until(harness.unit.idle)
        await ctx.tick().repeat(2)

    slave = axi_write_slave(harness.master.bus, bench, cfg.bus_bytes, seed)
    run_simulation(harness, feeder, background=[bench.monitor, bench.engine, *slave], deadline_cycles=30_000)
    gc.collect()
    want_dram, groups = expected(cfg, program, dram, acc, params, errors=errors)
    assert any(g[3] and g[3][0][0] == "fault" for g in groups)
    check(bench, want_dram, groups, f"seed {seed} {name} through the AXI master")


def test_layouts_match_axi_master_and_engine():
    cfg = CONFIGS["4x3-bus64"]
    master = AXI4Master(addr_width=32, data_width=64)
    engine = GemmEngine(rows=cfg.rows, cols=cfg.cols, acc_depth=cfg.acc_depth)
    unit = cfg.unit()
    m = Module()
    m.submodules += [master, engine, unit]
    wiring.connect(m, unit.wr_cmd, master.wr_cmd)
    wiring.connect(m, unit.wr_data, master.wr_data)
    wiring.connect(m, master.wr_resp, unit.wr_resp)
    wiring.connect(m, unit.st_cmd, engine.st_cmd)
    wiring.connect(m, engine.out, unit.out)
    assert param_entry_layout(cfg.cols).size == 8 * cfg.param_bytes


@pytest.mark.parametrize("kwargs, match", [
    ({"rows": -1}, r"Row count must be a positive integer, not -1"),
    ({"cols": 0}, r"Column count must be a positive integer, not 0"),
    ({"acc_depth": 24}, r"Accumulator depth must be a power of two of at least 2, not 24"),
    ({"param_depth": 0}, r"PARAM depth must be an integer from 1 to 65536, not 0"),
    ({"data_width": 16}, r"AXI data width must be one of \(32, 64, 128, 256\), not 16"),
    ({"addr_width": 65}, r"Address width must be an integer from 12 to 64, not 65"),
])
def test_parameter_validation(kwargs, match):
    params = dict(rows=4, cols=4, acc_depth=16, param_depth=4) | kwargs
    with pytest.raises(ValueError, match=match):
        StoreUnit(**params)


def test_properties():
    unit = CONFIGS["8x8-bus32"].unit()
    assert (unit.rows, unit.cols, unit.acc_depth, unit.param_depth, unit.bytes_per_word) == (8, 8, 32, 5, 4)
    assert (unit.command_latency, unit.row_latency, unit.completion_latency) == (3, 1, 1)
    assert len(unit.param_rd_data) == 8 * 75 and len(unit.param_rd_addr) == 3


@pytest.mark.parametrize("name", ["4x3-bus64", "3x9-bus256-wrap"])
def test_verilog(name):
    text = verilog.convert(CONFIGS[name].unit(), name="store_unit")
    assert "module store_unit" in text and "wr_data__payload" in text and "st_cmd__payload" in text
