"""Shared helpers for Amaranth-simulator testbenches: stream drivers with seeded random back-pressure.

Every block test drives its ``lib.stream`` ports through these, so the valid/ready handshake is exercised the same
way everywhere. Payloads are set and read with ``ctx.set``/``ctx.get`` so typed layouts (``ArrayLayout``,
``StructLayout``) round-trip as views.
"""

from __future__ import annotations

import gc
import random

from amaranth.hdl import Fragment
from amaranth.sim import Simulator

__all__ = ["stream_put", "stream_get", "run_simulation", "Throttle", "reset_registers"]


class Throttle:
    """A seeded valid/ready pattern: ``next()`` says whether to offer (or accept) in this cycle.

    ``probability`` 1.0 never stalls; lower values insert random bubbles, reproducibly from ``seed``.
    """

    def __init__(self, probability: float = 1.0, seed: int = 0):
        if not 0.0 < probability <= 1.0:
            raise ValueError(f"Throttle probability must lie in (0, 1], not {probability!r}")
        self.probability = probability
        self._rng = random.Random(seed)

    def next(self) -> bool:
        return self.probability >= 1.0 or self._rng.random() < self.probability


async def stream_put(ctx, stream, payload, throttle: Throttle | None = None):
    """Offer ``payload`` on a sink ``stream`` and return once it has been accepted (after that clock edge)."""
    if throttle is not None:
        while not throttle.next():
            await ctx.tick()
    ctx.set(stream.payload, payload)
    ctx.set(stream.valid, 1)
    await ctx.tick().until(stream.ready)
    ctx.set(stream.valid, 0)


async def stream_get(ctx, stream, throttle: Throttle | None = None):
    """Accept one payload from a source ``stream``; returns the payload value sampled at the handshake."""
    if throttle is not None:
        while not throttle.next():
            await ctx.tick()
    ctx.set(stream.ready, 1)
    payload, = await ctx.tick().sample(stream.payload).until(stream.valid)
    ctx.set(stream.ready, 0)
    return payload


def run_simulation(dut, *testbenches, background=(), deadline_cycles: int = 100_000, vcd: str | None = None,
                   clock_period: float = 1e-8):
    """Run ``testbenches`` (async functions of ``ctx``) against ``dut`` with a watchdog.

    ``background`` testbenches (monitors) run alongside but do not keep the simulation alive.

    The simulation is bounded by ``deadline_cycles``; running past it raises ``TimeoutError`` naming the limit, so
    a stuck handshake never hangs the test suite.
    """
    sim = Simulator(dut)
    sim.add_clock(clock_period)
    for tb in testbenches:
        sim.add_testbench(tb)
    for tb in background:
        sim.add_testbench(tb, background=True)

    async def watchdog(ctx):
        await ctx.delay(deadline_cycles * clock_period)
        raise TimeoutError(
            f"Simulation of {type(dut).__name__} still running after {deadline_cycles} cycles (watchdog); "
            "a stream handshake is probably stuck")

    # A background testbench does not keep the simulation alive: it only fires if the others never finish.
    sim.add_testbench(watchdog, background=True)
    try:
        if vcd:
            with sim.write_vcd(vcd):
                sim.run()
        else:
            sim.run()
    finally:
        # Close suspended background testbenches now, not while pytest builds a report (CPython 3.11 can then
        # crash with "AST constructor recursion depth mismatch").
        gc.collect()


def reset_registers(elaboratable, domain: str = "sync") -> dict[str, int]:
    """The registers of ``domain`` in ``elaboratable`` and its submodules that have a reset (not ``reset_less``),
    as ``{hierarchical name: width}``: what the domain's reset net reaches once synthesized.

    Amaranth 0.5 has no public query for the signals a domain drives, so this walks the elaborated fragments and
    their statements' ``_lhs_signals()``; a test helper only, for the structural tests of the blocks."""
    found = {}

    def walk(fragment, path):
        for stmt in fragment.statements.get(domain, ()):
            for signal in stmt._lhs_signals():
                if not signal.reset_less:
                    found[".".join((*path, signal.name))] = len(signal)
        for sub, name, _ in fragment.subfragments:
            walk(sub, (*path, name or "?"))

    walk(Fragment.get(elaboratable, None), ())
    return found
