"""cocotb 2.x drivers for Amaranth ``lib.stream`` ports (``<name>__payload``, ``__valid``, ``__ready``).

One :class:`StreamBench` clocks every endpoint from a single coroutine, three triggers per cycle, which keeps the
Python overhead per simulated cycle small:

* at the falling edge each source drives ``valid``/``payload`` and each sink drives ``ready`` (seeded random
  back-pressure: a source offers with probability ``valid_prob``, a sink accepts with ``ready_prob``);
* in the read-only phase after it, every endpoint samples ``valid & ready`` (settled combinational values);
* at the rising edge, the transfers that fired are committed.

A source keeps ``valid`` and its payload once offered until the transfer happens, as AXI-style streams expect.
The bench also runs per-cycle monitors (functions called in the read-only phase) and a cycle watchdog.
"""

from __future__ import annotations

import collections
import random

from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge

__all__ = ["StreamBench", "StreamSource", "StreamSink", "WatchdogExpired"]


class WatchdogExpired(AssertionError):
    """The simulation ran past its cycle budget: something is stuck (the message says what was pending)."""


class StreamSource:
    def __init__(self, dut, name, *, rng, valid_prob=1.0):
        self.name = name
        self._payload = getattr(dut, f"{name}__payload")
        self._valid = getattr(dut, f"{name}__valid")
        self._ready = getattr(dut, f"{name}__ready")
        self._rng = rng
        self.valid_prob = valid_prob
        self.queue = collections.deque()
        self._offering = False
        self._fired = False
        self.sent = 0
        self._valid.value = 0

    def send(self, value: int):
        self.queue.append(int(value))

    @property
    def idle(self):
        return not self.queue and not self._offering

    def drive(self):
        if not self._offering and self.queue and (self.valid_prob >= 1.0 or self._rng.random() < self.valid_prob):
            self._offering = True
            self._payload.value = self.queue[0]
        self._valid.value = int(self._offering)

    def sample(self):
        self._fired = self._offering and bool(self._ready.value)

    def commit(self):
        if self._fired:
            self.queue.popleft()
            self._offering = False
            self.sent += 1


class StreamSink:
    def __init__(self, dut, name, *, rng, ready_prob=1.0, on_receive=None):
        self.name = name
        self._payload = getattr(dut, f"{name}__payload")
        self._valid = getattr(dut, f"{name}__valid")
        self._ready = getattr(dut, f"{name}__ready")
        self._rng = rng
        self.ready_prob = ready_prob
        self.on_receive = on_receive
        self.received = collections.deque()
        self._ready_now = False
        self._fired = None
        self._ready.value = 0

    def drive(self):
        self._ready_now = self.ready_prob >= 1.0 or self._rng.random() < self.ready_prob
        self._ready.value = int(self._ready_now)

    def sample(self):
        self._fired = self._payload.value.to_unsigned() if self._ready_now and self._valid.value else None

    def commit(self):
        if self._fired is not None:
            if self.on_receive is not None:
                self.on_receive(self._fired)
            else:
                self.received.append(self._fired)
            self._fired = None


class StreamBench:
    """Clocks a set of stream endpoints and monitors together; see the module docstring."""

    def __init__(self, clk, *, seed):
        self.clk = clk
        self.rng = random.Random(seed)
        self.endpoints = []
        self.monitors = []
        self.cycle = 0

    def source(self, dut, name, *, valid_prob=1.0):
        ep = StreamSource(dut, name, rng=random.Random(self.rng.random()), valid_prob=valid_prob)
        self.endpoints.append(ep)
        return ep

    def sink(self, dut, name, *, ready_prob=1.0, on_receive=None):
        ep = StreamSink(dut, name, rng=random.Random(self.rng.random()), ready_prob=ready_prob,
                        on_receive=on_receive)
        self.endpoints.append(ep)
        return ep

    async def step(self):
        await FallingEdge(self.clk)
        for ep in self.endpoints:
            ep.drive()
        await ReadOnly()
        for ep in self.endpoints:
            ep.sample()
        for monitor in self.monitors:
            monitor()
        await RisingEdge(self.clk)
        for ep in self.endpoints:
            ep.commit()
        self.cycle += 1

    async def run_until(self, done, *, max_cycles, what="the transfers"):
        """Step until ``done()`` is true; raise WatchdogExpired after ``max_cycles`` cycles."""
        start = self.cycle
        while not done():
            if self.cycle - start >= max_cycles:
                pending = {ep.name: len(getattr(ep, "queue", ())) for ep in self.endpoints}
                raise WatchdogExpired(f"watchdog: {what} did not finish within {max_cycles} cycles "
                                      f"(queued beats per stream: {pending})")
            await self.step()
