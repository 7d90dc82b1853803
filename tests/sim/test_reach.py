"""The reach programs of :mod:`sim.reach` (the netlist mutation tier's last stage): each kind passes on the
generated 2x2 design, its golden run ends as designed, and each kills a netlist mutant of the kind it was written
for, placed at a low bit so the test stays small (2**13 instructions; the campaign runs them at 2**20 and 2**26,
where the same kinds kill the high-bit mutants of docs/verification.md). The mutants are found by structure (the
flip-flop whose Q is the named register), not by Yosys's numbered cell names."""

import shutil

import pytest

from hw.isa import ErrorCode
from sim import fuzz, netlist_mutation as nm, reach
from sim.verilator_backend import NOPGO, SimulationTimeout, VerilatorAccelerator

SEED = 20_261_203
BITS = 13
CONFIG = fuzz.CONFIGS["2x2"]
INDEX_AT = 128          # a queue entry: the 128-bit instruction word, then its 32-bit program index


@pytest.mark.parametrize("kind", reach.KINDS)
def test_each_reach_kind_passes_on_the_design(kind):
    case = reach.make_reach(kind, BITS, CONFIG, SEED)
    assert case.pad + len(case.kernel) >= (1 << (BITS - 1)), case.name
    got = reach.check_reach(case, fuzz.accelerator("2x2"))
    want = {"early": (ErrorCode.BUS_ERROR_LOAD, (1 << (BITS - 1)) + 8),
            "late": (ErrorCode.BUS_ERROR_LOAD, (1 << BITS) - 16),
            "store": (ErrorCode.BUS_ERROR_STORE, (1 << BITS) - 16),
            "store-slow": (ErrorCode.BUS_ERROR_STORE, (1 << BITS) - 16),
            "overrun": (ErrorCode.PROGRAM_OVERRUN, (1 << BITS) + (1 << (BITS - 1)) + 3)}[kind]
    assert (got["error"], got["error_index"]) == (want[0].name, want[1]), f"seed {SEED}: {case.name}: {got}"


def test_bad_reach_parameters_are_named():
    with pytest.raises(ValueError, match="reach kind 'sideways'"):
        reach.make_reach("sideways", BITS, CONFIG)
    with pytest.raises(ValueError, match="reach bits 30"):
        reach.make_reach("late", 30, CONFIG)


@pytest.fixture(scope="module")
def flattened(tmp_path_factory):
    """The 2x2 design flattened by the netlist tier's own Yosys flow: (work folder, base.il text)."""
    work = tmp_path_factory.mktemp("reach_netlist")
    verilog = nm._accelerator_verilog("2x2", work / "generated")
    nm.prepare(verilog, work / "base", 1, SEED)
    return work, (work / "base" / "base.il").read_text()


def _register_cell(design: str, q: str) -> str:
    (cell,) = nm.find_cells(design, "$dff", f"connect \\Q \\{q}")
    return cell


# (register, port, mode, bit, ctrlbit, the kind that kills it, how)
MUTANTS = [
    # An index bit stuck 0 in the COMPUTE unit: the MATMUL after the fault looks older and waits for the token of
    # an aborted LOAD.
    ("compute_unit.entry", "Q", "const0", INDEX_AT + BITS - 1, None, "late", "watchdog"),
    # Stuck 1: the MATMUL waiting before the fault looks younger and is dropped; its STORE waits for its token.
    ("compute_unit.entry", "Q", "const1", INDEX_AT + BITS - 2, None, "early", "watchdog"),
    # The STORE unit's index bit 4 toggled every cycle while bit 12 is set: the fault's index moves at one parity.
    ("store_unit.entry", "D", "cnot1", INDEX_AT + 4, INDEX_AT + BITS - 1, ("store", "store-slow"), "mismatch"),
    # The fetch's count of instructions still to request, bit 12 stuck 0: PROGRAM_OVERRUN moves.
    ("fetch.remaining", "Q", "const0", BITS - 1, None, "overrun", "mismatch"),
]


@pytest.mark.parametrize("register, port, mode, bit, ctrlbit, kinds, how", MUTANTS,
                         ids=[f"{m[0]}.{m[1]}[{m[3]}]-{m[2]}" for m in MUTANTS])
def test_reach_kills_the_mutant_it_was_written_for(flattened, register, port, mode, bit, ctrlbit, kinds, how):
    work, design = flattened
    kinds = (kinds,) if isinstance(kinds, str) else kinds
    mutation = nm.NetlistMutation(mode, "accelerator", _register_cell(design, register), port, bit, ctrlbit)
    folder = work / f"{register}-{port}{bit}-{mode}"
    folder.mkdir()
    shutil.copyfile(work / "base" / "base.il", folder / "base.il")
    _, (verilog,) = nm.apply_all(folder, [mutation])
    rtl = VerilatorAccelerator(CONFIG, options=NOPGO, verilog=verilog, log=None)
    try:
        outcomes = []
        for kind in kinds:
            case = reach.make_reach(kind, BITS, CONFIG, SEED)
            try:
                outcomes.append((kind, "survived", reach.check_reach(case, rtl)))
            except reach.ReachMismatch as exc:
                outcomes.append((kind, "mismatch", str(exc)))
            except SimulationTimeout as exc:
                outcomes.append((kind, "watchdog", str(exc)))
        assert any(o[1] == how for o in outcomes), f"seed {SEED}: {mutation.command()}: {outcomes}"
        assert all(o[1] in (how, "survived") for o in outcomes), f"seed {SEED}: {outcomes}"
    finally:
        rtl.close()
