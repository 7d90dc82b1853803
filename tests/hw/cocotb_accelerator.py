"""cocotb testbenches for the whole accelerator (run by test_accelerator_cocotb.py on Icarus and Verilator).

The testbench plays the host over AXI4-Lite and the DRAM with an AXI4 RAM model that adds random latency and
back-pressure on every channel. Each program's final DRAM image must equal the golden instruction-level simulator's
byte for byte, and the STATUS error code and ERROR_INDEX must match its error behaviour.
Configuration from the environment: ROWS, COLS, ACT_DEPTH, WGT_DEPTH, ACC_DEPTH, PARAM_DEPTH, SEED, CASES, MAX_DIM.
"""

import os

import cocotb
import numpy as np

from hw.isa import Buffer, ErrorCode, HardwareConfig, Halt, Load, Matmul, Store, Sync, Unit, encode, to_bytes
from sim.arith import INT32_MAX, INT32_MIN
from sim.cocotb_host import AcceleratorHost
from sim.isa_sim import IsaSimulator
from sim.programs import gemm_program

CONFIG = HardwareConfig(rows=int(os.environ.get("ROWS", "4")), cols=int(os.environ.get("COLS", "4")),
                        act_depth=int(os.environ.get("ACT_DEPTH", "64")),
                        wgt_depth=int(os.environ.get("WGT_DEPTH", "64")),
                        acc_depth=int(os.environ.get("ACC_DEPTH", "32")),
                        param_depth=int(os.environ.get("PARAM_DEPTH", "8")), bus_bytes=8)
SEED = int(os.environ.get("SEED", "1"))
CASES = int(os.environ.get("CASES", "3"))
MAX_DIM = int(os.environ.get("MAX_DIM", "12"))
MEM_SIZE = 1 << 16
MAX_CYCLES = int(os.environ.get("MAX_CYCLES", "200000"))


def first_difference(got: bytes, want: bytes) -> str:
    for i, (g, w) in enumerate(zip(got, want)):
        if g != w:
            return f"first differing byte at {i:#x}: RTL {g:#04x}, golden {w:#04x}"
    return "lengths differ"


async def run_and_compare(host, image, *, prog_addr, prog_len, bus_errors=(), what="program", max_cycles=MAX_CYCLES):
    """Run ``image`` on the RTL and on the golden simulator; assert identical DRAM, error code and index."""
    golden_dram = np.zeros(MEM_SIZE, dtype=np.uint8)
    golden_dram[:len(image)] = np.frombuffer(bytes(image), dtype=np.uint8)
    host.ram.mem[:] = bytes(MEM_SIZE)
    host.ram.clear_error_ranges()
    for start, end, kind in bus_errors:
        host.ram.add_error_range(start, end, kind.upper())
    golden = IsaSimulator(CONFIG).run(golden_dram, prog_addr=prog_addr, prog_len=prog_len, bus_errors=bus_errors)
    result = await host.run(image, prog_addr=prog_addr, prog_len=prog_len, max_cycles=max_cycles)
    got = bytes(host.ram.mem)
    want = golden_dram.tobytes()
    assert result.error == int(golden.error), (
        f"SEED={SEED} {what}: error code RTL {result.error} ({ErrorCode(result.error).name}) vs golden "
        f"{int(golden.error)} ({ErrorCode(golden.error).name})")
    if golden.error != ErrorCode.NONE:
        assert result.error_index == golden.error_index, (
            f"SEED={SEED} {what}: ERROR_INDEX RTL {result.error_index} vs golden {golden.error_index}")
    assert got == want, f"SEED={SEED} {what}: DRAM differs from the golden simulator; {first_difference(got, want)}"
    return result, golden


def random_gemm(rng):
    m, k, n = (int(rng.integers(1, MAX_DIM + 1)) for _ in range(3))
    a = rng.integers(-128, 128, size=(m, k))
    w = rng.integers(-128, 128, size=(k, n))
    bias = rng.integers(INT32_MIN, INT32_MAX, size=n, endpoint=True)
    mult = rng.integers(INT32_MIN, INT32_MAX, size=n, endpoint=True)
    shift = rng.integers(-31, 32, size=n)
    zp = int(rng.integers(-128, 128))
    lo, hi = sorted(int(v) for v in rng.integers(-128, 128, size=2))
    raw = bool(rng.integers(0, 4) == 0)
    return a, w, bias, mult, shift, zp, lo, hi, raw


@cocotb.test()
async def configuration_registers(dut):
    """The read-only registers describe the hardware, so a driver can discover it."""
    host = AcceleratorHost(dut, mem_size=MEM_SIZE, seed=SEED)
    await host.reset()
    got = await host.read_config()
    want = {"version": 0x0001_0000, "rows": CONFIG.rows, "cols": CONFIG.cols, "act_depth": CONFIG.act_depth,
            "wgt_depth": CONFIG.wgt_depth, "acc_depth": CONFIG.acc_depth, "param_depth": CONFIG.param_depth,
            "bus_bytes": CONFIG.bus_bytes}
    assert got == want, f"configuration registers {got} != {want}"


@cocotb.test()
async def random_gemm_programs(dut):
    """Random tiled GEMM programs at random DRAM placements: DRAM equal to the golden simulator byte for byte."""
    host = AcceleratorHost(dut, mem_size=MEM_SIZE, seed=SEED)
    await host.reset()
    rng = np.random.default_rng(SEED)
    for case in range(CASES):
        a, w, bias, mult, shift, zp, lo, hi, raw = random_gemm(rng)
        prog = gemm_program(a, w, bias, mult, shift, zp, lo, hi, raw, config=CONFIG, rng=rng)
        result, _ = await run_and_compare(host, prog.dram.tobytes(), prog_addr=prog.prog_addr,
                                          prog_len=prog.prog_len, what=f"case {case} (M,K,N)={a.shape + w.shape[1:]}")
        dut._log.info("case %d: M,K,N=%s raw=%s: %d instructions, counters %s", case, a.shape + w.shape[1:], raw,
                      len(prog.program), result.counters)


def _image(program, *, prog_addr=0x100, data=()):
    image = bytearray(MEM_SIZE)
    blob = to_bytes(program)
    image[prog_addr:prog_addr + len(blob)] = blob
    for addr, payload in data:
        image[addr:addr + len(payload)] = payload
    return image


@cocotb.test()
async def directed_errors(dut):
    """Each error code: the RTL stops with the golden code, index and DRAM image, and the next START works."""
    host = AcceleratorHost(dut, mem_size=MEM_SIZE, seed=SEED)
    await host.reset()
    rng = np.random.default_rng(SEED + 100)
    payload = bytes(rng.integers(0, 256, size=512, dtype=np.uint8))
    params = bytes(rng.integers(0, 256, size=9 * CONFIG.cols + 3, dtype=np.uint8))
    good = [
        Load(buffer=Buffer.PARAM, buf_addr=0, y_size=1, x_size=9 * CONFIG.cols + 3, dram_addr=0x3000),
        Load(buffer=Buffer.WGT, buf_addr=0, y_size=CONFIG.rows, x_size=CONFIG.cols, stride=CONFIG.cols,
             dram_addr=0x2000),
        Load(buffer=Buffer.ACT, buf_addr=0, y_size=3, x_size=CONFIG.rows, stride=CONFIG.rows, dram_addr=0x2100,
             push_next=True),
        Matmul(act_addr=0, wgt_addr=0, acc_addr=0, count=3, k_rows=CONFIG.rows, pop_prev=True, push_next=True),
        Store(acc_addr=0, count=3, param_addr=0, n_cols=CONFIG.cols, stride=CONFIG.cols, dram_addr=0x4000,
              pop_prev=True),
    ]
    data = [(0x2000, payload), (0x3000, params)]
    illegal_word = encode(Halt()) | (1 << 100)  # HALT with a reserved bit set
    cases = {
        "illegal opcode": (good[:3] + [6] + good[3:] + [Halt()], ()),
        "reserved bits": (good + [illegal_word, Halt()], ()),
        "out of range": (good + [Load(buffer=Buffer.ACT, buf_addr=CONFIG.act_depth - 1, y_size=2, x_size=1),
                                 Halt()], ()),
        "token deadlock": (good + [Matmul(count=1, k_rows=1, pop_prev=True), Halt()], ()),
        "token overflow": (good + [Sync(unit=Unit.LOAD, push_next=True)] * 256 + [Halt()], ()),
        "program overrun": (good, ()),
        "bus error on fetch": (good + [Halt()], [(0x100 + 16 * 4, 0x100 + 16 * 5, "slverr")]),
        # Error ranges are whole bus words: the RAM model answers per beat.
        "bus error on load": (good + [Halt()], [(0x2100, 0x2108, "decerr")]),
        "bus error on store": (good + [Halt()], [(0x4000, 0x4008, "slverr")]),
    }
    for what, (program, bus_errors) in cases.items():
        words = [p if isinstance(p, int) else encode(p) for p in program]
        image = _image(words, data=data)
        result, golden = await run_and_compare(host, image, prog_addr=0x100, prog_len=len(words),
                                               bus_errors=bus_errors, what=what)
        assert golden.error != ErrorCode.NONE, f"{what}: the golden simulator saw no error"
        dut._log.info("%s: %s at instruction %d (as golden)", what, ErrorCode(result.error).name, result.error_index)
        # The accelerator recovers: the same program without the fault runs cleanly.
        result, golden = await run_and_compare(host, _image(good + [Halt()], data=data), prog_addr=0x100,
                                               prog_len=len(good) + 1, what=f"after {what}")
        assert result.error == 0


@cocotb.test()
async def loads_overlap_compute(dut):
    """On a long GEMM the LOAD and COMPUTE units are busy at the same time (busy counters add up to more than the
    elapsed cycles)."""
    host = AcceleratorHost(dut, mem_size=MEM_SIZE, seed=SEED, latency=(2, 6), stall_prob=0.1)
    await host.reset()
    rng = np.random.default_rng(SEED + 200)
    m, k, n = 6 * CONFIG.rows, 6 * CONFIG.rows, 3 * CONFIG.cols
    a = rng.integers(-128, 128, size=(m, k))
    w = rng.integers(-128, 128, size=(k, n))
    prog = gemm_program(a, w, np.zeros(n, dtype=np.int64), np.full(n, 1 << 30), np.full(n, -8), 0, -128, 127, False,
                        config=CONFIG)
    result, _ = await run_and_compare(host, prog.dram.tobytes(), prog_addr=prog.prog_addr, prog_len=prog.prog_len,
                                      what="long GEMM")
    c = result.counters
    dut._log.info("counters: %s", c)
    assert c["load_busy"] > 0 and c["compute_busy"] > 0 and c["store_busy"] > 0
    assert c["load_busy"] + c["compute_busy"] > c["cycles"], (
        f"LOAD and COMPUTE never overlapped: load_busy {c['load_busy']} + compute_busy {c['compute_busy']} <= "
        f"cycles {c['cycles']}")
    assert c["vectors"] > 0 and c["instructions"] == prog.prog_len - 1  # every instruction but the HALT
