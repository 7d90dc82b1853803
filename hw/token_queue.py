"""A dependency-token queue between two units: a counter with a push pulse and a pop handshake."""

from amaranth import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .instruction_layout import token_signature

__all__ = ["TokenQueue"]


class TokenQueue(wiring.Component):
    """Counts tokens pushed by one unit and popped by another.

    The dispatcher keeps each queue's count, in program order, within 0..255 (see ``docs/isa.md``); the hardware
    count can briefly exceed that by the pops already dispatched but not yet performed, so the counter is
    ``width`` bits (default 10) and can never wrap.

    Members
    -------
    push : In(1)
        One token is added in each cycle it is high.
    pop : In(token_signature())
        ``pop.ready`` is high while a token is available; a handshake takes one. A push in the same cycle as an
        empty-queue pop request is visible the next cycle.
    count : Out(width)
        Tokens held.

    Latency: 1 cycle from push to availability. Throughput: one push and one pop per cycle.
    """

    def __init__(self, *, width=10):
        if not isinstance(width, int) or width < 9:
            raise ValueError(f"Token counter width must be an integer of at least 9 bits, not {width!r}")
        super().__init__({"push": In(1), "pop": In(token_signature()), "count": Out(width)})

    def elaborate(self, platform):
        m = Module()
        taken = Signal()
        m.d.comb += [self.pop.ready.eq(self.count != 0), taken.eq(self.pop.valid & self.pop.ready)]
        with m.If(self.push & ~taken):
            m.d.sync += self.count.eq(self.count + 1)
        with m.Elif(~self.push & taken):
            m.d.sync += self.count.eq(self.count - 1)
        return m
