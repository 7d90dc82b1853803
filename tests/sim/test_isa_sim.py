"""Directed tests of the instruction-level golden simulator (sim/isa_sim.py) against docs/isa.md.

The oracles are written independently of the simulator: Python integers for the GEMM sums, byte-level DRAM
expectations, and sim.arith.requantize (the project's single definition of the rounding) for the epilogue.
"""

import re

import numpy as np
import pytest

from hw.isa import (Buffer, ErrorCode, HardwareConfig, Halt, Load, Matmul, Store, Sync, Unit, assemble, encode,
                    to_bytes)
from sim.arith import requantize
from sim.isa_sim import IsaResult, IsaSimulator, pack_param_entry, unpack_param_entry

CFG = HardwareConfig(rows=4, cols=3, act_depth=16, wgt_depth=16, acc_depth=8, param_depth=4)
PROG = 0x800        # program image address in the test DRAM
SIZE = 0x1000
ENTRY = CFG.row_bytes(Buffer.PARAM)   # 30 bytes


def put_program(dram, program, addr=PROG):
    image = to_bytes(program)
    dram[addr:addr + len(image)] = np.frombuffer(image, dtype=np.uint8)


def run(program, dram=None, *, cfg=CFG, prog_len=None, prog_addr=PROG, **kwargs):
    dram = np.zeros(SIZE, dtype=np.uint8) if dram is None else dram
    put_program(dram, program, prog_addr & ~0xF)
    result = IsaSimulator(cfg).run(dram, prog_addr=prog_addr,
                                   prog_len=len(program) if prog_len is None else prog_len, **kwargs)
    return result, dram


def first_mismatch(got, want):
    bad = np.argwhere(np.asarray(got) != np.asarray(want))
    if not bad.size:
        return None
    at = tuple(bad[0])
    return f"first mismatch at {at}: got {np.asarray(got)[at]}, want {np.asarray(want)[at]}"


def wrap32(x):
    return (x + (1 << 31)) % (1 << 32) - (1 << 31)


def identity_param(cols=CFG.cols, **kwargs):
    """A PARAM entry whose raw STORE writes the accumulators unchanged."""
    fields = dict(bias=[0] * cols, multiplier=[1 << 30] * cols, shift=[0] * cols)
    fields.update(kwargs)
    return np.frombuffer(pack_param_entry(cols, **fields), dtype=np.uint8)


# ---- LOAD -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("buffer", list(Buffer), ids=lambda b: b.name)
def test_load_copies_2d_and_zero_fills(buffer):
    seed = 10 + int(buffer)
    rng = np.random.default_rng(seed)
    dram = rng.integers(0, 256, SIZE, dtype=np.uint8)
    dram[0x600:0x700] = 0xFF
    width = CFG.row_bytes(buffer)
    depth = CFG.depth(buffer)
    y_size = min(3, depth - 1)
    x_size = width - 1 if width > 1 else 1
    addr, stride = 0x123, width + 5          # unaligned, row pitch wider than a row
    program = [
        Load(buffer=buffer, buf_addr=0, y_size=depth, x_size=width, stride=0, dram_addr=0x600),   # all 0xFF
        Load(buffer=buffer, buf_addr=1, y_size=y_size, x_size=x_size, stride=stride, dram_addr=addr),
        Halt(),
    ]
    result, _ = run(program, dram)
    assert result.ok, result.summary()
    got = result.buffers[buffer.name].view(np.uint8)
    want = np.full((depth, width), 0xFF, dtype=np.uint8)
    for y in range(y_size):
        want[1 + y] = 0
        want[1 + y, :x_size] = dram[addr + y * stride:addr + y * stride + x_size]
    assert first_mismatch(got, want) is None, f"seed {seed}: {first_mismatch(got, want)}"
    assert result.stats.load_bytes == depth * width + y_size * x_size


def test_load_stride_zero_repeats_a_row_and_overlapping_rows():
    dram = np.arange(SIZE, dtype=np.int64).astype(np.uint8)
    program = [Load(buffer=Buffer.ACT, buf_addr=2, y_size=3, x_size=4, stride=0, dram_addr=0x41),
               Load(buffer=Buffer.WGT, buf_addr=0, y_size=4, x_size=3, stride=1, dram_addr=0x10),
               Halt()]
    result, _ = run(program, dram)
    act = result.buffers["ACT"].view(np.uint8)
    assert (act[2:5] == [0x41, 0x42, 0x43, 0x44]).all()
    assert (act[:2] == 0).all() and (act[5:] == 0).all()
    wgt = result.buffers["WGT"].view(np.uint8)
    assert wgt[:4].tolist() == [[0x10 + y + x for x in range(3)] for y in range(4)]


def test_load_addresses_wrap_at_32_bits():
    dram = np.arange(SIZE, dtype=np.int64).astype(np.uint8)
    program = [Load(buffer=Buffer.ACT, buf_addr=0, y_size=2, x_size=2, stride=0x10, dram_addr=0xFFFF_FFF8),
               Halt()]
    result, _ = run(program, dram)
    assert result.error == ErrorCode.BUS_ERROR_LOAD   # row 0 lies beyond the image
    assert result.buffers["ACT"][1, :2].view(np.uint8).tolist() == [0x08, 0x09]   # row 1 wrapped to 0x8
    assert result.buffers["ACT"][0].tolist() == [0, 0, 0, 0]


# ---- MATMUL -----------------------------------------------------------------------------------------------------

def load_matrix(dram, buffer, buf_addr, matrix, at):
    """Write ``matrix`` (int8) at ``at`` in DRAM and return the LOAD that fetches it row by row."""
    matrix = np.asarray(matrix, dtype=np.int8)
    dram[at:at + matrix.size] = matrix.view(np.uint8).ravel()
    return Load(buffer=buffer, buf_addr=buf_addr, y_size=matrix.shape[0], x_size=matrix.shape[1],
                stride=matrix.shape[1], dram_addr=at)


def test_matmul_overwrite_accumulate_and_k_rows():
    seed = 21
    rng = np.random.default_rng(seed)
    dram = np.zeros(SIZE, dtype=np.uint8)
    act = rng.integers(-128, 128, (6, 4))
    wgt = rng.integers(-128, 128, (8, 3))       # rows 2..3 of the second tile are junk past k_rows=2
    acc_junk = rng.integers(-128, 128, (5, 4))
    program = [
        load_matrix(dram, Buffer.ACT, 0, act, 0x100),
        load_matrix(dram, Buffer.WGT, 0, wgt, 0x200),
        load_matrix(dram, Buffer.ACT, 6, acc_junk, 0x300),
        Matmul(act_addr=6, wgt_addr=0, acc_addr=1, count=5, k_rows=4),                  # junk, then overwritten
        Matmul(act_addr=0, wgt_addr=0, acc_addr=1, count=3, k_rows=4),                  # overwrite rows 1..3
        Matmul(act_addr=3, wgt_addr=4, acc_addr=2, count=3, k_rows=2, accumulate=True),  # add into rows 2..4
        Halt(),
    ]
    result, _ = run(program, dram)
    assert result.ok, result.summary()
    want = np.zeros((8, 3), dtype=np.int64)
    first = [[sum(int(act[i, r]) * int(wgt[r, c]) for r in range(4)) for c in range(3)] for i in range(3)]
    junk = [[sum(int(acc_junk[i, r]) * int(wgt[r, c]) for r in range(4)) for c in range(3)] for i in range(5)]
    want[1:6] = junk
    want[1:4] = first
    for i in range(3):
        for c in range(3):
            want[2 + i, c] += sum(int(act[3 + i, r]) * int(wgt[4 + r, c]) for r in range(2))
    got = result.buffers["ACC"]
    assert first_mismatch(got, want) is None, f"seed {seed}: {first_mismatch(got, want)}"
    s = result.stats
    assert s.vectors == 11 and s.opcodes["MATMUL"] == 3
    assert s.mac_slots == 11 * 4 * 3 and s.macs == (5 * 4 + 3 * 4 + 3 * 2) * 3


def test_matmul_sums_wrap_at_32_bits():
    cfg = HardwareConfig(rows=255, cols=1, act_depth=1, wgt_depth=255, acc_depth=1, param_depth=1)
    dram = np.full(SIZE, 0x80, dtype=np.uint8)          # every int8 is -128
    n = 530                                              # 530 * 255 * 16384 > 2**31
    program = [Load(buffer=Buffer.ACT, y_size=1, x_size=255, dram_addr=0),
               Load(buffer=Buffer.WGT, y_size=255, x_size=1, stride=1, dram_addr=0)]
    program += [Matmul(count=1, k_rows=255, accumulate=i > 0) for i in range(n)] + [Halt()]
    dram2 = np.full(0x4000, 0x80, dtype=np.uint8)
    put_program(dram2, program, 0x1000)
    result = IsaSimulator(cfg).run(dram2, prog_addr=0x1000, prog_len=len(program))
    assert result.ok, result.summary()
    assert int(result.buffers["ACC"][0, 0]) == wrap32(n * 255 * 16384) < 0


# ---- STORE ------------------------------------------------------------------------------------------------------

def acc_program(dram, act, wgt):
    """LOADs and a MATMUL leaving ``act @ wgt`` in ACC rows 0.. (act rows x 4, wgt 4 x 3)."""
    return [load_matrix(dram, Buffer.ACT, 0, act, 0x100), load_matrix(dram, Buffer.WGT, 0, wgt, 0x200),
            Matmul(count=len(act), k_rows=4)]


def test_store_requantizes_rows_to_int8_with_stride():
    seed = 31
    rng = np.random.default_rng(seed)
    dram = rng.integers(0, 256, SIZE, dtype=np.uint8)
    before = dram.copy()
    act, wgt = rng.integers(-128, 128, (5, 4)), rng.integers(-128, 128, (4, 3))
    bias = rng.integers(-40000, 40000, 3)
    multiplier = rng.integers(1 << 30, 1 << 31, 3)
    shift = np.array([-9, 0, 3])
    zp, lo, hi = 7, -50, 60
    dram[0x300:0x300 + ENTRY] = np.frombuffer(pack_param_entry(3, bias, multiplier, shift, zp, lo, hi), np.uint8)
    program = acc_program(dram, act, wgt) + [
        Load(buffer=Buffer.PARAM, buf_addr=2, x_size=ENTRY, dram_addr=0x300),
        Store(acc_addr=1, count=4, param_addr=2, n_cols=2, stride=5, dram_addr=0x401),
        Halt()]
    before = dram.copy()
    result, _ = run(program, dram)
    assert result.ok, result.summary()
    acc = np.array([[sum(int(act[i, r]) * int(wgt[r, c]) for r in range(4)) for c in range(3)] for i in range(5)])
    y = requantize(acc + bias, multiplier, shift, zp, lo, hi)
    want = before.copy()
    for r in range(4):
        want[0x401 + 5 * r:0x401 + 5 * r + 2] = y[1 + r, :2].view(np.uint8)
    want[PROG:PROG + 16 * len(program)] = dram[PROG:PROG + 16 * len(program)]
    assert first_mismatch(dram, want) is None, f"seed {seed}: {first_mismatch(dram, want)}"
    assert result.stats.store_bytes == 8


def test_store_raw_writes_wrapped_int32_little_endian():
    seed = 32
    rng = np.random.default_rng(seed)
    dram = np.zeros(SIZE, dtype=np.uint8)
    act, wgt = rng.integers(0, 128, (3, 4)), rng.integers(0, 128, (4, 3))
    bias = np.array([(1 << 31) - 1, -(1 << 31), 5])
    dram[0x300:0x300 + ENTRY] = identity_param(bias=bias)
    program = acc_program(dram, act, wgt) + [
        Load(buffer=Buffer.PARAM, buf_addr=0, x_size=ENTRY, dram_addr=0x300),
        Store(acc_addr=0, count=3, n_cols=3, stride=13, dram_addr=0x402, raw=True),
        Halt()]
    result, _ = run(program, dram)
    assert result.ok, result.summary()
    for r in range(3):
        got = dram[0x402 + 13 * r:0x402 + 13 * r + 12].view("<i4")
        want = [wrap32(sum(int(act[r, k]) * int(wgt[k, c]) for k in range(4)) + int(bias[c])) for c in range(3)]
        assert got.tolist() == want, f"seed {seed} row {r}"
    assert dram[0x402 + 12] == 0 and dram[0x402 + 13 * 3 - 1] == 0


def test_store_clamps_max_then_min_when_bounds_are_inverted():
    dram = np.zeros(SIZE, dtype=np.uint8)
    act, wgt = np.arange(-6, 6).reshape(3, 4), np.arange(12).reshape(4, 3) - 5
    dram[0x300:0x300 + ENTRY] = identity_param(zero_point=0, act_min=50, act_max=-20)
    program = acc_program(dram, act, wgt) + [
        Load(buffer=Buffer.PARAM, buf_addr=0, x_size=ENTRY, dram_addr=0x300),
        Store(count=3, n_cols=3, stride=3, dram_addr=0x400), Halt()]
    result, _ = run(program, dram)
    assert result.ok
    assert (dram[0x400:0x409].view(np.int8) == -20).all()   # min(max(y, 50), -20) == -20 for every y


def test_store_reads_shift_as_a_six_bit_field():
    seed = 33
    rng = np.random.default_rng(seed)
    dram = np.zeros(SIZE, dtype=np.uint8)
    act, wgt = rng.integers(-128, 128, (4, 4)), rng.integers(-128, 128, (4, 3))
    multiplier = np.array([1 << 30, 1 << 30, 1 << 30])
    # Bytes 33 (= -31 in 6 bits), 0xC5 (= 5), 0xE0 (= -32: a right shift by 32 of |SRDHM| < 2**31 gives 0).
    dram[0x300:0x300 + ENTRY] = identity_param(multiplier=multiplier, shift=[33, -59, -32], zero_point=3)
    program = acc_program(dram, act, wgt) + [
        Load(buffer=Buffer.PARAM, buf_addr=0, x_size=ENTRY, dram_addr=0x300),
        Store(count=4, n_cols=3, stride=3, dram_addr=0x400), Halt()]
    result, _ = run(program, dram)
    acc = np.asarray(act, np.int64) @ np.asarray(wgt, np.int64)
    want = requantize(acc, multiplier, [-31, 5, 0], 3)
    want[:, 2] = 3
    got = dram[0x400:0x40C].view(np.int8).reshape(4, 3)
    assert first_mismatch(got, want) is None, f"seed {seed}: {first_mismatch(got, want)}"


def test_param_entry_pack_unpack_round_trip():
    seed = 34
    rng = np.random.default_rng(seed)
    for cols in (1, 2, 5, 16):
        fields = dict(bias=rng.integers(-(1 << 31), 1 << 31, cols), multiplier=rng.integers(-(1 << 31), 1 << 31, cols),
                      shift=rng.integers(-31, 32, cols), zero_point=int(rng.integers(-128, 128)),
                      act_min=int(rng.integers(-128, 128)), act_max=int(rng.integers(-128, 128)))
        blob = pack_param_entry(cols, **fields)
        assert len(blob) == 9 * cols + 3
        back = unpack_param_entry(np.frombuffer(blob, np.uint8), cols)
        for name, value in fields.items():
            assert np.array_equal(back[name], value), f"seed {seed} cols {cols} field {name}"
    assert pack_param_entry(3, [1], [2], [-1], 1, 2, 3) == \
        (b"\x01\0\0\0" + bytes(8) + b"\x02\0\0\0" + bytes(8) + b"\xff\0\0" + b"\x01\x02\x03")
    with pytest.raises(ValueError, match="at most 3 long"):
        pack_param_entry(3, [1, 2, 3, 4], 0, 0)
    with pytest.raises(ValueError, match="30 bytes"):
        unpack_param_entry(np.zeros(29, np.uint8), 3)


# ---- SYNC, HALT, fetch ------------------------------------------------------------------------------------------

def marker(at):
    """A STORE of the MARK bytes (raw zero ACC row 0 plus the bias of PARAM 0) to ``at``."""
    return Store(count=1, n_cols=1, dram_addr=at, raw=True)


def marker_program():
    """PARAM 0 gets bias 0x11223344 so a raw STORE of the zero ACC writes 44 33 22 11."""
    return [Load(buffer=Buffer.PARAM, x_size=ENTRY, dram_addr=0x300)]


def marked_dram():
    dram = np.zeros(SIZE, dtype=np.uint8)
    dram[0x300:0x300 + ENTRY] = identity_param(bias=[0x11223344, 0, 0])
    return dram


MARK = [0x44, 0x33, 0x22, 0x11]


def test_sync_only_moves_tokens_and_reports_leftovers():
    program = [Sync(unit=Unit.LOAD, push_next=True), Sync(unit=Unit.LOAD, push_next=True),
               Sync(unit=Unit.COMPUTE, pop_prev=True, push_next=True, push_prev=True),
               Sync(unit=Unit.STORE, push_prev=True), Halt()]
    result, dram = run(program)
    assert result.ok and result.instructions == 4
    assert result.tokens == {"LOAD->COMPUTE": 1, "COMPUTE->LOAD": 1, "COMPUTE->STORE": 1, "STORE->COMPUTE": 1}
    assert result.stats.units == {"LOAD": 2, "COMPUTE": 1, "STORE": 1}
    assert result.stats.opcodes["SYNC"] == 4 and result.stats.opcodes["HALT"] == 1
    assert not dram[:PROG].any() and not dram[PROG + 80:].any()


def test_halt_ends_the_program_before_later_instructions():
    program = marker_program() + [marker(0x400), Halt(), marker(0x410)]
    result, dram = run(program, marked_dram(), prog_len=100)
    assert result.ok and result.error_index is None and result.instructions == 2
    assert dram[0x400:0x404].tolist() == MARK and not dram[0x410:0x414].any()


def test_prog_addr_low_bits_are_ignored():
    program = marker_program() + [marker(0x400), Halt()]
    result, dram = run(program, marked_dram(), prog_addr=PROG + 0xF)
    assert result.ok, result.summary()
    assert dram[0x400:0x404].tolist() == MARK


# ---- Errors: precise, at the faulting instruction ---------------------------------------------------------------

def faulting(bad, *, before=None, after=None, **kwargs):
    """Run: PARAM load, STORE marker at 0x400, ``bad`` (index 2), STORE marker at 0x410, HALT."""
    program = marker_program() + [marker(0x400) if before is None else before, bad,
                                  marker(0x410) if after is None else after, Halt()]
    return run(program, marked_dram(), **kwargs)


def assert_precise(result, dram, code, index=2):
    assert result.error == code, result.summary()
    assert result.error_index == index, result.summary()
    assert dram[0x400:0x404].tolist() == MARK, "an instruction before the fault did not take effect"
    assert not dram[0x410:0x414].any(), "an instruction after the fault took effect"


@pytest.mark.parametrize("word", [0, 6, 7 | 1 << 100, encode(Halt()) | 1 << 50, encode(Load()) | 3 << 8,
                                  encode(Sync()) | 3 << 7, encode(Load()) | 1 << 3],
                         ids=["zero", "opcode6", "opcode7", "reserved", "buffer3", "unit3", "flag"])
def test_illegal_instruction(word):
    program = marker_program() + [marker(0x400)]
    dram = marked_dram()
    put_program(dram, program + [Halt(), marker(0x410), Halt()])
    dram[PROG + 32:PROG + 48] = np.frombuffer(word.to_bytes(16, "little"), np.uint8)
    result = IsaSimulator(CFG).run(dram, prog_addr=PROG, prog_len=5)
    assert_precise(result, dram, ErrorCode.ILLEGAL_INSTRUCTION)
    assert result.instructions == 2


@pytest.mark.parametrize("bad", [
    Load(buffer=Buffer.ACT, buf_addr=15, y_size=2, x_size=1), Load(buffer=Buffer.PARAM, x_size=ENTRY + 1),
    Load(y_size=0), Matmul(k_rows=5), Matmul(acc_addr=7, count=2), Matmul(count=0),
    Store(n_cols=4), Store(param_addr=4), Store(acc_addr=8),
], ids=lambda i: type(i).__name__)
def test_out_of_range(bad):
    result, dram = faulting(bad)
    assert_precise(result, dram, ErrorCode.OUT_OF_RANGE)
    assert result.message == CFG.check(bad)


def test_out_of_range_is_checked_before_tokens():
    result, dram = faulting(Matmul(count=0, pop_prev=True))
    assert_precise(result, dram, ErrorCode.OUT_OF_RANGE)


def test_bus_error_on_fetch():
    bad_byte = PROG + 2 * 16 + 15                       # last byte of instruction 2
    for kind in ("slverr", "decerr"):
        result, dram = faulting(Sync(), bus_errors=[(bad_byte, bad_byte + 1, kind)])
        assert_precise(result, dram, ErrorCode.BUS_ERROR_FETCH)
        assert f"{bad_byte:#x}" in result.message


def test_fetch_beyond_the_image_is_a_bus_error():
    program = marker_program() + [marker(0x400)]
    dram = marked_dram()[:PROG + 32].copy()
    put_program(dram, program)
    result = IsaSimulator(CFG).run(dram, prog_addr=PROG, prog_len=10)
    assert result.error == ErrorCode.BUS_ERROR_FETCH and result.error_index == 2
    assert dram[0x400:0x404].tolist() == MARK


def test_bus_error_on_load_completes_the_load():
    result, dram = faulting(Load(buffer=Buffer.WGT, buf_addr=1, y_size=3, x_size=3, stride=8, dram_addr=0x500),
                            bus_errors=[(0x509, 0x50A, "slverr"), (0x900, 0x980, "decerr")])
    assert_precise(result, dram, ErrorCode.BUS_ERROR_LOAD)
    assert result.instructions == 3
    assert "0x509" in result.message
    # The data that did arrive: a pattern, with the failing byte read as zero.
    program = [Load(buffer=Buffer.WGT, buf_addr=1, y_size=3, x_size=3, stride=8, dram_addr=0x500), Halt()]
    pattern = np.zeros(SIZE, np.uint8)
    pattern[0x500:0x520] = np.arange(1, 33)
    result, _ = run(program, pattern, bus_errors=[(0x509, 0x50A, "slverr")])
    assert result.error == ErrorCode.BUS_ERROR_LOAD and result.error_index == 0
    got = result.buffers["WGT"][1:4].view(np.uint8).tolist()
    assert got == [[1, 2, 3], [9, 0, 11], [17, 18, 19]]


def test_load_beyond_the_image_is_a_bus_error():
    result, dram = faulting(Load(buffer=Buffer.ACT, y_size=1, x_size=4, dram_addr=SIZE - 2))
    assert_precise(result, dram, ErrorCode.BUS_ERROR_LOAD)


def test_bus_error_on_store_completes_the_store():
    program = marker_program() + [marker(0x400), Store(count=2, n_cols=3, stride=16, dram_addr=0x420, raw=True),
                                  marker(0x410), Halt()]
    dram = marked_dram()
    dram[0x300:0x300 + ENTRY] = identity_param(bias=[0x11223344, 0x55667788, -1])
    dram[0x420:0x440] = 0xEE
    result, dram = run(program, dram, bus_errors=[(0x425, 0x427, "slverr"), (0x432, 0x433, "decerr")])
    assert_precise(result, dram, ErrorCode.BUS_ERROR_STORE)
    assert result.instructions == 3
    row = [0x44, 0x33, 0x22, 0x11, 0x88, 0x77, 0x66, 0x55, 0xFF, 0xFF, 0xFF, 0xFF]
    want0 = row[:5] + [0xEE, 0xEE] + row[7:]
    want1 = row[:2] + [0xEE] + row[3:]
    assert dram[0x420:0x42C].tolist() == want0
    assert dram[0x430:0x43C].tolist() == want1
    assert dram[0x42C:0x430].tolist() == [0xEE] * 4


def test_store_beyond_the_image_writes_what_fits():
    program = marker_program() + [marker(0x400), Store(count=1, n_cols=1, dram_addr=SIZE - 2, raw=True),
                                  marker(0x410), Halt()]
    result, dram = run(program, marked_dram())
    assert_precise(result, dram, ErrorCode.BUS_ERROR_STORE)
    assert dram[SIZE - 2:].tolist() == MARK[:2]


@pytest.mark.parametrize("bad", [Matmul(pop_prev=True), Matmul(pop_next=True), Store(pop_prev=True),
                                 Load(pop_next=True), Sync(unit=Unit.COMPUTE, push_next=True, pop_next=True)],
                         ids=["compute-prev", "compute-next", "store", "load", "sync"])
def test_token_deadlock(bad):
    result, dram = faulting(bad)
    assert_precise(result, dram, ErrorCode.TOKEN_DEADLOCK)


def test_token_deadlock_follows_program_order_not_later_pushes():
    # The push comes one instruction later in program order: the pop could wait forever.
    result, dram = faulting(Matmul(pop_prev=True), after=Sync(unit=Unit.LOAD, push_next=True))
    assert_precise(result, dram, ErrorCode.TOKEN_DEADLOCK)
    assert "LOAD->COMPUTE" in result.message


def test_token_overflow_at_256():
    program = [Sync(unit=Unit.STORE, push_prev=True)] * 255 + [Sync(unit=Unit.COMPUTE, pop_next=True),
                                                               Sync(unit=Unit.STORE, push_prev=True),
                                                               Sync(unit=Unit.STORE, push_prev=True), Halt()]
    dram = np.zeros(0x2000, np.uint8)
    put_program(dram, program, 0)
    result = IsaSimulator(CFG).run(dram, prog_addr=0, prog_len=len(program))
    assert result.error == ErrorCode.TOKEN_OVERFLOW and result.error_index == 257, result.summary()
    assert result.tokens["STORE->COMPUTE"] == 255 and result.instructions == 257


def test_token_overflow_is_precise():
    program = marker_program() + [marker(0x400)] + [Sync(unit=Unit.LOAD, push_next=True)] * 256 + [marker(0x410),
                                                                                                     Halt()]
    dram = marked_dram()
    dram = np.concatenate([dram, np.zeros(0x2000, np.uint8)])
    put_program(dram, program, 0x1000)
    result = IsaSimulator(CFG).run(dram, prog_addr=0x1000, prog_len=len(program))
    assert result.error == ErrorCode.TOKEN_OVERFLOW and result.error_index == 2 + 255
    assert dram[0x400:0x404].tolist() == MARK and not dram[0x410:0x414].any()


def test_program_overrun():
    program = marker_program() + [marker(0x400), marker(0x410)]
    result, dram = run(program, marked_dram())
    assert result.error == ErrorCode.PROGRAM_OVERRUN and result.error_index == 3
    assert dram[0x410:0x414].tolist() == MARK
    result, dram = run([Halt()], marked_dram(), prog_len=0)
    assert result.error == ErrorCode.PROGRAM_OVERRUN and result.error_index == 0 and result.instructions == 0


def test_running_into_cleared_memory_is_illegal():
    result, _ = run([Sync()], prog_len=1000)
    assert result.error == ErrorCode.ILLEGAL_INSTRUCTION and result.error_index == 1


# ---- Trace, summary, arguments -----------------------------------------------------------------------------------

def test_trace_lists_each_instruction_with_its_effect():
    program = assemble("""
        LOAD buffer=ACT buf_addr=0 y_size=2 x_size=4 stride=4 dram_addr=0x100 push_next
        MATMUL count=2 k_rows=4 pop_prev push_next
        STORE count=2 n_cols=3 stride=3 dram_addr=0x400 pop_prev
        SYNC unit=LOAD
        MATMUL count=0
    """, defaults=True)
    result, _ = run(program, trace=True)
    assert result.error == ErrorCode.OUT_OF_RANGE and result.error_index == 4
    lines = result.trace
    assert len(lines) == 5
    assert lines[0].startswith("    0: LOAD buffer=ACT buf_addr=0 y_size=2 x_size=4 stride=4 dram_addr=256 push_next")
    assert "ACT[0:2] <- 2x4 bytes at 0x100 stride 4" in lines[0] and "LOAD->COMPUTE=1" in lines[0]
    assert "ACC[0:2] = ACT[0:2] x WGT[0:4]" in lines[1] and "COMPUTE->STORE=1" in lines[1]
    assert "2x3 int8 from ACC[0:2] with PARAM[0] -> 0x400 stride 3" in lines[2]
    assert lines[3].startswith("    3: SYNC unit=LOAD") and "tokens only" in lines[3]
    assert lines[4].startswith("    4: MATMUL") and "ERROR OUT_OF_RANGE" in lines[4]
    assert run(program)[0].trace == []


def test_result_repr_and_summary():
    result, _ = run([Sync(unit=Unit.LOAD, push_next=True), Halt()])
    assert repr(result) == "IsaResult(NONE, instructions=1, vectors=0, hazards=0)"
    assert result.summary().splitlines()[0] == "halted without error after 1 instructions"
    assert result.raise_on_error() is result
    result, _ = run([Matmul(pop_prev=True), Halt()])
    assert repr(result) == "IsaResult(TOKEN_DEADLOCK at 0, instructions=0, vectors=0, hazards=0)"
    assert "error TOKEN_DEADLOCK at instruction 0" in result.summary()
    with pytest.raises(RuntimeError, match="TOKEN_DEADLOCK"):
        result.raise_on_error()
    assert isinstance(result, IsaResult) and not result.ok


def test_each_run_starts_from_clean_state():
    sim = IsaSimulator(CFG)
    dram = np.zeros(SIZE, np.uint8)
    dram[:4] = [1, 2, 3, 4]
    put_program(dram, [Load(x_size=4, push_next=True), Halt()])
    assert sim.run(dram, prog_addr=PROG, prog_len=2).tokens["LOAD->COMPUTE"] == 1
    put_program(dram, [Matmul(pop_prev=True), Halt()])
    result = sim.run(dram, prog_addr=PROG, prog_len=2)
    assert result.error == ErrorCode.TOKEN_DEADLOCK
    assert not result.buffers["ACT"].any()


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(dram=[0] * 16), TypeError, "dram must be a 1-D numpy uint8 array"),
    (dict(dram=np.zeros(16, np.int8)), TypeError, "uint8"),
    (dict(dram=np.zeros((4, 4), np.uint8)), TypeError, "1-D"),
    (dict(prog_addr=-1), ValueError, "prog_addr must be an integer in"),
    (dict(prog_len=1 << 32), ValueError, "prog_len must be an integer in"),
    (dict(bus_errors=[(0, 4)]), ValueError, r"\(start, end_exclusive, kind\) triples"),
    (dict(bus_errors=[(0, 4, "oops")]), ValueError, "bus error kind must be one of"),
    (dict(bus_errors=[(8, 4, "slverr")]), ValueError, "bus error end must be an integer in"),
])
def test_run_argument_errors(kwargs, error, match):
    args = dict(dram=np.zeros(64, np.uint8), prog_addr=0, prog_len=1)
    args.update(kwargs)
    dram = args.pop("dram")
    with pytest.raises(error, match=match):
        IsaSimulator(CFG).run(dram, **args)


def test_readonly_dram_is_rejected():
    dram = np.zeros(64, np.uint8)
    dram.flags.writeable = False
    with pytest.raises(ValueError, match="dram must be writable"):
        IsaSimulator(CFG).run(dram, prog_addr=0, prog_len=1)


def test_config_errors():
    with pytest.raises(TypeError, match="config must be a hw.isa.HardwareConfig"):
        IsaSimulator({"rows": 4})
    with pytest.raises(ValueError, match="HardwareConfig.acc_depth must be a positive integer, not 0"):
        IsaSimulator(HardwareConfig(acc_depth=0))


# ---- Race checking ----------------------------------------------------------------------------------------------

def hazards_of(text, dram=None):
    result, _ = run(assemble(text, defaults=True), dram, check_races=True)
    assert result.ok, result.summary()
    return result.hazards


def test_races_none_when_tokens_order_every_access():
    assert hazards_of("""
        LOAD buffer=PARAM x_size=30 dram_addr=0x300
        LOAD buffer=ACT y_size=2 x_size=4 stride=4 dram_addr=0x100 push_next
        MATMUL count=2 k_rows=4 pop_prev push_next push_prev
        STORE count=2 n_cols=3 stride=3 dram_addr=0x400 pop_prev push_prev
        LOAD buffer=ACT y_size=2 x_size=4 stride=4 dram_addr=0x110 pop_next push_next
        MATMUL count=2 k_rows=4 pop_prev pop_next
        HALT
    """) == []


@pytest.mark.parametrize("text, match", [
    ("LOAD buffer=ACT x_size=4\nMATMUL count=1 k_rows=4", r"read-after-write on ACT\[0\]: instruction 1 \(COMPUTE\)"),
    ("LOAD buffer=WGT y_size=2 x_size=3 push_next\nMATMUL k_rows=4 pop_prev\nLOAD buffer=WGT buf_addr=3 x_size=3",
     r"write-after-read on WGT\[3\]: instruction 2 \(LOAD\) is not ordered after instruction 1"),
    ("MATMUL count=2 k_rows=1\nSTORE acc_addr=1 n_cols=1", r"read-after-write on ACC\[1\]"),
    ("MATMUL k_rows=1 push_next\nSTORE pop_prev\nMATMUL k_rows=1", r"write-after-read on ACC\[0\]"),
    ("LOAD buffer=PARAM x_size=30\nSTORE", r"read-after-write on PARAM\[0\]"),
    ("STORE dram_addr=0x100\nLOAD x_size=1 dram_addr=0x100", "read-after-write on DRAM byte 0x100"),
    ("LOAD x_size=1 dram_addr=0x100\nSTORE dram_addr=0x100", "write-after-read on DRAM byte 0x100"),
    (f"STORE dram_addr={PROG + 47}\nSYNC", "instruction 2 was overwritten by STORE 0"),
], ids=["act-raw", "wgt-war", "acc-raw", "acc-war", "param-raw", "dram-raw", "dram-war", "fetch"])
def test_races_found(text, match):
    found = hazards_of(text + "\nHALT")
    assert any(re.search(match, h) for h in found), found


def test_races_a_token_pushed_before_a_store_does_not_order_after_it():
    found = hazards_of("""
        MATMUL k_rows=1 push_next push_prev
        STORE dram_addr=0x100 pop_prev
        LOAD x_size=1 dram_addr=0x100 pop_next
        HALT
    """)
    assert len(found) == 1 and "read-after-write on DRAM byte 0x100: LOAD 2" in found[0], found


def test_races_ordered_through_a_relay():
    # STORE -> COMPUTE -> LOAD orders a DRAM read after a STORE although LOAD and STORE share no queue.
    assert hazards_of("""
        STORE dram_addr=0x100 push_prev
        SYNC unit=COMPUTE pop_next push_prev
        LOAD x_size=1 dram_addr=0x100 pop_next
        HALT
    """) == []


# ---- Interleaved (concurrent) execution ---------------------------------------------------------------------------

RACY = """
    LOAD buffer=PARAM x_size=30 dram_addr=0x300
    LOAD buffer=ACT y_size=2 x_size=4 stride=4 dram_addr=0x100 {push}
    MATMUL count=2 k_rows=4 {pop} {push_next}
    STORE count=2 n_cols=3 stride=12 dram_addr=0x400 raw {pop_prev}
    HALT
"""


def interleaved_images(text, seeds):
    images = set()
    for seed in seeds:
        dram = np.zeros(SIZE, np.uint8)
        dram[0x100:0x108] = [1, 2, 3, 4, 5, 6, 7, 8]
        dram[0x300:0x300 + ENTRY] = identity_param()
        program = [load_matrix(dram, Buffer.WGT, 0, np.ones((4, 3)), 0x200)] + assemble(text, defaults=True)
        result, dram = run(program, dram, interleave=np.random.default_rng(seed), trace=True)
        assert result.ok and len(result.trace) == len(program), result.summary()
        assert result.trace[-1].endswith("HALT")
        images.add(bytes(dram[0x400:0x418]))
    return images


def test_interleave_agrees_for_a_well_formed_program():
    text = RACY.format(push="push_next", pop="pop_prev", push_next="push_next", pop_prev="pop_prev")
    images = interleaved_images(text, range(12))
    assert len(images) == 1
    want = np.array([[10] * 3, [26] * 3], dtype="<i4").tobytes()
    assert images == {want}


def test_interleave_exposes_a_racy_program():
    images = interleaved_images(RACY.format(push="", pop="", push_next="", pop_prev=""), range(200))
    assert len(images) > 1


def test_interleave_arguments():
    with pytest.raises(TypeError, match="interleave must be a numpy.random.Generator or None"):
        run([Halt()], interleave=3)
    with pytest.raises(ValueError, match="interleave cannot be combined with bus_errors"):
        run([Halt()], interleave=np.random.default_rng(0), bus_errors=[(0, 1, "slverr")])


# ---- Bulk SYNC runs and the paged race maps (programs that reach high instruction indices) ----------------------

FAST_SEED = 20_261_203


def _padded_program(rng, config):
    """A random stream (some of it racy) with runs of token-free SYNCs, SYNCs with tokens and a STORE that may
    overwrite a later instruction mixed in."""
    from sim.fuzz import random_stream

    program = []
    for ins in random_stream(rng, config, int(rng.integers(1, 25)), ordered=bool(rng.random() < 0.5)):
        program.append(ins)
        if rng.random() < 0.6:
            program += [Sync(unit=Unit(int(u))) for u in rng.integers(0, 3, int(rng.integers(1, 300)))]
        if rng.random() < 0.1:
            program.append(Sync(unit=Unit(int(rng.integers(0, 2))), push_next=True))
    if rng.random() < 0.8:
        program.append(Halt())
    return program


def _run_both(config, dram, prog_addr, prog_len, bus_errors, races):
    outs = []
    for trace in (False, True):     # trace=True executes every instruction one by one (no bulk SYNC runs)
        image = dram.copy()
        result = IsaSimulator(config).run(image, prog_addr=prog_addr, prog_len=prog_len, bus_errors=bus_errors,
                                          check_races=races, trace=trace)
        outs.append((result, image))
    return outs


def test_bulk_sync_runs_equal_one_by_one_execution():
    """The run loop accounts a run of token-free SYNCs in bulk; every result field, the hazards and the DRAM image
    must equal executing them one by one (trace mode), with PROG_LEN, bus-error ranges and the image end falling
    inside runs."""
    config = HardwareConfig(rows=2, cols=2, act_depth=32, wgt_depth=8, acc_depth=16, param_depth=2, bus_bytes=4)
    for case in range(60):
        rng = np.random.default_rng([FAST_SEED, case])
        words = [encode(i) for i in _padded_program(rng, config)]
        blob = np.frombuffer(b"".join(w.to_bytes(16, "little") for w in words), dtype=np.uint8)
        # Low (the data's STOREs may overwrite instructions) or above the data; the image may end in the code.
        prog_addr = PROG if rng.random() < 0.3 else 0x10000
        size = prog_addr + blob.size - (16 * int(rng.integers(1, 40)) if rng.random() < 0.2 else -4096)
        dram = rng.integers(0, 256, max(size, 0x10000), dtype=np.uint8)
        fits = min(blob.size, dram.size - prog_addr)
        dram[prog_addr:prog_addr + fits] = blob[:fits]
        prog_len = len(words) if rng.random() < 0.6 else int(rng.integers(1, len(words) + 50))
        bus_errors = []
        if rng.random() < 0.3:
            at = prog_addr + 16 * int(rng.integers(0, len(words))) + int(rng.integers(0, 16))
            bus_errors = [(at, at + 1, "slverr")]
        (fast, fast_dram), (slow, slow_dram) = _run_both(config, dram, prog_addr, prog_len, bus_errors,
                                                          races=bool(case % 2))
        where = f"seed {FAST_SEED} case {case}"
        assert (fast.error, fast.error_index, fast.instructions) == (slow.error, slow.error_index,
                                                                      slow.instructions), where
        assert fast.stats == slow.stats and fast.tokens == slow.tokens, where
        assert fast.hazards == slow.hazards, where
        for name in slow.buffers:
            assert np.array_equal(fast.buffers[name], slow.buffers[name]), f"{where}: {name}"
        assert np.array_equal(fast_dram, slow_dram), where


def test_paged_race_maps_find_the_same_hazards(monkeypatch):
    """Images beyond _ByteMap.DENSE_BYTES keep the race checker's per-byte DRAM maps in pages: forced paged, the
    hazards of random LOAD/STORE programs over one small window (tokens sometimes ordering them, rows crossing a
    64 KiB page) equal the dense maps', and the fetch-overwrite check still fires."""
    from sim import isa_sim

    found = 0
    for case in range(40):
        rng = np.random.default_rng([FAST_SEED, case, 1])
        base = 0xFFC0 if case % 2 else 0x4000      # odd cases straddle the first page boundary
        program, pushed = [Load(buffer=Buffer.PARAM, x_size=ENTRY, dram_addr=0x300)], 0
        for _ in range(int(rng.integers(4, 20))):
            at = base + int(rng.integers(0, 96))
            if rng.random() < 0.5:
                ordered = bool(pushed and rng.random() < 0.5)     # after a STORE, relayed through COMPUTE
                if ordered:
                    program.append(Sync(unit=Unit.COMPUTE, pop_next=True, push_prev=True))
                    pushed -= 1
                program.append(Load(buffer=Buffer.ACT, y_size=2, x_size=4, stride=int(rng.integers(1, 40)),
                                    dram_addr=at, pop_next=ordered))
            else:
                program.append(Store(count=1, n_cols=3, raw=bool(rng.random() < 0.5), dram_addr=at,
                                     push_prev=bool(rng.random() < 0.3)))
                pushed += program[-1].push_prev
        program.append(Halt())
        results = []
        for dense in (1 << 26, 0):
            monkeypatch.setattr(isa_sim._ByteMap, "DENSE_BYTES", dense)
            results.append(run(program, np.zeros(0x20000, np.uint8), check_races=True)[0])
        assert results[0].ok and results[0].hazards == results[1].hazards, f"seed {FAST_SEED} case {case}"
        found += any("DRAM byte" in h for h in results[0].hazards)
    assert found >= 20, f"only {found} of 40 programs had a DRAM race: the comparison tests little"
    # The fetch check, also over a bulk SYNC run: the STORE writes a zero byte (cleared ACC, zero parameters) into
    # the high half of the SYNC after it, which stays a SYNC but was overwritten before its fetch.
    for dense in (1 << 26, 0):
        monkeypatch.setattr(isa_sim._ByteMap, "DENSE_BYTES", dense)
        assert any("instruction 2 was overwritten by STORE 0" in h
                   for h in hazards_of(f"STORE dram_addr={PROG + 47}\nSYNC\nHALT")), dense
        assert any("instruction 1 was overwritten by STORE 0" in h
                   for h in hazards_of(f"STORE dram_addr={PROG + 16 + 9}\nSYNC\nSYNC unit=STORE\nHALT")), dense
