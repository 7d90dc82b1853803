"""The standard-cell ASIC flow (hw/asic): a 2x2 GEMM engine and a PE through Yosys + OSU 0.18 um + OpenSTA.

Every figure the report gives is checked against the tools' own output, re-read here independently: the area is
the sum over the mapped netlist's instances of the cell's area in the Liberty file (read with liberty-parser, not
with the flow's reader) and equals Yosys's printed chip area; the flops are the netlist's flop instances; the Fmax
is 1 / (period - slack) of the path OpenSTA printed; the accumulator macro has the engine's own accumulator shape.
These tests need Debian's qflow-tech-osu018 and opensta packages (`make setup` installs them as root): without them
they fail, naming the package.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from hw.asic import cli, flow, liberty
from hw.asic.flow import ASIC_DESIGNS, block_of, parse_sta_report, synthesize
from hw.asic.liberty import LIBRARIES, get_library
from hw.asic.memories import extract_macros
from hw.asic.report import format_report, scaling_markdown, write_scaling, _row
from hw.eda import ToolMissing

LIB = get_library("osu018")


def test_library_and_opensta_are_installed():
    assert Path(LIB.liberty).is_file(), (f"{LIB.liberty} is missing: `apt-get install -y {LIB.package} opensta` "
                                         f"(make setup does it as root)")
    assert liberty.opensta(), "OpenSTA is missing: `apt-get install -y opensta`"


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    # Flat only (blocks=False): the accumulator macro, the flat mapping and OpenSTA; the hierarchy is the array's.
    build = tmp_path_factory.mktemp("asic")
    return synthesize(design="engine", rows=2, cols=2, acc_depth=64, build_dir=build, blocks=False)


@pytest.fixture(scope="module")
def array(tmp_path_factory):
    build = tmp_path_factory.mktemp("asic_array")
    return synthesize(design="array", rows=2, cols=2, build_dir=build)


@pytest.fixture(scope="module")
def pe(tmp_path_factory):
    build = tmp_path_factory.mktemp("asic_pe")
    return synthesize(design="pe", rows=2, cols=2, build_dir=build)


def _liberty_areas():
    from liberty.parser import parse_liberty
    lib = parse_liberty(Path(LIB.liberty).read_text())
    return {str(c.args[0]): float(c["area"]) for c in lib.get_groups("cell")}


_INSTANCE = re.compile(r"^\s+([A-Za-z_][\w$]*)\s+(\\\S+|[A-Za-z_][\w$]*)\s*\($", re.M)


def _netlist_cells(report) -> Counter:
    """Instances per cell type in the mapped Verilog netlist, the modules' instances expanded."""
    text = (Path(report["build_dir"]) / "netlist.v").read_text()
    modules = {}
    for match in re.finditer(r"^module\s+(\\\S+|\S+?)\s*\((.*?)^endmodule", text, re.M | re.S):
        modules[match[1].lstrip("\\")] = Counter(m[1] for m in _INSTANCE.finditer(match[2]))

    def expand(name):
        total = Counter()
        for cell, n in modules[name].items():
            if cell.lstrip("\\") in modules:
                for k, v in expand(cell.lstrip("\\")).items():
                    total[k] += v * n
            else:
                total[cell] += n
        return total

    return expand("top")


@pytest.mark.parametrize("fixture", ["engine", "array", "pe"])
def test_area_is_the_cells_times_their_liberty_area(fixture, request):
    report = request.getfixturevalue(fixture)
    areas = _liberty_areas()
    cells = _netlist_cells(report)
    std = {c: n for c, n in cells.items() if c in areas}
    assert set(cells) - set(std) <= {m["cell"] for m in report["memories"]["list"] if "cell" in m}, cells
    assert report["area_um2"] == pytest.approx(sum(n * areas[c] for c, n in std.items()), abs=1e-6)
    assert report["cells_by_kind"] == dict(sorted(std.items()))
    assert report["cells"] == sum(std.values())
    # Yosys printed the same total.
    stat = (Path(report["build_dir"]) / "stat.txt").read_text()
    printed = [float(x) for x in re.findall(r"Chip area for (?:top )?module '\\?top':\s+([\d.]+)", stat)]
    assert printed and printed[-1] == pytest.approx(report["area_um2"])
    flops = {c for c in std if c.startswith("DFF")}
    assert report["flops"] == sum(std[c] for c in flops) > 0
    assert report["flop_area_um2"] == pytest.approx(sum(std[c] * areas[c] for c in flops))
    assert report["logic_area_um2"] == pytest.approx(report["area_um2"] - report["flop_area_um2"])
    # The blocks come from a second mapping with the hierarchy kept (the engine's; the PE has none): their sum is
    # what Yosys printed for that run, within a few per cent of the flat total.
    assert sum(b["area_um2"] for b in report["blocks"].values()) == pytest.approx(report["blocks_area_um2"])
    assert sum(b["flops"] for b in report["blocks"].values()) == report["blocks_flops"]
    blocks_stat = Path(report["build_dir"]) / ("blocks_stat.txt" if fixture == "array" else "stat.txt")
    printed = [float(x) for x in re.findall(r"Chip area for (?:top )?module '\\?top':\s+([\d.]+)",
                                            blocks_stat.read_text())]
    assert printed and printed[-1] == pytest.approx(report["blocks_area_um2"])
    assert report["blocks_area_um2"] == pytest.approx(report["area_um2"], rel=0.05)


@pytest.mark.parametrize("fixture", ["engine", "array", "pe"])
def test_fmax_is_one_over_the_path_opensta_printed(fixture, request):
    report = request.getfixturevalue(fixture)
    log = (Path(report["build_dir"]) / "sta.log").read_text()
    first = log.split("== register to register ==")[0]
    slack = float(re.search(r"^\s*(-?[\d.]+)\s+slack \((?:MET|VIOLATED)\)", first, re.M)[1])
    start = re.search(r"^Startpoint: (\S+)", first, re.M)[1]
    end = re.search(r"^Endpoint: (\S+)", first, re.M)[1]
    period = 1000.0 / report["constraint_mhz"]
    path = report["critical_path"]
    assert (path["start"], path["end"], path["slack_ns"]) == (start, end, slack)
    assert path["delay_ns"] == pytest.approx(period - slack, abs=1e-4)
    assert report["fmax_mhz"] == pytest.approx(1000.0 / (period - slack), rel=1e-5)
    assert report["timing_met"] == (slack >= 0)
    # The constraint OpenSTA ran under is the report's, with the I/O delays on every port but the clock.
    tcl = (Path(report["build_dir"]) / "sta.tcl").read_text()
    assert f"-period {period:g} [get_ports clk]" in tcl
    assert f"set_input_delay {report['io_delay_ns']:g}" in tcl and f"set_output_delay {report['io_delay_ns']:g}" in tcl
    reg = report["register_to_register_path"]
    assert reg["fmax_mhz"] >= report["fmax_mhz"] - 1e-9
    # Each block's Fmax in the design comes from its worst endpoint; the slowest block is the design's Fmax.
    blocks = report["block_fmax"]
    assert blocks and min(b["slack_ns"] for b in blocks.values()) == pytest.approx(slack, abs=1e-4)
    for b in blocks.values():
        assert b["fmax_mhz"] == pytest.approx(1000.0 / (period - b["slack_ns"]), rel=1e-5)


def test_accumulator_is_a_macro_of_the_engines_shape(engine):
    from hw.gemm_engine import ACC_WIDTH
    macros = [m for m in engine["memories"]["list"] if m["implementation"] == "macro"]
    assert [m["name"] for m in macros] == ["acc_mem"]
    acc = macros[0]
    assert (acc["depth"], acc["width"], acc["bits"]) == (64, 2 * ACC_WIDTH, 64 * 2 * ACC_WIDTH)
    assert acc["read_ports"] == 2 and acc["write_ports"] == 1 and acc["sync_read"]
    assert acc["sram_macro_area_um2"] == pytest.approx(acc["bits"] * LIB.sram_macro_um2_per_bit)
    assert acc["flop_area_um2"] == pytest.approx(acc["bits"] * _liberty_areas()[LIB.load_cell])
    assert _netlist_cells(engine)[acc["cell"]] == 1
    assert engine["memories"]["macro_bits"] == acc["bits"]
    macro_lib = (Path(engine["build_dir"]) / "macros.lib").read_text()
    assert f"cell ({acc['cell']})" in macro_lib and "setup_rising" in macro_lib


def test_blocks_of_the_array(array, engine):
    assert list(array["blocks"]) == ["pe", "array"]
    assert array["blocks"]["pe"]["instances"] == 4
    assert list(engine["blocks"]) == ["engine"]       # blocks=False: the design as one block
    assert engine["blocks"]["engine"]["area_um2"] == engine["blocks_area_um2"] == engine["area_um2"]
    table = format_report(array)
    assert f"4 x {array['blocks']['pe']['area_um2'] / 4:,.0f}" in table
    text = format_report(engine)
    assert "acc_mem" in text and "SRAM macros" in text and f"{engine['memories']['macro_bits']:,} bits" in text
    assert block_of("engine.array.pe_3_1") == "pe"
    assert block_of("engine.array") == "array"
    assert block_of("engine.epilogue") == "epilogue"
    assert block_of("dispatcher.load_queue") == "control"
    assert block_of("master") == "axi"
    assert block_of("") == "top"
    assert block_of("", "pe") == "pe"


def test_pe_report_fields(pe, array):
    assert pe["design"] == "pe" and list(pe["blocks"]) == ["pe"]
    assert pe["memories"]["list"] == []
    # A PE alone is as large as the array's PEs on average (those of row 0 and the last column lose the logic of
    # their constant partial-sum inputs and unread outputs), and no smaller than the smallest of them.
    pes = [m for m in array["modules"].values() if m["block"] == "pe"]
    assert len(pes) == 4 and min(m["area_um2"] for m in pes) <= pe["area_um2"]
    assert pe["area_um2"] == pytest.approx(array["blocks"]["pe"]["area_um2"] / 4, rel=0.1)
    text = format_report(pe)
    assert "Fmax" in text and "critical path" in text
    assert json.loads(Path(pe["report_path"]).read_text())["area_um2"] == pe["area_um2"]
    assert Path(pe["report_path"]).name == "asic-osu018-2x2-pe.json"


def test_reuse_returns_the_same_report(pe, tmp_path):
    build = Path(pe["report_path"]).parents[1]
    again = synthesize(design="pe", rows=2, cols=2, build_dir=build, reuse=True)
    assert again == json.loads(Path(pe["report_path"]).read_text())


def test_scaling_table_and_plot(engine, tmp_path):
    report = dict(engine, design="accelerator")
    rows = [_row(report, {})]
    paths = write_scaling(rows, library="osu018", out_dir=tmp_path)
    assert Path(paths["png"]).stat().st_size > 0
    table = Path(paths["markdown"]).read_text()
    assert f"{engine['area_um2']:,.0f}" in table and scaling_markdown(rows) == table
    assert json.loads(Path(paths["json"]).read_text())["rows"][0]["fmax_mhz"] == engine["fmax_mhz"]


def test_missing_library_names_the_package(monkeypatch, tmp_path, capsys):
    fake = dict(vars(LIB))
    fake["liberty"] = str(tmp_path / "nowhere" / "osu018_stdcells.lib")
    monkeypatch.setitem(LIBRARIES, "osu018", liberty.Library(**fake))
    with pytest.raises(ToolMissing, match=r"qflow-tech-osu018.*apt-get install -y qflow-tech-osu018"):
        synthesize(design="pe", rows=2, cols=2, build_dir=tmp_path)
    assert cli.main(["--design", "pe", "--rows", "2", "--cols", "2", "--build-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "qflow-tech-osu018" in err[0]


def test_missing_opensta_names_the_package(monkeypatch, tmp_path):
    monkeypatch.setattr(liberty.shutil, "which", lambda name: None)
    with pytest.raises(ToolMissing, match=r"apt-get install -y opensta"):
        synthesize(design="pe", rows=2, cols=2, build_dir=tmp_path)


def test_bad_parameters(tmp_path, capsys):
    with pytest.raises(ValueError, match="ASIC design"):
        synthesize(design="gpu", build_dir=tmp_path)
    with pytest.raises(ValueError, match="Clock constraint"):
        synthesize(design="pe", freq_mhz=0, build_dir=tmp_path)
    with pytest.raises(ValueError, match="I/O delay"):
        synthesize(design="pe", io_delay_ns=50, build_dir=tmp_path)
    with pytest.raises(ValueError, match="library"):
        synthesize(design="pe", library="sky130", build_dir=tmp_path)
    assert cli.main(["--design", "pe", "--freq", "-3", "--build-dir", str(tmp_path)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert set(ASIC_DESIGNS) >= {"accelerator", "engine", "pe", "array", "epilogue"}


def test_parse_sta_report_needs_a_path():
    with pytest.raises(flow.FlowError, match="no setup path"):
        parse_sta_report("No paths found.\n", 10.0)


def test_small_memories_stay_flops():
    # A 2x8-bit memory (16 bits) under the threshold is left to memory_map.
    netlist = {"modules": {"top": {"ports": {}, "netnames": {"n": {"bits": [2, 3]}}, "cells": {"m": {
        "type": "$mem_v2", "parameters": {"SIZE": 2, "WIDTH": 8, "ABITS": 1, "RD_PORTS": 1, "WR_PORTS": 1,
                                          "RD_CLK_ENABLE": "1", "WR_CLK_ENABLE": "1", "RD_CLK_POLARITY": "1",
                                          "WR_CLK_POLARITY": "1"},
        "connections": {}}}}}}
    memories, types = extract_macros(netlist)
    assert memories[0]["implementation"] == "flops" and types == [] and "m" in netlist["modules"]["top"]["cells"]


def _fanouts(report) -> tuple[Counter, dict]:
    """Loads per net and each net's driver kind ("port", "flop", "macro" or "logic") in the final netlist."""
    text = (Path(report["build_dir"]) / "netlist.v").read_text()
    areas = _liberty_areas()
    macros = {m["cell"] for m in report["memories"]["list"] if "cell" in m}
    loads, drivers = Counter(), {}
    for width, name in re.findall(r"^  input (?:\[(\d+):0\] )?(\S+) ?;", text, re.M):
        for b in ([None] if not width else range(int(width) + 1)):
            drivers[name if b is None else f"{name}[{b}]"] = "port"
    for cell, body in re.findall(r"^  (\w+) \S+ \(\n((?:    \..*\n)+?)  \);", text, re.M):
        for pin, net in re.findall(r"^    \.(\w+)\((.*?)\),?$", body, re.M):
            net = net.strip()
            if pin in ("Y", "Q", "YC", "YS") or (cell in macros and "_Q" in pin):
                drivers[net] = "flop" if cell.startswith("DFF") else "macro" if cell in macros else "logic"
            elif pin != "CLK" and "'" not in net:
                loads[net] += 1
    assert areas and drivers
    return loads, drivers


def test_no_net_drives_more_than_the_fanout_limit(engine):
    loads, drivers = _fanouts(engine)
    limit = engine["fanout_repair"]["max_fanout"]
    worst = max((n for net, n in loads.items() if net in drivers and net != "clk"), default=0)
    assert 0 < worst <= limit
    assert engine["fanout_repair"]["largest_fanout_before"] > limit      # there was something to repair
    assert engine["cells_by_kind"].get("BUFX4", 0) >= engine["fanout_repair"]["buffers"] > 0


def test_repair_fanout_builds_a_balanced_tree():
    from hw.asic.fanout import repair_fanout
    loads = "".join(f"  INVX1 u{i} (\n    .A(\\q.r [0] ),\n    .Y(o{i})\n  );\n" for i in range(40))
    text = ("module top(clk, d);\n  input clk;\n  input d;\n  wire [1:0] \\q.r ;\n"
            "  DFFPOSX1 f (\n    .CLK(clk),\n    .D(d),\n    .Q(\\q.r [0] )\n  );\n" + loads + "endmodule\n")
    out, summary = repair_fanout(text, output_pins={"DFFPOSX1": {"Q"}, "INVX1": {"Y"}, "BUFX4": {"Y"}},
                                 clock_pins={("DFFPOSX1", "CLK")}, sources={"DFFPOSX1"},
                                 buffer=("BUFX4", "A", "Y"), max_fanout=16)
    assert summary["nets"] == 1 and summary["buffers"] == 3                # 40 loads: 16 + 16 + 8
    inputs = re.findall(r"\.A\((.*?)\)", out)
    counts = Counter(i.strip() for i in inputs)
    assert counts["\\q.r [0]"] == 3 and sorted(counts[f"_fanout{k}_"] for k in range(3)) == [8, 16, 16]
