"""The ISA module (hw/isa.py): encoding round trips, illegal words, the assembler, range checks, and the hand-written
program of docs/isa.md run on the golden simulator."""

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest

from hw.isa import (ALLOWED_FLAGS, FIELDS, FLAG_NAMES, INSTRUCTION_BYTES, AssemblyError, Buffer, HardwareConfig, Halt,
                    IllegalInstruction, Load, Matmul, Opcode, Store, Sync, Unit, assemble, decode, disassemble,
                    encode, from_bytes, to_bytes)
from sim.arith import quantized_gemm
from sim.isa_sim import IsaSimulator, pack_param_entry

CLASSES = {Opcode.LOAD: Load, Opcode.MATMUL: Matmul, Opcode.STORE: Store, Opcode.SYNC: Sync, Opcode.HALT: Halt}
UNIT = {Opcode.LOAD: Unit.LOAD, Opcode.MATMUL: Unit.COMPUTE, Opcode.STORE: Unit.STORE}


def random_instruction(rng, opcode):
    """A legal instruction of ``opcode`` with every field random over its full width."""
    values = {}
    for name, _, width in FIELDS[opcode]:
        if name == "opcode" or name in FLAG_NAMES:
            continue
        if name == "buffer":
            values[name] = Buffer(int(rng.integers(0, 3)))
        elif name == "unit":
            values[name] = Unit(int(rng.integers(0, 3)))
        elif name in ("accumulate", "raw"):
            values[name] = bool(rng.integers(0, 2))
        else:
            # Edge values as often as random ones.
            values[name] = int(rng.choice([0, (1 << width) - 1, int(rng.integers(0, 1 << width))]))
    unit = values.get("unit", UNIT.get(opcode))
    allowed = sorted(ALLOWED_FLAGS[unit]) if unit is not None else []
    for flag in allowed:
        values[flag] = bool(rng.integers(0, 2))
    return CLASSES[opcode](**values)


def reserved_bits(opcode):
    used = set()
    for _, lsb, width in FIELDS[opcode]:
        used.update(range(lsb, lsb + width))
    return [b for b in range(128) if b not in used]


@pytest.mark.parametrize("opcode", list(Opcode), ids=lambda o: o.name)
def test_encode_decode_round_trip(opcode):
    seed = 100 + int(opcode)
    rng = np.random.default_rng(seed)
    program = [random_instruction(rng, opcode) for _ in range(300)]
    for i, instr in enumerate(program):
        word = encode(instr)
        assert 0 <= word < 1 << 128
        assert word & 7 == opcode, f"seed {seed} #{i}: opcode bits of {word:#x}"
        assert decode(word) == instr, f"seed {seed} #{i}: {instr} -> {word:#x} -> {decode(word)}"
    blob = to_bytes(program)
    assert len(blob) == INSTRUCTION_BYTES * len(program)
    assert from_bytes(blob) == [encode(i) for i in program]
    assert blob[:16] == encode(program[0]).to_bytes(16, "little")
    assert to_bytes([encode(i) for i in program]) == blob   # encoded ints are accepted too
    assert assemble(disassemble(program)) == program, f"seed {seed}"
    assert assemble(disassemble(program, with_index=False)) == program, f"seed {seed}"


def test_mixed_program_text_round_trip():
    seed = 7
    rng = np.random.default_rng(seed)
    program = [random_instruction(rng, Opcode(int(rng.integers(1, 6)))) for _ in range(500)]
    text = disassemble(program)
    assert len(text.splitlines()) == len(program)
    assert assemble(text) == program, f"seed {seed}"
    assert [decode(w) for w in from_bytes(to_bytes(program))] == program, f"seed {seed}"


def test_field_positions_match_the_doc_table():
    # A field set to all ones lands exactly on its documented bit range.
    assert encode(Load(buffer=Buffer.PARAM)) == 1 | 2 << 8 | 1 << 26 | 1 << 42
    assert encode(Load(buffer=Buffer.ACT, buf_addr=0, y_size=1, x_size=1, stride=0, dram_addr=0xFFFF_FFFF)) \
        == 1 | 1 << 26 | 1 << 42 | 0xFFFF_FFFF << 78
    assert encode(Matmul(k_rows=255, count=1, push_next=True)) == 2 | 1 << 6 | 1 << 56 | 255 << 72
    assert encode(Store(dram_addr=1, stride=1, raw=True, pop_prev=True)) == 3 | 1 << 3 | 1 << 7 | 1 << 24 | 1 << 56 \
        | 1 << 64 | 1 << 88
    assert encode(Sync(unit=Unit.STORE, push_prev=True)) == 4 | 1 << 5 | 2 << 7
    assert encode(Halt()) == 5


@pytest.mark.parametrize("opcode", [0, 6, 7])
def test_illegal_opcodes(opcode):
    rng = np.random.default_rng(opcode)
    for _ in range(20):
        word = (int(rng.integers(0, 1 << 62)) << 64 | int(rng.integers(0, 1 << 62)) << 3) | opcode
        with pytest.raises(IllegalInstruction, match=f"unknown opcode {opcode}"):
            decode(word)
    with pytest.raises(IllegalInstruction, match="unknown opcode 0"):
        decode(0)


@pytest.mark.parametrize("opcode", list(Opcode), ids=lambda o: o.name)
def test_reserved_bits_are_illegal(opcode):
    seed = 200 + int(opcode)
    rng = np.random.default_rng(seed)
    bits = reserved_bits(opcode)
    assert bits, "every opcode has reserved bits"
    for bit in bits:
        word = encode(random_instruction(rng, opcode)) | 1 << bit
        with pytest.raises(IllegalInstruction, match="reserved bits"):
            decode(word)


@pytest.mark.parametrize("word, match", [
    (1 | 1 << 3, "pop_prev is not allowed for the LOAD"),
    (1 | 1 << 5, "push_prev is not allowed for the LOAD"),
    (3 | 1 << 4, "pop_next is not allowed for the STORE"),
    (3 | 1 << 6, "push_next is not allowed for the STORE"),
    (4 | 0 << 7 | 1 << 3, "pop_prev is not allowed for the LOAD"),      # SYNC unit=LOAD
    (4 | 2 << 7 | 1 << 6, "push_next is not allowed for the STORE"),    # SYNC unit=STORE
    (5 | 1 << 4, "not allowed for the dispatcher"),                      # HALT with a flag
    (1 | 3 << 8, "buffer 3 does not exist"),
    (4 | 3 << 7, "unit 3 does not exist"),
    (1 << 128, "wider than 128 bits"),
    (-1, "wider than 128 bits"),
], ids=["load-pop_prev", "load-push_prev", "store-pop_next", "store-push_next", "sync-load-pop_prev",
        "sync-store-push_next", "halt-flag", "buffer3", "unit3", "too-wide", "negative"])
def test_illegal_fields_and_flags(word, match):
    with pytest.raises(IllegalInstruction, match=match):
        decode(word)


def test_every_flag_combination_per_unit():
    cases = [(encode(CLASSES[op]()), ALLOWED_FLAGS[unit]) for op, unit in UNIT.items()]
    cases += [(encode(Sync(unit=unit)), ALLOWED_FLAGS[unit]) for unit in Unit]
    cases += [(encode(Halt()), set())]
    for base, allowed in cases:
        for mask in range(16):
            flags = {name for i, name in enumerate(FLAG_NAMES) if mask >> i & 1}
            word = base | mask << 3
            if flags <= allowed:
                assert decode(word).flags == {n: n in flags for n in FLAG_NAMES}
            else:
                with pytest.raises(IllegalInstruction, match="not allowed"):
                    decode(word)


@pytest.mark.parametrize("instr, match", [
    (Load(buf_addr=1 << 16), r"Load.buf_addr = 65536 does not fit in 16 bits"),
    (Load(dram_addr=-1), r"Load.dram_addr = -1 does not fit"),
    (Matmul(k_rows=256), r"Matmul.k_rows = 256 does not fit in 8 bits"),
    (Store(stride=1 << 24), r"Store.stride = 16777216 does not fit in 24 bits"),
    (Load(pop_prev=True), "pop_prev is not allowed for the LOAD unit"),
    (Store(push_next=True), "push_next is not allowed for the STORE unit"),
    (Halt(pop_prev=True), "not allowed for the dispatcher"),
])
def test_encode_rejects(instr, match):
    with pytest.raises(IllegalInstruction, match=match):
        encode(instr)


@pytest.mark.parametrize("text, match", [
    ("HALT\nFOO x=1", r"line 2: unknown mnemonic 'FOO'"),
    ("\n# comment\nLOAD bogus=3", r"line 3: LOAD has no field 'bogus'"),
    ("MATMUL count=abc", r"line 1: count='abc' is not an integer"),
    ("STORE pop_next", r"line 1: Store: token flag pop_next is not allowed for the STORE unit"),
    ("HALT\nLOAD buffer=FOO", r"line 2: unknown buffer 'FOO'"),
    ("SYNC unit=DISPATCH", r"line 1: unknown unit 'DISPATCH'"),
    ("LOAD buf_addr=65536", r"line 1: .*buf_addr = 65536 does not fit in 16 bits"),
    ("MATMUL wobble", r"line 1: MATMUL has no flag 'wobble'"),
    ("LOAD buffer=3", r"line 1: unknown buffer '3'"),
    # issue 17: a missing operand is an error, not a silent 0 or 1
    ("LOAD buffer=ACT y_size=1", r"line 1: LOAD is missing operands buf_addr, x_size, stride, dram_addr; write every "
                                 r"operand: LOAD buffer= buf_addr= y_size= x_size= stride= dram_addr=$"),
    ("HALT\nSYNC push_next", r"line 2: SYNC is missing operand unit;"),
    ("MATMUL act_addr=0 wgt_addr=0 acc_addr=0 count=2 k_rows=4 count=3", r"line 1: MATMUL gives count twice"),
    ("STORE acc_addr=0 count=1 param_addr=0 n_cols=1 dram_addr=0x40 raw", r"line 1: STORE is missing operand stride;"),
])
def test_assembler_errors_name_the_line(text, match):
    with pytest.raises(AssemblyError, match=match):
        assemble(text)


def test_assembler_terse_form_only_with_defaults():
    assert assemble("MATMUL count=2 k_rows=3", defaults=True) == [Matmul(count=2, k_rows=3)]
    with pytest.raises(AssemblyError, match=r"MATMUL is missing operands act_addr, wgt_addr, acc_addr"):
        assemble("MATMUL count=2 k_rows=3")


def test_assembler_accepts_comments_indices_hex_and_names():
    program = assemble("""
        # a comment line
            3: LOAD buffer=wgt buf_addr=0x10 y_size=2 x_size=3 stride=0x20 dram_addr=0x1234 push_next  # trailing
        MATMUL act_addr=1 count=2 k_rows=3 accumulate pop_prev push_next
        store count=1 n_cols=1 raw pop_prev
        SYNC unit=2 push_prev
        halt
    """, defaults=True)
    assert program == [
        Load(buffer=Buffer.WGT, buf_addr=16, y_size=2, x_size=3, stride=32, dram_addr=0x1234, push_next=True),
        Matmul(act_addr=1, count=2, k_rows=3, accumulate=True, pop_prev=True, push_next=True),
        Store(count=1, n_cols=1, raw=True, pop_prev=True),
        Sync(unit=Unit.STORE, push_prev=True),
        Halt(),
    ]


def test_from_bytes_rejects_partial_instructions():
    with pytest.raises(ValueError, match="length 17 is not a multiple of 16 bytes"):
        from_bytes(bytes(17))
    assert from_bytes(b"") == []


CFG = HardwareConfig(rows=4, cols=3, act_depth=10, wgt_depth=6, acc_depth=5, param_depth=2)


@pytest.mark.parametrize("instr, match", [
    (Load(y_size=0), "zero rows"),
    (Load(x_size=0), "zero bytes"),
    (Load(buffer=Buffer.ACT, x_size=5), "x_size 5 exceeds the 4-byte ACT entry"),
    (Load(buffer=Buffer.WGT, x_size=4), "x_size 4 exceeds the 3-byte WGT entry"),
    (Load(buffer=Buffer.PARAM, x_size=31), "x_size 31 exceeds the 30-byte PARAM entry"),
    (Load(buffer=Buffer.ACT, buf_addr=8, y_size=3), r"rows 8..10 outside ACT \(depth 10\)"),
    (Load(buffer=Buffer.WGT, buf_addr=6, y_size=1), r"outside WGT \(depth 6\)"),
    (Load(buffer=Buffer.PARAM, buf_addr=1, y_size=2), r"outside PARAM \(depth 2\)"),
    (Matmul(count=0), "MATMUL count 0"),
    (Matmul(k_rows=0), "k_rows 0"),
    (Matmul(k_rows=5), "k_rows 5 .k_rows must be 1..4"),
    (Matmul(act_addr=9, count=2), "activation rows beyond the scratchpad"),
    (Matmul(wgt_addr=3, k_rows=4), "weight rows beyond the weight buffer"),
    (Matmul(acc_addr=4, count=2), "accumulator rows beyond the accumulator memory"),
    (Store(count=0), "STORE count 0"),
    (Store(n_cols=0), "n_cols 0"),
    (Store(n_cols=4), r"n_cols 4 .n_cols must be 1..3"),
    (Store(acc_addr=3, count=3), "accumulator rows beyond the accumulator memory"),
    (Store(param_addr=2), "param_addr 2 beyond the parameter buffer"),
])
def test_config_check_rules(instr, match):
    reason = CFG.check(instr)
    assert reason is not None and re.search(match, reason), f"{instr}: {reason!r}"


@pytest.mark.parametrize("instr", [
    Load(buffer=Buffer.ACT, buf_addr=6, y_size=4, x_size=4),
    Load(buffer=Buffer.WGT, buf_addr=0, y_size=6, x_size=3),
    Load(buffer=Buffer.PARAM, buf_addr=1, y_size=1, x_size=30),
    Matmul(act_addr=5, count=5, wgt_addr=2, k_rows=4, acc_addr=0),
    Matmul(act_addr=9, count=1, wgt_addr=5, k_rows=1, acc_addr=4),
    Store(acc_addr=0, count=5, param_addr=1, n_cols=3),
    Sync(unit=Unit.COMPUTE), Halt(),
])
def test_config_check_accepts_limits(instr):
    assert CFG.check(instr) is None


def test_config_entry_sizes():
    cfg = HardwareConfig(rows=5, cols=7)
    assert [cfg.row_bytes(b) for b in Buffer] == [5, 7, 66]
    assert [cfg.depth(b) for b in Buffer] == [cfg.act_depth, cfg.wgt_depth, cfg.param_depth]


def doc_program_text():
    doc = (Path(__file__).resolve().parents[2] / "docs" / "isa.md").read_text()
    section = doc.split("## Writing a program by hand", 1)[1]
    match = re.search(r"```\n(.*?)```", section, re.S)
    assert match, "docs/isa.md lost the code block of its hand-written program"
    return match.group(1)


def test_doc_program_computes_the_gemm():
    program = assemble(doc_program_text())
    assert [type(i) for i in program] == [Load] * 5 + [Matmul] * 2 + [Store, Halt]
    seed = 31
    rng = np.random.default_rng(seed)
    a = rng.integers(-128, 128, (3, 5), dtype=np.int8)
    w = rng.integers(-128, 128, (5, 2), dtype=np.int8)
    bias = rng.integers(-5000, 5000, 2)
    multiplier = rng.integers(1 << 30, 1 << 31, 2)
    shift = rng.integers(-12, -5, 2)
    zero_point, act_min, act_max = -3, -100, 90
    dram = rng.integers(0, 256, 0x6000, dtype=np.uint8)
    dram[0x1000:0x1000 + 15] = a.view(np.uint8).ravel()
    dram[0x2000:0x2000 + 10] = w.view(np.uint8).ravel()
    dram[0x3000:0x3000 + 39] = np.frombuffer(pack_param_entry(4, bias, multiplier, shift, zero_point, act_min,
                                                              act_max), dtype=np.uint8)
    image = to_bytes(program)
    dram[0x5000:0x5000 + len(image)] = np.frombuffer(image, dtype=np.uint8)
    before = dram.copy()
    result = IsaSimulator(HardwareConfig(rows=4, cols=4)).run(dram, prog_addr=0x5000, prog_len=len(program),
                                                              check_races=True)
    assert result.ok, result.summary()
    assert result.hazards == [], result.hazards
    assert all(n == 0 for n in result.tokens.values()), result.tokens
    want = quantized_gemm(a, w, bias, multiplier, shift, zero_point, act_min, act_max)
    got = dram[0x4000:0x4006].view(np.int8).reshape(3, 2)
    bad = np.argwhere(got != want)
    assert not bad.size, f"seed {seed}: first mismatch at {tuple(bad[0])}: got {got[tuple(bad[0])]}, " \
                         f"want {want[tuple(bad[0])]}"
    changed = np.flatnonzero(dram != before)
    assert set(changed) <= set(range(0x4000, 0x4006)), f"seed {seed}: stray writes at {changed[:5]}"


def test_instruction_dataclasses_are_frozen_values():
    instr = Load(buffer=Buffer.WGT, y_size=3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        instr.y_size = 4
    assert dataclasses.replace(instr, push_next=True).flags["push_next"]
