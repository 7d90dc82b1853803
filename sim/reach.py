"""Programs that reach high instruction indices and long PROG_LEN counts (the netlist mutation tier's last stage).

The fuzz campaign's programs stay below a few thousand instructions, so a fault in a high bit of an instruction
index (the dispatcher's decode register, a unit's instruction register, the abort compare that drops what follows
a bus error) or of the fetch's instruction count shows only in programs of 2**18 to 2**26 instructions. These cases
get there cheaply: the instructions before a small kernel are token-free SYNCs (written as one NumPy array, and
accounted in bulk by the golden simulator, :meth:`sim.isa_sim.IsaSimulator.run`), and the RTL fetches them at one
instruction per 16 bytes of bus traffic (2**20 instructions: about 4 M cycles of the 2x2 on its 32-bit bus, 1.3 s
in Verilator).

Five kernels, each placed at a reach of ``2**bits``:

``late``
    A LOAD whose last row answers SLVERR at index ``f = 2**bits - 16`` (bits 4 .. bits-1 of ``f`` set), preceded
    by a LOAD -> MATMUL -> raw STORE chain whose rows must reach DRAM, and followed by a LOAD -> MATMUL -> STORE
    chain linked by tokens that the abort must drop: the faulting LOAD is slow (16 rows, one burst each), so the
    dispatcher has queued the chain before the error arrives. An index bit stuck at 0 (or flipped where it is set)
    in a unit makes an instruction after ``f`` look older than it: the unit keeps it, waits for the token of an
    aborted producer, and the accelerator never finishes (the watchdog); in the LOAD unit it moves ERROR_INDEX.
``early``
    The chain, then a second MATMUL over the same rows that waits for the chain's STORE (a STORE -> COMPUTE
    token) and its STORE, before a LOAD that faults at once at ``f = 2**(bits-1) + 8`` (bits 4 .. bits-2 of
    their indices clear): the error arrives while the first STORE writes its 16 rows and the second MATMUL and
    STORE wait for their tokens, so an index bit stuck at 1 there makes them look younger than ``f``: one is
    dropped, and its rows miss in DRAM or the other waits for its token forever (the watchdog). (An instruction
    that has started runs to completion whatever its index, so the kernel makes them wait.)
``store``
    The chain, then a raw STORE of its 16 rows whose last row's first word answers SLVERR, at ``f = 2**bits - 16``:
    BUS_ERROR_STORE at ``f`` once all its rows are written. A unit whose index register has a high bit stuck or
    flipped reports the fault at the wrong index (the STORE unit's ``fault_index`` is its instruction's index).
``store-slow``
    The same with the memory's write responses one cycle later, so the STORE is held for one cycle more: a
    fault that toggles an index bit every cycle the instruction is held (a flip-flop's D inverted under a
    condition on the held value) shows at one of the two parities.
``overrun``
    SYNCs only, PROG_LEN ``2**bits + 2**(bits-1) + 3``: PROGRAM_OVERRUN at that index. A fault in a high bit of
    the fetch's count of instructions still to request, or of PROG_LEN, moves the overrun.

:func:`check_reach` compares the golden simulator and the RTL: error code, ERROR_INDEX, INSTRUCTIONS (after a bus
error the RTL may count dispatched work that the abort drops: at least the golden count), VECTORS (likewise) and
every DRAM byte. The cycle model is not run (its per-instruction Python would take minutes here). These cases are
race-free by construction (every buffer entry and DRAM byte the kernel shares is ordered by tokens); the golden
run checks it (``check_races``, the race checker's DRAM maps are paged for such images).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from hw.isa import (INSTRUCTION_BYTES, Buffer, ErrorCode, HardwareConfig, Halt, Load, Matmul, Store, Sync, Unit,
                    encode)

__all__ = ["KINDS", "ReachCase", "ReachMismatch", "make_reach", "check_reach"]

KINDS = ("early", "late", "store", "store-slow", "overrun")
#: Where the kernels' data lie (the program starts at 64 KiB, above it).
_WGT_AT, _PARAM_AT, _ACT_AT, _BAD_AT, _OUT_AT = 0x1000, 0x1100, 0x1200, 0x4000, 0x8000
_PROG_AT = 1 << 16
_ROWS = 16


@dataclass
class ReachCase:
    """One reach program: ``pad`` token-free SYNCs (units cycling from a seeded start), then ``kernel``; what the
    golden simulator and the RTL run is :meth:`image` at ``prog_addr`` with ``prog_len``."""
    kind: str
    bits: int
    config: HardwareConfig
    pad: int
    kernel: list
    prog_len: int
    data: np.ndarray
    bus_errors: list = field(default_factory=list)
    prog_addr: int = _PROG_AT
    write_latency: int = 0

    @property
    def name(self) -> str:
        return f"reach {self.kind} 2**{self.bits} ({self.pad + len(self.kernel):,} instructions)"

    def image(self) -> np.ndarray:
        words = self.pad + len(self.kernel)
        room = max(words, self.prog_len) + 8       # the fetch prefetches a burst past the last word
        dram = np.zeros(self.prog_addr + INSTRUCTION_BYTES * room, dtype=np.uint8)
        dram[:self.data.size] = self.data
        code = dram[self.prog_addr:self.prog_addr + INSTRUCTION_BYTES * words].view("<u8").reshape(words, 2)
        syncs = np.array([encode(Sync(unit=u)) for u in Unit], dtype="<u8")
        code[:self.pad, 0] = syncs[np.arange(self.pad) % 3]
        for i, ins in enumerate(self.kernel):
            w = encode(ins)
            code[self.pad + i] = (w & ((1 << 64) - 1), w >> 64)
        return dram


def _chain(config: HardwareConfig, act_at: int, out_at: int, *, acc_addr: int = 0) -> list:
    """LOAD ACT (push) -> MATMUL over 16 rows (pop, push) -> raw STORE of the 16 rows (pop)."""
    x_act = config.row_bytes(Buffer.ACT)
    return [Load(buffer=Buffer.ACT, buf_addr=0, y_size=_ROWS, x_size=x_act, stride=x_act, dram_addr=act_at,
                 push_next=True),
            Matmul(act_addr=0, wgt_addr=0, acc_addr=acc_addr, count=_ROWS, k_rows=config.rows, pop_prev=True,
                   push_next=True),
            Store(acc_addr=acc_addr, count=_ROWS, param_addr=0, n_cols=config.cols, raw=True,
                  stride=4 * config.cols, dram_addr=out_at, pop_prev=True)]


def make_reach(kind: str, bits: int, config: HardwareConfig, seed: int = 1) -> ReachCase:
    """The ``kind`` kernel (see the module docstring) at a reach of ``2**bits`` instructions, data from ``seed``."""
    if kind not in KINDS:
        raise ValueError(f"reach kind {kind!r}: choose one of {', '.join(KINDS)}")
    if not 8 <= bits <= 28:
        raise ValueError(f"reach bits {bits}: choose 8 .. 28 (2**28 instructions are 4 GiB of code)")
    if config.acc_depth < _ROWS or config.act_depth < 2 * _ROWS or config.param_depth < 1:
        raise ValueError(f"reach cases need acc_depth >= {_ROWS} and act_depth >= {2 * _ROWS}: {config}")
    rng = np.random.default_rng([seed, bits, KINDS.index(kind)])
    data = rng.integers(0, 256, _PROG_AT, dtype=np.uint8)
    x_act, x_wgt, entry = (config.row_bytes(b) for b in (Buffer.ACT, Buffer.WGT, Buffer.PARAM))
    setup = [Load(buffer=Buffer.WGT, buf_addr=0, y_size=config.rows, x_size=x_wgt, stride=x_wgt, dram_addr=_WGT_AT),
             Load(buffer=Buffer.PARAM, buf_addr=0, y_size=1, x_size=entry, stride=entry, dram_addr=_PARAM_AT)]
    before = _chain(config, _ACT_AT, _OUT_AT)
    if kind == "overrun":
        prog_len = (1 << bits) + (1 << (bits - 1)) + 3
        return ReachCase(kind, bits, config, prog_len, [], prog_len, data)
    word = config.bus_bytes
    if kind == "late":
        # 16 rows a burst each (stride 64); only the last row's word answers SLVERR.
        fault = Load(buffer=Buffer.ACT, buf_addr=_ROWS, y_size=_ROWS, x_size=x_act, stride=64, dram_addr=_BAD_AT)
        bad = _BAD_AT + 64 * (_ROWS - 1)
        after = _chain(config, _ACT_AT + 0x100, _OUT_AT + 0x400, acc_addr=0)
        kernel = setup + before + [fault] + after + [Halt()]
        f = (1 << bits) - 16
    elif kind in ("store", "store-slow"):
        row = 4 * config.cols
        fault = Store(acc_addr=0, count=_ROWS, param_addr=0, n_cols=config.cols, raw=True, stride=row,
                      dram_addr=_BAD_AT)
        bad = _BAD_AT + row * (_ROWS - 1)
        kernel = setup + before + [fault, Halt()]
        f = (1 << bits) - 16
    else:
        # The chain's STORE hands a token back to a second MATMUL (over the same rows) and its STORE: both wait for
        # the first STORE's 16 rows while the LOAD unit's next instruction faults at once.
        before[-1] = replace(before[-1], push_prev=True)
        before += [Matmul(act_addr=0, wgt_addr=0, acc_addr=0, count=_ROWS, k_rows=config.rows, pop_next=True,
                          push_next=True),
                   Store(acc_addr=0, count=_ROWS, param_addr=0, n_cols=config.cols, raw=True,
                         stride=4 * config.cols, dram_addr=_OUT_AT + 0x400, pop_prev=True)]
        fault = Load(buffer=Buffer.ACT, buf_addr=_ROWS, y_size=1, x_size=x_act, stride=x_act, dram_addr=_BAD_AT)
        bad = _BAD_AT
        kernel = setup + before + [fault, Halt()]
        f = (1 << (bits - 1)) + 8
    pad = f - len(setup) - len(before)
    bus_errors = [(bad // word * word, bad // word * word + word, "slverr")]
    return ReachCase(kind, bits, config, pad, kernel, pad + len(kernel), data, bus_errors,
                     write_latency=int(kind == "store-slow"))


class ReachMismatch(AssertionError):
    """The RTL and the golden simulator differ on a reach case."""


def check_reach(case: ReachCase, rtl, *, max_cycles: int | None = None) -> dict:
    """Run ``case`` on the golden simulator and ``rtl`` (a :class:`~sim.verilator_backend.VerilatorAccelerator`);
    raise :class:`ReachMismatch` naming the differences (the RTL's watchdog raises its own ``SimulationTimeout``).
    Returns {error, error_index, cycles}."""
    from .isa_sim import IsaSimulator

    image = case.image()
    golden_dram = image.copy()
    golden = IsaSimulator(case.config).run(golden_dram, prog_addr=case.prog_addr, prog_len=case.prog_len,
                                           bus_errors=case.bus_errors, check_races=True)
    if golden.hazards:
        raise AssertionError(f"{case.name}: the reach kernel is racy: {golden.hazards[0]}")
    want = {"late": ErrorCode.BUS_ERROR_LOAD, "early": ErrorCode.BUS_ERROR_LOAD, "store": ErrorCode.BUS_ERROR_STORE,
            "store-slow": ErrorCode.BUS_ERROR_STORE,
            "overrun": ErrorCode.PROGRAM_OVERRUN}[case.kind]
    if golden.error != want:
        raise AssertionError(f"{case.name}: the golden simulator ends in {golden.summary()}, not {want.name}")
    rtl_dram = image
    del image
    cycles = max_cycles or (INSTRUCTION_BYTES // case.config.bus_bytes + 1) * case.prog_len + 100_000
    result = rtl.run(rtl_dram, case.prog_addr, case.prog_len, bus_errors=case.bus_errors, max_cycles=cycles,
                     write_latency=case.write_latency)
    problems = []
    if result.error != golden.error:
        try:
            got_error = ErrorCode(result.error).name
        except ValueError:
            got_error = f"code {result.error}"
        problems.append(f"error {got_error} on the RTL, {golden.error.name} on the golden simulator")
    elif result.error_index != golden.error_index:
        problems.append(f"ERROR_INDEX {result.error_index:,} on the RTL, {golden.error_index:,} on the golden "
                        "simulator")
    late = golden.error in (ErrorCode.BUS_ERROR_LOAD, ErrorCode.BUS_ERROR_STORE)
    for name, want_n in (("instructions", golden.instructions), ("vectors", golden.stats.vectors)):
        got = result.counters[name]
        if got < want_n or (got != want_n and not late):
            problems.append(f"{name.upper()} {got:,} on the RTL, {want_n:,} on the golden simulator")
    if result.registers.get("prog_len", case.prog_len) != case.prog_len:
        problems.append(f"PROG_LEN reads back {result.registers['prog_len']:#x}, written {case.prog_len:#x}")
    where = np.flatnonzero(rtl_dram[:_PROG_AT] != golden_dram[:_PROG_AT])
    if where.size:
        a = int(where[0])
        problems.append(f"{where.size} DRAM byte(s) differ; first at {a:#x}: RTL {int(rtl_dram[a]):#04x}, golden "
                        f"{int(golden_dram[a]):#04x}")
    elif not np.array_equal(rtl_dram, golden_dram):
        problems.append("the program image differs after the run (a STORE wrote into the code)")
    if problems:
        raise ReachMismatch(f"{case.name}: " + "; ".join(problems))
    return {"error": golden.error.name, "error_index": golden.error_index, "cycles": result.counters["cycles"]}
