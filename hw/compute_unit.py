"""The COMPUTE unit: executes MATMUL (and its SYNCs) by streaming buffer entries into the GEMM engine."""

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from .gemm_engine import matmul_command_layout
from .instruction_layout import (INDEX_WIDTH, abort_register, instruction_layout, queue_entry_layout,
                                 token_signature)
from .isa import Opcode

__all__ = ["ComputeUnit"]


def _aw(depth):
    return max((depth - 1).bit_length(), 1)


class ComputeUnit(wiring.Component):
    """Turns MATMUL instructions into engine commands plus weight and activation streams read from the buffers.

    The issue stage pops the instruction's tokens, sends the engine its command and queues a weight job and an
    activation job; two streamers then read the weight tile (``k_rows`` entries, zero rows after) and the
    ``count`` activation entries through synchronous read ports. Because issue runs ahead of the streamers, the
    next MATMUL's weights stream into the engine's idle bank while the current one's activations flow.

    Token pushes follow completion: ``push_prev`` (operands read, buffers free) when the activation streamer has
    sent the instruction's last vector; ``push_next`` (results in the accumulator) on the engine's ``mm_done``
    pulse for that command. A SYNC waits until every earlier MATMUL is complete, then pushes.

    Members
    -------
    instr : In(stream.Signature(queue_entry_layout()))
    pop_prev, pop_next : Out(token_signature())   (LOAD->COMPUTE, STORE->COMPUTE)
    push_prev, push_next : Out(1)                 (COMPUTE->LOAD, COMPUTE->STORE)
    act_rd_addr, act_rd_en, act_rd_data ; wgt_rd_addr, wgt_rd_en, wgt_rd_data
        Synchronous read ports of the ACT and WGT buffers (data the cycle after ``en``).
    mm_cmd, weights, act : Out(stream) ; mm_done, mm_idle : In(1)
        To the GEMM engine.
    abort : In(1), abort_index : In(32)
        Drop a waiting instruction whose index is above ``abort_index``; registered (:func:`abort_register`), so
        an abort takes effect the cycle after it rises.
    busy, idle : Out(1)
        A MATMUL is in flight (issued and not yet complete) / nothing is in progress.

    Throughput: one activation vector and one weight row per cycle while the engine accepts them.
    """

    def __init__(self, *, rows, cols, act_depth, wgt_depth, acc_depth, jobs=4):
        self._rows, self._cols = rows, cols
        self._act_depth, self._wgt_depth, self._acc_depth, self._jobs = act_depth, wgt_depth, acc_depth, jobs
        super().__init__({
            "instr": In(stream.Signature(queue_entry_layout())),
            "pop_prev": Out(token_signature()),
            "pop_next": Out(token_signature()),
            "push_prev": Out(1),
            "push_next": Out(1),
            "act_rd_addr": Out(_aw(act_depth)),
            "act_rd_en": Out(1),
            "act_rd_data": In(data.ArrayLayout(signed(8), rows)),
            "wgt_rd_addr": Out(_aw(wgt_depth)),
            "wgt_rd_en": Out(1),
            "wgt_rd_data": In(data.ArrayLayout(signed(8), cols)),
            "mm_cmd": Out(stream.Signature(matmul_command_layout(acc_depth))),
            "weights": Out(stream.Signature(data.ArrayLayout(signed(8), cols))),
            "act": Out(stream.Signature(data.ArrayLayout(signed(8), rows))),
            "mm_done": In(1),
            "mm_idle": In(1),
            "abort": In(1),
            "abort_index": In(INDEX_WIDTH),
            "busy": Out(1),
            "idle": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        rows = self._rows
        mm_view = instruction_layout(Opcode.MATMUL)
        wjob_layout = data.StructLayout({"addr": unsigned(16), "k_rows": unsigned(8)})
        ajob_layout = data.StructLayout({"addr": unsigned(16), "count": unsigned(16), "push_prev": 1})
        m.submodules.wjobs = wjobs = SyncFIFOBuffered(width=wjob_layout.size, depth=self._jobs)
        m.submodules.ajobs = ajobs = SyncFIFOBuffered(width=ajob_layout.size, depth=self._jobs)
        # One entry per engine command in flight: whether its completion pushes COMPUTE->STORE.
        m.submodules.dones = dones = SyncFIFOBuffered(width=1, depth=2 * self._jobs + rows + self._cols)

        # ---- Issue stage.
        entry = Signal(queue_entry_layout())
        ins = data.View(mm_view, entry.word)
        is_sync = entry.word[:3] == Opcode.SYNC
        drained = Signal()
        m.d.comb += drained.eq(~wjobs.r_rdy & ~ajobs.r_rdy & ~dones.r_rdy & self.mm_idle)
        droppable = abort_register(m, self, entry)
        with m.FSM(name="issue") as issue_fsm:
            with m.State("IDLE"):
                m.d.comb += self.instr.ready.eq(1)
                with m.If(self.instr.valid):
                    m.d.sync += entry.eq(self.instr.payload)
                    m.next = "POP_PREV"
            with m.State("POP_PREV"):
                m.d.comb += self.pop_prev.valid.eq(ins.pop_prev & ~droppable)
                with m.If(droppable):
                    m.next = "IDLE"
                with m.Elif(~ins.pop_prev | self.pop_prev.ready):
                    m.next = "POP_NEXT"
            with m.State("POP_NEXT"):
                m.d.comb += self.pop_next.valid.eq(ins.pop_next & ~droppable)
                with m.If(droppable):
                    m.next = "IDLE"
                with m.Elif(~ins.pop_next | self.pop_next.ready):
                    m.next = "EXECUTE"
            with m.State("EXECUTE"):
                with m.If(is_sync):
                    with m.If(drained):
                        m.d.comb += [self.push_prev.eq(ins.push_prev), self.push_next.eq(ins.push_next)]
                        m.next = "IDLE"
                with m.Elif(wjobs.w_rdy & ajobs.w_rdy & dones.w_rdy):
                    m.d.comb += [
                        self.mm_cmd.valid.eq(1),
                        self.mm_cmd.payload.acc_addr.eq(ins.acc_addr),
                        self.mm_cmd.payload.count.eq(ins.count),
                        self.mm_cmd.payload.accumulate.eq(ins.accumulate),
                    ]
                    with m.If(self.mm_cmd.ready):
                        wjob = Signal(wjob_layout)
                        ajob = Signal(ajob_layout)
                        m.d.comb += [
                            wjob.addr.eq(ins.wgt_addr), wjob.k_rows.eq(ins.k_rows),
                            ajob.addr.eq(ins.act_addr), ajob.count.eq(ins.count), ajob.push_prev.eq(ins.push_prev),
                            wjobs.w_data.eq(wjob), wjobs.w_en.eq(1),
                            ajobs.w_data.eq(ajob), ajobs.w_en.eq(1),
                            dones.w_data.eq(ins.push_next), dones.w_en.eq(1),
                        ]
                        m.next = "IDLE"

        # ---- Weight streamer: rows entries of the tile (zeros from k_rows on), read one cycle ahead.
        wjob = data.View(wjob_layout, wjobs.r_data)
        w_row = Signal(range(rows + 1))
        w_valid = Signal()
        w_zero = Signal()
        w_advance = Signal()
        m.d.comb += [w_advance.eq(~w_valid | self.weights.ready), self.wgt_rd_en.eq(w_advance),
                     self.wgt_rd_addr.eq(wjob.addr + w_row)]
        with m.If(w_advance):
            m.d.sync += w_valid.eq(wjobs.r_rdy)
            with m.If(wjobs.r_rdy):
                m.d.sync += [w_zero.eq(w_row >= wjob.k_rows), w_row.eq(w_row + 1)]
                with m.If(w_row == rows - 1):
                    m.d.comb += wjobs.r_en.eq(1)
                    m.d.sync += w_row.eq(0)
        m.d.comb += [self.weights.valid.eq(w_valid),
                     self.weights.payload.eq(Mux(w_zero, 0, self.wgt_rd_data.as_value()))]

        # ---- Activation streamer.
        ajob = data.View(ajob_layout, ajobs.r_data)
        a_index = Signal(16)
        a_valid = Signal()
        a_last = Signal()
        a_push = Signal()
        a_advance = Signal()
        m.d.comb += [a_advance.eq(~a_valid | self.act.ready), self.act_rd_en.eq(a_advance),
                     self.act_rd_addr.eq(ajob.addr + a_index)]
        with m.If(a_advance):
            m.d.sync += a_valid.eq(ajobs.r_rdy)
            with m.If(ajobs.r_rdy):
                m.d.sync += [a_index.eq(a_index + 1), a_last.eq(a_index == ajob.count - 1),
                             a_push.eq(ajob.push_prev)]
                with m.If(a_index == ajob.count - 1):
                    m.d.comb += ajobs.r_en.eq(1)
                    m.d.sync += a_index.eq(0)
        m.d.comb += [self.act.valid.eq(a_valid), self.act.payload.eq(self.act_rd_data)]
        with m.If(self.act.valid & self.act.ready & a_last & a_push):
            m.d.comb += self.push_prev.eq(1)

        # ---- Completion: one engine mm_done pulse per command, in order.
        with m.If(self.mm_done):
            m.d.comb += [dones.r_en.eq(1), self.push_next.eq(dones.r_data[0])]

        in_flight = wjobs.r_rdy | ajobs.r_rdy | dones.r_rdy | w_valid | a_valid | ~self.mm_idle
        m.d.comb += [
            self.busy.eq(in_flight | issue_fsm.ongoing("EXECUTE")),
            self.idle.eq(~in_flight & issue_fsm.ongoing("IDLE")),
        ]
        return m
