"""The dispatcher: checks each fetched instruction and routes it to the LOAD, COMPUTE or STORE queue in order."""

from amaranth import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from .instruction_fetch import fetched_layout
from .instruction_layout import INDEX_WIDTH, instruction_layout, queue_entry_layout
from .isa import ALLOWED_FLAGS, FIELDS, FLAG_NAMES, TOKEN_MAX, Buffer, ErrorCode, HardwareConfig, Opcode, Unit

__all__ = ["Dispatcher", "TOKEN_QUEUES"]

#: The four token queues, as (from unit, to unit).
TOKEN_QUEUES = {"l2c": (Unit.LOAD, Unit.COMPUTE), "c2l": (Unit.COMPUTE, Unit.LOAD),
                "c2s": (Unit.COMPUTE, Unit.STORE), "s2c": (Unit.STORE, Unit.COMPUTE)}


def _queue_for(unit, flag):
    """The token queue a unit's flag acts on (None if the unit cannot use that flag)."""
    if flag not in ALLOWED_FLAGS[unit]:
        return None
    other = unit - 1 if flag.endswith("prev") else unit + 1
    src, dst = (unit, other) if flag.startswith("push") else (other, unit)
    return next(name for name, ends in TOKEN_QUEUES.items() if ends == (src, dst))


def _any(bits):
    result = Const(0, 1)
    for bit in bits:
        result = result | bit
    return result


def _reserved_mask(opcode):
    used = 0
    for _, lsb, width in FIELDS[opcode]:
        used |= ((1 << width) - 1) << lsb
    return ((1 << 128) - 1) & ~used


class Dispatcher(wiring.Component):
    """Decodes, checks and dispatches instructions in program order.

    For each instruction it checks, in this order (as the golden simulator does): the fetch bus error flag, legality
    (opcode, reserved bits, token flags, buffer/unit fields), the ranges of ``config`` (``HardwareConfig.check``),
    and the token balance of every queue it pops or pushes (counted in program order: a pop below zero is
    TOKEN_DEADLOCK, more than 255 outstanding TOKEN_OVERFLOW). The first failure stops dispatch and is reported
    with the instruction's index; so does the fetch's ``overrun`` marker (PROGRAM_OVERRUN). A HALT stops dispatch
    without error. ``stop`` (a unit's fault) also stops dispatch.

    Members
    -------
    instr : In(stream.Signature(fetched_layout()))
    load, compute, store : Out(stream.Signature(queue_entry_layout()))
        Unit queues (FIFOs of ``queue_depth`` entries inside the dispatcher).
    stop : In(1)
    stopped : Out(1)
        Dispatch has ended (HALT, a fault, or ``stop``); later fetched words are drained and dropped.
    halted : Out(1)
        Dispatch ended at a HALT.
    error : Out(8), error_index : Out(32)
        The first fault found by the dispatcher (0 = none).
    dispatched : Out(1)
        Pulses once per instruction sent to a unit queue.

    Pipeline: a *decode* register takes the head of ``instr`` and registers the checks that need no state
    (unit, legality, ranges, the token queues it pops and pushes); the *decision* in the next cycle checks the token
    balances and writes the unit queue. The decode register refills in the cycle its instruction is decided, so the
    two stages keep one instruction per cycle, and with an unbuffered fetch FIFO an instruction written into it in
    cycle ``f`` is decided in cycle ``f + 2`` at the earliest.

    Throughput: one instruction per cycle while the target queue has room.
    """

    def __init__(self, *, config: HardwareConfig, queue_depth=8):
        self._config = config
        self._queue_depth = queue_depth
        super().__init__({
            "instr": In(stream.Signature(fetched_layout())),
            "load": Out(stream.Signature(queue_entry_layout())),
            "compute": Out(stream.Signature(queue_entry_layout())),
            "store": Out(stream.Signature(queue_entry_layout())),
            "stop": In(1),
            "stopped": Out(1),
            "halted": Out(1),
            "error": Out(8),
            "error_index": Out(INDEX_WIDTH),
            "dispatched": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        head = self.instr.payload
        word = head.word
        opcode = word[:3]
        views = {op: data.View(instruction_layout(op), word) for op in Opcode}

        # ---- Which unit executes the instruction.
        unit = Signal(2)
        is_sync = opcode == Opcode.SYNC
        m.d.comb += unit.eq(Mux(opcode == Opcode.LOAD, Unit.LOAD,
                            Mux(opcode == Opcode.MATMUL, Unit.COMPUTE,
                            Mux(opcode == Opcode.STORE, Unit.STORE, views[Opcode.SYNC].unit))))

        # ---- Legality.
        illegal = Signal()
        known = (opcode >= Opcode.LOAD) & (opcode <= Opcode.HALT)
        reserved = Signal()
        for op in Opcode:
            with m.If(opcode == op):
                m.d.comb += reserved.eq((word & Const(_reserved_mask(op), 128)) != 0)
        bad_flags = Signal()
        flags = {name: getattr(views[Opcode.LOAD], name) for name in FLAG_NAMES}  # same bits in every opcode
        with m.If(opcode == Opcode.HALT):
            m.d.comb += bad_flags.eq(word[3:7] != 0)
        with m.Else():
            for u in Unit:
                with m.If(unit == u):
                    m.d.comb += bad_flags.eq(_any(flags[f] for f in FLAG_NAMES if f not in ALLOWED_FLAGS[u]))
        bad_field = ((opcode == Opcode.LOAD) & (views[Opcode.LOAD].buffer == 3)) | \
                    (is_sync & (views[Opcode.SYNC].unit == 3))
        m.d.comb += illegal.eq(~known | reserved | bad_field | bad_flags)

        # ---- Ranges (HardwareConfig.check).
        out_of_range = Signal()
        ld, mm, st = views[Opcode.LOAD], views[Opcode.MATMUL], views[Opcode.STORE]
        with m.Switch(opcode):
            with m.Case(Opcode.LOAD):
                row_bytes = Mux(ld.buffer == Buffer.ACT, cfg.row_bytes(Buffer.ACT),
                            Mux(ld.buffer == Buffer.WGT, cfg.row_bytes(Buffer.WGT), cfg.row_bytes(Buffer.PARAM)))
                depth = Mux(ld.buffer == Buffer.ACT, cfg.act_depth,
                        Mux(ld.buffer == Buffer.WGT, cfg.wgt_depth, cfg.param_depth))
                m.d.comb += out_of_range.eq((ld.y_size == 0) | (ld.x_size == 0) | (ld.x_size > row_bytes) |
                                            (ld.buf_addr + ld.y_size > depth))
            with m.Case(Opcode.MATMUL):
                m.d.comb += out_of_range.eq((mm.count == 0) | (mm.k_rows == 0) | (mm.k_rows > cfg.rows) |
                                            (mm.act_addr + mm.count > cfg.act_depth) |
                                            (mm.wgt_addr + mm.k_rows > cfg.wgt_depth) |
                                            (mm.acc_addr + mm.count > cfg.acc_depth))
            with m.Case(Opcode.STORE):
                m.d.comb += out_of_range.eq((st.count == 0) | (st.n_cols == 0) | (st.n_cols > cfg.cols) |
                                            (st.acc_addr + st.count > cfg.acc_depth) |
                                            (st.param_addr >= cfg.param_depth))

        # ---- The token queues it pops and pushes.
        delta_pop = {q: Signal(name=f"pop_{q}") for q in TOKEN_QUEUES}
        delta_push = {q: Signal(name=f"push_{q}") for q in TOKEN_QUEUES}
        with m.If(opcode != Opcode.HALT):
            for u in Unit:
                with m.If(unit == u):
                    for flag in FLAG_NAMES:
                        q = _queue_for(u, flag)
                        if q is None:
                            continue
                        target = delta_pop if flag.startswith("pop") else delta_push
                        m.d.comb += target[q].eq(flags[flag])

        # ---- Decode register: the head and its state-free checks.
        dec = Signal(data.StructLayout({
            "word": len(word), "index": INDEX_WIDTH, "unit": 2, "halt": 1,
            # the state-free fault, by priority (0 = none)
            "fault": 8,
            "pop": len(TOKEN_QUEUES), "push": len(TOKEN_QUEUES)}))
        dec_valid = Signal()
        static_fault = Signal(8)
        with m.If(head.overrun):
            m.d.comb += static_fault.eq(ErrorCode.PROGRAM_OVERRUN)
        with m.Elif(head.bus_error):
            m.d.comb += static_fault.eq(ErrorCode.BUS_ERROR_FETCH)
        with m.Elif(illegal):
            m.d.comb += static_fault.eq(ErrorCode.ILLEGAL_INSTRUCTION)
        with m.Elif(out_of_range):
            m.d.comb += static_fault.eq(ErrorCode.OUT_OF_RANGE)
        decided = Signal()                   # the decision takes the decode register's instruction this cycle
        m.d.comb += self.instr.ready.eq(~dec_valid | decided | self.stopped)
        with m.If(self.instr.valid & self.instr.ready):
            m.d.sync += [
                dec_valid.eq(1),
                dec.word.eq(word), dec.index.eq(head.index), dec.unit.eq(unit),
                dec.halt.eq(opcode == Opcode.HALT), dec.fault.eq(static_fault),
                dec.pop.eq(Cat(delta_pop[q] for q in TOKEN_QUEUES)),
                dec.push.eq(Cat(delta_push[q] for q in TOKEN_QUEUES)),
            ]
        with m.Elif(decided | self.stopped):
            m.d.sync += dec_valid.eq(0)

        # ---- Token balance in program order, checked by the decision.
        balance = {q: Signal(signed(10), name=f"tokens_{q}") for q in TOKEN_QUEUES}
        pops = {q: dec.pop[i] for i, q in enumerate(TOKEN_QUEUES)}
        pushes = {q: dec.push[i] for i, q in enumerate(TOKEN_QUEUES)}
        deadlock = Signal()
        overflow = Signal()
        m.d.comb += [
            deadlock.eq(_any(pops[q] & (balance[q] == 0) for q in TOKEN_QUEUES)),
            overflow.eq(_any(pushes[q] & (balance[q] >= TOKEN_MAX) for q in TOKEN_QUEUES)),
        ]

        # ---- Unit queues.
        fifos = {}
        for name in ("load", "compute", "store"):
            fifo = SyncFIFOBuffered(width=queue_entry_layout().size, depth=self._queue_depth)
            m.submodules[f"{name}_queue"] = fifo
            fifos[name] = fifo
            port = getattr(self, name)
            m.d.comb += [port.valid.eq(fifo.r_rdy), port.payload.eq(fifo.r_data), fifo.r_en.eq(port.ready)]
        entry = Signal(queue_entry_layout())
        m.d.comb += [entry.word.eq(dec.word), entry.index.eq(dec.index)]
        target_ready = Signal()
        with m.Switch(dec.unit):
            for u, name in ((Unit.LOAD, "load"), (Unit.COMPUTE, "compute"), (Unit.STORE, "store")):
                with m.Case(u):
                    m.d.comb += [target_ready.eq(fifos[name].w_rdy), fifos[name].w_data.eq(entry)]

        # ---- The decision for the decode register's instruction.
        stopped = Signal()
        m.d.comb += self.stopped.eq(stopped | self.stop)
        fault = Signal(8)
        with m.If(dec.fault != 0):
            m.d.comb += fault.eq(dec.fault)
        with m.Elif(deadlock):
            m.d.comb += fault.eq(ErrorCode.TOKEN_DEADLOCK)
        with m.Elif(overflow):
            m.d.comb += fault.eq(ErrorCode.TOKEN_OVERFLOW)

        with m.If(dec_valid & ~self.stopped):
            with m.If(fault != 0):
                m.d.comb += decided.eq(1)
                m.d.sync += [stopped.eq(1), self.error.eq(fault), self.error_index.eq(dec.index)]
            with m.Elif(dec.halt):
                m.d.comb += decided.eq(1)
                m.d.sync += [stopped.eq(1), self.halted.eq(1)]
            with m.Elif(target_ready):
                m.d.comb += [decided.eq(1), self.dispatched.eq(1)]
                for name, u in (("load", Unit.LOAD), ("compute", Unit.COMPUTE), ("store", Unit.STORE)):
                    m.d.comb += fifos[name].w_en.eq(dec.unit == u)
                for q in TOKEN_QUEUES:
                    m.d.sync += balance[q].eq(balance[q] - pops[q] + pushes[q])
        return m
