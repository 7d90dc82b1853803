"""cocotb tests of hw.axi4_master.AXI4Master against sim.axi_models.AxiRam (run by test_axi4_master.py).

Parameters come from the environment (the pytest file sets them to match the generated Verilog): ADDR_WIDTH,
DATA_WIDTH, MAX_BURST, NUM_CMDS (random commands per direction), SEED, TIMEOUT_US.
"""

from __future__ import annotations

import os
import random
from collections import deque

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge

from hw.axi4_master import AXI4Master
from sim.axi_models import AxiBus, AxiRam, read_signal

ADDR_WIDTH = int(os.environ.get("ADDR_WIDTH", "32"))
DATA_WIDTH = int(os.environ.get("DATA_WIDTH", "64"))
MAX_BURST = int(os.environ.get("MAX_BURST", "16"))
NUM_CMDS = int(os.environ.get("NUM_CMDS", "6"))
SEED = int(os.environ.get("SEED", "1"))
TIMEOUT_US = int(os.environ.get("TIMEOUT_US", "2000"))
NBYTES = DATA_WIDTH // 8
RAM_SIZE = 64 * 1024
MAX_BEATS = 300

# The Python view of the DUT, for its payload layouts.
_MODEL = AXI4Master(addr_width=ADDR_WIDTH, data_width=DATA_WIDTH, max_burst=MAX_BURST)


def _layout(port):
    return port.payload.shape()


def pack(layout, **fields) -> int:
    value = 0
    for name, field in layout:
        v = fields[name]
        assert 0 <= v < 1 << field.width, f"{name}={v} does not fit {field.width} bits"
        value |= v << field.offset
    return value


def unpack(layout, value: int) -> dict:
    return {name: value >> field.offset & ((1 << field.width) - 1) for name, field in layout}


def split_bursts(addr: int, beats: int) -> list[tuple[int, int]]:
    """Reference burst split: greedy, at most MAX_BURST beats, never across a 4 KiB page."""
    page_words = 4096 // NBYTES
    word, bursts = addr // NBYTES, []
    while beats:
        n = min(beats, MAX_BURST, page_words - word % page_words)
        bursts.append((word * NBYTES, n))
        word += n
        beats -= n
    return bursts


class StreamEndpoint:
    """One lib.stream port of the DUT, driven from the testbench side with seeded random throttling."""

    def __init__(self, dut, name: str, layout, *, source: bool, rng: random.Random, prob: float):
        self.name, self.layout, self.source, self.rng, self.prob = name, layout, source, rng, prob
        self.valid = getattr(dut, f"{name}__valid")
        self.ready = getattr(dut, f"{name}__ready")
        self.payload = getattr(dut, f"{name}__payload")
        self.queue: deque = deque()     # source: payload dicts to send
        self.received: list[dict] = []  # sink: payload dicts received
        self.driving = 0
        (self.valid if source else self.ready).value = 0

    def offer(self) -> bool:
        return self.prob >= 1.0 or self.rng.random() < self.prob


class Streams:
    """Drives all user-side stream ports in one coroutine (sample at ReadOnly, drive after RisingEdge)."""

    def __init__(self, clk, endpoints):
        self.clk = clk
        self.endpoints = {e.name: e for e in endpoints}
        self.cycle = 0
        self._task = cocotb.start_soon(self._run())

    def __getitem__(self, name) -> StreamEndpoint:
        return self.endpoints[name]

    def stop(self):
        self._task.cancel()

    async def _run(self):
        eps = list(self.endpoints.values())
        while True:
            await ReadOnly()
            fired = []
            for e in eps:
                if e.driving and read_signal(e.valid if not e.source else e.ready):
                    fired.append(e)
                    if not e.source:
                        e.received.append(unpack(e.layout, read_signal(e.payload)))
            await RisingEdge(self.clk)
            self.cycle += 1
            for e in eps:
                if e.source:
                    if e in fired:
                        e.queue.popleft()
                        e.driving = 0
                        e.valid.value = 0
                    if not e.driving and e.queue and e.offer():
                        e.payload.value = pack(e.layout, **e.queue[0])
                        e.driving = 1
                        e.valid.value = 1
                else:
                    ready = int(e.offer())
                    if ready != e.driving:
                        e.driving = ready
                        e.ready.value = ready


class Bench:
    """DUT, clock, AxiRam and user-side streams; the Python memory model lives in ``model``."""

    def __init__(self, dut, seed: int, *, stall_prob: float, user_prob: float, ready_before_valid: bool):
        self.dut, self.seed = dut, seed
        self.rng = random.Random(seed)
        self.ram = AxiRam(AxiBus(dut, "bus"), dut.clk, RAM_SIZE, seed=seed, latency=(0, 8), stall_prob=stall_prob,
                          ready_before_valid=ready_before_valid)
        self.ram.mem[:] = self.rng.randbytes(RAM_SIZE)
        self.model = bytearray(self.ram.mem)
        srng = random.Random(seed + 1)
        m = _MODEL
        self.streams = None
        self._eps = [
            StreamEndpoint(dut, "rd_cmd", _layout(m.rd_cmd), source=True, rng=srng, prob=user_prob),
            StreamEndpoint(dut, "rd_data", _layout(m.rd_data), source=False, rng=srng, prob=user_prob),
            StreamEndpoint(dut, "wr_cmd", _layout(m.wr_cmd), source=True, rng=srng, prob=user_prob),
            StreamEndpoint(dut, "wr_data", _layout(m.wr_data), source=True, rng=srng, prob=user_prob),
            StreamEndpoint(dut, "wr_resp", _layout(m.wr_resp), source=False, rng=srng, prob=user_prob),
        ]
        self.expected_reads: list[dict] = []
        self.expected_resps: list[int] = []
        self.read_cmds: list[tuple[int, int]] = []
        self.write_cmds: list[tuple[int, int]] = []

    async def start(self):
        dut = self.dut
        Clock(dut.clk, 10, unit="ns").start()
        dut.rst.value = 1
        for _ in range(3):
            await RisingEdge(dut.clk)
        dut.rst.value = 0
        await RisingEdge(dut.clk)
        self.ram.start()
        self.streams = Streams(dut.clk, self._eps)

    def where(self) -> str:
        return f"seed {self.seed} (rerun with SEED={self.seed})"

    # Commands: queued up front; the DUT takes them one at a time per direction.
    def read(self, addr: int, beats: int) -> None:
        self.read_cmds.append((addr, beats))
        self.streams["rd_cmd"].queue.append({"addr": addr, "beats": beats})
        for i in range(beats):
            word = addr + i * NBYTES
            resp = self.ram.word_resp(word)
            data = int.from_bytes(self.model[word:word + NBYTES], "little") if resp == 0 else 0
            self.expected_reads.append({"data": data, "last": int(i == beats - 1), "error": int(resp >= 2),
                                        "cmd": (addr, beats), "beat": i})

    def write(self, addr: int, beats: int) -> None:
        self.write_cmds.append((addr, beats))
        self.streams["wr_cmd"].queue.append({"addr": addr, "beats": beats})
        error = 0
        for i in range(beats):
            word = addr + i * NBYTES
            data = self.rng.getrandbits(DATA_WIDTH)
            strb = (1 << NBYTES) - 1 if self.rng.random() < 0.5 else self.rng.getrandbits(NBYTES)
            self.streams["wr_data"].queue.append({"data": data, "strb": strb})
            if self.ram.word_resp(word) == 0:
                raw = data.to_bytes(NBYTES, "little")
                for lane in range(NBYTES):
                    if strb >> lane & 1:
                        self.model[word + lane] = raw[lane]
            else:
                error = 1
        self.expected_resps.append(error)

    async def drain(self) -> None:
        """Wait until every queued command completed; then check data, responses, bursts and protocol.

        The wait is bounded by a generous cycle budget from the words still outstanding (a hang fails fast).
        """
        rd, wr = self.streams["rd_data"], self.streams["wr_resp"]
        outstanding = (len(self.expected_reads) - len(rd.received) + len(self.streams["wr_data"].queue)
                       + 64 * (len(self.expected_resps) - len(wr.received)))
        max_cycles = 2000 + 20 * outstanding
        for _ in range(max_cycles):
            await RisingEdge(self.dut.clk)
            if len(rd.received) >= len(self.expected_reads) and len(wr.received) >= len(self.expected_resps):
                break
        else:
            raise AssertionError(f"{self.where()}: only {len(rd.received)}/{len(self.expected_reads)} read words "
                                 f"and {len(wr.received)}/{len(self.expected_resps)} write responses after "
                                 f"{max_cycles} cycles")
        for _ in range(8):  # nothing extra may follow
            await RisingEdge(self.dut.clk)
        self.ram.check()
        assert len(rd.received) == len(self.expected_reads), \
            f"{self.where()}: {len(rd.received)} read words, expected {len(self.expected_reads)}"
        for i, (got, exp) in enumerate(zip(rd.received, self.expected_reads)):
            want = {k: exp[k] for k in ("data", "last", "error")}
            assert got == want, (f"{self.where()}: read word {i} (beat {exp['beat']} of command addr="
                                 f"{exp['cmd'][0]:#x} beats={exp['cmd'][1]}): got {got}, expected {want}")
        got_resps = [r["error"] for r in wr.received]
        assert got_resps == self.expected_resps, \
            f"{self.where()}: write responses (error bits) {got_resps}, expected {self.expected_resps}"
        for name, got_b, cmds in (("AR", self.ram.read_bursts, self.read_cmds),
                                  ("AW", self.ram.write_bursts, self.write_cmds)):
            want_b = [b for a, n in cmds for b in split_bursts(a, n)]
            if got_b != want_b:
                i = next((i for i, (g, w) in enumerate(zip(got_b, want_b)) if g != w), min(len(got_b), len(want_b)))
                raise AssertionError(f"{self.where()}: {name} burst {i} of {len(want_b)} is "
                                     f"{got_b[i] if i < len(got_b) else 'missing'}, the reference split gives "
                                     f"{want_b[i] if i < len(want_b) else 'nothing'} (addr, beats)")
        if self.ram.mem != self.model:
            addr = next(a for a in range(RAM_SIZE) if self.ram.mem[a] != self.model[a])
            raise AssertionError(f"{self.where()}: memory byte {addr:#x} is {self.ram.mem[addr]:#04x}, "
                                     f"expected {self.model[addr]:#04x}")
        assert not read_signal(self.dut.busy), f"{self.where()}: busy still high after all commands completed"


def random_command(rng: random.Random, lo: int, hi: int) -> tuple[int, int]:
    """A word-aligned command inside bytes [lo, hi), often straddling a 4 KiB boundary or a burst multiple."""
    beats = rng.choice([rng.randint(1, MAX_BEATS), rng.randint(1, MAX_BEATS), rng.randint(1, 2 * MAX_BURST),
                        MAX_BURST * rng.randint(1, 4)])
    beats = min(beats, (hi - lo) // NBYTES)
    if rng.random() < 0.4:
        boundary = rng.randrange(lo // 4096 + 1, hi // 4096) * 4096
        addr = boundary - rng.randint(1, min(beats, 2 * MAX_BURST)) * NBYTES
    else:
        addr = lo + rng.randrange(0, (hi - lo) // NBYTES) * NBYTES
    addr = max(lo, min(addr, hi - beats * NBYTES))
    return addr, beats


CORNER_CASES = [  # (addr, beats) in the lower half of the RAM
    (0, 1), (4096 - NBYTES, 1), (4096 - NBYTES, 2), (8192 - MAX_BURST * NBYTES, MAX_BURST),
    (8192 - (MAX_BURST - 1) * NBYTES, MAX_BURST), (12288, MAX_BURST + 1), (16384 - NBYTES, MAX_BEATS),
    (20480, 0),
]


#: (RAM stall probability, RAM raises ready before valid, user-side valid/ready probability) per variant.
VARIANTS = [(0.0, True, 1.0), (0.3, False, 0.7), (0.6, True, 0.4)]


@cocotb.test(timeout_time=TIMEOUT_US, timeout_unit="us")
@cocotb.parametrize(variant=range(len(VARIANTS)))
async def random_traffic(dut, variant):
    """Random reads and writes with back-pressure everywhere; every byte checked against the model."""
    seed = SEED + variant
    rng = random.Random(seed)
    stall_prob, ready_before_valid, user_prob = VARIANTS[variant]
    bench = Bench(dut, seed, stall_prob=stall_prob, user_prob=user_prob, ready_before_valid=ready_before_valid)
    dut._log.info(f"random_traffic: seed {seed}, RAM stall_prob {stall_prob}, ready_before_valid "
                  f"{ready_before_valid}, user valid/ready probability {user_prob}")
    await bench.start()
    half = RAM_SIZE // 2
    # Phase 1: writes to the lower half while reads of the upper half run concurrently.
    for addr, beats in CORNER_CASES:
        bench.write(addr, beats)
        bench.read(addr + half, beats)
    for _ in range(NUM_CMDS):
        bench.write(*random_command(rng, 0, half))
        bench.read(*random_command(rng, half, RAM_SIZE))
    await bench.drain()
    # Phase 2: read back everything written (the model holds the expected bytes).
    for addr, beats in list(bench.write_cmds):
        bench.read(addr, beats)
    await bench.drain()


@cocotb.test(timeout_time=TIMEOUT_US, timeout_unit="us")
async def error_responses(dut):
    """SLVERR and DECERR beats are flagged, writes over them report an error, and the master carries on."""
    seed = SEED + 1000
    rng = random.Random(seed)
    bench = Bench(dut, seed, stall_prob=0.3, user_prob=0.7, ready_before_valid=True)
    await bench.start()
    slverr = (4096 - 3 * NBYTES, 4096 + 2 * NBYTES)  # straddles a page, so two bursts of one command see it
    decerr = (12288 + 5 * NBYTES, 12288 + 6 * NBYTES)
    bench.ram.add_error_range(*slverr, "SLVERR")
    bench.ram.add_error_range(*decerr, "DECERR")
    cmds = [(4096 - 8 * NBYTES, 16), (slverr[0], 1), (decerr[0] - NBYTES, 3), (12288, 40), (decerr[1], 4),
            (0, 5)]
    # Reads, then writes, then reads again: never a read and a write of the same bytes in flight together.
    for addr, beats in cmds:
        bench.read(addr, beats)
    await bench.drain()
    for addr, beats in cmds:
        bench.write(addr, beats)
    await bench.drain()
    for addr, beats in cmds:
        bench.read(addr, beats)
    await bench.drain()
    assert any(e["error"] == 1 for e in bench.expected_reads), "test bug: no read touched an error range"
    assert 0 in bench.expected_resps and 1 in bench.expected_resps, "test bug: write errors not mixed"
    # Normal traffic afterwards, with the error ranges removed.
    bench.ram.clear_error_ranges()
    again = [random_command(rng, 16384, RAM_SIZE) for _ in range(3)] + cmds
    for addr, beats in again:
        bench.write(addr, beats)
    await bench.drain()
    for addr, beats in again:
        bench.read(addr, beats)
    await bench.drain()


@cocotb.test(timeout_time=TIMEOUT_US, timeout_unit="us")
async def full_throughput(dut):
    """With no stalls anywhere, long reads and writes move one word per cycle (bursts back to back)."""
    bench = Bench(dut, SEED + 2000, stall_prob=0.0, user_prob=1.0, ready_before_valid=True)
    bench.ram.latency = (2, 2)
    await bench.start()
    beats = 1024
    for direction in ("read", "write"):
        start = bench.streams.cycle
        getattr(bench, direction)(4096 * 2, beats)
        await bench.drain()
        cycles = bench.streams.cycle - start - 8  # drain() idles 8 cycles at the end
        dut._log.info(f"full_throughput: {beats}-word {direction} took {cycles} cycles")
        assert cycles <= beats + 40, f"{beats}-word {direction} took {cycles} cycles, expected about {beats}"


@cocotb.test(timeout_time=TIMEOUT_US, timeout_unit="us")
async def short_commands_pipelined(dut):
    """One-word commands overlap (the master accepts the next while earlier ones are in flight): with memory
    latency, 256 of them per direction take well under one round trip each (at most two cycles per word with
    this RAM model, which itself spaces AR/AW handshakes; the native harness sees one per cycle)."""
    bench = Bench(dut, SEED + 3000, stall_prob=0.0, user_prob=1.0, ready_before_valid=True)
    bench.ram.latency = (4, 4)
    await bench.start()
    count = 256
    for direction in ("read", "write"):
        start = bench.streams.cycle
        for i in range(count):
            getattr(bench, direction)(4096 * 3 + 3 * i * NBYTES, 1)
        await bench.drain()
        cycles = bench.streams.cycle - start - 8  # drain() idles 8 cycles at the end
        dut._log.info(f"short_commands_pipelined: {count} one-word {direction}s took {cycles} cycles")
        assert cycles <= 2 * count + 40, \
            f"{count} one-word {direction}s took {cycles} cycles, expected at most {2 * count + 40}"
