"""The processing element: one weight-stationary int8 multiply-accumulate cell of the systolic array."""

from amaranth import Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .ecp5_carry import and_pair_adder

__all__ = ["MULTIPLIERS", "ProcessingElement", "activation_token", "check_widths", "partial_products",
           "partial_product_terms"]

#: How a PE builds its product: ``"fabric"`` (partial products in LUTs and carry chains), ``"carry"`` (the same
#: partial products with their AND gates folded into ECP5 carry cells, see :mod:`hw.ecp5_carry`) or ``"dsp"`` (an
#: inferred ``$mul`` that Yosys maps to a DSP block).
MULTIPLIERS = ("fabric", "carry", "dsp")


def check_widths(a_width, w_width, acc_width):
    """Validate operand and accumulator widths shared by the PE, the array and the engine."""
    for name, value in (("Activation width", a_width), ("Weight width", w_width), ("Accumulator width", acc_width)):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise TypeError(f"{name} must be a positive integer, not {value!r}")
    if acc_width < a_width + w_width:
        raise ValueError(
            f"Accumulator width must hold a full product of a {a_width}-bit activation and a {w_width}-bit weight "
            f"(at least {a_width + w_width} bits), not {acc_width}")


def partial_products(a, b):
    """The signed product ``a * b`` as pair sums of partial products: a list of ``(shift, value)`` with
    ``a * b == sum(value << shift)``.

    ``b``'s bits are taken two at a time (two's complement: the top bit weighs ``-2**(width-1)``); each pair is
    ``(a if b[i] else 0) + ((a if b[i+1] else 0) << 1)``: one AND level and one short carry chain in the fabric.
    """
    width = len(b)
    terms = []
    for i in range(0, width, 2):
        low = Mux(b[i], a, 0)
        if i == width - 1:                      # odd width: the sign bit alone
            terms.append((i, -low))
            continue
        high = Mux(b[i + 1], a, 0) << 1
        terms.append((i, low - high if i + 1 == width - 1 else low + high))
    return terms


def partial_product_terms(a, b):
    """:func:`partial_products` spelled bit by bit for :func:`~hw.ecp5_carry.and_pair_adder`: a list of
    ``(shift, terms, subtract)``, one pair sum each, whose value ``X + Y`` (or ``X - Y``) as a signed number of
    ``len(terms)`` bits equals :func:`partial_products`' term at the same shift.

    Each bit of an operand is an AND of an activation bit (sign-extended) and a weight bit: ``(a[j], b[i])``.
    """
    a_width, width = len(a), len(b)

    def bit(j, i):
        return None if j < 0 else (a[min(j, a_width - 1)], b[i])

    pairs = []
    for i in range(0, width, 2):
        if i == width - 1:                      # odd width: 0 - (a if b[i] else 0)
            pairs.append((i, [(None, bit(j, i)) for j in range(a_width + 1)], True))
            continue
        terms = [(bit(j, i), bit(j - 1, i + 1)) for j in range(a_width + 2)]
        pairs.append((i, terms, i + 1 == width - 1))
    return pairs


def activation_token(a_width):
    """Layout of what moves right through a row: an activation and the weight bank it is multiplied with."""
    return data.StructLayout({"data": signed(a_width), "bank": 1})


class ProcessingElement(wiring.Component):
    """Pipelined weight-stationary multiply-accumulate cell with a double-buffered (active/shadow) weight.

    An activation token arriving on ``a_in`` in cycle ``t`` goes through five registered stages (:attr:`STAGES`):

    1. ``select``: the activation and the weight of the bank its ``bank`` bit names are registered (the activation
       register is ``a_out``, which also feeds the right neighbour);
    2. ``partial``: the product's partial products are summed in pairs (one carry chain each) and registered;
    3. ``half``: the pair sums are added two by two and registered;
    4. ``multiply``: the halves are added into the full product, which is registered;
    5. ``accumulate``: the product plus ``psum_in`` (which must arrive in cycle ``t + 4``) is registered on
       ``psum_out``.

    The multiplier is built from partial products in the FPGA fabric (LUTs and carry chains, see
    :func:`partial_products`; with ``multiplier="carry"`` the AND gates of each pair sum sit in the LUTs of the ECP5
    carry cells that add them, see :mod:`hw.ecp5_carry`, which takes a PE from about 180 to 116 LUT4-equivalents),
    not inferred as a ``$mul`` that Yosys would map to DSP blocks: on ECP5 the DSP
    tiles sit in a few rows, so an array of DSP multipliers is stretched along them and its nearest-neighbour
    wiring congests the router (an 8x8 accelerator did not route), and a 16x16 array needs more multipliers than
    an ECP5-85k has (256 > 156). The requantization multipliers of the epilogue stay on DSP blocks.

    Every adder is a two-input carry chain between registers: Yosys merges a multi-operand sum into a carry-save
    tree of LUTs, which for this product cost 60% more logic (a PE is about 74 LUT4, 53 CCU2C and 146 flops).

    No register of the PE has a reset (``reset_less``): every value it holds is overwritten before it is used.
    Weights are written before the first activation that names their bank; an activation token or partial sum
    left in the pipeline by a reset belongs to a wavefront whose column sum the GEMM engine never writes (its
    sideband valid bit is reset), and a partial sum only ever adds products of its own wavefront. So the array adds
    no load to the reset net, which on an FPGA otherwise reaches every flop of the design (a 16x16 accelerator had
    66,600 flops on it).

    Because the bank bit travels with the activation and the weight is sampled in the cycle the activation
    arrives, a new weight tile written into the idle bank takes effect exactly with the first activation of the
    next tile: tiles stream back to back without draining the array, and the weight-reuse rule is the same as for
    an unpipelined PE.

    Parameters
    ----------
    a_width, w_width : int
        Signed activation and weight widths (8 for int8).
    acc_width : int
        Signed partial-sum width; must hold at least one full product. Sums wrap modulo ``2**acc_width``.
    multiplier : str
        ``"fabric"`` (default), ``"carry"`` or ``"dsp"`` (see :data:`MULTIPLIERS`). All three give the same results
        with the same timing; ``"carry"`` elaborates to ECP5 ``CCU2C`` cells under
        :class:`~hw.ecp5_carry.ECP5Primitives` and to their exact model otherwise.

    Members
    -------
    a_in : In(activation_token)
        Activation and bank select from the left neighbour (or the array edge).
    a_out : Out(activation_token)
        ``a_in`` delayed by :attr:`activation_latency` (1) cycle, to the right neighbour.
    psum_in : In(signed(acc_width))
        Partial sum from the PE above (0 at the top row), :attr:`psum_skew` (4) cycles after the matching ``a_in``.
    psum_out : Out(signed(acc_width))
        ``psum_in + a.data * weight[a.bank]`` for the activation ``a`` that arrived :attr:`latency` (5) cycles
        earlier, registered; :attr:`psum_latency` (1) cycle after ``psum_in``.
    w_data, w_bank, w_we : In
        Weight write port: when ``w_we`` is high, ``weight[w_bank] <= w_data`` at the clock edge. An activation
        arriving in the same cycle as a write to its bank still uses the old weight; one arriving in a later cycle
        uses the new one.

    Latency: :attr:`latency` (5) cycles from ``a_in`` to ``psum_out``, :attr:`psum_latency` (1) from ``psum_in``
    to ``psum_out``, :attr:`activation_latency` (1) from ``a_in`` to ``a_out``. Throughput: one MAC per cycle.
    No flow control: the array never stalls.
    """

    #: Registered stages from ``a_in`` to ``psum_out``, in order. ``a_out`` is the first stage's activation
    #: register; ``psum_in`` joins in the last stage.
    STAGES = ("select", "partial", "half", "multiply", "accumulate")

    def __init__(self, *, a_width=8, w_width=8, acc_width=32, multiplier="fabric"):
        check_widths(a_width, w_width, acc_width)
        if multiplier not in MULTIPLIERS:
            raise ValueError(f"PE multiplier must be one of {', '.join(map(repr, MULTIPLIERS))}, not {multiplier!r}")
        self._a_width, self._w_width, self._acc_width = a_width, w_width, acc_width
        self._multiplier = multiplier
        token = activation_token(a_width)
        super().__init__({
            "a_in": In(token),
            "a_out": Out(token),
            "psum_in": In(signed(acc_width)),
            "psum_out": Out(signed(acc_width)),
            "w_data": In(signed(w_width)),
            "w_bank": In(1),
            "w_we": In(1),
        })

    a_width = property(lambda self: self._a_width)
    w_width = property(lambda self: self._w_width)
    acc_width = property(lambda self: self._acc_width)
    multiplier = property(lambda self: self._multiplier)

    @property
    def latency(self):
        """Cycles from an activation on ``a_in`` to the partial sum it contributes to on ``psum_out``."""
        return len(self.STAGES)

    @property
    def activation_latency(self):
        """Cycles from ``a_in`` to ``a_out`` (``a_out`` is the first stage's register)."""
        return self.STAGES.index("select") + 1

    @property
    def psum_latency(self):
        """Cycles from ``psum_in`` to ``psum_out`` (the partial sum enters only the last stage)."""
        return len(self.STAGES) - self.STAGES.index("accumulate")

    @property
    def psum_skew(self):
        """Cycles by which ``psum_in`` must follow the ``a_in`` it is added to: ``latency - psum_latency``."""
        return self.latency - self.psum_latency

    def elaborate(self, platform):
        m = Module()
        weights = [Signal(signed(self._w_width), name=f"weight{b}", reset_less=True) for b in range(2)]
        with m.If(self.w_we):
            with m.If(self.w_bank):
                m.d.sync += weights[1].eq(self.w_data)
            with m.Else():
                m.d.sync += weights[0].eq(self.w_data)

        # select: the bank is chosen in the activation's arrival cycle, so the weight-reuse rule is that of an
        # unpipelined PE; the registered weight and activation feed the multiplier directly.
        weight = Signal(signed(self._w_width), reset_less=True)
        a_reg = Signal(activation_token(self._a_width), name="a_reg", reset_less=True)
        psum = Signal.like(self.psum_out, name="psum", reset_less=True)
        m.d.comb += [self.a_out.eq(a_reg), self.psum_out.eq(psum)]
        m.d.sync += [
            a_reg.eq(self.a_in),
            weight.eq(Mux(self.a_in.bank, weights[1], weights[0])),
        ]
        product = Signal(signed(self._a_width + self._w_width), reset_less=True)
        if self._multiplier == "dsp":
            # partial: the whole product from one multiplier between registers; half, multiply: two delay stages
            partial = Signal.like(product, name="product_partial", reset_less=True)
            half = Signal.like(product, name="product_half", reset_less=True)
            m.d.sync += [partial.eq(a_reg.data * weight), half.eq(partial), product.eq(half)]
        else:
            # partial: the weight's bits taken two at a time, each pair one carry chain
            if self._multiplier == "carry":
                sums = [(shift, and_pair_adder(m, f"pair_sum{i}", terms, subtract=subtract).as_signed())
                        for i, (shift, terms, subtract) in enumerate(partial_product_terms(a_reg.data, weight))]
            else:
                sums = partial_products(a_reg.data, weight)
            pairs = []
            for i, (shift, value) in enumerate(sums):
                pair = Signal(signed(len(value)), name=f"pair{i}", reset_less=True)
                m.d.sync += pair.eq(value)
                pairs.append((shift, pair))
            # half: the pair sums added two by two (one carry chain each)
            halves = []
            for i in range(0, len(pairs), 2):
                (shift, low), rest = pairs[i], pairs[i + 1:i + 2]
                value = low + sum(high << (high_shift - shift) for high_shift, high in rest)
                half = Signal(signed(len(value)), name=f"half{i // 2}", reset_less=True)
                m.d.sync += half.eq(value)
                halves.append((shift, half))
            # multiply: the halves added into the product (one carry chain for an 8-bit weight: two halves)
            m.d.sync += product.eq(sum(half << shift for shift, half in halves))
        # accumulate
        m.d.sync += psum.eq((self.psum_in + product)[:self._acc_width])
        return m
