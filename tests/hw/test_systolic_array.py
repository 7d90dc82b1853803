"""SystolicArray: skewed tiles streamed back to back with bank switching, against the golden GEMM."""

import numpy as np
import pytest

from hw.systolic_array import SystolicArray
from sim.amaranth_helpers import run_simulation
from sim.arith import gemm_int32


def schedule(tiles, rows, cols):
    """Cycle timeline for tiles [(W (rows x cols), X (m x rows))] obeying the array's bank-reuse rule.

    Tile t uses bank t % 2. Its weight row r is written at cycle X0 + r with X0 at least cols - 1 cycles after the
    last vector of tile t - 2 (same bank) entered, and its first vector enters after its last weight row.
    Returns (writes {cycle: (row, bank, values)}, entries [(cycle, tile, vector)]).
    """
    writes, entries = {}, []
    write_slot, entry_slot = 0, 0
    last_entry = {0: -10**9, 1: -10**9}
    for t, (w, x) in enumerate(tiles):
        bank = t % 2
        x0 = max(write_slot, last_entry[bank] + cols - 1)
        for r in range(rows):
            writes[x0 + r] = (r, bank, w[r])
        write_slot = x0 + rows
        start = max(x0 + rows, entry_slot)
        entries += [(start + i, t, i) for i in range(x.shape[0])]
        entry_slot = start + x.shape[0]
        last_entry[bank] = entry_slot - 1
    return writes, entries


def rtl_array(tiles, rows, cols, dsp_pes=0, pe_multiplier="fabric"):
    """Drive the array with skewed inputs; returns {(tile, vector): column sums} collected at the bottom."""
    dut = SystolicArray(rows=rows, cols=cols, dsp_pes=dsp_pes, pe_multiplier=pe_multiplier)
    writes, entries = schedule(tiles, rows, cols)
    per_cycle = {}
    for cycle, t, i in entries:
        for r in range(rows):
            per_cycle.setdefault(cycle + r, {})[r] = (int(tiles[t][1][i, r]), t % 2)
    expect_out = {}
    for cycle, t, i in entries:
        for c in range(cols):
            expect_out.setdefault(cycle + dut.column_latency(c), []).append((t, i, c))
    end = max(expect_out) + 1
    results = {}

    async def tb(ctx):
        for cycle in range(end + 1):
            w = writes.get(cycle)
            ctx.set(dut.w_we, w is not None)
            if w is not None:
                ctx.set(dut.w_row, w[0])
                ctx.set(dut.w_bank, w[1])
                ctx.set(dut.w_data, [int(v) for v in w[2]])
            row_inputs = per_cycle.get(cycle, {})
            ctx.set(dut.a_in, [{"data": row_inputs.get(r, (0, 0))[0], "bank": row_inputs.get(r, (0, 0))[1]}
                               for r in range(rows)])
            for t, i, c in expect_out.get(cycle, []):
                results.setdefault((t, i), [None] * cols)[c] = ctx.get(dut.psum_out[c])
            await ctx.tick()

    run_simulation(dut, tb, deadline_cycles=end + 10)
    return results


@pytest.mark.parametrize("rows,cols,dsp_pes,pe_multiplier", [
    (1, 1, 0, "fabric"), (2, 3, 0, "fabric"), (3, 2, 0, "fabric"), (4, 4, 0, "fabric"), (8, 8, 0, "fabric"),
    (16, 16, 0, "fabric"), (1, 1, 1, "fabric"), (3, 2, 4, "fabric"), (4, 4, 16, "fabric"), (16, 16, 92, "fabric"),
    (1, 1, 0, "carry"), (3, 2, 0, "carry"), (4, 4, 7, "carry"), (16, 16, 92, "carry")])
def test_array_back_to_back_tiles(rows, cols, dsp_pes, pe_multiplier):
    seed = rows * 100 + cols
    rng = np.random.default_rng(seed)
    n_tiles = 4 if rows * cols <= 64 else 2
    tiles = []
    for t in range(n_tiles):
        w = rng.integers(-128, 128, size=(rows, cols), dtype=np.int64)
        x = rng.integers(-128, 128, size=(int(rng.integers(1, rows + cols + 4)), rows), dtype=np.int64)
        if t == 0:
            w[:] = -128
            x[:] = -128  # extreme operands: every product is +2**14
        tiles.append((w, x))
    got = rtl_array(tiles, rows, cols, dsp_pes, pe_multiplier)
    for t, (w, x) in enumerate(tiles):
        want = gemm_int32(x, w)
        for i in range(x.shape[0]):
            assert got[(t, i)] == list(want[i]), (
                f"seed {seed} {rows}x{cols} with {dsp_pes} DSP PEs, the rest {pe_multiplier}: tile {t} vector {i}: "
                f"got {got[(t, i)]} want {list(want[i])}")


@pytest.mark.parametrize("pe_multiplier", ["fabric", "carry"])
def test_array_dsp_pes_row_major(pe_multiplier):
    """The first ``dsp_pes`` PEs in row-major order get the DSP multiplier, the rest ``pe_multiplier``."""
    array = SystolicArray(rows=3, cols=4, dsp_pes=6, pe_multiplier=pe_multiplier)
    kinds = [[pe.multiplier for pe in row] for row in array._pes]
    assert kinds == [["dsp"] * 4, ["dsp"] * 2 + [pe_multiplier] * 2, [pe_multiplier] * 4]
    assert array.pe_multiplier == pe_multiplier


def test_array_column_latency():
    array = SystolicArray(rows=3, cols=5)
    assert [array.column_latency(c) for c in range(5)] == [7, 8, 9, 10, 11]
    assert array.row_skew == 1
    with pytest.raises(ValueError, match="Column must lie in"):
        array.column_latency(5)


@pytest.mark.parametrize("kwargs,match", [
    ({"rows": 0, "cols": 4}, "Row count must be a positive integer, not 0"),
    ({"rows": 4, "cols": -1}, "Column count must be a positive integer, not -1"),
    ({"rows": 2.5, "cols": 4}, "Row count must be a positive integer, not 2.5"),
    ({"rows": 2, "cols": 2, "dsp_pes": 5}, r"DSP PE count must be an integer from 0 to rows \* cols = 4, not 5"),
    ({"rows": 2, "cols": 2, "dsp_pes": -1}, r"DSP PE count must be an integer from 0 to rows \* cols = 4, not -1"),
    ({"rows": 2, "cols": 2, "pe_multiplier": "dsp"},
     r"PE fabric multiplier must be one of 'fabric', 'carry', not 'dsp'"),
])
def test_array_parameter_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SystolicArray(**kwargs)
