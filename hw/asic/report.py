"""ASIC reports for people: one configuration as a table, and the scaling study (JSON, CSV, Markdown, PNG).

``run_scaling("2,4,8,16")`` runs :func:`hw.asic.flow.synthesize` for each array size (and, with
``standalone_blocks=True``, the PE, the array and the epilogue of that size on their own, for their Fmax) and writes
``build/reports/scaling-asic-<lib>.{json,csv,md,png}`` beside the FPGA study's ``scaling-<target>.*``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from ..fpga.report import parse_sizes
from .flow import BLOCKS, synthesize
from .liberty import DEFAULT_LIBRARY

__all__ = ["format_report", "run_scaling", "write_scaling", "format_scaling", "scaling_markdown",
           "ASIC_SCALING_COLUMNS", "STANDALONE_BLOCKS"]

#: Blocks synthesized on their own in a study with ``standalone_blocks=True`` (as the engine of that size builds
#: each).
STANDALONE_BLOCKS = ("pe", "array", "epilogue")
_BLOCK_NAMES = [b for b, _ in BLOCKS]

ASIC_SCALING_COLUMNS = (
    "rows", "cols", "area_um2", "logic_area_um2", "flop_area_um2", "memory_macro_bits", "memory_flop_bits",
    "memory_sram_area_um2", "memory_as_flops_area_um2", "cells", "flops", "fmax_mhz", "critical_start",
    "critical_end", "critical_delay_ns", "critical_through_memory", "reg_fmax_mhz",
    *[f"area_{b}_um2" for b in _BLOCK_NAMES], "area_per_pe_um2",
    *[f"fmax_{b}_mhz" for b in STANDALONE_BLOCKS], *[f"fmax_in_design_{b}_mhz" for b in _BLOCK_NAMES],
    "fmax_in_design_memories_mhz", "wall_time_s", "blocks_wall_time_s", "report",
)


def _um2(value) -> str:
    return f"{value:,.0f}"


def format_report(report: dict) -> str:
    """What ``python -m hw.asic`` prints for one configuration."""
    head = (f"{report['rows']}x{report['cols']} {report['design']}, {report['library']} "
            f"({report['library_description']})")
    lines = [head, "-" * len(head)]
    area, logic, flop = report["area_um2"], report["logic_area_um2"], report["flop_area_um2"]
    lines.append(f"standard cells  {_um2(area)} um^2 ({_um2(logic)} logic + {_um2(flop)} flops), "
                 f"{report['cells']:,} cells, {report['flops']:,} flops")
    lines.append("cells by kind   " + ", ".join(f"{k} {v:,}" for k, v in
                                               sorted(report["cells_by_kind"].items(), key=lambda kv: -kv[1])))
    if len(report["blocks"]) > 1:
        lines.append(f"{'block':10} {'area um^2':>12} {'cells':>9} {'flops':>8}")
        for name, b in report["blocks"].items():
            per = f"  ({b['instances']} x {_um2(b['area_um2'] / b['instances'])})" if name == "pe" else ""
            lines.append(f"{name:10} {_um2(b['area_um2']):>12} {b['cells']:>9,} {b['flops']:>8,}{per}")
    mem = report["memories"]
    macros = [m for m in mem["list"] if m["implementation"] == "macro"]
    if macros:
        lines.append(f"memories as SRAM macros ({mem['macro_bits']:,} bits; not in the area above):")
        for m in macros:
            lines.append(f"  {m['name']:28} {m['depth']:>5} x {m['width']:<4} {m['bits']:>8,} bits  "
                         f"as SRAM {_um2(m['sram_macro_area_um2'])} um^2, as {mem['flop_cell']} "
                         f"{_um2(m['flop_area_um2'])} um^2")
        lines.append(f"  SRAM at {mem['sram_macro_um2_per_bit']} um^2 a bit ({mem['sram_macro_source']}); "
                     f"assumed interface: access {mem['timing']['access_ns']} ns, setup {mem['timing']['setup_ns']} ns")
    if mem["flop_bits"]:
        lines.append(f"memories as flops: {mem['flop_bits']:,} bits (FIFOs; in the standard-cell area)")
    path = report["critical_path"]
    status = "met" if report["timing_met"] else "not met"
    lines.append(f"Fmax {report['fmax_mhz']:.1f} MHz (OpenSTA; constraint {report['constraint_mhz']:g} MHz {status}, "
                 f"I/O delay {report['io_delay_ns']:g} ns)")
    lines.append(f"critical path {path['delay_ns']:.3f} ns" + (" (through a memory macro)" if path["through_memory"]
                                                                else ""))
    for side, word in (("start", "from"), ("end", "to  ")):
        lines.append(f"  {word} {path.get(side + '_register', path[side])} [{path.get(side + '_block', '?')}] "
                     f"({path[side]}: {path[side + '_kind']})")
    reg = report.get("register_to_register_path")
    if reg and (reg["start"], reg["end"]) != (path["start"], path["end"]):
        lines.append(f"register to register: {reg['delay_ns']:.3f} ns ({reg['fmax_mhz']:.1f} MHz), "
                     f"{reg.get('start_register', reg['start'])} -> {reg.get('end_register', reg['end'])}")
    repair = report.get("fanout_repair")
    if repair and repair["buffers"]:
        lines.append(f"fanout repair: {repair['buffers']:,} {repair['buffer_cell']} on {repair['nets']:,} nets "
                     f"(largest fanout before: {repair['largest_fanout_before']:,}; at most {repair['max_fanout']} "
                     f"after)")
    resumed = report.get("resumed_stages_s") or {}
    again = f" ({', '.join(resumed)} from an earlier run: {report['run_time_s']:.0f} s in all)" if resumed else ""
    lines.append(f"wall time {report['wall_time_s']['total']:.1f} s{again}; report {report['report_path']}")
    return "\n".join(lines)


def _row(report: dict, standalone: dict) -> dict:
    mem, path = report["memories"], report["critical_path"]
    reg = report.get("register_to_register_path") or {}
    row = {"rows": report["rows"], "cols": report["cols"], "area_um2": report["area_um2"],
           "logic_area_um2": report["logic_area_um2"], "flop_area_um2": report["flop_area_um2"],
           "memory_macro_bits": mem["macro_bits"], "memory_flop_bits": mem["flop_bits"],
           "memory_sram_area_um2": mem["macro_sram_area_um2"],
           "memory_as_flops_area_um2": mem["macro_flop_area_um2"],
           "cells": report["cells"], "flops": report["flops"], "fmax_mhz": report["fmax_mhz"],
           "critical_start": path.get("start_register", path["start"]),
           "critical_end": path.get("end_register", path["end"]), "critical_delay_ns": path["delay_ns"],
           "critical_through_memory": path["through_memory"], "reg_fmax_mhz": reg.get("fmax_mhz"),
           "wall_time_s": report.get("run_time_s", report["wall_time_s"]["total"]),
           "report": report["report_path"]}
    # Without the by-block mapping (``blocks=False``) the report has the design as one block: no split to show.
    split = report["blocks"] if "yosys_blocks" in report.get("logs", {}) else {}
    for block in _BLOCK_NAMES:
        row[f"area_{block}_um2"] = split.get(block, {}).get("area_um2")
    pe = split.get("pe")
    row["area_per_pe_um2"] = round(pe["area_um2"] / pe["instances"], 2) if pe else None
    for block in STANDALONE_BLOCKS:
        row[f"fmax_{block}_mhz"] = standalone[block]["fmax_mhz"] if block in standalone else None
    for block in (*_BLOCK_NAMES, "memories"):
        row[f"fmax_in_design_{block}_mhz"] = (report.get("block_fmax") or {}).get(block, {}).get("fmax_mhz")
    row["blocks_wall_time_s"] = (round(sum(r.get("run_time_s", r["wall_time_s"]["total"])
                                           for r in standalone.values()), 2)
                                 if standalone else None)
    return row


def run_scaling(sizes, *, standalone_blocks: bool = False, library: str = DEFAULT_LIBRARY, build_dir="build",
                log=None, design: str = "accelerator", **synth_kwargs) -> dict:
    """Synthesize every size (and with ``standalone_blocks`` its PE, array and epilogue alone); write the study."""
    if design != "accelerator":
        raise ValueError("The ASIC scaling study synthesizes the accelerator (its blocks with --blocks), not "
                         f"{design!r}")
    if isinstance(sizes, str):
        sizes = parse_sizes(sizes)
    rows = []
    for r, c in sizes:
        report = synthesize(design="accelerator", rows=r, cols=c, library=library, build_dir=build_dir, log=log,
                            **synth_kwargs)
        standalone = {}
        if standalone_blocks:
            for block in STANDALONE_BLOCKS:
                standalone[block] = synthesize(design=block, rows=r, cols=c, library=library, build_dir=build_dir,
                                               log=log, **synth_kwargs)
        rows.append(_row(report, standalone))
    paths = write_scaling(rows, library=library, out_dir=Path(build_dir) / "reports")
    return {"rows": rows, **paths}


def _cell(value, fmt="{:,.0f}"):
    if value is None:
        return "-"
    return fmt.format(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def scaling_markdown(rows: list[dict]) -> str:
    """The study as three Markdown tables: totals and timing per size; area per block and the blocks' Fmax alone;
    the Fmax of each block in the whole design (its worst endpoint in the accelerator's timing)."""
    out = ["| array | std-cell area um^2 | logic | flops | memory bits (macros) | as SRAM um^2 | "
           "as flops um^2 | cells | flops | Fmax MHz | critical path | run time s |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['rows']}x{r['cols']} | {_cell(r['area_um2'])} | {_cell(r['logic_area_um2'])} | "
                   f"{_cell(r['flop_area_um2'])} | {_cell(r['memory_macro_bits'])} | "
                   f"{_cell(r['memory_sram_area_um2'])} | {_cell(r['memory_as_flops_area_um2'])} | "
                   f"{_cell(r['cells'])} | {_cell(r['flops'])} | {_cell(r['fmax_mhz'], '{:.1f}')} | "
                   f"{r['critical_delay_ns']:.2f} ns, `{r['critical_start']}` -> `{r['critical_end']}` | "
                   f"{_cell(r['wall_time_s'], '{:.0f}')} |")
    out += ["", "| array | " + " | ".join(_BLOCK_NAMES) + " | per PE | Fmax PE / array / epilogue alone |",
            "|---|" + "---|" * (len(_BLOCK_NAMES) + 2)]
    for r in rows:
        alone = " / ".join(_cell(r[f"fmax_{b}_mhz"], "{:.1f}") for b in STANDALONE_BLOCKS)
        out.append(f"| {r['rows']}x{r['cols']} | " + " | ".join(_cell(r[f"area_{b}_um2"]) for b in _BLOCK_NAMES)
                   + f" | {_cell(r['area_per_pe_um2'])} | {alone} |")
    blocks = [*_BLOCK_NAMES, "memories"]
    out += ["", "| array | " + " | ".join(blocks) + " |", "|---|" + "---|" * len(blocks)]
    for r in rows:
        out.append(f"| {r['rows']}x{r['cols']} | "
                   + " | ".join(_cell(r[f"fmax_in_design_{b}_mhz"], "{:.1f}") for b in blocks) + " |")
    return "\n".join(out) + "\n"


def format_scaling(rows: list[dict]) -> str:
    head = f"{'size':>7} {'area um^2':>12} {'flops um^2':>11} {'mem bits':>9} {'cells':>9} {'flops':>8} {'Fmax MHz':>9}"
    lines = [head]
    for r in rows:
        lines.append(f"{r['rows']:>3}x{r['cols']:<3} {r['area_um2']:>12,.0f} {r['flop_area_um2']:>11,.0f} "
                     f"{r['memory_macro_bits']:>9,} {r['cells']:>9,} {r['flops']:>8,} {r['fmax_mhz']:>9.1f}")
    return "\n".join(lines)


def write_scaling(rows: list[dict], *, library: str, out_dir) -> dict:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"scaling-asic-{library}"
    paths = {k: stem.with_suffix(s) for k, s in (("json", ".json"), ("csv", ".csv"), ("png", ".png"),
                                                 ("markdown", ".md"))}
    paths["json"].write_text(json.dumps({"library": library, "columns": list(ASIC_SCALING_COLUMNS), "rows": rows},
                                        indent=2) + "\n")
    with paths["csv"].open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=ASIC_SCALING_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in ASIC_SCALING_COLUMNS})
    paths["markdown"].write_text(scaling_markdown(rows))
    _plot(rows, library=library, path=paths["png"])
    return {k: str(v) for k, v in paths.items()}


def _plot(rows, *, library, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['rows']}x{r['cols']}" for r in rows]
    x = list(range(len(rows)))
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    ax = axes[0]
    bottom = [0.0] * len(rows)
    for i, block in enumerate(_BLOCK_NAMES):
        values = [(r[f"area_{block}_um2"] or 0) / 1e6 for r in rows]
        ax.bar(x, values, bottom=bottom, label=block, color=f"C{i}")
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.set(title=f"Standard-cell area by block ({library}, hierarchy kept)", xlabel="array size", ylabel="mm^2")
    ax.legend(fontsize=8)
    ax = axes[1]
    ax.plot(x, [r["area_um2"] / 1e6 for r in rows], marker="o", label="standard cells (logic + flops)")
    ax.plot(x, [r["memory_sram_area_um2"] / 1e6 for r in rows], marker="s", linestyle="--",
            label="memories: as 180 nm SRAM macros (estimate)")
    ax.plot(x, [r["memory_as_flops_area_um2"] / 1e6 for r in rows], marker="^", linestyle=":",
            label="memories: as library flops (estimate)")
    ax.set_yscale("log")
    ax.set(title="Area: cells measured, memories estimated", xlabel="array size", ylabel="mm^2 (log)")
    ax.margins(y=0.25)
    ax.legend(fontsize=8, loc="lower right")
    ax = axes[2]
    ax.plot(x, [r["fmax_mhz"] or float("nan") for r in rows], marker="o", color="C4", label="accelerator")
    for i, block in enumerate(STANDALONE_BLOCKS):
        values = [r[f"fmax_{block}_mhz"] for r in rows]
        if any(v is not None for v in values):
            ax.plot(x, [v if v is not None else float("nan") for v in values], marker=".", linestyle="--",
                    color=f"C{5 + i}", label=f"{block} alone")
    ax.set(title="Fmax (OpenSTA, typical corner)", xlabel="array size", ylabel="MHz")
    ax.legend(fontsize=8)
    for ax in axes:
        ax.set_xticks(x, labels)
        ax.grid(alpha=0.3)
    fig.suptitle(f"accelerator ASIC scaling study, {library}")
    fig.tight_layout()
    fig.savefig(path, dpi=120, metadata={"Software": None})
    plt.close(fig)
