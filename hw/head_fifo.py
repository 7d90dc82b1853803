"""A first-word-fall-through FIFO whose head is a register: SyncFIFO's timing, with ``r_data`` leaving a flop."""

from amaranth import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

__all__ = ["HeadRegisterFIFO"]


class HeadRegisterFIFO(wiring.Component):
    """Cycle for cycle the same ports and behaviour as Amaranth's unbuffered ``SyncFIFO(width, depth)`` (a write is
    readable in the next cycle; ``level``, ``w_rdy`` and ``r_rdy`` identical), but ``r_data`` comes from a register.

    With ``SyncFIFO`` the head is an asynchronous read of LUT RAM, so whatever decodes ``r_data`` starts with the
    RAM's read delay and its routing. Here the head register is loaded one cycle ahead: on a read with more entries
    queued, from the RAM at the registered address ``consume + 1``; when the entry it needs is the one being
    written (the FIFO is empty, or holds only the entry being read), from ``w_data`` directly.

    Parameters
    ----------
    width : int
        Bits per entry.
    depth : int
        Entries (at least 1).

    Members
    -------
    w_data : In(width); w_en : In(1); w_rdy : Out(1)
        Write side: an entry is written when ``w_en & w_rdy``.
    r_data : Out(width); r_en : In(1); r_rdy : Out(1)
        Read side: ``r_data`` is the head while ``r_rdy``; it is consumed when ``r_en & r_rdy``.
    level : Out(range(depth + 1))
        Entries held.
    """

    def __init__(self, *, width: int, depth: int):
        if not isinstance(width, int) or isinstance(width, bool) or width < 1:
            raise ValueError(f"FIFO width must be a positive integer, not {width!r}")
        if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
            raise ValueError(f"FIFO depth must be a positive integer, not {depth!r}")
        self.width, self.depth = width, depth
        super().__init__({
            "w_data": In(width), "w_en": In(1), "w_rdy": Out(1),
            "r_data": Out(width), "r_en": In(1), "r_rdy": Out(1),
            "level": Out(range(depth + 1)),
        })

    def elaborate(self, platform):
        m = Module()
        depth = self.depth
        m.submodules.storage = storage = Memory(shape=self.width, depth=depth, init=[])
        w_port = storage.write_port()
        r_port = storage.read_port(domain="comb")

        def wrap(pointer):
            return Mux(pointer == depth - 1, 0, pointer + 1)

        produce = Signal(range(depth), name="produce")
        consume = Signal(range(depth), name="consume")
        after = Signal(range(depth), name="consume_next", init=1 % depth)  # consume + 1 (mod depth), a register
        head = Signal(self.width, name="head", reset_less=True)

        write = Signal()
        read = Signal()
        m.d.comb += [
            self.w_rdy.eq(self.level != depth),
            self.r_rdy.eq(self.level != 0),
            write.eq(self.w_en & self.w_rdy),
            read.eq(self.r_en & self.r_rdy),
            self.r_data.eq(head),
            w_port.addr.eq(produce), w_port.data.eq(self.w_data), w_port.en.eq(write),
            r_port.addr.eq(after),
        ]
        with m.If(write):
            m.d.sync += produce.eq(wrap(produce))
        with m.If(read):
            m.d.sync += [consume.eq(after), after.eq(wrap(after))]
        with m.If(write & ~read):
            m.d.sync += self.level.eq(self.level + 1)
        with m.Elif(read & ~write):
            m.d.sync += self.level.eq(self.level - 1)

        # The head register: the entry at consume in the next cycle.
        with m.If(read):
            with m.If(self.level >= 2):
                m.d.sync += head.eq(r_port.data)        # written at least a cycle ago
            with m.Elif(write):
                m.d.sync += head.eq(self.w_data)        # the only other entry is the one arriving now
        with m.Elif(write & (self.level == 0)):
            m.d.sync += head.eq(self.w_data)
        return m
