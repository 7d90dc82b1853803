"""Tests of hw.axi4_master.AXI4Master (and the hw.axi signatures).

Quick Amaranth-simulator checks of parameter validation, port naming and burst splitting in unusual
configurations, then the cocotb suite (tests/hw/cocotb_axi4_master.py) against the AxiRam model on Icarus and
Verilator, with the default configuration the accelerator uses (32-bit addresses, 64-bit data, 16-beat bursts).
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from amaranth.back import verilog

from hw.axi import AXI4LiteSignature, AXI4Signature, verilog_port_map
from hw.axi4_master import AXI4Master
from sim.amaranth_helpers import Throttle, run_simulation, stream_get, stream_put
from sim.cocotb_runner import run_cocotb


HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SEED = 20240611


# ------------------------------------------------------------------ parameters and signatures
@pytest.mark.parametrize("kwargs, match", [
    ({"data_width": 48}, r"AXI data width must be one of \(32, 64, 128, 256\), not 48"),
    ({"addr_width": 8}, r"Address width must be an integer from 12 to 64, not 8"),
    ({"max_burst": 0}, r"Maximum burst length must be an integer from 1 to 256 beats, not 0"),
    ({"max_burst": 257}, r"Maximum burst length must be an integer from 1 to 256 beats, not 257"),
])
def test_master_rejects_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AXI4Master(**kwargs)


def test_signature_validation():
    with pytest.raises(ValueError, match=r"AXI data width must be one of .*, not 24"):
        AXI4Signature(data_width=24)
    with pytest.raises(ValueError, match=r"AXI4 addr_width must be at least 12, not 4"):
        AXI4Signature(addr_width=4)
    with pytest.raises(TypeError, match=r"AXI4 id_width must be an integer, not '2'"):
        AXI4Signature(id_width="2")
    with pytest.raises(ValueError, match=r"AXI4-Lite data width must be 32 or 64, not 128"):
        AXI4LiteSignature(addr_width=12, data_width=128)
    assert AXI4Signature(data_width=128) == AXI4Signature(data_width=128)
    assert AXI4Signature(data_width=128) != AXI4Signature(data_width=64)


def test_verilog_port_names_and_map():
    dut = AXI4Master(addr_width=32, data_width=64, max_burst=16)
    text = verilog.convert(dut, name="axi4_master")
    mapping = verilog_port_map(dut.bus.signature, port="bus", prefix="m_axi")
    assert mapping["bus__ar__addr"] == "m_axi_araddr" and mapping["bus__w__strb"] == "m_axi_wstrb"
    for port in mapping:  # every mapped field exists in the generated Verilog
        assert f" {port};" in text, f"{port} missing from the generated Verilog"
    assert "output [31:0] bus__ar__addr;" in text and "output [7:0] bus__w__strb;" in text
    assert dut.beats_width == 30 and dut.page_words == 512


# ------------------------------------------------------------------ Amaranth-simulator round trip
def reference_split(addr, beats, nbytes, max_burst):
    page_words = 4096 // nbytes
    word, out = addr // nbytes, []
    while beats:
        n = min(beats, max_burst, page_words - word % page_words)
        out.append((word * nbytes, n))
        word, beats = word + n, beats - n
    return out


@pytest.mark.parametrize("data_width, max_burst, cmds", [
    (128, 256, [(4096 - 16 * 20, 300), (8192, 256), (0, 1)]),  # page-limited and 256-beat bursts
    (32, 1, [(4092, 3), (100 * 4, 5)]),                          # single-beat bursts across a page
])
def test_amaranth_read_write(data_width, max_burst, cmds):
    """Writes then reads through a minimal in-order slave; checks bursts, WLAST, strobes and data."""
    rng = random.Random(SEED)
    nbytes = data_width // 8
    dut = AXI4Master(addr_width=32, data_width=data_width, max_burst=max_burst)
    bus = dut.bus
    mem = {}  # word address -> value
    splits = [b for a, n in cmds for b in reference_split(a, n, nbytes, max_burst)]
    seen_aw, seen_ar = [], []
    words = [[(rng.getrandbits(data_width), rng.getrandbits(nbytes)) for _ in range(n)] for _, n in cmds]
    expected = {}
    for (addr, _), ws in zip(cmds, words):
        for i, (value, strb) in enumerate(ws):
            mask = sum(0xFF << 8 * lane for lane in range(nbytes) if strb >> lane & 1)
            old = expected.get(addr + i * nbytes, 0)  # the memory starts at zero; commands may overlap
            expected[addr + i * nbytes] = old & ~mask | value & mask

    async def slave(ctx):
        for _ in splits:
            ctx.set(bus.aw.ready, 1)
            addr, length = await ctx.tick().sample(bus.aw.addr, bus.aw.len).until(bus.aw.valid)
            ctx.set(bus.aw.ready, 0)
            seen_aw.append((addr, length + 1))
            ctx.set(bus.w.ready, 1)
            for beat in range(length + 1):
                value, strb, last = await ctx.tick().sample(bus.w.data, bus.w.strb, bus.w.last).until(bus.w.valid)
                assert last == (beat == length), f"WLAST {last} on beat {beat} of {length + 1}"
                word = addr + beat * nbytes
                old = mem.get(word, 0)
                for lane in range(nbytes):
                    if strb >> lane & 1:
                        old = old & ~(0xFF << 8 * lane) | value & (0xFF << 8 * lane)
                mem[word] = old
            ctx.set(bus.w.ready, 0)
            ctx.set(bus.b.valid, 1)
            ctx.set(bus.b.resp, 0)
            await ctx.tick().until(bus.b.ready)
            ctx.set(bus.b.valid, 0)
        for _ in splits:
            ctx.set(bus.ar.ready, 1)
            addr, length = await ctx.tick().sample(bus.ar.addr, bus.ar.len).until(bus.ar.valid)
            ctx.set(bus.ar.ready, 0)
            seen_ar.append((addr, length + 1))
            for beat in range(length + 1):
                ctx.set(bus.r.data, mem.get(addr + beat * nbytes, 0))
                ctx.set(bus.r.last, beat == length)
                ctx.set(bus.r.valid, 1)
                await ctx.tick().until(bus.r.ready)
            ctx.set(bus.r.valid, 0)

    async def user(ctx):
        for (addr, n), ws in zip(cmds, words):
            await stream_put(ctx, dut.wr_cmd, {"addr": addr, "beats": n})
            for value, strb in ws:
                await stream_put(ctx, dut.wr_data, {"data": value, "strb": strb}, Throttle(0.7, rng.random()))
            resp = await stream_get(ctx, dut.wr_resp)
            assert resp.error == 0
        for addr, n in cmds:
            await stream_put(ctx, dut.rd_cmd, {"addr": addr, "beats": n})
            for i in range(n):
                got = await stream_get(ctx, dut.rd_data, Throttle(0.7, rng.random()))
                want = expected[addr + i * nbytes]
                assert (got.data, got.last, got.error) == (want, int(i == n - 1), 0), \
                    f"seed {SEED}: read word {i} of command ({addr:#x}, {n}): got {got.data:#x}, expected {want:#x}"

    run_simulation(dut, slave, user, deadline_cycles=20_000)
    assert seen_aw == splits, f"AW bursts {seen_aw} differ from the reference split {splits}"
    assert seen_ar == splits, f"AR bursts {seen_ar} differ from the reference split {splits}"


# ------------------------------------------------------------------ cocotb on Icarus and Verilator
#: Random commands per direction (lengths 1..300 beats) on top of the corner cases; Icarus is slow.
NUM_CMDS = {"icarus": 12, "verilator": 60}


@pytest.mark.cocotb
@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
def test_axi4_master_cocotb(simulator):
    params = {"addr_width": 32, "data_width": 64, "max_burst": 16}
    build_dir = ROOT / "build" / "cocotb" / "axi4_master" / simulator
    build_dir.mkdir(parents=True, exist_ok=True)
    source = build_dir / "axi4_master.v"
    text = verilog.convert(AXI4Master(**params), name="axi4_master")
    if not source.exists() or source.read_text() != text:  # keep the file (and Verilator's build) if unchanged
        source.write_text(text)
    run_cocotb(simulator, verilog=source, toplevel="axi4_master", test_module=HERE / "cocotb_axi4_master.py",
               build_dir=build_dir,
               extra_env={"ADDR_WIDTH": params["addr_width"], "DATA_WIDTH": params["data_width"],
                          "MAX_BURST": params["max_burst"], "NUM_CMDS": NUM_CMDS[simulator], "SEED": SEED,
                          "TIMEOUT_US": 5000})
