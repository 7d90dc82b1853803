"""Complete accelerator programs for a quantized GEMM, with the DRAM image they run on.

:func:`gemm_program` builds the instructions and DRAM image computing ``C = quantized_gemm(A, W, ...)``
(:func:`sim.arith.quantized_gemm`); the result knows where C lands and what it must be, so a test runs the image on
the golden simulator (:class:`sim.isa_sim.IsaSimulator`) or on the RTL and compares.

Tiling
------
C is cut into *chunks* of ``m_chunk`` rows by ``n_group`` N tiles of ``cols`` columns (N groups outer, M chunks
inner); a chunk's ``n_group * m_chunk`` accumulator rows stay in the accumulator memory until its STOREs. A chunk
is computed in *steps*, each covering ``k_group`` consecutive K tiles of ``k_tile`` rows (``rows`` unless the weight
buffer is shallower). For every K tile a step loads the activation tile ``A[m0:m1, k0:k1]`` once (``m1-m0`` ACT
entries, stride K) and the weight tile ``W[k0:k1, n0:n1]`` of each N tile of the group (``k1-k0`` WGT entries,
stride N), fetched in place with 2-D LOADs; then one MATMUL per K tile and N tile accumulates into that tile's
accumulator rows (the chunk's first MATMULs overwrite). So an activation tile is fetched once for ``n_group``
MATMULs, and a weight tile once for ``m_chunk`` vectors. After the chunk's last step one STORE per N tile writes
``C[m0:m1, n0:n1]`` through the epilogue with the tile's PARAM entry. The PARAM entry of an N tile is loaded with
the first step of the tile's first chunk.

:func:`plan_tiling` picks ``(m_chunk, n_group)`` with a rough cost estimate (each K tile costs the larger of its
MATMUL cycles and the bus words of its loads and instruction fetches), preferring MATMULs long enough to hide the
array's tile hand-over; ``sim.cycle_model`` gives exact cycle counts.

Buffers
-------
ACT and WGT are split in ``in_slots`` halves (2 when they are deep enough, else 1): step ``s`` uses half ``s % 2``.
The accumulator is split in ``acc_slots`` halves: chunk ``c`` uses half ``c % 2``. PARAM has
``param_slots = min(param_depth, N tiles)`` entries: tile ``j`` uses entry ``j % param_slots``.
``n_group * m_chunk <= accumulator half``, ``k_group * m_chunk <= ACT half`` and
``k_group * n_group * k_tile <= WGT half``.

Tokens (VTA style)
------------------
* LOAD ``push_next`` after a step's loads -> COMPUTE ``pop_prev`` before the step's MATMULs (data ready).
* COMPUTE ``push_prev`` after a step's MATMULs have read their operands -> LOAD ``pop_next`` before the loads of
  step ``s + in_slots`` into the same half (buffer free).
* COMPUTE ``push_next`` after a chunk's last MATMUL -> STORE ``pop_prev`` before the chunk's STORE (results ready).
* STORE ``push_prev`` after a chunk's STORE -> COMPUTE ``pop_next`` before the first MATMUL of chunk
  ``c + acc_slots`` (accumulator half free).
* Reusing a PARAM entry needs LOAD to know that the STORE of the entry's previous tile is done; LOAD and STORE share
  no queue, so COMPUTE relays it: ``SYNC unit=COMPUTE pop_next push_prev``, then LOAD ``pop_next``. It happens only
  when there are more N tiles than PARAM entries.

Tokens are pushed only where a consumer will pop them; any left over are drained by SYNCs before the HALT, so every
queue ends empty. The builder tracks, per unit, which instructions of the other units its next instruction is
ordered after (vector clocks through the token FIFOs) and pops exactly the tokens that order it; a dependency that
no pushed token covers gets a SYNC that pushes one. ``IsaSimulator.run(..., check_races=True)`` verifies the result.

Program order
-------------
``loads(0); [loads(s+1)] compute(s) [store(chunk)]`` for every step ``s``: with two input halves the loads of the
next step are dispatched before the MATMULs of the current one, so LOAD fills one half while COMPUTE works on the
other, and each STORE is dispatched before the next chunk's MATMULs, so it drains one accumulator half while
COMPUTE fills the other. (A prefetch whose PARAM entry is still in use waits for that STORE in program order.)
"""

from __future__ import annotations

import dataclasses
from collections import Counter, deque
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from hw.isa import (INSTRUCTION_BYTES, Buffer, HardwareConfig, Halt, Load, Matmul, Store, Sync, Unit,
                    disassemble, to_bytes)

from .arith import INT32_MAX, INT32_MIN, MAX_SHIFT, MIN_SHIFT, quantized_gemm
from .isa_sim import QUEUES, IsaResult, IsaSimulator, pack_param_entry

__all__ = ["GemmTiling", "GemmProgram", "candidate_tilings", "gemm_program", "gemm_schedule", "plan_tiling"]

_MAX_FIELD_DEPTH = 1 << 16   # buffer addresses and counts are 16-bit fields


@dataclass(frozen=True)
class GemmTiling:
    """How :func:`gemm_program` cuts a GEMM (see the module docstring)."""
    m_chunk: int
    k_tile: int
    k_group: int
    n_group: int
    m_chunks: int
    k_tiles: int
    n_tiles: int
    n_groups: int
    in_slots: int
    acc_slots: int
    param_slots: int
    act_half: int
    wgt_half: int
    acc_half: int


#: Cycles a LOAD instruction costs beyond its bus words (a rough figure for ranking tilings).
_LOAD_OVERHEAD = 4


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def _words(nbytes: int, bus_bytes: int, aligned: bool) -> int:
    """Bus words a row of ``nbytes`` covers (one more when it may straddle a word boundary)."""
    return _ceil(nbytes, bus_bytes) + (0 if aligned else 1)


def _estimate(m, k, n, config, m_chunk, n_group, k_tile):
    """Rough cycles of a tiling: every K tile of every chunk costs the larger of its MATMULs (with the hand-over
    bubble of short ones) and the bus words its loads and instruction fetches need, plus an unhidden fill/drain.
    Only used to rank tilings, never as a figure."""
    bus = config.bus_bytes
    n_tiles, k_tiles = _ceil(n, config.cols), _ceil(k, k_tile)
    min_count = config.rows + config.cols + 4
    a_words = _words(k_tile, bus, k % bus == 0 and k_tile % bus == 0)
    w_words = _words(config.cols, bus, n % bus == 0 and config.cols % bus == 0)
    fetch = _ceil(16, bus)
    total = 0
    for m0 in range(0, m, m_chunk):
        mm = min(m_chunk, m - m0)
        for j0 in range(0, n_tiles, n_group):
            g = min(n_group, n_tiles - j0)
            compute = g * max(mm, min_count)
            # Each LOAD also pays a few cycles of command and write-back latency.
            reads = mm * a_words + g * k_tile * w_words + fetch * (1 + 2 * g) + _LOAD_OVERHEAD * (1 + g)
            total += k_tiles * max(compute, reads)
    # The pipeline's fill and drain, costed as one K tile's loads of the last chunk.
    return total + mm * a_words + g * k_tile * w_words


def candidate_tilings(m: int, k: int, n: int, config: HardwareConfig, limit: int | None = None) -> list[GemmTiling]:
    """Tilings of an ``(m x k) @ (k x n)`` GEMM on ``config``, best estimate first (at most ``limit``).

    A candidate is a (chunk rows, N tiles per chunk) pair; its K group is the largest the input halves hold,
    evened out over the chunk's steps. The estimate is rough (see :func:`_estimate`); the compiler ranks the first
    few exactly with :mod:`sim.cycle_model`.
    """
    return list(_ranked_tilings(m, k, n, config)[:limit])


@lru_cache(maxsize=256)
def _ranked_tilings(m: int, k: int, n: int, config: HardwareConfig) -> tuple:
    """Every candidate tiling, best estimate first (cached: the compiler asks for the same shapes per batch)."""
    act_depth = min(config.act_depth, _MAX_FIELD_DEPTH)
    wgt_depth = min(config.wgt_depth, _MAX_FIELD_DEPTH)
    acc_depth = min(config.acc_depth, _MAX_FIELD_DEPTH)
    in_slots = 2 if act_depth >= 2 and wgt_depth >= 2 * config.rows else 1
    acc_slots = 2 if acc_depth >= 2 else 1
    act_half, wgt_half, acc_half = act_depth // in_slots, wgt_depth // in_slots, acc_depth // acc_slots
    k_tile = min(config.rows, wgt_half)
    k_tiles, n_tiles = _ceil(k, k_tile), _ceil(n, config.cols)
    param_slots = min(config.param_depth, n_tiles)
    ranked = []
    for n_group in range(1, min(n_tiles, param_slots, acc_half, wgt_half // k_tile) + 1):
        m_chunk = min(m, act_half, acc_half // n_group, _MAX_FIELD_DEPTH - 1)
        if n_group > 1 and m_chunk < min(m, config.rows + config.cols + 4):
            break           # wider groups only shorten the MATMULs below the hand-over bubble
        k_group = max(1, min(k_tiles, act_half // m_chunk, wgt_half // (k_tile * n_group)))
        # Even steps: a short last step would leave COMPUTE idle while LOAD fills the next (long) one.
        k_group = _ceil(k_tiles, _ceil(k_tiles, k_group))
        tiling = GemmTiling(m_chunk=m_chunk, k_tile=k_tile, k_group=k_group, n_group=n_group,
                            m_chunks=_ceil(m, m_chunk), k_tiles=k_tiles, n_tiles=n_tiles,
                            n_groups=_ceil(n_tiles, n_group), in_slots=in_slots, acc_slots=acc_slots,
                            param_slots=param_slots, act_half=act_half, wgt_half=wgt_half, acc_half=acc_half)
        # Ties go to the wider group (more slack on the bus).
        ranked.append((_estimate(m, k, n, config, m_chunk, n_group, k_tile), -n_group, tiling))
    ranked.sort(key=lambda item: item[:2])
    return tuple(tiling for _, _, tiling in ranked)


def plan_tiling(m: int, k: int, n: int, config: HardwareConfig) -> GemmTiling:
    """The tiling of an ``(m x k) @ (k x n)`` GEMM on ``config`` with the best estimate."""
    return candidate_tilings(m, k, n, config, limit=1)[0]


def gemm_schedule(m: int, k: int, n: int, config: HardwareConfig, tiling: GemmTiling | None = None, *,
                  raw: bool = False) -> list:
    """The instructions :func:`gemm_program` would build, with every region at address 0 (no DRAM image).

    Timing does not depend on the data, and :func:`gemm_program` places the regions 64-byte aligned, so this
    program has the same cycle count as the real one (``sim.cycle_model.predict``) at a fraction of the cost.
    """
    tiling = tiling or plan_tiling(m, k, n, config)
    return _schedule(m, k, n, config, tiling, bool(raw), {"a": 0, "w": 0, "param": 0, "c": 0})


@dataclass(eq=False)
class GemmProgram:
    """A GEMM program and the DRAM image it runs on.

    Load ``dram`` into the memory model, set PROG_ADDR = ``prog_addr`` and PROG_LEN = ``prog_len``, start, and
    compare the final memory with :attr:`expected_dram` (or read C back with :meth:`read_c`).
    """
    config: HardwareConfig
    tiling: GemmTiling
    program: list
    dram: np.ndarray          # initial image (uint8); never modified by this class
    prog_addr: int
    prog_len: int
    a_addr: int
    w_addr: int
    param_addr: int
    c_addr: int
    c_shape: tuple
    c_dtype: np.dtype
    expected: np.ndarray | None  # C as sim.arith.quantized_gemm computes it (None when not asked for)

    @property
    def c_nbytes(self) -> int:
        return int(np.prod(self.c_shape)) * np.dtype(self.c_dtype).itemsize

    def read_c(self, dram) -> np.ndarray:
        """C as stored in a DRAM image (a copy, shape ``c_shape``, dtype ``c_dtype``)."""
        dram = np.asarray(dram, dtype=np.uint8)
        if dram.ndim != 1 or dram.size < self.c_addr + self.c_nbytes:
            raise ValueError(f"DRAM image of shape {dram.shape} does not hold C at "
                             f"{self.c_addr:#x}..{self.c_addr + self.c_nbytes:#x}")
        raw = dram[self.c_addr:self.c_addr + self.c_nbytes]
        dtype = np.dtype("<i4") if np.dtype(self.c_dtype) == np.int32 else np.dtype(np.int8)
        return raw.view(dtype).reshape(self.c_shape).astype(self.c_dtype)

    @property
    def expected_dram(self) -> np.ndarray:
        """The whole DRAM image after a correct run: the initial image with C written (nothing else changes)."""
        image = self.dram.copy()
        c = np.ascontiguousarray(self.expected.astype("<i4" if np.dtype(self.c_dtype) == np.int32 else np.int8))
        image[self.c_addr:self.c_addr + self.c_nbytes] = c.view(np.uint8).ravel()
        return image

    def listing(self) -> str:
        return disassemble(self.program)

    def simulate(self, *, trace=False, check_races=False, bus_errors=(), interleave=None
                 ) -> tuple[IsaResult, np.ndarray]:
        """Run the golden simulator on a copy of the image (arguments as :meth:`IsaSimulator.run`); returns the
        result and the final image."""
        dram = self.dram.copy()
        result = IsaSimulator(self.config).run(dram, prog_addr=self.prog_addr, prog_len=self.prog_len,
                                               bus_errors=bus_errors, trace=trace, check_races=check_races,
                                               interleave=interleave)
        return result, dram

    def __repr__(self):
        return (f"GemmProgram(C {self.c_shape} {np.dtype(self.c_dtype).name} at {self.c_addr:#x}, "
                f"{self.prog_len} instructions at {self.prog_addr:#x}, {self.dram.size} bytes of DRAM)")


# ---- Token bookkeeping ------------------------------------------------------------------------------------------

def _pop_flag(unit, queue):
    return "pop_prev" if queue[0] < unit else "pop_next"


def _push_flag(unit, target):
    return "push_next" if target > unit else "push_prev"


def _unit_of(instr):
    if isinstance(instr, Sync):
        return Unit(instr.unit)
    return {Load: Unit.LOAD, Matmul: Unit.COMPUTE, Store: Unit.STORE}.get(type(instr))


class _Emitter:
    """Appends instructions and places token pops/pushes so each ``need`` is met (see the module docstring)."""

    def __init__(self):
        self.program = []
        self.knows = [[-1, -1, -1] for _ in Unit]     # knows[u][v]: last instruction of v that u's next one follows
        self.fifo = {q: deque() for q in QUEUES}      # clocks carried by the tokens pushed and not yet popped
        self.pending = [[] for _ in Unit]             # queues to pop before each unit's next instruction

    def emit(self, instr, push=()):
        unit = _unit_of(instr)
        if unit is not None:
            pops = Counter(self.pending[unit])
            self.pending[unit] = []
            while any(n > 1 for n in pops.values()):        # one pop per queue and instruction: extra SYNCs
                flags = {}
                for q in pops:
                    if pops[q] > 1:
                        flags[_pop_flag(unit, q)] = True
                        pops[q] -= 1
                self._append(Sync(unit=unit, **flags), unit, ())
            flags = {_pop_flag(unit, q): True for q, n in pops.items() if n}
            flags.update({_push_flag(unit, t): True for t in push})
            instr = dataclasses.replace(instr, **flags)
        return self._append(instr, unit, push)

    def _append(self, instr, unit, push):
        index = len(self.program)
        self.program.append(instr)
        if unit is not None:
            self.knows[unit][unit] = index
            for target in push:
                self.fifo[(unit, Unit(target))].append(tuple(self.knows[unit]))
        return index

    def need(self, unit, other, index):
        """Order ``unit``'s next instruction after instruction ``index`` of ``other``."""
        if unit == other or self.knows[unit][other] >= index:
            return
        assert self.knows[other][other] >= index, "a dependency on an instruction not emitted yet"
        hop = other if abs(unit - other) == 1 else Unit.COMPUTE
        if hop != other:
            self.need(hop, other, index)
        queue = (hop, unit)
        while self.knows[unit][other] < index:
            if not self.fifo[queue]:
                self.emit(Sync(unit=hop), push=(unit,))
            clock = self.fifo[queue].popleft()
            self.pending[unit].append(queue)
            self.knows[unit] = [max(x, y) for x, y in zip(self.knows[unit], clock)]

    def finish(self):
        """Pop every token left over, then HALT."""
        for queue in QUEUES:
            self.pending[queue[1]].extend([queue] * len(self.fifo[queue]))
            self.fifo[queue].clear()
        for unit in Unit:
            if self.pending[unit]:
                self.emit(Sync(unit=unit))
        self.emit(Halt())
        return self.program


# ---- The schedule -----------------------------------------------------------------------------------------------

def _schedule(m, k, n, config, t: GemmTiling, raw, addr):
    cols = config.cols
    csize = 4 if raw else 1
    entry_bytes = config.row_bytes(Buffer.PARAM)
    chunks = []     # (first N tile, end N tile, m0, m1, first step, last step)
    steps = []      # (chunk, [(k0, k1), ...])
    for j0 in range(0, t.n_tiles, t.n_group):
        j1 = min(j0 + t.n_group, t.n_tiles)
        for m0 in range(0, m, t.m_chunk):
            first = len(steps)
            for g0 in range(0, t.k_tiles, t.k_group):
                tiles = [(kt * t.k_tile, min((kt + 1) * t.k_tile, k))
                         for kt in range(g0, min(g0 + t.k_group, t.k_tiles))]
                steps.append((len(chunks), tiles))
            chunks.append((j0, j1, m0, min(m0 + t.m_chunk, m), first, len(steps) - 1))
    tile_first_step = {}
    tile_last_chunk = {}
    for c, (j0, j1, _, _, first, _) in enumerate(chunks):
        for j in range(j0, j1):
            tile_first_step.setdefault(j, first)
            tile_last_chunk[j] = c

    e = _Emitter()
    last_load, last_mm, store_at, param_load = {}, {}, {}, {}
    n_steps, n_chunks = len(steps), len(chunks)

    def new_tiles(step):
        """The N tiles whose PARAM entry ``step`` loads (those whose first step it is)."""
        j0, j1 = chunks[steps[step][0]][:2]
        return [j for j in range(j0, j1) if tile_first_step[j] == step]

    def param_reuse(step):
        """The chunks whose STOREs must finish before ``step`` loads its PARAM entries."""
        return [tile_last_chunk[j - t.param_slots] for j in new_tiles(step) if j >= t.param_slots]

    def loads_ready(step):
        return ((step < t.in_slots or step - t.in_slots in last_mm)
                and all(before in store_at for before in param_reuse(step)))

    def emit_loads(step):
        """Emit the loads of ``step`` one instruction per iteration (so COMPUTE can interleave them)."""
        c, tiles = steps[step]
        j0, j1, m0, m1 = chunks[c][:4]
        half = step % t.in_slots
        if step >= t.in_slots:
            e.need(Unit.LOAD, Unit.COMPUTE, last_mm[step - t.in_slots])
        for before in param_reuse(step):
            e.need(Unit.LOAD, Unit.STORE, store_at[before])
        instrs = []
        for j in new_tiles(step):
            instrs.append(Load(buffer=Buffer.PARAM, buf_addr=j % t.param_slots, y_size=1, x_size=entry_bytes,
                               stride=0, dram_addr=addr["param"] + j * entry_bytes))
        for i, (k0, k1) in enumerate(tiles):
            instrs.append(Load(buffer=Buffer.ACT, buf_addr=half * t.act_half + i * t.m_chunk, y_size=m1 - m0,
                               x_size=k1 - k0, stride=k, dram_addr=addr["a"] + m0 * k + k0))
            for j in range(j0, j1):
                n0, n1 = j * cols, min((j + 1) * cols, n)
                instrs.append(Load(buffer=Buffer.WGT,
                                   buf_addr=half * t.wgt_half + (i * t.n_group + j - j0) * t.k_tile,
                                   y_size=k1 - k0, x_size=n1 - n0, stride=n, dram_addr=addr["w"] + k0 * n + n0))
        for i, instr in enumerate(instrs):
            index = e.emit(instr, push=(Unit.COMPUTE,) if i == len(instrs) - 1 else ())
            if instr.buffer == Buffer.PARAM:
                param_load[instr.dram_addr] = index
            yield
        last_load[step] = index

    def load_count(step):
        c, tiles = steps[step]
        j0, j1 = chunks[c][:2]
        return len(new_tiles(step)) + len(tiles) * (1 + j1 - j0)

    def emit_compute(step, prefetch=None, prefetch_count=0):
        """Emit the MATMULs of ``step``, each followed by its share of the ``prefetch`` loads (the next step's):
        the dispatcher hands instructions out in program order through short unit queues, so a long run of one
        unit's instructions would stall the other unit."""
        c, tiles = steps[step]
        j0, j1, m0, m1, first, last = chunks[c]
        half = step % t.in_slots
        e.need(Unit.COMPUTE, Unit.LOAD, last_load[step])
        if step == first and c >= t.acc_slots:
            e.need(Unit.COMPUTE, Unit.STORE, store_at[c - t.acc_slots])
        total = len(tiles) * (j1 - j0)
        done = emitted = 0
        for i, (k0, k1) in enumerate(tiles):
            for j in range(j0, j1):
                push = ()
                if i == len(tiles) - 1 and j == j1 - 1:
                    push = (((Unit.LOAD,) if step + t.in_slots < n_steps else ())
                            + ((Unit.STORE,) if step == last else ()))
                index = e.emit(Matmul(act_addr=half * t.act_half + i * t.m_chunk,
                                      wgt_addr=half * t.wgt_half + (i * t.n_group + j - j0) * t.k_tile,
                                      acc_addr=(c % t.acc_slots) * t.acc_half + (j - j0) * t.m_chunk,
                                      count=m1 - m0, k_rows=k1 - k0, accumulate=not (step == first and i == 0)),
                               push=push)
                done += 1
                if prefetch is not None and done < total:
                    while emitted < prefetch_count * done // total:
                        next(prefetch)
                        emitted += 1
        last_mm[step] = index
        if prefetch is not None:
            for _ in prefetch:
                pass

    def emit_store(c):
        j0, j1, m0, m1, _, last = chunks[c]
        e.need(Unit.STORE, Unit.COMPUTE, last_mm[last])
        for j in range(j0, j1):
            n0, n1 = j * cols, min((j + 1) * cols, n)
            e.need(Unit.STORE, Unit.LOAD, param_load[addr["param"] + j * entry_bytes])
            index = e.emit(Store(acc_addr=(c % t.acc_slots) * t.acc_half + (j - j0) * t.m_chunk, count=m1 - m0,
                                 param_addr=j % t.param_slots, n_cols=n1 - n0, stride=n * csize,
                                 dram_addr=addr["c"] + (m0 * n + n0) * csize, raw=bool(raw)),
                           push=(Unit.COMPUTE,) if j == j1 - 1 and c + t.acc_slots < n_chunks else ())
        store_at[c] = index

    loaded = 0
    for step in range(n_steps):
        while loaded <= step:            # a step's own loads come before its MATMULs
            for _ in emit_loads(loaded):
                pass
            loaded += 1
        prefetch, count = None, 0
        if loaded < min(n_steps, step + t.in_slots) and loads_ready(loaded):
            prefetch, count = emit_loads(loaded), load_count(loaded)
            loaded += 1
        emit_compute(step, prefetch, count)
        c = steps[step][0]
        if chunks[c][5] == step:
            emit_store(c)
    return e.finish()


def _layout(m, k, n, config, tiling, raw, base, rng):
    """The program with final addresses, the region addresses and the image size (see :func:`gemm_program`)."""
    csize = 4 if raw else 1
    entry_bytes = config.row_bytes(Buffer.PARAM)
    # Addresses are relative to each region until the layout (which needs the program's length) is known.
    relative = _schedule(m, k, n, config, tiling, raw, {"a": 0, "w": 0, "param": 0, "c": 0})
    prog_len = len(relative)
    sizes = {"a": m * k, "w": k * n, "param": tiling.n_tiles * entry_bytes, "program": prog_len * INSTRUCTION_BYTES,
             "c": m * n * csize}
    order = list(sizes)
    if rng is not None:
        order = [order[i] for i in rng.permutation(len(order))]
    addr, at = {}, base
    for name in order:
        align = 64 if rng is None else (16 if name == "program" else 1)
        if rng is not None:
            at += int(rng.integers(0, 48))
        at = -(-at // align) * align
        addr[name] = at
        at += sizes[name]
    end = at + (int(rng.integers(0, 48)) if rng is not None else 0)
    if end > 1 << 32:
        raise ValueError(f"The GEMM needs DRAM up to {end:#x}, beyond the 32-bit address space; lower base")
    region = {Buffer.ACT: addr["a"], Buffer.WGT: addr["w"], Buffer.PARAM: addr["param"]}
    program = [dataclasses.replace(x, dram_addr=x.dram_addr + region[x.buffer]) if isinstance(x, Load) else
               dataclasses.replace(x, dram_addr=x.dram_addr + addr["c"]) if isinstance(x, Store) else x
               for x in relative]
    return program, addr, end


@lru_cache(maxsize=32)
def _fixed_layout(m, k, n, config, tiling, raw, base):
    """:func:`_layout` without randomisation, cached: a network runs the same shapes batch after batch."""
    program, addr, end = _layout(m, k, n, config, tiling, raw, base, None)
    return tuple(program), to_bytes(program), addr, end


# ---- Argument checks --------------------------------------------------------------------------------------------

def _int_array(name, value, lo, hi, shape=None, ndim=None):
    arr = np.asarray(value)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must hold integers, not {arr.dtype}")
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, not shape {arr.shape}")
    if shape is not None:
        try:
            arr = np.broadcast_to(arr, shape)
        except ValueError:
            raise ValueError(f"{name} of shape {arr.shape} does not broadcast to {shape}") from None
    if arr.size and (arr.min() < lo or arr.max() > hi):
        raise ValueError(f"{name} must lie in [{lo}, {hi}], not {int(arr.min())}..{int(arr.max())}")
    return arr.astype(np.int64)


def _int_scalar(name, value, lo, hi):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
        raise ValueError(f"{name} must be an integer in [{lo}, {hi}], not {value!r}")
    return int(value)


def gemm_program(a, w, bias, multiplier, shift, zero_point=0, act_min=-128, act_max=127, raw=False, *,
                 config: HardwareConfig, base=0x1000, rng=None, with_expected=True,
                 tiling: GemmTiling | None = None) -> GemmProgram:
    """Build the program and DRAM image computing ``quantized_gemm(a, w, bias, ...)`` on ``config``.

    Parameters
    ----------
    a : (M, K) int8 values;  w : (K, N) int8 values
    bias, multiplier : int32 values, scalar or one per output column;  shift : -31..31, scalar or per column
    zero_point, act_min, act_max : int8 (``act_min <= act_max`` unless ``raw``)
    raw : bool
        Store ``a @ w + bias`` as int32 (little-endian) instead of requantized int8.
    config : hw.isa.HardwareConfig
    base : int
        Lowest DRAM address used. A, W, the PARAM entries, the program and C follow it without overlapping.
    rng : numpy.random.Generator or int seed, optional
        When given, the regions are placed in random order at random byte offsets (the program 16-byte aligned)
        and every byte not holding an input (including C's initial bytes) is random. Without it the regions
        follow ``base`` in that order, 64-byte aligned, in a zeroed image.
    with_expected : bool
        Compute :attr:`GemmProgram.expected` with the golden GEMM (tests); the compiler, which runs the program
        on a backend and compares elsewhere, turns it off.
    tiling : GemmTiling, optional
        One of :func:`candidate_tilings` for this shape and config (default: :func:`plan_tiling`'s choice).
    """
    if not isinstance(config, HardwareConfig):
        raise TypeError(f"config must be a hw.isa.HardwareConfig, not {type(config).__name__}")
    IsaSimulator(config)    # validates the configuration's fields
    a = _int_array("a", a, -128, 127, ndim=2)
    w = _int_array("w", w, -128, 127, ndim=2)
    (m, k), n = a.shape, w.shape[1]
    if w.shape[0] != k:
        raise ValueError(f"a is {a.shape} and w is {w.shape}: w needs {k} rows")
    if min(m, k, n) == 0:
        raise ValueError(f"GEMM dimensions must be positive, not M={m}, K={k}, N={n}")
    bias = _int_array("bias", bias, INT32_MIN, INT32_MAX, shape=(n,))
    multiplier = _int_array("multiplier", multiplier, INT32_MIN, INT32_MAX, shape=(n,))
    shift = _int_array("shift", shift, MIN_SHIFT, MAX_SHIFT, shape=(n,))
    zero_point = _int_scalar("zero_point", zero_point, -128, 127)
    act_min = _int_scalar("act_min", act_min, -128, 127)
    act_max = _int_scalar("act_max", act_max, -128, 127)
    if not raw and act_min > act_max:
        raise ValueError(f"act_min must not exceed act_max, not [{act_min}, {act_max}]")
    base = _int_scalar("base", base, 0, (1 << 32) - 1)
    if rng is not None and not isinstance(rng, np.random.Generator):
        if isinstance(rng, bool) or not isinstance(rng, (int, np.integer)):
            raise TypeError(f"rng must be a numpy.random.Generator, an integer seed or None, not {rng!r}")
        rng = np.random.default_rng(rng)
    raw = bool(raw)

    if tiling is None:
        tiling = plan_tiling(m, k, n, config)
    elif tiling not in candidate_tilings(m, k, n, config):
        raise ValueError(f"tiling {tiling} is not one of candidate_tilings({m}, {k}, {n}, config)")
    if rng is None:     # the deterministic layout depends on the shapes only: built once, reused per batch
        program, program_bytes, addr, end = _fixed_layout(m, k, n, config, tiling, raw, base)
    else:
        program, addr, end = _layout(m, k, n, config, tiling, raw, base, rng)
        program_bytes = to_bytes(program)
    prog_len = len(program)
    dram = rng.integers(0, 256, size=end, dtype=np.uint8) if rng is not None else np.zeros(end, dtype=np.uint8)

    def put(name, blob):
        dram[addr[name]:addr[name] + len(blob)] = np.frombuffer(blob, dtype=np.uint8)

    put("a", a.astype(np.int8).tobytes())
    put("w", w.astype(np.int8).tobytes())
    put("param", b"".join(pack_param_entry(config.cols, bias[j * config.cols:(j + 1) * config.cols],
                                           multiplier[j * config.cols:(j + 1) * config.cols],
                                           shift[j * config.cols:(j + 1) * config.cols], zero_point, act_min, act_max)
                          for j in range(tiling.n_tiles)))
    put("program", program_bytes)
    expected = quantized_gemm(a.astype(np.int8), w.astype(np.int8), bias, multiplier, shift, zero_point, act_min,
                              act_max, raw=raw) if with_expected else None
    return GemmProgram(config=config, tiling=tiling, program=list(program), dram=dram, prog_addr=addr["program"],
                       prog_len=prog_len, a_addr=addr["a"], w_addr=addr["w"], param_addr=addr["param"],
                       c_addr=addr["c"], c_shape=(m, n), c_dtype=np.dtype(np.int32 if raw else np.int8),
                       expected=expected)
