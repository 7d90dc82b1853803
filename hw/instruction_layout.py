"""Hardware views of the ISA: bit layouts built from :data:`hw.isa.FIELDS`, and the unit queue entry.

The encoding is defined once, in :mod:`hw.isa`; this module only turns its field tables into Amaranth
``data.StructLayout``\\ s so that the dispatcher and the units read fields by name (``view.buf_addr``) instead of
slicing bits by hand.
"""

from amaranth import unsigned
from amaranth.lib import data, stream

from .isa import FIELDS, INSTRUCTION_BITS, Opcode

__all__ = ["INDEX_WIDTH", "instruction_layout", "queue_entry_layout", "token_signature"]

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
