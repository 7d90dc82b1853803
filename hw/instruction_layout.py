"""Hardware views of the ISA: bit layouts built from :data:`hw.isa.FIELDS`, and the unit queue entry.

The encoding is defined once, in :mod:`hw.isa`; this module turns its field tables into Amaranth
``data.StructLayout``\\ s so that the dispatcher and the units read fields by name (``view.buf_addr``) instead of
slicing bits by hand. :func:`abort_register` is the units' shared, registered decision to drop a queued
instruction after a fault.
"""

from amaranth import Mux, Signal, unsigned
from amaranth.lib import data, stream

from .isa import FIELDS, INSTRUCTION_BITS, Opcode

__all__ = ["INDEX_WIDTH", "abort_register", "instruction_layout", "queue_entry_layout", "token_signature"]

#: Width of an instruction's position in the program (ERROR_INDEX, PROG_LEN).
INDEX_WIDTH = 32


def instruction_layout(opcode: Opcode) -> data.StructLayout:
    """A 128-bit layout with the named fields of ``opcode`` at their ISA positions (reserved bits as padding)."""
    fields, position, pad = {}, 0, 0
    for name, lsb, width in sorted(FIELDS[Opcode(opcode)], key=lambda f: f[1]):
        if lsb > position:
            fields[f"_reserved{pad}"] = unsigned(lsb - position)
            pad += 1
        fields[name] = unsigned(width)
        position = lsb + width
    if position < INSTRUCTION_BITS:
        fields[f"_reserved{pad}"] = unsigned(INSTRUCTION_BITS - position)
    return data.StructLayout(fields)


def queue_entry_layout() -> data.StructLayout:
    """What the dispatcher hands a unit: the checked instruction word and its index in the program."""
    return data.StructLayout({"word": unsigned(INSTRUCTION_BITS), "index": unsigned(INDEX_WIDTH)})


def token_signature() -> stream.Signature:
    """A token pop: ``valid`` asks for a token, ``ready`` says one is there; the handshake takes it."""
    return stream.Signature(unsigned(0))


def abort_register(m, unit, entry):
    """A unit's registered abort decision: high in cycle T when ``unit.abort`` was high in T - 1 and the
    instruction held in ``entry`` in cycle T has an index above ``unit.abort_index`` of T - 1.

    ``entry`` is the unit's instruction register, loaded from ``unit.instr`` on its handshake; the compare is made
    on the index being loaded, so the decision is ready in the instruction's first cycle. Registering it keeps the
    32-bit compare against the accelerator's ERROR_INDEX register (on the other side of the chip) off the unit's
    control paths: an abort takes effect one cycle after it rises.
    """
    drop = Signal(name="abort_drop")
    loading = unit.instr.valid & unit.instr.ready
    index = Mux(loading, unit.instr.payload.index, entry.index)
    m.d.sync += drop.eq(unit.abort & (index > unit.abort_index))
    return drop
