"""The LOAD unit: executes LOAD (and its SYNCs) by reading DRAM rows over the AXI master into the on-chip buffers.

Each row of a LOAD is ``x_size`` bytes at any byte address. The unit reads the aligned bus words that cover it
(one read command per row) and realigns the bytes on the fly: every beat is rotated by the row's start offset and
lands in the entry bytes it covers, so a row of ``n`` words takes ``n`` cycles and the buffer write follows its
last beat. Read commands for later rows are issued while data of earlier rows still arrives.

The helpers :func:`read_command_layout` and friends reproduce the payload layouts of :class:`hw.axi4_master.AXI4Master`
(``tests/hw/test_load_unit.py`` checks that they are equal), so the units connect to the master with
``wiring.connect``.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .axi4_master import (check_bus, read_command_layout, read_data_layout, word_offset_bits,
                          write_command_layout, write_data_layout, write_response_layout)
from .instruction_layout import (INDEX_WIDTH, abort_register, instruction_layout, queue_entry_layout,
                                 token_signature)
from .isa import Buffer, Opcode, param_entry_bytes
from .systolic_array import check_array_size

__all__ = ["LoadUnit", "read_command_layout", "read_data_layout", "write_command_layout", "write_data_layout",
           "write_response_layout"]

#: Largest on-chip buffer the 16-bit ``buf_addr`` / ``acc_addr`` fields can address.
MAX_DEPTH = 1 << 16


# ---- Bus payloads (the AXI master's user side) ---------------------------------------------------------------------

def check_depth(name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_DEPTH:
        raise ValueError(f"{name} must be an integer from 1 to {MAX_DEPTH}, not {value!r}")


def address_bits(depth: int) -> int:
    """Width of a buffer address port (at least 1 bit, as the top and the other units use)."""
    return max((depth - 1).bit_length(), 1)




def rotate_bytes(m: Module, word, offset, count: int, name: str) -> list[Signal]:
    """Bytes ``(offset + j) % count`` of ``word`` for ``j`` in ``range(count)``: one ``count``-way mux per byte."""
    src = [word[8 * j:8 * j + 8] for j in range(count)]
    out = [Signal(8, name=f"{name}{j}") for j in range(count)]
    with m.Switch(offset):
        for o in range(count):
            with m.Case(o):
                m.d.comb += [out[j].eq(src[(o + j) % count]) for j in range(count)]
    return out


class LoadUnit(wiring.Component):
    """Executes LOAD and SYNC instructions: pops, DRAM rows into ACT/WGT/PARAM entries, pushes.

    A LOAD copies ``y_size`` rows: row ``y`` is the ``x_size`` bytes at ``dram_addr + y*stride`` (any byte
    alignment, addresses wrap at ``2**addr_width``) and goes to entry ``buf_addr + y`` of ``buffer``; entry bytes
    from ``x_size`` on are zero. Entry byte ``q`` is lane ``q`` of an ACT/WGT entry and bits ``[8q, 8q+8)`` of a
    PARAM entry.

    Parameters
    ----------
    rows, cols : int
        Systolic array size: an ACT entry has ``rows`` bytes, a WGT entry ``cols``, a PARAM entry ``9*cols + 3``.
    act_depth, wgt_depth, param_depth : int
        Buffer entries, 1 to 65536 each.
    data_width : int
        Bus word width in bits (32, 64, 128 or 256), as the AXI master's.
    addr_width : int
        Byte-address width of the bus, 12 to 64, as the AXI master's.

    Members
    -------
    instr : In(stream.Signature(queue_entry_layout()))
        Legal, range-checked LOAD instructions and SYNCs naming the LOAD unit, in program order, with their
        program index. An entry is accepted only when the unit is idle (one instruction at a time).
    pop_next : Out(token_signature())
        Pops a COMPUTE->LOAD token for ``pop_next``: ``valid`` asks, the handshake takes it.
    push_next : Out(1)
        One-cycle pulse pushing a LOAD->COMPUTE token for ``push_next``, in the cycle the instruction's last entry
        is written (the write port's ``en`` is high in that cycle, so the data is in the buffer before anyone can
        pop the token).
    abort : In(1), abort_index : In(32)
        From the cycle after ``abort`` rises (the decision is registered, :func:`abort_register`), an instruction
        whose index is above ``abort_index`` and that has not started (it is waiting for its token, or was
        accepted in the previous cycle) is dropped: consumed, no token popped or pushed, no bus traffic, no
        write. An instruction that has started runs to completion.
    fault : Out(1), fault_index : Out(32)
        One-cycle pulse, instead of the push, when a LOAD completes that saw ``error`` on any read beat;
        ``fault_index`` is that instruction's index. All its rows are still read and written.
    busy : Out(1)
        Executing an instruction: from the cycle after its pops to its completion (push/fault cycle included).
    idle : Out(1)
        No instruction accepted and unfinished, no read command outstanding.
    rd_cmd : Out(stream.Signature(read_command_layout(addr_width, data_width)))
        To the AXI master (through the read arbiter): one command per row, the aligned words covering the row.
    rd_data : In(stream.Signature(read_data_layout(data_width)))
        The words of those commands, in order; ``last`` ends a row. Always ready while a LOAD executes.
    act_wr_addr : Out(address_bits(act_depth)), act_wr_data : Out(ArrayLayout(signed(8), rows)), act_wr_en : Out(1)
    wgt_wr_addr : Out(address_bits(wgt_depth)), wgt_wr_data : Out(ArrayLayout(signed(8), cols)), wgt_wr_en : Out(1)
    param_wr_addr : Out(address_bits(param_depth)), param_wr_data : Out(unsigned(8 * (9*cols + 3))),
    param_wr_en : Out(1)
        Write ports of the three buffers (connect to ``lib.memory`` write ports); one entry per cycle at most.

    Latency, throughput and flow control
    ------------------------------------
    The first ``rd_cmd.valid`` rises :attr:`command_latency` cycles after the instruction handshake when no token
    must be waited for. Commands follow one per cycle while ``rd_cmd.ready`` allows, independent of the data (no
    limit on outstanding commands; data must return in command order). ``rd_data.ready`` is constant high during a
    LOAD, so rows stream at one bus word per cycle; a row's entry is written :attr:`write_latency` cycle after its
    last beat, and the push (or fault) pulse comes with the last write. The next instruction is accepted the cycle
    after that. A SYNC pops, pushes in the next cycle and is done. ``rd_cmd.valid`` never depends on
    ``rd_cmd.ready`` and, once raised, holds with its payload until the handshake.
    """

    def __init__(self, *, rows, cols, act_depth, wgt_depth, param_depth, data_width=64, addr_width=32):
        check_array_size(rows, cols)
        for name, value in (("ACT depth", act_depth), ("WGT depth", wgt_depth), ("PARAM depth", param_depth)):
            check_depth(name, value)
        check_bus(data_width, addr_width)
        self._rows, self._cols = rows, cols
        self._depths = {Buffer.ACT: act_depth, Buffer.WGT: wgt_depth, Buffer.PARAM: param_depth}
        self._data_width, self._addr_width = data_width, addr_width
        super().__init__({
            "instr": In(stream.Signature(queue_entry_layout())),
            "pop_next": Out(token_signature()),
            "push_next": Out(1),
            "abort": In(1),
            "abort_index": In(INDEX_WIDTH),
            "fault": Out(1),
            "fault_index": Out(INDEX_WIDTH),
            "busy": Out(1),
            "idle": Out(1),
            "rd_cmd": Out(stream.Signature(read_command_layout(addr_width, data_width))),
            "rd_data": In(stream.Signature(read_data_layout(data_width))),
            "act_wr_addr": Out(address_bits(act_depth)),
            "act_wr_data": Out(data.ArrayLayout(signed(8), rows)),
            "act_wr_en": Out(1),
            "wgt_wr_addr": Out(address_bits(wgt_depth)),
            "wgt_wr_data": Out(data.ArrayLayout(signed(8), cols)),
            "wgt_wr_en": Out(1),
            "param_wr_addr": Out(address_bits(param_depth)),
            "param_wr_data": Out(unsigned(8 * param_entry_bytes(cols))),
            "param_wr_en": Out(1),
        })

    rows = property(lambda self: self._rows)
    cols = property(lambda self: self._cols)
    act_depth = property(lambda self: self._depths[Buffer.ACT])
    wgt_depth = property(lambda self: self._depths[Buffer.WGT])
    param_depth = property(lambda self: self._depths[Buffer.PARAM])
    data_width = property(lambda self: self._data_width)
    addr_width = property(lambda self: self._addr_width)

    @property
    def bytes_per_word(self) -> int:
        return self._data_width // 8

    def entry_bytes(self, buffer: Buffer) -> int:
        """Bytes in one entry of ``buffer``."""
        return {Buffer.ACT: self._rows, Buffer.WGT: self._cols, Buffer.PARAM: param_entry_bytes(self._cols)}[Buffer(buffer)]

    @property
    def command_latency(self) -> int:
        """Cycles from the instruction handshake to the first ``rd_cmd.valid`` (no token wait)."""
        return 2

    @property
    def write_latency(self) -> int:
        """Cycles from a row's last ``rd_data`` handshake to its buffer write (``*_wr_en`` high)."""
        return 1

    def elaborate(self, platform):
        m = Module()
        nbytes = self.bytes_per_word
        obits = word_offset_bits(self._data_width)
        entry_size = max(self.entry_bytes(b) for b in Buffer)
        # Beats of a row: at most the entry plus a partial word on either side.
        max_beats = (nbytes - 1 + entry_size + nbytes - 1) // nbytes

        entry = Signal(queue_entry_layout())
        ins = data.View(instruction_layout(Opcode.LOAD), entry.word)  # token flags sit at the same bits in a SYNC
        is_sync = entry.word[:3] == Opcode.SYNC
        droppable = abort_register(m, self, entry)
        m.d.comb += self.fault_index.eq(entry.index)

        # ---- Command stage: one aligned read per row, as fast as the bus takes them.
        c_addr = Signal(self._addr_width)       # byte address of the next row to request
        c_left = Signal(16)                     # rows not yet requested
        # Beats of the next row's read, as a register (set with ``c_addr``), so the command's payload leaves flops
        # and the AXI master's burst arithmetic does not start behind this adder.
        c_beats = Signal.like(self.rd_cmd.payload.beats)

        def row_beats(addr_low):
            """Bus words a row of ``x_size`` bytes starting at byte offset ``addr_low`` in a word spans."""
            return (addr_low + ins.x_size + (nbytes - 1)) >> obits
        # ---- Data stage: realign the beats of the current row into the entry being assembled.
        d_offset = Signal(obits)                # start offset of the row whose beats arrive
        d_left = Signal(16)                     # rows not yet written
        d_addr = Signal(16)                     # buffer entry of that row
        beat_sel = Signal(max_beats + 1, init=1)  # one-hot index of the next beat within its row
        # entry bytes received so far; like wr_data no reset (every byte kept is written by the row's beats first)
        assembly = Signal(8 * entry_size, reset_less=True)
        error = Signal()
        # ---- Registered buffer write.
        wr_en = Signal()
        wr_buffer = Signal(2)
        wr_addr = Signal(16)
        wr_data = Signal(8 * entry_size, reset_less=True)

        executing = Signal()
        beat = Signal()
        m.d.comb += [
            self.rd_cmd.valid.eq(executing & (c_left != 0)),
            self.rd_cmd.payload.addr.eq(Cat(Const(0, obits), c_addr[obits:])),
            self.rd_cmd.payload.beats.eq(c_beats),
            self.rd_data.ready.eq(executing),
            beat.eq(self.rd_data.valid & self.rd_data.ready),
        ]
        with m.If(self.rd_cmd.valid & self.rd_cmd.ready):
            m.d.sync += [c_addr.eq(c_addr + ins.stride), c_left.eq(c_left - 1),
                         c_beats.eq(row_beats((c_addr[:obits] + ins.stride[:obits])[:obits]))]

        # Stream byte p of a row is entry byte p - offset. Beat k brings stream bytes kB..kB+B-1; rotated by the
        # offset, its byte j is entry byte q with q % B == j and q // B == k - (offset + j >= B).
        rotated = rotate_bytes(m, self.rd_data.payload.data, d_offset, nbytes, "rotated")
        wraps = [Signal(name=f"wraps{j}") for j in range(nbytes)]
        m.d.comb += [wraps[j].eq(d_offset + j >= nbytes) for j in range(nbytes)]
        merged = []
        for q in range(entry_size):
            j, k = q % nbytes, q // nbytes
            take = Mux(wraps[j], beat_sel[k + 1], beat_sel[k])
            merged.append(Mux(take, rotated[j], assembly[8 * q:8 * q + 8]))
        merged = Cat(*merged)
        # Entry bytes from x_size on are zero; x_size is constant during a LOAD.
        keep = Cat(*[(ins.x_size > q).replicate(8) for q in range(entry_size)])

        m.d.sync += wr_en.eq(0)
        with m.If(beat):
            m.d.sync += [assembly.eq(merged), beat_sel.eq(beat_sel << 1),
                         error.eq(error | self.rd_data.payload.error)]
            with m.If(self.rd_data.payload.last):
                m.d.sync += [
                    beat_sel.eq(1),
                    wr_en.eq(1), wr_addr.eq(d_addr), wr_data.eq(merged & keep), wr_buffer.eq(ins.buffer),
                    d_addr.eq(d_addr + 1), d_left.eq(d_left - 1), d_offset.eq(d_offset + ins.stride[:obits]),
                ]

        with m.FSM(name="control") as fsm:
            with m.State("IDLE"):
                m.d.comb += self.instr.ready.eq(1)
                with m.If(self.instr.valid):
                    m.d.sync += entry.eq(self.instr.payload)
                    m.next = "POP"
            with m.State("POP"):
                m.d.comb += self.pop_next.valid.eq(ins.pop_next & ~droppable)
                with m.If(droppable):
                    m.next = "IDLE"
                with m.Elif(~ins.pop_next | self.pop_next.ready):
                    with m.If(is_sync):
                        m.next = "SYNC"
                    with m.Else():
                        m.d.sync += [
                            c_addr.eq(ins.dram_addr), c_left.eq(ins.y_size),
                            c_beats.eq(row_beats(ins.dram_addr[:obits])),
                            d_offset.eq(ins.dram_addr[:obits]), d_left.eq(ins.y_size), d_addr.eq(ins.buf_addr),
                            beat_sel.eq(1), error.eq(0),
                        ]
                        m.next = "EXECUTE"
            with m.State("SYNC"):
                m.d.comb += self.push_next.eq(ins.push_next & ~droppable)
                m.next = "IDLE"
            with m.State("EXECUTE"):
                m.d.comb += executing.eq(1)
                with m.If(beat & self.rd_data.payload.last & (d_left == 1)):
                    m.next = "FINISH"
            with m.State("FINISH"):
                # The last entry is being written in this cycle.
                m.d.comb += [self.push_next.eq(ins.push_next & ~error), self.fault.eq(error)]
                m.next = "IDLE"

        for buffer, prefix in ((Buffer.ACT, "act"), (Buffer.WGT, "wgt"), (Buffer.PARAM, "param")):
            m.d.comb += [
                getattr(self, f"{prefix}_wr_addr").eq(wr_addr),
                getattr(self, f"{prefix}_wr_data").eq(wr_data[:8 * self.entry_bytes(buffer)]),
                getattr(self, f"{prefix}_wr_en").eq(wr_en & (wr_buffer == buffer)),
            ]
        m.d.comb += [
            self.busy.eq(fsm.ongoing("SYNC") | fsm.ongoing("EXECUTE") | fsm.ongoing("FINISH")),
            self.idle.eq(fsm.ongoing("IDLE")),
        ]
        return m
