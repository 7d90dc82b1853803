"""The accelerator's instruction set: field tables, encoder/decoder, assembler and disassembler.

This module is the single definition of the binary encoding. It is pure Python (no Amaranth, no NumPy) so that the
golden simulator, the compiler, the driver and the testbenches import it freely; the hardware decoder builds its
bit layouts from :data:`FIELDS`. The prose reference is ``docs/isa.md``.

Every instruction is 128 bits, stored little-endian (16 bytes) in DRAM. Bits [2:0] hold the opcode and bits [6:3]
the dependency-token flags; the remaining fields depend on the opcode. Reserved bits must be zero.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from enum import IntEnum

__all__ = [
    "INSTRUCTION_BITS", "INSTRUCTION_BYTES", "Opcode", "Buffer", "Unit", "ErrorCode", "FIELDS",
    "Load", "Matmul", "Store", "Sync", "Halt", "IllegalInstruction", "AssemblyError",
    "encode", "decode", "to_bytes", "from_bytes", "assemble", "disassemble", "operands", "HardwareConfig", "param_entry_bytes",
]

INSTRUCTION_BITS = 128
INSTRUCTION_BYTES = INSTRUCTION_BITS // 8


class Opcode(IntEnum):
    LOAD = 1
    MATMUL = 2
    STORE = 3
    SYNC = 4
    HALT = 5


class Buffer(IntEnum):
    """On-chip buffers a LOAD can fill."""
    ACT = 0     # activation scratchpad: rows int8 per entry
    WGT = 1     # weight buffer: cols int8 per entry
    PARAM = 2   # epilogue parameters: bias/multiplier int32, shift int8 per column, then zp/min/max int8


class Unit(IntEnum):
    LOAD = 0
    COMPUTE = 1
    STORE = 2


class ErrorCode(IntEnum):
    NONE = 0
    ILLEGAL_INSTRUCTION = 1   # unknown opcode, reserved bits set, a token flag the unit cannot have, buffer 3
    OUT_OF_RANGE = 2          # a buffer address/size outside the configured buffers, or a zero/oversized count
    BUS_ERROR_FETCH = 3       # SLVERR/DECERR while fetching instructions
    BUS_ERROR_LOAD = 4        # SLVERR/DECERR on a LOAD's reads
    BUS_ERROR_STORE = 5       # SLVERR/DECERR on a STORE's writes
    TOKEN_DEADLOCK = 6        # a unit waits for a token no earlier instruction pushed
    TOKEN_OVERFLOW = 7        # more than TOKEN_MAX tokens outstanding on one queue
    PROGRAM_OVERRUN = 8       # PROG_LEN instructions fetched without a HALT


#: Tokens one dependency queue can hold.
TOKEN_MAX = 255

# Common fields: (name, lsb, width).
_COMMON = [("opcode", 0, 3), ("pop_prev", 3, 1), ("pop_next", 4, 1), ("push_prev", 5, 1), ("push_next", 6, 1)]

#: Per-opcode field tables (lsb, width), common fields included. Bits not covered are reserved (must be zero).
FIELDS = {
    Opcode.LOAD: _COMMON + [("buffer", 8, 2), ("buf_addr", 10, 16), ("y_size", 26, 16), ("x_size", 42, 12),
                            ("stride", 54, 24), ("dram_addr", 78, 32)],
    Opcode.MATMUL: _COMMON + [("accumulate", 7, 1), ("act_addr", 8, 16), ("wgt_addr", 24, 16), ("acc_addr", 40, 16),
                              ("count", 56, 16), ("k_rows", 72, 8)],
    Opcode.STORE: _COMMON + [("raw", 7, 1), ("acc_addr", 8, 16), ("count", 24, 16), ("param_addr", 40, 16),
                             ("n_cols", 56, 8), ("stride", 64, 24), ("dram_addr", 88, 32)],
    Opcode.SYNC: _COMMON + [("unit", 7, 2)],
    Opcode.HALT: _COMMON,
}

#: Which unit executes each opcode (SYNC names its unit; HALT is handled by the dispatcher).
UNIT_OF = {Opcode.LOAD: Unit.LOAD, Opcode.MATMUL: Unit.COMPUTE, Opcode.STORE: Unit.STORE}

#: Token flags each unit may use: LOAD has no previous unit, STORE no next one.
ALLOWED_FLAGS = {
    Unit.LOAD: {"pop_next", "push_next"},
    Unit.COMPUTE: {"pop_prev", "pop_next", "push_prev", "push_next"},
    Unit.STORE: {"pop_prev", "push_prev"},
}
FLAG_NAMES = ("pop_prev", "pop_next", "push_prev", "push_next")


class IllegalInstruction(ValueError):
    """A 128-bit word that is not a legal instruction (the message says which field is wrong)."""


class AssemblyError(ValueError):
    """A line of assembly that cannot be assembled (the message names the line and the problem)."""


@dataclass(frozen=True)
class _Instruction:
    pop_prev: bool = False
    pop_next: bool = False
    push_prev: bool = False
    push_next: bool = False

    @property
    def flags(self) -> dict:
        return {name: bool(getattr(self, name)) for name in FLAG_NAMES}


@dataclass(frozen=True)
class Load(_Instruction):
    """Copy ``y_size`` rows of ``x_size`` bytes from ``dram_addr + y*stride`` into buffer rows ``buf_addr + y``.

    Bytes of a row beyond ``x_size`` are zero-filled.
    """
    buffer: Buffer = Buffer.ACT
    buf_addr: int = 0
    y_size: int = 1
    x_size: int = 1
    stride: int = 0
    dram_addr: int = 0
    opcode = Opcode.LOAD


@dataclass(frozen=True)
class Matmul(_Instruction):
    """Stream ``count`` activation rows from ``act_addr`` through the weight tile at ``wgt_addr`` into the
    accumulator rows from ``acc_addr`` (overwrite, or add with ``accumulate``). Weight rows ``k_rows..rows-1`` are
    taken as zero."""
    act_addr: int = 0
    wgt_addr: int = 0
    acc_addr: int = 0
    count: int = 1
    k_rows: int = 1
    accumulate: bool = False
    opcode = Opcode.MATMUL


@dataclass(frozen=True)
class Store(_Instruction):
    """Write ``count`` accumulator rows from ``acc_addr`` through the epilogue (parameters at ``param_addr``) to
    ``dram_addr + r*stride``: ``n_cols`` int8 values per row, or int32 little-endian with ``raw``."""
    acc_addr: int = 0
    count: int = 1
    param_addr: int = 0
    n_cols: int = 1
    stride: int = 0
    dram_addr: int = 0
    raw: bool = False
    opcode = Opcode.STORE


@dataclass(frozen=True)
class Sync(_Instruction):
    """Token operations only, executed by ``unit``."""
    unit: Unit = Unit.COMPUTE
    opcode = Opcode.SYNC


@dataclass(frozen=True)
class Halt(_Instruction):
    """End of program: the accelerator finishes once every unit has drained."""
    opcode = Opcode.HALT


_CLASSES = {Opcode.LOAD: Load, Opcode.MATMUL: Matmul, Opcode.STORE: Store, Opcode.SYNC: Sync, Opcode.HALT: Halt}


def unit_of(instr) -> Unit | None:
    if isinstance(instr, Sync):
        return Unit(instr.unit)
    return UNIT_OF.get(instr.opcode)


def _check_flags(instr):
    unit = unit_of(instr)
    allowed = ALLOWED_FLAGS[unit] if unit is not None else set()
    for name in FLAG_NAMES:
        if getattr(instr, name) and name not in allowed:
            raise IllegalInstruction(f"{type(instr).__name__}: token flag {name} is not allowed "
                                     f"for the {unit.name if unit is not None else 'dispatcher'} unit")


def encode(instr) -> int:
    """The 128-bit encoding of an instruction; raises IllegalInstruction for values that do not fit."""
    _check_flags(instr)
    word = 0
    for name, lsb, width in FIELDS[instr.opcode]:
        value = int(instr.opcode) if name == "opcode" else int(getattr(instr, name))
        if not 0 <= value < (1 << width):
            raise IllegalInstruction(f"{type(instr).__name__}.{name} = {value} does not fit in {width} bits")
        word |= value << lsb
    return word


def _reserved_mask(opcode) -> int:
    used = 0
    for _, lsb, width in FIELDS[opcode]:
        used |= ((1 << width) - 1) << lsb
    return ((1 << INSTRUCTION_BITS) - 1) & ~used


def decode(word: int):
    """Decode a 128-bit word; raises IllegalInstruction exactly when the hardware reports ILLEGAL_INSTRUCTION."""
    word = int(word)
    if not 0 <= word < (1 << INSTRUCTION_BITS):
        raise IllegalInstruction(f"instruction word {word:#x} is wider than {INSTRUCTION_BITS} bits")
    op = word & 0x7
    if op not in _CLASSES:
        raise IllegalInstruction(f"unknown opcode {op}")
    opcode = Opcode(op)
    if word & _reserved_mask(opcode):
        raise IllegalInstruction(f"{opcode.name}: reserved bits set ({word & _reserved_mask(opcode):#x})")
    values = {}
    for name, lsb, width in FIELDS[opcode]:
        if name != "opcode":
            values[name] = (word >> lsb) & ((1 << width) - 1)
    for name in FLAG_NAMES:
        values[name] = bool(values[name])
    if opcode == Opcode.LOAD:
        if values["buffer"] not in Buffer._value2member_map_:
            raise IllegalInstruction(f"LOAD: buffer {values['buffer']} does not exist")
        values["buffer"] = Buffer(values["buffer"])
    if opcode == Opcode.SYNC:
        if values["unit"] not in Unit._value2member_map_:
            raise IllegalInstruction(f"SYNC: unit {values['unit']} does not exist")
        values["unit"] = Unit(values["unit"])
    for name in ("accumulate", "raw"):
        if name in values:
            values[name] = bool(values[name])
    instr = _CLASSES[opcode](**values)
    _check_flags(instr)
    return instr


def to_bytes(program) -> bytes:
    """Instructions (objects or encoded ints) as the little-endian byte image the accelerator fetches."""
    return b"".join((encode(i) if not isinstance(i, int) else i).to_bytes(INSTRUCTION_BYTES, "little")
                    for i in program)


def from_bytes(blob: bytes) -> list[int]:
    if len(blob) % INSTRUCTION_BYTES:
        raise ValueError(f"program image length {len(blob)} is not a multiple of {INSTRUCTION_BYTES} bytes")
    return [int.from_bytes(blob[i:i + INSTRUCTION_BYTES], "little") for i in range(0, len(blob), INSTRUCTION_BYTES)]


# ---- Assembly text: one instruction per line, `OPCODE key=value ... [flag ...]`, '#' comments.
_MNEMONIC = {Opcode.LOAD: "LOAD", Opcode.MATMUL: "MATMUL", Opcode.STORE: "STORE", Opcode.SYNC: "SYNC",
             Opcode.HALT: "HALT"}
_FLAG_WORDS = {"pop_prev": "pop_prev", "pop_next": "pop_next", "push_prev": "push_prev", "push_next": "push_next",
               "accumulate": "accumulate", "raw": "raw"}


def disassemble(program, *, with_index=True) -> str:
    """Readable listing; ``assemble(disassemble(p))`` gives ``p`` back."""
    lines = []
    for index, item in enumerate(program):
        instr = decode(item) if isinstance(item, int) else item
        parts = [_MNEMONIC[instr.opcode]]
        for field in dataclasses.fields(instr):
            name = field.name
            if name in FLAG_NAMES or name in ("accumulate", "raw"):
                continue
            value = getattr(instr, name)
            parts.append(f"{name}={value.name if isinstance(value, IntEnum) else value}")
        for name in ("accumulate", "raw", *FLAG_NAMES):
            if getattr(instr, name, False):
                parts.append(name)
        text = " ".join(parts)
        lines.append(f"{index:5d}: {text}" if with_index else text)
    return "\n".join(lines)


def operands(cls) -> tuple[str, ...]:
    """The operand fields of an instruction class, in encoding order: every field that is not a flag."""
    return tuple(f.name for f in dataclasses.fields(cls) if f.name not in FLAG_NAMES and f.name not in _FLAG_WORDS)


def assemble(text: str, *, defaults: bool = False) -> list:
    """Parse assembly text (as written by :func:`disassemble`, index prefixes optional) into instructions.

    Every instruction names each of its operands once (``LOAD buffer= buf_addr= y_size= x_size= stride=
    dram_addr=``, ``MATMUL act_addr= wgt_addr= acc_addr= count= k_rows=``, ``STORE acc_addr= count= param_addr=
    n_cols= stride= dram_addr=``, ``SYNC unit=``); the flags (``accumulate``, ``raw``, token flags) are optional. A
    missing or repeated operand is an :class:`AssemblyError` naming the line, like any other mistake.

    ``defaults=True`` accepts the terse form instead, where an omitted operand takes its instruction class's
    default (0 for addresses and strides, 1 for sizes and counts, ``ACT``, ``COMPUTE``), as the constructors
    ``Load(...)``, ``Matmul(...)`` do; the tests' short programs use it.
    """
    by_name = {v: k for k, v in _MNEMONIC.items()}
    program = []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = re.sub(r"#.*", "", line).strip()
        line = re.sub(r"^\d+:\s*", "", line)
        if not line:
            continue
        words = line.split()
        mnemonic = words[0].upper()
        if mnemonic not in by_name:
            raise AssemblyError(f"line {lineno}: unknown mnemonic {words[0]!r} (known: {', '.join(by_name)})")
        cls = _CLASSES[by_name[mnemonic]]
        known = {f.name for f in dataclasses.fields(cls)}
        values = {}
        for word in words[1:]:
            if "=" in word:
                key, value = word.split("=", 1)
                if key not in known:
                    raise AssemblyError(f"line {lineno}: {mnemonic} has no field {key!r}")
                if key in values:
                    raise AssemblyError(f"line {lineno}: {mnemonic} gives {key} twice")
                if key == "buffer":
                    try:
                        values[key] = Buffer[value.upper()] if not value.isdigit() else Buffer(int(value))
                    except (KeyError, ValueError):
                        raise AssemblyError(f"line {lineno}: unknown buffer {value!r}") from None
                elif key == "unit":
                    try:
                        values[key] = Unit[value.upper()] if not value.isdigit() else Unit(int(value))
                    except (KeyError, ValueError):
                        raise AssemblyError(f"line {lineno}: unknown unit {value!r}") from None
                else:
                    try:
                        values[key] = int(value, 0)
                    except ValueError:
                        raise AssemblyError(f"line {lineno}: {key}={value!r} is not an integer") from None
            elif word in known:
                values[word] = True
            else:
                raise AssemblyError(f"line {lineno}: {mnemonic} has no flag {word!r}")
        instr = cls(**values)
        try:
            encode(instr)
        except IllegalInstruction as exc:
            raise AssemblyError(f"line {lineno}: {exc}") from None
        missing = [name for name in operands(cls) if name not in values]
        if missing and not defaults:
            raise AssemblyError(f"line {lineno}: {mnemonic} is missing operand{'s' if len(missing) > 1 else ''} "
                                f"{', '.join(missing)}; write every operand: {mnemonic} "
                                + " ".join(f"{name}=" for name in operands(cls)))
        program.append(instr)
    return program


def param_entry_bytes(cols: int) -> int:
    """Bytes of one PARAM entry: bias and multiplier int32 per column, shift int8 per column, zp/min/max."""
    return 9 * cols + 3


@dataclass(frozen=True)
class HardwareConfig:
    """What a program may address: the sizes the hardware reports in its configuration registers."""
    rows: int = 8
    cols: int = 8
    act_depth: int = 2048
    wgt_depth: int = 2048
    acc_depth: int = 512
    param_depth: int = 64
    bus_bytes: int = 8

    def row_bytes(self, buffer: Buffer) -> int:
        """Bytes in one entry of ``buffer``."""
        return {Buffer.ACT: self.rows, Buffer.WGT: self.cols, Buffer.PARAM: param_entry_bytes(self.cols)}[Buffer(buffer)]

    def depth(self, buffer: Buffer) -> int:
        return {Buffer.ACT: self.act_depth, Buffer.WGT: self.wgt_depth, Buffer.PARAM: self.param_depth}[Buffer(buffer)]

    def check(self, instr) -> str | None:
        """Why ``instr`` is OUT_OF_RANGE on this hardware, or None. The hardware decoder applies the same rules."""
        if isinstance(instr, Load):
            if instr.y_size == 0 or instr.x_size == 0:
                return "LOAD with zero rows or zero bytes per row"
            if instr.x_size > self.row_bytes(instr.buffer):
                return f"LOAD x_size {instr.x_size} exceeds the {self.row_bytes(instr.buffer)}-byte {instr.buffer.name} entry"
            if instr.buf_addr + instr.y_size > self.depth(instr.buffer):
                return f"LOAD rows {instr.buf_addr}..{instr.buf_addr + instr.y_size - 1} outside {instr.buffer.name} (depth {self.depth(instr.buffer)})"
        elif isinstance(instr, Matmul):
            if instr.count == 0 or not 1 <= instr.k_rows <= self.rows:
                return f"MATMUL count {instr.count} / k_rows {instr.k_rows} (k_rows must be 1..{self.rows})"
            if instr.act_addr + instr.count > self.act_depth:
                return f"MATMUL activation rows beyond the scratchpad (depth {self.act_depth})"
            if instr.wgt_addr + instr.k_rows > self.wgt_depth:
                return f"MATMUL weight rows beyond the weight buffer (depth {self.wgt_depth})"
            if instr.acc_addr + instr.count > self.acc_depth:
                return f"MATMUL accumulator rows beyond the accumulator memory (depth {self.acc_depth})"
        elif isinstance(instr, Store):
            if instr.count == 0 or not 1 <= instr.n_cols <= self.cols:
                return f"STORE count {instr.count} / n_cols {instr.n_cols} (n_cols must be 1..{self.cols})"
            if instr.acc_addr + instr.count > self.acc_depth:
                return f"STORE accumulator rows beyond the accumulator memory (depth {self.acc_depth})"
            if instr.param_addr >= self.param_depth:
                return f"STORE param_addr {instr.param_addr} beyond the parameter buffer (depth {self.param_depth})"
        return None
