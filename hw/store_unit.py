"""The STORE unit: executes STORE (and its SYNCs) by streaming accumulator rows through the engine's epilogue and
writing them to DRAM over the AXI master.

The unit reads the PARAM entry, hands the GEMM engine a store command and turns each result row into the aligned
bus words that cover its bytes (any byte alignment), with byte strobes. Write commands run ahead of the data and
the responses are only counted, so rows stream back to back at one bus word per cycle.
"""

from __future__ import annotations

from amaranth import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .epilogue import epilogue_params_layout
from .gemm_engine import store_command_layout
from .instruction_layout import (INDEX_WIDTH, abort_register, instruction_layout, queue_entry_layout,
                                 token_signature)
from .isa import Opcode, param_entry_bytes
from .load_unit import (address_bits, check_bus, check_depth, rotate_bytes, word_offset_bits,
                        write_command_layout, write_data_layout, write_response_layout)
from .systolic_array import check_array_size

__all__ = ["StoreUnit", "param_entry_layout"]


def param_entry_layout(cols: int) -> data.StructLayout:
    """A PARAM buffer entry (``9*cols + 3`` bytes), little-endian as in DRAM (``docs/isa.md``).

    ``bias`` and ``multiplier`` are int32 per column, ``shift`` int8 per column, then ``zero_point``, ``act_min``
    and ``act_max`` (int8).
    """
    check_array_size(1, cols)
    return data.StructLayout({
        "bias": data.ArrayLayout(signed(32), cols),
        "multiplier": data.ArrayLayout(signed(32), cols),
        "shift": data.ArrayLayout(signed(8), cols),
        "zero_point": signed(8),
        "act_min": signed(8),
        "act_max": signed(8),
    })


class StoreUnit(wiring.Component):
    """Executes STORE and SYNC instructions: pops, accumulator rows -> epilogue -> DRAM, pushes.

    A STORE reads PARAM entry ``param_addr``, sends the engine ``st_cmd`` = {``acc_addr``, ``count``, the entry's
    epilogue parameters with the instruction's ``raw`` bit}, and writes each of the ``count`` rows coming back on
    ``out`` to ``dram_addr + r*stride`` (any byte alignment, addresses wrap at ``2**addr_width``): the low byte of
    each of the first ``n_cols`` lanes, or with ``raw`` the ``n_cols`` lanes as little-endian int32 (``4*n_cols``
    bytes). Each row is one write command of the aligned words that cover it; strobes select exactly its bytes.

    Parameters
    ----------
    rows, cols : int
        Systolic array size (rows only validated; a row of results has ``cols`` lanes).
    acc_depth : int
        Accumulator rows of the engine (a power of two), for ``st_cmd``'s layout.
    param_depth : int
        PARAM buffer entries, 1 to 65536.
    data_width, addr_width : int
        Bus word width (32, 64, 128 or 256) and byte-address width (12 to 64), as the AXI master's.

    Members
    -------
    instr : In(stream.Signature(queue_entry_layout()))
        Legal, range-checked STOREs and SYNCs naming the STORE unit, in program order, with their program index.
        An entry is accepted only when the unit is idle (one instruction at a time).
    pop_prev : Out(token_signature())
        Pops a COMPUTE->STORE token for ``pop_prev``: ``valid`` asks, the handshake takes it.
    push_prev : Out(1)
        One-cycle pulse pushing a STORE->COMPUTE token for ``push_prev``, the cycle after the STORE's last write
        response (every row is then in DRAM).
    abort : In(1), abort_index : In(32)
        From the cycle after ``abort`` rises (the decision is registered, :func:`abort_register`), an instruction
        whose index is above ``abort_index`` and that has not sent its ``st_cmd`` (for instance one waiting for
        its token) is dropped: consumed, no token popped or pushed, no engine command, no bus traffic. An
        instruction that has started runs to completion.
    fault : Out(1), fault_index : Out(32)
        One-cycle pulse, instead of the push, when a STORE completes that got ``error`` on any write response;
        ``fault_index`` is that instruction's index. All its rows are still written.
    busy : Out(1)
        Executing an instruction: from the cycle after its pops to its completion (push/fault cycle included).
    idle : Out(1)
        No instruction accepted and unfinished, no write command outstanding.
    param_rd_addr : Out(address_bits(param_depth)), param_rd_en : Out(1), param_rd_data : In(unsigned(8*(9*cols+3)))
        Synchronous read port of the PARAM buffer: ``param_rd_data`` holds the entry the cycle after ``en``
        (a ``lib.memory`` read port). The unit latches it, so the data need not be held afterwards.
    st_cmd : Out(stream.Signature(store_command_layout(acc_depth, cols)))
    out : In(stream.Signature(ArrayLayout(signed(32), cols)))
        To and from the GEMM engine (int8 results sign-extended, or raw int32).
    wr_cmd : Out(stream.Signature(write_command_layout(addr_width, data_width)))
    wr_data : Out(stream.Signature(write_data_layout(data_width)))
    wr_resp : In(stream.Signature(write_response_layout()))
        To the AXI master: one write command per row, its words in order, one response per command.

    Latency, throughput and flow control
    ------------------------------------
    ``st_cmd.valid`` rises :attr:`command_latency` cycles after the instruction handshake when no token must be
    waited for. Write commands for all rows are offered one per cycle from the cycle after the ``st_cmd``
    handshake, ahead of their data and whatever the responses (any number may be outstanding); a row's words may
    be offered on ``wr_data`` before its command is accepted (the master takes them once it is). ``out`` passes
    through a two-row skid buffer: ``out.ready`` comes from registers (no combinational path from
    ``wr_data.ready``), a row's first word is offered :attr:`row_latency` cycle after its handshake, and its words
    follow one per cycle while ``wr_data.ready`` allows, the next row's directly after. ``wr_resp.ready`` is high
    during a STORE. The push (or fault) pulse comes :attr:`completion_latency` cycle after the last response; the
    next instruction is accepted the cycle after that. A SYNC pops, pushes in the next cycle and is done. No
    ``valid`` depends on a ``ready``, and a raised ``valid`` holds with its payload until its handshake.
    """

    def __init__(self, *, rows, cols, acc_depth, param_depth, data_width=64, addr_width=32):
        check_array_size(rows, cols)
        st_layout = store_command_layout(acc_depth, cols)   # validates acc_depth
        check_depth("PARAM depth", param_depth)
        check_bus(data_width, addr_width)
        self._rows, self._cols, self._acc_depth, self._param_depth = rows, cols, acc_depth, param_depth
        self._data_width, self._addr_width = data_width, addr_width
        super().__init__({
            "instr": In(stream.Signature(queue_entry_layout())),
            "pop_prev": Out(token_signature()),
            "push_prev": Out(1),
            "abort": In(1),
            "abort_index": In(INDEX_WIDTH),
            "fault": Out(1),
            "fault_index": Out(INDEX_WIDTH),
            "busy": Out(1),
            "idle": Out(1),
            "param_rd_addr": Out(address_bits(param_depth)),
            "param_rd_en": Out(1),
            "param_rd_data": In(unsigned(8 * param_entry_bytes(cols))),
            "st_cmd": Out(stream.Signature(st_layout)),
            "out": In(stream.Signature(data.ArrayLayout(signed(32), cols))),
            "wr_cmd": Out(stream.Signature(write_command_layout(addr_width, data_width))),
            "wr_data": Out(stream.Signature(write_data_layout(data_width))),
            "wr_resp": In(stream.Signature(write_response_layout())),
        })

    rows = property(lambda self: self._rows)
    cols = property(lambda self: self._cols)
    acc_depth = property(lambda self: self._acc_depth)
    param_depth = property(lambda self: self._param_depth)
    data_width = property(lambda self: self._data_width)
    addr_width = property(lambda self: self._addr_width)

    @property
    def bytes_per_word(self) -> int:
        return self._data_width // 8

    @property
    def command_latency(self) -> int:
        """Cycles from the instruction handshake to ``st_cmd.valid`` (no token wait): pop, PARAM read, command."""
        return 3

    @property
    def row_latency(self) -> int:
        """Cycles from a row's ``out`` handshake to its first ``wr_data.valid`` (skid buffer empty)."""
        return 1

    @property
    def completion_latency(self) -> int:
        """Cycles from the last ``wr_resp`` handshake to the push (or fault) pulse."""
        return 1

    def elaborate(self, platform):
        m = Module()
        cols = self._cols
        nbytes = self.bytes_per_word
        obits = word_offset_bits(self._data_width)
        row_size = 4 * cols                                     # bytes of a raw row
        row_words = (row_size + nbytes - 1) // nbytes           # bus words a raw row fills when aligned
        max_beats = (nbytes - 1 + row_size + nbytes - 1) // nbytes

        entry = Signal(queue_entry_layout())
        ins = data.View(instruction_layout(Opcode.STORE), entry.word)  # token flags sit at the same bits in a SYNC
        is_sync = entry.word[:3] == Opcode.SYNC
        droppable = abort_register(m, self, entry)
        m.d.comb += self.fault_index.eq(entry.index)

        # ---- Epilogue parameters: the PARAM entry unpacked, with the instruction's raw bit.
        params = Signal(epilogue_params_layout(cols), reset_less=True)   # latched before every st_cmd
        stored = data.View(param_entry_layout(cols), self.param_rd_data)
        m.d.comb += [self.param_rd_addr.eq(ins.param_addr), self.st_cmd.payload.params.eq(params),
                     self.st_cmd.payload.acc_addr.eq(ins.acc_addr), self.st_cmd.payload.count.eq(ins.count)]
        latch_params = [params.bias.eq(stored.bias), params.multiplier.eq(stored.multiplier),
                        params.zero_point.eq(stored.zero_point), params.act_min.eq(stored.act_min),
                        params.act_max.eq(stored.act_max), params.raw.eq(ins.raw)]
        # The epilogue's shift is signed(6): the low 6 bits of the stored int8.
        latch_params += [params.shift[c].eq(stored.shift[c][:6]) for c in range(cols)]

        row_bytes = Signal(range(row_size + 1))     # bytes written per row: n_cols, or 4*n_cols with raw
        executing = Signal()

        # ---- Command stage: one aligned write command per row, ahead of the data.
        c_addr = Signal(self._addr_width)
        c_left = Signal(16)
        m.d.comb += [
            self.wr_cmd.valid.eq(executing & (c_left != 0)),
            self.wr_cmd.payload.addr.eq(Cat(Const(0, obits), c_addr[obits:])),
            self.wr_cmd.payload.beats.eq((c_addr[:obits] + row_bytes + (nbytes - 1)) >> obits),
        ]
        with m.If(self.wr_cmd.valid & self.wr_cmd.ready):
            m.d.sync += [c_addr.eq(c_addr + ins.stride), c_left.eq(c_left - 1)]

        # ---- Rows from the engine: a two-entry skid buffer, so out.ready is a register.
        in_left = Signal(16)            # rows still to come from the engine
        rows_due = Signal()             # in_left != 0, as a register: out.ready is one gate on registers
        cur_valid, nxt_valid = Signal(), Signal()
        cur_row = Signal(data.ArrayLayout(signed(32), cols), reset_less=True)   # held while cur_valid
        nxt_row = Signal(data.ArrayLayout(signed(32), cols), reset_less=True)   # held while nxt_valid
        m.d.comb += self.out.ready.eq(executing & ~nxt_valid & rows_due)
        incoming = self.out.valid & self.out.ready
        with m.If(incoming):
            m.d.sync += [in_left.eq(in_left - 1), rows_due.eq(in_left != 1)]

        # ---- Data stage: the words of the current row, shifted to its start offset.
        d_offset = Signal(obits)        # start offset of the current row
        k = Signal(range(max_beats))    # word of the current row on wr_data
        end = Signal(range(nbytes + row_size))
        last_word = Signal()
        # The current row's last word index, kept in a register (set with d_offset), so ``last_word`` and
        # everything that waits on it (the skid buffer's moves) is one compare on registers.
        last_k = Signal(range(max_beats))

        def last_word_of(offset, size):
            return ((offset + size + (nbytes - 1)) >> obits) - 1

        ins_row_bytes = Mux(ins.raw, ins.n_cols << 2, ins.n_cols)    # the instruction's row size in bytes

        m.d.comb += [end.eq(d_offset + row_bytes), last_word.eq(k == last_k)]
        int8_bytes = [cur_row[c][:8] for c in range(cols)]
        raw_bytes = [cur_row.as_value()[8 * i:8 * i + 8] for i in range(row_size)]
        row = Cat(*[Mux(ins.raw, raw_bytes[i], int8_bytes[i] if i < cols else 0) for i in range(row_size)])
        words = [row[8 * nbytes * w:8 * nbytes * (w + 1)] for w in range(row_words)]
        zero = Const(0, 8 * nbytes)
        # Word k of the shifted row is bytes B-offset.. of (row word k-1, row word k).
        cur_word = Array(words + [zero] * (max_beats - row_words))[k]
        prev_word = Array([zero] + words + [zero] * (max_beats - 1 - row_words))[k]
        pair = Signal(16 * nbytes)
        m.d.comb += pair.eq(Cat(prev_word, cur_word))
        # Byte j of the output word is byte B + j - offset of the pair: rotate the pair's upper half by -offset
        # where j >= offset and take the lower half's bytes otherwise.
        rotation = Signal(obits)
        m.d.comb += rotation.eq(-d_offset)
        upper = rotate_bytes(m, pair[8 * nbytes:], rotation, nbytes, "upper")
        lower = rotate_bytes(m, pair[:8 * nbytes], rotation, nbytes, "lower")
        out_bytes = [Mux(d_offset > j, lower[j], upper[j]) for j in range(nbytes)]
        strobes = []
        for j in range(nbytes):
            pos = Cat(Const(j, obits), k)           # byte position in the shifted row
            strobes.append((pos >= d_offset) & (pos < end))
        take = self.wr_data.valid & self.wr_data.ready
        m.d.comb += [
            self.wr_data.valid.eq(cur_valid),
            self.wr_data.payload.data.eq(Cat(*out_bytes)),
            self.wr_data.payload.strb.eq(Cat(*strobes)),
        ]
        finish_row = take & last_word
        with m.If(take):
            m.d.sync += k.eq(Mux(last_word, 0, k + 1))
        with m.If(finish_row):
            next_offset = (d_offset + ins.stride[:obits])[:obits]
            m.d.sync += [d_offset.eq(next_offset), last_k.eq(last_word_of(next_offset, row_bytes))]
        with m.If(~cur_valid | finish_row):
            with m.If(nxt_valid):
                m.d.sync += [cur_row.eq(nxt_row), cur_valid.eq(1), nxt_valid.eq(0)]
            with m.Else():
                m.d.sync += [cur_row.eq(self.out.payload), cur_valid.eq(incoming)]
        with m.Elif(incoming):
            m.d.sync += [nxt_row.eq(self.out.payload), nxt_valid.eq(1)]

        # ---- Responses: one per row.
        resp_left = Signal(16)
        error = Signal()
        m.d.comb += self.wr_resp.ready.eq(executing)
        last_resp = Signal()
        m.d.comb += last_resp.eq(self.wr_resp.valid & self.wr_resp.ready & (resp_left == 1))
        with m.If(self.wr_resp.valid & self.wr_resp.ready):
            m.d.sync += [resp_left.eq(resp_left - 1), error.eq(error | self.wr_resp.payload.error)]

        with m.FSM(name="control") as fsm:
            with m.State("IDLE"):
                m.d.comb += self.instr.ready.eq(1)
                with m.If(self.instr.valid):
                    m.d.sync += entry.eq(self.instr.payload)
                    m.next = "POP"
            with m.State("POP"):
                # Read the PARAM entry in every cycle here: the read of the last one is what PARAMS latches.
                m.d.comb += [self.param_rd_en.eq(1), self.pop_prev.valid.eq(ins.pop_prev & ~droppable)]
                with m.If(droppable):
                    m.next = "IDLE"
                with m.Elif(~ins.pop_prev | self.pop_prev.ready):
                    with m.If(is_sync):
                        m.next = "SYNC"
                    with m.Else():
                        m.next = "PARAMS"
            with m.State("SYNC"):
                m.d.comb += self.push_prev.eq(ins.push_prev & ~droppable)
                m.next = "IDLE"
            with m.State("PARAMS"):
                # Loaded unconditionally: everything that reads these registers waits for EXECUTE.
                m.d.sync += latch_params
                m.d.sync += [
                    row_bytes.eq(ins_row_bytes),
                    last_k.eq(last_word_of(ins.dram_addr[:obits], ins_row_bytes)),
                    c_addr.eq(ins.dram_addr), c_left.eq(ins.count), in_left.eq(ins.count),
                    rows_due.eq(ins.count != 0),
                    resp_left.eq(ins.count), d_offset.eq(ins.dram_addr[:obits]), k.eq(0), error.eq(0),
                ]
                m.next = "OFFER"
            with m.State("OFFER"):
                # The first cycle of the command, and the one abort check after the pop: the registered decision
                # is sticky within an instruction, so it covers an abort that rose up to PARAMS. Once offered,
                # st_cmd stays valid.
                with m.If(droppable):
                    m.next = "IDLE"
                with m.Else():
                    m.d.comb += self.st_cmd.valid.eq(1)
                    with m.If(self.st_cmd.ready):
                        m.next = "EXECUTE"
                    with m.Else():
                        m.next = "COMMAND"
            with m.State("COMMAND"):
                m.d.comb += self.st_cmd.valid.eq(1)
                with m.If(self.st_cmd.ready):
                    m.next = "EXECUTE"
            with m.State("EXECUTE"):
                m.d.comb += executing.eq(1)
                with m.If(last_resp):
                    m.next = "FINISH"
            with m.State("FINISH"):
                m.d.comb += [self.push_prev.eq(ins.push_prev & ~error), self.fault.eq(error)]
                m.next = "IDLE"

        m.d.comb += [
            self.busy.eq(~fsm.ongoing("IDLE") & ~fsm.ongoing("POP")),
            self.idle.eq(fsm.ongoing("IDLE")),
        ]
        return m
