"""Epilogue: every output bit-exact against ref_epilogue (sim.arith) over the spec's edge vectors, all shifts, full
parameter ranges, raw mode, fused ReLU and random back-pressure; latency, throughput, capacity, validation, Verilog."""

import warnings

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.hdl import signed, unsigned
from amaranth.lib import data

from hw.epilogue import Epilogue, epilogue_params_layout
from sim.amaranth_helpers import Throttle, reset_registers, run_simulation, stream_get, stream_put
from sim.arith import INT32_MAX, INT32_MIN
from sim.golden_blocks import epilogue_row_params, ref_epilogue

_COLUMN_FIELDS = ("bias", "multiplier", "shift")
_SCALAR_FIELDS = ("zero_point", "act_min", "act_max", "raw")


def _payload(acc_row, p, r):
    params = {name: [int(v) for v in p[name][r]] for name in _COLUMN_FIELDS}
    params.update({name: int(p[name][r]) for name in _SCALAR_FIELDS})
    return {"acc": [int(v) for v in acc_row], "params": params}


def rtl_epilogue(acc_rows, params, *, seed=0, in_prob=1.0, out_prob=1.0):
    """Run ``acc_rows`` through the Epilogue RTL with seeded random valid/ready throttling; same result as ref_epilogue."""
    acc = np.asarray(acc_rows)
    n, cols = acc.shape
    p = epilogue_row_params(params, n, cols)
    payloads = [_payload(acc[r], p, r) for r in range(n)]
    dut = Epilogue(cols=cols)
    out = []

    async def producer(ctx):
        throttle = Throttle(in_prob, seed)
        for payload in payloads:
            await stream_put(ctx, dut.i, payload, throttle)

    async def consumer(ctx):
        throttle = Throttle(out_prob, seed + 0x5EED)
        for _ in range(n):
            row = await stream_get(ctx, dut.o, throttle)
            out.append([row[c] for c in range(cols)])

    deadline = int(4 * n / min(in_prob, out_prob)) + 10 * dut.latency + 100
    run_simulation(dut, producer, consumer, deadline_cycles=deadline)
    return np.array(out, dtype=np.int32).reshape(n, cols)


def _describe(acc, params, r, c):
    p = epilogue_row_params(params, *acc.shape)
    return (f"acc={int(acc[r, c])} bias={int(p['bias'][r, c])} multiplier={int(p['multiplier'][r, c])} "
            f"shift={int(p['shift'][r, c])} zero_point={int(p['zero_point'][r])} "
            f"clamp=[{int(p['act_min'][r])}, {int(p['act_max'][r])}] raw={int(p['raw'][r])}")


def check(acc, params, *, seed, in_prob=1.0, out_prob=1.0):
    """Compare the RTL with the golden model element by element; return the outputs."""
    acc = np.asarray(acc)
    want = ref_epilogue(acc, params)
    got = rtl_epilogue(acc, params, seed=seed, in_prob=in_prob, out_prob=out_prob)
    assert got.shape == want.shape, f"seed {seed}: got {got.shape} rows, want {want.shape}"
    bad = np.argwhere(got != want)
    if bad.size:
        r, c = (int(x) for x in bad[0])
        pytest.fail(f"seed {seed} (in_prob {in_prob}, out_prob {out_prob}): {len(bad)} mismatches; first at row {r} "
                    f"col {c}: {_describe(acc, params, r, c)}: got {int(got[r, c])}, want {int(want[r, c])}")
    return got


# --- Random operands -------------------------------------------------------------------------------------------------

_SPECIAL_INT32 = np.array([INT32_MIN, INT32_MIN + 1, INT32_MAX, 0, 1, -1, 1 << 30, -(1 << 30)], dtype=np.int64)


def draw_int32(rng, shape, bits=None):
    """int32 values with log-uniform magnitudes (every bit position matters somewhere) and some specials."""
    if bits is None:
        bits = rng.integers(0, 32, size=shape)
    magnitude = rng.integers(0, 1 << 62, size=shape) >> (62 - np.asarray(bits))
    value = np.where(rng.random(shape) < 0.5, -magnitude, magnitude)
    value = np.clip(value, INT32_MIN, INT32_MAX)
    special = rng.choice(_SPECIAL_INT32, size=shape)
    return np.where(rng.random(shape) < 0.05, special, value).astype(np.int64)


def random_case(rng, n, cols, *, raw_prob=0.1, shift=None):
    """Per-row parameters over their full ranges, with half the rows scaled so their results fall inside int8."""
    if shift is None:
        shift = rng.integers(-31, 32, size=(n, cols))
    multiplier = np.where(rng.random((n, cols)) < 0.5,
                          rng.integers(1 << 30, 1 << 31, size=(n, cols)),  # what quantize_multiplier produces
                          draw_int32(rng, (n, cols)))
    # Rows "in range": |acc + bias| about 2**(8 - shift), so the int8 result exercises rounding and the zero point.
    in_range = rng.random((n, 1)) < 0.5
    bits = np.where(in_range, np.clip(-shift + rng.integers(-3, 10, size=(n, cols)), 0, 31),
                    rng.integers(0, 32, size=(n, cols)))
    acc = draw_int32(rng, (n, cols), bits)
    bias = np.where(in_range, draw_int32(rng, (n, cols), np.maximum(bits - 2, 0)), draw_int32(rng, (n, cols)))
    zero_point = rng.integers(-128, 128, size=n)
    bounds = np.sort(rng.integers(-128, 128, size=(n, 2)), axis=1)
    kind = rng.random(n)
    act_min = np.where(kind < 0.3, -128, np.where(kind < 0.5, zero_point, bounds[:, 0]))  # default, ReLU, random
    act_max = np.where(kind < 0.3, 127, np.where(kind < 0.5, np.maximum(bounds[:, 1], zero_point), bounds[:, 1]))
    params = {"bias": bias, "multiplier": multiplier, "shift": shift, "zero_point": zero_point,
              "act_min": act_min, "act_max": act_max, "raw": (rng.random(n) < raw_prob).astype(np.int64)}
    return acc, params


# --- Spec edge vectors -----------------------------------------------------------------------------------------------

def test_spec_edge_vectors():
    # (acc, bias, multiplier, shift, expected int8 result), zero point 0, clamp [-128, 127].
    vectors = [
        (INT32_MIN, 0, INT32_MIN, 0, 127),     # SRDHM(INT32_MIN, INT32_MIN) = INT32_MAX, clamped
        (INT32_MIN, 0, INT32_MIN, -31, 1),     # RDBPOT(INT32_MAX, 31) = 1; without saturation it would be -1
        (-1, 0, INT32_MIN, 31, 127),           # -1 << 31 wraps to INT32_MIN, then saturates
        (0, INT32_MIN, INT32_MIN, -31, 1),     # INT32_MIN reached through the bias
        (INT32_MIN, 0, INT32_MAX, -31, -1),    # SRDHM = -INT32_MAX, RDBPOT(., 31) = -1
        (101, 0, 1 << 30, 0, 51),              # SRDHM exact halves: 50.5 up
        (-101, 0, 1 << 30, 0, -50),            # -50.5 toward zero (nudge 1 - 2**30)
        (-103, 0, 1 << 30, 0, -51),            # -51.5 toward zero
        (5, 0, INT32_MAX, -1, 3),              # RDBPOT exact halves away from zero (SRDHM by INT32_MAX is identity)
        (-5, 0, INT32_MAX, -1, -3),
        (3, 0, INT32_MAX, -1, 2),
        (-3, 0, INT32_MAX, -1, -2),
        (7, 0, INT32_MAX, 0, 7),               # RDBPOT by 0 is the identity
        (-7, 0, INT32_MAX, 0, -7),
        (-1, 0, INT32_MAX, 0, -1),
        (3 << 29, 0, 1 << 30, -29, 2),         # SRDHM halves exactly to 3 * 2**28; RDBPOT(., 29): 1.5 -> 2
        (-(3 << 29), 0, 1 << 30, -29, -2),     # -1.5 -> -2
        (INT32_MAX, 1, INT32_MAX, 0, -128),    # the bias add wraps to INT32_MIN
    ]
    acc = np.array([[v[0]] for v in vectors])
    params = {"bias": [[v[1]] for v in vectors], "multiplier": [[v[2]] for v in vectors],
              "shift": [[v[3]] for v in vectors], "zero_point": 0, "act_min": -128, "act_max": 127, "raw": 0}
    got = check(acc, params, seed=0)
    expected = np.array([[v[4]] for v in vectors], dtype=np.int32)
    assert np.array_equal(got, expected), f"edge vectors: got {got[:, 0].tolist()}, want {expected[:, 0].tolist()}"


def test_exact_halves_at_every_right_shift():
    # s = odd * 2**e and M0 = 2**30 make SRDHM exact (odd * 2**(e-1)) and RDBPOT(., e) an exact half, for every
    # right shift e >= 1: halves round away from zero. With e = 0 SRDHM itself meets the half: positive halves
    # round up, negative ones toward zero.
    seed = 51
    rng = np.random.default_rng(seed)
    e = np.arange(32)[:, None]
    # |odd| * 2**e must fit in int32; for e = 31 only -1 * 2**31 does.
    magnitude = 2 * rng.integers(0, np.minimum(120, 1 << np.maximum(30 - e, 0)), size=(32, 4)) + 1
    odd = np.where(rng.random((32, 4)) < 0.5, -magnitude, magnitude)
    odd[31] = -1
    acc = (odd << e).reshape(-1, 1)
    params = {"bias": [0], "multiplier": [1 << 30], "shift": np.broadcast_to(-e, odd.shape).reshape(-1, 1),
              "zero_point": 0, "act_min": -128, "act_max": 127, "raw": 0}
    got = check(acc, params, seed=seed, in_prob=0.8, out_prob=0.8).reshape(odd.shape)
    want = np.where((odd > 0) | (e == 0), (odd + 1) // 2, (odd - 1) // 2)
    assert np.array_equal(got, want), f"seed {seed}: exact halves {odd.tolist()} gave {got.tolist()}"


def test_every_shift():
    # Every shift from -31 to 31 in 32 (row, column) slots each, at magnitudes where the int8 result is informative.
    seed = 11
    rng = np.random.default_rng(seed)
    shift = np.concatenate([rng.permutation(np.arange(-31, 32)) for _ in range(32)]).reshape(-1, 8)
    acc, params = random_case(rng, shift.shape[0], 8, raw_prob=0.0, shift=shift)
    check(acc, params, seed=seed)


@pytest.mark.parametrize("cols", [1, 3, 8])
@pytest.mark.parametrize("in_prob,out_prob", [(1.0, 1.0), (0.6, 0.8), (0.9, 0.3)])
def test_random_with_backpressure(cols, in_prob, out_prob):
    seed = 1000 * cols + int(100 * in_prob) + int(10 * out_prob)
    rng = np.random.default_rng(seed)
    acc, params = random_case(rng, 720 // cols, cols)
    check(acc, params, seed=seed, in_prob=in_prob, out_prob=out_prob)


def test_full_range_operands():
    # Multipliers, biases and accumulators drawn uniformly over all of int32 (mostly clamped results).
    seed = 21
    rng = np.random.default_rng(seed)
    n, cols = 40, 3
    bounds = np.sort(rng.integers(-128, 128, size=(n, 2)), axis=1)
    params = {"bias": rng.integers(INT32_MIN, INT32_MAX, size=(n, cols), endpoint=True),
              "multiplier": rng.integers(INT32_MIN, INT32_MAX, size=(n, cols), endpoint=True),
              "shift": rng.integers(-31, 32, size=(n, cols)), "zero_point": rng.integers(-128, 128, size=n),
              "act_min": bounds[:, 0], "act_max": bounds[:, 1], "raw": 0}
    check(rng.integers(INT32_MIN, INT32_MAX, size=(n, cols), endpoint=True), params, seed=seed)


def test_raw_mode():
    seed = 31
    rng = np.random.default_rng(seed)
    n, cols = 40, 3
    acc = draw_int32(rng, (n, cols))
    acc[0] = [INT32_MAX, INT32_MIN, -1]
    bias = draw_int32(rng, (n, cols))
    bias[0] = [1, -1, INT32_MIN]  # every column wraps
    params = {"bias": bias, "multiplier": draw_int32(rng, (n, cols)), "shift": rng.integers(-31, 32, size=(n, cols)),
              "zero_point": 5, "act_min": -10, "act_max": 10, "raw": 1}
    got = check(acc, params, seed=seed, in_prob=0.7, out_prob=0.7)
    assert got[0].tolist() == [INT32_MIN, INT32_MAX, INT32_MAX]


def test_fused_relu():
    seed = 41
    rng = np.random.default_rng(seed)
    acc, params = random_case(rng, 60, 3, raw_prob=0.0)
    params.update(zero_point=-20, act_min=-20, act_max=127)
    got = check(acc, params, seed=seed)
    assert got.min() == -20 and got.max() > -20, f"seed {seed}: ReLU outputs span {got.min()}..{got.max()}"


# --- Timing and flow control -----------------------------------------------------------------------------------------

def _simple_rows(n, cols):
    acc = (np.arange(n * cols).reshape(n, cols) * 37 - 500).astype(np.int64)
    params = {"bias": np.arange(cols) - 3, "multiplier": np.full(cols, 1 << 30), "shift": np.arange(cols) % 5 - 2,
              "zero_point": 3, "act_min": -128, "act_max": 127, "raw": 0}
    return acc, params


def test_latency_and_throughput():
    # Rows offered back to back are all accepted; row k comes out exactly `latency` cycles after it went in.
    n, cols = 12, 3
    acc, params = _simple_rows(n, cols)
    p = epilogue_row_params(params, n, cols)
    dut = Epilogue(cols=cols)
    accepted, emitted, rows = [], [], []

    async def tb(ctx):
        ctx.set(dut.o.ready, 1)
        for cycle in range(n + dut.latency + 3):
            if cycle < n:
                ctx.set(dut.i.payload, _payload(acc[cycle], p, cycle))
            ctx.set(dut.i.valid, cycle < n)
            if cycle < n and ctx.get(dut.i.ready):
                accepted.append(cycle)
            if ctx.get(dut.o.valid):
                emitted.append(cycle)
                rows.append([ctx.get(dut.o.payload)[c] for c in range(cols)])
            await ctx.tick()

    run_simulation(dut, tb, deadline_cycles=200)
    assert accepted == list(range(n)), f"i.ready dropped while o.ready was high: accepted in cycles {accepted}"
    assert emitted == [c + dut.latency for c in range(n)], (
        f"latency property is {dut.latency}, but rows accepted in {accepted} came out in {emitted}")
    want = ref_epilogue(acc, params)
    assert np.array_equal(np.array(rows, dtype=np.int32), want), f"got {rows}, want {want.tolist()}"


def test_stall_fills_every_stage():
    # With o.ready low the pipeline accepts exactly `latency` rows (bubbles squeezed out) and holds them; once
    # o.ready rises every row comes out, in order, none lost or duplicated.
    n, cols = 20, 1
    acc, params = _simple_rows(n, cols)
    p = epilogue_row_params(params, n, cols)
    dut = Epilogue(cols=cols)
    got = []

    async def tb(ctx):
        ctx.set(dut.o.ready, 0)
        nxt = 0
        for cycle in range(100):
            if cycle == 40:
                assert nxt == dut.latency, f"{nxt} rows accepted while stalled, expected latency = {dut.latency}"
                assert not ctx.get(dut.i.ready) and ctx.get(dut.o.valid), "a full, stalled pipeline must hold"
                ctx.set(dut.o.ready, 1)
            offer = nxt < n and cycle % 3 != 1  # bubbles in the input stream
            if offer:
                ctx.set(dut.i.payload, _payload(acc[nxt], p, nxt))
            ctx.set(dut.i.valid, offer)
            if offer and ctx.get(dut.i.ready):
                nxt += 1
            if ctx.get(dut.o.valid) and ctx.get(dut.o.ready):
                got.append(ctx.get(dut.o.payload)[0])
            await ctx.tick()

    run_simulation(dut, tb, deadline_cycles=200)
    want = ref_epilogue(acc, params)[:, 0].tolist()
    assert got == want, f"got {got}, want {want}"


# --- Interface, validation, Verilog ------------------------------------------------------------------------------------

def test_interface():
    layout = epilogue_params_layout(3)
    assert layout.members == {
        "bias": data.ArrayLayout(signed(32), 3), "multiplier": data.ArrayLayout(signed(32), 3),
        "shift": data.ArrayLayout(signed(6), 3), "zero_point": signed(8), "act_min": signed(8),
        "act_max": signed(8), "raw": unsigned(1)}


@pytest.mark.parametrize("cols", [0, -1, 1.5, "8", True, None])
def test_cols_validation(cols):
    with pytest.raises(TypeError, match=rf"Column count must be a positive integer, not {cols!r}"):
        Epilogue(cols=cols)
    with pytest.raises(TypeError, match=r"Column count must be a positive integer"):
        epilogue_params_layout(cols)


def test_reference_validation():
    acc, params = _simple_rows(2, 3)
    with pytest.raises(ValueError, match=r"shift' must lie in \[-31, 31\], not -32..1"):
        ref_epilogue(acc, params | {"shift": [-32, 0, 1]})
    with pytest.raises(ValueError, match=r"missing \['raw'\]"):
        ref_epilogue(acc, {k: v for k, v in params.items() if k != "raw"})
    with pytest.raises(ValueError, match=r"'bias' has shape \(4,\)"):
        ref_epilogue(acc, params | {"bias": [0, 0, 0, 0]})
    with pytest.raises(ValueError, match=r"act_min <= act_max; row 0 has \[5, 4\]"):
        ref_epilogue(acc, params | {"act_min": 5, "act_max": 4})
    with pytest.raises(ValueError, match=r"int32 range"):
        ref_epilogue(acc + (1 << 32), params)


def test_verilog_conversion():
    dut = Epilogue(cols=8)
    assert dut.cols == 8
    assert dut.i.payload.shape() == data.StructLayout({"acc": data.ArrayLayout(signed(32), 8),
                                                       "params": epilogue_params_layout(8)})
    assert dut.o.payload.shape() == data.ArrayLayout(signed(32), 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        text = verilog.convert(dut, name="epilogue")
    assert "module epilogue" in text
    for port in ("i__valid", "i__ready", "o__valid", "o__ready", "i__payload", "o__payload"):
        assert port in text, f"port {port} missing from the generated Verilog"


@pytest.mark.parametrize("cols", [1, 4])
def test_only_flow_control_registers_have_a_reset(cols):
    # The data registers load with their stage and are read only while its valid bit is set: no reset. What the
    # reset reaches is each stage's valid bit and its two flow-control registers, whatever the column count.
    epilogue = Epilogue(cols=cols)
    expected = {f"{stage}_{kind}": 1 for stage in Epilogue.STAGES for kind in ("valid", "full_from", "has_room")}
    assert reset_registers(epilogue) == expected
