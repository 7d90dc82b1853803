"""The fuzz campaign's slice in the suite (``make fuzz`` runs the whole one): random legal and illegal programs on
the golden simulator, the RTL (Verilator) and the cycle model, and random CNNs through the driver, cpu against
verilator; plus the fuzzer's own promises (well-formed programs, deterministic cases, a shrinker that shrinks)."""

import dataclasses
import json
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from hw.isa import ErrorCode, Halt, Store, decode
from sim import fuzz
from sim.isa_sim import IsaSimulator

SEED = 20_261_202


@pytest.mark.parametrize("config,count", [("4x4", 150), ("2x2", 50)])
def test_random_programs_match_golden_and_cycle_model(config, count):
    """Every case: same error, faulting index, counters and DRAM on the RTL as on the golden simulator; legal ones
    also every counter equal to the exact cycle model's."""
    outcomes = Counter()
    for index in range(count):
        case = fuzz.make_case(SEED, index, config)
        try:
            summary = fuzz.check_case(case)
        except fuzz.GeneratorError:
            assert case.kind != "legal", f"seed {SEED} case {index}: the generator broke its promise"
            continue
        outcomes[summary["error"]] += 1
    # The slice covers clean halts and faults of several kinds.
    assert outcomes["NONE"] >= count // 2 and len(outcomes) >= 3, f"seed {SEED}: outcomes {dict(outcomes)}"


def test_random_networks_cpu_equals_verilator():
    for index in range(5):
        fuzz.check_network(SEED, index, "4x4")


@pytest.mark.parametrize("config", fuzz.CONFIGS)
def test_ordered_streams_are_well_formed(config):
    """The golden race checker finds no unordered access, and nothing is read before it is written."""
    cfg = fuzz.CONFIGS[config]
    for index in range(30):
        rng = np.random.default_rng([SEED, index])
        program = fuzz.random_stream(rng, cfg, int(rng.integers(1, 60)), ordered=True)
        assert isinstance(program[-1], Halt)
        dram = rng.integers(0, 256, fuzz.DRAM_BYTES, dtype=np.uint8)
        written = fuzz.new_written(cfg)
        for ins in program:
            assert not fuzz.reads_before_write(ins, cfg, written), f"seed {SEED} case {index}: {ins}"
            fuzz.mark_written(ins, written)
        from hw.isa import to_bytes
        blob = np.frombuffer(to_bytes(program), dtype=np.uint8)
        dram[:blob.size] = blob
        result = IsaSimulator(cfg).run(dram, prog_addr=0, prog_len=len(program), check_races=True)
        assert result.ok and not result.hazards, f"seed {SEED} case {index}: {result.summary()}"
        assert all(n == 0 for n in result.tokens.values()), f"seed {SEED} case {index}: {result.tokens}"


def test_cases_are_a_pure_function_of_seed_and_index():
    a, b = fuzz.make_case(5, 17, "4x4"), fuzz.make_case(5, 17, "4x4")
    assert a.words == b.words and np.array_equal(a.dram, b.dram) and a.bus_errors == b.bus_errors
    assert fuzz.make_case(5, 18, "4x4").words != a.words


@pytest.mark.parametrize("config", ["2x2", "4x4"])
def test_deep_cases_match_and_are_a_pure_function_of_seed(config):
    """The netlist tier's deep stage: epilogue and STORE back-pressure programs, legal and race-free, equal on the
    RTL, the golden simulator and the cycle model; drawn from their own stream (not make_case's)."""
    cases = list(fuzz.deep_cases(SEED, config))
    assert len(cases) == fuzz.DEEP_EPILOGUE_CASES + fuzz.DEEP_STORE_CASES
    assert Counter(c.layout for c in cases) == {"deep epilogue": fuzz.DEEP_EPILOGUE_CASES,
                                               "deep store": fuzz.DEEP_STORE_CASES}
    again = list(fuzz.deep_cases(SEED, config))
    assert all(a.words == b.words and np.array_equal(a.dram, b.dram) and a.latency == b.latency
               for a, b in zip(cases, again))
    assert cases[0].words != fuzz.make_case(SEED, 0, config).words
    for case in cases[:: 1 if config == "2x2" else 4]:
        summary = fuzz.check_case(case)
        assert summary["error"] == "NONE", f"seed {SEED} {config} deep case {case.index}: {summary}"


def test_deep_cases_fit_every_configuration():
    """The 8x8 (512 accumulator rows, 64 PARAM entries) too: its deep cases are drawn, legal and race-free on the
    golden simulator (its Verilator model is not built here)."""
    for case in list(fuzz.deep_cases(SEED, "8x8"))[::16]:
        dram = case.image()
        result = IsaSimulator(fuzz.CONFIGS["8x8"]).run(dram, prog_addr=case.prog_addr, prog_len=case.prog_len,
                                                       check_races=True)
        assert result.ok and not result.hazards, f"seed {SEED} 8x8 deep case {case.index}: {result.summary()}"


def test_every_illegal_kind_gives_its_fault():
    """Over enough cases each corruption kind appears and the expected error codes all occur."""
    seen = Counter()
    for index in range(400):
        case = fuzz.make_case(SEED, index, "4x4", illegal_fraction=1.0)
        if case.layout.startswith(("long", "epilogue")):     # the constructed programs have kinds of their own
            continue
        dram = case.image()
        result = IsaSimulator(fuzz.CONFIGS["4x4"]).run(dram, prog_addr=case.prog_addr, prog_len=case.prog_len,
                                                       bus_errors=case.bus_errors)
        seen[case.kind, result.error.name] += 1
    kinds = {k for k, _ in seen}
    assert kinds == set(fuzz._ILLEGAL_KINDS), f"missing kinds: {set(fuzz._ILLEGAL_KINDS) - kinds}"
    codes = {c for _, c in seen}
    assert {e.name for e in ErrorCode} - {"NONE"} <= codes, f"codes never produced: {set(e.name for e in ErrorCode) - codes}"


def test_shrink_drops_instructions_and_sizes(monkeypatch):
    """A stand-in failure (any STORE fails) shrinks to the STORE alone with count and n_cols 1, then a HALT."""
    def fake_check(case):
        if any(isinstance(decode(w), Store) for w in case.words[:case.prog_len] if _decodes(w)):
            raise fuzz.Mismatch("a STORE")
        return {"error": "NONE", "cycles": 0, "legal": True}

    monkeypatch.setattr(fuzz, "check_case", fake_check)
    index = next(i for i in range(100) if (c := fuzz.make_case(SEED, i, "4x4", illegal_fraction=0)).kind == "legal"
                 and sum(isinstance(decode(w), Store) for w in c.words) >= 2 and len(c.words) > 10)
    case = fuzz.make_case(SEED, index, "4x4", illegal_fraction=0)
    small = fuzz.shrink(case)
    assert len(small.words) == 2, small.listing()
    store = decode(small.words[0])
    assert isinstance(store, Store) and store.count == 1 and store.n_cols == 1, small.listing()
    assert isinstance(decode(small.words[1]), Halt)


def _decodes(word):
    try:
        decode(word)
        return True
    except ValueError:
        return False


def test_mismatch_is_shrunk_and_saved(tmp_path, monkeypatch):
    """A wrong golden model (STORE raw rows shifted by one byte) is caught, shrunk and saved with its seed."""
    import sim.isa_sim as isa_sim

    real = isa_sim.IsaSimulator._execute

    def broken(self, instr, index, unit, stats, races):
        if isinstance(instr, Store) and instr.raw:
            instr = dataclasses.replace(instr, dram_addr=instr.dram_addr + 1)
        return real(self, instr, index, unit, stats, races)

    monkeypatch.setattr(isa_sim.IsaSimulator, "_execute", broken)
    index = next(i for i in range(200) if (c := fuzz.make_case(SEED, i, "4x4", illegal_fraction=0)).kind == "legal"
                 and any(isinstance(decode(w), Store) and decode(w).raw for w in c.words))
    case = fuzz.make_case(SEED, index, "4x4", illegal_fraction=0)
    with pytest.raises(fuzz.Mismatch, match=f"4x4 seed {SEED} case {index} .*DRAM byte"):
        fuzz.check_case(case)
    small = fuzz.shrink(case)
    assert len(small.words) < len(case.words)
    path = fuzz.save_reproducer(small, "broken golden", tmp_path)
    saved = json.loads(path.read_text())
    assert saved["seed"] == SEED and saved["index"] == index and saved["listing"]
    assert np.array_equal(np.load(tmp_path / saved["dram"], allow_pickle=False), case.dram)
    with pytest.raises(fuzz.Mismatch):
        fuzz.check_case(small)
    replayed = fuzz.load_reproducer(path)
    assert replayed.words == small.words and replayed.prog_len == small.prog_len
    with pytest.raises(fuzz.Mismatch):
        fuzz.check_case(replayed)


def test_command_line_errors_are_one_line():
    for args, text in ((["--configs", "3x3"], "unknown configuration '3x3'"), (["--workers", "0"], "--workers")):
        proc = subprocess.run([sys.executable, "-m", "sim.fuzz", *args, "--programs", "1", "--networks", "0"],
                              capture_output=True, text=True)
        assert proc.returncode == 2 and text in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


@pytest.mark.parametrize("kind,code", [("slverr", ErrorCode.BUS_ERROR_STORE), ("decerr", ErrorCode.BUS_ERROR_STORE)])
def test_store_row_across_a_page_with_an_error_before_the_cut(kind, code):
    """A raw STORE row that the AXI master splits at a 4 KiB boundary, with the error response on the first of the
    two bursts: the row's last burst answers OKAY, so the error must be kept across the split."""
    from hw.isa import Buffer, Load, Matmul, encode
    from sim.isa_sim import pack_param_entry

    config = fuzz.CONFIGS["4x4"]
    rng = np.random.default_rng(SEED)
    dram = rng.integers(0, 256, fuzz.DRAM_BYTES, dtype=np.uint8)
    entry = pack_param_entry(4, [1, 2, 3, 4], [1 << 30] * 4, [0] * 4)
    dram[0x5000:0x5000 + len(entry)] = np.frombuffer(entry, dtype=np.uint8)
    program = [Load(buffer=Buffer.ACT, y_size=1, x_size=4, stride=4, dram_addr=0x4000),
               Load(buffer=Buffer.WGT, y_size=4, x_size=4, stride=4, dram_addr=0x4100),
               Load(buffer=Buffer.PARAM, y_size=1, x_size=len(entry), stride=len(entry), dram_addr=0x5000,
                    push_next=True),
               Matmul(count=1, k_rows=4, pop_prev=True, push_next=True),
               Store(count=1, n_cols=4, raw=True, stride=16, dram_addr=0x9000 - 8, pop_prev=True), Halt()]
    case = fuzz.FuzzCase("4x4", SEED, -1, "directed", [encode(i) for i in program], dram, 0x100, len(program),
                         bus_errors=[(0x9000 - 8, 0x9000, kind)])
    summary = fuzz.check_case(case)
    assert summary["error"] == code.name


def _first_case(config, want, limit=600):
    for index in range(limit):
        case = fuzz.make_case(SEED, index, config)
        if want(case):
            return case
    raise AssertionError(f"seed {SEED}: no case of the wanted kind in the first {limit} of {config}")


@pytest.mark.parametrize("what", ["long", "long_bus_load", "long_overrun", "high", "epilogue", "host"])
def test_each_constructed_kind_runs_and_the_oracle_compares_exactly(what):
    """The first case of each kind that the generator adds for the netlist tier's survivors runs on the golden
    simulator, the RTL and (legal, PROG_LEN = length) the cycle model with every byte, counter and read-back
    register equal; each also shows the property it is there for."""
    want = {"long": lambda c: c.layout.startswith("long") and c.kind == "legal",
            "long_bus_load": lambda c: c.kind == "long_bus_load",
            "long_overrun": lambda c: c.kind == "long_overrun",
            "high": lambda c: c.layout.startswith("high") and c.prog_addr >= 1 << 22,
            "epilogue": lambda c: c.layout == "epilogue",
            "host": lambda c: c.host is not None and c.kind == "legal"}[what]
    case = _first_case("2x2", want)
    summary = fuzz.check_case(case)
    if what.startswith("long"):
        assert len(case.words) > 4096 and case.prog_len >= 4096, (case.index, len(case.words), case.prog_len)
        assert summary["error"] == {"long": "NONE", "long_bus_load": "BUS_ERROR_LOAD",
                                    "long_overrun": "PROGRAM_OVERRUN"}[what], (case.index, summary)
    elif what == "high":
        assert case.dram.size > case.prog_addr >= 1 << 22 and summary["error"] == "NONE", (case.index, summary)
    elif what == "epilogue":
        stores = [decode(w) for w in case.words if isinstance(decode(w), Store)]
        assert summary["error"] == "NONE" and sum(not s.raw for s in stores) == fuzz.CONFIGS["2x2"].param_depth
    else:
        strobes = [s for _, _, s in case.host["writes"]]
        assert any(s not in (0, 0xF) for s in strobes) and not all(case.host["stall"]), case.host
        assert summary["error"] == "NONE"


def test_host_plan_reaches_its_values_through_byte_strobes():
    """Replaying each plan's writes byte by byte gives the values it expects; PROG_ADDR's ignored low bits and
    IRQ_ENABLE's unused bits are exercised, and IRQ_ENABLE bit 0 is always set (else no irq)."""
    plans = [fuzz.make_case(SEED, i, "2x2").host for i in range(120)]
    plans = [p for p in plans if p]
    assert len(plans) >= 20
    for plan in plans:
        regs = {}
        for name, value, strobe in plan["writes"]:
            mask = sum(0xFF << (8 * b) for b in range(4) if strobe >> b & 1)
            regs[name] = (regs.get(name, 0) & ~mask) | (value & mask)
        assert regs == plan["expect"] and plan["expect"]["irq_enable"] & 1, plan
    assert any(p["expect"]["prog_addr"] & 0xF for p in plans)
    assert any(p["expect"]["irq_enable"] >> 15 & 1 for p in plans)
