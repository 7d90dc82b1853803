"""The weight-stationary systolic array: ``rows x cols`` processing elements."""

from amaranth import Module, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .pe import MULTIPLIERS, ProcessingElement, activation_token, check_widths

__all__ = ["FABRIC_MULTIPLIERS", "SystolicArray", "check_array_size", "check_dsp_pes", "check_pe_multiplier"]

#: Multipliers a PE not on a DSP block may use (see :data:`~hw.pe.MULTIPLIERS`).
FABRIC_MULTIPLIERS = tuple(kind for kind in MULTIPLIERS if kind != "dsp")


def check_array_size(rows, cols):
    for name, value in (("Row count", rows), ("Column count", cols)):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, not {value!r}")


def check_dsp_pes(dsp_pes, rows, cols):
    """Validate the number of PEs whose multiplier is a DSP block: an integer from 0 to ``rows * cols``."""
    if not isinstance(dsp_pes, int) or isinstance(dsp_pes, bool) or not 0 <= dsp_pes <= rows * cols:
        raise ValueError(f"DSP PE count must be an integer from 0 to rows * cols = {rows * cols}, not {dsp_pes!r}")


def check_pe_multiplier(pe_multiplier):
    """Validate the multiplier of the PEs not on DSP blocks: one of :data:`FABRIC_MULTIPLIERS`."""
    if pe_multiplier not in FABRIC_MULTIPLIERS:
        raise ValueError(f"PE fabric multiplier must be one of {', '.join(map(repr, FABRIC_MULTIPLIERS))}, "
                         f"not {pe_multiplier!r}")


class SystolicArray(wiring.Component):
    """A ``rows x cols`` grid of :class:`ProcessingElement`: activations move right, partial sums move down.

    PE ``(r, c)`` holds weight ``W[r, c]``. An activation vector ``x`` (one element per row) entered *skewed* - row
    ``r`` at cycle ``t + r * row_skew`` - produces ``sum_r x[r] * W[r, c]`` at the bottom of column ``c`` at cycle
    ``t + column_latency(c)``: the output is skewed one cycle per column. The skew and de-skew registers live in
    the GEMM engine.

    Timing follows from the PE's (see :class:`ProcessingElement`): an activation reaches PE ``(r, c)`` at
    ``t + r * psum_latency + c * activation_latency``, and PE ``(r - 1, c)``'s partial sum for it arrives exactly
    ``psum_skew`` cycles later when the row skew equals the PE's ``psum_latency``. With the five-stage PE that is
    one cycle per row, and column ``c``'s sum leaves at ``t + (rows - 1) + c + 5 = t + rows + c + 4``.

    A weight written into PE ``(r, c)`` in cycle ``X`` is used by activations reaching that PE after ``X``; a vector
    entered at ``t`` last reads row ``r`` of its bank at ``t + r + cols - 1``, so rewriting that bank one row per
    cycle may start ``cols - 1`` cycles after the last vector that uses it entered.

    Weights are written one array row per cycle into the idle bank (``w_row``, ``w_bank``, ``w_data``, ``w_we``);
    activations name the bank they use, so the next tile's weights load while the current tile computes.

    Parameters
    ----------
    rows, cols : int
        Array size. ``rows`` is the reduction (K) depth of one pass, ``cols`` the number of output channels.
    a_width, w_width, acc_width : int
        Operand and partial-sum widths (see :class:`ProcessingElement`).
    dsp_pes : int
        How many PEs build their product on a DSP block (``multiplier="dsp"``) instead of in the fabric: the first
        ``dsp_pes`` in row-major order, so whole rows of them chain along the device's DSP rows. Timing and results
        do not change; the FPGA flow sets it to the DSP blocks the epilogue leaves over when an array is too large
        for the fabric (default 0).
    pe_multiplier : str
        The multiplier of the other PEs: ``"fabric"`` (default) or ``"carry"`` (ECP5 carry cells that take the AND
        gates, see :class:`~hw.pe.ProcessingElement`); the FPGA flow picks ``"carry"`` on ECP5. Same timing and
        results.

    Members
    -------
    a_in : In(ArrayLayout(activation_token, rows))
        Row ``r``'s activation token, entering PE ``(r, 0)``.
    psum_out : Out(ArrayLayout(signed(acc_width), cols))
        Column sums from the bottom row (registered).
    w_data : In(ArrayLayout(signed(w_width), cols)); w_row : In(range(rows)); w_bank, w_we : In(1)
        Weight write port: one array row per cycle.

    Latency: ``rows + c + 4`` cycles from row 0's token to column ``c``'s sum (see :meth:`column_latency`).
    Throughput: one activation vector per cycle; ``rows * cols`` MACs per cycle. No flow control.
    """

    def __init__(self, *, rows, cols, a_width=8, w_width=8, acc_width=32, dsp_pes=0, pe_multiplier="fabric"):
        check_array_size(rows, cols)
        check_widths(a_width, w_width, acc_width)
        check_dsp_pes(dsp_pes, rows, cols)
        check_pe_multiplier(pe_multiplier)
        self._pe_multiplier = pe_multiplier
        self._rows, self._cols = rows, cols
        self._a_width, self._w_width, self._acc_width = a_width, w_width, acc_width
        self._dsp_pes = dsp_pes
        self._pes = [[ProcessingElement(a_width=a_width, w_width=w_width, acc_width=acc_width,
                                        multiplier="dsp" if r * cols + c < dsp_pes else pe_multiplier)
                      for c in range(cols)] for r in range(rows)]
        super().__init__({
            "a_in": In(data.ArrayLayout(activation_token(a_width), rows)),
            "psum_out": Out(data.ArrayLayout(signed(acc_width), cols)),
            "w_data": In(data.ArrayLayout(signed(w_width), cols)),
            "w_row": In(range(rows)),
            "w_bank": In(1),
            "w_we": In(1),
        })

    rows = property(lambda self: self._rows)
    cols = property(lambda self: self._cols)
    acc_width = property(lambda self: self._acc_width)
    dsp_pes = property(lambda self: self._dsp_pes)
    pe_multiplier = property(lambda self: self._pe_multiplier)

    @property
    def row_skew(self):
        """Cycles between the entries of consecutive rows of one vector: the PE's ``psum_latency`` (1)."""
        return self._pes[0][0].psum_latency

    def column_latency(self, col):
        """Cycles from a vector's row-0 entry to its sum leaving the bottom of column ``col``: ``rows + col + 4``."""
        if isinstance(col, bool) or not isinstance(col, int) or not 0 <= col < self._cols:
            raise ValueError(f"Column must lie in [0, {self._cols}), not {col!r}")
        pe = self._pes[0][0]
        return (self._rows - 1) * self.row_skew + col * pe.activation_latency + pe.latency

    def elaborate(self, platform):
        m = Module()
        pes = self._pes
        for r in range(self._rows):
            for c in range(self._cols):
                pe = pes[r][c]
                m.submodules[f"pe_{r}_{c}"] = pe
                m.d.comb += [
                    pe.a_in.eq(self.a_in[r] if c == 0 else pes[r][c - 1].a_out),
                    pe.psum_in.eq(0 if r == 0 else pes[r - 1][c].psum_out),
                    pe.w_data.eq(self.w_data[c]),
                    pe.w_bank.eq(self.w_bank),
                    pe.w_we.eq(self.w_we & (self.w_row == r)),
                ]
        for c in range(self._cols):
            m.d.comb += self.psum_out[c].eq(pes[self._rows - 1][c].psum_out)
        return m
