"""The GEMM engine: systolic array, skew/de-skew, int32 accumulator memory and the fused epilogue."""

from amaranth import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .epilogue import Epilogue, epilogue_params_layout
from .pe import activation_token
from .systolic_array import SystolicArray, check_array_size

__all__ = ["GemmEngine", "matmul_command_layout", "store_command_layout"]

A_WIDTH = W_WIDTH = 8
ACC_WIDTH = 32
#: Accumulator read-modify-write stages after the de-skew: read, register the read data, add and write.
_RMW_STAGES = 3
#: STORE command register: the read side starts from a registered command.
_STORE_COMMAND_STAGES = 1
#: STORE stages before the epilogue: read an accumulator row, register it.
_STORE_READ_STAGES = 2


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
    an earlier MATMUL writes - ``mm_done`` pulses say when - and a MATMUL must not overwrite rows an earlier STORE has
    not read yet; the instruction controller's dependency tokens do this). Unordered, a STORE could read a row in the
    cycle it is written, which the block RAM leaves undefined. Consecutive MATMULs may accumulate into rows the
    previous one is still writing: the accumulator pipeline forwards them.

    Parameters
    ----------
    rows, cols : int
        Systolic array size.
    acc_depth : int
        Accumulator rows (a power of two); each row holds ``cols`` int32 values.
    dsp_pes : int
        PEs whose multiplier is a DSP block (see :class:`~hw.systolic_array.SystolicArray`); no effect on timing or
        results (default 0).
    pe_multiplier : str
        The other PEs' multiplier, ``"fabric"`` (default) or ``"carry"`` (see
        :class:`~hw.systolic_array.SystolicArray`); no effect on timing or results.

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

    def __init__(self, *, rows=8, cols=8, acc_depth=512, dsp_pes=0, pe_multiplier="fabric"):
        check_array_size(rows, cols)
        self._addr_width = _address_width(acc_depth)
        self._rows, self._cols, self._acc_depth = rows, cols, acc_depth
        self._epilogue = Epilogue(cols=cols)
        self._array = SystolicArray(rows=rows, cols=cols, a_width=A_WIDTH, w_width=W_WIDTH,
                                    acc_width=self.psum_width, dsp_pes=dsp_pes,
                                    pe_multiplier=pe_multiplier)
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
    def psum_width(self):
        """Width of the array's partial sums: a column adds ``rows`` int8 x int8 products, at most
        ``rows * 2**14`` in magnitude, so ``16 + ceil(log2(rows))`` signed bits hold it exactly (the accumulator
        memory sign-extends it to 32 bits and wraps there, as the int8 spec's int32 accumulation does). Narrower
        sums make the PEs' accumulate adders and the de-skew registers smaller."""
        return min(ACC_WIDTH, A_WIDTH + W_WIDTH + (self._rows - 1).bit_length())

    @property
    def pipeline_depth(self):
        """Cycles from a vector's acceptance to its de-skewed column sums: ``rows + cols + 3``.

        Row 0 enters the array in the acceptance cycle and row ``r`` ``r`` cycles later (input skew); column ``c``'s
        sum leaves the array :meth:`SystolicArray.column_latency(c) <hw.systolic_array.SystolicArray.column_latency>`
        (``rows + c + 4``) cycles after acceptance and waits ``cols - 1 - c`` more cycles in the de-skew, so the
        whole row is ready with the last column's.
        """
        return self._array.column_latency(self._cols - 1)

    def matmul_latency(self, count):
        """Cycles from a lone MATMUL's command handshake to ``mm_idle`` rising (weights and vectors never stall).

        1 (command) + ``rows`` (weight rows) + 1 (hand-over to the feeder) + ``count`` (vectors)
        + :attr:`pipeline_depth` + 3 (accumulator read, registered read data, add and write), minus the shared
        first cycle: ``count + 2 * rows + cols + 7``.
        """
        return 1 + self._rows + 1 + count + self.pipeline_depth + _RMW_STAGES - 1

    @property
    def min_overlapped_count(self):
        """Vectors per MATMUL for which consecutive MATMULs stream with no idle cycle between them.

        The next tile's weights go into the bank the previous-but-one tile used. A PE samples the weight of its
        activation's bank in the activation's arrival cycle (the pipelined PE registers the selected weight, so its
        later stages never read the banks), hence that bank is free ``cols - 1`` cycles after the previous-but-one
        tile's last vector entered, however deep the PE. Loading takes ``rows`` cycles and the hand-over to the
        feeder one more, so with ``count`` vectors per tile ``count >= rows + cols - 1``. The loader also starts a
        tile only after handing over the previous one, which needs ``count >= rows + 2``.
        """
        return max(self._rows + 2, self._rows + self._cols - 1)

    @property
    def store_command_latency(self):
        """Cycles from a STORE's command handshake to its first accumulator read: the command register (1)."""
        return _STORE_COMMAND_STAGES

    @property
    def store_latency(self):
        """Cycles from a STORE's command handshake to its first output row (``out`` ready).

        1 (the command register) + 2 (read the accumulator row, register it) + the epilogue's latency:
        ``3 + Epilogue.latency``.
        """
        return _STORE_COMMAND_STAGES + _STORE_READ_STAGES + self._epilogue.latency

    def elaborate(self, platform):
        m = Module()
        rows, cols, aw = self._rows, self._cols, self._addr_width
        mm_layout = matmul_command_layout(self._acc_depth)

        m.submodules.array = array = self._array
        m.submodules.epilogue = epilogue = self._epilogue
        m.submodules.acc_mem = acc_mem = Memory(shape=data.ArrayLayout(signed(ACC_WIDTH), cols),
                                                depth=self._acc_depth, init=[], attrs={"no_rw_check": 1})
        acc_wr = acc_mem.write_port()
        acc_rmw = acc_mem.read_port()
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

        # A bank is reusable once the last vector that read it has reached the last column: a PE samples its
        # weight in the activation's arrival cycle, vector T reads row r at T + r + cols - 1 and the loader
        # rewrites row r at X0 + r, so X0 >= T + cols - 1 (whatever the PE's pipeline depth).
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
        # The array's weight write port is registered: the weight row fans out to every PE of its columns, and
        # so leaves a register rather than the WGT block RAM's read path. A row is written one cycle after its
        # handshake, which only moves writes later than the bank-reuse rule above requires; a tile's first vector
        # reaches row r at least rows cycles after that row is written.
        w_data = Signal.like(array.w_data, name="w_data_q", reset_less=True)
        m.d.comb += self.weights.ready.eq(ld_busy & ~ld_bank_busy)
        m.d.sync += [
            w_data.eq(self.weights.payload),
            array.w_row.eq(ld_row),
            array.w_bank.eq(ld_bank),
            array.w_we.eq(self.weights.valid & self.weights.ready),
        ]
        m.d.comb += array.w_data.eq(w_data)
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

        # ---- Input skew: row r enters r * row_skew (= r) cycles after row 0. Bubbles carry zeros.
        # The datapath registers from here to the epilogue have no reset (reset_less): what a reset leaves in
        # them belongs to no valid vector or row (the valid bits alongside are reset), and off the reset net they
        # leave it to the control logic (on an FPGA it is a general-routing net to every flop it reaches).
        for r in range(rows):
            token = Signal(activation_token(A_WIDTH), name=f"skew_{r}_0")
            m.d.comb += [token.data.eq(Mux(issue, self.act.payload[r], 0)), token.bank.eq(fd_bank)]
            for stage in range(r * array.row_skew):
                delayed = Signal(activation_token(A_WIDTH), name=f"skew_{r}_{stage + 1}", reset_less=True)
                m.d.sync += delayed.eq(token)
                token = delayed
            m.d.comb += array.a_in[r].eq(token)

        # ---- Sideband delay line: which accumulator row a vector's sums go to, aligned with the de-skew.
        # Only the valid bits are reset.
        sideband_layout = data.StructLayout({"valid": 1, "last": 1, "addr": unsigned(aw), "accumulate": 1})
        sideband = Signal(sideband_layout, name="sideband_0")
        m.d.comb += [sideband.valid.eq(issue), sideband.last.eq(fd_remaining == 1), sideband.addr.eq(fd_addr),
                     sideband.accumulate.eq(fd_accumulate)]
        for stage in range(self.pipeline_depth):
            delayed = Signal(sideband_layout, name=f"sideband_{stage + 1}")
            delayed_valid = Signal(name=f"sideband_{stage + 1}_valid")
            delayed_rest = Signal(sideband_layout.size - 1, name=f"sideband_{stage + 1}_rest", reset_less=True)
            m.d.sync += [delayed_valid.eq(sideband.valid), delayed_rest.eq(sideband.as_value()[1:])]
            m.d.comb += delayed.eq(Cat(delayed_valid, delayed_rest))
            sideband = delayed

        # ---- Output de-skew: column c waits cols - 1 - c cycles so a whole row arrives at once.
        psum_row = Signal(data.ArrayLayout(signed(self.psum_width), cols))
        for c in range(cols):
            value = array.psum_out[c]
            for stage in range(cols - 1 - c):
                delayed = Signal(signed(self.psum_width), name=f"deskew_{c}_{stage}", reset_less=True)
                m.d.sync += delayed.eq(value)
                value = delayed
            m.d.comb += psum_row[c].eq(value)

        # ---- Accumulator read-modify-write in three stages, so that the block RAM's (unregistered, slow) read data
        # goes straight into a register: read in cycle T (s0), register the data (s1), add and write in T + 2 (s2).
        # The read in T misses the writes of cycles T and T + 1 (a read of the address written in the same cycle
        # is undefined: the memory is marked no_rw_check), so those two are forwarded. The forwarding choice is
        # made a cycle ahead on registered addresses, leaving one LUT between the s2 registers and the adder.
        rmw_layout = data.StructLayout({"valid": 1, "last": 1, "accumulate": 1, "addr": unsigned(aw)})
        row_layout = data.ArrayLayout(signed(ACC_WIDTH), cols)
        s1, s2 = Signal(rmw_layout, name="rmw_s1"), Signal(rmw_layout, name="rmw_s2")
        s1_psum = Signal(data.ArrayLayout(signed(self.psum_width), cols), name="rmw_s1_psum", reset_less=True)
        s2_psum = Signal(data.ArrayLayout(signed(self.psum_width), cols), name="rmw_s2_psum", reset_less=True)
        s2_read = Signal(row_layout, name="rmw_s2_read", reset_less=True)
        write_data = Signal(row_layout, name="rmw_write_data")
        # the row written in the previous cycle
        last_write = Signal(row_layout, name="rmw_last_write", reset_less=True)
        forward = Signal(row_layout, name="rmw_forward", reset_less=True)
        hit_next, hit_prev = Signal(name="rmw_hit_next"), Signal(name="rmw_hit_prev")
        use_forward, use_read = Signal(name="rmw_use_forward"), Signal(name="rmw_use_read")
        m.d.comb += [acc_rmw.addr.eq(sideband.addr), acc_rmw.en.eq(1)]
        m.d.sync += [
            s1.valid.eq(sideband.valid), s1.last.eq(sideband.last), s1.accumulate.eq(sideband.accumulate),
            s1.addr.eq(sideband.addr), s1_psum.eq(psum_row),
            s2.eq(s1), s2_psum.eq(s1_psum), s2_read.eq(acc_rmw.data),
            last_write.eq(write_data),
            # In cycle T: the rows in s1 and s2 write in T + 1 and T, the two writes this row's read misses.
            hit_next.eq(s1.valid & (s1.addr == sideband.addr)),
            hit_prev.eq(s2.valid & (s2.addr == sideband.addr)),
            # In cycle T + 1: the newer of the two wins; the row in s2 is writing now, the other wrote in T.
            forward.eq(Mux(hit_next, write_data, last_write)),
            use_forward.eq(s1.accumulate & (hit_next | hit_prev)),
            use_read.eq(s1.accumulate & ~hit_next & ~hit_prev),
        ]
        for c in range(cols):
            base = Mux(use_forward, forward[c], Mux(use_read, s2_read[c], 0))
            m.d.comb += write_data[c].eq((base + s2_psum[c])[:ACC_WIDTH])
        m.d.comb += [acc_wr.addr.eq(s2.addr), acc_wr.en.eq(s2.valid), acc_wr.data.eq(write_data),
                     self.mm_done.eq(s2.valid & s2.last)]

        mm_in_flight = Signal(range(self.pipeline_depth + _RMW_STAGES + 1))
        with m.If(issue & ~acc_wr.en):
            m.d.sync += mm_in_flight.eq(mm_in_flight + 1)
        with m.Elif(~issue & acc_wr.en):
            m.d.sync += mm_in_flight.eq(mm_in_flight - 1)
        m.d.comb += self.mm_idle.eq(~ld_busy & ~pend_valid & ~fd_active & (mm_in_flight == 0))

        # ---- Store: accumulator rows -> register -> epilogue -> out. The block RAM's read data is registered
        # (with the parameters of its command) before the epilogue's bias add, in a two-entry skid buffer: its main
        # register feeds the epilogue, its side register catches the row read while the epilogue stalls. So the
        # read side (address, read enable, command ready) waits on the skid buffer's registers only, not on the
        # epilogue's and the STORE unit's ready chain.
        st_remaining = Signal(aw + 1)
        st_addr = Signal(aw)
        # The rows and parameters have no reset: only the valid bits say what they hold.
        st_params = Signal(epilogue_params_layout(cols), reset_less=True)
        rd_valid = Signal()
        q_valid = Signal(name="st_q_valid")
        q_acc = Signal(data.ArrayLayout(signed(ACC_WIDTH), cols), name="st_q_acc", reset_less=True)
        q_params = Signal(epilogue_params_layout(cols), name="st_q_params", reset_less=True)
        side_valid = Signal(name="st_side_valid")
        side_acc = Signal(data.ArrayLayout(signed(ACC_WIDTH), cols), name="st_side_acc", reset_less=True)
        side_params = Signal(epilogue_params_layout(cols), name="st_side_params", reset_less=True)
        # The command is registered first: ``st_cmd.ready`` is a register, the command register follows the
        # payload while nothing is held (its enable does not wait on the STORE unit's valid, which only sets
        # ``held``), and the read side starts from the held command.
        held = Signal(name="st_cmd_held")
        cmd = Signal(store_command_layout(self._acc_depth, self._cols), name="st_cmd_q", reset_less=True)
        m.d.comb += self.st_cmd.ready.eq(~held)
        with m.If(~held):
            m.d.sync += [held.eq(self.st_cmd.valid), cmd.eq(self.st_cmd.payload)]
        st_zero = Signal(init=1, name="st_zero")    # st_remaining == 0, as a register
        advance = Signal()
        read = Signal()
        begin = Signal()
        m.d.comb += [
            advance.eq(~rd_valid | ~side_valid),
            begin.eq(held & st_zero & advance),
            acc_st.en.eq(advance),
        ]
        with m.If(begin):
            m.d.sync += held.eq(0)
            m.d.comb += [acc_st.addr.eq(cmd.acc_addr), read.eq(cmd.count != 0)]
            m.d.sync += [st_params.eq(cmd.params), st_addr.eq(cmd.acc_addr + 1)]
            with m.If(cmd.count != 0):
                m.d.sync += [st_remaining.eq(cmd.count - 1), st_zero.eq(cmd.count == 1)]
        with m.Elif(~st_zero):
            m.d.comb += [acc_st.addr.eq(st_addr), read.eq(advance)]
            with m.If(advance):
                m.d.sync += [st_addr.eq(st_addr + 1), st_remaining.eq(st_remaining - 1),
                             st_zero.eq(st_remaining == 1)]
        with m.If(advance):
            m.d.sync += rd_valid.eq(read)
        with m.If(~q_valid | epilogue.i.ready):
            with m.If(side_valid):
                m.d.sync += [q_valid.eq(1), q_acc.eq(side_acc), q_params.eq(side_params), side_valid.eq(0)]
            with m.Else():
                m.d.sync += [q_valid.eq(rd_valid), q_acc.eq(acc_st.data), q_params.eq(st_params)]
        with m.Elif(rd_valid & ~side_valid):
            m.d.sync += [side_valid.eq(1), side_acc.eq(acc_st.data), side_params.eq(st_params)]
        m.d.comb += [
            epilogue.i.valid.eq(q_valid),
            epilogue.i.payload.acc.eq(q_acc),
            epilogue.i.payload.params.eq(q_params),
        ]
        wiring.connect(m, epilogue.o, wiring.flipped(self.out))

        st_in_flight = Signal(range(_STORE_READ_STAGES + self._epilogue.latency + 3))
        out_done = self.out.valid & self.out.ready
        with m.If(read & advance & ~out_done):
            m.d.sync += st_in_flight.eq(st_in_flight + 1)
        with m.Elif(~(read & advance) & out_done):
            m.d.sync += st_in_flight.eq(st_in_flight - 1)
        m.d.comb += self.st_idle.eq(~held & st_zero & (st_in_flight == 0))
        return m
