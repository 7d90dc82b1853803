"""The processing element: one weight-stationary int8 multiply-accumulate cell of the systolic array."""

from amaranth import Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["ProcessingElement", "activation_token", "check_widths"]


def check_widths(a_width, w_width, acc_width):
    """Validate operand and accumulator widths shared by the PE, the array and the engine."""
    for name, value in (("Activation width", a_width), ("Weight width", w_width), ("Accumulator width", acc_width)):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise TypeError(f"{name} must be a positive integer, not {value!r}")
    if acc_width < a_width + w_width:
        raise ValueError(
            f"Accumulator width must hold a full product of a {a_width}-bit activation and a {w_width}-bit weight "
            f"(at least {a_width + w_width} bits), not {acc_width}")


def activation_token(a_width):
    """Layout of what moves right through a row: an activation and the weight bank it is multiplied with."""
    return data.StructLayout({"data": signed(a_width), "bank": 1})


class ProcessingElement(wiring.Component):
    """Pipelined weight-stationary multiply-accumulate cell with a double-buffered (active/shadow) weight.

    An activation token arriving on ``a_in`` in cycle ``t`` goes through three registered stages (:attr:`STAGES`):

    1. ``select``: the activation and the weight of the bank its ``bank`` bit names are registered (the activation
       register is ``a_out``, which also feeds the right neighbour);
    2. ``multiply``: their product is registered (an FPGA multiplier block between two registers);
    3. ``accumulate``: the product plus ``psum_in`` (which must arrive in cycle ``t + 2``) is registered on
       ``psum_out``.

    No path holds more than one of bank multiplexer, multiplier and adder. Because the bank bit travels with the
    activation and the weight is sampled in the cycle the activation arrives, a new weight tile written into the
    idle bank takes effect exactly with the first activation of the next tile: tiles stream back to back without
    draining the array, and the weight-reuse rule is the same as for an unpipelined PE.

    Parameters
    ----------
    a_width, w_width : int
        Signed activation and weight widths (8 for int8).
    acc_width : int
        Signed partial-sum width; must hold at least one full product. Sums wrap modulo ``2**acc_width``.

    Members
    -------
    a_in : In(activation_token)
        Activation and bank select from the left neighbour (or the array edge).
    a_out : Out(activation_token)
        ``a_in`` delayed by :attr:`activation_latency` (1) cycle, to the right neighbour.
    psum_in : In(signed(acc_width))
        Partial sum from the PE above (0 at the top row), :attr:`psum_skew` (2) cycles after the matching ``a_in``.
    psum_out : Out(signed(acc_width))
        ``psum_in + a.data * weight[a.bank]`` for the activation ``a`` that arrived :attr:`latency` (3) cycles
        earlier, registered; :attr:`psum_latency` (1) cycle after ``psum_in``.
    w_data, w_bank, w_we : In
        Weight write port: when ``w_we`` is high, ``weight[w_bank] <= w_data`` at the clock edge. An activation
        arriving in the same cycle as a write to its bank still uses the old weight; one arriving in a later cycle
        uses the new one.

    Latency: :attr:`latency` (3) cycles from ``a_in`` to ``psum_out``, :attr:`psum_latency` (1) from ``psum_in``
    to ``psum_out``, :attr:`activation_latency` (1) from ``a_in`` to ``a_out``. Throughput: one MAC per cycle.
    No flow control: the array never stalls.
    """

    #: Registered stages from ``a_in`` to ``psum_out``, in order. ``a_out`` is the first stage's activation
    #: register; ``psum_in`` joins in the last stage.
    STAGES = ("select", "multiply", "accumulate")

    def __init__(self, *, a_width=8, w_width=8, acc_width=32):
        check_widths(a_width, w_width, acc_width)
        self._a_width, self._w_width, self._acc_width = a_width, w_width, acc_width
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
        weights = [Signal(signed(self._w_width), name=f"weight{b}") for b in range(2)]
        with m.If(self.w_we):
            with m.If(self.w_bank):
                m.d.sync += weights[1].eq(self.w_data)
            with m.Else():
                m.d.sync += weights[0].eq(self.w_data)

        # select: the bank is chosen in the activation's arrival cycle, so the weight-reuse rule is that of an
        # unpipelined PE; the registered weight and activation feed the multiplier directly.
        weight = Signal(signed(self._w_width))
        m.d.sync += [
            self.a_out.eq(self.a_in),
            weight.eq(Mux(self.a_in.bank, weights[1], weights[0])),
        ]
        # multiply
        product = Signal(signed(self._a_width + self._w_width))
        m.d.sync += product.eq(self.a_out.data * weight)
        # accumulate
        m.d.sync += self.psum_out.eq((self.psum_in + product)[:self._acc_width])
        return m
