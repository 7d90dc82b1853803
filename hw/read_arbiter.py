"""Shares the AXI master's read channel between requesters (instruction fetch and the LOAD unit)."""

from amaranth import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

__all__ = ["ReadArbiter"]


class ReadArbiter(wiring.Component):
    """Round-robin arbitration of read commands; read data returns to its requester in command order.

    The master answers one ID in order, so a FIFO of requester numbers (``outstanding`` deep) is enough to route
    each burst of data back: the head names the owner of the data beats until a beat with ``last``.

    Parameters
    ----------
    cmd_shape, data_shape : the AXI master's ``rd_cmd`` / ``rd_data`` payload layouts
    requesters : int
    outstanding : int
        Read commands that may be in flight at once.

    Members
    -------
    rd_cmd_<i> : In(stream cmd), rd_data_<i> : Out(stream data)   for each requester ``i``
    rd_cmd : Out(stream cmd), rd_data : In(stream data)           to the master

    Latency: none (commands and data pass combinationally). Throughput: one command and one beat per cycle.
    """

    def __init__(self, *, cmd_shape, data_shape, requesters=2, outstanding=8):
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
        m.submodules.owners = owners = SyncFIFOBuffered(width=max((n - 1).bit_length(), 1), depth=self._outstanding)
        last_grant = Signal(range(n))
        grant = Signal(range(n))
        requests = [getattr(self, f"rd_cmd_{i}").valid for i in range(n)]
        # Round robin: the first requester after the last one granted.
        for offset in reversed(range(1, n + 1)):
            for i in range(n):
                with m.If((last_grant == (i - offset) % n) & requests[i]):
                    m.d.comb += grant.eq(i)
        any_request = Signal()
        m.d.comb += any_request.eq(sum(requests) != 0)
        for i in range(n):
            cmd = getattr(self, f"rd_cmd_{i}")
            with m.If(grant == i):
                m.d.comb += [self.rd_cmd.payload.eq(cmd.payload),
                             self.rd_cmd.valid.eq(cmd.valid & owners.w_rdy),
                             cmd.ready.eq(self.rd_cmd.ready & owners.w_rdy)]
        with m.If(self.rd_cmd.valid & self.rd_cmd.ready):
            m.d.comb += [owners.w_en.eq(1), owners.w_data.eq(grant)]
            m.d.sync += last_grant.eq(grant)

        for i in range(n):
            data = getattr(self, f"rd_data_{i}")
            m.d.comb += data.payload.eq(self.rd_data.payload)
            with m.If(owners.r_rdy & (owners.r_data == i)):
                m.d.comb += [data.valid.eq(self.rd_data.valid), self.rd_data.ready.eq(data.ready)]
        with m.If(self.rd_data.valid & self.rd_data.ready & self.rd_data.payload.last):
            m.d.comb += owners.r_en.eq(1)
        return m
