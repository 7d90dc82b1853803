"""Verilator lint (-Wall) of the generated Verilog with the committed waiver file; waivers carry reasons."""

import re

import pytest

from hw.fpga.__main__ import main
from hw.fpga.lint import DEFAULT_WAIVERS, LintFailed, lint, parse_verilator_output


def waiver_rules(text):
    return re.findall(r"^lint_off -rule (\w+)", text, re.M)


def test_every_waiver_has_a_reason():
    lines = DEFAULT_WAIVERS.read_text().splitlines()
    assert lines[0] == "`verilator_config"
    rules = []
    for i, line in enumerate(lines):
        if line.startswith("lint_off"):
            assert re.fullmatch(r"lint_off -rule [A-Z0-9_]+( .*)?", line), line
            assert lines[i - 1].startswith("// ") and len(lines[i - 1]) > 20, f"no reason comment above {line!r}"
            rules.append(line.split()[2])
    assert len(rules) == len(set(rules)), "a warning class is waived twice"
    assert rules, "the waiver file waives nothing"


@pytest.mark.parametrize("design,rows,cols,dsp_pes,pe_multiplier", [
    ("engine", 1, 1, 0, "fabric"), ("engine", 2, 3, 0, "fabric"), ("accelerator", 2, 2, 0, "fabric"),
    ("engine", 2, 3, 4, "fabric"), ("engine", 2, 3, 2, "carry")])
def test_lint_clean(design, rows, cols, dsp_pes, pe_multiplier, tmp_path):
    # The last cases mix DSP and fabric PEs (the multiplier large arrays use on the spare DSP blocks), and DSP
    # and carry-cell PEs (the ECP5 flow's choice; linted as the cells' exact model).
    result = lint(design=design, rows=rows, cols=cols, dsp_pes=dsp_pes, pe_multiplier=pe_multiplier,
                  build_dir=tmp_path)
    assert result["messages"] == [] and result["dsp_pes"] == dsp_pes
    assert result["pe_multiplier"] == pe_multiplier
    assert "-Wall" in result["command"] and str(DEFAULT_WAIVERS) in result["command"]


def test_lint_fails_without_a_waiver(tmp_path):
    # Dropping one generator-idiom waiver must make the lint fail and name that class.
    text = DEFAULT_WAIVERS.read_text()
    assert "WIDTHEXPAND" in waiver_rules(text)
    reduced = tmp_path / "reduced.vlt"
    reduced.write_text(text.replace("lint_off -rule WIDTHEXPAND\n", ""))
    with pytest.raises(LintFailed, match=r"Verilator lint of the 1x1 engine failed: WIDTHEXPAND x\d+") as info:
        lint(design="engine", rows=1, cols=1, waivers=reduced, build_dir=tmp_path)
    assert {rule for _, rule, _ in info.value.messages} == {"WIDTHEXPAND"}


def test_cli(tmp_path, capsys):
    assert main(["lint", "--design", "engine", "--rows", "1", "--cols", "2", "--build-dir", str(tmp_path)]) == 0
    assert "lint clean" in capsys.readouterr().out
    assert main(["lint", "--design", "engine", "--rows", "1", "--cols", "1", "--build-dir", str(tmp_path),
                 "--waivers", str(tmp_path / "missing.vlt")]) == 2
    assert "waiver file" in capsys.readouterr().err


def test_parse_verilator_output():
    text = ("%Warning-WIDTHEXPAND: a.v:3:4: Operator ADD expects 33 bits\n   3 | x\n"
            "%Error: a.v:9:1: syntax error\n%Error: Exiting due to 1 error(s)\n")
    assert parse_verilator_output(text) == [("Warning", "WIDTHEXPAND", "a.v:3:4: Operator ADD expects 33 bits"),
                                            ("Error", "ERROR", "a.v:9:1: syntax error")]
