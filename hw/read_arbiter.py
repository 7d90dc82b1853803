"""Shares the AXI master's read channel between requesters (instruction fetch and the LOAD unit)."""

from amaranth import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["ReadArbiter"]


class ReadArbiter(wiring.Component):
    """Round-robin arbitration of whole read commands; each command's data returns to its requester.

    The channel is granted to one requester from its command handshake until the command's last data beat, which
    matches the AXI master (it accepts a read command only after the previous one has completed), so nothing is
    lost by not overlapping commands. The owner is a register, not a FIFO read-out, so no uninitialised memory
    ever reaches the routing (4-state simulators would otherwise propagate X into the handshakes).

    Parameters
    ----------
    cmd_shape, data_shape : the AXI master's ``rd_cmd`` / ``rd_data`` payload layouts
    requesters : int

    Members
    -------
    rd_cmd_<i> : In(stream cmd), rd_data_<i> : Out(stream data)   for each requester ``i``
    rd_cmd : Out(stream cmd), rd_data : In(stream data)           to the master

    Latency: none (commands and data pass combinationally). Throughput: one beat per cycle; a new command one
    cycle after the previous command's last beat.
    """

    def __init__(self, *, cmd_shape, data_shape, requesters=2):
        if not isinstance(requesters, int) or requesters < 1:
            raise ValueError(f"Requester count must be a positive integer, not {requesters!r}")
        self._n = requesters
        members = {}
        for i in range(requesters):
            members[f"rd_cmd_{i}"] = In(stream.Signature(cmd_shape))
            members[f"rd_data_{i}"] = Out(stream.Signature(data_shape))
        members["rd_cmd"] = Out(stream.Signature(cmd_shape))
        members["rd_data"] = In(stream.Signature(data_shape))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        n = self._n
        busy = Signal()
        owner = Signal(range(max(n, 2)))
        last_grant = Signal(range(max(n, 2)))
        grant = Signal(range(max(n, 2)))
        requests = [getattr(self, f"rd_cmd_{i}").valid for i in range(n)]
        # Round robin: the first requester after the last one granted (later assignments take priority).
        for offset in reversed(range(1, n + 1)):
            for i in range(n):
                with m.If((last_grant == (i - offset) % n) & requests[i]):
                    m.d.comb += grant.eq(i)
        for i in range(n):
            cmd = getattr(self, f"rd_cmd_{i}")
            with m.If(~busy & (grant == i)):
                m.d.comb += [self.rd_cmd.payload.eq(cmd.payload), self.rd_cmd.valid.eq(cmd.valid),
                             cmd.ready.eq(self.rd_cmd.ready)]
        with m.If(self.rd_cmd.valid & self.rd_cmd.ready):
            m.d.sync += [busy.eq(1), owner.eq(grant), last_grant.eq(grant)]

        for i in range(n):
            data = getattr(self, f"rd_data_{i}")
            m.d.comb += data.payload.eq(self.rd_data.payload)
            with m.If(busy & (owner == i)):
                m.d.comb += [data.valid.eq(self.rd_data.valid), self.rd_data.ready.eq(data.ready)]
        with m.If(self.rd_data.valid & self.rd_data.ready & self.rd_data.payload.last):
            m.d.sync += busy.eq(0)
        return m
