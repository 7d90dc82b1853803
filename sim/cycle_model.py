"""Exact cycle model of the accelerator: the CYCLES and busy counters of a program, from its instructions alone.

:func:`predict` returns what the RTL's counter registers read after a program ran on the Verilator backend
(:class:`sim.verilator_backend.VerilatorAccelerator` with its default memory: read and write latency 0, 8
outstanding bursts, no back-pressure): ``cycles`` (CYCLES, START to DONE), ``load_busy``, ``compute_busy``,
``store_busy``, ``vectors`` and ``instructions``. :func:`predict_cycles` returns ``cycles`` alone. Timing depends on
the instruction stream only (counts, addresses, token flags), never on the data, so the model needs no DRAM image.

How it works
------------
The model follows the RTL's control at the granularity of instructions, bus commands and result rows, with every
register stage counted, and jumps from one event cycle to the next (a discrete-event simulation: the 1.1M-cycle
GEMM of the MNIST CNN's second convolution at batch 32 takes under a second). Four parts exchange time-stamped
facts, each visible from the cycle after it happens, as the registered hardware signals are:

* the *front*: instruction fetch (bursts of 4 instructions into an 8-entry FIFO, issued when the FIFO can take them),
  the LOAD unit and the read arbiter they share (the owner keeps the AXI read channel while it has commands
  outstanding; otherwise round robin). Read data returns in order, one bus word per cycle, three cycles after a
  command's handshake at the earliest, so a LOAD whose first row command is accepted in cycle ``c`` receives its
  last word in ``c + 2 + words``;
* the *dispatcher*: a decode register loads the fetch FIFO's head (an unbuffered FIFO: readable the cycle after its
  write) while empty or in the cycle its instruction is decided; the decision in a later cycle writes one
  instruction per cycle in program order into 8-entry unit queues (``SyncFIFOBuffered``: an entry is readable two
  cycles after its write; a write needs the inner 7-entry memory to have room);
* the COMPUTE unit and the GEMM engine's MATMUL side: four issue states per instruction (accept, pop prev, pop next,
  execute), then the weight tile streams into the idle bank of the array (once the bank's previous tile has passed
  the last column) and the vectors follow the previous tile's without a gap when they can;
  :attr:`hw.gemm_engine.GemmEngine.pipeline_depth` and :meth:`~hw.gemm_engine.GemmEngine.matmul_latency` give the
  drain;
* the STORE unit, the engine's STORE side (command register, accumulator read, read-data register and epilogue:
  :attr:`~hw.gemm_engine.GemmEngine.store_latency` stages, one row each after the command register, that squeeze
  bubbles), the unit's two-row skid buffer and the AXI write path (one command per row, ahead of the data; one
  bus word per cycle; one B response per cycle; 8 bursts may await B), solved row by row with max-plus
  recurrences.

Token queues carry the push cycles; a pop in cycle ``t`` sees pushes before ``t``. The accelerator is done in the
first cycle in which the dispatcher has stopped at the HALT and every queue, unit, engine side and bus direction is
idle; CYCLES counts from the cycle after START through that one.

The latencies come from the blocks' latency properties (:class:`~hw.gemm_engine.GemmEngine`,
:class:`~hw.load_unit.LoadUnit`, :class:`~hw.store_unit.StoreUnit`, :class:`~hw.axi4_master.AXI4Master`); the
remaining structure (state machines, FIFO depths, which stage waits for which) is the RTL's as of this writing.
``tests/sim/test_cycle_model.py`` checks the model against the RTL cycle for cycle, so a change of the hardware's
timing shows up there. Other memory models (latency, back-pressure, bus errors) and programs that fault are not
covered.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass
from functools import lru_cache
from math import gcd

from hw.isa import (INSTRUCTION_BYTES, TOKEN_MAX, HardwareConfig, Halt, IllegalInstruction, Load, Matmul, Store, Sync,
                    Unit, encode)

__all__ = ["predict", "predict_cycles"]

_NEVER = 1 << 62            # a cycle that never comes
# Structural sizes the accelerator top builds its blocks with (defaults of their constructors).
_QUEUE_DEPTH = 8            # Dispatcher queue_depth: each unit queue
_FETCH_DEPTH = 8            # InstructionFetch depth
_FETCH_BURST = 4            # InstructionFetch burst: instructions per read command
_WEIGHT_START = 3           # ComputeUnit: MATMUL command -> first weight row (job FIFO 2 cycles + buffer read 1)
_PAGE_BYTES = 4096          # no AXI burst crosses a 4 KiB page

# Unit FSM states.
_IDLE, _POP, _POP_NEXT, _SYNC, _EXECUTE = range(5)


class _Tokens:
    """A token queue: push cycles (in order, possibly in the future) and the number of pops so far."""

    __slots__ = ("pushes", "pops")

    def __init__(self):
        self.pushes = []
        self.pops = 0

    def available(self, t):
        """A token is there in cycle ``t`` (pushes before ``t`` outnumber the pops)."""
        return bisect_left(self.pushes, t) > self.pops

    def visible(self):
        """The first cycle the next token can be popped, or ``_NEVER`` while its push is unknown."""
        return self.pushes[self.pops] + 1 if len(self.pushes) > self.pops else _NEVER


class _UnitQueue:
    """A ``SyncFIFOBuffered(depth=8)`` unit queue: write (dispatch) and read (accept) cycles and the instructions."""

    __slots__ = ("d", "a", "items")

    def __init__(self):
        self.d, self.a, self.items = [], [], []

    def ready(self, j):
        """First cycle entry ``j`` is on the output register (``_NEVER`` while unknown): it moves there from the
        inner memory the cycle after its write, or when the previous entry is read."""
        if j >= len(self.d):
            return _NEVER
        return max(self.d[j] + 1, self.a[j - 1] if j else 0) + 1

    def space(self):
        """First cycle the next entry may be written (``_NEVER`` while unknown): the inner memory holds depth - 1
        entries, so entry ``j`` waits until entry ``j - 7`` has left it."""
        k = len(self.d) - (_QUEUE_DEPTH - 1)
        if k < 0:
            return 0
        if k > len(self.a):
            return _NEVER
        return max(self.d[k] + 1, self.a[k - 1] if k else 0) + 1


def _row_words(addr, nbytes, stride, rows, bus):
    """Bus words that ``rows`` rows of ``nbytes`` bytes at ``addr + y*stride`` cover (each row from its aligned
    word)."""
    step = stride % bus
    if step == 0:
        return rows * ((addr % bus + nbytes + bus - 1) // bus)
    period = bus // gcd(step, bus)       # the start offsets repeat with this period
    per = [((addr + y * stride) % bus + nbytes + bus - 1) // bus for y in range(min(period, rows))]
    full, rest = divmod(rows, period)
    return full * sum(per) + sum(per[:rest]) if full else sum(per)


@dataclass(frozen=True)
class _Timing:
    """The latencies the model composes, read from the blocks' latency properties (see :func:`_timing`)."""
    read_latency: int       # read command handshake -> its first data beat (memory latency 0)
    load_start: int         # LOAD unit: pop cycle -> first read command offered
    load_write: int         # LOAD unit: a row's last beat -> its buffer write (the push comes with the last)
    drain: int              # last vector into the array -> mm_idle (mm_done the cycle before)
    bank_free: int          # last vector of a tile -> its weight bank may be rewritten
    store_command: int      # engine: STORE command handshake -> its first accumulator read (command register)
    epilogue: int           # rows the epilogue holds (its stages)
    store_start: int        # STORE unit: pop cycle -> engine store command offered
    row_latency: int        # STORE unit: a row's out handshake -> its first word offered
    completion: int         # STORE unit: last write response -> push
    write_data: int         # AXI master: wr_data handshake -> the beat on W (its register slice)
    max_burst: int          # AXI master: longest burst
    outstanding: int        # AXI master: write commands queued for W, and write bursts awaiting B


@lru_cache(maxsize=None)
def _timing(config: HardwareConfig) -> _Timing:
    """The blocks of ``config``'s accelerator, built only for their latency properties, so a change of a block's
    documented timing (the PE pipeline depth, say) reaches the model without an edit here."""
    import gc
    import warnings

    from hw.axi4_master import AXI4Master
    from hw.gemm_engine import GemmEngine
    from hw.load_unit import LoadUnit
    from hw.store_unit import StoreUnit

    rows, cols = config.rows, config.cols
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # Amaranth warns that these elaboratables are never used: true
        engine = GemmEngine(rows=rows, cols=cols, acc_depth=config.acc_depth)
        master = AXI4Master(data_width=8 * config.bus_bytes)
        load = LoadUnit(rows=rows, cols=cols, act_depth=config.act_depth, wgt_depth=config.wgt_depth,
                        param_depth=config.param_depth, data_width=8 * config.bus_bytes)
        store = StoreUnit(rows=rows, cols=cols, acc_depth=config.acc_depth, param_depth=config.param_depth,
                          data_width=8 * config.bus_bytes)
        timing = _Timing(
            # ARVALID address_latency cycles after the command; a latency-0 memory answers the cycle after AR.
            read_latency=master.address_latency + 1,
            # The unit's command latencies count from the instruction handshake, one cycle before the pop state.
            load_start=load.command_latency - 1,
            load_write=load.write_latency,
            # matmul_latency = command + rows weight rows + hand-over to the feeder + count vectors + the drain.
            drain=engine.matmul_latency(1) - (1 + rows + 1),
            # min_overlapped_count = rows (loading the bank) + max(its reuse distance, a two-cycle hand-over
            # bound that the COMPUTE unit's weight start always meets, so the max does not matter here).
            bank_free=engine.min_overlapped_count - rows,
            # store_latency = the command register + the accumulator read + the epilogue, one row per stage
            # after the command register.
            store_command=engine.store_command_latency,
            epilogue=engine.store_latency - engine.store_command_latency - 1,
            store_start=store.command_latency - 1,
            row_latency=store.row_latency,
            completion=store.completion_latency,
            write_data=master.write_data_latency,
            max_burst=master.max_burst,
            outstanding=master.outstanding,
        )
        del engine, master, load, store
        gc.collect()    # the never-elaborated components warn when collected: here, inside the filter
    return timing


# The model's parts (see the module docstring) and the token queues' consumers.
_FRONT, _DISPATCH, _COMPUTE, _STORE = range(4)
_PART_OF_UNIT = {Unit.LOAD: _FRONT, Unit.COMPUTE: _COMPUTE, Unit.STORE: _STORE}
_CONSUMER = {"l2c": _COMPUTE, "c2l": _FRONT, "c2s": _STORE, "s2c": _COMPUTE}


class _Model:
    """One run of a program; see the module docstring. Times are cycles after START (0 = the first counted cycle,
    in which the fetch unit latches PROG_ADDR)."""

    def __init__(self, program, config: HardwareConfig):
        self.program = program
        self.unit_of = [None if isinstance(ins, Halt) else _unit_of(ins) for ins in program]
        self.rows, self.bus = config.rows, config.bus_bytes
        self.timing = _timing(config)
        self.drain, self.bank_free = self.timing.drain, self.timing.bank_free
        self.beats_per_instruction = max(INSTRUCTION_BYTES // config.bus_bytes, 1)
        self.tokens = {q: _Tokens() for q in _CONSUMER}
        self.queues = {u: _UnitQueue() for u in Unit}
        self.busy = {u: 0 for u in Unit}
        self.vectors = 0
        self.dirty = [False] * 4        # parts whose inputs changed: their next event cycle must be recomputed

        # ---- Fetch and read channel.
        self.n_req = 0                  # instructions requested
        self.fetched = []               # cycle each instruction's last beat is written to the fetch FIFO
        self.r_free = 0                 # first cycle the read data channel has no word scheduled
        self.owner = None               # Unit.LOAD or "fetch": the requester whose commands are outstanding
        self.last_beat = -1             # last data beat of the owner's outstanding commands
        self.last_grant = "fetch"       # round-robin state (requester 0 after reset)
        self.ar_free = 0                # first cycle the master accepts another read command
        self.fetch_last_beat = -1       # last data beat of the instruction fetch
        # ---- Dispatcher.
        self.i = 0                      # next instruction to decide (dispatch, or HALT)
        self.read = []                  # cycle each instruction left the fetch FIFO for the decode register
        self.halted = _NEVER
        # ---- Units: [state, from cycle, queue index, instruction].
        self.unit = {u: [_IDLE, 0, 0, None] for u in Unit}
        # ---- Engine (MATMUL side).
        self.commands = 0               # engine commands so far
        self.t_prev = -_NEVER           # cycle the previous command was taken by the feeder
        self.l_hist = [-_NEVER, -_NEVER]  # last vector issue of the previous two commands (per bank)
        self.drained = 0                # first cycle with no MATMUL in flight
        self.busy_end = -1              # COMPUTE busy intervals are merged as they come
        self.store_bus_idle = 0         # first cycle the AXI write side is idle after the last STORE

    def _push(self, queue, t):
        self.tokens[queue].pushes.append(t)
        self.dirty[_CONSUMER[queue]] = True

    # ---------------------------------------------------------------- front: fetch, arbiter, LOAD unit
    def _fetch_wants(self, t):
        if t < 1 or self.n_req >= len(self.program) or t > self.halted:
            return False
        n = min(_FETCH_BURST, len(self.program) - self.n_req)
        return _FETCH_DEPTH - self.n_req + bisect_left(self.read, t) >= n

    def _front(self, t):
        state = self.unit[Unit.LOAD]
        s = state[0]
        if state[1] <= t and s != _EXECUTE:
            if s == _IDLE:
                self._accept(Unit.LOAD, t)
            elif s == _POP:
                ins = state[3]
                if self._pop("c2l", ins.pop_next, t):
                    if isinstance(ins, Sync):
                        state[0], state[1] = _SYNC, t + 1
                    else:
                        state[0], state[1] = _EXECUTE, t + self.timing.load_start
            else:   # SYNC
                if state[3].push_next:
                    self._push("l2c", t)
                self.busy[Unit.LOAD] += 1
                state[0], state[1] = _IDLE, t + 1
        # The read channel: the owner keeps it while its commands are outstanding, else round robin.
        load_wants = s == _EXECUTE and state[1] <= t
        fetch_wants = self._fetch_wants(t)
        if t < self.ar_free or not (load_wants or fetch_wants):
            return
        if t <= self.last_beat:
            chosen = self.owner
        elif self.last_grant == "fetch":
            chosen = Unit.LOAD if load_wants else "fetch"
        else:
            chosen = "fetch" if fetch_wants else Unit.LOAD
        if chosen == "fetch" and fetch_wants:
            n = min(_FETCH_BURST, len(self.program) - self.n_req)
            bpi = self.beats_per_instruction
            start = max(t + self.timing.read_latency, self.r_free)
            self.fetched += [start + (k + 1) * bpi - 1 for k in range(n)]
            self.r_free = start + n * bpi
            self.last_beat = self.fetch_last_beat = self.r_free - 1
            self.n_req += n
            self.owner = self.last_grant = "fetch"
            self.ar_free = t + 1
            self.dirty[_DISPATCH] = True
        elif chosen == Unit.LOAD and load_wants:
            ins = state[3]
            words = _row_words(ins.dram_addr, ins.x_size, ins.stride, ins.y_size, self.bus)
            end = t + self.timing.read_latency - 1 + words      # the last row's last beat
            self.r_free = end + 1
            self.last_beat = end
            self.owner = self.last_grant = Unit.LOAD
            self.ar_free = t + 1
            finish = end + self.timing.load_write        # the last entry is written and the token pushed
            if ins.push_next:
                self._push("l2c", finish)
            self.busy[Unit.LOAD] += finish - state[1] + 1      # EXECUTE .. FINISH
            state[0], state[1] = _IDLE, finish + 1

    def _front_next(self, t):
        state = self.unit[Unit.LOAD]
        if state[0] == _EXECUTE:
            nxt = max(t, state[1], self.ar_free, self.last_beat + 1)
        else:
            nxt = self._state_next(Unit.LOAD, t)
        if self.n_req < len(self.program) and self.halted == _NEVER:
            n = min(_FETCH_BURST, len(self.program) - self.n_req)
            k = self.n_req + n - _FETCH_DEPTH           # instructions the dispatcher must have taken first
            when = max(t, 1, self.ar_free)
            if k > 0:
                when = max(when, self.read[k - 1] + 1 if len(self.read) >= k else _NEVER)
            if self.owner == Unit.LOAD:
                when = max(when, self.last_beat + 1)
            nxt = min(nxt, when)
        return nxt

    # ---------------------------------------------------------------- dispatcher
    def _dispatch(self, t):
        """The decision on the decode register's instruction, then the decode register's refill from the fetch
        FIFO (in the cycle its instruction is decided, or while it is empty)."""
        if self.halted != _NEVER:
            return
        i = self.i
        if i < len(self.read) and self.read[i] < t:
            unit = self.unit_of[i]
            if unit is None:
                self.halted = t
                self.dirty[_FRONT] = True
                self.i = i + 1
                return
            queue = self.queues[unit]
            if queue.space() <= t:
                queue.d.append(t)
                queue.items.append(self.program[i])
                self.dirty[_PART_OF_UNIT[unit]] = True
                self.i = i = i + 1
        j = len(self.read)
        if i == j < len(self.fetched) and self.fetched[j] + 1 <= t:
            self.read.append(t)
            self.dirty[_FRONT] = True

    def _dispatch_next(self, t):
        if self.halted != _NEVER:
            return _NEVER
        i = self.i
        if i < len(self.read):          # the decode register holds instruction i
            when = max(t, self.read[i] + 1)
            unit = self.unit_of[i]
            if unit is not None:
                when = max(when, self.queues[unit].space())
            return when
        if i < len(self.fetched):       # empty: it loads the fetch FIFO's head
            return max(t, self.fetched[i] + 1)
        return _NEVER

    # ---------------------------------------------------------------- unit FSMs
    def _accept(self, u, t):
        """IDLE: take the next queue entry if it is on the queue's output."""
        state = self.unit[u]
        queue = self.queues[u]
        if queue.ready(state[2]) <= t:
            queue.a.append(t)
            state[3] = queue.items[state[2]]
            state[2] += 1
            state[0], state[1] = _POP, t + 1
            self.dirty[_DISPATCH] = True

    def _pop(self, queue, flag, t):
        """Whether a pop state may leave in cycle ``t`` (taking the token if ``flag``)."""
        if not flag:
            return True
        tokens = self.tokens[queue]
        if tokens.available(t):
            tokens.pops += 1
            return True
        return False

    def _state_next(self, u, t):
        state = self.unit[u]
        s, frm, ins = state[0], state[1], state[3]
        if s == _IDLE:
            return max(t, frm, self.queues[u].ready(state[2]))
        when = max(t, frm)
        if s == _POP or s == _POP_NEXT:
            queue, flag = _POPS[u][s]
            if getattr(ins, flag):
                when = max(when, self.tokens[queue].visible())
        elif s == _EXECUTE:         # COMPUTE only (the LOAD's is in _front_next, the STORE's is solved at once)
            when = max(when, self.drained if isinstance(ins, Sync) else self.t_prev + 1)
        return when

    def _compute_busy(self, start, end):
        """Add cycles ``start..end`` to COMPUTE_BUSY (intervals arrive in order of their start)."""
        if end > self.busy_end:
            self.busy[Unit.COMPUTE] += end - max(start, self.busy_end + 1) + 1
            self.busy_end = end

    def _compute(self, t):
        state = self.unit[Unit.COMPUTE]
        s = state[0]
        if state[1] > t:
            return
        ins = state[3]
        if s == _IDLE:
            self._accept(Unit.COMPUTE, t)
        elif s == _POP:
            if self._pop("l2c", ins.pop_prev, t):
                state[0], state[1] = _POP_NEXT, t + 1
        elif s == _POP_NEXT:
            if self._pop("s2c", ins.pop_next, t):
                state[0], state[1] = _EXECUTE, t + 1
        elif isinstance(ins, Sync):
            if t < self.drained:     # a SYNC waits until every earlier MATMUL is complete
                return
            if ins.push_prev:
                self._push("c2l", t)
            if ins.push_next:
                self._push("c2s", t)
            self._compute_busy(state[1], t)
            state[0], state[1] = _IDLE, t + 1
        else:
            if t <= self.t_prev:     # the engine takes a command once the feeder took the previous one
                return
            n = self.commands
            bank = n & 1
            weights = max(t + _WEIGHT_START, self.l_hist[bank] + self.bank_free)   # first weight row
            taken = max(weights + self.rows, self.l_hist[bank ^ 1])              # feeder takes the command
            last = taken + ins.count                                             # last vector enters
            self.commands = n + 1
            self.t_prev = taken
            self.l_hist[bank] = last
            self.drained = last + self.drain
            self.vectors += ins.count
            if ins.push_prev:
                self._push("c2l", last)
            if ins.push_next:
                self._push("c2s", self.drained - 1)
            self._compute_busy(state[1], self.drained - 1)
            state[0], state[1] = _IDLE, t + 1

    def _compute_next(self, t):
        return self._state_next(Unit.COMPUTE, t)

    def _store(self, t):
        state = self.unit[Unit.STORE]
        s = state[0]
        if state[1] > t:
            return
        ins = state[3]
        if s == _IDLE:
            self._accept(Unit.STORE, t)
        elif s == _POP:
            if self._pop("c2s", ins.pop_prev, t):
                if isinstance(ins, Sync):
                    state[0], state[1] = _SYNC, t + 1
                else:
                    # The write response of the last B handshake is taken the cycle after it.
                    finish = self._store_rows(ins, t + self.timing.store_start) + 1 + self.timing.completion
                    if ins.push_prev:
                        self._push("s2c", finish)
                    self.busy[Unit.STORE] += finish - t      # PARAMS .. FINISH
                    self.store_bus_idle = finish
                    state[0], state[1] = _IDLE, finish + 1
        else:   # SYNC
            if ins.push_prev:
                self._push("s2c", t)
            self.busy[Unit.STORE] += 1
            state[0], state[1] = _IDLE, t + 1

    def _store_next(self, t):
        return self._state_next(Unit.STORE, t)

    def _store_rows(self, ins, g):
        """Cycle of the last B handshake of a STORE whose engine command is accepted in cycle ``g``.

        Per row ``r``: ``E`` epilogue entry, ``O`` handshake on the engine's ``out``, ``C`` first cycle in the
        skid buffer's current register, ``c`` write command handshake, ``ell`` the cycle the master's W side takes
        the command, ``S``..``F`` its words taken from ``wr_data`` (on W ``write_data`` cycles later). Per burst:
        ``p`` presented on AW, ``x`` complete at the memory, ``b`` its B handshake.
        """
        bus = self.bus
        ep, row_latency, max_burst, queued = (self.timing.epilogue, self.timing.row_latency, self.timing.max_burst,
                                              self.timing.outstanding)
        row_bytes = 4 * ins.n_cols if ins.raw else ins.n_cols
        page_words = _PAGE_BYTES // bus
        never = -_NEVER
        E = O = F = never
        O_hist, F_hist, l_hist = [], [], []
        P, Bh = [], []
        c = g
        p_last = never
        for r in range(ins.count):
            # The epilogue holds `ep` rows; the skid buffer's second register stops `out` until the row before
            # last has left W. (The engine's read-side skid buffer holds one row more, behind a registered ready;
            # that bound on E only binds when W already limits O, so it changes no cycle count.)
            E = max(E + 1 if r else g + 1 + self.timing.store_command, O_hist[r - ep] if r >= ep else never)
            A = max(E + ep, O + 1)
            O = max(A, F_hist[r - 2] + 1 if r >= 2 else never)
            F_prev = F
            C = max(O, F_prev) + row_latency
            # Write command: after the previous one's last burst is presented, with room in the W command queue
            # and in the B mark queue.
            c = max(c + 1, p_last, l_hist[r - queued] + 1 if r >= queued else never)
            if c != p_last and len(P) >= queued:
                c = max(c, Bh[len(P) - queued] + 1)
            ell = max(c + 1, F_prev)
            S = max(ell + 1, C)
            addr = (ins.dram_addr + r * ins.stride) & 0xFFFF_FFFF
            word = addr // bus
            left = (addr % bus + row_bytes + bus - 1) // bus
            F = S + left - 1
            done = 0
            first = True
            while left:     # the master's bursts: at most max_burst beats, never across a 4 KiB page
                burst = min(left, max_burst, page_words - word % page_words)
                j = len(P)
                p = max(P[-1] + 1 if P else never, c + 1 if first else never,
                        Bh[j - queued] + 1 if j >= queued else never)
                done += burst
                x = max(p + 1, S + done - 1 + self.timing.write_data)
                P.append(p)
                Bh.append(max(x + 1, Bh[-1] + 1 if Bh else never))
                word += burst
                left -= burst
                first = False
            p_last = P[-1]
            O_hist.append(O)
            F_hist.append(F)
            l_hist.append(ell)
        return Bh[-1]

    # ---------------------------------------------------------------- the run
    def run(self):
        steps = (self._front, self._dispatch, self._compute, self._store)
        nexts = (self._front_next, self._dispatch_next, self._compute_next, self._store_next)
        when = [0, 0, 0, 0]
        dirty = self.dirty
        t = 0
        while t < _NEVER:
            acting = [part for part in range(4) if when[part] <= t]
            for part in acting:
                steps[part](t)
            for part in acting:
                dirty[part] = True
            for part in range(4):
                if dirty[part]:
                    when[part] = nexts[part](t + 1)
                    dirty[part] = False
            t = min(when)
        units = (Unit.LOAD, Unit.COMPUTE, Unit.STORE)
        if self.halted == _NEVER:
            raise ValueError("the program never reaches its HALT (a unit waits for a token that is never pushed): "
                             "the cycle model needs a complete, well-formed program")
        for u in units:
            if self.unit[u][0] != _IDLE or self.unit[u][2] != len(self.queues[u].d):
                raise ValueError(f"the {u.name} unit never finishes (it waits for a token that is never pushed): "
                                 f"the cycle model needs a well-formed program")
        finish = max(self.halted + 1, self.fetch_last_beat + 1, self.last_beat + 1, self.drained, self.store_bus_idle,
                     *(self.unit[u][1] for u in units),
                     *(q.a[-1] + 1 for q in self.queues.values() if q.a))
        return {"cycles": finish + 1, "load_busy": self.busy[Unit.LOAD], "compute_busy": self.busy[Unit.COMPUTE],
                "store_busy": self.busy[Unit.STORE], "vectors": self.vectors, "instructions": self.i - 1}


_POPS = {
    Unit.LOAD: {_POP: ("c2l", "pop_next")},
    Unit.COMPUTE: {_POP: ("l2c", "pop_prev"), _POP_NEXT: ("s2c", "pop_next")},
    Unit.STORE: {_POP: ("c2s", "pop_prev")},
}


def _unit_of(ins):
    if isinstance(ins, Sync):
        return Unit(ins.unit)
    return {Load: Unit.LOAD, Matmul: Unit.COMPUTE, Store: Unit.STORE}[type(ins)]


def _check(program, config):
    """The program as a list, or a clear error when it is not one the model covers (one that runs to its HALT)."""
    if not isinstance(config, HardwareConfig):
        raise TypeError(f"config must be a hw.isa.HardwareConfig, not {type(config).__name__}")
    if config.bus_bytes not in (4, 8, 16):
        raise ValueError(f"config.bus_bytes must be 4, 8 or 16 (the accelerator's bus widths), not "
                         f"{config.bus_bytes!r}")
    program = list(program)
    if not program or not isinstance(program[-1], Halt):
        raise ValueError("the program must end with a HALT (as sim.programs.gemm_program builds them): the cycle "
                         "model covers programs that halt normally")
    balance = {q: 0 for q in _CONSUMER}
    for index, ins in enumerate(program):
        if not isinstance(ins, (Load, Matmul, Store, Sync, Halt)):
            raise TypeError(f"instruction {index} is {ins!r}, not a hw.isa instruction (decode words with "
                            f"hw.isa.decode first)")
        if isinstance(ins, Halt) and index != len(program) - 1:
            raise ValueError(f"instruction {index} is a HALT before the end of the program: drop the "
                             f"instructions after it (the accelerator never runs them)")
        try:
            encode(ins)
        except IllegalInstruction as error:
            raise ValueError(f"instruction {index} is illegal ({error}): the accelerator would stop with "
                             f"ILLEGAL_INSTRUCTION, which the cycle model does not cover") from None
        problem = config.check(ins)
        if problem:
            raise ValueError(f"instruction {index} is OUT_OF_RANGE on this hardware ({problem}): the cycle model "
                             f"covers programs that run without errors")
        if isinstance(ins, Halt):
            continue
        unit = _unit_of(ins)
        for flag in ("pop_prev", "pop_next"):
            if getattr(ins, flag):
                queue = _QUEUE_OF[unit, flag]
                if balance[queue] == 0:
                    raise ValueError(f"instruction {index} pops a {_QUEUE_NAME[queue]} token that no earlier "
                                     f"instruction pushed: the accelerator would stop with TOKEN_DEADLOCK")
                balance[queue] -= 1
        for flag in ("push_prev", "push_next"):
            if getattr(ins, flag):
                queue = _QUEUE_OF[unit, flag]
                if balance[queue] == TOKEN_MAX:
                    raise ValueError(f"instruction {index} pushes a {TOKEN_MAX + 1}th outstanding "
                                     f"{_QUEUE_NAME[queue]} token: the accelerator would stop with TOKEN_OVERFLOW")
                balance[queue] += 1
    return program


_QUEUE_NAME = {"l2c": "LOAD->COMPUTE", "c2l": "COMPUTE->LOAD", "c2s": "COMPUTE->STORE", "s2c": "STORE->COMPUTE"}
#: The token queue each (unit, flag) acts on.
_QUEUE_OF = {(Unit.LOAD, "pop_next"): "c2l", (Unit.LOAD, "push_next"): "l2c",
             (Unit.COMPUTE, "pop_prev"): "l2c", (Unit.COMPUTE, "pop_next"): "s2c",
             (Unit.COMPUTE, "push_prev"): "c2l", (Unit.COMPUTE, "push_next"): "c2s",
             (Unit.STORE, "pop_prev"): "c2s", (Unit.STORE, "push_prev"): "s2c"}


def predict(program, config: HardwareConfig) -> dict:
    """The counter registers after running ``program`` on ``config`` (Verilator backend, default memory model).

    Parameters
    ----------
    program : sequence of hw.isa instructions
        A complete, well-formed program ending with HALT (``GemmProgram.program``), run with PROG_LEN equal to
        its length.
    config : hw.isa.HardwareConfig

    Returns
    -------
    dict
        ``cycles``, ``load_busy``, ``compute_busy``, ``store_busy``, ``vectors``, ``instructions``: the values of
        the registers of the same names.

    Raises
    ------
    TypeError
        ``config`` is not a HardwareConfig or an entry is not a hw.isa instruction.
    ValueError
        A program the accelerator would not run to its HALT without an error (no HALT at the end, an illegal or
        out-of-range instruction, a token deadlock or overflow), or an unsupported bus width.
    """
    return _Model(_check(program, config), config).run()


def predict_cycles(program, config: HardwareConfig) -> int:
    """CYCLES (START to DONE) of ``program`` on ``config``; see :func:`predict`."""
    return predict(program, config)["cycles"]
