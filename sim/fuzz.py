"""Differential fuzzing of the RTL against the golden models: ``make fuzz`` (``python -m sim.fuzz``).

Programs
--------
:func:`random_stream` draws random instruction streams: LOADs into every buffer with random shapes, strides and
placements (rows straddling bus words, DRAM rows overlapping), MATMULs with random operands, K rows and
accumulate bits, raw and int8 STOREs of any width, SYNCs, and random token traffic on all four queues. With
``ordered=False`` (what ``tests/sim/test_cycle_model.py`` uses for timing) the tokens are random and buffer races
are allowed; with ``ordered=True`` every access is protected: the stream is built through the token bookkeeping of
:mod:`sim.programs` (vector clocks; a dependency no token covers gets one, through a COMPUTE SYNC when LOAD and
STORE must meet), plus random extra dependencies and pushes, so the program is well formed and its final DRAM is
defined. The golden simulator's race checker confirms it for every case.

:func:`make_case` turns a seed and an index into a case: a legal ordered program (random epilogue parameters in
the PARAM entries it loads, random DRAM) or, in about a third of the cases, an illegal one: a random bit flipped,
an unknown opcode, a reserved bit set, a field pushed out of range, a pop nobody pushed (TOKEN_DEADLOCK), 256
pushes (TOKEN_OVERFLOW), a PROG_LEN short of the HALT (PROGRAM_OVERRUN) or a bus error on a LOAD's, a STORE's or
the program's bytes.

Besides those, a few constructed programs and host variations (each drawn from a stream of its own): long
programs of more than 4096 instructions that fill the COMPUTE queue across index 4096 (:func:`_long_case`),
programs placed high in DRAM (up to above 8 MiB), epilogue programs with whole PARAM entries and small or any-int32
multipliers (:func:`_epilogue_case`), and a register host that writes IRQ_ENABLE, PROG_ADDR and PROG_LEN with byte
strobes while stalling its handshakes (:func:`_host_plan`); every run reads those registers back.

:func:`check_case` runs it on the golden simulator (``sim.isa_sim``) and the Verilator backend and requires the
same error code, faulting index, INSTRUCTIONS and VECTORS counters and the same final DRAM, byte for byte; for a
legal program also every counter (CYCLES and the busy counters) equal to the exact cycle model's
(``sim.cycle_model``); a quarter of the legal cases run a second time under random memory latency and back-pressure
(same DRAM, same error). A failing case is shrunk (:func:`shrink`: instructions dropped, then sizes halved, while
it still fails) and saved with its seed under ``build/fuzz/``.

Networks
--------
:func:`check_network` draws a random CNN (``sw.testing.random_network``), quantizes it and runs images through the
driver on the ``cpu`` backend (NumPy int8) and the ``verilator`` backend: the logits must be identical.

``python -m sim.fuzz --programs N --networks N --seed S --configs 8x8,4x4,2x2`` (``make fuzz FUZZ_PROGRAMS=
FUZZ_NETWORKS= SEED=``) prints progress lines and a summary, writes ``build/reports/fuzz.json`` and exits 1 on a
mismatch.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hw.isa import (INSTRUCTION_BYTES, TOKEN_MAX, Buffer, ErrorCode, HardwareConfig, Halt, Load, Matmul, Opcode,
                    Store, Sync, Unit, decode, disassemble, encode, from_bytes, to_bytes, FIELDS)

__all__ = ["CONFIGS", "NETWORK_CONFIGS", "random_stream", "make_case", "deep_cases", "check_case", "shrink",
           "check_network", "FuzzCase", "Mismatch", "run_campaign"]

ROOT = Path(__file__).resolve().parent.parent

#: Array/bus configurations of the program campaign (the same as the cycle-model and backend tests, so builds are
#: shared): the default 8x8 on a 64-bit bus, a 4x4 on a 64-bit bus, a 2x2 on a 32-bit bus with tiny buffers.
CONFIGS = {
    "8x8": HardwareConfig(),
    "4x4": HardwareConfig(rows=4, cols=4, act_depth=64, wgt_depth=64, acc_depth=32, param_depth=8),
    "2x2": HardwareConfig(rows=2, cols=2, act_depth=32, wgt_depth=8, acc_depth=16, param_depth=2, bus_bytes=4),
}
#: Configurations of the network campaign (the driver needs buffers deep enough for the compiler's tiles).
NETWORK_CONFIGS = {
    "8x8": HardwareConfig(),
    "4x4": HardwareConfig(rows=4, cols=4, act_depth=256, wgt_depth=256, acc_depth=64, param_depth=8, bus_bytes=8),
    "2x2": HardwareConfig(rows=2, cols=2, act_depth=256, wgt_depth=256, acc_depth=64, param_depth=8, bus_bytes=4),
}

DRAM_BYTES = 1 << 16
_PROG_LIMIT = 0x3000       # programs live below this
_LOAD_BASE, _STORE_BASE = 0x4000, 0x8000
_MAX_CYCLES = 5_000_000


# ---- Random instruction streams ----------------------------------------------------------------------------------

_TOKEN_QUEUES = (  # (producer, its flag, consumer, its flag)
    (Unit.LOAD, "push_next", Unit.COMPUTE, "pop_prev"), (Unit.COMPUTE, "push_prev", Unit.LOAD, "pop_next"),
    (Unit.COMPUTE, "push_next", Unit.STORE, "pop_prev"), (Unit.STORE, "push_prev", Unit.COMPUTE, "pop_next"))


def _near_page_end(rng, ins):
    """``ins`` moved (half the time) to start a few bytes before a 4 KiB boundary of its DRAM region, so its
    rows cross pages (the AXI master splits such bursts)."""
    if isinstance(ins, (Load, Store)) and rng.random() < 0.5:
        lo = _LOAD_BASE if isinstance(ins, Load) else _STORE_BASE
        page = int(rng.integers(lo // 4096 + 1, (lo + 0x4000) // 4096))
        ins = dataclasses.replace(ins, dram_addr=page * 4096 - int(rng.integers(1, 48)))
    return ins


def _draw(rng, config, longest):
    """One random LOAD/MATMUL/STORE/SYNC without token flags."""
    kind = rng.choice(["load", "matmul", "store", "sync"], p=[0.35, 0.3, 0.15, 0.2])
    if kind == "load":
        buffer = Buffer(int(rng.choice([0, 1, 2], p=[0.45, 0.45, 0.1])))
        depth, entry = config.depth(buffer), config.row_bytes(buffer)
        rows, x_size = int(rng.integers(1, min(depth, longest) + 1)), int(rng.integers(1, entry + 1))
        return Load(buffer=buffer, buf_addr=int(rng.integers(0, depth - rows + 1)), y_size=rows, x_size=x_size,
                    stride=int(rng.choice([x_size, int(rng.integers(0, 100))])),
                    dram_addr=int(rng.integers(_LOAD_BASE, _STORE_BASE)))
    if kind == "matmul":
        count = int(rng.integers(1, min(longest, config.acc_depth, config.act_depth) + 1))
        return Matmul(act_addr=int(rng.integers(0, config.act_depth - count + 1)), wgt_addr=0,
                      acc_addr=int(rng.integers(0, config.acc_depth - count + 1)), count=count,
                      k_rows=int(rng.integers(1, config.rows + 1)), accumulate=bool(rng.integers(2)))
    if kind == "store":
        count, n_cols, raw = (int(rng.integers(1, min(longest, config.acc_depth) + 1)),
                              int(rng.integers(1, config.cols + 1)), bool(rng.integers(2)))
        return Store(acc_addr=int(rng.integers(0, config.acc_depth - count + 1)), count=count,
                     param_addr=int(rng.integers(0, config.param_depth)), n_cols=n_cols, raw=raw,
                     stride=int(rng.choice([n_cols * (4 if raw else 1), int(rng.integers(0, 200))])),
                     dram_addr=int(rng.integers(_STORE_BASE, 0xC000)))
    return Sync(unit=Unit(int(rng.integers(3))))


def _unit(ins) -> Unit:
    return {Load: Unit.LOAD, Matmul: Unit.COMPUTE, Store: Unit.STORE}.get(type(ins), getattr(ins, "unit", None))


def random_stream(rng: np.random.Generator, config: HardwareConfig, length: int, *, ordered: bool = False) -> list:
    """``length`` random instructions and a HALT that the dispatcher accepts (see the module docstring).

    ``ordered=False``: random token flags (every pop covered by an earlier push, no overflow), buffer races
    allowed - they change data, never timing. ``ordered=True``: a well-formed program (no races); a few SYNCs may
    be added to carry dependencies.
    """
    longest = int(rng.choice([4, 16, 64]))
    if ordered:
        return _ordered_stream(rng, config, length, longest)
    balance = [0] * len(_TOKEN_QUEUES)
    program = []
    for _ in range(length):
        ins = _draw(rng, config, longest)
        unit = _unit(ins)
        flags = {}
        for q, (_, _, consumer, flag) in enumerate(_TOKEN_QUEUES):
            if consumer == unit and balance[q] > 0 and rng.random() < 0.5:
                flags[flag] = True
                balance[q] -= 1
        for q, (producer, flag, _, _) in enumerate(_TOKEN_QUEUES):
            if producer == unit and balance[q] < 255 and rng.random() < 0.4:
                flags[flag] = True
                balance[q] += 1
        program.append(dataclasses.replace(ins, **flags))
    return program + [Halt()]


class _Footprints:
    """Per resource entry (buffer entries, DRAM bytes) the last writer and the last reader of each unit."""

    def __init__(self, config):
        sizes = {"ACT": config.act_depth, "WGT": config.wgt_depth, "PARAM": config.param_depth,
                 "ACC": config.acc_depth, "DRAM": DRAM_BYTES}
        self.w = {r: np.full((3, n), -1, dtype=np.int64) for r, n in sizes.items()}
        self.r = {r: np.full((3, n), -1, dtype=np.int64) for r, n in sizes.items()}

    def needs(self, unit, accesses):
        """{other unit: index} the access list ``[(resource, index array, write)]`` must be ordered after."""
        out = {}
        for res, idx, write in accesses:
            if idx.size == 0:
                continue
            for v in range(3):
                if v == unit:
                    continue
                last = int(self.w[res][v, idx].max())
                if write:
                    last = max(last, int(self.r[res][v, idx].max()))
                if last >= 0:
                    out[v] = max(out.get(v, -1), last)
        return out

    def record(self, unit, index, accesses):
        for res, idx, write in accesses:
            (self.w if write else self.r)[res][unit, idx] = index


def _rows(base, rows, row_bytes, stride):
    return ((base + np.arange(rows, dtype=np.int64)[:, None] * stride + np.arange(row_bytes)[None, :])
            % (1 << 32)).ravel()


def accesses(ins, config) -> list:
    """What ``ins`` reads and writes: [(resource, entries or bytes, write)] (WGT: every row the unit reads)."""
    r = np.arange
    if isinstance(ins, Load):
        dram = _rows(ins.dram_addr, ins.y_size, ins.x_size, ins.stride)
        return [(ins.buffer.name, r(ins.buf_addr, ins.buf_addr + ins.y_size), True),
                ("DRAM", dram[dram < DRAM_BYTES], False)]
    if isinstance(ins, Matmul):
        return [("ACT", r(ins.act_addr, ins.act_addr + ins.count), False),
                ("WGT", r(ins.wgt_addr, min(ins.wgt_addr + config.rows, config.wgt_depth)), False),
                ("ACC", r(ins.acc_addr, ins.acc_addr + ins.count), True)]
    if isinstance(ins, Store):
        dram = _rows(ins.dram_addr, ins.count, ins.n_cols * (4 if ins.raw else 1), ins.stride)
        return [("ACC", r(ins.acc_addr, ins.acc_addr + ins.count), False),
                ("PARAM", r(ins.param_addr, ins.param_addr + 1), False), ("DRAM", dram[dram < DRAM_BYTES], True)]
    return []


def reads_before_write(ins, config, written) -> list:
    """The (resource, lo, hi) ranges ``ins`` reads that no earlier instruction wrote (``written``: resource ->
    bool array). The RTL's buffers are not reset (their contents belong to no program), the golden model's start
    at zero, so a well-formed program reads only what it wrote."""
    ranges = []
    if isinstance(ins, Matmul):
        ranges = [("ACT", ins.act_addr, ins.act_addr + ins.count), ("WGT", ins.wgt_addr, ins.wgt_addr + ins.k_rows)]
        if ins.accumulate:
            ranges.append(("ACC", ins.acc_addr, ins.acc_addr + ins.count))
    elif isinstance(ins, Store):
        ranges = [("ACC", ins.acc_addr, ins.acc_addr + ins.count), ("PARAM", ins.param_addr, ins.param_addr + 1)]
    out = []
    for res, lo, hi in ranges:
        missing = np.flatnonzero(~written[res][lo:hi])
        if missing.size:
            out.append((res, lo + int(missing[0]), lo + int(missing[-1]) + 1))
    return out


def new_written(config) -> dict:
    return {"ACT": np.zeros(config.act_depth, bool), "WGT": np.zeros(config.wgt_depth, bool),
            "PARAM": np.zeros(config.param_depth, bool), "ACC": np.zeros(config.acc_depth, bool)}


def mark_written(ins, written) -> None:
    if isinstance(ins, Load):
        written[ins.buffer.name][ins.buf_addr:ins.buf_addr + ins.y_size] = True
    elif isinstance(ins, Matmul):
        written["ACC"][ins.acc_addr:ins.acc_addr + ins.count] = True


def _ordered_stream(rng, config, length, longest):
    from .programs import _Emitter    # the token bookkeeping of the program builder: one implementation

    emitter = _Emitter()
    seen = _Footprints(config)
    written = new_written(config)
    last = [-1, -1, -1]

    def place(ins):
        unit = _unit(ins)
        acc = accesses(ins, config)
        needs = seen.needs(unit, acc)
        for v in range(3):     # random extra ordering: pops of tokens the program did not need
            if v != unit and last[v] >= 0 and rng.random() < 0.25:
                needs[v] = max(needs.get(v, -1), last[v])
        for v, index in sorted(needs.items()):
            emitter.need(unit, Unit(v), index)
        push = [t for t in (unit - 1, unit + 1) if 0 <= t < 3 and rng.random() < 0.2]
        index = emitter.emit(ins, push=push)
        last[unit] = index
        seen.record(unit, index, acc)
        mark_written(ins, written)

    def initialise(ins):
        for res, lo, hi in reads_before_write(ins, config, written):
            if res == "ACC":
                k_rows = int(rng.integers(1, config.rows + 1))
                init = Matmul(act_addr=int(rng.integers(0, config.act_depth - (hi - lo) + 1)),
                              wgt_addr=int(rng.integers(0, config.wgt_depth - k_rows + 1)), acc_addr=lo,
                              count=hi - lo, k_rows=k_rows)
                initialise(init)
            else:
                buffer = Buffer[res]
                x_size = int(rng.integers(1, config.row_bytes(buffer) + 1))
                init = Load(buffer=buffer, buf_addr=lo, y_size=hi - lo, x_size=x_size,
                            stride=int(rng.choice([x_size, int(rng.integers(0, 100))])),
                            dram_addr=int(rng.integers(_LOAD_BASE, _STORE_BASE)))
            place(init)

    for _ in range(length):
        ins = _near_page_end(rng, _draw(rng, config, longest))
        if isinstance(ins, Matmul) and rng.random() < 0.5:
            ins = dataclasses.replace(ins, wgt_addr=int(rng.integers(0, config.wgt_depth - ins.k_rows + 1)))
        initialise(ins)
        place(ins)
    return emitter.finish()


# ---- Cases ------------------------------------------------------------------------------------------------------

@dataclass
class FuzzCase:
    """One program: the words at ``prog_addr`` in ``dram``, ``prog_len``, bus-error ranges, what it is."""
    config: str
    seed: int
    index: int
    kind: str
    words: list
    dram: np.ndarray
    prog_addr: int
    prog_len: int
    bus_errors: list = field(default_factory=list)
    latency: dict | None = None     # a second RTL run's memory timing (legal programs only)
    layout: str = "low"             # where the program lies and how long it is ("low", "high (2**b)", "long")
    host: dict | None = None        # the register host's strobed writes and stall pattern (:func:`_host_plan`)

    def image(self) -> np.ndarray:
        dram = self.dram.copy()
        blob = np.frombuffer(to_bytes(self.words), dtype=np.uint8)
        dram[self.prog_addr:self.prog_addr + blob.size] = blob
        return dram

    def listing(self) -> str:
        lines = []
        for i, w in enumerate(self.words):
            try:
                lines.append(disassemble([decode(w)]).replace("0:", f"{i}:", 1))
            except ValueError as exc:
                lines.append(f"{i:5d}: .word {w:#034x}  # {exc}")
        return "\n".join(lines)


def _random_param_entries(rng, dram, config, program):
    """Random epilogue parameters in the DRAM rows that the program's PARAM LOADs read."""
    from .arith import MAX_SHIFT, MIN_SHIFT
    from .isa_sim import pack_param_entry

    cols = config.cols
    for ins in program:
        if isinstance(ins, Load) and ins.buffer == Buffer.PARAM:
            for row in range(ins.y_size):
                lo, hi = sorted(int(x) for x in rng.integers(-128, 128, 2))
                # Multipliers: mostly a quantized model's [2**30, 2**31); sometimes small of either sign (SRDHM
                # then rounds a wrapped, left-shifted sum to a few units, so one multiplier LSB shows in the
                # output) or any int32, as the hardware accepts.
                pick = rng.random()
                multiplier = (rng.integers(1 << 30, (1 << 31) - 1, cols) if pick < 0.7 else
                              rng.integers(-128, 129, cols) if pick < 0.85 else
                              rng.integers(-(1 << 31), 1 << 31, cols))
                entry = pack_param_entry(cols, rng.integers(-(1 << 20), 1 << 20, cols), multiplier,
                                         rng.integers(MIN_SHIFT, MAX_SHIFT + 1, cols), int(rng.integers(-128, 128)),
                                         lo if rng.random() < 0.9 else hi, hi if rng.random() < 0.9 else lo)
                at = (ins.dram_addr + row * ins.stride) % (1 << 32)
                n = min(ins.x_size, len(entry), DRAM_BYTES - at)
                if n > 0:
                    dram[at:at + n] = np.frombuffer(entry[:n], dtype=np.uint8)


_ILLEGAL_KINDS = ("bitflip", "opcode", "reserved", "range", "deadlock", "overflow", "overrun", "bus_load",
                  "bus_store", "bus_fetch", "halt_flags", "illegal_and_range", "two_faults")


#: Fractions of the cases that are long programs (:func:`_long_case`) and legal programs placed high in DRAM.
LONG_FRACTION, HIGH_FRACTION = 0.03, 0.05
#: Fraction of the cases that are epilogue programs (:func:`_epilogue_case`), and of all cases whose register
#: host writes with byte strobes and stalls its handshakes (:func:`_host_plan`).
EPILOGUE_FRACTION, HOST_FRACTION = 0.1, 0.3
#: The dispatcher's unit queues hold this many entries (hw.dispatcher's default queue_depth).
_UNIT_QUEUE_DEPTH = 8
#: Long programs cross this instruction index (and so bit 12 of PROG_LEN, of the fetch's count and of the
#: instruction index the units carry).
_LONG_INDEX = 4096


def make_case(seed: int, index: int, config_name: str, *, illegal_fraction: float = 0.3) -> FuzzCase:
    """Case ``index`` of the campaign seeded ``seed`` on configuration ``config_name`` (a pure function).

    Most cases are a random ordered program below 64 KiB (see the module docstring); ``LONG_FRACTION`` of them a
    long program (:func:`_long_case`), ``EPILOGUE_FRACTION`` an epilogue program (:func:`_epilogue_case`), and
    ``HIGH_FRACTION`` of the legal ordered ones move the program above 64 KiB (the DRAM image grows to hold it;
    the data stays low), up to above 8 MiB. ``HOST_FRACTION`` of all cases start through byte-strobed register
    writes under host stalls (:func:`_host_plan`).
    """
    layout_rng = np.random.default_rng([seed, index, list(CONFIGS).index(config_name), 1])
    pick = layout_rng.random()
    if pick < LONG_FRACTION:
        case = _long_case(layout_rng, seed, index, config_name)
    elif pick < LONG_FRACTION + EPILOGUE_FRACTION:
        case = _epilogue_case(layout_rng, seed, index, config_name)
    else:
        case = _program_case(seed, index, config_name, layout_rng, illegal_fraction)
    if layout_rng.random() < HOST_FRACTION:
        case.host = _host_plan(layout_rng, case)
    return case


def _host_plan(rng, case) -> dict:
    """How the register host starts ``case``: IRQ_ENABLE, PROG_ADDR and PROG_LEN reached through byte-strobed
    AXI4-Lite writes of random values (each register first written whole with junk, then random strobes and
    values, then the bytes still wrong), PROG_ADDR's ignored low 4 bits random, IRQ_ENABLE's unused bits
    random (bit 0 set), and a random stall pattern on the host's VALIDs and READYs. ``expect``: what the
    registers must read back."""
    expect = {"irq_enable": int(rng.integers(0, 1 << 32)) | 1,
              "prog_addr": case.prog_addr | int(rng.integers(0, 16)), "prog_len": case.prog_len}
    model = {}
    writes = []

    def write(name, value, strobe):
        writes.append((name, value, strobe))
        old = model.get(name, 0)
        mask = sum(0xFF << (8 * b) for b in range(4) if strobe >> b & 1)
        model[name] = (old & ~mask) | (value & mask)

    order = [str(n) for n in rng.permutation(list(expect))]
    for name in order:
        write(name, int(rng.integers(0, 1 << 32)), 0xF)
    for _ in range(int(rng.integers(0, 10))):
        write(str(rng.choice(order)), int(rng.integers(0, 1 << 32)), int(rng.integers(0, 16)))
    for name in order:
        wrong = sum(1 << b for b in range(4) if (model[name] ^ expect[name]) >> (8 * b) & 0xFF)
        write(name, expect[name], wrong | int(rng.integers(0, 16)))
    assert model == expect
    stall = (rng.random(int(rng.integers(3, 50))) < rng.uniform(0.2, 0.7)).tolist()
    stall[int(rng.integers(len(stall)))] = False
    return {"writes": writes, "stall": stall, "expect": expect}


def _program_case(seed, index, config_name, layout_rng, illegal_fraction) -> FuzzCase:
    config = CONFIGS[config_name]
    rng = np.random.default_rng([seed, index, list(CONFIGS).index(config_name)])
    program = random_stream(rng, config, int(rng.integers(1, 40)), ordered=True)
    dram = rng.integers(0, 256, DRAM_BYTES, dtype=np.uint8)
    _random_param_entries(rng, dram, config, program)
    words = [encode(i) for i in program]
    prog_addr = 16 * int(rng.integers(0, (_PROG_LIMIT - 16 * (len(words) + 300)) // 16))
    case = FuzzCase(config_name, seed, index, "legal", words, dram, prog_addr, len(words))
    if rng.random() < illegal_fraction:
        _make_illegal(rng, case, config, program)
    elif rng.random() < 0.25:
        case.latency = {"read_latency": int(rng.integers(0, 12)), "write_latency": int(rng.integers(0, 12)),
                        "max_outstanding": int(rng.integers(1, 9)),
                        "backpressure": (rng.random(int(rng.integers(7, 200))) < rng.uniform(0.1, 0.6)).tolist()}
        if not any(not s for s in case.latency["backpressure"]):
            case.latency["backpressure"][0] = False
    if case.kind == "legal" and layout_rng.random() < HIGH_FRACTION:
        _place_high(layout_rng, case)
    return case


def _place_high(rng, case, *, bit=None):
    """Move the program of ``case`` to just above ``2**bit`` (random bit 16..23: up to above 8 MiB); the DRAM
    image grows with zeros to hold it and the fetch's slack."""
    bit = int(rng.integers(16, 24)) if bit is None else bit
    case.prog_addr = (1 << bit) + 16 * int(rng.integers(0, 2048))
    size = max(case.prog_addr + 16 * (len(case.words) + 64), case.dram.size)
    grown = np.zeros(size, dtype=np.uint8)
    grown[:case.dram.size] = case.dram
    case.dram = grown
    case.layout = f"high (2**{bit})"


def _epilogue_case(rng, seed, index, config_name) -> FuzzCase:
    """A program for the requantization datapath: PARAM entries, mostly whole (every field loaded; the ordered
    streams load random prefixes of them; 30% a random prefix here too, the rest of the entry zero), each with its
    own draw of multipliers (a model's [2**30, 2**31), small of either sign, or any int32), biases (small or any
    int32), shifts, zero point and bounds; one MATMUL over ``count`` rows, often followed by a chain of
    back-to-back MATMULs over overlapping parts of them (the accumulator's forwarding path), then an int8 STORE of
    every column with each entry (and a raw one). Half of them run a second time under slow, back-pressured memory (the STORE side
    then stalls the epilogue, whose skid buffer holds rows and their parameters)."""
    from .arith import MAX_SHIFT, MIN_SHIFT
    from .isa_sim import pack_param_entry

    config = CONFIGS[config_name]
    rows, cols = config.rows, config.cols
    count = int(rng.integers(1, min(16, config.acc_depth, config.act_depth) + 1))
    entries = config.param_depth
    entry_bytes = config.row_bytes(Buffer.PARAM)
    dram = rng.integers(0, 256, DRAM_BYTES, dtype=np.uint8)
    param_at = int(rng.integers(_LOAD_BASE, _STORE_BASE - 4096))
    for e in range(entries):
        pick = rng.random()
        multiplier = (rng.integers(1 << 30, (1 << 31) - 1, cols) if pick < 0.4 else
                      rng.integers(-128, 129, cols) if pick < 0.8 else rng.integers(-(1 << 31), 1 << 31, cols))
        bias = rng.integers(-(1 << 20), 1 << 20, cols) if rng.random() < 0.7 else rng.integers(-(1 << 31), 1 << 31,
                                                                                              cols)
        lo, hi = sorted(int(x) for x in rng.integers(-128, 128, 2)) if rng.random() < 0.5 else (-128, 127)
        if rng.random() < 0.15:     # inverted bounds (act_min > act_max): every output is act_max
            lo, hi = hi, lo
        shift = rng.integers(MIN_SHIFT, MAX_SHIFT + 1, cols)
        if 0.4 <= pick < 0.8 and rng.random() < 0.6:    # small multipliers mostly after a left shift
            shift = rng.integers(1, MAX_SHIFT + 1, cols)
        entry = pack_param_entry(cols, bias, multiplier, shift,
                                 int(rng.integers(-128, 128)), lo, hi)
        dram[param_at + e * entry_bytes:param_at + (e + 1) * entry_bytes] = np.frombuffer(entry, dtype=np.uint8)
    x_act = config.row_bytes(Buffer.ACT)
    program = [Load(buffer=Buffer.ACT, buf_addr=0, y_size=count, x_size=x_act, stride=x_act,
                    dram_addr=int(rng.integers(_LOAD_BASE, _STORE_BASE - 4096))),
               Load(buffer=Buffer.WGT, buf_addr=0, y_size=rows, x_size=cols, stride=cols,
                    dram_addr=int(rng.integers(_LOAD_BASE, _STORE_BASE - 4096))),
               Load(buffer=Buffer.PARAM, buf_addr=0, y_size=entries, stride=entry_bytes, dram_addr=param_at,
                    push_next=True, x_size=entry_bytes if rng.random() < 0.7 else int(rng.integers(1, entry_bytes))),
               Matmul(act_addr=0, wgt_addr=0, acc_addr=0, count=count, k_rows=int(rng.integers(1, rows + 1)),
                      pop_prev=True, push_next=True)]
    if count >= 8 and rng.random() < 0.7:
        # Back-to-back MATMULs over the same rows, each starting 1 or 2 rows before the previous one's end: the
        # row written one or two cycles earlier is still in the accumulator's read-modify-write pipeline, and an
        # accumulating MATMUL takes it from the forwarding path (an overwriting one must not).
        program[-1] = dataclasses.replace(program[-1], push_next=False)
        at, chain = 0, []
        while True:
            n = int(rng.integers(4, 7))
            if at + n > count:
                break
            chain.append(Matmul(act_addr=0, wgt_addr=0, acc_addr=at, count=n, k_rows=int(rng.integers(1, rows + 1)),
                                accumulate=bool(rng.random() < 0.8)))
            at += n - int(rng.integers(1, 3))
        if chain:
            chain[-1] = dataclasses.replace(chain[-1], push_next=True)
            program += chain
        else:
            program[-1] = dataclasses.replace(program[-1], push_next=True)
    out = _STORE_BASE
    for e in range(entries + 1):
        raw = e == entries
        width = cols * (4 if raw else 1)
        program.append(Store(acc_addr=0, count=count, param_addr=min(e, entries - 1), n_cols=cols, raw=raw,
                             stride=width, dram_addr=out, pop_prev=e == 0))
        out += count * width + int(rng.integers(0, 64))
    program.append(Halt())
    case = _legal_case(rng, seed, index, config_name, program, dram, "epilogue")
    if rng.random() < 0.5:      # the second run's slow writes stall the epilogue: its skid buffer holds rows
        case.latency = _slow_memory(rng, read_max=12)
    return case


def _legal_case(rng, seed, index, config_name, program, dram, layout) -> FuzzCase:
    """A legal case of ``program`` (ending in HALT) on ``dram``, placed at a random 16-byte aligned address below
    ``_PROG_LIMIT``."""
    words = [encode(i) for i in program]
    prog_addr = 16 * int(rng.integers(0, (_PROG_LIMIT - 16 * (len(words) + 300)) // 16))
    case = FuzzCase(config_name, seed, index, "legal", words, dram, prog_addr, len(words))
    case.layout = layout
    return case


def _slow_memory(rng, *, read_max: int) -> dict:
    """A second run's memory: read latency below ``read_max``, write latency below 24, 1-8 bursts outstanding and a
    stall pattern of 7-199 cycles stalling 20-70% of them (never the first)."""
    latency = {"read_latency": int(rng.integers(0, read_max)), "write_latency": int(rng.integers(0, 24)),
               "max_outstanding": int(rng.integers(1, 9)),
               "backpressure": (rng.random(int(rng.integers(7, 200))) < rng.uniform(0.2, 0.7)).tolist()}
    latency["backpressure"][0] = False
    return latency


# ---- Deep cases: the heavier second stage of the netlist kill check ----------------------------------------------

#: Cases per configuration of :func:`deep_cases`: epilogue programs and STORE back-pressure programs.
DEEP_EPILOGUE_CASES, DEEP_STORE_CASES = 160, 80


def deep_cases(seed: int, config_name: str) -> Iterator[FuzzCase]:
    """The deep stage: ``DEEP_EPILOGUE_CASES`` epilogue programs, then ``DEEP_STORE_CASES`` STORE back-pressure
    programs on configuration ``config_name``, each a pure function of ``(seed, index)`` drawn from a stream of its
    own (independent of :func:`make_case`'s, whose distribution the fuzz campaign's figures rest on). They are
    legal ordered programs, checked by :func:`check_case` like any other; the netlist mutation tier runs them on
    the mutants that survive the standard cases.

    * Epilogue programs (kind ``legal``, layout ``deep epilogue``) stress single bits of the requantization
      datapath. Each of several rounds reloads the PARAM entries (at most 8) with parameters drawn so that the
      output is a small, mostly unclamped number whose value hangs on single bits (:func:`_visible_entry`): after a
      left shift of 0..20 the multiplier is chosen for ``|y|`` of 1..128, so a carry into product bit 30 or one
      multiplier LSB moves an output by one; after a right shift of 1..20 the rounding addend decides it; and half
      the entries put ``act_min``/``act_max`` a few steps from the zero point, so outputs land just beside the clamp
      bounds. Every round stores all rows with each entry (int8, all columns) and once raw.
    * STORE back-pressure programs (layout ``deep store``) make the STORE read side's skid buffer hold rows in its
      side register: the register catches a row only when the epilogue pipeline (12 rows), its main register and the
      STORE unit's two row registers are all full, so only a STORE of ``count >= latency + 4`` rows (16 on the 2x2:
      its whole accumulator) under a write stall of that length reaches it. Each program stores ``min(acc_depth,
      act_depth, 32)`` rows many times back to back, int8 with random parameters (and some raw), and its second run
      writes through a memory that accepts one or two write bursts at a time with a write latency of 12..40 cycles
      and long runs of stall cycles (every row waits; the engine's side of the STORE path fills).
    """
    for index in range(DEEP_EPILOGUE_CASES):
        rng = np.random.default_rng([seed, index, list(CONFIGS).index(config_name), 7])
        yield _deep_epilogue_case(rng, seed, index, config_name)
    for index in range(DEEP_EPILOGUE_CASES, DEEP_EPILOGUE_CASES + DEEP_STORE_CASES):
        rng = np.random.default_rng([seed, index, list(CONFIGS).index(config_name), 8])
        yield _deep_store_case(rng, seed, index, config_name)


def _visible_entry(rng, cols) -> bytes:
    """A PARAM entry (``cols`` columns) whose int8 outputs show single bits: see :func:`deep_cases`."""
    from .arith import INT32_MAX, INT32_MIN
    from .isa_sim import pack_param_entry

    bias, multiplier, shift = [], [], []
    for _ in range(cols):
        ky = int(rng.integers(-1, 8))                     # |y| about 2**ky
        eb = int(rng.integers(0, 31))                     # |bias| about 2**eb; the sums are up to 2**15
        es = max(eb, int(rng.integers(11, 16)))           # |s| = |acc + bias| about 2**es
        if rng.random() < 0.6:                            # a left shift, no RDBPOT: y itself is the output
            left = int(rng.integers(0, 21))
            if rng.random() < 0.85:                       # mostly no wrap in s << left
                left = min(left, max(0, 30 - es))
            shift.append(left)
            em = 31 + ky - min(es + left, 31)
        else:                                             # a right shift: the rounding addend decides
            e = int(rng.integers(1, 21))
            shift.append(-e)
            em = 31 + ky + e - es
        em = min(max(em, 0), 30)
        multiplier.append(int(rng.choice([-1, 1])) * int(rng.integers(1 << em, 1 << (em + 1))))
        bias.append(int(np.clip(int(rng.choice([-1, 1])) * int(rng.integers(1 << eb, 1 << (eb + 1))),
                                INT32_MIN, INT32_MAX)))
    zero_point = int(rng.integers(-20, 21)) if rng.random() < 0.5 else int(rng.integers(-100, 101))
    act_min, act_max = -128, 127
    if rng.random() < 0.5:     # bounds a few steps from the zero point: outputs land beside them
        act_min = int(np.clip(zero_point + int(rng.integers(-10, 11)), -128, 127))
        act_max = int(np.clip(zero_point + int(rng.integers(-10, 11)), -128, 127)) if rng.random() < 0.5 else 127
        if act_max < act_min:
            act_min, act_max = (act_max, act_min) if rng.random() < 0.9 else (act_min, act_max)
    return pack_param_entry(cols, bias, multiplier, shift, zero_point, act_min, act_max)


def _ordered(config, instructions) -> list:
    """``instructions`` with the token pops and pushes (and SYNCs) their dependencies need, then a HALT."""
    from .programs import _Emitter

    emitter, seen = _Emitter(), _Footprints(config)
    for ins in instructions:
        unit = _unit(ins)
        acc = accesses(ins, config)
        for v, index in sorted(seen.needs(unit, acc).items()):
            emitter.need(unit, Unit(v), index)
        seen.record(unit, emitter.emit(ins), acc)
    return emitter.finish()


def _deep_entries(config) -> int:
    """PARAM entries a deep program reloads each round: all of them, at most 8 (the 8x8 has 64)."""
    return min(config.param_depth, 8)


def _deep_program(rng, config, dram, *, count, rounds, stores, raw_every):
    """LOAD ACT/WGT, a MATMUL of ``count`` rows, then ``rounds`` times: LOAD the PARAM entries (fresh
    :func:`_visible_entry` draws) and ``stores`` int8 STOREs of all rows, entries alternating, and a raw STORE
    every ``raw_every``-th."""
    rows, cols = config.rows, config.cols
    x_act, entry_bytes = config.row_bytes(Buffer.ACT), config.row_bytes(Buffer.PARAM)
    at = _LOAD_BASE
    program = [Load(buffer=Buffer.ACT, buf_addr=0, y_size=count, x_size=x_act, stride=x_act, dram_addr=at)]
    at += count * x_act
    program.append(Load(buffer=Buffer.WGT, buf_addr=0, y_size=rows, x_size=cols, stride=cols, dram_addr=at))
    at += rows * cols
    program.append(Matmul(act_addr=0, wgt_addr=0, acc_addr=0, count=count, k_rows=int(rng.integers(1, rows + 1))))
    out = _STORE_BASE
    entries = _deep_entries(config)
    for _ in range(rounds):
        for e in range(entries):
            blob = _visible_entry(rng, cols)
            dram[at + e * entry_bytes:at + (e + 1) * entry_bytes] = np.frombuffer(blob, dtype=np.uint8)
        program.append(Load(buffer=Buffer.PARAM, buf_addr=0, y_size=entries, x_size=entry_bytes,
                            stride=entry_bytes, dram_addr=at))
        at += entries * entry_bytes
        first = int(rng.integers(entries))
        for s in range(stores):
            raw = raw_every > 0 and s % raw_every == raw_every - 1
            width = cols * (4 if raw else 1)
            program.append(Store(acc_addr=0, count=count, param_addr=(first + s) % entries, n_cols=cols, raw=raw,
                                 stride=width, dram_addr=out))
            out += count * width + int(rng.integers(0, 16))
    if at > _STORE_BASE or out > 0xC000:
        raise ValueError(f"deep case too large for the DRAM layout ({at:#x}, {out:#x})")
    return _ordered(config, program)


def _deep_epilogue_case(rng, seed, index, config_name) -> FuzzCase:
    config = CONFIGS[config_name]
    dram = rng.integers(0, 256, DRAM_BYTES, dtype=np.uint8)
    most = min(config.acc_depth, config.act_depth, 32)
    count = int(rng.integers(max(1, most // 2), most + 1))
    entries = _deep_entries(config)
    program = _deep_program(rng, config, dram, count=count, rounds=int(rng.integers(3, 6)), stores=entries + 1,
                            raw_every=entries + 1)
    case = _legal_case(rng, seed, index, config_name, program, dram, "deep epilogue")
    if rng.random() < 0.3:
        case.latency = _slow_memory(rng, read_max=8)
    return case


def _stall_runs(rng) -> list:
    """A back-pressure pattern of long stall runs (up to 40 cycles) between short bursts of ready cycles."""
    pattern = []
    while len(pattern) < 120:
        pattern += [True] * int(rng.integers(1, 41)) + [False] * int(rng.integers(1, 6))
    return pattern


def _deep_store_case(rng, seed, index, config_name) -> FuzzCase:
    config = CONFIGS[config_name]
    dram = rng.integers(0, 256, DRAM_BYTES, dtype=np.uint8)
    count = min(config.acc_depth, config.act_depth, 32)
    program = _deep_program(rng, config, dram, count=count, rounds=int(rng.integers(1, 3)),
                            stores=int(rng.integers(6, 11)), raw_every=int(rng.choice([0, 4, 5])))
    case = _legal_case(rng, seed, index, config_name, program, dram, "deep store")
    case.latency = {"read_latency": int(rng.integers(0, 6)), "write_latency": int(rng.integers(12, 41)),
                    "max_outstanding": int(rng.integers(1, 3)),
                    "backpressure": _stall_runs(rng) if rng.random() < 0.5 else None}
    return case


def _long_case(rng, seed, index, config_name) -> FuzzCase:
    """A program of more than 4096 instructions: PROG_LEN, the fetch's instruction count and the units'
    instruction indices cross bit 12.

    Cheap SYNCs (no tokens) pad it to just before index 4096; then LOADs of ACT, WGT and PARAM rows and a run of
    MATMULs accumulating on the same rows, slow enough (``count`` 12 to 16 rows each) that the COMPUTE unit falls
    behind the fetch and its dispatcher queue fills; a raw STORE of the sums, a LOAD, and more MATMULs from index
    4096 on, which wait on the full queue. Half the time the LOAD gets a bus error (kind ``long_bus_load``): the
    abort must drop only what follows it, so every queued MATMUL of the run still counts in the stored sums
    (queue entries carry their index, bit 12 included). Of the others, PROG_LEN is the length, beyond it (the
    HALT stops the program), or short of it, from 4096 on (``long_overrun``: PROGRAM_OVERRUN at that index). A
    quarter of the programs also sit high in DRAM (:func:`_place_high`)."""
    config = CONFIGS[config_name]
    rows, cols = config.rows, config.cols
    count = int(rng.integers(min(12, config.acc_depth), min(16, config.acc_depth, config.act_depth) + 1))
    k_rows = int(rng.integers(1, rows + 1))
    # The COMPUTE unit takes up to 1 + 4 MATMULs off its queue (the executing one, its job FIFOs) and the queue
    # holds 8: a run of 24 to 32 slow MATMULs (one activation row a cycle, the fetch brings an instruction every
    # 4/2/1 cycles) fills it. The run ends at index 4093, then the STORE (4094), the LOAD (4095) and more
    # MATMULs from index 4096 on, which wait on the full queue while it holds the run's last MATMULs.
    run = int(rng.integers(24, 33))
    first = _LONG_INDEX - 3 - run
    dram = rng.integers(0, 256, DRAM_BYTES, dtype=np.uint8)
    x_act, x_wgt = int(rng.integers(1, config.row_bytes(Buffer.ACT) + 1)), config.row_bytes(Buffer.WGT)
    low = (_LOAD_BASE, _STORE_BASE - 4096)
    setup = [Load(buffer=Buffer.ACT, buf_addr=0, y_size=count, x_size=x_act,
                  stride=int(rng.choice([x_act, int(rng.integers(0, 100))])), dram_addr=int(rng.integers(*low))),
             Load(buffer=Buffer.WGT, buf_addr=0, y_size=rows, x_size=x_wgt, stride=x_wgt,
                  dram_addr=int(rng.integers(*low))),
             Load(buffer=Buffer.PARAM, buf_addr=0, y_size=1, x_size=config.row_bytes(Buffer.PARAM),
                  stride=0, dram_addr=int(rng.integers(*low)), push_next=True)]
    pad = [Sync(unit=Unit(int(u))) for u in rng.integers(0, 3, first - len(setup))]
    body = [Matmul(act_addr=0, wgt_addr=0, acc_addr=0, count=count, k_rows=k_rows, accumulate=i > 0,
                   pop_prev=i == 0, push_next=i == run - 1) for i in range(run)]
    store = Store(acc_addr=0, count=count, param_addr=0, n_cols=cols, raw=True, stride=4 * cols,
                  dram_addr=int(rng.integers(_STORE_BASE, 0xC000)), pop_prev=True, push_prev=True)
    late = Load(buffer=Buffer.WGT, buf_addr=config.wgt_depth - 1, y_size=1, x_size=x_wgt, stride=0,
                dram_addr=int(rng.integers(*low)))
    after = [Matmul(act_addr=0, wgt_addr=0, acc_addr=0, count=count, k_rows=k_rows, accumulate=True,
                    pop_next=i == 0) for i in range(int(rng.integers(8, 13)))]
    program = pad + setup + body + [store, late] + after + [Halt()]
    kind, bus_errors = "legal", []
    if rng.random() < 0.5:
        kind = "long_bus_load"
        word = config.bus_bytes
        lo = late.dram_addr // word * word
        bus_errors = [(lo, lo + word, str(rng.choice(["slverr", "decerr"])))]
    words = [encode(i) for i in program]
    prog_len = len(words)
    pick = rng.random()
    if kind == "legal" and pick < 0.3:      # PROG_LEN beyond the HALT: it stops the program
        prog_len += int(rng.integers(1, 5000))
    elif kind == "legal" and pick < 0.6:    # PROG_LEN short of the HALT: PROGRAM_OVERRUN at index >= 4096
        kind, prog_len = "long_overrun", int(rng.integers(_LONG_INDEX, len(words)))
    prog_addr = 16 * int(rng.integers(DRAM_BYTES // 16, DRAM_BYTES // 16 + 256))
    image = np.zeros(prog_addr + 16 * (len(words) + 64), dtype=np.uint8)
    image[:DRAM_BYTES] = dram
    case = FuzzCase(config_name, seed, index, kind, words, image, prog_addr, prog_len, bus_errors)
    case.layout = "long"
    if rng.random() < 0.25:
        _place_high(rng, case)
        case.layout = "long, " + case.layout
    return case


def _make_illegal(rng, case, config, program):
    kind = str(rng.choice(_ILLEGAL_KINDS))
    case.kind = kind
    words = case.words
    body = len(words) - 1                              # the HALT stays last
    at = int(rng.integers(0, len(words)))
    if kind == "bitflip":
        words[at] ^= 1 << int(rng.integers(0, 128))
    elif kind == "opcode":
        words[at] = (words[at] & ~0x7) | int(rng.choice([0, 6, 7]))
    elif kind == "reserved":
        op = Opcode(words[at] & 7)
        used = 0
        for _, lsb, width in FIELDS[op]:
            used |= ((1 << width) - 1) << lsb
        free = [b for b in range(128) if not used >> b & 1]
        words[at] |= 1 << int(rng.choice(free))
    elif kind == "halt_flags":
        words[-1] |= 1 << int(rng.integers(3, 7))
    elif kind in ("range", "illegal_and_range"):
        ins = program[at] if at < body else None
        if isinstance(ins, Load):
            ins = dataclasses.replace(ins, **rng.choice([{"y_size": 0}, {"x_size": config.row_bytes(ins.buffer) + 1},
                                                         {"buf_addr": config.depth(ins.buffer) - ins.y_size + 1}]))
        elif isinstance(ins, Matmul):
            ins = dataclasses.replace(ins, **rng.choice([{"count": 0}, {"k_rows": config.rows + 1},
                                                         {"acc_addr": config.acc_depth - ins.count + 1},
                                                         {"act_addr": config.act_depth - ins.count + 1}]))
        elif isinstance(ins, Store):
            ins = dataclasses.replace(ins, **rng.choice([{"n_cols": config.cols + 1}, {"n_cols": 0},
                                                         {"param_addr": config.param_depth},
                                                         {"acc_addr": config.acc_depth - ins.count + 1}]))
        else:
            ins = Matmul(count=1, k_rows=0)
        words[at] = encode(ins)
        if kind == "illegal_and_range":     # both faults in one word: ILLEGAL_INSTRUCTION has priority
            op = Opcode(words[at] & 7)
            used = 0
            for _, lsb, width in FIELDS[op]:
                used |= ((1 << width) - 1) << lsb
            words[at] |= 1 << int(rng.choice([b for b in range(128) if not used >> b & 1]))
    elif kind == "two_faults":
        # A bus error on the last row of the longest LOAD, and an unknown opcode a few instructions after it: the
        # dispatcher sees the opcode first, the LOAD's error arrives later; the lower index must win.
        loads = [(ins.y_size, i) for i, ins in enumerate(program) if isinstance(ins, Load)]
        if loads:
            _, li = max(loads)
            ins = program[li]
            lo = (ins.dram_addr + (ins.y_size - 1) * ins.stride) % DRAM_BYTES // config.bus_bytes * config.bus_bytes
            case.bus_errors = [(lo, lo + config.bus_bytes, str(rng.choice(["slverr", "decerr"])))]
            bad = min(li + int(rng.integers(1, 6)), body)
            words[bad] = (words[bad] & ~0x7) | 7
        else:
            words[at] = (words[at] & ~0x7) | 7
    elif kind == "deadlock":
        flag = {Unit.LOAD: "pop_next", Unit.STORE: "pop_prev"}
        ins = Sync(**[{"unit": Unit.COMPUTE, "pop_prev": True}, {"unit": Unit.COMPUTE, "pop_next": True},
                      {"unit": Unit.STORE, "pop_prev": True}, {"unit": Unit.LOAD, "pop_next": True}][int(rng.integers(4))])
        if at < body and _unit(program[at]) in flag and not getattr(program[at], flag[_unit(program[at])]):
            ins = dataclasses.replace(program[at], **{flag[_unit(program[at])]: True})
            words[at] = encode(ins)     # deadlocks only if no token is outstanding: the golden model decides
        else:
            words.insert(min(at, body), encode(ins))
    elif kind == "overflow":
        unit = Unit(int(rng.integers(3)))
        flag = "push_next" if unit != Unit.STORE else "push_prev"
        syncs = [encode(Sync(unit=unit, **{flag: True}))] * (TOKEN_MAX + 1)
        if rng.random() < 0.5:     # the overflowing push also pops, maybe from an empty queue: DEADLOCK first
            pop = "pop_next" if unit == Unit.LOAD else "pop_prev"
            syncs[-1] = encode(Sync(unit=unit, **{flag: True, pop: True}))
        words[min(at, body):min(at, body)] = syncs
    elif kind == "overrun":
        case.prog_len = int(rng.integers(0, len(words)))
    else:
        targets = [i for i in program if isinstance(i, {"bus_load": Load, "bus_store": Store}.get(kind, type(None)))]
        if kind == "bus_fetch" or not targets:
            lo = case.prog_addr + 16 * int(rng.integers(0, len(words)))
        else:
            ins = targets[int(rng.integers(len(targets)))]
            row = int(rng.integers(0, (ins.y_size if isinstance(ins, Load) else ins.count)))
            lo = (ins.dram_addr + row * ins.stride + int(rng.integers(0, 4))) % DRAM_BYTES
        # Whole bus words: the memory models fail a read beat whose word overlaps a range and drop a whole write
        # beat with a strobed byte in one, the golden model works per byte (docs/isa.md); on word boundaries
        # they agree.
        word = config.bus_bytes
        hi = -(-(lo + int(rng.integers(1, 24))) // word) * word
        lo = lo // word * word
        case.bus_errors = [(lo, hi, str(rng.choice(["slverr", "decerr"])))]
    case.prog_len = min(case.prog_len, len(words)) if kind == "overrun" else len(words)


# ---- Checking ---------------------------------------------------------------------------------------------------

class Mismatch(AssertionError):
    """The RTL and a golden model disagree on a case."""


class GeneratorError(RuntimeError):
    """The generator produced a program outside its promise (racy): a bug of the fuzzer, not of the RTL."""


_accelerators: dict = {}


def accelerator(config_name: str, configs=CONFIGS):
    key = (config_name, configs[config_name])
    if key not in _accelerators:
        from .verilator_backend import VerilatorAccelerator
        _accelerators[key] = VerilatorAccelerator(configs[config_name])
    return _accelerators[key]


def _first_difference(a, b) -> str:
    where = np.flatnonzero(a != b)
    return (f"{where.size} DRAM byte(s) differ; first at {int(where[0]):#x}: RTL {int(a[where[0]]):#04x}, "
            f"golden {int(b[where[0]]):#04x}")


def check_case(case: FuzzCase, rtl=None) -> dict:
    """Run ``case`` on the golden simulator, the RTL and (legal programs) the cycle model; raise
    :class:`Mismatch` naming the first difference. Returns a summary (error, cycles). ``rtl``: the
    :class:`~sim.verilator_backend.VerilatorAccelerator` to check (default: the generated design's, cached)."""
    from .cycle_model import predict
    from .isa_sim import IsaSimulator

    config = CONFIGS[case.config]
    image = case.image()
    golden_dram = image.copy()
    golden = IsaSimulator(config).run(golden_dram, prog_addr=case.prog_addr, prog_len=case.prog_len,
                                      bus_errors=case.bus_errors, check_races=True)
    if golden.hazards:
        raise GeneratorError(f"{case.config} seed {case.seed} case {case.index} ({case.kind}): racy program: "
                             f"{golden.hazards[0]}")
    written = new_written(config)
    executed = case.prog_len if golden.ok else golden.error_index
    if golden.error in (ErrorCode.BUS_ERROR_LOAD, ErrorCode.BUS_ERROR_STORE):
        executed += 1       # the faulting LOAD/STORE completes
    for w in case.words[:executed]:
        ins = decode(w)
        early = reads_before_write(ins, config, written)
        if early:
            raise GeneratorError(f"{case.config} seed {case.seed} case {case.index} ({case.kind}): {ins} reads "
                                 f"{early[0][0]}[{early[0][1]}:{early[0][2]}] before any instruction writes it")
        mark_written(ins, written)
    rtl_dram = image.copy()
    model_rtl = rtl if rtl is not None else accelerator(case.config)
    host = {} if case.host is None else {"register_writes": case.host["writes"], "host_stall": case.host["stall"]}
    rtl = model_rtl.run(rtl_dram, case.prog_addr, case.prog_len, bus_errors=case.bus_errors,
                        max_cycles=_MAX_CYCLES, **host)
    problems = []
    expect = (case.host or {}).get("expect") or {"irq_enable": 1, "prog_addr": case.prog_addr,
                                                 "prog_len": case.prog_len}
    if rtl.registers != expect:
        wrong = {k: (f"{rtl.registers[k]:#x}", f"{v:#x}") for k, v in expect.items() if rtl.registers[k] != v}
        problems.append(f"registers read back (RTL, written) differ: {wrong}")
    if rtl.error != golden.error:
        problems.append(f"error {ErrorCode(rtl.error).name if rtl.error in ErrorCode._value2member_map_ else rtl.error}"
                        f" on the RTL, {golden.error.name} on the golden simulator")
    elif not golden.ok and rtl.error_index != golden.error_index:
        problems.append(f"ERROR_INDEX {rtl.error_index} on the RTL, {golden.error_index} on the golden simulator")
    # A bus error is the one fault that arrives after later instructions were dispatched: INSTRUCTIONS and
    # VECTORS then also count what was dispatched (and streamed) after the faulting instruction before its error
    # response, work that is aborted and leaves no trace in DRAM (docs/verification.md). Elsewhere: equal.
    late = golden.error in (ErrorCode.BUS_ERROR_LOAD, ErrorCode.BUS_ERROR_STORE) and rtl.error == golden.error
    for name, want in (("instructions", golden.instructions), ("vectors", golden.stats.vectors)):
        got = rtl.counters[name]
        if got < want or (got != want and not late):
            problems.append(f"{name.upper()} {got} on the RTL, {want} on the golden simulator")
    if late:
        # ... and the STOREs after the faulting instruction that tokens do not order after it may have written
        # some rows before the error arrived: their bytes may hold either value. Every other byte must be equal.
        for w in case.words[golden.error_index + 1:case.prog_len]:
            try:
                ins = decode(w)
            except ValueError:
                break
            if isinstance(ins, Halt):
                break
            if isinstance(ins, Store):
                footprint = accesses(ins, config)[-1][1]
                rtl_dram[footprint] = golden_dram[footprint]
    if not np.array_equal(rtl_dram, golden_dram):
        problems.append(_first_difference(rtl_dram, golden_dram))
    legal = golden.ok and not case.bus_errors
    # The cycle model takes the program, not PROG_LEN: with PROG_LEN beyond the HALT the fetch keeps prefetching
    # past it (words the dispatcher drops), bus traffic the model does not count. Those cases compare the rest.
    if legal and not problems and case.prog_len <= len(case.words):
        model = predict([decode(w) for w in case.words[:case.prog_len]], config)
        diff = {k: (rtl.counters[k], model[k]) for k in model if rtl.counters[k] != model[k]}
        if diff:
            problems.append(f"counters (RTL, cycle model) differ: {diff}")
    if legal and case.latency and not problems:
        second = image.copy()
        slow = model_rtl.run(second, case.prog_addr, case.prog_len, max_cycles=_MAX_CYCLES,
                             **case.latency)
        if slow.error != ErrorCode.NONE:
            problems.append(f"under memory latency {case.latency['read_latency']}/{case.latency['write_latency']} "
                            f"and back-pressure the RTL reports {slow.error!r}")
        elif not np.array_equal(second, golden_dram):
            problems.append("under memory latency and back-pressure: " + _first_difference(second, golden_dram))
    if problems:
        where = "" if case.layout == "low" else f", {case.layout}"
        raise Mismatch(f"{case.config} seed {case.seed} case {case.index} ({case.kind}{where}): "
                       + "; ".join(problems))
    return {"error": golden.error.name, "cycles": rtl.counters["cycles"], "legal": legal}


def _fails(case) -> bool:
    try:
        check_case(case)
    except Mismatch:
        return True
    except Exception:     # the shrunk program broke the generator's promise (racy, or no longer encodable)
        return False
    return False


def shrink(case: FuzzCase, *, budget: int = 400) -> FuzzCase:
    """A smaller case that still fails: instructions dropped (the HALT kept), then LOAD/MATMUL/STORE sizes halved,
    while :func:`check_case` still raises :class:`Mismatch` (at most ``budget`` tries)."""
    tries = 0

    def attempt(words, prog_len=None):
        nonlocal tries
        tries += 1
        cand = dataclasses.replace(case, words=list(words))
        cand.prog_len = min(prog_len if prog_len is not None else len(words), len(words))
        if case.prog_len == len(case.words):
            cand.prog_len = len(words)
        if cand.host is not None and cand.prog_len != case.prog_len:   # the host writes the new PROG_LEN last
            cand.host = {"writes": [*cand.host["writes"], ("prog_len", cand.prog_len, 0xF)],
                         "stall": cand.host["stall"], "expect": {**cand.host["expect"], "prog_len": cand.prog_len}}
        return cand if _fails(cand) else None

    chunk = max(1, (len(case.words) - 1) // 2)
    while chunk >= 1 and tries < budget:
        i, progress = 0, False
        while i < len(case.words) - 1 and tries < budget:
            words = case.words[:i] + case.words[min(i + chunk, len(case.words) - 1):]
            smaller = attempt(words)
            if smaller is not None:
                case, progress = smaller, True
                continue
            i += chunk
        if not progress:
            chunk //= 2
    sizes = {Load: ("y_size", "x_size"), Matmul: ("count", "k_rows"), Store: ("count", "n_cols")}
    for i in range(len(case.words)):
        try:
            ins = decode(case.words[i])
        except ValueError:
            continue
        for name in sizes.get(type(ins), ()):
            while getattr(ins, name) > 1 and tries < budget:
                smaller_ins = dataclasses.replace(ins, **{name: getattr(ins, name) // 2})
                words = list(case.words)
                words[i] = encode(smaller_ins)
                smaller = attempt(words, case.prog_len)
                if smaller is None:
                    break
                case, ins = smaller, smaller_ins
    return case


def save_reproducer(case: FuzzCase, message: str, out_dir: Path) -> Path:
    """``build/fuzz/<config>-seed<seed>-case<index>.json`` (+ ``.npy`` DRAM without the program)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{case.config}-seed{case.seed}-case{case.index}"
    np.save(out_dir / f"{stem}.npy", case.dram, allow_pickle=False)
    (out_dir / f"{stem}.json").write_text(json.dumps({
        "config": case.config, "hardware": dataclasses.asdict(CONFIGS[case.config]), "seed": case.seed,
        "index": case.index, "kind": case.kind, "message": message, "prog_addr": case.prog_addr,
        "prog_len": case.prog_len, "bus_errors": case.bus_errors, "latency": case.latency, "layout": case.layout,
        "host": case.host,
        "words": [f"{w:#034x}" for w in case.words], "listing": case.listing().splitlines(),
        "dram": f"{stem}.npy", "regenerate": f"sim.fuzz.make_case({case.seed}, {case.index}, {case.config!r})"},
        indent=1) + "\n")
    return out_dir / f"{stem}.json"


def load_reproducer(path: Path | str) -> FuzzCase:
    """The case saved by :func:`save_reproducer` (its DRAM from the ``.npy`` beside it, no pickle)."""
    path = Path(path)
    saved = json.loads(path.read_text())
    if saved["config"] not in CONFIGS:
        raise ValueError(f"{path}: configuration {saved['config']!r} is not one of {', '.join(CONFIGS)}")
    dram = np.load(path.parent / saved["dram"], allow_pickle=False)
    return FuzzCase(saved["config"], saved["seed"], saved["index"], saved["kind"],
                    [int(w, 16) for w in saved["words"]], dram, saved["prog_addr"], saved["prog_len"],
                    [tuple(r) for r in saved["bus_errors"]], saved["latency"], saved.get("layout", "low"),
                    _saved_host(saved.get("host")))


def _saved_host(host):
    if host is None:
        return None
    return {"writes": [tuple(w) for w in host["writes"]], "stall": host["stall"], "expect": host["expect"]}


# ---- Networks ---------------------------------------------------------------------------------------------------

def check_network(seed: int, index: int, config_name: str, *, images: int = 3) -> dict:
    """A random CNN through the driver: cpu and verilator logits identical, else :class:`Mismatch`."""
    from sw.driver import Driver
    from sw.quantize import quantize
    from sw.reference import images_to_float
    from sw.testing import random_images, random_network, random_params

    config = NETWORK_CONFIGS[config_name]
    rng = np.random.default_rng([seed, index, 100 + list(NETWORK_CONFIGS).index(config_name)])
    network = random_network(rng)
    params = random_params(rng, network)
    pixels = random_images(rng, network, images + 16)
    qnet = quantize(network, params, images_to_float(pixels[images:]))
    want = Driver(qnet, backend="cpu", config=config).run(pixels[:images]).logits
    result = Driver(qnet, backend="verilator", config=config, batch_size=2, workers=1).run(pixels[:images])
    got = result.logits
    bad = np.argwhere(got != want)
    if bad.size:
        i, j = (int(v) for v in bad[0])
        layers = ", ".join(type(layer).__name__ for layer in network.layers)
        raise Mismatch(f"network {config_name} seed {seed} case {index} (input {network.input_shape}, {layers}): "
                       f"verilator logit [{i}, {j}] = {got[i, j]}, cpu {want[i, j]} ({bad.shape[0]} differ)")
    cycles = sum(layer.cycles or 0 for layer in result.layers)
    return {"layers": len(network.layers), "cycles": cycles}


# ---- Campaign ---------------------------------------------------------------------------------------------------

def _program_chunk(seed, config_name, indices, out_dir):
    results = {"cases": 0, "illegal": 0, "skipped": 0, "errors": {}, "mismatches": [], "generator_errors": [],
               "cycles": 0}
    for index in indices:
        case = make_case(seed, index, config_name)
        try:
            summary = check_case(case)
        except Mismatch as exc:
            small = shrink(case)
            path = save_reproducer(small, str(exc), out_dir)
            results["mismatches"].append({"message": str(exc), "reproducer": str(path),
                                          "instructions": len(small.words)})
        except GeneratorError as exc:
            if case.kind == "legal":
                results["generator_errors"].append(str(exc))
            else:    # a corruption that made a racy or uninitialised-read program: not comparable, not counted
                results["skipped"] += 1
                continue
        else:
            results["errors"][summary["error"]] = results["errors"].get(summary["error"], 0) + 1
            results["cycles"] += summary["cycles"]
        results["cases"] += 1
        results["illegal"] += case.kind != "legal"
    return results


def _network_chunk(seed, config_name, indices):
    results = {"cases": 0, "mismatches": []}
    for index in indices:
        try:
            check_network(seed, index, config_name)
        except Mismatch as exc:
            results["mismatches"].append({"message": str(exc)})
        results["cases"] += 1
    return results


def run_campaign(programs: int, networks: int, seed: int, configs, workers: int, out_dir: Path,
                 report: Path | None = None, log=print) -> dict:
    """Split ``programs`` and ``networks`` over ``configs`` and ``workers`` processes; the summary dict."""
    from .verilator_backend import build_harness

    for name in configs:              # build once, in this process, before the workers load the libraries
        build_harness(CONFIGS[name])
        if networks:
            build_harness(NETWORK_CONFIGS[name])
    start = time.monotonic()
    jobs = []
    chunk = 25
    for c, name in enumerate(configs):
        n = programs // len(configs) + (c < programs % len(configs))
        jobs += [("programs", name, range(i, min(i + chunk, n))) for i in range(0, n, chunk)]
        k = networks // len(configs) + (c < networks % len(configs))
        jobs += [("networks", name, range(i, min(i + 2, k))) for i in range(0, k, 2)]
    totals = {"programs": {name: {"cases": 0, "illegal": 0, "skipped": 0, "errors": {}, "cycles": 0}
                           for name in configs},
              "networks": {name: {"cases": 0} for name in configs}, "mismatches": [], "generator_errors": []}
    done = {"programs": 0, "networks": 0}
    last_line = 0.0
    with concurrent.futures.ProcessPoolExecutor(workers) as pool:
        futures = {}
        for kind, name, indices in jobs:
            if kind == "programs":
                futures[pool.submit(_program_chunk, seed, name, list(indices), out_dir)] = (kind, name)
            else:
                futures[pool.submit(_network_chunk, seed, name, list(indices))] = (kind, name)
        for future in concurrent.futures.as_completed(futures):
            kind, name = futures[future]
            r = future.result()
            t = totals[kind][name]
            t["cases"] += r["cases"]
            done[kind] += r["cases"]
            if kind == "programs":
                t["illegal"] += r["illegal"]
                t["skipped"] += r["skipped"]
                t["cycles"] += r["cycles"]
                for k, v in r["errors"].items():
                    t["errors"][k] = t["errors"].get(k, 0) + v
                totals["generator_errors"] += r["generator_errors"]
            totals["mismatches"] += r["mismatches"]
            for m in r["mismatches"]:
                log(f"MISMATCH: {m['message']}" + (f" -> {m['reproducer']}" if "reproducer" in m else ""))
            now = time.monotonic()
            if now - last_line > 10 or len(futures) == sum(f.done() for f in futures):
                last_line = now
                elapsed = now - start
                log(f"[{elapsed:6.0f}s] programs {done['programs']}/{programs}, networks {done['networks']}/"
                    f"{networks}, mismatches {len(totals['mismatches'])} "
                    f"({done['programs'] / max(elapsed, 1e-9):.1f} programs/s)")
    elapsed = time.monotonic() - start
    totals.update({"seed": seed, "configs": {n: dataclasses.asdict(CONFIGS[n]) for n in configs},
                   "network_configs": {n: dataclasses.asdict(NETWORK_CONFIGS[n]) for n in configs},
                   "total_programs": done["programs"], "total_networks": done["networks"], "seconds": elapsed,
                   "workers": workers})
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps(totals, indent=1) + "\n")
    return totals


def _env_int(name, default):
    value = os.environ.get(name, "")
    return int(value) if value.strip() else default


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sim.fuzz", description=__doc__.splitlines()[0])
    try:
        parser.add_argument("--programs", type=int, default=_env_int("FUZZ_PROGRAMS", 10_200))
        parser.add_argument("--networks", type=int, default=_env_int("FUZZ_NETWORKS", 510))
        parser.add_argument("--seed", type=int, default=_env_int("SEED", 1))
    except ValueError as exc:
        print(f"fuzz: FUZZ_PROGRAMS, FUZZ_NETWORKS and SEED must be integers ({exc})", file=sys.stderr)
        return 2
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", default=str(ROOT / "build" / "fuzz"))
    parser.add_argument("--report", default=str(ROOT / "build" / "reports" / "fuzz.json"))
    parser.add_argument("--replay", metavar="JSON", help="run one saved reproducer (build/fuzz/*.json) and exit")
    args = parser.parse_args(argv)
    if args.replay:
        try:
            case = load_reproducer(args.replay)
        except (OSError, ValueError, KeyError) as exc:
            print(f"fuzz: cannot read the reproducer {args.replay}: {exc}", file=sys.stderr)
            return 2
        print(case.listing())
        try:
            summary = check_case(case)
        except (Mismatch, GeneratorError) as exc:
            print(f"fuzz: still fails: {exc}")
            return 1
        print(f"fuzz: passes now ({summary['error']}, {summary['cycles']} cycles)")
        return 0
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    problems = [c for c in configs if c not in CONFIGS]
    if problems or not configs:
        print(f"fuzz: unknown configuration {problems[0] if problems else '(none)'!r}; choose from "
              f"{', '.join(CONFIGS)}", file=sys.stderr)
        return 2
    if args.programs < 0 or args.networks < 0 or args.workers < 1:
        print("fuzz: --programs and --networks must be >= 0 and --workers >= 1", file=sys.stderr)
        return 2
    print(f"fuzz: {args.programs} programs and {args.networks} networks on {', '.join(configs)}, seed {args.seed}, "
          f"{args.workers} workers", flush=True)
    totals = run_campaign(args.programs, args.networks, args.seed, configs, args.workers, Path(args.out),
                          Path(args.report), log=lambda s: print(s, flush=True))
    for name in configs:
        p = totals["programs"][name]
        print(f"  {name}: {p['cases']} programs ({p['illegal']} illegal; outcomes "
              + ", ".join(f"{k} {v}" for k, v in sorted(p["errors"].items())) + f"), "
              f"{totals['networks'][name]['cases']} networks")
    rate = totals["total_programs"] / max(totals["seconds"], 1e-9)
    print(f"fuzz: {totals['total_programs']} programs, {totals['total_networks']} networks, "
          f"{len(totals['mismatches'])} mismatches, {len(totals['generator_errors'])} generator errors in "
          f"{totals['seconds']:.0f} s ({rate:.1f} programs/s on {args.workers} workers); wrote {args.report}")
    return 1 if totals["mismatches"] or totals["generator_errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
