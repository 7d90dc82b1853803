"""cocotb host model of the accelerator: plays the CPU (AXI4-Lite) and the DRAM (AXI4 RAM) around the RTL top.

Used by the accelerator's testbenches and by the driver's ``icarus`` backend. The DRAM image is placed through the
RAM model's backdoor, the program is started through the registers of :mod:`hw.regmap` exactly as a driver would,
and completion is awaited on ``irq`` with a cycle watchdog.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge

from hw.regmap import CONFIG_REGISTERS, COUNTERS, OFFSETS, STATUS_BUSY, STATUS_DONE, status_error

from .axi_models import AxiLiteMaster, AxiRam, read_signal

__all__ = ["AcceleratorHost", "RunResult", "COUNTERS", "CONFIG_REGISTERS"]

#: Clock period of the accelerator under cocotb (cycles = simulated ns / CLOCK_NS).
CLOCK_NS = 10



@dataclass
class RunResult:
    status: int
    error: int
    error_index: int
    counters: dict = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return bool(self.status & STATUS_DONE)


class AcceleratorHost:
    """Clock, reset, an AxiRam on ``bus`` and an AxiLiteMaster on ``csr`` of the accelerator top ``dut``."""

    def __init__(self, dut, *, mem_size: int, seed: int, latency=(0, 8), stall_prob=0.3):
        self.dut = dut
        self.seed = seed
        Clock(dut.clk, CLOCK_NS, unit="ns").start()
        self.ram = AxiRam((dut, "bus"), dut.clk, mem_size, seed=seed, latency=latency, stall_prob=stall_prob)
        self.csr = None
        self.cycle = 0

    async def reset(self):
        self.dut.rst.value = 1
        for _ in range(3):
            await RisingEdge(self.dut.clk)
        self.dut.rst.value = 0
        await RisingEdge(self.dut.clk)
        self.csr = AxiLiteMaster((self.dut, "csr"), self.dut.clk, seed=self.seed)
        self.ram.start()

    async def read_config(self) -> dict:
        return {name: await self.csr.read(OFFSETS[name]) for name in CONFIG_REGISTERS}

    async def read_counters(self) -> dict:
        return {name: await self.csr.read(OFFSETS[name]) for name in COUNTERS}

    async def run(self, image, *, prog_addr: int, prog_len: int, max_cycles: int, load_image=True) -> RunResult:
        """Copy ``image`` into DRAM (backdoor), start the program and wait for ``irq``; returns status/counters.

        Raises TimeoutError if the accelerator is still busy after ``max_cycles`` (the seed is in the message).
        """
        if load_image:
            self.ram.mem[:len(image)] = bytes(image)
        await self.csr.write(OFFSETS["irq_enable"], 1)
        await self.csr.write(OFFSETS["prog_addr"], prog_addr)
        await self.csr.write(OFFSETS["prog_len"], prog_len)
        await self.csr.write(OFFSETS["ctrl"], 1)
        for cycle in range(max_cycles):
            await ReadOnly()
            if read_signal(self.dut.irq):
                break
            await RisingEdge(self.dut.clk)
        else:
            status = await self.csr.read(OFFSETS["status"])
            counters = await self.read_counters()
            raise TimeoutError(f"accelerator still running after {max_cycles} cycles (watchdog; seed {self.seed}, "
                               f"STATUS={status:#x}, counters {counters})")
        await RisingEdge(self.dut.clk)
        status = await self.csr.read(OFFSETS["status"])
        result = RunResult(status=status, error=status_error(status),
                           error_index=await self.csr.read(OFFSETS["error_index"]),
                           counters=await self.read_counters())
        if status & STATUS_BUSY or not status & STATUS_DONE:
            raise AssertionError(f"irq high but STATUS={status:#x} is not DONE and idle (seed {self.seed})")
        self.ram.check()
        return result
