"""PinRing: patterns shifted in drive every design input, and every design output is shifted back out."""

import random

import pytest
from amaranth.hdl import Module, Value, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.fpga.pin_ring import PIN_RING_PINS, PinRing
from hw.gemm_engine import GemmEngine
from sim.amaranth_helpers import run_simulation


class Probe(wiring.Component):
    """Outputs are known functions of the inputs: ``y = ~a`` (comb), ``z = b`` registered, ``s.ready = s.valid``."""

    a: In(7)
    b: In(signed(5))
    s: In(stream.Signature(data.ArrayLayout(4, 3)))
    y: Out(7)
    z: Out(signed(5))
    echo: Out(12)

    def elaborate(self, platform):
        m = Module()
        m.d.comb += [self.y.eq(~self.a), self.s.ready.eq(self.s.valid), self.echo.eq(self.s.payload.as_value())]
        m.d.sync += self.z.eq(self.b)
        return m


def ports_by_name(design):
    return {"__".join(map(str, path)): Value.cast(value) for path, _, value in design.signature.flatten(design)}


async def load(ctx, ring, pattern):
    """Shift ``pattern`` in LSB first, then pulse update."""
    for k in range(ring.input_width):
        ctx.set(ring.sdi, (pattern >> k) & 1)
        await ctx.tick()
    ctx.set(ring.update, 1)
    await ctx.tick()
    ctx.set(ring.update, 0)


async def capture_and_unload(ctx, ring):
    """Pulse update (which also reloads the unchanged input chain) and shift the captured outputs out."""
    ctx.set(ring.update, 1)
    await ctx.tick()
    ctx.set(ring.update, 0)
    value = 0
    for k in range(ring.unload_cycles):
        value |= ctx.get(ring.sdo) << k
        await ctx.tick()
    return value


def field_values(fields, pattern):
    return {f.name: (pattern >> f.offset) & ((1 << f.width) - 1) for f in fields}


def test_chain_layout_and_counts():
    ring = PinRing(Probe())
    assert [(f.name, f.offset, f.width) for f in ring.input_fields] == [
        ("a", 0, 7), ("b", 7, 5), ("s__payload", 12, 12), ("s__valid", 24, 1)]
    assert [(f.name, f.offset, f.width) for f in ring.output_fields] == [
        ("s__ready", 0, 1), ("y", 1, 7), ("z", 8, 5), ("echo", 13, 12)]
    assert (ring.input_width, ring.output_width) == (25, 25)
    assert ring.load_cycles == 26 and ring.unload_cycles == 25 and ring.flop_count == 75
    assert PIN_RING_PINS == ("clk", "rst", "sdi", "update", "sdo")


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_probe_inputs_driven_and_outputs_returned(seed):
    rng = random.Random(seed)
    ring = PinRing(Probe())
    ports = ports_by_name(ring.design)
    patterns = [0, (1 << ring.input_width) - 1] + [rng.getrandbits(ring.input_width) for _ in range(4)]
    failures = []

    async def tb(ctx):
        for pattern in patterns:
            await load(ctx, ring, pattern)
            want_in = field_values(ring.input_fields, pattern)
            got_in = {name: ctx.get(ports[name]) & ((1 << w) - 1)
                      for name, w in ((f.name, f.width) for f in ring.input_fields)}
            if got_in != want_in:
                failures.append(f"seed {seed} pattern {pattern:#x}: inputs {got_in} != {want_in}")
            await ctx.tick()  # one idle cycle (update low) so the registered output z has taken the new b
            a, b, payload, valid = (want_in[k] for k in ("a", "b", "s__payload", "s__valid"))
            want_out = valid | ((~a & 0x7F) << 1) | (b << 8) | (payload << 13)
            got_out = await capture_and_unload(ctx, ring)
            if got_out != want_out:
                failures.append(f"seed {seed} pattern {pattern:#x}: outputs {got_out:#x} != {want_out:#x}")

    run_simulation(ring, tb, deadline_cycles=len(patterns) * 80)
    assert not failures, failures[0]


def test_engine_every_port_reachable():
    """On the real engine: each shifted pattern reaches each input port, and the shifted-out bits equal the
    engine's outputs sampled in the capture cycle."""
    seed = 7
    rng = random.Random(seed)
    engine = GemmEngine(rows=1, cols=2, acc_depth=4)
    ring = PinRing(engine)
    ports = ports_by_name(engine)
    failures = []

    async def tb(ctx):
        for trial in range(3):
            pattern = rng.getrandbits(ring.input_width)
            await load(ctx, ring, pattern)
            want_in = field_values(ring.input_fields, pattern)
            for f in ring.input_fields:
                got = ctx.get(ports[f.name]) & ((1 << f.width) - 1)
                if got != want_in[f.name]:
                    failures.append(f"seed {seed} trial {trial}: input {f.name} = {got:#x}, "
                                    f"shifted {want_in[f.name]:#x}")
            await ctx.tick()
            # The outputs seen in the capture cycle are the ones the ring must return.
            want_out = 0
            for f in ring.output_fields:
                want_out |= (ctx.get(ports[f.name]) & ((1 << f.width) - 1)) << f.offset
            got_out = await capture_and_unload(ctx, ring)
            if got_out != want_out:
                diff = got_out ^ want_out
                bit = (diff & -diff).bit_length() - 1
                name = next(f.name for f in ring.output_fields if f.offset <= bit < f.offset + f.width)
                failures.append(f"seed {seed} trial {trial}: output bit {bit} ({name}) differs")

    run_simulation(ring, tb, deadline_cycles=3 * (ring.load_cycles + ring.unload_cycles + 4))
    assert not failures, failures[0]


def test_rejects_bad_designs():
    with pytest.raises(TypeError, match=r"Pin ring design must be an amaranth.lib.wiring.Component, not 42"):
        PinRing(42)

    class Sink(wiring.Component):
        a: In(4)

        def elaborate(self, platform):
            return Module()

    with pytest.raises(ValueError, match=r"at least one output bit.*Sink has none"):
        PinRing(Sink())
