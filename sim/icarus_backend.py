"""The ``icarus`` backend: accelerator programs on the RTL under cocotb and Icarus Verilog.

Slow (a few thousand cycles per second) - it exists to cross-check the fast Verilator backend on a second
simulator. Each run is one cocotb simulation of :mod:`sim.cocotb_job`; the Verilog is generated once per
configuration (cached by :func:`hw.generate.generate_accelerator`) and compiled once by iverilog.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from hw.generate import generate_accelerator
from hw.isa import HardwareConfig

from .cocotb_runner import run_cocotb

__all__ = ["IcarusAccelerator"]

ROOT = Path(__file__).resolve().parent.parent


class IcarusAccelerator:
    def __init__(self, config: HardwareConfig, *, build_dir: Path | str | None = None):
        self.config = config
        name = (f"accelerator_{config.rows}x{config.cols}_{config.act_depth}_{config.wgt_depth}_"
                f"{config.acc_depth}_{config.param_depth}_{8 * config.bus_bytes}")
        self.build_dir = Path(build_dir) if build_dir else ROOT / "build" / "icarus" / name
        self.verilog, _ = generate_accelerator(rows=config.rows, cols=config.cols, act_depth=config.act_depth,
                                               wgt_depth=config.wgt_depth, acc_depth=config.acc_depth,
                                               param_depth=config.param_depth, data_width=8 * config.bus_bytes,
                                               out_dir=self.build_dir)

    def run(self, dram, prog_addr, prog_len, *, max_cycles=5_000_000):
        """Returns (final DRAM image, {"status", "error", "error_index", "counters"})."""
        with tempfile.TemporaryDirectory() as tmp:
            job, result = Path(tmp) / "job.npz", Path(tmp) / "result.npz"
            np.savez(job, dram=np.asarray(dram, dtype=np.uint8), prog_addr=prog_addr, prog_len=prog_len,
                     max_cycles=max_cycles)
            run_cocotb("icarus", verilog=self.verilog, toplevel="accelerator",
                       test_module=Path(__file__).with_name("cocotb_job.py"), build_dir=self.build_dir / "icarus",
                       extra_env={"JOB_FILE": job, "RESULT_FILE": result})
            with np.load(result, allow_pickle=False) as out:
                return out["dram"].copy(), json.loads(str(out["info"]))
