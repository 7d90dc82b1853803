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
    """Weight-stationary multiply-accumulate cell with a double-buffered (active/shadow) weight.

    Every cycle the PE multiplies the activation arriving from the left by the weight in the bank named by the
    activation's ``bank`` bit, adds the partial sum arriving from above, and registers both the sum (down) and the
    activation (right). Because the bank bit travels with the activation, a new weight tile written into the idle
    bank takes effect exactly when the first activation of the next tile reaches this PE: tiles stream back to
    back without draining the array.

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
        ``a_in`` delayed by one cycle, to the right neighbour.
    psum_in : In(signed(acc_width))
        Partial sum from the PE above (0 at the top row).
    psum_out : Out(signed(acc_width))
        ``psum_in + a_in.data * weight[a_in.bank]``, registered.
    w_data, w_bank, w_we : In
        Weight write port: when ``w_we`` is high, ``weight[w_bank] <= w_data`` at the clock edge (a write in the
        same cycle as a read of that bank is seen by the next cycle).

    Latency: 1 cycle for both outputs. Throughput: one MAC per cycle. No flow control: the array never stalls.
    """

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
        """Cycles from ``a_in``/``psum_in`` to ``a_out``/``psum_out``."""
        return 1

    def elaborate(self, platform):
        m = Module()
        weights = [Signal(signed(self._w_width), name=f"weight{b}") for b in range(2)]
        with m.If(self.w_we):
            with m.If(self.w_bank):
                m.d.sync += weights[1].eq(self.w_data)
            with m.Else():
                m.d.sync += weights[0].eq(self.w_data)
        weight = Mux(self.a_in.bank, weights[1], weights[0])
        product = self.a_in.data * weight
        m.d.sync += [
            self.a_out.eq(self.a_in),
            self.psum_out.eq((self.psum_in + product)[:self._acc_width]),
        ]
        return m
