"""The accelerator top: AXI4-Lite control, AXI4 memory master, instruction fetch and dispatch, LOAD/COMPUTE/STORE
units, on-chip buffers and the GEMM engine."""

from amaranth import Module, ResetInserter, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .axi import AXI4LiteSignature, AXI4Signature
from .axi4_lite import AXI4LiteRegisters
from .axi4_master import AXI4Master
from .compute_unit import ComputeUnit
from .dispatcher import Dispatcher
from .gemm_engine import GemmEngine
from .instruction_fetch import InstructionFetch
from .isa import Buffer, HardwareConfig
from .load_unit import LoadUnit
from .read_arbiter import ReadArbiter
from .regmap import REGISTERS, STATUS_BUSY, STATUS_DONE, VERSION
from .store_unit import StoreUnit
from .token_queue import TokenQueue

__all__ = ["Accelerator"]


def _check_depth(name, value, limit=1 << 16):
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= limit:
        raise ValueError(f"{name} must be an integer from 1 to {limit}, not {value!r}")


class Accelerator(wiring.Component):
    """An int8 systolic-array accelerator an SoC drives over AXI4-Lite and that reads/writes DRAM over AXI4.

    The host writes a program (``docs/isa.md``) to DRAM, sets PROG_ADDR/PROG_LEN and writes CTRL = 1; ``irq`` rises
    when the program halts or faults. See :mod:`hw.regmap` for the registers.

    Parameters
    ----------
    rows, cols : int
        Systolic array size.
    act_depth, wgt_depth, param_depth : int
        Entries of the ACT, WGT and PARAM buffers.
    acc_depth : int
        Accumulator rows (a power of two).
    data_width, addr_width : int
        AXI4 master data width (32, 64 or 128) and address width.
    dsp_pes : int
        PEs whose multiplier is a DSP block (see :class:`~hw.systolic_array.SystolicArray`); a synthesis choice with
        no effect on timing or results (default 0).
    pe_multiplier : str
        The other PEs' multiplier, ``"fabric"`` (default) or ``"carry"`` (ECP5 carry cells, see
        :class:`~hw.systolic_array.SystolicArray`); a synthesis choice with no effect on timing or results.

    Members
    -------
    csr : In(AXI4LiteSignature(addr_width=12))
        Control/status registers (slave).
    bus : Out(AXI4Signature(addr_width, data_width))
        Memory master: instruction fetch, LOADs and STOREs.
    irq : Out(1)
        ``DONE & IRQ_ENABLE[0]``.
    """

    def __init__(self, *, rows=8, cols=8, act_depth=2048, wgt_depth=2048, acc_depth=512, param_depth=64,
                 data_width=64, addr_width=32, dsp_pes=0,
                 pe_multiplier="fabric"):
        for name, value in (("ACT depth", act_depth), ("WGT depth", wgt_depth), ("PARAM depth", param_depth)):
            _check_depth(name, value)
        if data_width not in (32, 64, 128):
            raise ValueError(f"Accelerator bus width must be 32, 64 or 128 bits, not {data_width!r}")
        self._engine = GemmEngine(rows=rows, cols=cols, acc_depth=acc_depth,  # validates rows/cols/acc_depth
                                  dsp_pes=dsp_pes, pe_multiplier=pe_multiplier)
        self._config = HardwareConfig(rows=rows, cols=cols, act_depth=act_depth, wgt_depth=wgt_depth,
                                      acc_depth=acc_depth, param_depth=param_depth, bus_bytes=data_width // 8)
        self._data_width, self._addr_width = data_width, addr_width
        super().__init__({
            "csr": In(AXI4LiteSignature(addr_width=12, data_width=32)),
            "bus": Out(AXI4Signature(addr_width=addr_width, data_width=data_width, id_width=1)),
            "irq": Out(1),
        })

    @property
    def config(self) -> HardwareConfig:
        """What the configuration registers report (and what programs may address)."""
        return self._config

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        rows, cols = cfg.rows, cfg.cols

        # ---- Control and status registers.
        regs = AXI4LiteRegisters(registers=[(r.name, r.offset, r.access) for r in REGISTERS])
        m.submodules.csr = regs
        wiring.connect(m, wiring.flipped(self.csr), regs.bus)
        constants = {"version": VERSION, "rows": rows, "cols": cols, "act_depth": cfg.act_depth,
                     "wgt_depth": cfg.wgt_depth, "acc_depth": cfg.acc_depth, "param_depth": cfg.param_depth,
                     "bus_bytes": cfg.bus_bytes}
        for name, value in constants.items():
            m.d.comb += getattr(regs, name).eq(value)

        busy = Signal()
        done = Signal()
        error = Signal(8)
        error_index = Signal(32)
        start = Signal()
        m.d.comb += start.eq(regs.ctrl_we & regs.ctrl[0] & ~busy)

        # Everything below restarts from its reset state on START (only accepted while idle, so no bus
        # transaction is in flight); the buffers' contents are simply overwritten by the next program.
        def core(elaboratable):
            return ResetInserter({"sync": start})(elaboratable)

        m.submodules.master = core(master := AXI4Master(addr_width=self._addr_width, data_width=self._data_width))
        wiring.connect(m, master.bus, wiring.flipped(self.bus))
        m.submodules.arbiter = core(arbiter := ReadArbiter(cmd_shape=master.rd_cmd.payload.shape(),
                                                           data_shape=master.rd_data.payload.shape(),
                                                           outstanding=master.outstanding))
        wiring.connect(m, arbiter.rd_cmd, master.rd_cmd)
        wiring.connect(m, master.rd_data, arbiter.rd_data)

        m.submodules.fetch = core(fetch := InstructionFetch(data_width=self._data_width,
                                                            addr_width=self._addr_width))
        m.submodules.dispatcher = core(dispatcher := Dispatcher(config=cfg))
        m.submodules.load_unit = core(load := LoadUnit(
            rows=rows, cols=cols, act_depth=cfg.act_depth, wgt_depth=cfg.wgt_depth, param_depth=cfg.param_depth,
            data_width=self._data_width, addr_width=self._addr_width))
        m.submodules.compute_unit = core(compute := ComputeUnit(
            rows=rows, cols=cols, act_depth=cfg.act_depth, wgt_depth=cfg.wgt_depth, acc_depth=cfg.acc_depth))
        m.submodules.store_unit = core(store := StoreUnit(
            rows=rows, cols=cols, acc_depth=cfg.acc_depth, param_depth=cfg.param_depth,
            data_width=self._data_width, addr_width=self._addr_width))
        m.submodules.engine = core(engine := self._engine)

        # The core is held in reset during START; fetching begins the cycle after.
        start_fetch = Signal()
        m.d.sync += start_fetch.eq(start)
        m.d.comb += [fetch.start.eq(start_fetch), fetch.prog_addr.eq(regs.prog_addr),
                     fetch.prog_len.eq(regs.prog_len),
                     fetch.stop.eq(dispatcher.stopped)]
        wiring.connect(m, fetch.rd_cmd, arbiter.rd_cmd_0)
        wiring.connect(m, arbiter.rd_data_0, fetch.rd_data)
        wiring.connect(m, load.rd_cmd, arbiter.rd_cmd_1)
        wiring.connect(m, arbiter.rd_data_1, load.rd_data)
        wiring.connect(m, store.wr_cmd, master.wr_cmd)
        wiring.connect(m, store.wr_data, master.wr_data)
        wiring.connect(m, master.wr_resp, store.wr_resp)

        wiring.connect(m, fetch.instr, dispatcher.instr)
        wiring.connect(m, dispatcher.load, load.instr)
        wiring.connect(m, dispatcher.compute, compute.instr)
        wiring.connect(m, dispatcher.store, store.instr)

        # ---- Token queues (push by one unit, pop by the other).
        queues = {}
        for name in ("l2c", "c2l", "c2s", "s2c"):
            queues[name] = q = TokenQueue()
            m.submodules[f"tokens_{name}"] = core(q)
        m.d.comb += [queues["l2c"].push.eq(load.push_next), queues["c2l"].push.eq(compute.push_prev),
                     queues["c2s"].push.eq(compute.push_next), queues["s2c"].push.eq(store.push_prev)]
        wiring.connect(m, compute.pop_prev, queues["l2c"].pop)
        wiring.connect(m, load.pop_next, queues["c2l"].pop)
        wiring.connect(m, store.pop_prev, queues["c2s"].pop)
        wiring.connect(m, compute.pop_next, queues["s2c"].pop)

        # ---- Buffers. A unit reads an entry only after popping the token that the LOAD which wrote it pushed in
        # the cycle of its last write, so a read whose data is used never meets a write to the same entry in the
        # same cycle: the memories are marked no_rw_check, and Yosys does not add the address compare and
        # bypass multiplexer that would otherwise emulate read-before-write between the block RAM's two ports on
        # the read data's path (measured on a probe: 145.5 vs 136.4 MHz on ECP5, hw/fpga/ceilings.py).
        no_rw_check = {"no_rw_check": 1}
        m.submodules.act_mem = act_mem = Memory(shape=data.ArrayLayout(signed(8), rows), depth=cfg.act_depth,
                                                init=[], attrs=no_rw_check)
        m.submodules.wgt_mem = wgt_mem = Memory(shape=data.ArrayLayout(signed(8), cols), depth=cfg.wgt_depth,
                                                init=[], attrs=no_rw_check)
        m.submodules.param_mem = param_mem = Memory(shape=unsigned(8 * cfg.row_bytes(Buffer.PARAM)),
                                                    depth=cfg.param_depth, init=[], attrs=no_rw_check)
        for mem, unit_prefix in ((act_mem, "act"), (wgt_mem, "wgt"), (param_mem, "param")):
            wp = mem.write_port()
            m.d.comb += [wp.addr.eq(getattr(load, f"{unit_prefix}_wr_addr")),
                         wp.data.eq(getattr(load, f"{unit_prefix}_wr_data")),
                         wp.en.eq(getattr(load, f"{unit_prefix}_wr_en"))]
        for mem, unit, prefix in ((act_mem, compute, "act"), (wgt_mem, compute, "wgt"), (param_mem, store, "param")):
            rp = mem.read_port()
            m.d.comb += [rp.addr.eq(getattr(unit, f"{prefix}_rd_addr")), rp.en.eq(getattr(unit, f"{prefix}_rd_en")),
                         getattr(unit, f"{prefix}_rd_data").eq(rp.data)]

        # ---- The engine between the COMPUTE and STORE units.
        wiring.connect(m, compute.mm_cmd, engine.mm_cmd)
        wiring.connect(m, compute.weights, engine.weights)
        wiring.connect(m, compute.act, engine.act)
        m.d.comb += [compute.mm_done.eq(engine.mm_done), compute.mm_idle.eq(engine.mm_idle)]
        wiring.connect(m, store.st_cmd, engine.st_cmd)
        wiring.connect(m, engine.out, store.out)

        # ---- Errors: keep the fault with the smallest instruction index; it stops dispatch and aborts later work.
        def report(code, index):
            with m.If((error == 0) | (index < error_index)):
                m.d.sync += [error.eq(code), error_index.eq(index)]

        from .isa import ErrorCode
        with m.If(dispatcher.error != 0):
            report(dispatcher.error, dispatcher.error_index)
        with m.If(load.fault):
            report(ErrorCode.BUS_ERROR_LOAD, load.fault_index)
        with m.If(store.fault):
            report(ErrorCode.BUS_ERROR_STORE, store.fault_index)
        for unit in (load, compute, store):
            m.d.comb += [unit.abort.eq(error != 0), unit.abort_index.eq(error_index)]
        m.d.comb += dispatcher.stop.eq(error != 0)

        # ---- Completion.
        finished = Signal()
        m.d.comb += finished.eq(dispatcher.stopped & fetch.idle & ~dispatcher.load.valid &
                                ~dispatcher.compute.valid & ~dispatcher.store.valid & load.idle & compute.idle &
                                store.idle & ~master.busy & engine.mm_idle & engine.st_idle)
        counters = {name: Signal(32, name=f"count_{name}") for name in
                    ("cycles", "load_busy", "compute_busy", "store_busy", "vectors", "instructions")}
        with m.If(start):
            m.d.sync += [busy.eq(1), done.eq(0), error.eq(0), error_index.eq(0)]
            m.d.sync += [c.eq(0) for c in counters.values()]
        with m.Elif(busy):
            with m.If(finished & ~start_fetch):
                m.d.sync += [busy.eq(0), done.eq(1)]
            m.d.sync += [
                counters["cycles"].eq(counters["cycles"] + 1),
                counters["load_busy"].eq(counters["load_busy"] + load.busy),
                counters["compute_busy"].eq(counters["compute_busy"] + compute.busy),
                counters["store_busy"].eq(counters["store_busy"] + store.busy),
                counters["vectors"].eq(counters["vectors"] + (engine.act.valid & engine.act.ready)),
                counters["instructions"].eq(counters["instructions"] + dispatcher.dispatched),
            ]
        for name, counter in counters.items():
            m.d.comb += getattr(regs, name).eq(counter)
        m.d.comb += [
            regs.status.eq(busy * STATUS_BUSY | done * STATUS_DONE | (error << 8)),
            regs.error_index.eq(error_index),
            self.irq.eq(done & regs.irq_enable[0]),
        ]
        return m
