"""The netlist mutation tier (``make mutate-netlist`` runs the campaign): Yosys's ``mutate -list`` parsed into
applicable mutations, the unmutated round-trip netlist passing the fuzz slice, and two known-observable netlist
mutants killed by it: ``irq`` stuck at 0, and the register block's R handshake ignoring RREADY (killed only by the
host that stalls its READYs)."""

import shutil

import pytest

from hw.eda import canonical_verilog
from sim import netlist_mutation as nm

SEED = 20_261_202


def test_parse_list_reads_a_yosys_line_and_rejects_junk():
    line = (r"mutate -mode cnot1 -module accelerator -cell $flatten\master.$procdff$10535 -port D -portbit 5 "
            r"-ctrlbit 29 -wire master.$153 -wirebit 5 -src design.v:14259.14-14259.19 -src /x/hw/axi.py:55")
    (m,) = nm.parse_list(line + "\n\n")
    assert (m.mode, m.cell, m.port, m.portbit, m.ctrlbit) == ("cnot1", r"$flatten\master.$procdff$10535", "D", 5, 29)
    assert m.hw_sources() == ["hw/axi.py:55"]
    assert m.command() == (r"mutate -mode cnot1 -module accelerator -cell $flatten\master.$procdff$10535 -port D "
                           r"-portbit 5 -ctrlbit 29")
    with pytest.raises(ValueError, match="line 1"):
        nm.parse_list("mutate -mode flip -module m -cell c -port A -portbit 0")
    with pytest.raises(ValueError, match="unknown option"):
        nm.parse_list("mutate -mode inv -module m -cell c -port A -portbit 0 -colour red")


def test_netlist_mutants_apply_and_a_stuck_irq_is_killed(tmp_path):
    verilog = nm._accelerator_verilog("2x2", tmp_path / "generated")
    listed = nm.prepare(verilog, tmp_path / "sample", 12, SEED)
    assert len(listed) == 12 and len({m.command() for m in listed}) == 12, listed
    assert all(m.mode in nm.MODES and m.module == "accelerator" and m.cell for m in listed)
    original, mutants = nm.apply_all(tmp_path / "sample", listed)
    assert all(p.is_file() for p in mutants)
    # Every mutant is applied: its netlist differs, or opt removed it (the bit drives nothing).
    reference = canonical_verilog(original.read_text())
    assert any(canonical_verilog(p.read_text()) != reference for p in mutants)

    (stuck,) = nm.prepare(verilog, tmp_path / "irq", 1, SEED, filters=r"-mode const0 -wire \irq")
    original, (mutant,) = nm.apply_all(tmp_path / "irq", [stuck])
    assert canonical_verilog(mutant.read_text()) != canonical_verilog(original.read_text())
    base = nm.kill_check("2x2", original, 12, SEED)
    assert {k: base[k] for k in ("killed", "cases")} == {"killed": False, "cases": 12}, f"seed {SEED}: {base}"
    killed = nm.kill_check("2x2", mutant, 12, SEED)
    assert killed["killed"] and killed["by"] == "watchdog" and killed["stage"] == "fuzz", f"seed {SEED}: {killed}"

    # A survivor of the first campaign: the register block's R handshake taken as RVALID alone (RREADY stuck at 1
    # inside it). Only a host that stalls RREADY sees it (the fuzz slice's host variation): the response is gone
    # before the host takes it, and its read times out.
    # The cell is found by structure (the AND in csr that takes the top's csr__r__ready), not by its numbered name.
    design = (tmp_path / "irq" / "base.il").read_text()
    (cell,) = [c for c in nm.find_cells(design, "$and", "connect \\B \\csr__r__ready")
               if c.startswith("$flatten\\csr.")]
    r_ready = nm.NetlistMutation("const1", "accelerator", cell, "B", 0)
    (tmp_path / "rready").mkdir()
    shutil.copyfile(tmp_path / "irq" / "base.il", tmp_path / "rready" / "base.il")
    _, (mutant,) = nm.apply_all(tmp_path / "rready", [r_ready])
    killed = nm.kill_check("2x2", mutant, 12, SEED)
    assert killed["killed"] and killed["by"] == "harness" and "got no response" in killed["detail"], \
        f"seed {SEED}: {killed}"


def test_deep_stage_kills_a_fault_in_the_store_skid_buffers_side_register(tmp_path):
    """A row bit of the STORE read side's side register inverted: the register holds a row only when the epilogue
    stalls while an accumulator read is in flight, which the deep stage's back-to-back full-accumulator STOREs
    under write stalls make happen."""
    verilog = nm._accelerator_verilog("2x2", tmp_path / "generated")
    nm.prepare(verilog, tmp_path / "base", 1, SEED)
    design = (tmp_path / "base" / "base.il").read_text()
    (cell,) = nm.find_cells(design, "$dff", "connect \\Q \\engine.st_side_acc")
    _, (mutant,) = nm.apply_all(tmp_path / "base", [nm.NetlistMutation("inv", "accelerator", cell, "Q", 1)])
    killed = nm.kill_check("2x2", mutant, 0, SEED, stages=("deep",))
    assert killed["killed"] and killed["stage"] == "deep" and "deep" in killed["detail"], \
        f"seed {SEED}: {killed}"


@pytest.mark.parametrize("argv, message", [
    (["--stages", "fuzz,sideways"], "--stages 'fuzz,sideways': choose from fuzz, deep, reach"),
    (["--reach", "20,30"], "each reach is 8 .. 28"),
    (["--reach", "twenty"], "--reach 'twenty': give comma-separated integers"),
    (["--netlist", "10", "--mutants", "3,12"], "--mutants '3,12': indices are 0 .. 9"),
    (["--workers", "0"], "must be at least 1"),
])
def test_bad_arguments_are_one_line(argv, message, capsys):
    assert nm.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
