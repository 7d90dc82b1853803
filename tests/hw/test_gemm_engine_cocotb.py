"""The GEMM engine's generated Verilog under cocotb, on Icarus Verilog and Verilator (no skips: a missing
simulator fails the test with the install command)."""

from pathlib import Path

import pytest

from hw.generate import generate_engine
from sim.cocotb_runner import run_cocotb

pytestmark = pytest.mark.cocotb

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "build" / "cocotb"

# Icarus runs Amaranth's Verilog at ~2k cycles/s: small shapes there; the long random runs go to Verilator.
CONFIGS = [
    # simulator, rows, cols, acc_depth, cases, max_dim, prob, seed
    ("icarus", 2, 3, 32, 4, 9, 0.6, 11),
    ("icarus", 3, 2, 16, 4, 9, 0.8, 12),
    ("verilator", 4, 4, 64, 12, 100, 0.7, 21),
    ("verilator", 8, 8, 256, 10, 100, 0.8, 22),
    ("verilator", 16, 16, 128, 6, 70, 0.9, 23),
]


@pytest.mark.parametrize("simulator,rows,cols,acc_depth,cases,max_dim,prob,seed", CONFIGS,
                         ids=[f"{c[0]}-{c[1]}x{c[2]}" for c in CONFIGS])
def test_gemm_engine_random(simulator, rows, cols, acc_depth, cases, max_dim, prob, seed):
    verilog, _ = generate_engine(rows=rows, cols=cols, acc_depth=acc_depth,
                                 out_dir=BUILD / f"engine_{rows}x{cols}_{acc_depth}")
    run_cocotb(simulator, verilog=verilog, toplevel="gemm_engine", test_module=Path(__file__).with_name("cocotb_gemm_engine.py"),
               build_dir=BUILD / f"engine_{rows}x{cols}_{acc_depth}" / simulator,
               extra_env={"ROWS": rows, "COLS": cols, "ACC_DEPTH": acc_depth, "SEED": seed, "CASES": cases,
                          "MAX_DIM": max_dim, "PROB": prob})
