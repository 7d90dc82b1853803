"""The whole accelerator's generated Verilog under cocotb, on Icarus Verilog and Verilator (no skips)."""

from pathlib import Path

import pytest

from hw.generate import generate_accelerator
from sim.cocotb_runner import run_cocotb

pytestmark = pytest.mark.cocotb

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "build" / "cocotb"

CONFIGS = [
    # simulator, rows, cols, act_depth, wgt_depth, acc_depth, param_depth, cases, max_dim, seed
    ("icarus", 2, 2, 32, 32, 16, 4, 8, 10, 31),
    ("verilator", 4, 4, 64, 64, 32, 8, 12, 40, 41),
    ("verilator", 8, 8, 256, 256, 64, 8, 8, 70, 42),
]


@pytest.mark.parametrize("simulator,rows,cols,act_depth,wgt_depth,acc_depth,param_depth,cases,max_dim,seed",
                         CONFIGS, ids=[f"{c[0]}-{c[1]}x{c[2]}" for c in CONFIGS])
def test_accelerator(simulator, rows, cols, act_depth, wgt_depth, acc_depth, param_depth, cases, max_dim, seed):
    name = f"accelerator_{rows}x{cols}_{act_depth}_{wgt_depth}_{acc_depth}_{param_depth}"
    verilog, _ = generate_accelerator(rows=rows, cols=cols, act_depth=act_depth, wgt_depth=wgt_depth,
                                      acc_depth=acc_depth, param_depth=param_depth, out_dir=BUILD / name)
    run_cocotb(simulator, verilog=verilog, toplevel="accelerator",
               test_module=Path(__file__).with_name("cocotb_accelerator.py"), build_dir=BUILD / name / simulator,
               extra_env={"ROWS": rows, "COLS": cols, "ACT_DEPTH": act_depth, "WGT_DEPTH": wgt_depth,
                          "ACC_DEPTH": acc_depth, "PARAM_DEPTH": param_depth, "SEED": seed, "CASES": cases,
                          "MAX_DIM": max_dim})
