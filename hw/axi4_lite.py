"""AXI4-Lite register file: the accelerator's control/status registers as a memory-mapped slave."""

from __future__ import annotations

import keyword

from amaranth import Const, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .axi import AXI4LiteSignature, AXIResp

__all__ = ["AXI4LiteRegisters", "ACCESS_MODES"]

#: Register access modes: read/write storage, read-only input, write-triggered one-cycle pulse.
ACCESS_MODES = ("rw", "ro", "pulse")


class AXI4LiteRegisters(wiring.Component):
    """32-bit registers on an AXI4-Lite slave port.

    Parameters
    ----------
    registers : list of (name, offset, access) or (name, offset, access, init)
        ``name`` is a Python identifier (it becomes a port), ``offset`` a byte offset that is a multiple of 4 and
        below ``2 ** addr_width``, ``access`` one of ``"rw"``, ``"ro"``, ``"pulse"``. ``init`` (rw only, default 0)
        is the value after reset. Names and offsets must be unique.
    addr_width : int
        Byte-address width of the slave port, 3 to 32 (12 gives a 4 KiB window).

    Members
    -------
    bus : In(AXI4LiteSignature(addr_width=addr_width, data_width=32))
        The slave port.
    <name> : Out(32) for an rw register
        Its value. A write updates the bytes whose WSTRB bits are set.
    <name>_we : Out(1) for an rw register
        High for one cycle, in the first cycle the written value is visible on ``<name>``.
    <name> : In(32) for an ro register
        Sampled in the cycle the read address is accepted. Writes to it answer SLVERR and change nothing.
    <name> : Out(1) for a pulse register
        High for one cycle after any write to it (whatever the data and strobes); it reads as 0.

    Addressing and responses
    ------------------------
    Decoding uses address bits ``[2:addr_width]``; bits 0-1 are ignored, so an unaligned address selects the
    register containing it. Reads and writes of an address with no register answer SLVERR (reads return 0), as do
    writes to an ro register; everything else answers OKAY. ``prot`` is ignored.

    Latency, throughput and flow control
    ------------------------------------
    AW and W are latched independently, in either order or together (``awready``/``wready`` depend only on whether
    the latch is empty, never on a ``valid``). The write happens the cycle after both are held and no B is waiting;
    BVALID rises with it and the latches refill while B is pending. A read answers with RVALID :attr:`read_latency`
    cycle after the AR handshake; ARREADY is low while an R response waits. One write every 2 cycles and one read
    every 2 cycles at best, reads and writes in parallel.
    """

    def __init__(self, *, registers, addr_width: int = 12):
        if not isinstance(addr_width, int) or isinstance(addr_width, bool) or not 3 <= addr_width <= 32:
            raise ValueError(f"Address width must be an integer from 3 to 32, not {addr_width!r}")
        try:
            entries = list(registers)
        except TypeError:
            raise TypeError(f"Registers must be a list of (name, offset, access) tuples, not {registers!r}") \
                from None
        if not entries:
            raise ValueError("Registers must not be empty: give at least one (name, offset, access) tuple")
        self._addr_width = addr_width
        self._registers = []
        names, offsets = {}, {}
        for entry in entries:
            if not isinstance(entry, tuple) or len(entry) not in (3, 4):
                raise TypeError(f"Register {entry!r} must be a tuple (name, offset, access) or "
                                f"(name, offset, access, init)")
            name, offset, access = entry[:3]
            init = entry[3] if len(entry) == 4 else 0
            if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name) \
                    or name.startswith("_") or name == "bus":
                raise NameError(f"Register name must be a Python identifier that does not start with '_' and "
                                f"is not 'bus', not {name!r}")
            if access not in ACCESS_MODES:
                raise ValueError(f"Register {name!r} access must be one of {ACCESS_MODES}, not {access!r}")
            if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
                raise ValueError(f"Register {name!r} offset must be a non-negative integer, not {offset!r}")
            if offset % 4:
                raise ValueError(f"Register {name!r} offset must be a multiple of 4 (32-bit registers), "
                                 f"not {offset:#x}")
            if offset >= 2 ** addr_width:
                raise ValueError(f"Register {name!r} offset {offset:#x} does not fit in addr_width={addr_width}; "
                                 f"raise addr_width to at least {offset.bit_length()}")
            if not isinstance(init, int) or isinstance(init, bool) or not 0 <= init < 2 ** 32:
                raise ValueError(f"Register {name!r} init must be an integer from 0 to 2**32-1, not {init!r}")
            if init and access != "rw":
                raise ValueError(f"Register {name!r} init applies only to rw registers, not {access!r} ones")
            if name in names:
                raise NameError(f"Register name {name!r} is used twice (offsets {names[name]:#x} and {offset:#x})")
            if offset in offsets:
                raise ValueError(f"Register offset {offset:#x} is used twice ({offsets[offset]!r} and {name!r})")
            names[name], offsets[offset] = offset, name
            self._registers.append((name, offset, access, init))
        members = {"bus": In(AXI4LiteSignature(addr_width=addr_width, data_width=32))}
        for name, _, access, init in self._registers:
            if access == "rw":
                members[name] = Out(32, init=init)
                if f"{name}_we" in names:
                    raise NameError(f"Register name {name + '_we'!r} clashes with the write-enable port of rw "
                                    f"register {name!r}; rename one of them")
                members[f"{name}_we"] = Out(1)
            elif access == "ro":
                members[name] = In(32)
            else:
                members[name] = Out(1)
        super().__init__(members)

    addr_width = property(lambda self: self._addr_width)

    @property
    def registers(self) -> tuple:
        """The validated register map as (name, offset, access, init) tuples."""
        return tuple(self._registers)

    @property
    def read_latency(self) -> int:
        """Cycles from the AR handshake to RVALID."""
        return 1

    def elaborate(self, platform):
        m = Module()
        bus = self.bus

        # ---------------------------------------------------------------- writes
        aw_full = Signal()
        aw_addr = Signal(self._addr_width)
        w_full = Signal()
        w_data = Signal(32)
        w_strb = Signal(4)
        b_valid = Signal()
        b_resp = Signal(2)
        m.d.comb += [
            bus.aw.ready.eq(~aw_full),
            bus.w.ready.eq(~w_full),
            bus.b.valid.eq(b_valid),
            bus.b.resp.eq(b_resp),
        ]
        with m.If(bus.aw.valid & bus.aw.ready):
            m.d.sync += [aw_full.eq(1), aw_addr.eq(bus.aw.addr)]
        with m.If(bus.w.valid & bus.w.ready):
            m.d.sync += [w_full.eq(1), w_data.eq(bus.w.data), w_strb.eq(bus.w.strb)]
        with m.If(bus.b.valid & bus.b.ready):
            m.d.sync += b_valid.eq(0)

        # Enables and pulses are registered: they fire in the cycle the B response appears.
        for name, _, access, _ in self._registers:
            if access == "rw":
                m.d.sync += getattr(self, f"{name}_we").eq(0)
            elif access == "pulse":
                m.d.sync += getattr(self, name).eq(0)

        write = aw_full & w_full & ~b_valid
        with m.If(write):
            m.d.sync += [aw_full.eq(0), w_full.eq(0), b_valid.eq(1), b_resp.eq(AXIResp.SLVERR)]
            with m.Switch(aw_addr[2:]):
                for name, offset, access, _ in self._registers:
                    with m.Case(offset >> 2):
                        if access == "rw":
                            reg = getattr(self, name)
                            m.d.sync += [b_resp.eq(AXIResp.OKAY), getattr(self, f"{name}_we").eq(1)]
                            for i in range(4):
                                with m.If(w_strb[i]):
                                    m.d.sync += reg[8 * i:8 * i + 8].eq(w_data[8 * i:8 * i + 8])
                        elif access == "pulse":
                            m.d.sync += [b_resp.eq(AXIResp.OKAY), getattr(self, name).eq(1)]
                        # ro: SLVERR, nothing changes

        # ----------------------------------------------------------------- reads
        r_valid = Signal()
        r_data = Signal(32)
        r_resp = Signal(2)
        m.d.comb += [
            bus.ar.ready.eq(~r_valid),
            bus.r.valid.eq(r_valid),
            bus.r.data.eq(r_data),
            bus.r.resp.eq(r_resp),
        ]
        with m.If(bus.ar.valid & bus.ar.ready):
            m.d.sync += [r_valid.eq(1), r_data.eq(0), r_resp.eq(AXIResp.SLVERR)]
            with m.Switch(bus.ar.addr[2:]):
                for name, offset, access, _ in self._registers:
                    with m.Case(offset >> 2):
                        value = Const(0, 32) if access == "pulse" else getattr(self, name)
                        m.d.sync += [r_data.eq(value), r_resp.eq(AXIResp.OKAY)]
        with m.Elif(bus.r.valid & bus.r.ready):
            m.d.sync += r_valid.eq(0)
        return m
