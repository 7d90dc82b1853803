"""Instruction fetch: reads the program from DRAM in bursts and hands 128-bit words to the dispatcher in order."""

from amaranth import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from .axi4_master import read_command_layout, read_data_layout
from .instruction_layout import INDEX_WIDTH
from .isa import INSTRUCTION_BITS, INSTRUCTION_BYTES

__all__ = ["InstructionFetch", "fetched_layout"]


def fetched_layout():
    """A fetched word: its index, whether a bus error hit any of its beats, and the end-of-program marker
    (``overrun``: PROG_LEN instructions were fetched without a HALT)."""
    return data.StructLayout({"word": unsigned(INSTRUCTION_BITS), "index": unsigned(INDEX_WIDTH),
                              "bus_error": 1, "overrun": 1})


class InstructionFetch(wiring.Component):
    """Prefetches instructions ``prog_addr + 16*i`` for ``i < prog_len`` into a FIFO.

    Reads are issued in bursts of up to ``burst`` instructions and only when the FIFO has room for every word
    already requested, so read data is never back-pressured. After the last instruction an ``overrun`` marker entry
    (index ``prog_len``) follows: the dispatcher faults on it if it was not stopped by a HALT first. ``stop`` ends
    the issuing of new reads; reads in flight still complete (their data is dropped once ``stop`` is high).

    Parameters
    ----------
    data_width : int
        AXI data width in bits: 32, 64 or 128 (an instruction is ``128 / data_width`` beats).
    addr_width : int
        AXI address width.
    burst : int
        Instructions per read command.
    depth : int
        Instructions the FIFO holds (at least ``burst``).

    Members
    -------
    start : In(1)
        Pulse: latch ``prog_addr`` (low 4 bits ignored) and ``prog_len`` and begin.
    stop : In(1)
        Level: issue no more reads.
    rd_cmd, rd_data
        To the AXI master (through the read arbiter).
    instr : Out(stream.Signature(fetched_layout()))
    idle : Out(1)
        No read command outstanding.
    """

    def __init__(self, *, data_width=64, addr_width=32, burst=4, depth=8):
        if data_width not in (32, 64, 128):
            raise ValueError(f"Instruction fetch data width must be 32, 64 or 128 bits, not {data_width!r}")
        if not isinstance(burst, int) or burst < 1 or not isinstance(depth, int) or depth < burst:
            raise ValueError(f"Fetch burst must be >= 1 and depth >= burst, not burst={burst!r} depth={depth!r}")
        self._data_width, self._addr_width, self._burst, self._depth = data_width, addr_width, burst, depth
        self._cmd_shape = read_command_layout(addr_width, data_width)
        self._data_shape = read_data_layout(data_width)
        super().__init__({
            "start": In(1),
            "stop": In(1),
            "prog_addr": In(addr_width),
            "prog_len": In(INDEX_WIDTH),
            "rd_cmd": Out(stream.Signature(self._cmd_shape)),
            "rd_data": In(stream.Signature(self._data_shape)),
            "instr": Out(stream.Signature(fetched_layout())),
            "idle": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        beats = INSTRUCTION_BITS // self._data_width
        m.submodules.fifo = fifo = SyncFIFO(width=fetched_layout().size, depth=self._depth)

        running = Signal()
        next_addr = Signal(self._addr_width)
        remaining = Signal(INDEX_WIDTH)      # instructions not yet requested
        marker_due = Signal()                # the overrun marker still has to be queued
        requested = Signal(range(self._depth + 1))  # requested, not yet in the FIFO
        outstanding = Signal(range(self._depth + 1))  # read commands without their last beat
        fetch_index = Signal(INDEX_WIDTH)    # index of the next word to assemble

        # Issue: a burst of n = min(burst, remaining) instructions when the FIFO can take them all. n is a
        # register kept equal to that minimum (set with ``remaining``), so the 32-bit compare is not on the path
        # from this block's registers into the AXI master's command accept.
        n = Signal(range(self._burst + 1))

        def burst_of(count):
            return Mux(count < self._burst, count, self._burst)

        with m.If(self.start):
            m.d.sync += [running.eq(1), next_addr.eq(self.prog_addr & ~(INSTRUCTION_BYTES - 1)),
                         remaining.eq(self.prog_len), n.eq(burst_of(self.prog_len)), marker_due.eq(1),
                         fetch_index.eq(0)]

        space = Signal(range(self._depth + 2))
        m.d.comb += space.eq(self._depth - fifo.level - requested)
        can_issue = running & ~self.stop & (n != 0) & (space >= n) & ~self.start
        m.d.comb += [
            self.rd_cmd.valid.eq(can_issue),
            self.rd_cmd.payload.addr.eq(next_addr),
            self.rd_cmd.payload.beats.eq(n * beats),
        ]
        issued = Signal()
        m.d.comb += issued.eq(self.rd_cmd.valid & self.rd_cmd.ready)
        with m.If(issued):
            m.d.sync += [next_addr.eq(next_addr + n * INSTRUCTION_BYTES), remaining.eq(remaining - n),
                         n.eq(burst_of(remaining - n))]

        # Assemble beats into words (data is always accepted: the FIFO space was reserved).
        beat = Signal(range(beats))
        shift = Signal(INSTRUCTION_BITS)
        error = Signal()
        word_done = Signal()
        m.d.comb += self.rd_data.ready.eq(1)
        beat_in = self.rd_data.valid
        assembled = Signal(INSTRUCTION_BITS)
        if beats == 1:
            m.d.comb += assembled.eq(self.rd_data.payload.data)
        else:
            m.d.comb += assembled.eq(Cat(shift[self._data_width:], self.rd_data.payload.data))
        entry = Signal(fetched_layout())
        m.d.comb += [entry.word.eq(assembled), entry.index.eq(fetch_index),
                     entry.bus_error.eq(error | self.rd_data.payload.error)]
        with m.If(beat_in):
            if beats > 1:
                m.d.sync += shift.eq(assembled)
            with m.If(beat == beats - 1):
                m.d.comb += word_done.eq(1)
                m.d.sync += [beat.eq(0), error.eq(0), fetch_index.eq(fetch_index + 1)]
            with m.Else():
                m.d.sync += [beat.eq(beat + 1), error.eq(error | self.rd_data.payload.error)]

        # After the last word (or at once for prog_len 0) queue the overrun marker.
        marker = Signal(fetched_layout())
        m.d.comb += [marker.index.eq(self.prog_len), marker.overrun.eq(1)]
        push_marker = running & marker_due & (remaining == 0) & (requested == 0) & ~self.stop & fifo.w_rdy \
            & ~word_done & ~self.start
        with m.If(word_done & ~self.stop):
            m.d.comb += [fifo.w_en.eq(1), fifo.w_data.eq(entry)]
        with m.Elif(push_marker):
            m.d.comb += [fifo.w_en.eq(1), fifo.w_data.eq(marker)]
            m.d.sync += marker_due.eq(0)

        # Bookkeeping of requested words and outstanding commands.
        with m.If(issued & ~word_done):
            m.d.sync += requested.eq(requested + n)
        with m.Elif(issued & word_done):
            m.d.sync += requested.eq(requested + n - 1)
        with m.Elif(~issued & word_done):
            m.d.sync += requested.eq(requested - 1)
        last_beat = beat_in & self.rd_data.payload.last
        with m.If(issued & ~last_beat):
            m.d.sync += outstanding.eq(outstanding + 1)
        with m.Elif(~issued & last_beat):
            m.d.sync += outstanding.eq(outstanding - 1)

        m.d.comb += [
            self.instr.valid.eq(fifo.r_rdy & ~self.stop),
            self.instr.payload.eq(fifo.r_data),
            fifo.r_en.eq(self.instr.ready | self.stop),
            self.idle.eq(outstanding == 0),
        ]
        return m
