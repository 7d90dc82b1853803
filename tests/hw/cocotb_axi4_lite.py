"""cocotb tests of hw.axi4_lite.AXI4LiteRegisters with sim.axi_models.AxiLiteMaster (run by test_axi4_lite.py).

Environment: REGISTERS (JSON list of [name, offset, access, init], the map the Verilog was built with), SEED,
NUM_OPS (random operations), TIMEOUT_US.
"""

from __future__ import annotations

import json
import os
import random

import cocotb
import pytest
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge

from sim.axi_models import SLVERR, AxiLiteMaster, AxiResponseError, read_signal

REGISTERS = [tuple(r) for r in json.loads(os.environ["REGISTERS"])]
SEED = int(os.environ.get("SEED", "1"))
NUM_OPS = int(os.environ.get("NUM_OPS", "100"))
TIMEOUT_US = int(os.environ.get("TIMEOUT_US", "1000"))
ADDR_WIDTH = int(os.environ.get("ADDR_WIDTH", "12"))
BY_OFFSET = {offset: (name, access, init) for name, offset, access, init in REGISTERS}
RW = [name for name, _, access, _ in REGISTERS if access == "rw"]
RO = [name for name, _, access, _ in REGISTERS if access == "ro"]
PULSE = [name for name, _, access, _ in REGISTERS if access == "pulse"]
UNMAPPED = [a for a in (0x14, 0x18, 0x800, 0xFF8) if a not in BY_OFFSET]


class Bench:
    """Clock, reset, the AXI4-Lite master, a Python model of the registers and a pulse/_we counter."""

    def __init__(self, dut, seed: int):
        self.dut, self.seed = dut, seed
        self.rng = random.Random(seed)
        self.model = {name: init for name, _, access, init in REGISTERS if access == "rw"}
        self.events = {name: 0 for name in [f"{n}_we" for n in RW] + PULSE}  # cycles each strobe was high
        self.expected_events = dict(self.events)

    async def start(self):
        dut = self.dut
        Clock(dut.clk, 10, unit="ns").start()
        for name in RO:
            getattr(dut, name).value = 0
        dut.rst.value = 1
        self.master = AxiLiteMaster((dut, "bus"), dut.clk, timeout_cycles=200, seed=self.seed)
        for _ in range(3):
            await RisingEdge(dut.clk)
        dut.rst.value = 0
        await RisingEdge(dut.clk)
        cocotb.start_soon(self._count_strobes())

    async def _count_strobes(self):
        handles = {name: getattr(self.dut, name) for name in self.events}
        while True:
            await ReadOnly()
            for name, handle in handles.items():
                if read_signal(handle):
                    self.events[name] += 1
                    if name.endswith("_we"):  # the new value is visible in the strobe's cycle
                        reg = name[:-3]
                        got = read_signal(getattr(self.dut, reg))
                        assert got == self.model[reg], (f"seed {self.seed}: {reg} is {got:#x} while {name} is "
                                                        f"high, expected {self.model[reg]:#x}")
            await RisingEdge(self.dut.clk)

    def where(self) -> str:
        return f"seed {self.seed} (rerun with SEED={self.seed})"

    async def write(self, offset: int, value: int, *, strb: int = 0xF, order: str = "together"):
        """Write through the bus and check the response, register value and strobes against the model."""
        entry = BY_OFFSET.get(offset & ~3)
        expect_error = entry is None or entry[1] == "ro"
        if not expect_error:
            name, access, _ = entry
            if access == "rw":
                mask = sum(0xFF << 8 * i for i in range(4) if strb >> i & 1)
                self.model[name] = self.model[name] & ~mask | value & mask
                self.expected_events[f"{name}_we"] += 1
            else:
                self.expected_events[name] += 1
        resp = await self.master.write_resp(offset, value, strb=strb, order=order)
        assert (resp == SLVERR) == expect_error and resp in (0, SLVERR), \
            f"{self.where()}: write {value:#x} to {offset:#x} ({order}) answered {resp}, expected " \
            f"{'SLVERR' if expect_error else 'OKAY'}"
        for _ in range(2):  # strobes are registered: let them land before comparing counts
            await RisingEdge(self.dut.clk)
        assert self.events == self.expected_events, \
            f"{self.where()}: after writing {offset:#x}, strobe counts {self.events}, expected {self.expected_events}"
        for name in RW:
            got = read_signal(getattr(self.dut, name))
            assert got == self.model[name], f"{self.where()}: port {name} is {got:#x}, expected {self.model[name]:#x}"

    async def read(self, offset: int, ro_values: dict | None = None):
        entry = BY_OFFSET.get(offset & ~3)
        for name, value in (ro_values or {}).items():
            getattr(self.dut, name).value = value
        if entry is None:
            want = (0, SLVERR)
        elif entry[1] == "rw":
            want = (self.model[entry[0]], 0)
        elif entry[1] == "ro":
            want = (ro_values[entry[0]], 0)
        else:
            want = (0, 0)
        got = await self.master.read_resp(offset)
        assert got == want, f"{self.where()}: read {offset:#x} gave (data, resp) {got}, expected {want}"


def offset_of(name: str) -> int:
    return next(offset for n, offset, _, _ in REGISTERS if n == name)


@cocotb.test(timeout_time=TIMEOUT_US, timeout_unit="us")
async def reset_values_and_readback(dut):
    bench = Bench(dut, SEED)
    await bench.start()
    for name in RW:
        await bench.read(offset_of(name))
    for name in RW:
        await bench.write(offset_of(name), 0xA5A5_0000 | offset_of(name))
        await bench.read(offset_of(name))


@cocotb.test(timeout_time=TIMEOUT_US, timeout_unit="us")
async def byte_strobes(dut):
    bench = Bench(dut, SEED + 1)
    await bench.start()
    reg = offset_of(RW[0])
    await bench.write(reg, 0x11223344)
    for strb in (0b0001, 0b0010, 0b0100, 0b1000, 0b0110, 0b0000, 0b1111):
        await bench.write(reg, 0xDEADBEEF ^ strb, strb=strb)
        await bench.read(reg)


@cocotb.test(timeout_time=TIMEOUT_US, timeout_unit="us")
async def read_only_and_pulse(dut):
    bench = Bench(dut, SEED + 2)
    await bench.start()
    values = {name: 0x1000_0000 * (i + 1) + 0x1234 for i, name in enumerate(RO)}
    for name in RO:
        await bench.read(offset_of(name), values)
        await bench.write(offset_of(name), 0xFFFF_FFFF)  # SLVERR, nothing changes
        await bench.read(offset_of(name), values)
    for name in PULSE:
        await bench.write(offset_of(name), 1)
        await bench.write(offset_of(name), 0)  # any write pulses
        await bench.read(offset_of(name))


@cocotb.test(timeout_time=TIMEOUT_US, timeout_unit="us")
async def unmapped_answers_slverr(dut):
    bench = Bench(dut, SEED + 3)
    await bench.start()
    for offset in UNMAPPED:
        await bench.read(offset)
        await bench.write(offset, 0x12345678)
        with pytest.raises(AxiResponseError, match="SLVERR"):
            await bench.master.read(offset)
        with pytest.raises(AxiResponseError, match="SLVERR"):
            await bench.master.write(offset, 1)
    await bench.read(offset_of(RW[0]))  # still answers normally


@cocotb.test(timeout_time=TIMEOUT_US, timeout_unit="us")
async def address_and_data_in_any_order(dut):
    bench = Bench(dut, SEED + 4)
    await bench.start()
    for i, order in enumerate(["aw_first", "w_first", "together"] * 2):
        name = RW[i % len(RW)]
        await bench.write(offset_of(name), 0x0101_0101 * (i + 1), order=order)
        await bench.read(offset_of(name))
    for order in ("aw_first", "w_first"):
        await bench.write(offset_of(PULSE[0]), 1, order=order)
        await bench.write(UNMAPPED[0], 1, order=order)


@cocotb.test(timeout_time=TIMEOUT_US, timeout_unit="us")
async def random_operations(dut):
    bench = Bench(dut, SEED + 5)
    rng = bench.rng
    dut._log.info(f"random_operations: seed {bench.seed}, {NUM_OPS} operations")
    await bench.start()
    offsets = [offset for _, offset, _, _ in REGISTERS] + UNMAPPED
    ro_values = {name: 0 for name in RO}
    for _ in range(NUM_OPS):
        offset = rng.choice(offsets) | rng.choice([0, 0, 0, 1, 2, 3])  # low address bits are ignored
        if rng.random() < 0.5:
            await bench.write(offset, rng.getrandbits(32), strb=rng.choice([0xF, rng.getrandbits(4)]),
                              order=rng.choice(["together", "aw_first", "w_first"]))
        else:
            ro_values = {name: rng.getrandbits(32) for name in RO}
            await bench.read(offset, ro_values)
