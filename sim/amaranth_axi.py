"""The whole accelerator under Amaranth's own simulator: an AXI4 RAM and an AXI4-Lite host as Python testbenches.

:func:`run_program` does on :class:`hw.accelerator.Accelerator` (the Amaranth design itself, no Verilog) what a
driver does on the RTL backends: IRQ_ENABLE = 1, PROG_ADDR, PROG_LEN, CTRL = 1, clock until ``irq`` (or a cycle
budget), then read STATUS, ERROR_INDEX and the counters. :class:`AxiRam` answers the ``bus`` master port from a
NumPy DRAM image, in place: INCR bursts, any beat size up to the bus width, WSTRB, W beats before their AW, read
data in order, ARREADY/AWREADY/WREADY always high and read data and write responses in the cycle after they are
due (the Verilator harness with ``read_latency=0``). Accesses past the end of the image answer DECERR. It exists
to compare simulators (``make bench``): the same program on the same design, but here each cycle costs Python.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from hw.isa import HardwareConfig
from hw.regmap import COUNTERS, OFFSETS, STATUS_BUSY, STATUS_DONE, status_error

__all__ = ["AxiRam", "AmaranthRunResult", "csr_write", "csr_read", "run_program"]

_OKAY, _DECERR = 0, 3
_CSR_TIMEOUT = 1000   # cycles one register access may take


class AxiRam:
    """AXI4 slave on an Amaranth ``bus`` (master view, :class:`hw.axi.AXI4Signature`) over ``dram`` (uint8, 1-D).

    Add :meth:`serve` as a background testbench. Writes land in ``dram`` as the beats arrive; ``protocol_errors``
    lists the AXI rules the master broke (non-INCR bursts, WLAST on the wrong beat).
    """

    def __init__(self, bus, dram: np.ndarray, *, bus_bytes: int):
        if not isinstance(dram, np.ndarray) or dram.dtype != np.uint8 or dram.ndim != 1:
            raise TypeError("dram must be a 1-D numpy uint8 array (the DRAM image)")
        if bus_bytes not in (4, 8, 16):
            raise ValueError(f"bus_bytes must be 4, 8 or 16, not {bus_bytes!r}")
        self.bus, self.dram, self.bus_bytes = bus, dram, bus_bytes
        self.protocol_errors: list[str] = []
        self.read_beats = self.write_beats = 0

    def _beat_word(self, burst) -> int:
        """Bus-aligned address of the burst's current beat."""
        size = 1 << burst["size"]
        addr = burst["addr"] if burst["beat"] == 0 else (burst["addr"] & ~(size - 1)) + burst["beat"] * size
        return addr & ~(self.bus_bytes - 1)

    def _read_word(self, word: int) -> tuple[int, int]:
        if word >= self.dram.size:
            return 0, _DECERR
        chunk = self.dram[word:word + self.bus_bytes].tobytes()
        return int.from_bytes(chunk, "little"), _OKAY

    def _write_word(self, word: int, data: int, strb: int) -> int:
        raw = data.to_bytes(self.bus_bytes, "little")
        resp = _OKAY
        for lane in range(self.bus_bytes):
            if strb >> lane & 1:
                if word + lane >= self.dram.size:
                    resp = _DECERR
                else:
                    self.dram[word + lane] = raw[lane]
        return resp

    async def serve(self, ctx) -> None:
        """The RAM, one iteration per clock edge (run as a background testbench)."""
        bus = self.bus
        ar, aw, w, r, b = bus.ar, bus.aw, bus.w, bus.r, bus.b
        for ready in (ar.ready, aw.ready, w.ready):
            ctx.set(ready, 1)
        reads, writes, wbeats, bresps = deque(), deque(), deque(), deque()
        r_valid = b_valid = False
        sampled = (ar.valid, ar.addr, ar.len, ar.size, ar.burst, ar.id,
                   aw.valid, aw.addr, aw.len, aw.size, aw.burst, aw.id,
                   w.valid, w.data, w.strb, w.last, r.ready, b.ready)
        async for (_, _, arv, araddr, arlen, arsize, arburst, arid, awv, awaddr, awlen, awsize, awburst, awid,
                   wv, wdata, wstrb, wlast, rready, bready) in ctx.tick().sample(*sampled):
            # The handshakes of the edge that just happened.
            if arv:
                if arburst != 1:
                    self.protocol_errors.append(f"AR burst type {arburst} is not INCR")
                reads.append({"addr": araddr, "beats": arlen + 1, "beat": 0, "size": arsize, "id": arid})
            if awv:
                if awburst != 1:
                    self.protocol_errors.append(f"AW burst type {awburst} is not INCR")
                writes.append({"addr": awaddr, "beats": awlen + 1, "beat": 0, "size": awsize, "id": awid,
                               "resp": _OKAY})
            if wv:
                wbeats.append((wdata, wstrb, wlast))
            while writes and wbeats:
                data, strb, last = wbeats.popleft()
                burst = writes[0]
                burst["resp"] = max(burst["resp"], self._write_word(self._beat_word(burst), data, strb))
                self.write_beats += 1
                final = burst["beat"] + 1 == burst["beats"]
                if bool(last) != final:
                    self.protocol_errors.append(f"WLAST={last} on beat {burst['beat']} of a {burst['beats']}-beat "
                                                f"burst at {burst['addr']:#x}")
                burst["beat"] += 1
                if final or last:
                    bresps.append((burst["resp"], burst["id"]))
                    writes.popleft()
            if r_valid and rready:
                self.read_beats += 1
                burst = reads[0]
                burst["beat"] += 1
                if burst["beat"] == burst["beats"]:
                    reads.popleft()
                r_valid = False
            if b_valid and bready:
                bresps.popleft()
                b_valid = False
            # What the master sees in the next cycle.
            if not r_valid and reads:
                burst = reads[0]
                data, resp = self._read_word(self._beat_word(burst))
                ctx.set(r.data, data)
                ctx.set(r.resp, resp)
                ctx.set(r.id, burst["id"])
                ctx.set(r.last, burst["beat"] + 1 == burst["beats"])
                r_valid = True
            if not b_valid and bresps:
                ctx.set(b.resp, bresps[0][0])
                ctx.set(b.id, bresps[0][1])
                b_valid = True
            ctx.set(r.valid, r_valid)
            ctx.set(b.valid, b_valid)


async def csr_write(ctx, csr, offset: int, value: int) -> int:
    """One AXI4-Lite write (address and data together); returns the number of cycles it took."""
    ctx.set(csr.aw.addr, offset)
    ctx.set(csr.aw.valid, 1)
    ctx.set(csr.w.data, value)
    ctx.set(csr.w.strb, 0xF)
    ctx.set(csr.w.valid, 1)
    ctx.set(csr.b.ready, 1)
    aw_done = w_done = False
    cycles = 0
    async for _, _, aw_ready, w_ready, b_valid, b_resp in ctx.tick().sample(csr.aw.ready, csr.w.ready,
                                                                             csr.b.valid, csr.b.resp):
        cycles += 1
        if aw_ready and not aw_done:
            aw_done = True
            ctx.set(csr.aw.valid, 0)
        if w_ready and not w_done:
            w_done = True
            ctx.set(csr.w.valid, 0)
        if b_valid:
            ctx.set(csr.b.ready, 0)
            if b_resp != _OKAY:
                raise RuntimeError(f"register write of {value:#x} to offset {offset:#x} answered response {b_resp}")
            return cycles
        if cycles >= _CSR_TIMEOUT:
            raise TimeoutError(f"register write to offset {offset:#x} got no response in {_CSR_TIMEOUT} cycles")


async def csr_read(ctx, csr, offset: int) -> tuple[int, int]:
    """One AXI4-Lite read; returns (value, cycles)."""
    ctx.set(csr.ar.addr, offset)
    ctx.set(csr.ar.valid, 1)
    ctx.set(csr.r.ready, 1)
    cycles = 0
    async for _, _, ar_ready, r_valid, r_data, r_resp in ctx.tick().sample(csr.ar.ready, csr.r.valid, csr.r.data,
                                                                            csr.r.resp):
        cycles += 1
        if ar_ready:
            ctx.set(csr.ar.valid, 0)
        if r_valid:
            ctx.set(csr.r.ready, 0)
            if r_resp != _OKAY:
                raise RuntimeError(f"register read of offset {offset:#x} answered response {r_resp}")
            return r_data, cycles
        if cycles >= _CSR_TIMEOUT:
            raise TimeoutError(f"register read of offset {offset:#x} got no response in {_CSR_TIMEOUT} cycles")


@dataclass
class AmaranthRunResult:
    """Outcome of :func:`run_program`.

    ``completed`` is whether ``irq`` rose within the cycle budget (the registers are read either way).
    ``cycles`` counts the cycles from the CTRL write to ``irq`` (or to the budget), ``total_cycles`` every
    simulated cycle (register accesses too), ``wall_s`` the seconds ``Simulator.run`` took (``cpu_s`` the
    process's CPU time in them) and ``setup_s`` the elaboration before it.
    """
    completed: bool
    status: int
    error: int
    error_index: int
    counters: dict
    cycles: int
    total_cycles: int
    wall_s: float
    cpu_s: float
    setup_s: float
    protocol_errors: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.completed and bool(self.status & STATUS_DONE) and not self.status & STATUS_BUSY \
            and self.error == 0

    @property
    def cycles_per_second(self) -> float:
        return self.total_cycles / self.wall_s if self.wall_s > 0 else float("inf")


def run_program(config: HardwareConfig, dram: np.ndarray, prog_addr: int, prog_len: int, *,
                max_cycles: int = 100_000) -> AmaranthRunResult:
    """Run the program at ``prog_addr`` on ``dram`` (in place) on the Amaranth simulation of ``config``'s
    accelerator; stop after ``max_cycles`` cycles from the start if ``irq`` has not risen by then."""
    from amaranth.sim import Simulator

    from hw.accelerator import Accelerator

    if not isinstance(config, HardwareConfig):
        raise TypeError(f"config must be a hw.isa.HardwareConfig, not {type(config).__name__}")
    if isinstance(max_cycles, bool) or not isinstance(max_cycles, int) or max_cycles < 1:
        raise ValueError(f"max_cycles must be a positive integer, not {max_cycles!r}")
    setup_start = time.perf_counter()
    dut = Accelerator(rows=config.rows, cols=config.cols, act_depth=config.act_depth, wgt_depth=config.wgt_depth,
                      acc_depth=config.acc_depth, param_depth=config.param_depth, data_width=8 * config.bus_bytes)
    ram = AxiRam(dut.bus, dram, bus_bytes=config.bus_bytes)
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    outcome = {}

    async def host(ctx):
        total = 0
        for name, value in (("irq_enable", 1), ("prog_addr", prog_addr), ("prog_len", prog_len), ("ctrl", 1)):
            total += await csr_write(ctx, dut.csr, OFFSETS[name], value)
        cycles = 0
        completed = False
        async for _, _, irq in ctx.tick().sample(dut.irq):
            cycles += 1
            if irq:
                completed = True
                break
            if cycles >= max_cycles:
                break
        registers = {}
        for name in ("status", "error_index", *COUNTERS):
            registers[name], spent = await csr_read(ctx, dut.csr, OFFSETS[name])
            total += spent
        outcome.update(registers=registers, cycles=cycles, completed=completed, total=total + cycles)

    sim.add_testbench(host)
    sim.add_testbench(ram.serve, background=True)
    start, start_cpu = time.perf_counter(), time.process_time()
    sim.run()
    wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    registers = outcome["registers"]
    return AmaranthRunResult(
        completed=outcome["completed"], status=registers["status"], error=status_error(registers["status"]),
        error_index=registers["error_index"], counters={name: registers[name] for name in COUNTERS},
        cycles=outcome["cycles"], total_cycles=outcome["total"], wall_s=wall, cpu_s=cpu,
        setup_s=start - setup_start,
        protocol_errors=list(ram.protocol_errors))
