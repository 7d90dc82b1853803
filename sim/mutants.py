"""The mutation catalogue: realistic single-point faults in hw/, one precise source edit each.

Each :class:`Mutant` names a file under ``hw/``, an exact text that must occur in it exactly once, and its
replacement; :func:`apply` refuses (:class:`MutantError`) when the text is gone or ambiguous, so the catalogue
fails loudly as the hardware changes instead of silently testing nothing. :mod:`sim.mutation` runs them.

The faults are the ones hardware reviews find: flipped and off-by-one comparisons, counters that miss a step,
dropped rounding terms, swapped banks and mux inputs, a ready or valid dropped from a handshake, wrong byte lanes
and strobes, burst lengths and the 4 KiB rule, token counts, error priorities, the accumulator's forwarding and
the skid buffers' conditions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["Mutant", "MutantError", "CATALOGUE", "BY_NAME", "apply", "select"]


class MutantError(RuntimeError):
    """A catalogue entry no longer matches its source file (edit the catalogue with the hardware)."""


@dataclass(frozen=True)
class Mutant:
    name: str
    block: str      # the hw/ module stem whose own tests run first
    old: str
    new: str
    what: str
    file: str = ""  # default: hw/<block>.py
    #: Why the mutant cannot change any output (argued, one line); a survivor with a reason is "equivalent".
    equivalent: str = ""

    @property
    def path(self) -> str:
        return self.file or f"hw/{self.block}.py"


def _m(name, block, old, new, what, file="", equivalent=""):
    return Mutant(name, block, old, new, what, file, equivalent)


CATALOGUE: tuple[Mutant, ...] = (
    # ---- PE and array
    _m("pe-bank-swap", "pe", "weight.eq(Mux(self.a_in.bank, weights[1], weights[0]))",
       "weight.eq(Mux(self.a_in.bank, weights[0], weights[1]))", "swapped weight banks in the PE"),
    _m("pe-psum-drop-in", "pe", "psum.eq((self.psum_in + product)[:self._acc_width])",
       "psum.eq((product)[:self._acc_width])", "PE drops the partial sum from above"),
    _m("pe-write-bank", "pe", "m.d.sync += weights[1].eq(self.w_data)", "m.d.sync += weights[0].eq(self.w_data)",
       "weight write to bank 1 lands in bank 0"),
    _m("array-row-select", "systolic_array", "pe.w_we.eq(self.w_we & (self.w_row == r))",
       "pe.w_we.eq(self.w_we & (self.w_row == (r ^ 1)))", "weight row decode swaps row pairs"),
    _m("array-psum-chain", "systolic_array", "pe.psum_in.eq(0 if r == 0 else pes[r - 1][c].psum_out)",
       "pe.psum_in.eq(0 if r <= 1 else pes[r - 1][c].psum_out)", "row 1 does not receive row 0's partial sum"),
    # ---- Epilogue (SRDHM, RDBPOT, clamp)
    _m("epi-srdhm-no-round", "epilogue", "srdhm = ((product >> 30) + 1) >> 1", "srdhm = (product >> 30) >> 1",
       "SRDHM loses its rounding nudge"),
    _m("epi-no-saturate", "epilogue", "Mux(saturate[\"product\"], _INT32_MAX, srdhm)",
       "Mux(0, _INT32_MAX, srdhm)", "SRDHM never saturates (INT32_MIN * INT32_MIN)"),
    _m("epi-rdbpot-no-round", "epilogue", "y + Mux(y[-1], below_half, half)", "y + 0 * Mux(y[-1], below_half, half)",
       "RDBPOT drops its rounding addend"),
    _m("epi-rdbpot-sign", "epilogue", "y + Mux(y[-1], below_half, half)", "y + Mux(y[-1], half, below_half)",
       "RDBPOT rounds halves the wrong way for the sign"),
    _m("epi-bias-drop", "epilogue", "acc + params.bias[c], signed(32)", "acc + 0 * params.bias[c], signed(32)",
       "the bias is not added"),
    _m("epi-clamp-above", "epilogue", "narrow > above_from[\"right_shift\"]", "narrow >= above_from[\"right_shift\"]",
       "clamp to act_max one step too early",
       equivalent="at narrow == act_max - zero_point the unclamped output is act_max itself: same byte"),
    _m("epi-clamp-below", "epilogue", "narrow < below_from[\"right_shift\"]", "narrow <= below_from[\"right_shift\"]",
       "clamp to act_min one step too early",
       equivalent="at narrow == act_min - zero_point the unclamped output is act_min itself: same byte"),
    _m("epi-clamp-inverted", "epilogue", "above = Mux(fits, narrow_above, ~negative) | inverted[\"clamp_compare\"]",
       "above = Mux(fits, narrow_above, ~negative)", "inverted bounds (act_min > act_max) no longer give act_max"),
    _m("epi-clamp-fits", "epilogue", "below = Mux(fits, narrow_below, negative)", "below = narrow_below",
       "a quotient beyond 10 bits is compared on its low bits (wrong clamp for large values)"),
    _m("epi-zero-point", "epilogue", "quotient[:8] + zero_point[\"right_shift\"]", "quotient[:8]",
       "the output zero point is not added"),
    _m("epi-left-shift", "epilogue", "Mux(shift[-1] | params.raw, 0, shift[:5])", "Mux(shift[-1] | params.raw, 0, shift[:4])",
       "the left shift loses its top bit (shift 16..31)"),
    _m("epi-ready", "epilogue", "m.d.comb += advance[k].eq(self.o.ready | has_room[k])",
       "m.d.comb += advance[k].eq(has_room[k])", "the pipeline ignores o.ready (stalls when full only)"),
    # ---- GEMM engine (weight loader, bank reuse, accumulator RMW, STORE read side)
    _m("eng-forward-ignores-accumulate", "gemm_engine", "use_forward.eq(s1.accumulate & (hit_next | hit_prev))",
       "use_forward.eq(hit_next | hit_prev)", "an overwrite forwards a row written one or two cycles before"),
    _m("eng-forward-priority", "gemm_engine", "forward.eq(Mux(hit_next, write_data, last_write))",
       "forward.eq(Mux(hit_prev, last_write, write_data))", "the older of two forwarded writes wins",
       equivalent="both hits need three vectors on one row in consecutive cycles, i.e. a one-vector tile with no gap "
       "either side; tiles shorter than min_overlapped_count (>= 3) always leave gaps, so the Mux orders agree"),
    _m("eng-forward-no-prev", "gemm_engine", "hit_prev.eq(s2.valid & (s2.addr == sideband.addr))",
       "hit_prev.eq(0)", "no forwarding from the write two cycles back"),
    _m("eng-forward-no-next", "gemm_engine", "hit_next.eq(s1.valid & (s1.addr == sideband.addr))",
       "hit_next.eq(s1.valid & (s1.addr == sideband.addr) & 0)", "no forwarding from the write one cycle back"),
    _m("eng-bank-hold", "gemm_engine", "m.d.sync += bank_hold[b].eq(max(cols - 2, 0))",
       "m.d.sync += bank_hold[b].eq(max(cols - 4, 0))", "a weight bank is reused two cycles too early"),
    _m("eng-load-rows", "gemm_engine", "with m.If(ld_row == rows - 1):", "with m.If(ld_row == rows - 2):",
       "the weight loader stops one row early"),
    _m("eng-skid-overwrite", "gemm_engine", "with m.Elif(rd_valid & ~side_valid):", "with m.Elif(rd_valid):",
       "the STORE skid buffer overwrites a held row"),
    _m("eng-store-count", "gemm_engine", "st_zero.eq(cmd.count == 1)", "st_zero.eq(cmd.count == 2)",
       "a STORE of one row reads on past its end"),
    _m("eng-idle-early", "gemm_engine", "self.st_idle.eq(~held & st_zero & (st_in_flight == 0))",
       "self.st_idle.eq(~held & st_zero)", "STORE side reports idle with rows in flight"),
    # ---- Token queue and dispatcher
    _m("tok-ready", "token_queue", "self.pop.ready.eq(self.count != 0)", "self.pop.ready.eq(self.count != 1)",
       "a token queue pops from empty and refuses its last token"),
    _m("tok-simultaneous", "token_queue", "with m.If(self.push & ~taken):", "with m.If(self.push):",
       "push and pop in one cycle counts up"),
    _m("disp-deadlock", "dispatcher", "pops[q] & (balance[q] == 0)", "pops[q] & (balance[q] == 1)",
       "token deadlock detected one token late"),
    _m("disp-overflow", "dispatcher", "pushes[q] & (balance[q] >= TOKEN_MAX)", "pushes[q] & (balance[q] > TOKEN_MAX)",
       "token overflow detected one token late"),
    _m("disp-balance", "dispatcher", "balance[q].eq(balance[q] - pops[q] + pushes[q])",
       "balance[q].eq(balance[q] + pushes[q])", "pops do not lower the token balance"),
    _m("disp-priority", "dispatcher", "with m.Elif(deadlock):\n            m.d.comb += fault.eq(ErrorCode.TOKEN_DEADLOCK)\n"
       "        with m.Elif(overflow):\n            m.d.comb += fault.eq(ErrorCode.TOKEN_OVERFLOW)",
       "with m.Elif(overflow):\n            m.d.comb += fault.eq(ErrorCode.TOKEN_OVERFLOW)\n"
       "        with m.Elif(deadlock):\n            m.d.comb += fault.eq(ErrorCode.TOKEN_DEADLOCK)",
       "overflow reported before deadlock"),
    _m("disp-static-priority", "dispatcher", "with m.Elif(illegal):\n            m.d.comb += static_fault.eq(ErrorCode.ILLEGAL_INSTRUCTION)\n"
       "        with m.Elif(out_of_range):\n            m.d.comb += static_fault.eq(ErrorCode.OUT_OF_RANGE)",
       "with m.Elif(out_of_range):\n            m.d.comb += static_fault.eq(ErrorCode.OUT_OF_RANGE)\n"
       "        with m.Elif(illegal):\n            m.d.comb += static_fault.eq(ErrorCode.ILLEGAL_INSTRUCTION)",
       "out-of-range reported before illegal"),
    _m("disp-reserved", "dispatcher", "m.d.comb += illegal.eq(~known | reserved | bad_field | bad_flags)",
       "m.d.comb += illegal.eq(~known | bad_field | bad_flags)", "reserved bits are not checked"),
    _m("disp-halt-flags", "dispatcher", "m.d.comb += bad_flags.eq(word[3:7] != 0)", "m.d.comb += bad_flags.eq(word[3:6] != 0)",
       "a HALT's last token flag is not checked"),
    _m("disp-kx-range", "dispatcher", "(mm.k_rows > cfg.rows)", "(mm.k_rows > cfg.rows + 1)",
       "MATMUL k_rows off by one at the top"),
    _m("disp-ncols-range", "dispatcher", "(st.n_cols > cfg.cols)", "(st.n_cols > cfg.cols + 1)",
       "STORE n_cols off by one at the top"),
    _m("disp-xsize-range", "dispatcher", "(ld.x_size > row_bytes)", "(ld.x_size > row_bytes + 1)",
       "LOAD x_size off by one at the top"),
    # ---- Instruction fetch
    _m("fetch-burst", "instruction_fetch", "return Mux(count < self._burst, count, self._burst)",
       "return Mux(count <= self._burst, count, self._burst - 1)", "fetch bursts one instruction short"),
    _m("fetch-align", "instruction_fetch", "next_addr.eq(self.prog_addr & ~(INSTRUCTION_BYTES - 1))",
       "next_addr.eq(self.prog_addr)", "PROG_ADDR's low bits are not ignored"),
    _m("fetch-index", "instruction_fetch", "fetch_index.eq(fetch_index + 1)]", "fetch_index.eq(fetch_index + 2)]",
       "instruction index counts by two (wrong faulting index)"),
    _m("fetch-error-sticky", "instruction_fetch", "entry.bus_error.eq(error | self.rd_data.payload.error)",
       "entry.bus_error.eq(self.rd_data.payload.error)", "a bus error on an early beat of an instruction is lost"),
    _m("fetch-space", "instruction_fetch", "m.d.comb += space.eq(self._depth - fifo.level - requested)",
       "m.d.comb += space.eq(self._depth - fifo.level)", "fetch ignores words already requested (FIFO overrun)"),
    # ---- LOAD unit
    _m("load-keep", "load_unit", "keep = Cat(*[(ins.x_size > q).replicate(8)", "keep = Cat(*[(ins.x_size >= q).replicate(8)",
       "a LOAD keeps one byte past x_size"),
    _m("load-stride", "load_unit", "c_addr.eq(c_addr + ins.stride), c_left.eq(c_left - 1)",
       "c_addr.eq(c_addr + ins.stride + 1), c_left.eq(c_left - 1)", "LOAD rows one byte apart too far"),
    _m("load-lanes", "load_unit", "m.d.comb += [wraps[j].eq(d_offset + j >= nbytes) for j in range(nbytes)]",
       "m.d.comb += [wraps[j].eq(d_offset + j > nbytes) for j in range(nbytes)]", "wrong byte lane on a row crossing words"),
    _m("load-error-sticky", "load_unit", "error.eq(error | self.rd_data.payload.error)]",
       "error.eq(self.rd_data.payload.error)]", "a LOAD's bus error on an early beat is forgotten"),
    _m("load-buffer-select", "load_unit", "getattr(self, f\"{prefix}_wr_en\").eq(wr_en & (wr_buffer == buffer))",
       "getattr(self, f\"{prefix}_wr_en\").eq(wr_en & (wr_buffer[0] == buffer % 2))", "PARAM and ACT writes alias"),
    _m("load-push-on-error", "load_unit", "m.d.comb += [self.push_next.eq(ins.push_next & ~error), self.fault.eq(error)]",
       "m.d.comb += [self.push_next.eq(ins.push_next), self.fault.eq(error)]", "a faulting LOAD still pushes its token"),
    # ---- COMPUTE unit
    _m("comp-kzero", "compute_unit", "w_zero.eq(w_row >= wjob.k_rows)", "w_zero.eq(w_row > wjob.k_rows)",
       "one weight row beyond k_rows is not zeroed"),
    _m("comp-last", "compute_unit", "a_last.eq(a_index == ajob.count - 1)", "a_last.eq(a_index == ajob.count - 2)",
       "COMPUTE push_prev one vector early"),
    _m("comp-sync-drain", "compute_unit", "with m.If(drained):", "with m.If(1):",
       "a COMPUTE SYNC does not wait for the MATMULs in flight"),
    _m("comp-accumulate", "compute_unit", "self.mm_cmd.payload.accumulate.eq(ins.accumulate)",
       "self.mm_cmd.payload.accumulate.eq(1)", "every MATMUL accumulates"),
    # ---- STORE unit
    _m("store-strobe-end", "store_unit", "strobes.append((pos >= d_offset) & (pos < end))",
       "strobes.append((pos >= d_offset) & (pos <= end))", "a STORE strobes one byte past the row"),
    _m("store-strobe-start", "store_unit", "strobes.append((pos >= d_offset) & (pos < end))",
       "strobes.append((pos > d_offset) & (pos < end))", "a STORE drops the row's first byte"),
    _m("store-lanes", "store_unit", "out_bytes = [Mux(d_offset > j, lower[j], upper[j]) for j in range(nbytes)]",
       "out_bytes = [Mux(d_offset >= j, lower[j], upper[j]) for j in range(nbytes)]", "wrong byte lane on a misaligned row"),
    _m("store-raw-width", "store_unit", "ins_row_bytes = Mux(ins.raw, ins.n_cols << 2, ins.n_cols)",
       "ins_row_bytes = Mux(ins.raw, ins.n_cols << 1, ins.n_cols)", "a raw row is half its width"),
    _m("store-skid", "store_unit", "with m.Elif(incoming):\n            m.d.sync += [nxt_row.eq(self.out.payload), nxt_valid.eq(1)]",
       "with m.Elif(incoming & 0):\n            m.d.sync += [nxt_row.eq(self.out.payload), nxt_valid.eq(1)]",
       "the STORE unit's skid buffer drops a row"),
    _m("store-stride", "store_unit", "m.d.sync += [c_addr.eq(c_addr + ins.stride), c_left.eq(c_left - 1)]",
       "m.d.sync += [c_addr.eq(c_addr + ins.stride + 4), c_left.eq(c_left - 1)]", "STORE rows four bytes too far apart"),
    _m("store-push-on-error", "store_unit", "m.d.comb += [self.push_prev.eq(ins.push_prev & ~error), self.fault.eq(error)]",
       "m.d.comb += [self.push_prev.eq(ins.push_prev), self.fault.eq(error)]", "a faulting STORE still pushes its token"),
    _m("store-resp-error", "store_unit", "error.eq(error | self.wr_resp.payload.error)]", "error.eq(error)]",
       "STORE ignores write-response errors"),
    # ---- AXI4 master and read arbiter
    _m("axi-4k-rule", "axi4_master", "_PAGE_BYTES = 4096", "_PAGE_BYTES = 8192", "bursts may cross a 4 KiB boundary"),
    _m("axi-burst-len", "axi4_master", "channel.len.eq(burst - 1)", "channel.len.eq(burst)", "AxLEN one beat too long"),
    _m("axi-wlast", "axi4_master", "w_in.last.eq(w_one | (w_beat == self._max_burst - 1) | (w_word[:page_bits] == page_last))",
       "w_in.last.eq(w_one | (w_beat == self._max_burst - 1))", "WLAST missing at a 4 KiB page cut"),
    _m("axi-rresp", "axi4_master", "self.rd_data.payload.error.eq(bus.r.resp[1])", "self.rd_data.payload.error.eq(bus.r.resp[0])",
       "a read's SLVERR/DECERR is taken from the wrong RESP bit"),
    _m("axi-r-ready", "axi4_master", "bus.r.ready.eq(self.rd_data.ready & ~r_zero)", "bus.r.ready.eq(~r_zero)",
       "RREADY ignores the consumer's ready (dropped ready)"),
    _m("axi-w-skid", "axi4_master", "with m.Elif(w_handshake):\n            m.d.sync += [w_side.eq(w_in), w_side_valid.eq(1)]",
       "with m.Elif(w_handshake & 0):\n            m.d.sync += [w_side.eq(w_in), w_side_valid.eq(1)]",
       "the write-data skid buffer drops a beat under back-pressure"),
    _m("axi-bresp", "axi4_master", "m.d.sync += wr_error.eq(wr_error | bus.b.resp[1])", "m.d.sync += wr_error.eq(wr_error)",
       "an error on a non-last burst of a row is lost"),
    _m("arb-hold-owner", "read_arbiter", "m.d.comb += chosen.eq(Mux(pending != 0, owner, grant))",
       "m.d.comb += chosen.eq(grant)", "the read arbiter switches owner with reads outstanding"),
    # ---- AXI4-Lite registers and the top
    _m("lite-strobe", "axi4_lite", "with m.If(w_strb[i]):", "with m.If(w_strb[3 - i]):", "register write strobes reversed"),
    _m("lite-ro-resp", "axi4_lite", "m.d.sync += [aw_full.eq(0), w_full.eq(0), b_valid.eq(1), b_resp.eq(AXIResp.SLVERR)]",
       "m.d.sync += [aw_full.eq(0), w_full.eq(0), b_valid.eq(1), b_resp.eq(AXIResp.OKAY)]",
       "a write to a read-only register answers OKAY"),
    _m("top-fault-priority", "accelerator", "with m.If((error == 0) | (index < error_index)):",
       "with m.If(error == 0):", "the first-reported fault wins instead of the lowest instruction index"),
    _m("top-counter-vectors", "accelerator", "counters[\"vectors\"] + (engine.act.valid & engine.act.ready)",
       "counters[\"vectors\"] + engine.act.valid", "VECTORS counts stalled vectors"),
    _m("top-store-busy", "accelerator", "counters[\"store_busy\"].eq(counters[\"store_busy\"] + store.busy)",
       "counters[\"store_busy\"].eq(counters[\"store_busy\"] + load.busy)", "STORE_BUSY counts the LOAD unit"),
    _m("top-finish", "accelerator", "store.idle & ~master.busy & engine.mm_idle & engine.st_idle)",
       "store.idle & engine.mm_idle & engine.st_idle)", "DONE before the last write response",
       equivalent="every AXI transaction belongs to fetch, LOAD or STORE, each non-idle until its last beat or "
       "response, so ~master.busy adds nothing to finished"),
)

BY_NAME = {m.name: m for m in CATALOGUE}
assert len(BY_NAME) == len(CATALOGUE), "duplicate mutant names"


def apply(mutant: Mutant, root: Path | str) -> None:
    """Apply ``mutant`` to the tree at ``root`` (a scratch copy), in place."""
    path = Path(root) / mutant.path
    text = path.read_text()
    count = text.count(mutant.old)
    if count != 1:
        raise MutantError(f"mutant {mutant.name}: {mutant.path} holds the text {mutant.old!r} {count} times, not once "
                          "(the hardware changed: update sim/mutants.py)")
    path.write_text(text.replace(mutant.old, mutant.new))


def select(spec: str | None) -> list[Mutant]:
    """Mutants by comma-separated names, block names or glob patterns (``None``/empty: all)."""
    import fnmatch

    if not spec:
        return list(CATALOGUE)
    chosen = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        hits = [m for m in CATALOGUE if fnmatch.fnmatch(m.name, part) or m.block == part]
        if not hits:
            raise ValueError(f"MUTANTS: {part!r} matches no mutant or block; known blocks: "
                             f"{', '.join(sorted({m.block for m in CATALOGUE}))}")
        chosen += [m for m in hits if m not in chosen]
    return chosen
