"""`make sim`: run every cocotb testbench on Icarus Verilog and Verilator and print a per-simulator summary.

Exit status is non-zero if any test failed, or if either simulator ran no test at all (a missing simulator is a
failure, never a skip).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from .cocotb_runner import SIMULATORS

ROOT = Path(__file__).resolve().parent.parent


def summarise(junit: Path) -> dict[str, dict[str, list[str]]]:
    summary = {sim: {"passed": [], "failed": [], "skipped": []} for sim in SIMULATORS}
    summary["other"] = {"passed": [], "failed": [], "skipped": []}
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        sim = next((s for s in SIMULATORS if s in case.get("name", "")), "other")
        if case.find("failure") is not None or case.find("error") is not None:
            outcome = "failed"
        elif case.find("skipped") is not None:
            outcome = "skipped"
        else:
            outcome = "passed"
        summary[sim][outcome].append(name)
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--workers", default="2", help="pytest-xdist workers (default 2)")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments")
    args = parser.parse_args(argv)
    build = ROOT / "build"
    build.mkdir(exist_ok=True)
    junit = build / "sim-junit.xml"
    start = time.monotonic()
    cmd = [sys.executable, "-m", "pytest", "-m", "cocotb", "-n", str(args.workers), f"--junitxml={junit}",
           str(ROOT / "tests"), *args.pytest_args]
    code = subprocess.call(cmd, cwd=ROOT)
    if not junit.exists():
        print("error: pytest produced no results", file=sys.stderr)
        return code or 1
    summary = summarise(junit)
    print(f"\ncocotb suite in {time.monotonic() - start:.0f} s")
    print(f"{'simulator':<12}{'passed':>8}{'failed':>8}{'skipped':>9}  verdict")
    bad = False
    for sim in SIMULATORS:
        s = summary[sim]
        ran = len(s["passed"]) + len(s["failed"])
        verdict = "PASS" if ran and not s["failed"] and not s["skipped"] else "FAIL"
        bad |= verdict == "FAIL"
        print(f"{sim:<12}{len(s['passed']):>8}{len(s['failed']):>8}{len(s['skipped']):>9}  {verdict}")
        for name in s["failed"] + s["skipped"]:
            print(f"    {'failed' if name in s['failed'] else 'skipped'}: {name}")
        if not ran:
            print(f"    no test ran on {sim}")
    return 1 if bad or code else 0


if __name__ == "__main__":
    sys.exit(main())
