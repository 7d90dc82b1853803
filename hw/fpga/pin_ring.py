"""A pin ring: a synthesizable wrapper that gives a many-port design a five-pin top level for FPGA synthesis.

The accelerator has well over a thousand port bits; a CABGA381 package has fewer than 200 user pins and an SG48 about
forty. Synthesizing the bare design would fail placement (too many I/Os), and leaving ports unconnected lets the
synthesizer delete everything that does not reach a pin. The :class:`PinRing` keeps every port observable with two
scan chains, much like a JTAG boundary scan:

* every design input bit is driven by a flop of a *hold* register, loaded in parallel from an *input shift register*
  that is filled serially from the ``sdi`` pin;
* every design output bit is *captured* into an output shift register that is shifted out serially to the ``sdo``
  pin.

So every input is a flop output whose value can be set from a pin and every output bit reaches a flop that reaches a
pin: nothing can be optimised away, and the timing the place-and-router reports is register-to-register inside the
design (I/O pins only touch the chain ends and the ``update`` enable).
"""

from dataclasses import dataclass

from amaranth.hdl import Cat, Module, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["PinRing", "PinRingField", "PIN_RING_PINS"]

#: The top-level pins of a design wrapped in a pin ring (``clk`` and ``rst`` are the ``sync`` domain's).
PIN_RING_PINS = ("clk", "rst", "sdi", "update", "sdo")


@dataclass(frozen=True)
class PinRingField:
    """Where one design port sits in a scan chain: bits ``offset .. offset + width - 1``."""

    name: str
    offset: int
    width: int


def _port_name(path) -> str:
    # The same name Amaranth gives the flattened Verilog port: path components joined by "__".
    return "__".join(str(part) for part in path)


class PinRing(wiring.Component):
    """Wrap ``design`` so that all of its ports are reachable through five pins.

    Chain order: the flattened ports of ``design.signature`` in signature order, the first port at bit 0 and each
    port's least significant bit first. Both chains shift towards bit 0: ``sdi`` enters at the top of the input
    shift register and ``sdo`` shows bit 0 of the output shift register. A value is therefore shifted in least
    significant bit first, and outputs come out least significant bit first.

    Parameters
    ----------
    design : wiring.Component
        The design to wrap; it is added as the submodule ``design`` and clocked by the ``sync`` domain.

    Members
    -------
    sdi : In(1)
        Serial data in: enters the top of the input shift register in every cycle in which ``update`` is low.
    update : In(1)
        Load/capture. In a cycle in which it is high, the clock edge copies the input shift register into the hold
        register that drives the design's inputs, and captures the design's outputs (their values in that cycle) into
        the output shift register. Neither chain shifts in that cycle.
    sdo : Out(1)
        Serial data out: bit 0 of the output shift register, a flop output.

    Latency and throughput: loading a full input vector takes :attr:`load_cycles` cycles (``input_width`` shifts and
    one ``update``); the design sees it from the cycle after the ``update`` edge. Unloading takes
    :attr:`unload_cycles` cycles after the capturing ``update`` edge; ``sdo`` shows output bit ``k`` in the ``k``-th
    cycle after that edge (``k = 0`` first) while ``update`` stays low. The chains have no flow control.
    """

    sdi: In(1)
    update: In(1)
    sdo: Out(1)

    def __init__(self, design):
        if not isinstance(design, wiring.Component):
            raise TypeError(f"Pin ring design must be an amaranth.lib.wiring.Component, not {design!r}")
        inputs, outputs = [], []
        in_offset = out_offset = 0
        for path, member, value in design.signature.flatten(design):
            width = len(Value.cast(value))
            if width == 0:
                continue
            if member.flow == In:
                inputs.append((PinRingField(_port_name(path), in_offset, width), value))
                in_offset += width
            else:
                outputs.append((PinRingField(_port_name(path), out_offset, width), value))
                out_offset += width
        if out_offset == 0:
            raise ValueError(f"Pin ring design must have at least one output bit, or synthesis removes all of it; "
                             f"{type(design).__name__} has none")
        self._design = design
        self._inputs, self._outputs = inputs, outputs
        self._input_width, self._output_width = in_offset, out_offset
        super().__init__()

    design = property(lambda self: self._design)
    input_width = property(lambda self: self._input_width, doc="Bits in the input chain (all design input bits).")
    output_width = property(lambda self: self._output_width, doc="Bits in the output chain (all design output bits).")

    @property
    def input_fields(self) -> tuple[PinRingField, ...]:
        """Position of every design input port in the input chain."""
        return tuple(field for field, _ in self._inputs)

    @property
    def output_fields(self) -> tuple[PinRingField, ...]:
        """Position of every design output port in the output chain."""
        return tuple(field for field, _ in self._outputs)

    @property
    def load_cycles(self) -> int:
        """Cycles to load one input vector: one shift per input bit, then one ``update``."""
        return self._input_width + 1

    @property
    def unload_cycles(self) -> int:
        """Cycles after a capturing ``update`` edge until the last output bit has been shown on ``sdo``."""
        return self._output_width

    @property
    def flop_count(self) -> int:
        """Flops the ring adds around the design: input shift + hold registers and the output shift register."""
        return 2 * self._input_width + self._output_width

    def elaborate(self, platform):
        m = Module()
        m.submodules.design = self._design

        if self._input_width:
            shift_in = Signal(self._input_width)
            hold = Signal(self._input_width)
            with m.If(self.update):
                m.d.sync += hold.eq(shift_in)
            with m.Else():
                m.d.sync += shift_in.eq(Cat(shift_in[1:], self.sdi))
            for field, value in self._inputs:
                m.d.comb += Value.cast(value).eq(hold[field.offset:field.offset + field.width])

        shift_out = Signal(self._output_width)
        with m.If(self.update):
            m.d.sync += shift_out.eq(Cat(*(Value.cast(value) for _, value in self._outputs)))
        with m.Else():
            m.d.sync += shift_out.eq(shift_out[1:])
        m.d.comb += self.sdo.eq(shift_out[0])
        return m
