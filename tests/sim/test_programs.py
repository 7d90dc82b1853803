"""Tiled-GEMM programs (sim/programs.py) on the golden simulator equal sim.arith.quantized_gemm exactly, leave the
rest of DRAM untouched, balance their tokens and are well formed (no unordered buffer reuse)."""

import dataclasses
from collections import Counter

import numpy as np
import pytest

from hw.isa import Buffer, ErrorCode, HardwareConfig, Load, Matmul, Store, Sync, Unit, to_bytes
from sim.arith import quantize_multiplier, quantized_gemm
from sim.programs import GemmProgram, gemm_program, plan_tiling

ARRAY_SIZES = (1, 2, 3, 4, 8, 16)
FIXED_CONFIGS = [
    HardwareConfig(),
    HardwareConfig(rows=4, cols=4, act_depth=64, wgt_depth=32, acc_depth=16, param_depth=4),
    HardwareConfig(rows=3, cols=2, act_depth=5, wgt_depth=7, acc_depth=3, param_depth=1),       # many chunks
    HardwareConfig(rows=16, cols=16, act_depth=32, wgt_depth=32, acc_depth=8, param_depth=2),
    HardwareConfig(rows=1, cols=1, act_depth=1, wgt_depth=1, acc_depth=1, param_depth=1),       # single-buffered
    HardwareConfig(rows=2, cols=8, act_depth=3, wgt_depth=3, acc_depth=5, param_depth=3),
    HardwareConfig(rows=8, cols=3, act_depth=4, wgt_depth=5, acc_depth=2, param_depth=1),       # k_tile < rows
]
#: Roughly the instructions a case may take, to keep the whole file fast.
INSTRUCTION_BUDGET = 1000


def random_config(rng):
    if rng.random() < 0.3:
        return FIXED_CONFIGS[int(rng.integers(len(FIXED_CONFIGS)))]
    rows, cols = (int(rng.choice(ARRAY_SIZES)) for _ in range(2))
    depth = lambda hi: int(np.exp(rng.uniform(0, np.log(hi))))   # noqa: E731 - log-uniform in [1, hi)
    # Mostly deep enough to double-buffer a weight tile, sometimes shallower than one.
    wgt_depth = max(1, int(rows * rng.uniform(2, 8))) if rng.random() < 0.8 else depth(2 * rows + 1)
    return HardwareConfig(rows=rows, cols=cols, act_depth=depth(200), wgt_depth=wgt_depth, acc_depth=depth(80),
                          param_depth=depth(10))


def estimated_instructions(m, k, n, config):
    t = plan_tiling(m, k, n, config)
    steps = t.n_groups * t.m_chunks * -(-t.k_tiles // t.k_group)
    return t.m_chunks * (t.n_tiles * (2 * t.k_tiles + 1) + t.n_groups * t.k_tiles) + steps


def random_case(seed):
    rng = np.random.default_rng(seed)
    config = random_config(rng)
    dims = [int(rng.integers(1, 101)) for _ in range(3)]
    while estimated_instructions(*dims, config) > INSTRUCTION_BUDGET:
        i = int(rng.integers(3))
        dims[i] = max(1, dims[i] // 2)
    m, k, n = dims
    a = rng.integers(-128, 128, (m, k))
    w = rng.integers(-128, 128, (k, n))
    mode = rng.integers(4)
    if mode == 0:           # everything over its full range
        bias = rng.integers(-(1 << 31), 1 << 31, n)
        multiplier = rng.integers(-(1 << 31), 1 << 31, n)
        shift = rng.integers(-31, 32, n)
    else:                   # a realistic layer: outputs spread over the int8 range
        bias = rng.integers(-(1 << 16), 1 << 16, n)
        scale = 1.0 / (np.sqrt(k) * 128 * rng.uniform(0.2, 2, n))
        multiplier, shift = quantize_multiplier(scale)
        if rng.random() < 0.3:
            bias, multiplier, shift = int(bias[0]), int(multiplier[0]), int(shift[0])   # scalars broadcast
    zero_point = int(rng.integers(-128, 128))
    lo, hi = sorted(int(x) for x in rng.integers(-128, 128, 2))
    if mode == 2:
        lo, hi = zero_point, 127        # fused ReLU
    elif mode == 3:
        lo, hi = -128, 127
    raw = bool(rng.random() < 0.25)
    return dict(a=a, w=w, bias=bias, multiplier=multiplier, shift=shift, zero_point=zero_point, act_min=lo,
                act_max=hi, raw=raw), config, rng


def golden(kwargs):
    k = dict(kwargs)
    return quantized_gemm(k.pop("a"), k.pop("w"), **k)


def describe(seed, kwargs, config):
    return (f"seed {seed}: M,K,N = {kwargs['a'].shape[0]},{kwargs['a'].shape[1]},{kwargs['w'].shape[1]} "
            f"raw={kwargs['raw']} on {config}")


def check_program(gp: GemmProgram, kwargs, context):
    result, dram = gp.simulate(check_races=True)
    assert result.ok, f"{context}\n{result.summary()}"
    assert result.hazards == [], f"{context}: not well formed: {result.hazards[:3]}"
    assert all(v == 0 for v in result.tokens.values()), f"{context}: tokens left {result.tokens}"
    want = golden(kwargs)
    got = gp.read_c(dram)
    assert got.dtype == want.dtype and got.shape == want.shape, context
    bad = np.argwhere(got != want)
    assert not bad.size, (f"{context}: {len(bad)} wrong, first at {tuple(bad[0])}: got {got[tuple(bad[0])]}, "
                          f"want {want[tuple(bad[0])]}")
    stray = np.flatnonzero(dram != gp.expected_dram)
    assert not stray.size, f"{context}: DRAM differs from expected_dram at {stray[:5]}"
    assert result.stats.vectors == gp.tiling.n_tiles * kwargs["a"].shape[0] * gp.tiling.k_tiles, context
    return result


@pytest.mark.parametrize("seed", range(240))
def test_random_gemm(seed):
    kwargs, config, rng = random_case(seed)
    gp = gemm_program(**kwargs, config=config, rng=rng if seed % 4 else None)
    check_program(gp, kwargs, describe(seed, kwargs, config))
    if seed % 4 == 1:
        # Another order the concurrent units could take gives the same DRAM (an independent check of well-formedness).
        result, dram = gp.simulate(interleave=np.random.default_rng(seed))
        stray = np.flatnonzero(dram != gp.expected_dram)
        assert result.ok and not stray.size, f"{describe(seed, kwargs, config)}: interleaved run differs at {stray[:5]}"


def small_case(seed=0, m=5, k=7, n=6, **overrides):
    rng = np.random.default_rng(seed)
    kwargs = dict(a=rng.integers(-128, 128, (m, k)), w=rng.integers(-128, 128, (k, n)),
                  bias=rng.integers(-1000, 1000, n), multiplier=rng.integers(1 << 30, 1 << 31, n),
                  shift=rng.integers(-10, -5, n), zero_point=3, act_min=-100, act_max=100, raw=False)
    kwargs.update(overrides)
    return kwargs


def test_default_layout_is_sequential_and_aligned():
    kwargs = small_case()
    config = HardwareConfig(rows=4, cols=4)
    gp = gemm_program(**kwargs, config=config, base=0x2000)
    assert gp.a_addr == 0x2000
    addrs = [gp.a_addr, gp.w_addr, gp.param_addr, gp.prog_addr, gp.c_addr]
    assert addrs == sorted(addrs) and all(x % 64 == 0 for x in addrs)
    assert gp.dram.size == gp.c_addr + gp.c_nbytes
    assert not gp.dram[:0x2000].any()
    assert bytes(gp.dram[gp.prog_addr:gp.prog_addr + 16 * gp.prog_len]) == to_bytes(gp.program)
    assert gp.dram[gp.a_addr:gp.a_addr + 35].view(np.int8).reshape(5, 7).tolist() == kwargs["a"].tolist()
    assert gp.c_shape == (5, 6) and gp.c_dtype == np.int8 and gp.c_nbytes == 30
    assert np.array_equal(gp.expected, golden(kwargs))
    again = gemm_program(**kwargs, config=config, base=0x2000)
    assert np.array_equal(again.dram, gp.dram) and again.program == gp.program
    assert "GemmProgram(C (5, 6) int8" in repr(gp)
    assert gp.listing().splitlines()[-1].endswith("HALT")


@pytest.mark.parametrize("seed", range(20))
def test_random_layout_does_not_overlap(seed):
    kwargs = small_case(seed, raw=bool(seed % 2))
    gp = gemm_program(**kwargs, config=HardwareConfig(rows=3, cols=2), rng=np.random.default_rng(seed), base=0x100)
    regions = sorted([(gp.a_addr, 35), (gp.w_addr, 42), (gp.param_addr, 3 * 21), (gp.prog_addr, 16 * gp.prog_len),
                      (gp.c_addr, gp.c_nbytes)])
    for (start, size), (nxt, _) in zip(regions, regions[1:]):
        assert start + size <= nxt, f"seed {seed}: overlapping regions {regions}"
    assert regions[0][0] >= 0x100 and regions[-1][0] + regions[-1][1] <= gp.dram.size
    assert gp.prog_addr % 16 == 0
    check_program(gp, kwargs, f"seed {seed}")


def test_random_layouts_use_odd_alignments():
    offsets = {gemm_program(**small_case(s), config=HardwareConfig(rows=4, cols=4), rng=s).c_addr % 16
               for s in range(16)}
    assert len(offsets) > 4


def test_raw_mode_stores_int32():
    kwargs = small_case(3, bias=np.full(6, (1 << 31) - 1), raw=True)
    gp = gemm_program(**kwargs, config=HardwareConfig(rows=4, cols=4))
    assert gp.c_dtype == np.int32 and gp.c_nbytes == 5 * 6 * 4
    check_program(gp, kwargs, "raw")


def test_loads_of_the_next_step_are_dispatched_with_the_current_compute():
    kwargs = small_case(4, m=10, k=20, n=8)
    config = HardwareConfig(rows=4, cols=4, act_depth=8, wgt_depth=8, acc_depth=8, param_depth=4)
    gp = gemm_program(**kwargs, config=config)
    t = gp.tiling
    assert (t.in_slots, t.acc_slots, t.k_group, t.m_chunk) == (2, 2, 1, 4)
    program = gp.program
    matmuls = [i for i, x in enumerate(program) if isinstance(x, Matmul)]
    def halves(upto):
        return {(x.buffer, x.buf_addr // (t.act_half if x.buffer == Buffer.ACT else t.wgt_half))
                for x in program[:upto] if isinstance(x, Load) and x.buffer != Buffer.PARAM}
    # The first MATMUL follows the loads of half 0; the next step's loads into half 1 are dispatched with it,
    # before the second MATMUL, so LOAD fills one half while COMPUTE works on the other.
    assert halves(matmuls[0]) == {(Buffer.ACT, 0), (Buffer.WGT, 0)}
    assert halves(matmuls[1]) == {(Buffer.ACT, 0), (Buffer.ACT, 1), (Buffer.WGT, 0), (Buffer.WGT, 1)}
    # Consecutive steps alternate halves; consecutive chunks alternate accumulator halves.
    act_halves = [program[i].act_addr // t.act_half for i in matmuls]
    assert act_halves == [s % 2 for s in range(len(matmuls))]
    stores = [x for x in program if isinstance(x, Store)]
    assert [s.acc_addr for s in stores] == [(c % 2) * t.acc_half for c in range(len(stores))]
    # Each STORE is dispatched before the next chunk's MATMULs.
    first_store = next(i for i, x in enumerate(program) if isinstance(x, Store))
    assert first_store < matmuls[t.k_tiles]
    assert not any(isinstance(x, Sync) for x in program[:-1])   # no relays or drains needed here
    check_program(gp, kwargs, "overlap")


def test_param_entries_are_reused_through_a_compute_relay():
    kwargs = small_case(5, m=4, k=3, n=9)
    config = HardwareConfig(rows=4, cols=2, param_depth=1)
    gp = gemm_program(**kwargs, config=config)
    assert gp.tiling.param_slots == 1 and gp.tiling.n_tiles == 5
    relays = [x for x in gp.program if isinstance(x, Sync) and x.unit == Unit.COMPUTE and x.pop_next and x.push_prev]
    assert len(relays) == 4
    check_program(gp, kwargs, "relay")


def test_tiling_of_a_big_gemm_on_the_default_config():
    t = plan_tiling(1000, 300, 70, HardwareConfig())
    assert (t.in_slots, t.acc_slots, t.acc_half, t.act_half, t.wgt_half, t.k_tile) == (2, 2, 256, 1024, 1024, 8)
    assert (t.k_tiles, t.n_tiles, t.param_slots) == (38, 9, 9)
    assert t.n_group > 1, "activation tiles should serve several N tiles"
    assert t.n_group * t.m_chunk <= t.acc_half
    assert t.k_group * t.m_chunk <= t.act_half and t.k_group * t.n_group * t.k_tile <= t.wgt_half
    assert t.m_chunks == -(-1000 // t.m_chunk) and t.n_groups == -(-9 // t.n_group)


@pytest.mark.parametrize("m, k, n", [(32, 1600, 512), (3872, 288, 64), (2704, 9, 32), (7, 5, 3)])
def test_each_activation_tile_is_fetched_once_per_n_group(m, k, n):
    """ACT loads: one per K tile of each chunk (not one per N tile); WGT loads: one per K tile, N tile and M chunk."""
    config = HardwareConfig()
    t = plan_tiling(m, k, n, config)
    program = gemm_program(np.zeros((m, k), np.int8), np.zeros((k, n), np.int8), 0, 1 << 30, 0, config=config,
                           with_expected=False).program
    loads = Counter(x.buffer for x in program if isinstance(x, Load))
    assert loads[Buffer.ACT] == t.m_chunks * t.n_groups * t.k_tiles, t
    assert loads[Buffer.WGT] == t.m_chunks * t.n_tiles * t.k_tiles, t
    assert loads[Buffer.PARAM] == t.n_tiles
    assert sum(isinstance(x, Matmul) for x in program) == t.m_chunks * t.n_tiles * t.k_tiles
    assert sum(isinstance(x, Store) for x in program) == t.m_chunks * t.n_tiles


def test_stripped_tokens_are_reported_as_races():
    kwargs = small_case(6, m=9, k=9, n=5)
    gp = gemm_program(**kwargs, config=HardwareConfig(rows=4, cols=2, acc_depth=8, act_depth=8, wgt_depth=8))
    no_flags = dict(pop_prev=False, pop_next=False, push_prev=False, push_next=False)
    stripped = [dataclasses.replace(x, **no_flags) for x in gp.program]
    dram = gp.dram.copy()
    dram[gp.prog_addr:gp.prog_addr + 16 * gp.prog_len] = np.frombuffer(to_bytes(stripped), np.uint8)
    gp2 = dataclasses.replace(gp, program=stripped, dram=dram)
    result, final = gp2.simulate(check_races=True)
    assert result.ok and np.array_equal(gp2.read_c(final), gp.expected)   # sequentially still right ...
    assert len(result.hazards) > 5                                        # ... but racy on the hardware
    differing = 0
    for seed in range(10):
        result, final = gp2.simulate(interleave=np.random.default_rng(seed))
        assert result.ok
        differing += not np.array_equal(final, gp.expected_dram)
    assert differing >= 3, "concurrent orders of the racy program should disagree"


def test_read_c_and_expected_dram():
    kwargs = small_case(7)
    gp = gemm_program(**kwargs, config=HardwareConfig(rows=2, cols=4), rng=7)
    assert np.array_equal(gp.read_c(gp.expected_dram), gp.expected)
    before = gp.dram.copy()
    gp.expected_dram[:] = 0
    assert np.array_equal(gp.dram, before)
    with pytest.raises(ValueError, match="does not hold C"):
        gp.read_c(gp.dram[:gp.c_addr])
    result, _ = gp.simulate(trace=True)
    assert len(result.trace) == gp.prog_len
    result, _ = gp.simulate(bus_errors=[(gp.c_addr, gp.c_addr + 1, "slverr")])
    assert result.error == ErrorCode.BUS_ERROR_STORE


@pytest.mark.parametrize("overrides, error, match", [
    (dict(a=np.zeros((2, 3, 1), int)), ValueError, r"a must be 2-D, not shape \(2, 3, 1\)"),
    (dict(a=np.zeros((5, 7)) + 0.5), TypeError, "a must hold integers, not float64"),
    (dict(a=np.full((5, 7), 128)), ValueError, r"a must lie in \[-128, 127\], not 128..128"),
    (dict(w=np.zeros((6, 6), int)), ValueError, r"w needs 7 rows"),
    (dict(a=np.zeros((0, 7), int)), ValueError, "GEMM dimensions must be positive"),
    (dict(bias=np.zeros(5, int)), ValueError, r"bias of shape \(5,\) does not broadcast to \(6,\)"),
    (dict(bias=1 << 31), ValueError, r"bias must lie in \[-2147483648, 2147483647\]"),
    (dict(shift=32), ValueError, r"shift must lie in \[-31, 31\], not 32..32"),
    (dict(multiplier=-(1 << 31) - 1), ValueError, "multiplier must lie in"),
    (dict(zero_point=128), ValueError, r"zero_point must be an integer in \[-128, 127\], not 128"),
    (dict(act_min=10, act_max=-10), ValueError, r"act_min must not exceed act_max, not \[10, -10\]"),
    (dict(act_max=1.5), ValueError, "act_max must be an integer"),
])
def test_argument_errors(overrides, error, match):
    with pytest.raises(error, match=match):
        gemm_program(**small_case(**overrides), config=HardwareConfig(rows=4, cols=4))


def test_keyword_errors():
    kwargs = small_case()
    with pytest.raises(TypeError, match="config must be a hw.isa.HardwareConfig"):
        gemm_program(**kwargs, config=None)
    with pytest.raises(ValueError, match="HardwareConfig.rows must be a positive integer, not 0"):
        gemm_program(**kwargs, config=HardwareConfig(rows=0))
    with pytest.raises(ValueError, match="base must be an integer in"):
        gemm_program(**kwargs, config=HardwareConfig(), base=-1)
    with pytest.raises(TypeError, match="rng must be a numpy.random.Generator, an integer seed or None"):
        gemm_program(**kwargs, config=HardwareConfig(), rng="seed")
    with pytest.raises(ValueError, match="beyond the 32-bit address space"):
        gemm_program(**kwargs, config=HardwareConfig(), base=(1 << 32) - 64)
    # raw mode ignores the clamp, so inverted bounds are accepted there
    gp = gemm_program(**dict(kwargs, act_min=5, act_max=-5, raw=True), config=HardwareConfig())
    assert gp.c_dtype == np.int32
