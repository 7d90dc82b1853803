"""The ECP5 carry cell (``CCU2C``) and adders built from it whose inputs are ANDs of two signals.

Yosys maps every adder to ``CCU2C`` cells but uses only two of each half's four LUT inputs, so an adder of AND
terms - the partial products of a multiplier - costs a LUT4 per AND on top of the chain. A ``CCU2C`` half can
take the ANDs itself: its carry logic computes ``COUT = LUT4 ? CIN : LUT2``, where ``LUT4`` is the half's 16-bit
table over ``(A, B, C, D)`` and ``LUT2`` the same table's first four entries (``C = D = 0``). With the table
``(A & B) ^ (C & D)`` the generate term ``LUT2 = A & B`` is the right one whenever the two AND terms are equal, so
one half adds ``(A & B) + (C & D)`` with no other logic (:func:`and_pair_adder`).

:class:`CCU2C` elaborates to the vendor primitive when the platform asks for ECP5 primitives
(:class:`ECP5Primitives`, which the FPGA flow passes to Verilog generation for ECP5 targets) and otherwise to an
exact model of the primitive - the same tables looked up the same way - so the Amaranth simulator, Icarus Verilog
and Verilator run the same design that is placed.
"""

from amaranth import Cat, Const, Instance, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["CCU2C", "ECP5Primitives", "and_pair_adder", "lut_init", "AND_PAIR_ADD", "AND_PAIR_SUB"]


def lut_init(function):
    """The 16-bit table of a LUT4 computing ``function(a, b, c, d)`` (each 0 or 1): bit ``8d + 4c + 2b + a``."""
    init = 0
    for index in range(16):
        a, b, c, d = (index >> 0) & 1, (index >> 1) & 1, (index >> 2) & 1, (index >> 3) & 1
        init |= (int(function(a, b, c, d)) & 1) << index
    return init


#: One bit of ``(C & D) + (A & B)``: the propagate table, whose ``C = D = 0`` quarter (``A & B``) generates.
AND_PAIR_ADD = lut_init(lambda a, b, c, d: (c & d) ^ (a & b))
#: One bit of ``(C & D) - (A & B)`` as ``(C & D) + ~(A & B) + 1`` (carry in 1): the subtrahend must sit on ``A``/``B``,
#: so that the generate quarter ``~(A & B)`` equals the minuend whenever the propagate is 0.
AND_PAIR_SUB = lut_init(lambda a, b, c, d: (c & d) ^ (1 - (a & b)))


class ECP5Primitives:
    """Platform marker for Verilog generation: blocks with a vendor primitive (:class:`CCU2C`) instantiate it.

    Pass as ``verilog.convert(..., platform=ECP5Primitives())`` for Yosys' ``synth_ecp5``. Without it every such
    block elaborates to its exact behavioural model, which any simulator runs."""

    ecp5_primitives = True


class CCU2C(wiring.Component):
    """One ECP5 two-bit carry cell: two LUT4s and the carry logic between them.

    For each half ``k`` (0, then 1): ``S = LUT4 ^ CIN`` and ``COUT = LUT4 ? CIN : LUT2``, where ``LUT4`` is
    ``init[k]`` looked up at index ``{D, C, B, A}`` and ``LUT2`` at ``{0, 0, B, A}``; half 0's carry out is half 1's
    carry in. The ``INJECT1`` options are "NO" (the carry chain is used).

    Parameters
    ----------
    init0, init1 : int
        The halves' 16-bit LUT tables (see :func:`lut_init`).

    Members
    -------
    a0, b0, c0, d0, a1, b1, c1, d1, cin : In(1)
    s0, s1, cout : Out(1)

    Combinational: no latency, no state.
    """

    a0: In(1)
    b0: In(1)
    c0: In(1)
    d0: In(1)
    a1: In(1)
    b1: In(1)
    c1: In(1)
    d1: In(1)
    cin: In(1)
    s0: Out(1)
    s1: Out(1)
    cout: Out(1)

    def __init__(self, *, init0, init1):
        for name, value in (("init0", init0), ("init1", init1)):
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 1 << 16:
                raise ValueError(f"CCU2C {name} must be a 16-bit LUT table (0 to 0xffff), not {value!r}")
        self._init = (init0, init1)
        super().__init__()

    init0 = property(lambda self: self._init[0])
    init1 = property(lambda self: self._init[1])

    def elaborate(self, platform):
        if getattr(platform, "ecp5_primitives", False):
            return Instance(
                "CCU2C",
                p_INIT0=Const(self._init[0], 16), p_INIT1=Const(self._init[1], 16),
                p_INJECT1_0="NO", p_INJECT1_1="NO",
                i_A0=self.a0, i_B0=self.b0, i_C0=self.c0, i_D0=self.d0,
                i_A1=self.a1, i_B1=self.b1, i_C1=self.c1, i_D1=self.d1,
                i_CIN=self.cin, o_S0=self.s0, o_S1=self.s1, o_COUT=self.cout)
        m = Module()
        carry = self.cin
        halves = ((self.a0, self.b0, self.c0, self.d0, self.s0), (self.a1, self.b1, self.c1, self.d1, self.s1))
        for k, (a, b, c, d, s) in enumerate(halves):
            lut4 = Signal(name=f"lut4_{k}")
            lut2 = Signal(name=f"lut2_{k}")
            carry_out = Signal(name=f"carry{k}")
            table = Const(self._init[k], 16)
            m.d.comb += [
                lut4.eq(table.bit_select(Cat(a, b, c, d), 1)),
                lut2.eq(table.bit_select(Cat(a, b), 1)),
                s.eq(lut4 ^ carry),
                carry_out.eq(Mux(lut4, carry, lut2)),
            ]
            carry = carry_out
        m.d.comb += self.cout.eq(carry)
        return m


def and_pair_adder(m, name, terms, *, subtract=False):
    """Add (or subtract) two operands whose bits are ANDs of two signals, on a chain of :class:`CCU2C` cells.

    ``terms`` gives each result bit, least significant first, as ``(x, y)``: ``x`` and ``y`` are ``(p, q)`` pairs
    meaning ``p & q``, or ``None`` for a 0 bit. Returns a Signal of ``len(terms)`` bits holding
    ``(X + Y) mod 2**n`` (or ``(X - Y) mod 2**n`` with ``subtract``), where ``X`` and ``Y`` are the operands those
    bits spell. The cells are added to ``m`` as submodules ``{name}_{i}``; no other logic is used.
    """
    width = len(terms)
    result = Signal(width, name=name)
    carry = Const(int(subtract), 1)
    table = AND_PAIR_SUB if subtract else AND_PAIR_ADD
    for i in range(0, width, 2):
        cell = CCU2C(init0=table, init1=table)
        m.submodules[f"{name}_{i // 2}"] = cell
        for k in range(2):
            j = i + k
            x, y = terms[j] if j < width else (None, None)
            # the minuend on C/D, the subtrahend (or the other addend) on A/B; an absent term is 0 & 0
            c, d = x if x is not None else (0, 0)
            a, b = y if y is not None else (0, 0)
            m.d.comb += [getattr(cell, f"a{k}").eq(a), getattr(cell, f"b{k}").eq(b),
                         getattr(cell, f"c{k}").eq(c), getattr(cell, f"d{k}").eq(d)]
            if j < width:
                m.d.comb += result[j].eq(getattr(cell, f"s{k}"))
        m.d.comb += cell.cin.eq(carry)
        carry = cell.cout
    return result
