"""Instruction-level golden simulator of the accelerator (pure Python + NumPy).

:class:`IsaSimulator` executes a program from a DRAM image exactly as ``docs/isa.md`` specifies, one instruction
at a time in program order. For a well-formed program (every buffer entry protected by tokens) the concurrent
hardware leaves the same DRAM image, so RTL testbenches compare the final DRAM byte for byte with this model.

Per instruction ``i`` (fetched from ``(prog_addr & ~0xF) + 16*i``, 32-bit addresses) the simulator checks, in the
dispatcher's order: PROGRAM_OVERRUN (``i == prog_len``), BUS_ERROR_FETCH (any of the 16 bytes in a bus-error range
or outside the DRAM image), ILLEGAL_INSTRUCTION (:func:`hw.isa.decode`), OUT_OF_RANGE
(:meth:`hw.isa.HardwareConfig.check`), TOKEN_DEADLOCK (a pop of an empty queue, counted in program order) and
TOKEN_OVERFLOW (a push above 255 after the instruction's pops). A faulting instruction and all later ones have no
effect. LOAD and STORE run to completion and then report BUS_ERROR_LOAD / BUS_ERROR_STORE if any byte they touched
lies in a bus-error range or outside the DRAM image: failed reads return zeros, failed writes are dropped.

The epilogue uses :func:`sim.arith.requantize` with the full int8 range and then clamps as the hardware does,
``min(max(y, act_min), act_max)``: a PARAM entry with ``act_min > act_max`` gives ``act_max`` everywhere. The shift
byte is read as the epilogue's 6-bit two's-complement field (``hw/epilogue.py``), so bytes outside -32..31 alias;
shift -32 is a rounding right shift by 32 of an SRDHM result, which is 0 because |SRDHM| < 2**31.

``check_races=True`` additionally checks that the program is well formed: it builds the happens-before order of
the concurrent units (each unit in order, plus one edge from each token push to the pop that takes it) with vector
clocks, and reports every buffer entry or DRAM byte that two units touch (at least one writing) without an order
between them, and every instruction fetched after a STORE overwrote it. The simulated result does not depend on it.
``interleave=rng`` runs the dispatched instructions in a random order the concurrent units could take instead of
program order: a well-formed program gives the same DRAM image in every such order, a racy one usually does not.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from hw.isa import (INSTRUCTION_BYTES, TOKEN_MAX, Buffer, ErrorCode, HardwareConfig, Halt, IllegalInstruction,
                    Load, Matmul, Store, Sync, Unit, decode, disassemble, encode)

from .arith import gemm_int32, requantize, wrap_int32

__all__ = ["IsaSimulator", "IsaResult", "IsaStats", "QUEUES", "pack_param_entry", "unpack_param_entry"]

#: The four token queues, as (producer unit, consumer unit).
QUEUES = ((Unit.LOAD, Unit.COMPUTE), (Unit.COMPUTE, Unit.LOAD), (Unit.COMPUTE, Unit.STORE),
          (Unit.STORE, Unit.COMPUTE))

_ADDRESS_MASK = (1 << 32) - 1
_BUS_ERROR_KINDS = ("slverr", "decerr")
_MAX_HAZARDS = 50   # reported hazards per run; more are counted only


def _queue_name(queue) -> str:
    return f"{Unit(queue[0]).name}->{Unit(queue[1]).name}"


def _flag_queue(unit: Unit, flag: str):
    """The queue that ``flag`` of an instruction executed by ``unit`` pops or pushes."""
    other = Unit(unit - 1 if flag.endswith("prev") else unit + 1)
    return (other, unit) if flag.startswith("pop") else (unit, other)


# ---- PARAM entries ----------------------------------------------------------------------------------------------

def pack_param_entry(cols, bias, multiplier, shift, zero_point=0, act_min=-128, act_max=127) -> bytes:
    """One PARAM entry (``9*cols + 3`` bytes) as it lies in DRAM.

    Per-column values shorter than ``cols`` are zero-padded. Values are stored modulo their field width (int32,
    int8), as the hardware reads the bytes; callers that want range checks do them first.
    """
    def lane(values):
        values = np.atleast_1d(np.asarray(values, dtype=np.int64))
        if values.ndim != 1 or values.size > cols:
            raise ValueError(f"PARAM per-column values must be at most {cols} long, not shape {values.shape}")
        out = np.zeros(cols, dtype=np.int64)
        out[:values.size] = values
        return out
    tail = np.array([zero_point, act_min, act_max], dtype=np.int64)
    return (wrap_int32(lane(bias)).astype("<i4").tobytes() + wrap_int32(lane(multiplier)).astype("<i4").tobytes()
            + (lane(shift) & 0xFF).astype(np.uint8).tobytes() + (tail & 0xFF).astype(np.uint8).tobytes())


def unpack_param_entry(entry, cols) -> dict:
    """The fields of a PARAM entry: bias, multiplier (int32 x cols), shift (int8 x cols), zero_point, act_min,
    act_max (Python ints)."""
    entry = np.asarray(entry, dtype=np.uint8)
    if entry.shape != (9 * cols + 3,):
        raise ValueError(f"A PARAM entry for {cols} columns has {9 * cols + 3} bytes, not shape {entry.shape}")
    tail = entry[9 * cols:].view(np.int8)
    return {"bias": entry[:4 * cols].view("<i4").astype(np.int32),
            "multiplier": entry[4 * cols:8 * cols].view("<i4").astype(np.int32),
            "shift": entry[8 * cols:9 * cols].view(np.int8).copy(),
            "zero_point": int(tail[0]), "act_min": int(tail[1]), "act_max": int(tail[2])}


def _epilogue(acc, p, raw):
    """STORE epilogue on (count, cols) int32 accumulators with the fields of a PARAM entry."""
    s = wrap_int32(acc.astype(np.int64) + p["bias"].astype(np.int64))
    if raw:
        return s
    shift = ((p["shift"].astype(np.int64) + 32) & 63) - 32         # the epilogue's signed(6) field
    multiplier = p["multiplier"].astype(np.int64)
    # RDBPOT(SRDHM(s, m), 32) == 0 == SRDHM(s, 0): shift -32 behaves as multiplier 0, shift 0.
    by_32 = shift == -32
    multiplier = np.where(by_32, 0, multiplier)
    shift = np.where(by_32, 0, shift)
    y = requantize(s, multiplier, shift, p["zero_point"], -128, 127).astype(np.int64)
    return np.minimum(np.maximum(y, p["act_min"]), p["act_max"]).astype(np.int8)


# ---- Results ----------------------------------------------------------------------------------------------------

@dataclass
class IsaStats:
    """What a run did; ``instructions`` and ``vectors`` match the INSTRUCTIONS and VECTORS registers."""
    opcodes: dict = field(default_factory=lambda: {n: 0 for n in ("LOAD", "MATMUL", "STORE", "SYNC", "HALT")})
    #: Instructions executed by each unit (SYNCs included).
    units: dict = field(default_factory=lambda: {u.name: 0 for u in Unit})
    #: Activation vectors streamed through the array (sum of MATMUL counts).
    vectors: int = 0
    #: MAC slots the array spent: ``vectors * rows * cols``.
    mac_slots: int = 0
    #: MACs with a real weight row: sum of ``count * k_rows * cols`` (padding columns cannot be known).
    macs: int = 0
    load_bytes: int = 0
    store_bytes: int = 0


@dataclass(eq=False)
class IsaResult:
    """Outcome of :meth:`IsaSimulator.run`.

    ``instructions`` counts instructions dispatched to a unit (the INSTRUCTIONS register: HALT and the faulting
    instruction are not counted; a LOAD/STORE that saw a bus error is). ``tokens`` holds the tokens left on each
    queue, ``buffers`` the final on-chip state (``ACT``, ``WGT``, ``PARAM`` as bytes, ``ACC``), ``hazards`` what
    ``check_races`` found.
    """
    error: ErrorCode
    error_index: int | None
    message: str
    instructions: int
    stats: IsaStats
    tokens: dict
    buffers: dict
    trace: list = field(default_factory=list)
    hazards: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error == ErrorCode.NONE

    def raise_on_error(self) -> IsaResult:
        """Return self if the program halted cleanly, else raise RuntimeError with the summary."""
        if not self.ok:
            raise RuntimeError(self.summary())
        return self

    def summary(self) -> str:
        if self.ok:
            lines = [f"halted without error after {self.instructions} instructions"]
        else:
            lines = [f"error {self.error.name} at instruction {self.error_index}: {self.message}",
                     f"{self.instructions} instructions dispatched before it"]
        s = self.stats
        lines.append("opcodes: " + ", ".join(f"{k} {v}" for k, v in s.opcodes.items()))
        lines.append("units: " + ", ".join(f"{k} {v}" for k, v in s.units.items()))
        lines.append(f"vectors {s.vectors}, MACs {s.macs} of {s.mac_slots} slots, "
                     f"{s.load_bytes} bytes loaded, {s.store_bytes} bytes stored")
        lines.append("tokens left: " + ", ".join(f"{k} {v}" for k, v in self.tokens.items()))
        if self.hazards:
            lines.append(f"{len(self.hazards)} hazard(s): " + self.hazards[0])
        return "\n".join(lines)

    def __repr__(self):
        where = "" if self.ok else f" at {self.error_index}"
        return (f"IsaResult({self.error.name}{where}, instructions={self.instructions}, "
                f"vectors={self.stats.vectors}, hazards={len(self.hazards)})")


class _Fault(Exception):
    def __init__(self, code: ErrorCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


# ---- Race checking ----------------------------------------------------------------------------------------------

class _EntryTracker:
    """Last writer and the readers since, per entry of one buffer, for the happens-before check."""

    def __init__(self, name: str, depth: int):
        self.name = name
        self.w_unit = np.full(depth, -1, dtype=np.int64)
        self.w_index = np.full(depth, -1, dtype=np.int64)
        self.r_index = np.full((3, depth), -1, dtype=np.int64)   # per reading unit, since the last write

    def _ordered_after_write(self, unit, clock, lo, hi):
        wu, wi = self.w_unit[lo:hi], self.w_index[lo:hi]
        bad = (wu >= 0) & (wu != unit) & (wi > clock[np.maximum(wu, 0)])
        return bad

    def access(self, report, index, unit, clock, lo, hi, write):
        bad = self._ordered_after_write(unit, clock, lo, hi)
        if bad.any():
            e = int(np.argmax(bad))
            kind = "write-after-write" if write else "read-after-write"
            report(f"{kind} on {self.name}[{lo + e}]: instruction {index} ({Unit(unit).name}) is not ordered after "
                   f"instruction {int(self.w_index[lo + e])} ({Unit(int(self.w_unit[lo + e])).name}) by tokens")
        if write:
            for v in range(3):
                if v == unit:
                    continue
                late = self.r_index[v, lo:hi] > clock[v]
                if late.any():
                    e = int(np.argmax(late))
                    report(f"write-after-read on {self.name}[{lo + e}]: instruction {index} ({Unit(unit).name}) "
                           f"is not ordered after instruction {int(self.r_index[v, lo + e])} ({Unit(v).name}) "
                           "by tokens")
            self.w_unit[lo:hi] = unit
            self.w_index[lo:hi] = index
            self.r_index[:, lo:hi] = -1
        else:
            self.r_index[unit, lo:hi] = index


#: The encodings of the token-free SYNCs (unit 0, 1, 2): the low 64 bits of the word; the high 64 bits are zero.
_SYNC_LOW_WORDS = {unit: encode(Sync(unit=unit)) for unit in Unit}
assert all(word < (1 << 64) for word in _SYNC_LOW_WORDS.values())
#: Instructions a bulk SYNC scan reads at a time.
_SYNC_CHUNK = 1 << 16


class _ByteMap:
    """An int64 per DRAM byte (initially -1), indexed by address arrays: a dense array for images up to
    ``DENSE_BYTES``, 64 KiB pages allocated on first write beyond that (a program placed at 512 MiB would
    otherwise cost two 4 GiB arrays)."""

    DENSE_BYTES = 1 << 26
    _PAGE_BITS = 16

    def __init__(self, size: int):
        self._dense = np.full(size, -1, dtype=np.int64) if size <= self.DENSE_BYTES else None
        self._pages: dict[int, np.ndarray] = {}

    def __getitem__(self, addrs):
        addrs = np.asarray(addrs, dtype=np.int64)
        if self._dense is not None:
            return self._dense[addrs]
        out = np.full(addrs.shape, -1, dtype=np.int64)
        page_of = addrs >> self._PAGE_BITS
        for page in np.unique(page_of).tolist():
            if page in self._pages:
                hit = page_of == page
                out[hit] = self._pages[page][addrs[hit] & ((1 << self._PAGE_BITS) - 1)]
        return out

    def __setitem__(self, addrs, value):
        addrs = np.asarray(addrs, dtype=np.int64)
        if self._dense is not None:
            self._dense[addrs] = value
            return
        page_of = addrs >> self._PAGE_BITS
        for page in np.unique(page_of).tolist():
            hit = page_of == page
            if page not in self._pages:
                if value < 0:
                    continue
                self._pages[page] = np.full(1 << self._PAGE_BITS, -1, dtype=np.int64)
            self._pages[page][addrs[hit] & ((1 << self._PAGE_BITS) - 1)] = value

    def first_set(self, lo: int, hi: int) -> int | None:
        """The first address in ``[lo, hi)`` whose value is not -1, or None."""
        if self._dense is not None:
            hit = np.flatnonzero(self._dense[lo:hi] >= 0)
            return lo + int(hit[0]) if hit.size else None
        for page in sorted(p for p in self._pages if lo >> self._PAGE_BITS <= p <= (hi - 1) >> self._PAGE_BITS):
            base = page << self._PAGE_BITS
            part = self._pages[page][max(lo - base, 0):min(hi - base, 1 << self._PAGE_BITS)]
            hit = np.flatnonzero(part >= 0)
            if hit.size:
                return max(lo, base) + int(hit[0])
        return None


class _RaceChecker:
    """Vector clocks of the three units; token pushes carry the pusher's clock to the pop that takes them.

    A MATMUL pushes ``push_prev`` once its operands are read, before its sums land; only LOAD receives that token
    and LOAD never touches the accumulator, so treating the push as full completion loses nothing.
    """

    def __init__(self, config: HardwareConfig, dram_size: int):
        self.clock = [np.full(3, -1, dtype=np.int64) for _ in Unit]
        self.fifo = {q: deque() for q in QUEUES}
        self.buffers = {"ACT": _EntryTracker("ACT", config.act_depth), "WGT": _EntryTracker("WGT", config.wgt_depth),
                        "PARAM": _EntryTracker("PARAM", config.param_depth),
                        "ACC": _EntryTracker("ACC", config.acc_depth)}
        self.dram_store = _ByteMap(dram_size)   # last STORE writing each byte
        self.dram_load = _ByteMap(dram_size)    # last LOAD reading each byte since
        self.hazards = []
        self.count = 0

    def report(self, text):
        self.count += 1
        if len(self.hazards) < _MAX_HAZARDS:
            self.hazards.append(text)

    def fetch(self, index, addrs):
        writers = self.dram_store[addrs]
        if writers.max() >= 0:
            self.report(f"instruction {index} was overwritten by STORE {int(writers.max())} before it was "
                        "fetched; the prefetching fetch unit may read either version")

    def fetch_run(self, index, start, count):
        """:meth:`fetch` for the ``count`` instructions from ``index`` at byte ``start`` (a run of SYNCs)."""
        first = self.dram_store.first_set(start, start + INSTRUCTION_BYTES * count)
        if first is not None:
            self.fetch(index + (first - start) // INSTRUCTION_BYTES, np.array([first]))

    def sync_run(self, units, last_index):
        """A run of token-free SYNCs: each unit's own clock moves to its last SYNC of the run (``last_index``)."""
        for unit, last in zip(units, last_index):
            if last >= 0:
                self.clock[unit][unit] = last

    def pops(self, unit, queues):
        for q in queues:
            np.maximum(self.clock[unit], self.fifo[q].popleft(), out=self.clock[unit])

    def pushes(self, unit, index, queues):
        self.clock[unit][unit] = index
        for q in queues:
            self.fifo[q].append(self.clock[unit].copy())

    def buffer(self, index, unit, name, lo, hi, write):
        self.buffers[name].access(self.report, index, unit, self.clock[unit], lo, hi, write)

    def dram_read(self, index, addrs):
        writer = self.dram_store[addrs]
        late = writer > self.clock[Unit.LOAD][Unit.STORE]
        if late.any():
            e = int(np.argmax(late))
            self.report(f"read-after-write on DRAM byte {int(addrs[e]):#x}: LOAD {index} is not ordered after "
                        f"STORE {int(writer[e])} by tokens")
        self.dram_load[addrs] = index

    def dram_write(self, index, addrs):
        reader = self.dram_load[addrs]
        late = reader > self.clock[Unit.STORE][Unit.LOAD]
        if late.any():
            e = int(np.argmax(late))
            self.report(f"write-after-read on DRAM byte {int(addrs[e]):#x}: STORE {index} is not ordered after "
                        f"LOAD {int(reader[e])} by tokens")
        self.dram_store[addrs] = index
        self.dram_load[addrs] = -1


# ---- The simulator ----------------------------------------------------------------------------------------------

def parse_bus_errors(bus_errors) -> list[tuple[int, int, str]]:
    """Validate ``bus_errors`` - (start, end_exclusive, "slverr"|"decerr") byte ranges - for every backend."""
    ranges = []
    for item in bus_errors or ():
        if not isinstance(item, (tuple, list)) or len(item) != 3:
            raise ValueError(f"bus_errors items must be (start, end_exclusive, kind) triples, not {item!r}")
        start, end, kind = item
        start = _check_int("bus error start", start, 0, 1 << 40)
        end = _check_int("bus error end", end, start, 1 << 40)
        if kind not in _BUS_ERROR_KINDS:
            raise ValueError(f"bus error kind must be one of {_BUS_ERROR_KINDS}, not {kind!r}")
        ranges.append((start, end, kind))
    return ranges


def _check_int(name, value, lo, hi):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
        raise ValueError(f"{name} must be an integer in [{lo}, {hi}], not {value!r}")
    return int(value)


class IsaSimulator:
    """Golden model of the whole accelerator at instruction level.

    Parameters
    ----------
    config : hw.isa.HardwareConfig
        Array size and buffer depths (what the configuration registers report).

    Use :meth:`run` once per program; every run starts from zeroed buffers and empty token queues, like START.
    """

    def __init__(self, config: HardwareConfig):
        if not isinstance(config, HardwareConfig):
            raise TypeError(f"config must be a hw.isa.HardwareConfig, not {type(config).__name__}")
        for f in dataclasses.fields(HardwareConfig):
            value = getattr(config, f.name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"HardwareConfig.{f.name} must be a positive integer, not {value!r}")
        self._config = config

    @property
    def config(self) -> HardwareConfig:
        return self._config

    def __repr__(self):
        return f"IsaSimulator({self._config!r})"

    # -- memory access helpers (self._dram, self._bad are set per run)

    def _addresses(self, base, rows, row_bytes, stride):
        """(rows, row_bytes) int64 byte addresses of a 2-D transfer, wrapping at 2**32 like the address bus."""
        starts = base + np.arange(rows, dtype=np.int64) * stride
        return (starts[:, None] + np.arange(row_bytes, dtype=np.int64)[None, :]) & _ADDRESS_MASK

    def _failing(self, addrs):
        """Which of ``addrs`` fail on the bus: outside the DRAM image or inside a bus-error range."""
        inside = addrs < self._dram.size
        fail = ~inside
        if self._bad is not None and self._dram.size:
            fail |= self._bad[np.where(inside, addrs, 0)] & inside
        return fail

    def _read(self, addrs):
        fail = self._failing(addrs)
        if fail.all():
            return np.zeros(addrs.shape, dtype=np.uint8), fail
        data = np.where(fail, 0, self._dram[np.where(fail, 0, addrs)]).astype(np.uint8)
        return data, fail

    def _write(self, addrs, data):
        """Write bytes in order (a later byte to the same address wins); returns the failing mask."""
        addrs, data = addrs.ravel(), data.ravel()
        fail = self._failing(addrs)
        ok = ~fail
        addrs, data = addrs[ok], data[ok]
        if addrs.size:
            _, last = np.unique(addrs[::-1], return_index=True)
            keep = addrs.size - 1 - last
            self._dram[addrs[keep]] = data[keep]
        return fail

    # -- the run

    def run(self, dram, *, prog_addr, prog_len, bus_errors=(), trace=False, check_races=False,
            interleave=None) -> IsaResult:
        """Execute the program at ``prog_addr`` (at most ``prog_len`` instructions) on ``dram``, in place.

        Parameters
        ----------
        dram : numpy.ndarray
            Writable 1-D uint8 array: the DRAM image, byte address = index. Accesses beyond it fail like DECERR.
        prog_addr, prog_len : int
            The PROG_ADDR and PROG_LEN registers (32-bit; the low 4 bits of ``prog_addr`` are ignored).
        bus_errors : sequence of (start, end, kind)
            Byte ranges ``[start, end)`` whose accesses answer ``kind`` ("slverr" or "decerr"): reads give zeros,
            writes are dropped, and the instruction reports a bus error.
        trace : bool
            Record one line per instruction: its index, disassembly and effect.
        check_races : bool
            Also report accesses that the program's tokens leave unordered (see the module docstring).
        interleave : numpy.random.Generator, optional
            Execute the dispatched instructions in a random order that the concurrent units could take (each unit
            in program order, a pop only once its token was pushed) instead of program order; the dispatcher's
            checks still apply in program order. A well-formed program leaves the same DRAM image in every order.
            Not combinable with ``bus_errors``, whose precise semantics need program order.
        """
        if not isinstance(dram, np.ndarray) or dram.dtype != np.uint8 or dram.ndim != 1:
            what = f"{dram.dtype} array of shape {dram.shape}" if isinstance(dram, np.ndarray) else type(dram).__name__
            raise TypeError(f"dram must be a 1-D numpy uint8 array (the DRAM image), not a {what}")
        if not dram.flags.writeable:
            raise ValueError("dram must be writable: the simulator stores results into it in place (pass a copy)")
        prog_addr = _check_int("prog_addr", prog_addr, 0, _ADDRESS_MASK)
        prog_len = _check_int("prog_len", prog_len, 0, _ADDRESS_MASK)
        if interleave is not None:
            if not isinstance(interleave, np.random.Generator):
                raise TypeError(f"interleave must be a numpy.random.Generator or None, not {interleave!r}")
            if bus_errors:
                raise ValueError("interleave cannot be combined with bus_errors: run in program order instead")
        self._dram = dram
        self._bad = self._bus_error_mask(bus_errors, dram.size)
        deferred = [] if interleave is not None else None

        cfg = self._config
        self._act = np.zeros((cfg.act_depth, cfg.rows), dtype=np.int8)
        self._wgt = np.zeros((cfg.wgt_depth, cfg.cols), dtype=np.int8)
        self._param = np.zeros((cfg.param_depth, cfg.row_bytes(Buffer.PARAM)), dtype=np.uint8)
        self._acc = np.zeros((cfg.acc_depth, cfg.cols), dtype=np.int32)
        tokens = {q: 0 for q in QUEUES}
        stats = IsaStats()
        lines = []
        races = _RaceChecker(cfg, dram.size) if check_races else None
        base = prog_addr & ~0xF
        error, error_index, message = ErrorCode.NONE, None, ""
        dispatched = 0
        index = 0
        fast = not trace and deferred is None
        while True:
            instr = None
            if fast:
                run = self._sync_run(base, index, prog_len, stats, races)
                dispatched += run
                index += run
            try:
                instr = self._fetch_and_decode(base, index, prog_len, races)
                reason = cfg.check(instr)
                if reason is not None:
                    raise _Fault(ErrorCode.OUT_OF_RANGE, reason)
                if isinstance(instr, Halt):
                    stats.opcodes["HALT"] += 1
                    if trace:
                        lines.append(f"{index:5d}: HALT")
                    break
                unit, pops, pushes = self._take_tokens(instr, tokens)
                dispatched += 1
                stats.opcodes[type(instr).__name__.upper()] += 1
                stats.units[unit.name] += 1
                if deferred is not None:
                    deferred.append((index, instr, unit, pops, pushes))
                else:
                    bus_fault = self._perform(index, instr, unit, pops, pushes, tokens, stats, races, lines, trace)
                    if bus_fault is not None:
                        raise bus_fault
            except _Fault as fault:
                error, error_index, message = fault.code, index, fault.message
                if trace:
                    if fault.code in (ErrorCode.BUS_ERROR_LOAD, ErrorCode.BUS_ERROR_STORE):
                        lines.append(f"{index:5d}: ERROR {fault.code.name}: {fault.message}")
                    else:
                        text = disassemble([instr], with_index=False) if instr is not None else "-"
                        lines.append(f"{index:5d}: {text}  | ERROR {fault.code.name}: {fault.message}")
                break
            index += 1

        if deferred:
            dispatcher_lines, lines = lines, []
            self._interleave(deferred, interleave, stats, races, lines, trace)
            lines += dispatcher_lines
        result = IsaResult(error=error, error_index=error_index, message=message, instructions=dispatched,
                           stats=stats, tokens={_queue_name(q): n for q, n in tokens.items()},
                           buffers={"ACT": self._act, "WGT": self._wgt, "PARAM": self._param, "ACC": self._acc},
                           trace=lines)
        if races is not None:
            result.hazards = list(races.hazards)
            if races.count > len(races.hazards):
                result.hazards.append(f"... and {races.count - len(races.hazards)} more hazards")
        self._dram = self._bad = None
        return result

    @staticmethod
    def _bus_error_mask(bus_errors, size):
        ranges = parse_bus_errors(bus_errors)
        if not ranges:
            return None
        mask = np.zeros(size, dtype=bool)
        for start, end, _ in ranges:
            mask[min(start, size):min(end, size)] = True
        return mask

    def _sync_run(self, base, index, prog_len, stats, races) -> int:
        """Account, in bulk, the run of token-free SYNCs from instruction ``index`` (what the loop would do one by
        one: each is dispatched, counted, and changes nothing else); returns its length. The run ends before the
        first other word, PROG_LEN, a bus-error range or the end of the image. Padding of 2**24 SYNCs (a program
        reaching a high instruction index) then takes a second, not minutes."""
        total = 0
        size = self._dram.size
        while index < prog_len:
            start = base + INSTRUCTION_BYTES * index
            n = min(prog_len - index, _SYNC_CHUNK, max(0, (size - start) // INSTRUCTION_BYTES))
            if n <= 0 or start + INSTRUCTION_BYTES * n > _ADDRESS_MASK:
                break
            words = self._dram[start:start + INSTRUCTION_BYTES * n].view("<u8").reshape(n, 2)
            which = np.full(n, -1, dtype=np.int8)
            for unit, word in _SYNC_LOW_WORDS.items():
                which[words[:, 0] == word] = unit
            ok = (which >= 0) & (words[:, 1] == 0)
            if self._bad is not None:
                ok &= ~self._bad[start:start + INSTRUCTION_BYTES * n].reshape(n, INSTRUCTION_BYTES).any(axis=1)
            m = n if ok.all() else int(np.argmin(ok))
            if m == 0:
                break
            if races is not None:
                races.fetch_run(index, start, m)
            last = []
            for unit in Unit:
                mine = np.flatnonzero(which[:m] == unit)
                stats.units[unit.name] += mine.size
                last.append(index + int(mine[-1]) if mine.size else -1)
            if races is not None:
                races.sync_run(list(Unit), last)
            stats.opcodes["SYNC"] += m
            total += m
            index += m
            if m < n:
                break
        return total

    def _fetch_and_decode(self, base, index, prog_len, races):
        """Instruction ``index`` fetched and decoded, or a _Fault in the dispatcher's order."""
        if index >= prog_len:
            raise _Fault(ErrorCode.PROGRAM_OVERRUN, f"{prog_len} instructions fetched without a HALT")
        addrs = (base + INSTRUCTION_BYTES * index + np.arange(INSTRUCTION_BYTES, dtype=np.int64)) & _ADDRESS_MASK
        raw_bytes, fail = self._read(addrs)
        if fail.any():
            raise _Fault(ErrorCode.BUS_ERROR_FETCH, f"bus error fetching byte {int(addrs[np.argmax(fail)]):#x}")
        if races is not None:
            races.fetch(index, addrs)
        word = int.from_bytes(raw_bytes.tobytes(), "little")
        try:
            instr = decode(word)
        except IllegalInstruction as exc:
            raise _Fault(ErrorCode.ILLEGAL_INSTRUCTION, f"{word:#034x}: {exc}") from None
        return instr

    @staticmethod
    def _take_tokens(instr, tokens):
        """The dispatcher's program-order token balance: pops first, then pushes (never the same queue)."""
        unit = Unit(instr.unit) if isinstance(instr, Sync) else \
            {Load: Unit.LOAD, Matmul: Unit.COMPUTE, Store: Unit.STORE}[type(instr)]
        pops = [_flag_queue(unit, f) for f in ("pop_prev", "pop_next") if getattr(instr, f)]
        pushes = [_flag_queue(unit, f) for f in ("push_prev", "push_next") if getattr(instr, f)]
        for q in pops:
            if tokens[q] < 1:
                raise _Fault(ErrorCode.TOKEN_DEADLOCK,
                             f"pops {_queue_name(q)}, which no earlier instruction left a token on")
        for q in pushes:
            if tokens[q] + 1 > TOKEN_MAX:
                raise _Fault(ErrorCode.TOKEN_OVERFLOW,
                             f"pushes a token onto {_queue_name(q)}, which already holds {TOKEN_MAX}")
        for q in pops:
            tokens[q] -= 1
        for q in pushes:
            tokens[q] += 1
        return unit, pops, pushes

    def _perform(self, index, instr, unit, pops, pushes, tokens, stats, races, lines, trace):
        """Execute one instruction whose tokens are already accounted; returns a bus-error _Fault or None."""
        if races is not None:
            races.pops(unit, pops)
        effect, bus_fault = self._execute(instr, index, unit, stats, races)
        if races is not None:
            races.pushes(unit, index, pushes)
        if trace:
            changed = " ".join(f"{_queue_name(q)}={tokens[q]}" for q in (*pops, *pushes))
            lines.append(f"{index:5d}: {disassemble([instr], with_index=False)}  | {effect}"
                         + (f"  [tokens {changed}]" if changed else ""))
        return bus_fault

    def _interleave(self, deferred, rng, stats, races, lines, trace):
        """Run the dispatched instructions as three in-order units that wait for their tokens, picking at random
        which ready unit goes next."""
        queues = {u: deque() for u in Unit}
        for item in deferred:
            queues[item[2]].append(item)
        tokens = {q: 0 for q in QUEUES}
        while any(queues.values()):
            ready = [u for u in Unit if queues[u] and all(tokens[q] > 0 for q in queues[u][0][3])]
            assert ready, "the dispatcher's program-order token check rules out deadlock"
            index, instr, unit, pops, pushes = queues[ready[int(rng.integers(len(ready)))]].popleft()
            for q in pops:
                tokens[q] -= 1
            for q in pushes:
                tokens[q] += 1
            self._perform(index, instr, unit, pops, pushes, tokens, stats, races, lines, trace)

    def _execute(self, instr, index, unit, stats, races):
        """Carry out one dispatched instruction; returns (trace text, _Fault for a bus error or None)."""
        cfg = self._config
        if isinstance(instr, Load):
            buf = {Buffer.ACT: self._act, Buffer.WGT: self._wgt, Buffer.PARAM: self._param}[instr.buffer]
            addrs = self._addresses(instr.dram_addr, instr.y_size, instr.x_size, instr.stride)
            data, fail = self._read(addrs)
            lo, hi = instr.buf_addr, instr.buf_addr + instr.y_size
            buf[lo:hi] = 0
            buf[lo:hi, :instr.x_size] = data.view(buf.dtype)
            stats.load_bytes += data.size
            if races is not None:
                races.buffer(index, unit, instr.buffer.name, lo, hi, write=True)
                races.dram_read(index, addrs[~fail])
            effect = (f"{instr.buffer.name}[{lo}:{hi}] <- {instr.y_size}x{instr.x_size} bytes at "
                      f"{instr.dram_addr:#x} stride {instr.stride}")
            if fail.any():
                first = int(addrs[fail][0])
                return effect + " (bus error)", _Fault(ErrorCode.BUS_ERROR_LOAD, f"bus error reading byte {first:#x}")
            return effect, None
        if isinstance(instr, Matmul):
            act = self._act[instr.act_addr:instr.act_addr + instr.count, :instr.k_rows]
            wgt = self._wgt[instr.wgt_addr:instr.wgt_addr + instr.k_rows]
            sums = gemm_int32(act, wgt)
            lo, hi = instr.acc_addr, instr.acc_addr + instr.count
            if instr.accumulate:
                sums = wrap_int32(self._acc[lo:hi].astype(np.int64) + sums)
            if races is not None:
                races.buffer(index, unit, "ACT", instr.act_addr, instr.act_addr + instr.count, write=False)
                races.buffer(index, unit, "WGT", instr.wgt_addr, instr.wgt_addr + instr.k_rows, write=False)
                races.buffer(index, unit, "ACC", lo, hi, write=True)
            self._acc[lo:hi] = sums
            stats.vectors += instr.count
            stats.mac_slots += instr.count * cfg.rows * cfg.cols
            stats.macs += instr.count * instr.k_rows * cfg.cols
            return (f"ACC[{lo}:{hi}] {'+=' if instr.accumulate else '='} ACT[{instr.act_addr}:"
                    f"{instr.act_addr + instr.count}] x WGT[{instr.wgt_addr}:{instr.wgt_addr + instr.k_rows}]"), None
        if isinstance(instr, Store):
            lo, hi = instr.acc_addr, instr.acc_addr + instr.count
            params = unpack_param_entry(self._param[instr.param_addr], cfg.cols)
            out = _epilogue(self._acc[lo:hi], params, instr.raw)[:, :instr.n_cols]
            data = np.ascontiguousarray(out.astype("<i4") if instr.raw else out).view(np.uint8)
            addrs = self._addresses(instr.dram_addr, instr.count, data.shape[1], instr.stride)
            if races is not None:
                races.buffer(index, unit, "ACC", lo, hi, write=False)
                races.buffer(index, unit, "PARAM", instr.param_addr, instr.param_addr + 1, write=False)
            fail = self._write(addrs, data)
            if races is not None:
                races.dram_write(index, addrs.ravel()[~fail])
            stats.store_bytes += data.size
            effect = (f"{instr.count}x{instr.n_cols} {'int32' if instr.raw else 'int8'} from ACC[{lo}:{hi}] "
                      f"with PARAM[{instr.param_addr}] -> {instr.dram_addr:#x} stride {instr.stride}")
            if fail.any():
                first = int(addrs.ravel()[fail][0])
                return effect + " (bus error)", _Fault(ErrorCode.BUS_ERROR_STORE,
                                                       f"bus error writing byte {first:#x}")
            return effect, None
        return "tokens only", None
