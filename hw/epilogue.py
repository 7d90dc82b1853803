"""The fused GEMM epilogue: bias add and int8 requantization of one accumulator row per cycle.

Each column ``c`` of a row computes ``s = wrap32(acc[c] + bias[c])`` and then either passes ``s`` through (raw
mode: through the same stages, with no shifts and a multiplier of 1, so a raw row costs no registers of its own) or
requantizes it exactly as :func:`sim.arith.requantize` does (``docs/int8-spec.md``)::

    y = SRDHM(wrap32(s << max(shift, 0)), multiplier)
    y = RDBPOT(y, max(-shift, 0))
    out = clamp(y + zero_point, act_min, act_max)

The arithmetic is split into short pipeline stages for FPGA timing. Three identities keep the stages small (each is
proved in the comments where they are used and checked bit-exactly by ``tests/hw/test_epilogue.py``):

* SRDHM: ``(a*b + nudge) / 2**31`` truncated toward zero equals ``floor((a*b + 2**30) / 2**31)`` for both nudges,
  which is ``((a*b >> 30) + 1) >> 1``: one short add on the top bits of the product.
* RDBPOT: adding ``2**(e-1)`` (non-negative ``y``) or ``2**(e-1) - 1`` (negative ``y``) before an arithmetic
  shift right by ``e`` rounds exact halves away from zero; both addends are 0 for ``e = 0``.
* Clamp: ``q + zero_point > act_max`` iff ``q > act_max - zero_point``, a 9-bit threshold computed per row
  up front; within the bounds only the low byte of ``q + zero_point`` is needed.

The 32x32 signed product is built from four 16x16 partial products (each fits one 18x18 DSP block, e.g. an ECP5
MULT18X18D) with registered inputs, registered partial products, a registered middle sum and a registered 64-bit
product. The valid/ready control keeps its wide ANDs in registers, so each stage's clock enable is one LUT from a
register and ``o.ready``.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["epilogue_params_layout", "Epilogue"]

_INT32_MAX = (1 << 31) - 1


def _check_cols(cols):
    # TypeError for every bad value, as Amaranth's own shape checks do.
    if isinstance(cols, bool) or not isinstance(cols, int) or cols <= 0:
        raise TypeError(f"Column count must be a positive integer, not {cols!r}")


def epilogue_params_layout(cols: int) -> data.StructLayout:
    """Layout of the per-row epilogue parameters for ``cols`` output columns.

    Fields
    ------
    bias : ArrayLayout(signed(32), cols)
        Added to each accumulator, wrapping modulo 2**32.
    multiplier : ArrayLayout(signed(32), cols)
        Per-column fixed-point multiplier ``M0`` (any int32; quantized models use [2**30, 2**31)).
    shift : ArrayLayout(signed(6), cols)
        Per-column power-of-two exponent in [-31, 31]: positive is a left shift before SRDHM (wrapping), negative a
        rounding right shift after it. ``-32`` is outside the spec; it gives RDBPOT by 32, which is always 0.
    zero_point : signed(8)
        Output zero point, added after the rounding shift.
    act_min, act_max : signed(8)
        Clamp bounds (``act_min = zero_point`` is a fused ReLU). Must satisfy ``act_min <= act_max``.
    raw : unsigned(1)
        When 1, output the wrapped int32 ``acc + bias`` and skip requantization.
    """
    _check_cols(cols)
    return data.StructLayout({
        "bias": data.ArrayLayout(signed(32), cols),
        "multiplier": data.ArrayLayout(signed(32), cols),
        "shift": data.ArrayLayout(signed(6), cols),
        "zero_point": signed(8),
        "act_min": signed(8),
        "act_max": signed(8),
        "raw": unsigned(1),
    })


class Epilogue(wiring.Component):
    """Bias add and per-column int8 requantization of accumulator rows, pipelined.

    Parameters
    ----------
    cols : int
        Number of columns (output channels) in each row; positive.

    Members
    -------
    i : In(stream.Signature(StructLayout({"acc": ArrayLayout(signed(32), cols), "params": epilogue_params_layout(cols)})))
        One accumulator row and the parameters that apply to it. Parameters travel with their row through the
        pipeline, so they may change from one row to the next.
    o : Out(stream.Signature(ArrayLayout(signed(32), cols)))
        The result row: the requantized int8 values sign-extended to 32 bits, or ``wrap32(acc + bias)`` when
        ``raw`` is set.

    Latency
    -------
    :attr:`latency` cycles (one per entry of :attr:`STAGES`, 12): a row accepted in cycle ``t`` (``i.valid & i.ready`` at the end of cycle ``t``)
    is offered with ``o.valid`` high in cycle ``t + latency`` when ``o`` is never stalled.

    Throughput
    ----------
    One row per cycle.

    Flow control
    ------------
    Every stage holds a valid bit. A stage advances when it is empty or the stage after it advances; the last
    stage advances when it is empty or ``o.ready`` is high. So while ``o.valid & ~o.ready`` the full stages at
    the end of the pipeline hold still, and empty stages before them keep filling: bubbles are squeezed out,
    never lost or duplicated, and the pipeline holds up to :attr:`latency` rows. ``i.ready`` is the first
    stage's advance signal: high whenever any stage is empty or ``o.ready`` is high (it depends
    combinationally on ``o.ready``, never on ``i.valid``). ``o.valid`` comes straight from a register.
    """

    #: Pipeline stages, in order; each ends in a register. The latency is their number.
    STAGES = (
        "bias_add",        # s = wrap32(acc + bias); split the shift into left/right amounts
        "left_shift",      # multiplier inputs a = wrap32(s << left), b = multiplier
        "partial_products",  # four 16x16 products; saturation flag a == b == INT32_MIN
        "middle_sum",      # hl + lh
        "product",         # the 64-bit product a * b
        "srdhm",           # y = SRDHM(a, b); rounding addends for RDBPOT
        "round_add",       # y + rounding addend
        "right_shift_coarse",  # arithmetic shift right by a multiple of 8
        "right_shift",     # ... and by the rest: RDBPOT done
        "clamp_compare",   # compare with the clamp bounds less the zero point; low byte + zero point
        "clamp_select",    # act_min, act_max or the int8 sum
        "output",          # sign-extend, or select the raw sum
    )

    def __init__(self, *, cols: int):
        _check_cols(cols)
        self._cols = cols
        super().__init__({
            "i": In(stream.Signature(data.StructLayout({
                "acc": data.ArrayLayout(signed(32), cols),
                "params": epilogue_params_layout(cols),
            }))),
            "o": Out(stream.Signature(data.ArrayLayout(signed(32), cols))),
        })

    @property
    def cols(self) -> int:
        """Number of columns in each row."""
        return self._cols

    @property
    def latency(self) -> int:
        """Cycles from accepting a row on ``i`` to offering its result on ``o``, when never stalled."""
        return len(self.STAGES)

    def elaborate(self, platform):
        m = Module()
        n = self.latency
        stage = {name: k for k, name in enumerate(self.STAGES)}

        # Flow control. Stage k advances (loads from stage k-1, or from i for k = 0) when it is empty or stage
        # k+1 advances; unrolled, when o.ready is high or some stage from k on is empty. That unrolled condition
        # is a wide AND of valid bits, and it drives the clock enables of a whole stage, so it is kept in
        # registers: full_from[k] = valid[k] & ... & valid[n-1], and its complement has_room[k] for the enables
        # alone (a separate register, so the enable nets, which spread across the block, stay out of the
        # control logic's loop). An enable is then one LUT from a register and o.ready, whatever the depth of
        # the pipeline. The next state is a choice on o.ready: with it high every stage shifts; with it low a
        # full stage stays full and an empty one takes its predecessor.
        valid = [Signal(name=f"{name}_valid") for name in self.STAGES]
        full_from = [Signal(name=f"{name}_full_from") for name in self.STAGES]
        has_room = [Signal(name=f"{name}_has_room", init=1) for name in self.STAGES]
        advance = [Signal(name=f"{name}_advance") for name in self.STAGES]
        shifted = [self.i.valid, *valid[:-1]]  # what each stage holds next when o.ready is high
        held = [shifted[k] | full_from[k] for k in range(n)]  # ... and when it is low
        # Both wide ANDs are named signals of registers (and i.valid, a register in the engine) only, so o.ready,
        # which comes from the STORE unit across the die, meets them in the last LUT before each register.
        all_shifted = [Signal(name=f"{name}_all_shifted") for name in self.STAGES]
        all_held = [Signal(name=f"{name}_all_held") for name in self.STAGES]
        for k in range(n):
            m.d.comb += [all_shifted[k].eq(Cat(*shifted[k:]).all()), all_held[k].eq(Cat(*held[k:]).all())]
        for k in range(n):
            full_next = Mux(self.o.ready, all_shifted[k], all_held[k])
            m.d.sync += [
                valid[k].eq(Mux(self.o.ready, shifted[k], held[k])),
                full_from[k].eq(full_next),
                has_room[k].eq(~full_next),
            ]
            m.d.comb += advance[k].eq(self.o.ready | has_room[k])
        m.d.comb += [
            self.i.ready.eq(advance[0]),
            self.o.valid.eq(valid[n - 1]),
        ]

        # Data registers load when their stage advances and takes a row; on a bubble they keep their value. Their
        # content is only used when the stage's valid bit is set, so they need no reset (reset_less keeps them off
        # the reset net). The valid term is one more input of the enable's LUT (still one LUT from registers and
        # o.ready); it lets a simulator skip the datapath while no row is in flight, which is most cycles of a
        # convolution (Verilator on the 8x8 accelerator during MNIST: 1.15x faster; docs/simulation.md).
        loads = [[] for _ in range(n)]

        def reg(stage_name, value, shape, name):
            sig = Signal(shape, name=name, reset_less=True)
            loads[stage[stage_name]].append(sig.eq(value))
            return sig

        def carry(first_stage, last_stage, value, shape, name):
            """Delay ``value`` alongside the row from ``first_stage`` through ``last_stage``; one signal per stage."""
            out = {}
            for k in range(stage[first_stage], stage[last_stage] + 1):
                value = reg(self.STAGES[k], value, shape, f"{name}_{k}")
                out[self.STAGES[k]] = value
            return out

        params = self.i.payload.params
        # Clamping z = q + zero_point compares the quotient q with the bounds less the zero point, computed here
        # once per row off the critical path: z > act_max <=> q > act_max - zero_point (9-bit thresholds). In
        # range, z fits in 8 bits, so only the low byte of q needs the zero point added.
        zero_point = carry("bias_add", "right_shift", params.zero_point, signed(8), "zero_point")
        above_from = carry("bias_add", "right_shift", params.act_max - params.zero_point, signed(9), "above_from")
        below_from = carry("bias_add", "right_shift", params.act_min - params.zero_point, signed(9), "below_from")
        # np.clip order (min(max(z, act_min), act_max)): with act_min > act_max every output is act_max, like the
        # reference would give if it accepted such bounds.
        inverted = carry("bias_add", "clamp_compare", params.act_min > params.act_max, 1, "inverted")
        act_min = carry("bias_add", "clamp_compare", params.act_min, signed(8), "act_min")
        act_max = carry("bias_add", "clamp_compare", params.act_max, signed(8), "act_max")
        raw = carry("bias_add", "clamp_select", params.raw, 1, "raw")
        # A raw row goes through the requantization datapath unchanged, not beside it (a 32-bit copy of s carried
        # through eleven stages was a third of the epilogue's flops): no left shift, multiplier 1, so the product
        # is s; y takes the product's low word instead of SRDHM; no right shift and no rounding addend, so the
        # quotient is s. Only the two clamp stages carry it beside the 8-bit path.

        results = []
        for c in range(self._cols):
            acc = self.i.payload.acc[c]
            shift = params.shift[c]

            # Truncation to 32 bits is the wrap modulo 2**32.
            s = reg("bias_add", acc + params.bias[c], signed(32), f"s{c}")
            left = reg("bias_add", Mux(shift[-1] | params.raw, 0, shift[:5]), unsigned(5), f"left{c}")
            # 6 bits: a right shift of 32 (shift = -32, outside the spec) is still a consistent RDBPOT.
            right = carry("bias_add", "right_shift_coarse", Mux(shift[-1] & ~params.raw, -shift, 0), unsigned(6),
                          f"right{c}")
            multiplier = reg("bias_add", params.multiplier[c], signed(32), f"multiplier{c}")

            # Multiplier inputs. The left shift wraps modulo 2**32 like the reference C code.
            a = reg("left_shift", s << left, signed(32), f"a{c}")
            b = reg("left_shift", Mux(raw["bias_add"], 1, multiplier), signed(32), f"b{c}")

            # a*b = hh*2**32 + (hl + lh)*2**16 + ll with signed high halves and unsigned low halves; each product
            # is at most 17x17 bits signed, one DSP block each.
            a_hi, a_lo = a[16:].as_signed(), a[:16]
            b_hi, b_lo = b[16:].as_signed(), b[:16]
            hh = carry("partial_products", "middle_sum", a_hi * b_hi, signed(32), f"hh{c}")
            hl = reg("partial_products", a_hi * b_lo, signed(33), f"hl{c}")
            lh = reg("partial_products", a_lo * b_hi, signed(33), f"lh{c}")
            ll = carry("partial_products", "middle_sum", a_lo * b_lo, unsigned(32), f"ll{c}")
            # The only case SRDHM saturates; compared on the registered multiplier inputs.
            saturate = carry("partial_products", "product",
                             (a == -(1 << 31)) & (b == -(1 << 31)), 1, f"saturate{c}")

            middle = reg("middle_sum", hl + lh, signed(34), f"middle{c}")
            # ll < 2**32, so hh*2**32 + ll is a concatenation, not an addition.
            product = reg("product",
                          Cat(ll["middle_sum"], hh["middle_sum"]).as_signed() + (middle << 16),
                          signed(64), f"product{c}")

            # SRDHM. For p = a*b >= 0, (p + 2**30) >> 31 is the truncating division. For p < 0 the nudged value
            # x = p + 1 - 2**30 is negative, and truncation toward zero of x / 2**31 is
            # floor((x + 2**31 - 1) / 2**31) = floor((p + 2**30) / 2**31) as well. Only bits 30.. of p matter:
            # floor((p + 2**30) / 2**31) = (floor(p / 2**30) + 1) >> 1. Apart from the saturating case the result
            # lies in [-2**31 + 1, 2**31 - 1].
            srdhm = ((product >> 30) + 1) >> 1
            # (A raw row's product is s: b = 1, so it never saturates.)
            y = reg("srdhm", Mux(raw["product"], product[:32], Mux(saturate["product"], _INT32_MAX, srdhm)),
                    signed(32), f"y{c}")
            # RDBPOT addends: 2**(e-1) for y >= 0 and 2**(e-1) - 1 = mask >> 1 for y < 0 (both 0 for e = 0).
            e = right["product"]
            half = reg("srdhm", (Const(1, 1) << e)[1:33], unsigned(32), f"half{c}")
            below_half = reg("srdhm", ((Const(1, 1) << e) - 1)[1:33], unsigned(32), f"below_half{c}")

            # y + 2**32 - 1 at most (for e = 32), hence 34 bits.
            rounded = reg("round_add", y + Mux(y[-1], below_half, half), signed(34), f"rounded{c}")
            # For e >= 1 the quotient is below 2**31 in magnitude; for e = 0, rounded = y.
            # The 6-level shifter is split over two stages: shifts compose, floor(floor(x / 2**a) / 2**b) =
            # floor(x / 2**(a + b)).
            coarse = reg("right_shift_coarse", rounded >> Cat(Const(0, 3), right["round_add"][3:]), signed(34),
                         f"coarse{c}")
            quotient = reg("right_shift", coarse >> right["right_shift_coarse"][:3], signed(32), f"quotient{c}")

            # The thresholds lie in [-255, 255], so a quotient outside the 10-bit range is beyond both; inside
            # it, 10-bit compares are exact. That keeps the carry chains short; the range check is resolved in
            # the next stage.
            narrow = quotient[:10].as_signed()
            fits = reg("clamp_compare", (quotient[9:] == 0) | (quotient[9:] == (1 << 23) - 1), 1, f"fits{c}")
            negative = reg("clamp_compare", quotient[-1], 1, f"negative{c}")
            narrow_above = reg("clamp_compare", narrow > above_from["right_shift"], 1, f"narrow_above{c}")
            narrow_below = reg("clamp_compare", narrow < below_from["right_shift"], 1, f"narrow_below{c}")
            low_byte = reg("clamp_compare", quotient[:8] + zero_point["right_shift"], signed(8), f"low_byte{c}")
            raw_value = carry("clamp_compare", "clamp_select", quotient, signed(32), f"raw_value{c}")

            above = Mux(fits, narrow_above, ~negative) | inverted["clamp_compare"]
            below = Mux(fits, narrow_below, negative)
            clamped = Mux(above, act_max["clamp_compare"], Mux(below, act_min["clamp_compare"], low_byte))
            clamped = reg("clamp_select", clamped, signed(8), f"clamped{c}")
            result = reg("output", Mux(raw["clamp_select"], raw_value["clamp_select"], clamped), signed(32),
                         f"result{c}")
            results.append(result)

        for k in range(n):
            with m.If(advance[k] & shifted[k]):
                m.d.sync += loads[k]
        for c, result in enumerate(results):
            m.d.comb += self.o.payload[c].eq(result)
        return m
