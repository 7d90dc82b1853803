"""ProcessingElement: cycle-by-cycle against a Python model of the five-stage pipeline, both banks, wrapping,
narrow widths, measured latencies, validation - for every multiplier (fabric partial products, the same on ECP5
carry cells, DSP)."""

import random

import pytest

from hw.pe import MULTIPLIERS, ProcessingElement
from sim.amaranth_helpers import reset_registers, run_simulation


def wrap(value, width):
    value &= (1 << width) - 1
    return value - (1 << width) if value >> (width - 1) else value


def ref_pe(steps, *, a_width=8, w_width=8, acc_width=32, psum_skew=2):
    """Reference: for each cycle's inputs (a, bank, psum_in, write) the registered (a_out, bank_out, psum_out).

    ``a_out`` is ``a`` one cycle later. ``psum_out`` after cycle ``t`` is ``psum_in[t]`` plus the product of the
    activation that arrived in cycle ``t - psum_skew`` with the weight its bank held in that cycle (writes in a
    cycle are seen from the next one); the pipeline starts empty (products of 0).
    """
    weights = [0, 0]
    products = []
    out = []
    for t, (a, bank, psum_in, write) in enumerate(steps):
        products.append(a * weights[bank])
        product = products[t - psum_skew] if t >= psum_skew else 0
        out.append((a, bank, wrap(psum_in + product, acc_width)))
        if write is not None:
            weights[write[0]] = write[1]
    return out


def rtl_pe(steps, *, a_width=8, w_width=8, acc_width=32, multiplier="fabric"):
    dut = ProcessingElement(a_width=a_width, w_width=w_width, acc_width=acc_width, multiplier=multiplier)
    out = []

    async def tb(ctx):
        for a, bank, psum_in, write in steps:
            ctx.set(dut.a_in, {"data": a, "bank": bank})
            ctx.set(dut.psum_in, psum_in)
            ctx.set(dut.w_we, write is not None)
            if write is not None:
                ctx.set(dut.w_bank, write[0])
                ctx.set(dut.w_data, write[1])
            await ctx.tick()
            token = ctx.get(dut.a_out)
            out.append((token.data, token.bank, ctx.get(dut.psum_out)))

    run_simulation(dut, tb, deadline_cycles=len(steps) + 10)
    return out


@pytest.mark.parametrize("multiplier", MULTIPLIERS)
@pytest.mark.parametrize("a_width,w_width,acc_width", [(8, 8, 32), (8, 8, 16), (4, 6, 10), (5, 5, 12), (3, 1, 4)])
def test_pe_random(a_width, w_width, acc_width, multiplier):
    seed = a_width * 1000 + acc_width
    rng = random.Random(seed)
    amin, amax = -(1 << (a_width - 1)), (1 << (a_width - 1)) - 1
    wmin, wmax = -(1 << (w_width - 1)), (1 << (w_width - 1)) - 1
    pmin, pmax = -(1 << (acc_width - 1)), (1 << (acc_width - 1)) - 1
    steps = []
    for i in range(300):
        a = rng.choice([amin, amax, rng.randint(amin, amax)])
        psum = rng.choice([pmin, pmax, rng.randint(pmin, pmax)])
        write = (rng.randint(0, 1), rng.choice([wmin, wmax, rng.randint(wmin, wmax)])) if rng.random() < 0.3 else None
        steps.append((a, rng.randint(0, 1), psum, write))
    want = ref_pe(steps, a_width=a_width, w_width=w_width, acc_width=acc_width,
                  psum_skew=ProcessingElement().psum_skew)
    got = rtl_pe(steps, a_width=a_width, w_width=w_width, acc_width=acc_width, multiplier=multiplier)
    assert len(got) == len(want) == len(steps)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g == w, f"seed {seed} ({multiplier}): first mismatch at cycle {i}: step {steps[i]} got {g} want {w}"


@pytest.mark.parametrize("multiplier", MULTIPLIERS)
def test_pe_write_takes_effect_next_cycle(multiplier):
    # A write to the bank an activation arriving in the same cycle reads is seen only by later activations, however
    # deep the pipeline (the array's bank hand-over relies on it). Flush cycles bring the products out.
    steps = [(1, 0, 0, (0, 5)), (1, 0, 0, (0, 7)), (1, 0, 0, None)] + [(0, 0, 0, None)] * 4
    out = [o[2] for o in rtl_pe(steps, multiplier=multiplier)]
    latency = ProcessingElement().latency
    assert out == [0] * latency + [5, 7, 0][:len(steps) - latency]


@pytest.mark.parametrize("multiplier", MULTIPLIERS)
def test_pe_bank_switch_with_back_to_back_activations(multiplier):
    # Bank 1 is rewritten while activations use bank 0; the first bank-1 activation gets the new weight at once.
    steps = [(2, 0, 0, (0, 3)), (2, 0, 0, (1, -4)), (2, 0, 0, None), (2, 1, 0, (0, 9)), (2, 0, 0, None)]
    steps += [(0, 0, 0, None)] * 4
    latency = ProcessingElement().latency
    assert [o[2] for o in rtl_pe(steps, multiplier=multiplier)][latency - 1:] == [0, 6, 6, -8, 18]


@pytest.mark.parametrize("multiplier", MULTIPLIERS)
def test_pe_latency_properties(multiplier):
    pe = ProcessingElement(multiplier=multiplier)
    assert (pe.latency, pe.activation_latency, pe.psum_latency, pe.psum_skew) == (5, 1, 1, 4)
    assert pe.latency == len(ProcessingElement.STAGES)


@pytest.mark.parametrize("multiplier", MULTIPLIERS)
def test_pe_measured_latencies(multiplier):
    """An impulse on each input shows up on each output after exactly the documented number of cycles."""
    pe = ProcessingElement(multiplier=multiplier)
    a_cycle, psum_cycle = 1, 10
    # Weight 1 written into bank 0 in cycle 0, then one activation and one partial sum impulse.
    steps = [(0, 0, 0, (0, 1))] + [(5 if t == a_cycle else 0, 0, 100 if t == psum_cycle else 0, None)
                                   for t in range(1, 20)]
    got = rtl_pe(steps, multiplier=multiplier)
    # rtl_pe reads the outputs after cycle t's clock edge, that is their value in cycle t + 1.
    a_seen = [t + 1 for t, o in enumerate(got) if o[0] != 0]
    psum_seen = [t + 1 for t, o in enumerate(got) if o[2] != 0]
    assert a_seen == [a_cycle + pe.activation_latency]
    assert psum_seen == [a_cycle + pe.latency, psum_cycle + pe.psum_latency]
    assert [got[t - 1][2] for t in psum_seen] == [5, 100]


@pytest.mark.parametrize("multiplier", MULTIPLIERS)
def test_pe_registers_have_no_reset(multiplier):
    # Every PE register is overwritten before it is used, so none is on the reset net (on an FPGA that net reaches
    # every flop it resets through general routing: 66,600 flops of a 16x16 accelerator when the PEs had resets).
    assert reset_registers(ProcessingElement(multiplier=multiplier)) == {}


def test_partial_products_int8():
    """The fabric multiplier's pair sums give every int8 product: all activations against the weight corners and
    seeded random weights."""
    from amaranth import Module, Signal, signed
    from hw.pe import partial_products

    a, b = Signal(signed(8)), Signal(signed(8))
    product = Signal(signed(16))
    m = Module()
    m.d.comb += product.eq(sum(value << shift for shift, value in partial_products(a, b)))
    seed = 8
    rng = random.Random(seed)
    weights = [-128, -127, -64, -1, 0, 1, 2, 64, 126, 127] + [rng.randint(-128, 127) for _ in range(10)]
    mismatches = []

    async def tb(ctx):
        for w in weights:
            ctx.set(b, w)
            for x in range(-128, 128):
                ctx.set(a, x)
                if ctx.get(product) != x * w:
                    mismatches.append((x, w, ctx.get(product)))

    from amaranth.sim import Simulator
    sim = Simulator(m)
    sim.add_testbench(tb)
    sim.run()
    assert not mismatches, f"seed {seed}: first mismatch a={mismatches[0][0]} w={mismatches[0][1]}: " \
        f"got {mismatches[0][2]} want {mismatches[0][0] * mismatches[0][1]}"


@pytest.mark.parametrize("kwargs,exc,match", [
    ({"a_width": 0}, TypeError, "Activation width must be a positive integer, not 0"),
    ({"w_width": "8"}, TypeError, "Weight width must be a positive integer, not '8'"),
    ({"acc_width": 15}, ValueError, r"at least 16 bits\), not 15"),
    ({"multiplier": "lut"}, ValueError, "PE multiplier must be one of 'fabric', 'carry', 'dsp', not 'lut'"),
])
def test_pe_parameter_validation(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        ProcessingElement(**kwargs)
