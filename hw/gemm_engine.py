"""The GEMM engine: systolic array, skew/de-skew, int32 accumulator memory and the fused epilogue."""

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .epilogue import Epilogue, epilogue_params_layout
from .pe import activation_token
from .systolic_array import SystolicArray, check_array_size

__all__ = ["GemmEngine", "matmul_command_layout", "store_command_layout"]

A_WIDTH = W_WIDTH = 8
ACC_WIDTH = 32


def _address_width(acc_depth):
    if not isinstance(acc_depth, int) or isinstance(acc_depth, bool) or acc_depth < 2 or acc_depth & (acc_depth - 1):
        raise ValueError(f"Accumulator depth must be a power of two of at least 2, not {acc_depth!r}")
    return acc_depth.bit_length() - 1


def matmul_command_layout(acc_depth):
    """MATMUL command: stream ``count`` vectors through the array into accumulator rows ``acc_addr + i``."""
    aw = _address_width(acc_depth)
    return data.StructLayout({"acc_addr": unsigned(aw), "count": unsigned(aw + 1), "accumulate": 1})


def store_command_layout(acc_depth, cols):
    """STORE command: read ``count`` accumulator rows from ``acc_addr`` through the epilogue with ``params``."""
    aw = _address_width(acc_depth)
    return data.StructLayout({"acc_addr": unsigned(aw), "count": unsigned(aw + 1),
                              "params": epilogue_params_layout(cols)})


class GemmEngine(wiring.Component):
    """A weight-stationary GEMM engine: ``C[m, :] (+)= A[m, :] @ W`` one ``rows x cols`` tile at a time.

    A MATMUL command consumes ``rows`` weight rows from ``weights`` (row 0 first; pad K < rows with zeros) and then
    ``count`` activation vectors from ``act`` (one K-slice of one row of A each, zero-padded to ``rows``). Vector
    ``i``'s ``cols`` column sums are written (``accumulate=0``) or added (``accumulate=1``) to accumulator row
    ``acc_addr + i`` (modulo ``acc_depth``), so K larger than ``rows`` is handled by accumulating K-tiles.
    A STORE command reads ``count`` accumulator rows through the :class:`~hw.epilogue.Epilogue` (bias,
    requantization, zero point, clamp; or raw int32) to ``out``.

    The next MATMUL's weights load into the idle weight bank while the current one streams, so MATMULs of at
    least :attr:`min_overlapped_count` vectors follow each other with no idle cycle. MATMUL and STORE run
    concurrently on separate command streams; the caller orders them (a STORE must wait until ``mm_idle`` for rows
    an earlier MATMUL writes - ``mm_done`` pulses say when - and a MATMUL must not overwrite rows an earlier STORE has not
read yet; the instruction controller's dependency tokens do this).

    Parameters
    ----------
    rows, cols : int
        Systolic array size.
    acc_depth : int
        Accumulator rows (a power of two); each row holds ``cols`` int32 values.

    Members
    -------
    mm_cmd : In(stream.Signature(matmul_command_layout(acc_depth)))
    weights : In(stream.Signature(ArrayLayout(signed(8), cols)))
    act : In(stream.Signature(ArrayLayout(signed(8), rows)))
    st_cmd : In(stream.Signature(store_command_layout(acc_depth, cols)))
    out : Out(stream.Signature(ArrayLayout(signed(32), cols)))
        int8 results sign-extended, or raw int32 accumulators.
    mm_done : Out(1)
        Pulses in the cycle a MATMUL's last accumulator row is written (one pulse per command with count >= 1;
        a command with count 0 loads weights only and gives no pulse). Callers count pulses to know which
        accumulator rows are final.
    mm_idle, st_idle : Out(1)
        No MATMUL (resp. STORE) work accepted and unfinished.

    Latency and throughput (no stalls; derived from the parameters, see the properties):
    a lone MATMUL of ``count`` vectors finishes (``mm_idle`` rises) :meth:`matmul_latency` cycles after its command
    handshake; vectors stream at one per cycle; a STORE's first row leaves :attr:`store_latency` cycles after its
    command handshake and one row per cycle follows while ``out`` is ready. All streams honour back-pressure.
    """

    def __init__(self, *, rows=8, cols=8, acc_depth=512):
        check_array_size(rows, cols)
        self._addr_width = _address_width(acc_depth)
        self._rows, self._cols, self._acc_depth = rows, cols, acc_depth
        self._epilogue = Epilogue(cols=cols)
        super().__init__({
            "mm_cmd": In(stream.Signature(matmul_command_layout(acc_depth))),
            "weights": In(stream.Signature(data.ArrayLayout(signed(W_WIDTH), cols))),
            "act": In(stream.Signature(data.ArrayLayout(signed(A_WIDTH), rows))),
            "st_cmd": In(stream.Signature(store_command_layout(acc_depth, cols))),
            "out": Out(stream.Signature(data.ArrayLayout(signed(ACC_WIDTH), cols))),
            "mm_done": Out(1),
            "mm_idle": Out(1),
            "st_idle": Out(1),
        })

    rows = property(lambda self: self._rows)
    cols = property(lambda self: self._cols)
    acc_depth = property(lambda self: self._acc_depth)

    @property
    def pipeline_depth(self):
        """Cycles from a vector's acceptance to its de-skewed column sums: input skew + array + de-skew."""
        return self._rows + self._cols - 1

    def matmul_latency(self, count):
        """Cycles from a lone MATMUL's command handshake to ``mm_idle`` rising (weights and vectors never stall).

        1 (command) + ``rows`` (weight rows) + 1 (hand-over to the feeder) + ``count`` (vectors)
        + :attr:`pipeline_depth` + 2 (accumulator read-modify-write), minus the shared first cycle.
        """
        return count + 2 * self._rows + self._cols + 2

    @property
    def min_overlapped_count(self):
        """Vectors per MATMUL for which consecutive MATMULs stream with no idle cycle between them.

        The next tile's weights go into the bank the previous-but-one tile used, which is free ``cols - 1`` cycles
        after that tile's last vector entered; loading takes ``rows`` cycles and the hand-over two more.
        """
        return max(self._rows + 2, self._rows + self._cols - 1)

    @property
    def store_latency(self):
        """Cycles from a STORE's command handshake to its first output row (``out`` ready)."""
        return 1 + self._epilogue.latency

    def elaborate(self, platform):
        m = Module()
        rows, cols, aw = self._rows, self._cols, self._addr_width
        mm_layout = matmul_command_layout(self._acc_depth)

        m.submodules.array = array = SystolicArray(rows=rows, cols=cols, a_width=A_WIDTH, w_width=W_WIDTH,
                                                   acc_width=ACC_WIDTH)
        m.submodules.epilogue = epilogue = self._epilogue
        m.submodules.acc_mem = acc_mem = Memory(shape=data.ArrayLayout(signed(ACC_WIDTH), cols),
                                                depth=self._acc_depth, init=[])
        acc_wr = acc_mem.write_port()
        acc_rmw = acc_mem.read_port(transparent_for=(acc_wr,))
        acc_st = acc_mem.read_port()

        # ---- Weight loader: fills the idle bank, then hands the command to the feeder through `pending`.
        ld_busy = Signal()
        ld_cmd = Signal(mm_layout)
        ld_bank = Signal()
        ld_row = Signal(range(rows))
        next_bank = Signal()
        pend_valid = Signal()
        pend_cmd = Signal(mm_layout)
        pend_bank = Signal()

        # ---- Activation feeder.
        fd_active = Signal()
        fd_bank = Signal()
        fd_addr = Signal(aw)
        fd_remaining = Signal(aw + 1)
        fd_accumulate = Signal()

        # A bank is reusable once the last vector that read it has passed the last column (cols - 1 cycles).
        bank_hold = [Signal(range(cols + 1), name=f"bank{b}_hold") for b in range(2)]
        issue = Signal()
        m.d.comb += issue.eq(self.act.valid & self.act.ready)
        bank_busy = [(bank_hold[b] != 0) | (fd_active & (fd_bank == b)) for b in range(2)]
        for b in range(2):
            with m.If(issue & (fd_bank == b)):
                m.d.sync += bank_hold[b].eq(max(cols - 2, 0))
            with m.Elif(bank_hold[b] != 0):
                m.d.sync += bank_hold[b].eq(bank_hold[b] - 1)

        m.d.comb += self.mm_cmd.ready.eq(~ld_busy & ~pend_valid)
        with m.If(self.mm_cmd.valid & self.mm_cmd.ready):
            m.d.sync += [ld_busy.eq(1), ld_cmd.eq(self.mm_cmd.payload), ld_bank.eq(next_bank),
                         next_bank.eq(~next_bank), ld_row.eq(0)]

        ld_bank_busy = Signal()
        m.d.comb += ld_bank_busy.eq((ld_bank & bank_busy[1]) | (~ld_bank & bank_busy[0]))
        m.d.comb += [
            self.weights.ready.eq(ld_busy & ~ld_bank_busy),
            array.w_data.eq(self.weights.payload),
            array.w_row.eq(ld_row),
            array.w_bank.eq(ld_bank),
            array.w_we.eq(self.weights.valid & self.weights.ready),
        ]
        with m.If(self.weights.valid & self.weights.ready):
            m.d.sync += ld_row.eq(ld_row + 1)
            with m.If(ld_row == rows - 1):
                m.d.sync += [ld_busy.eq(0), pend_valid.eq(1), pend_cmd.eq(ld_cmd), pend_bank.eq(ld_bank)]

        m.d.comb += self.act.ready.eq(fd_active)
        with m.If(issue):
            m.d.sync += [fd_addr.eq(fd_addr + 1), fd_remaining.eq(fd_remaining - 1)]
            with m.If(fd_remaining == 1):
                m.d.sync += fd_active.eq(0)
        take = Signal()
        m.d.comb += take.eq(pend_valid & (~fd_active | (issue & (fd_remaining == 1))))
        with m.If(take):
            m.d.sync += [
                pend_valid.eq(0),
                fd_active.eq(pend_cmd.count != 0),
                fd_bank.eq(pend_bank),
                fd_addr.eq(pend_cmd.acc_addr),
                fd_remaining.eq(pend_cmd.count),
                fd_accumulate.eq(pend_cmd.accumulate),
            ]

        # ---- Input skew: row r enters r cycles after row 0. Bubbles carry zeros.
        for r in range(rows):
            token = Signal(activation_token(A_WIDTH), name=f"skew_{r}_0")
            m.d.comb += [token.data.eq(Mux(issue, self.act.payload[r], 0)), token.bank.eq(fd_bank)]
            for stage in range(r):
                delayed = Signal(activation_token(A_WIDTH), name=f"skew_{r}_{stage + 1}")
                m.d.sync += delayed.eq(token)
                token = delayed
            m.d.comb += array.a_in[r].eq(token)

        # ---- Sideband delay line: which accumulator row a vector's sums go to, aligned with the de-skew.
        sideband_layout = data.StructLayout({"valid": 1, "last": 1, "addr": unsigned(aw), "accumulate": 1})
        sideband = Signal(sideband_layout, name="sideband_0")
        m.d.comb += [sideband.valid.eq(issue), sideband.last.eq(fd_remaining == 1), sideband.addr.eq(fd_addr),
                     sideband.accumulate.eq(fd_accumulate)]
        for stage in range(self.pipeline_depth):
            delayed = Signal(sideband_layout, name=f"sideband_{stage + 1}")
            m.d.sync += delayed.eq(sideband)
            sideband = delayed

        # ---- Output de-skew: column c waits cols - 1 - c cycles so a whole row arrives at once.
        psum_row = Signal(data.ArrayLayout(signed(ACC_WIDTH), cols))
        for c in range(cols):
            value = array.psum_out[c]
            for stage in range(cols - 1 - c):
                delayed = Signal(signed(ACC_WIDTH), name=f"deskew_{c}_{stage}")
                m.d.sync += delayed.eq(value)
                value = delayed
            m.d.comb += psum_row[c].eq(value)

        # ---- Accumulator read-modify-write: read at T, add and write at T + 1 (transparent for back-to-back rows).
        rmw_valid = Signal()
        rmw_last = Signal()
        rmw_accumulate = Signal()
        rmw_addr = Signal(aw)
        rmw_psum = Signal(data.ArrayLayout(signed(ACC_WIDTH), cols))
        m.d.comb += [acc_rmw.addr.eq(sideband.addr), acc_rmw.en.eq(1)]
        m.d.sync += [rmw_valid.eq(sideband.valid), rmw_last.eq(sideband.last), rmw_accumulate.eq(sideband.accumulate),
                     rmw_addr.eq(sideband.addr), rmw_psum.eq(psum_row)]
        m.d.comb += [acc_wr.addr.eq(rmw_addr), acc_wr.en.eq(rmw_valid), self.mm_done.eq(rmw_valid & rmw_last)]
        for c in range(cols):
            with m.If(rmw_accumulate):
                m.d.comb += acc_wr.data[c].eq((acc_rmw.data[c] + rmw_psum[c])[:ACC_WIDTH])
            with m.Else():
                m.d.comb += acc_wr.data[c].eq(rmw_psum[c])

        mm_in_flight = Signal(range(self.pipeline_depth + 3))
        with m.If(issue & ~acc_wr.en):
            m.d.sync += mm_in_flight.eq(mm_in_flight + 1)
        with m.Elif(~issue & acc_wr.en):
            m.d.sync += mm_in_flight.eq(mm_in_flight - 1)
        m.d.comb += self.mm_idle.eq(~ld_busy & ~pend_valid & ~fd_active & (mm_in_flight == 0))

        # ---- Store: accumulator rows -> epilogue -> out. The read stage stalls with the epilogue.
        st_remaining = Signal(aw + 1)
        st_addr = Signal(aw)
        st_params = Signal(epilogue_params_layout(cols))
        rd_valid = Signal()
        advance = Signal()
        read = Signal()
        m.d.comb += [
            advance.eq(~rd_valid | epilogue.i.ready),
            self.st_cmd.ready.eq((st_remaining == 0) & advance),
            acc_st.en.eq(advance),
        ]
        with m.If(self.st_cmd.valid & self.st_cmd.ready):
            cmd = self.st_cmd.payload
            m.d.comb += [acc_st.addr.eq(cmd.acc_addr), read.eq(cmd.count != 0)]
            m.d.sync += [st_params.eq(cmd.params), st_addr.eq(cmd.acc_addr + 1)]
            with m.If(cmd.count != 0):
                m.d.sync += st_remaining.eq(cmd.count - 1)
        with m.Elif(st_remaining != 0):
            m.d.comb += [acc_st.addr.eq(st_addr), read.eq(advance)]
            with m.If(advance):
                m.d.sync += [st_addr.eq(st_addr + 1), st_remaining.eq(st_remaining - 1)]
        with m.If(advance):
            m.d.sync += rd_valid.eq(read)
        m.d.comb += [
            epilogue.i.valid.eq(rd_valid),
            epilogue.i.payload.acc.eq(acc_st.data),
            epilogue.i.payload.params.eq(st_params),
        ]
        wiring.connect(m, epilogue.o, wiring.flipped(self.out))

        st_in_flight = Signal(range(self._epilogue.latency + 8))
        out_done = self.out.valid & self.out.ready
        with m.If(read & advance & ~out_done):
            m.d.sync += st_in_flight.eq(st_in_flight + 1)
        with m.Elif(~(read & advance) & out_done):
            m.d.sync += st_in_flight.eq(st_in_flight - 1)
        m.d.comb += self.st_idle.eq((st_remaining == 0) & (st_in_flight == 0))
        return m
