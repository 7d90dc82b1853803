"""Shares the AXI master's read channel between requesters (instruction fetch and the LOAD unit)."""

from amaranth import Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["ReadArbiter"]


class ReadArbiter(wiring.Component):
    """Round-robin arbitration of read commands; each command's data returns to its requester.

    The master pipelines commands, so a requester that holds the channel may issue further commands while earlier
    ones are still returning data; the channel passes to another requester (round robin) only when its owner has no
    command outstanding, so data always belongs to the owner and no tag is needed. A requester sends no zero-beat
    commands (they return no data and would never complete). The owner is a register, not a FIFO read-out, so no
    uninitialised memory ever reaches the routing (4-state simulators would otherwise propagate X into the
    handshakes).

    Parameters
    ----------
    cmd_shape, data_shape : the AXI master's ``rd_cmd`` / ``rd_data`` payload layouts
    requesters : int
    outstanding : int
        Commands the owner may have outstanding (the master's limit; only sizes the counter).

    Members
    -------
    rd_cmd_<i> : In(stream cmd), rd_data_<i> : Out(stream data)   for each requester ``i``
    rd_cmd : Out(stream cmd), rd_data : In(stream data)           to the master

    Latency: none (commands and data pass combinationally). Throughput: one beat per cycle; the owner's commands back
    to back; another requester's first command the cycle after the owner's last beat.
    """

    def __init__(self, *, cmd_shape, data_shape, requesters=2, outstanding=8):
        if not isinstance(requesters, int) or requesters < 1:
            raise ValueError(f"Requester count must be a positive integer, not {requesters!r}")
        if not isinstance(outstanding, int) or isinstance(outstanding, bool) or outstanding < 1:
            raise ValueError(f"Outstanding command limit must be a positive integer, not {outstanding!r}")
        self._n = requesters
        self._outstanding = outstanding
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
        pending = Signal(range(self._outstanding + 2))  # the owner's commands without their last beat
        owner = Signal(range(max(n, 2)))
        last_grant = Signal(range(max(n, 2)))
        grant = Signal(range(max(n, 2)))
        requests = [getattr(self, f"rd_cmd_{i}").valid for i in range(n)]
        # Round robin: the first requester after the last one granted (later assignments take priority).
        for offset in reversed(range(1, n + 1)):
            for i in range(n):
                with m.If((last_grant == (i - offset) % n) & requests[i]):
                    m.d.comb += grant.eq(i)
        # While commands are outstanding only their owner may add more; otherwise the round-robin choice.
        chosen = Signal.like(grant)
        m.d.comb += chosen.eq(Mux(pending != 0, owner, grant))
        for i in range(n):
            cmd = getattr(self, f"rd_cmd_{i}")
            with m.If(chosen == i):
                m.d.comb += [self.rd_cmd.payload.eq(cmd.payload), self.rd_cmd.valid.eq(cmd.valid),
                             cmd.ready.eq(self.rd_cmd.ready)]
        issued = self.rd_cmd.valid & self.rd_cmd.ready
        finished = self.rd_data.valid & self.rd_data.ready & self.rd_data.payload.last
        with m.If(issued):
            m.d.sync += [owner.eq(chosen), last_grant.eq(chosen)]
        with m.If(issued & ~finished):
            m.d.sync += pending.eq(pending + 1)
        with m.Elif(~issued & finished):
            m.d.sync += pending.eq(pending - 1)

        for i in range(n):
            data = getattr(self, f"rd_data_{i}")
            m.d.comb += data.payload.eq(self.rd_data.payload)
            with m.If((pending != 0) & (owner == i)):
                m.d.comb += [data.valid.eq(self.rd_data.valid), self.rd_data.ready.eq(data.ready)]
        return m
