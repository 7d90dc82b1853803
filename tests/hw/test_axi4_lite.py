"""Tests of hw.axi4_lite.AXI4LiteRegisters: parameter validation and a quick Amaranth-simulator check here, the
cocotb suite (tests/hw/cocotb_axi4_lite.py) on Icarus and Verilator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from amaranth.back import verilog

from hw.axi4_lite import AXI4LiteRegisters
from sim.amaranth_helpers import run_simulation
from sim.cocotb_runner import run_cocotb


HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SEED = 20240612

REGISTERS = [
    ("ctrl", 0x000, "rw", 0x5),
    ("scale", 0x004, "rw", 0),
    ("status", 0x008, "ro", 0),
    ("cycles", 0x00C, "ro", 0),
    ("start", 0x010, "pulse", 0),
    ("clear", 0x020, "pulse", 0),
    ("cfg", 0xFFC, "rw", 0xCAFE_0000),
]


@pytest.mark.parametrize("registers, addr_width, error, match", [
    ([("a", 0, "rw"), ("a", 4, "ro")], 12, NameError, r"Register name 'a' is used twice \(offsets 0x0 and 0x4\)"),
    ([("a", 8, "rw"), ("b", 8, "ro")], 12, ValueError, r"Register offset 0x8 is used twice \('a' and 'b'\)"),
    ([("a", 6, "rw")], 12, ValueError, r"Register 'a' offset must be a multiple of 4 \(32-bit registers\), not 0x6"),
    ([("a", 0, "wo")], 12, ValueError, r"Register 'a' access must be one of \('rw', 'ro', 'pulse'\), not 'wo'"),
    ([("a", 0x1000, "rw")], 12, ValueError, r"Register 'a' offset 0x1000 does not fit in addr_width=12"),
    ([("bus", 0, "rw")], 12, NameError, r"Register name must be a Python identifier .* not 'bus'"),
    ([("2x", 0, "rw")], 12, NameError, r"Register name must be a Python identifier .* not '2x'"),
    ([("a", 0, "rw"), ("a_we", 4, "ro")], 12, NameError, r"'a_we' clashes with the write-enable port of rw"),
    ([("a", 0, "ro", 3)], 12, ValueError, r"Register 'a' init applies only to rw registers, not 'ro' ones"),
    ([("a", 0)], 12, TypeError, r"Register \('a', 0\) must be a tuple \(name, offset, access\)"),
    ([], 12, ValueError, r"Registers must not be empty"),
    ([("a", 0, "rw")], 2, ValueError, r"Address width must be an integer from 3 to 32, not 2"),
])
def test_rejects_bad_register_maps(registers, addr_width, error, match):
    with pytest.raises(error, match=match):
        AXI4LiteRegisters(registers=registers, addr_width=addr_width)


def test_ports():
    regs = AXI4LiteRegisters(registers=REGISTERS)
    text = verilog.convert(regs, name="regs")
    for port in ("output [31:0] ctrl;", "output ctrl_we;", "input [31:0] status;", "output start;",
                 "input [11:0] bus__aw__addr;", "output [1:0] bus__b__resp;"):
        assert port in text, f"{port!r} missing from the generated Verilog"
    assert regs.read_latency == 1 and regs.registers[0] == ("ctrl", 0, "rw", 5)


def test_amaranth_write_before_address():
    """W a few cycles before AW: the write still lands, with one ctrl_we pulse and an OKAY response."""
    dut = AXI4LiteRegisters(registers=REGISTERS)
    bus = dut.bus
    log = {}

    async def tb(ctx):
        ctx.set(bus.w.valid, 1)
        ctx.set(bus.w.data, 0x1234_5678)
        ctx.set(bus.w.strb, 0b0011)
        await ctx.tick().until(bus.w.ready)
        ctx.set(bus.w.valid, 0)
        await ctx.tick().repeat(3)
        assert ctx.get(dut.ctrl) == 5 and not ctx.get(bus.b.valid), "wrote without an address"
        ctx.set(bus.aw.valid, 1)
        ctx.set(bus.aw.addr, 0x000)
        await ctx.tick().until(bus.aw.ready)
        ctx.set(bus.aw.valid, 0)
        ctx.set(bus.b.ready, 1)
        resp, we, value = await ctx.tick().sample(bus.b.resp, dut.ctrl_we, dut.ctrl).until(bus.b.valid)
        log["b"] = (resp, we, value)

    run_simulation(dut, tb, deadline_cycles=200)
    assert log["b"] == (0, 1, 0x5678), f"B response, ctrl_we, ctrl = {log['b']}"


@pytest.mark.cocotb
@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
def test_axi4_lite_cocotb(simulator):
    build_dir = ROOT / "build" / "cocotb" / "axi4_lite" / simulator
    build_dir.mkdir(parents=True, exist_ok=True)
    source = build_dir / "axi4_lite_regs.v"
    text = verilog.convert(AXI4LiteRegisters(registers=REGISTERS, addr_width=12), name="axi4_lite_regs")
    if not source.exists() or source.read_text() != text:
        source.write_text(text)
    run_cocotb(simulator, verilog=source, toplevel="axi4_lite_regs", test_module=HERE / "cocotb_axi4_lite.py",
               build_dir=build_dir,
               extra_env={"REGISTERS": json.dumps(REGISTERS), "SEED": SEED, "ADDR_WIDTH": 12,
                          "NUM_OPS": 150 if simulator == "icarus" else 600, "TIMEOUT_US": 2000})


@pytest.mark.parametrize("addr,resp,changes", [(0x008, 2, False), (0x100, 2, False), (0x004, 0, True)])
def test_amaranth_write_responses(addr, resp, changes):
    """A write to a read-only (0x008) or unmapped (0x100) offset answers SLVERR and changes nothing; a rw one OKAY."""
    dut = AXI4LiteRegisters(registers=REGISTERS)
    bus = dut.bus
    log = {}

    async def tb(ctx):
        ctx.set(bus.aw.valid, 1)
        ctx.set(bus.aw.addr, addr)
        ctx.set(bus.w.valid, 1)
        ctx.set(bus.w.data, 0xDEAD_BEEF)
        ctx.set(bus.w.strb, 0b1111)
        ctx.set(bus.b.ready, 1)
        log["resp"], = await ctx.tick().sample(bus.b.resp).until(bus.b.valid)
        ctx.set(bus.aw.valid, 0)
        ctx.set(bus.w.valid, 0)
        await ctx.tick().repeat(2)
        log["scale"] = ctx.get(dut.scale)

    run_simulation(dut, tb, deadline_cycles=200)
    assert log["resp"] == resp, f"write to {addr:#x}: BRESP {log['resp']}, want {resp}"
    assert (log["scale"] == 0xDEAD_BEEF) == changes
