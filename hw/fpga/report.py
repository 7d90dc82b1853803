"""Reading synthesis reports: a printed table per configuration, and the scaling study (JSON + CSV + PNG).

``run_scaling([2, 4, 8, 16], target="ecp5-85k")`` synthesizes each size with :func:`hw.fpga.flow.synthesize` and
writes ``build/reports/scaling-<target>[-<design>].{json,csv,png}``: one row per size with resources, utilization,
Fmax and the critical path. A size that does not fit is a row with ``fits = false`` and the reason, not an abort.

Hook for the performance model: pass ``cycles_per_image``, a callable ``(rows, cols) -> cycles`` (e.g. MNIST cycles
per image from the RTL counters, :func:`sw.perf.mnist_cycles_per_image`); the table then gains ``cycles_per_image``
and ``images_per_s = Fmax / cycles`` columns, and the plot a throughput panel. If the callable has a
``macs_per_image`` attribute, ``macs_per_dsp_cycle`` (useful MACs per DSP block per cycle) is filled in too. On the command line: ``--cycles-per-image package.module:function``.
"""

from __future__ import annotations

import csv
import importlib
import json
import re
from pathlib import Path
from typing import Callable

from .flow import DEFAULT_DESIGN, FlowError, synthesize
from .targets import DEFAULT_TARGET, RESOURCE_KINDS, get_target

__all__ = ["format_table", "parse_sizes", "load_callable", "run_scaling", "write_scaling", "SCALING_COLUMNS"]

SCALING_COLUMNS = (
    "rows", "cols", "dsp_pes", "pe_multiplier", "router", "fits",
    *[f"{kind}{suffix}" for kind in RESOURCE_KINDS for suffix in ("", "_available", "_pct")],
    "fmax_mhz", "timing_met", "critical_start", "critical_end", "critical_delay_ns",
    "cycles_per_image", "images_per_s", "macs_per_dsp_cycle", "wall_time_s", "report", "error",
)


def format_table(report: dict) -> str:
    """A human-readable summary of one synthesis report (what ``python -m hw.fpga synth`` prints)."""
    dsp_pes = report.get("dsp_pes") or 0
    pes = f", {dsp_pes} of {report['rows'] * report['cols']} PE multipliers on DSP blocks" if dsp_pes else ""
    if report.get("pe_multiplier", "fabric") != "fabric":
        pes += f", {report['pe_multiplier']} PE multipliers"
    head = (f"{report['rows']}x{report['cols']} {report['design']} on {report['target']} "
            f"({report['device']}, {report['package']}{pes})")
    lines = [head, "-" * len(head), f"{'resource':34} {'used':>8} {'available':>10} {'util':>8}"]
    for kind in RESOURCE_KINDS:
        entry = report["resources"][kind]
        pct = "n/a" if entry["utilization_pct"] is None else f"{entry['utilization_pct']:.1f}%"
        lines.append(f"{entry['cell']:34} {entry['count']:>8} {entry['available']:>10} {pct:>8}")
    ring = report["pin_ring"]
    lines.append(f"(pin ring adds {ring['flops']} flops: {ring['input_bits']} input bits x2, "
                 f"{ring['output_bits']} output bits)")
    if report.get("fits", True) is None:
        lines.append(f"PLACE AND ROUTE DID NOT COMPLETE: {report['error']}")
    elif not report.get("fits", True):
        lines.append(f"DOES NOT FIT: {report['error']}")
    else:
        status = "met" if report["timing_met"] else "not met"
        lines.append(f"Fmax {report['fmax_mhz']:.2f} MHz (constraint {report['constraint_mhz']:g} MHz {status})")
        path = report.get("critical_path")
        if path:
            lines.append(f"critical path {path['delay_ns']:.2f} ns ({path['logic_ns']:.2f} logic + "
                         f"{path['routing_ns']:.2f} routing, {path['steps']} steps)")
            lines.append(f"  from {path['start_signal']}  [{', '.join(path['start_source']) or '?'}]")
            lines.append(f"  to   {path['end_signal']}  [{', '.join(path['end_source']) or '?'}]")
        limits = report.get("limited_by") or []
        if limits:
            lines.append("limited by:")
            lines += [f"  - {line}" for line in limits]
        lines.append(f"bitstream {report['bitstream'] or '(not packed)'}")
    ceilings = report.get("ceilings") or {}
    if ceilings:
        lines.append("hard-block ceilings on this target (probe designs, as Yosys maps the blocks): " + "; ".join(
            f"{c['what']} ({c['mapped_to']}) {c['fmax_mhz']:.1f} MHz" for c in ceilings.values()))
    lines.append(f"wall time {report['wall_time_s']['total']:.1f} s; report {report['report_path']}")
    return "\n".join(lines)


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """``"2,4,8x16"`` -> ``[(2, 2), (4, 4), (8, 16)]`` (a bare number is a square array)."""
    sizes = []
    for item in str(text).split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:x\s*(\d+)\s*)?", item)
        if not match or int(match[1]) == 0 or (match[2] is not None and int(match[2]) == 0):
            raise ValueError(f"Sizes must be a comma-separated list of positive N or RxC, not {text!r}")
        sizes.append((int(match[1]), int(match[2] or match[1])))
    return sizes


def load_callable(spec: str) -> Callable:
    """Import ``package.module:function``; a ValueError naming the spec if it cannot be found."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"Callable must be given as package.module:function, not {spec!r}")
    try:
        target = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"Cannot load {spec!r}: {exc}") from None
    if not callable(target):
        raise ValueError(f"{spec!r} is not callable")
    return target


def _row(report: dict, cycles_per_image) -> dict:
    row = {"rows": report["rows"], "cols": report["cols"], "dsp_pes": report.get("dsp_pes", 0),
           "pe_multiplier": report.get("pe_multiplier", "fabric"),
           "router": report.get("router"), "fits": report.get("fits", True)}
    for kind in RESOURCE_KINDS:
        entry = report["resources"][kind]
        row.update({kind: entry["count"], f"{kind}_available": entry["available"],
                    f"{kind}_pct": entry["utilization_pct"]})
    path = report.get("critical_path") or {}
    row.update(fmax_mhz=report.get("fmax_mhz"), timing_met=report.get("timing_met"),
               critical_start=path.get("start_signal"), critical_end=path.get("end_signal"),
               critical_delay_ns=path.get("delay_ns"), wall_time_s=report["wall_time_s"]["total"],
               report=report["report_path"], error=report.get("error"))
    cycles = cycles_per_image(report["rows"], report["cols"]) if cycles_per_image else None
    row["cycles_per_image"] = cycles
    row["images_per_s"] = (round(row["fmax_mhz"] * 1e6 / cycles, 1)
                           if cycles and row["fmax_mhz"] else None)
    # Useful MACs per DSP block per cycle, when the hook says how many MACs an image needs.
    macs = getattr(cycles_per_image, "macs_per_image", None)
    dsp = row.get("dsp")
    row["macs_per_dsp_cycle"] = round(macs / cycles / dsp, 3) if macs and cycles and dsp else None
    return row


def run_scaling(sizes, *, target: str = DEFAULT_TARGET, design: str = DEFAULT_DESIGN,
                cycles_per_image: Callable | None = None, build_dir="build", log=None, **synth_kwargs) -> dict:
    """Synthesize every ``(rows, cols)`` in ``sizes`` and write the study; returns ``{"rows", "json", "csv", "png"}``.

    ``synth_kwargs`` go to :func:`~hw.fpga.flow.synthesize` (``acc_depth``, ``freq_mhz``, ``seed``, ...).
    """
    get_target(target)
    if isinstance(sizes, str):
        sizes = parse_sizes(sizes)
    rows = []
    for r, c in sizes:
        try:
            report = synthesize(target=target, design=design, rows=r, cols=c, build_dir=build_dir, log=log,
                                **synth_kwargs)
        except FlowError as exc:
            # A size that does not fit, or whose place-and-route failed or ran out of time, is a row with the
            # reason; the study carries on. Errors before a report exists (a missing tool) still stop it.
            if getattr(exc, "report", None) is None:
                raise
            if log:
                log(str(exc).splitlines()[0])
            report = exc.report
        rows.append(_row(report, cycles_per_image))
    paths = write_scaling(rows, target=target, design=design, out_dir=Path(build_dir) / "reports")
    return {"rows": rows, **paths}


def write_scaling(rows: list[dict], *, target: str, design: str, out_dir) -> dict:
    """Write the study's JSON, CSV and PNG to ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / (f"scaling-{target}" if design == "accelerator" else f"scaling-{target}-{design}")
    json_path, csv_path, png_path = (stem.with_suffix(s) for s in (".json", ".csv", ".png"))
    json_path.write_text(json.dumps({"target": target, "design": design, "columns": list(SCALING_COLUMNS),
                                     "rows": rows}, indent=2) + "\n")
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=SCALING_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in SCALING_COLUMNS})
    _plot(rows, target=target, design=design, path=png_path)
    return {"json": str(json_path), "csv": str(csv_path), "png": str(png_path)}


def _plot(rows, *, target, design, path):
    import matplotlib
    matplotlib.use("Agg")  # no display; deterministic output
    import matplotlib.pyplot as plt

    labels = [f"{r['rows']}x{r['cols']}" + (f"\n{r['dsp_pes']} DSP PEs" if r.get("dsp_pes") else "") for r in rows]
    x = list(range(len(rows)))
    throughput = any(r.get("images_per_s") for r in rows)
    fig, axes = plt.subplots(1, 3 if throughput else 2, figsize=(13 if throughput else 9, 4))
    ax = axes[0]
    for kind in RESOURCE_KINDS:
        ax.plot(x, [r[f"{kind}_pct"] if r[f"{kind}_pct"] is not None else float("nan") for r in rows],
                marker="o", label=kind)
    ax.axhline(100, color="grey", linestyle="--", linewidth=0.8)
    ax.set(title=f"Utilization on {target}", xlabel="array size", ylabel="% of device")
    ax.legend()
    ax = axes[1]
    ax.plot(x, [r["fmax_mhz"] if r["fmax_mhz"] else float("nan") for r in rows], marker="o", color="C4")
    ax.set(title="Fmax (place-and-route)", xlabel="array size", ylabel="MHz")
    if throughput:
        ax = axes[2]
        ax.plot(x, [r["images_per_s"] or float("nan") for r in rows], marker="o", color="C5")
        ax.set(title="Images per second (Fmax / cycles per image)", xlabel="array size", ylabel="images/s")
    for ax in axes:
        ax.set_xticks(x, labels)
        ax.grid(alpha=0.3)
    for i, r in enumerate(rows):
        if not r["fits"]:
            axes[0].annotate("does not fit", (i, 100), textcoords="offset points", xytext=(0, 6), ha="center",
                             fontsize=8, color="red")
    fig.suptitle(f"{design} scaling study")
    fig.tight_layout()
    fig.savefig(path, dpi=120, metadata={"Software": None})
    plt.close(fig)
