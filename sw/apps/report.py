"""What ``systolic8 run`` and ``make mnist`` show: the progress bar, the summary and the per-layer plot."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["Progress", "summary", "plot_layers", "write_plot"]


class Progress:
    """A one-line progress bar on stderr: inputs done, inputs/s and simulated cycles/s."""

    def __init__(self, total, label, stream=None, noun="images"):
        self.total, self.label, self.noun = total, label, noun
        self.stream = stream if stream is not None else sys.stderr
        self.start = time.perf_counter()
        self.tty = self.stream.isatty()

    def __call__(self, done, total, cycles):
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        width = 30
        filled = int(width * done / max(total, 1))
        line = (f"{self.label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total} {self.noun}  "
                f"{done / elapsed:7.1f} {'img' if self.noun == 'images' else 'inf'}/s")
        if cycles:
            line += f"  {cycles / elapsed / 1e6:6.2f} M sim cycles/s"
        self.stream.write(("\r" if self.tty else "") + line + ("" if self.tty else "\n"))
        self.stream.flush()

    def close(self):
        if self.tty:
            self.stream.write("\n")


def _cycles_source(report) -> str:
    return "cycle model" if report["backend"] == "model" else "RTL"


def summary(report) -> str:
    """The summary printed after a run (``make mnist``'s format; a model's own name and inputs otherwise)."""
    title, noun = report.get("title", "MNIST"), report.get("noun", "test images")
    unit = "image" if "image" in noun else "inference"
    acc = report.get("accuracy")
    lines = [f"{title}: {report['images']} {noun} on {report.get('backend_label', report['backend'])} "
             f"({report['rows']}x{report['cols']} array, batch {report['batch']}"
             + (f", {report['workers']} workers" if report.get("workers", 1) > 1 else "") + ")"]
    if acc:
        parts = ([f"float {100 * acc['float']:.2f}%"] if acc.get("float") is not None else []) + \
                [f"int8 CPU {100 * acc['int8_cpu']:.2f}%", f"int8 {report['backend']} {100 * acc['int8_backend']:.2f}%"]
        lines.append("  accuracy: " + "  ".join(parts))
    what = "images" if "image" in noun else "inputs"
    lines.append(f"  mismatches vs the CPU int8 path: {report['mismatches']} {what}")
    ref = report.get("reference")
    if ref:
        line = (f"  vs {ref['runtime']}: {ref['mismatched_elements']:,} of {ref['elements']:,} output elements "
                f"differ" + (f" (largest difference {ref['max_abs_diff']})" if ref["mismatched_elements"] else ""))
        if not ref.get("exact", True):
            line += (f"; {ref.get('beyond_1_lsb', 0):,} by more than 1 LSB (its float requantization rounds "
                     f"otherwise); top-1 identical on {100 * ref.get('top1_identical', 1):.1f}%")
        lines.append(line)
    if report["cycles_per_image"]:
        lines.append(f"  cycles per {unit}: {report['cycles_per_image']:,.0f}  "
                     f"(ideal {report['macs_per_image'] / (report['rows'] * report['cols']):,.0f}; "
                     f"PE utilization {100 * report['utilization']:.1f}%)")
        host = [layer for layer in report.get("host_layers", []) if layer["macs"]]
        if not host and all(len(layer["name"]) <= 8 for layer in report["layers"]):
            # make mnist's table, as it has always been
            lines.append(f"  {'layer':<8}{'MACs/img':>12}{'cycles/img':>12}{'util':>8}")
            for layer in report["layers"]:
                lines.append(f"  {layer['name']:<8}{layer['macs'] / report['images']:>12,.0f}"
                             f"{layer['cycles'] / report['images']:>12,.0f}{100 * layer['utilization']:>7.1f}%")
        else:
            lines.extend(_layer_table(report, unit))
        share = report.get("accelerator_mac_share")
        if host and share is not None:
            lines.append(f"  MACs on the accelerator: {100 * share:.1f}% (the rest on the host int8 kernels)")
    if report["backend"] == "model":
        lines.append(f"  wall {report['backend_wall_s']:.1f} s: logits from the CPU int8 path, cycles from the exact "
                     f"cycle model (sim/cycle_model.py), equal to the verilator backend's counters")
    else:
        lines.append(f"  wall {report['backend_wall_s']:.1f} s on the backend: {report['images_per_s']:.1f} "
                     f"{what}/s" + (f", {report['sim_cycles_per_s'] / 1e6:.2f} M simulated cycles/s"
                                    if report["sim_cycles_per_s"] else ""))
    if report.get("host_fraction") is not None and report["backend"] not in ("cpu", "model"):
        lines.append(f"  host Python (lowering, read-back, pooling): {100 * report['host_fraction']:.0f}% of the "
                     f"workers' busy time")
    return "\n".join(lines)


def _layer_table(report, unit) -> list[str]:
    """Every layer with MACs in graph order: where it ran, MACs, cycles and utilization per input."""
    n = report["images"]
    by_name = {layer["name"]: layer for layer in report["layers"]}
    by_name.update({layer["name"]: {**layer, "host": True} for layer in report.get("host_layers", [])})
    names = [name for name in report.get("order", list(by_name)) if by_name[name]["macs"]]
    short = "img" if unit == "image" else "inf"
    width = max([len("layer")] + [len(name) for name in names])
    lines = [f"  {'layer':<{width}}  {'runs on':<11}{'MACs/' + short:>12}{'cycles/' + short:>12}{'util':>8}"]
    for name in names:
        layer = by_name[name]
        if layer.get("host"):
            lines.append(f"  {name:<{width}}  {'host':<11}{layer['macs'] / n:>12,.0f}")
        else:
            lines.append(f"  {name:<{width}}  {'accelerator':<11}{layer['macs'] / n:>12,.0f}"
                         f"{layer['cycles'] / n:>12,.0f}{100 * layer['utilization']:>7.1f}%")
    return lines


def plot_layers(report, path) -> None:
    """Per-layer cycles per input against the ideal ``MACs / (rows x cols)``, log scale, each bar labelled."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    layers = [layer for layer in report["layers"] if layer["cycles"]]
    n = report["images"]
    names = [layer["name"] for layer in layers]
    x = np.arange(len(layers))
    measured = [layer["cycles"] / n for layer in layers]
    ideal = [layer["ideal_cycles"] / n for layer in layers]
    source = _cycles_source(report)
    fig, ax = plt.subplots(figsize=(max(7, 0.9 * len(layers) + 2), 4.5))
    per = "image" if "image" in report.get("noun", "image") else "inference"
    label = (f"exact cycle model: cycles / {per}" if source == "cycle model"
             else f"RTL cycles / {per} (hardware counters)")
    bars = ax.bar(x - 0.2, measured, 0.4, label=label)
    ax.bar(x + 0.2, ideal, 0.4, label=f"ideal: MACs / ({report['rows']}x{report['cols']} PEs)")
    for i, (bar, layer) in enumerate(zip(bars, layers)):
        ax.annotate(f"{measured[i]:,.0f}\n{100 * layer['utilization']:.0f}% util.", (bar.get_x() + bar.get_width() / 2,
                    bar.get_height()), ha="center", va="bottom", fontsize=7, xytext=(0, 2), textcoords="offset points")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    top = max(measured + ideal) if layers else 1
    ax.set_ylim(bottom=max(min(ideal + measured) / 3, 0.5) if layers else 1, top=top * 25)
    ax.set_xticks(x, names, rotation=30 if len(names) > 6 else 0, ha="right" if len(names) > 6 else "center")
    ax.set_ylabel("cycles per input (log scale)")
    ax.set_title(f"{report.get('title', 'MNIST')} on a {report['rows']}x{report['cols']} array "
                 f"({report.get('backend_label', report['backend'])}); labels: PE utilization = MACs / "
                 f"(cycles x PEs)", fontsize=9)
    ax.legend(fontsize=8, loc="upper center", ncol=2, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_plot(report, report_path: Path) -> str:
    """Draw the plot beside the JSON report, or remove a previous run's PNG when this backend counts no cycles.

    Returns what happened, for the last line of the output.
    """
    png = Path(report_path).with_suffix(".png")
    if report["cycles_per_image"]:
        plot_layers(report, png)
        return f" and {png}"
    if png.exists():
        png.unlink()
        return f" (no cycles on the {report['backend']} backend: no plot; removed the previous {png})"
    return ""
