"""The mutation tooling (``make mutate`` runs the whole catalogue): the catalogue still matches the hardware, and a
handful of cheap mutants are killed by the block tests written for them, here in the suite."""

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from sim import mutation
from sim.mutants import BY_NAME, CATALOGUE, Mutant, MutantError, apply, select

ROOT = Path(__file__).resolve().parents[2]


def test_catalogue_matches_the_sources():
    """Every mutant's text occurs exactly once in its file (else `make mutate` reports it stale), over every block."""
    for m in CATALOGUE:
        count = (ROOT / m.path).read_text().count(m.old)
        assert count == 1, f"{m.name}: {m.path} holds its text {count} times; update sim/mutants.py"
        assert m.old != m.new and m.what, m.name
    blocks = Counter(m.block for m in CATALOGUE)
    assert len(CATALOGUE) >= 40 and len(blocks) >= 14, blocks
    assert set(blocks) == set(mutation.BLOCK_TESTS), "every block has its tier-1 entry"


def test_apply_refuses_stale_text(tmp_path):
    (tmp_path / "hw").mkdir()
    (tmp_path / "hw" / "x.py").write_text("a = 1\na = 1\n")
    with pytest.raises(MutantError, match=r"holds the text 'a = 1' 2 times, not once"):
        apply(Mutant("m", "x", "a = 1", "a = 2", "?"), tmp_path)
    with pytest.raises(MutantError, match=r"0 times"):
        apply(Mutant("m", "x", "b = 1", "b = 2", "?"), tmp_path)


def test_select():
    assert [m.name for m in select("tok-*")] == ["tok-ready", "tok-simultaneous"]
    assert {m.block for m in select("gemm_engine")} == {"gemm_engine"}
    assert len(select("")) == len(CATALOGUE)
    with pytest.raises(ValueError, match="matches no mutant or block"):
        select("no-such-mutant")


#: (mutant, the test that must kill it): cheap block-level tests, one per mutant.
KILLS = [
    ("tok-simultaneous", "tests/hw/test_token_queue.py"),
    ("disp-priority", "tests/hw/test_dispatcher.py::test_dispatcher_fault_priority"),
    ("disp-halt-flags", "tests/hw/test_dispatcher.py::test_dispatcher_fault_priority"),
    ("lite-ro-resp", "tests/hw/test_axi4_lite.py::test_amaranth_write_responses"),
    ("eng-forward-ignores-accumulate", "tests/hw/test_gemm_engine.py::test_engine_overwrites_rows_written_just_before"),
    ("epi-srdhm-no-round", "tests/hw/test_epilogue.py::test_spec_edge_vectors"),
    ("eng-skid-overwrite", "tests/hw/test_gemm_engine.py::test_engine_store_holds_rows_through_long_stalls"),
]


def _small_tree(dest, test_file):
    files = [p for p in mutation.tree_files(ROOT)
             if p.startswith(("hw/", "sim/")) and not p.startswith("sim/harness/") or p in ("pyproject.toml", test_file)]
    return mutation.scratch_copy(dest, ROOT, files=files)


@pytest.mark.parametrize("name,test", KILLS)
def test_suite_kills_mutant(tmp_path, name, test):
    tree = _small_tree(tmp_path / "tree", test.split("::")[0])
    apply(BY_NAME[name], tree)
    outcome = mutation.run_tier(tree, [test], timeout=600)
    assert not outcome["passed"], f"{name} survived {test}"
    assert outcome["killed_by"].startswith(test), f"{name}: {outcome}"


def test_unmutated_tree_passes_a_killing_test(tmp_path):
    """The control: the same copy without a mutant passes, so the kills above are the mutants' doing."""
    test = "tests/hw/test_dispatcher.py::test_dispatcher_fault_priority"
    tree = _small_tree(tmp_path / "tree", test.split("::")[0])
    assert mutation.run_tier(tree, [test], timeout=600)["passed"]


def test_command_line_list_and_errors():
    listed = subprocess.run([sys.executable, "-m", "sim.mutation", "--list", "--mutants", "token_queue"],
                            capture_output=True, text=True, check=True).stdout.splitlines()
    assert [line.split()[0] for line in listed] == ["tok-ready", "tok-simultaneous"]
    bad = subprocess.run([sys.executable, "-m", "sim.mutation", "--mutants", "nope"], capture_output=True, text=True)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "nope" in bad.stderr


def test_score_and_table():
    results = [{"mutant": "a", "block": "pe", "what": "x", "status": "killed", "tier": "block", "killed_by": "t",
                "seconds": 1.0},
               {"mutant": "b", "block": "pe", "what": "y", "status": "survived", "seconds": 2.0},
               {"mutant": "c", "block": "pe", "what": "z", "status": "equivalent", "detail": "why", "seconds": 3.0},
               {"mutant": "d", "block": "pe", "what": "w", "status": "not-a-mutant", "seconds": 0.5}]
    s = mutation.score(results)
    assert (s["killed"], s["non_equivalent"], s["equivalent"], s["not_a_mutant"], s["score"]) == (1, 2, 1, 1, 0.5)
    table = mutation.markdown(results)
    assert "| a | pe | x | killed | block: `t` | 1 |" in table and "1 of 2 non-equivalent mutants killed (50.0%)" in table
    json.dumps(results)
