"""Project-owned cocotb 2.x bus models: an AXI4 slave RAM and an AXI4-Lite master.

Both work on the Verilog Amaranth generates for :mod:`hw.axi` ports (``bus__ar__addr``...) and on Xilinx/LiteX style
names (``m_axi_araddr``...); see :class:`AxiBus`.

Timing discipline: every model runs a single coroutine per clock that, each cycle, samples all signals in the
``ReadOnly`` phase (their settled values, the ones the next rising edge will see), then waits for the rising edge,
updates its state from the handshakes it sampled and drives its outputs for the next cycle. Sampling settled values
avoids the race between a combinational ``ready`` (or ``valid``) and another coroutine writing the signal it
depends on in the same time step. Every model drives only after ``RisingEdge``, so models and testbenches using the
same discipline compose. The models obey the AXI handshake rules themselves: once a model raises ``valid`` it holds
it, and the payload, until ``ready``.
"""

from __future__ import annotations

import random
from collections import deque

import cocotb
from cocotb.triggers import Lock, ReadOnly, RisingEdge

__all__ = ["AxiBus", "AxiRam", "AxiLiteMaster", "AxiResponseError", "OKAY", "EXOKAY", "SLVERR", "DECERR",
           "read_signal"]

OKAY, EXOKAY, SLVERR, DECERR = 0, 1, 2, 3
_RESP_NAMES = {OKAY: "OKAY", EXOKAY: "EXOKAY", SLVERR: "SLVERR", DECERR: "DECERR"}
_CHANNELS = ("aw", "w", "b", "ar", "r")
_FIELDS = ("addr", "id", "len", "size", "burst", "lock", "cache", "prot", "qos", "data", "strb", "last", "resp",
           "valid", "ready")


def read_signal(handle) -> int:
    """The value of a signal as an unsigned int (vectors and scalars alike); raises ValueError on X/Z."""
    value = handle.value
    try:
        return value.to_unsigned()
    except AttributeError:  # a scalar signal reads as a Logic
        return int(value)


class AxiResponseError(Exception):
    """An AXI transaction answered SLVERR or DECERR; ``resp`` holds the code."""

    def __init__(self, kind: str, addr: int, resp: int):
        super().__init__(f"AXI {kind} at {addr:#x} answered {_RESP_NAMES.get(resp, resp)}")
        self.kind, self.addr, self.resp = kind, addr, resp


class AxiBus:
    """The signal handles of one AXI4 or AXI4-Lite port, looked up as ``bus.aw["addr"]``.

    Parameters
    ----------
    dut : cocotb handle
        The hierarchy holding the port signals.
    prefix : str
        Port name. ``prefix__aw__addr`` (Amaranth) is tried first, then ``prefix_awaddr`` (Xilinx/LiteX).
    """

    def __init__(self, dut, prefix: str):
        self.prefix = prefix
        for channel in _CHANNELS:
            found = {}
            for field in _FIELDS:
                for name in (f"{prefix}__{channel}__{field}", f"{prefix}_{channel}{field}"):
                    try:
                        found[field] = getattr(dut, name)
                        break
                    except AttributeError:
                        continue
            if "valid" not in found or "ready" not in found:
                raise AttributeError(f"No AXI channel {channel!r} under prefix {prefix!r} in {dut._path}: expected "
                                     f"{prefix}__{channel}__valid (Amaranth) or {prefix}_{channel}valid")
            setattr(self, channel, found)

    @classmethod
    def from_handles(cls, channels: dict) -> "AxiBus":
        """Build from explicit handles: ``{"aw": {"addr": h, "valid": h, "ready": h, ...}, "w": {...}, ...}``."""
        bus = cls.__new__(cls)
        bus.prefix = None
        for channel in _CHANNELS:
            fields = dict(channels.get(channel, {}))
            if "valid" not in fields or "ready" not in fields:
                raise KeyError(f"AXI channel {channel!r} needs at least 'valid' and 'ready' handles")
            setattr(bus, channel, fields)
        return bus

    @classmethod
    def of(cls, bus) -> "AxiBus":
        """Accept an :class:`AxiBus`, a ``(dut, prefix)`` pair or a dict of channel handle dicts."""
        if isinstance(bus, AxiBus):
            return bus
        if isinstance(bus, tuple) and len(bus) == 2:
            return cls(*bus)
        if isinstance(bus, dict):
            return cls.from_handles(bus)
        raise TypeError(f"Expected an AxiBus, a (dut, prefix) pair or a dict of channel handles, not {bus!r}")


class _Driver:
    """Writes a signal only when its value changes (each write is a simulator call)."""

    __slots__ = ("handle", "current")

    def __init__(self, handle, value: int = 0):
        self.handle = handle
        self.current = value
        handle.value = value

    def set(self, value: int) -> None:
        if value != self.current:
            self.current = value
            self.handle.value = value


def _parse_resp(resp) -> int:
    if resp in ("SLVERR", SLVERR):
        return SLVERR
    if resp in ("DECERR", DECERR):
        return DECERR
    raise ValueError(f"Error response must be 'SLVERR' or 'DECERR', not {resp!r}")


class AxiRam:
    """AXI4 slave memory with seeded random latency, back-pressure and protocol checking.

    Parameters
    ----------
    bus : AxiBus, (dut, prefix) or dict
        The slave side of an AXI4 port (the DUT's master port); see :meth:`AxiBus.of`.
    clk : cocotb handle
        Clock.
    size : int
        Memory size in bytes, at address 0. Accesses beyond it answer DECERR and are recorded as errors.
    seed : int
        Seed of all random decisions (latency, stalls), so a run can be reproduced.
    latency : (int, int)
        Inclusive range of cycles between accepting a burst's address (reads) or last W beat (writes) and its first
        R beat or its B response.
    stall_prob : float
        Probability, per cycle and channel, that AWREADY/WREADY/ARREADY stay low or that an R beat or B response
        is held back (R/B valid gaps).
    ready_before_valid : bool
        If False the model raises a ready only while a valid is waiting: a master that waits for ready before
        raising valid (an AXI violation) deadlocks and the test's watchdog fires.
    max_outstanding : int
        Address-channel bursts queued per direction before AWREADY/ARREADY go low.

    Attributes
    ----------
    mem : bytearray
        The memory; tests may read and write it directly (the backdoor).
    read_bursts, write_bursts : list of (addr, beats)
        Every burst accepted, in order.
    errors : list of str
        Protocol violations seen (4 KiB crossing, unsupported burst or size, wrong WLAST, unstable payload,
        out-of-range access). :meth:`check` raises if there is any.

    Bursts must be INCR; narrow beats (``size`` below the bus width) are supported. Beats whose bus word lies in an
    error range (:meth:`add_error_range`) answer that response (read data 0) and are not written; a write burst's B
    carries the worst response of its beats.
    """

    def __init__(self, bus, clk, size: int, *, seed: int, latency=(0, 8), stall_prob: float = 0.3,
                 ready_before_valid: bool = True, max_outstanding: int = 4):
        if not isinstance(size, int) or size <= 0:
            raise ValueError(f"AxiRam size must be a positive number of bytes, not {size!r}")
        lo, hi = latency
        if not 0 <= lo <= hi:
            raise ValueError(f"AxiRam latency must be a range (min, max) with 0 <= min <= max, not {latency!r}")
        if not 0.0 <= stall_prob < 1.0:
            raise ValueError(f"AxiRam stall_prob must lie in [0, 1), not {stall_prob!r}")
        self.bus = AxiBus.of(bus)
        self.clk = clk
        self.size = size
        self.seed = seed
        self.latency = (lo, hi)
        self.stall_prob = stall_prob
        self.ready_before_valid = ready_before_valid
        self.max_outstanding = max_outstanding
        self.mem = bytearray(size)
        self.read_bursts: list[tuple[int, int]] = []
        self.write_bursts: list[tuple[int, int]] = []
        self.errors: list[str] = []
        self.cycle = 0
        self._rng = random.Random(seed)
        self._error_ranges: list[tuple[int, int, int]] = []
        self._bytes = len(self.bus.w["strb"])
        self._task = None

    # ----------------------------------------------------------------- backdoor
    def add_error_range(self, start: int, end: int, resp="SLVERR") -> None:
        """Answer ``resp`` ('SLVERR' or 'DECERR') for beats whose bus word overlaps bytes [start, end)."""
        if not 0 <= start < end:
            raise ValueError(f"Error range must satisfy 0 <= start < end, not [{start:#x}, {end:#x})")
        self._error_ranges.append((start, end, _parse_resp(resp)))

    def clear_error_ranges(self) -> None:
        self._error_ranges.clear()

    def word_resp(self, word_addr: int) -> int:
        """The response the bus word at ``word_addr`` answers (OKAY, SLVERR or DECERR)."""
        for start, end, resp in self._error_ranges:
            if start < word_addr + self._bytes and word_addr < end:
                return resp
        if word_addr + self._bytes > self.size:
            return DECERR
        return OKAY

    def read(self, addr: int, length: int) -> bytes:
        return bytes(self.mem[addr:addr + length])

    def write(self, addr: int, data: bytes) -> None:
        self.mem[addr:addr + len(data)] = data

    def check(self) -> None:
        """Raise AssertionError listing the protocol errors recorded (seed included)."""
        if self.errors:
            raise AssertionError(f"AxiRam (seed {self.seed}) saw {len(self.errors)} protocol error(s); first: "
                                 + "; ".join(self.errors[:5]))

    # ------------------------------------------------------------------- running
    def start(self) -> None:
        if self._task is None:
            self._task = cocotb.start_soon(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def _error(self, message: str) -> None:
        self.errors.append(f"cycle {self.cycle}: {message}")

    def _stall(self) -> bool:
        return self.stall_prob > 0 and self._rng.random() < self.stall_prob

    def _delay(self) -> int:
        return self._rng.randint(*self.latency)

    def _burst(self, kind: str, fields: dict) -> dict:
        """Check an accepted AR/AW payload and return the burst description."""
        addr, length, size, burst = fields["addr"], fields["len"] + 1, fields["size"], fields["burst"]
        if burst != 1:
            self._error(f"{kind} burst type {burst} at {addr:#x} is not INCR (only INCR is supported)")
        if (1 << size) > self._bytes:
            self._error(f"{kind} size {size} ({1 << size} bytes) exceeds the {self._bytes}-byte bus")
            size = self._bytes.bit_length() - 1
        aligned = addr & ~((1 << size) - 1)
        last_byte = aligned + length * (1 << size) - 1
        if addr >> 12 != last_byte >> 12:
            self._error(f"{kind} burst at {addr:#x}, {length} beats of {1 << size} bytes crosses a 4 KiB boundary "
                        f"(ends at {last_byte:#x})")
        if last_byte >= self.size:
            self._error(f"{kind} burst at {addr:#x}..{last_byte:#x} runs past the {self.size}-byte memory")
        (self.read_bursts if kind == "AR" else self.write_bursts).append((addr, length))
        return {"addr": addr, "aligned": aligned, "len": length, "size": size, "id": fields.get("id", 0),
                "beat": 0, "resp": OKAY}

    def _beat_word(self, burst: dict) -> int:
        beat = burst["beat"]
        addr = burst["addr"] if beat == 0 else burst["aligned"] + (beat << burst["size"])
        return addr & ~(self._bytes - 1)

    @staticmethod
    def _sample(channel: dict, names) -> dict:
        return {name: read_signal(channel[name]) for name in names if name in channel}

    async def _run(self) -> None:
        bus, nbytes = self.bus, self._bytes
        a_fields = ("addr", "id", "len", "size", "burst")
        w_fields = ("data", "strb", "last")
        ar_ready = _Driver(bus.ar["ready"])
        aw_ready = _Driver(bus.aw["ready"])
        w_ready = _Driver(bus.w["ready"])
        r_valid = _Driver(bus.r["valid"])
        r_data = _Driver(bus.r["data"])
        r_resp = _Driver(bus.r["resp"])
        r_last = _Driver(bus.r["last"])
        r_id = _Driver(bus.r["id"]) if "id" in bus.r else None
        b_valid = _Driver(bus.b["valid"])
        b_resp = _Driver(bus.b["resp"])
        b_id = _Driver(bus.b["id"]) if "id" in bus.b else None

        ar_q: deque = deque()   # accepted read bursts: [burst, cycle its data may start]
        aw_q: deque = deque()   # accepted write bursts awaiting W beats
        w_q: deque = deque()    # W beats that arrived before their AW
        b_q: deque = deque()    # [cycle the response may go out, resp, id]
        held = {}               # payloads of valids waiting for ready, for the stability check
        last_b_time = 0

        while True:
            await ReadOnly()
            fired = {}
            for name, channel, drv, fields in (("AR", bus.ar, ar_ready, a_fields), ("AW", bus.aw, aw_ready, a_fields),
                                               ("W", bus.w, w_ready, w_fields)):
                valid = read_signal(channel["valid"])
                if name in held and not valid:
                    self._error(f"{name}VALID dropped before READY (payload {held[name]})")
                if valid:
                    payload = self._sample(channel, fields)
                    if name in held and held.pop(name) != payload:
                        self._error(f"{name} payload changed while VALID waited for READY")
                    if drv.current:
                        fired[name] = payload
                    else:
                        held[name] = payload
                else:
                    held.pop(name, None)
            r_fire = r_valid.current and read_signal(bus.r["ready"])
            b_fire = b_valid.current and read_signal(bus.b["ready"])

            await RisingEdge(self.clk)
            self.cycle += 1
            now = self.cycle

            # Address and data handshakes of the cycle that just ended.
            if "AR" in fired:
                ar_q.append([self._burst("AR", fired["AR"]), now + self._delay()])
            if "AW" in fired:
                aw_q.append(self._burst("AW", fired["AW"]))
            if "W" in fired:
                w_q.append(fired["W"])
            while aw_q and w_q:
                burst, beat = aw_q[0], w_q.popleft()
                word = self._beat_word(burst)
                resp = self.word_resp(word)
                if resp == OKAY:
                    strb, value = beat["strb"], beat["data"].to_bytes(nbytes, "little")
                    for lane in range(nbytes):
                        if strb >> lane & 1:
                            self.mem[word + lane] = value[lane]
                burst["resp"] = max(burst["resp"], resp)
                final = burst["beat"] == burst["len"] - 1
                if beat["last"] != final:
                    self._error(f"WLAST={beat['last']} on beat {burst['beat']} of the {burst['len']}-beat burst "
                                f"at {burst['addr']:#x}")
                burst["beat"] += 1
                if final or beat["last"]:  # an early WLAST ends the burst too, so the model never stalls
                    aw_q.popleft()
                    last_b_time = max(last_b_time, now + self._delay())
                    b_q.append([last_b_time, burst["resp"], burst["id"]])

            # Responses.
            if r_fire:
                burst = ar_q[0][0]
                burst["beat"] += 1
                if burst["beat"] == burst["len"]:
                    ar_q.popleft()
                r_valid.set(0)
            if b_fire:
                b_q.popleft()
                b_valid.set(0)
            if not r_valid.current and ar_q and ar_q[0][1] <= now and not self._stall():
                burst = ar_q[0][0]
                word = self._beat_word(burst)
                resp = self.word_resp(word)
                value = int.from_bytes(self.mem[word:word + nbytes], "little") if resp == OKAY else 0
                r_data.set(value)
                r_resp.set(resp)
                r_last.set(int(burst["beat"] == burst["len"] - 1))
                if r_id is not None:
                    r_id.set(burst["id"])
                r_valid.set(1)
            if not b_valid.current and b_q and b_q[0][0] <= now and not self._stall():
                b_resp.set(b_q[0][1])
                if b_id is not None:
                    b_id.set(b_q[0][2])
                b_valid.set(1)

            # Readies for the next cycle.
            for name, drv, room in (("AR", ar_ready, len(ar_q) < self.max_outstanding),
                                    ("AW", aw_ready, len(aw_q) < self.max_outstanding),
                                    ("W", w_ready, len(w_q) < 256)):
                drv.set(int(room and not self._stall() and (self.ready_before_valid or name in held)))


class AxiLiteMaster:
    """AXI4-Lite master: ``await read(addr)`` and ``await write(addr, value)``.

    Parameters
    ----------
    bus : AxiBus, (dut, prefix) or dict
        The master side of an AXI4-Lite port (the DUT's slave port); see :meth:`AxiBus.of`. Construct it (and
        call its methods) outside the ``ReadOnly`` phase, e.g. after a ``RisingEdge``.
    clk : cocotb handle
        Clock.
    timeout_cycles : int
        A transaction not finished within this many cycles raises TimeoutError (a stuck slave never hangs a test).
    seed : int or None
        With a seed, B/R ready are held back for a random 0-3 cycles, reproducibly.

    ``read`` and ``write`` raise :class:`AxiResponseError` on SLVERR/DECERR; ``read_resp`` and ``write_resp``
    return the response code instead. One read and one write may be in flight at once (each direction is locked).
    """

    def __init__(self, bus, clk, *, timeout_cycles: int = 1000, seed: int | None = None):
        self.bus = AxiBus.of(bus)
        self.clk = clk
        self.timeout_cycles = timeout_cycles
        self._rng = random.Random(seed) if seed is not None else None
        self._read_lock = Lock()
        self._write_lock = Lock()
        self._nbytes = len(self.bus.w["strb"])
        for channel in (self.bus.aw, self.bus.w, self.bus.ar):
            for name, handle in channel.items():
                if name != "ready":
                    handle.value = 0
        self.bus.b["ready"].value = 0
        self.bus.r["ready"].value = 0

    def _response_delay(self) -> int:
        return self._rng.randint(0, 3) if self._rng is not None else 0

    async def _handshake(self, requests: list, kind: str, addr: int) -> None:
        """Drive ``requests`` [(channel, payload, start_after)] until all are accepted.

        ``start_after`` is None (raise valid now) or the index of the request whose handshake it waits for.
        """
        done = [False] * len(requests)
        driven = [False] * len(requests)
        for cycle in range(self.timeout_cycles):
            for i, (channel, payload, after) in enumerate(requests):
                if not done[i] and not driven[i] and (after is None or done[after]):
                    for name, value in payload.items():
                        channel[name].value = value
                    channel["valid"].value = 1
                    driven[i] = True
            await ReadOnly()
            accepted = [driven[i] and not done[i] and read_signal(ch["ready"]) for i, (ch, _, _) in
                        enumerate(requests)]
            await RisingEdge(self.clk)
            for i, (channel, _, _) in enumerate(requests):
                if accepted[i]:
                    done[i] = True
                    channel["valid"].value = 0
            if all(done):
                return
        raise TimeoutError(f"AXI4-Lite {kind} at {addr:#x}: address/data not accepted in {self.timeout_cycles} "
                           f"cycles")

    async def _response(self, channel: dict, kind: str, addr: int) -> dict:
        for _ in range(self._response_delay()):
            await RisingEdge(self.clk)
        channel["ready"].value = 1
        for _ in range(self.timeout_cycles):
            await ReadOnly()
            if read_signal(channel["valid"]):
                result = {name: read_signal(channel[name]) for name in ("data", "resp") if name in channel}
                await RisingEdge(self.clk)
                channel["ready"].value = 0
                return result
            await RisingEdge(self.clk)
        channel["ready"].value = 0
        raise TimeoutError(f"AXI4-Lite {kind} at {addr:#x}: no response in {self.timeout_cycles} cycles")

    async def write_resp(self, addr: int, value: int, *, strb: int | None = None, order: str = "together") -> int:
        """Write ``value`` to ``addr`` and return the BRESP code.

        ``order`` is ``"together"`` (AW and W raised in the same cycle), ``"aw_first"`` (W raised only after the
        AW handshake) or ``"w_first"``.
        """
        if order not in ("together", "aw_first", "w_first"):
            raise ValueError(f"Write order must be 'together', 'aw_first' or 'w_first', not {order!r}")
        strb = (1 << self._nbytes) - 1 if strb is None else strb
        aw = (self.bus.aw, {"addr": addr, **({"prot": 0} if "prot" in self.bus.aw else {})},
              1 if order == "w_first" else None)
        w = (self.bus.w, {"data": value, "strb": strb}, 0 if order == "aw_first" else None)
        async with self._write_lock:
            await self._handshake([aw, w], "write", addr)
            return (await self._response(self.bus.b, "write", addr))["resp"]

    async def read_resp(self, addr: int) -> tuple[int, int]:
        """Read ``addr``; returns (data, RRESP code)."""
        async with self._read_lock:
            ar = (self.bus.ar, {"addr": addr, **({"prot": 0} if "prot" in self.bus.ar else {})}, None)
            await self._handshake([ar], "read", addr)
            result = await self._response(self.bus.r, "read", addr)
            return result["data"], result["resp"]

    async def write(self, addr: int, value: int, **kwargs) -> None:
        """Write ``value`` to ``addr``; raise AxiResponseError unless the answer is OKAY/EXOKAY."""
        resp = await self.write_resp(addr, value, **kwargs)
        if resp >= SLVERR:
            raise AxiResponseError("write", addr, resp)

    async def read(self, addr: int) -> int:
        """Read ``addr``; raise AxiResponseError unless the answer is OKAY/EXOKAY."""
        data, resp = await self.read_resp(addr)
        if resp >= SLVERR:
            raise AxiResponseError("read", addr, resp)
        return data
