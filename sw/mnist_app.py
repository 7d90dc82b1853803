"""`make mnist`: the quantized MNIST CNN through the accelerator's RTL (or another backend), checked image by image.

    python -m sw.mnist_app run [--backend verilator] [--n 200] [--rows 8 --cols 8] [--batch 32] [--workers 2]
    python -m sw.mnist_app quantize --float models/mnist_float.npz --out models/mnist_int8.npz

``run`` classifies the first N test images (the test set ships inside the package) on the chosen backend and on the
CPU int8 reference, counts the images whose int8 logits differ (``mismatches``, which must be 0), measures float,
CPU-int8 and backend accuracy, reads per-layer cycles from the hardware counters, prints a summary and writes
``build/reports/mnist.json`` and a PNG of per-layer cycles against the ideal ``MACs / (rows * cols)``. On the
Verilator backend ``--workers`` batches are simulated at once (default: one per core; see :mod:`sw.driver`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from hw.isa import HardwareConfig

from .driver import BACKENDS, DEFAULT_CONFIG, Driver
from .mnist import images_to_float, load_mnist
from .model_io import load_float, load_quantized, save_quantized
from .reference import float_forward

ROOT = Path(__file__).resolve().parent.parent
FLOAT_MODEL = ROOT / "models" / "mnist_float.npz"
INT8_MODEL = ROOT / "models" / "mnist_int8.npz"
REPORTS = ROOT / "build" / "reports"


class Progress:
    """A one-line progress bar on stderr: images, images/s and simulated cycles/s."""

    def __init__(self, total, label, stream=sys.stderr):
        self.total, self.label, self.stream = total, label, stream
        self.start = time.perf_counter()
        self.tty = stream.isatty()

    def __call__(self, done, total, cycles):
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        width = 30
        filled = int(width * done / max(total, 1))
        line = (f"{self.label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total} images  "
                f"{done / elapsed:7.1f} img/s")
        if cycles:
            line += f"  {cycles / elapsed / 1e6:6.2f} M sim cycles/s"
        self.stream.write(("\r" if self.tty else "") + line + ("" if self.tty else "\n"))
        self.stream.flush()

    def close(self):
        if self.tty:
            self.stream.write("\n")


def quantize_mnist(float_path=FLOAT_MODEL, out_path=INT8_MODEL, *, calibration=2000, method="minmax",
                   directory=None):
    """Post-training quantization of the float model, calibrated on the first training images."""
    from .quantize import quantize
    network, params = load_float(float_path)
    images, _ = load_mnist("train", directory=directory)
    qnet = quantize(network, params, images_to_float(images[:calibration]), method=method)
    save_quantized(out_path, qnet)
    return qnet


def plot_layers(report, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = [layer for layer in report["layers"] if layer["cycles"]]
    names = [layer["name"] for layer in layers]
    x = np.arange(len(layers))
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar(x - 0.2, [layer["cycles"] / report["images"] for layer in layers], 0.4, label="RTL cycles / image")
    ax.bar(x + 0.2, [layer["ideal_cycles"] / report["images"] for layer in layers], 0.4,
           label=f"ideal MACs / ({report['rows']}x{report['cols']})")
    for i, layer in enumerate(layers):
        ax.text(i, layer["cycles"] / report["images"], f"{100 * layer['utilization']:.0f}%", ha="center",
                va="bottom", fontsize=8)
    ax.set_xticks(x, names)
    ax.set_ylabel("cycles per image")
    ax.set_title(f"MNIST CNN on a {report['rows']}x{report['cols']} array ({report['backend']})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(backend="verilator", n=None, rows=8, cols=8, batch=32, model=INT8_MODEL, report_path=None,
        plot=True, quiet=False, workers=None, bus_bytes=None):
    if backend not in BACKENDS:
        raise SystemExit(f"error: unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    qnet = load_quantized(model)
    network, params = load_float(FLOAT_MODEL)
    images, labels = load_mnist("test")
    n = len(images) if n is None else min(n, len(images))
    images, labels = images[:n], labels[:n]
    config = HardwareConfig(rows=rows, cols=cols, act_depth=DEFAULT_CONFIG.act_depth,
                            wgt_depth=DEFAULT_CONFIG.wgt_depth, acc_depth=DEFAULT_CONFIG.acc_depth,
                            param_depth=DEFAULT_CONFIG.param_depth, bus_bytes=bus_bytes or DEFAULT_CONFIG.bus_bytes)
    start = time.perf_counter()
    float_pred = np.argmax(float_forward(network, params, images_to_float(images)), axis=1)
    cpu = Driver(qnet, backend="cpu", config=config).run(images)
    driver = Driver(qnet, backend=backend, config=config, batch_size=batch, workers=workers)
    if driver.note and not quiet:
        print(f"note: {driver.note}", file=sys.stderr)
    progress = None if quiet else Progress(n, backend)
    t0 = time.perf_counter()
    result = driver.run(images, progress=progress)
    backend_wall = time.perf_counter() - t0
    if progress is not None:
        progress.close()
    mismatched = np.flatnonzero(np.any(result.logits != cpu.logits, axis=1))
    layers = []
    for stats in result.layers:
        if stats.target != "accelerator":
            continue
        ideal = stats.macs / (config.rows * config.cols)
        layers.append({"name": stats.name, "kind": stats.kind, "macs": stats.macs, "cycles": stats.cycles,
                       "ideal_cycles": ideal, "utilization": stats.utilization(config),
                       "instructions": stats.instructions, "wall_s": round(stats.wall_s, 3),
                       "host_s": round(stats.host_s, 3), "sim_s": round(stats.sim_s, 3)})
    cycles = result.cycles
    report = {
        "images": n, "backend": backend, "rows": config.rows, "cols": config.cols,
        "bus_bytes": config.bus_bytes, "batch": batch,
        "workers": result.workers,
        "accuracy": {"float": float(np.mean(float_pred == labels)), "int8_cpu": float(np.mean(cpu.predictions == labels)),
                     "int8_backend": float(np.mean(result.predictions == labels))},
        "mismatches": int(mismatched.size),
        "mismatched_images": mismatched[:20].tolist(),
        "cycles_per_image": cycles / n if cycles else None,
        "macs_per_image": sum(layer["macs"] for layer in layers) / n,
        "utilization": (sum(layer["macs"] for layer in layers) / (cycles * config.rows * config.cols)
                        if cycles else None),
        "layers": layers,
        "wall_s": round(time.perf_counter() - start, 3),
        "backend_wall_s": round(backend_wall, 3),
        "images_per_s": n / backend_wall,
        "sim_cycles_per_s": cycles / backend_wall if cycles else None,
        # Host Python (lowering, reading back, pooling) as a share of the time the workers were busy.
        "host_fraction": _host_fraction(result.layers),
        "note": result.note,
    }
    report_path = Path(report_path) if report_path else REPORTS / "mnist.json"
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps(report, indent=2) + "\n")
    if plot and cycles:
        plot_layers(report, report_path.with_suffix(".png"))
    if not quiet:
        print(summary(report))
        print(f"wrote {report_path}" + (f" and {report_path.with_suffix('.png')}" if plot and cycles else ""))
    return report


def _host_fraction(layers) -> float | None:
    host = sum(layer.host_s for layer in layers)
    busy = host + sum(layer.sim_s for layer in layers)
    return host / busy if busy > 0 else None


def summary(report) -> str:
    acc = report["accuracy"]
    lines = [f"MNIST: {report['images']} test images on {report['backend']} "
             f"({report['rows']}x{report['cols']} array, batch {report['batch']}"
             + (f", {report['workers']} workers" if report.get("workers", 1) > 1 else "") + ")",
             f"  accuracy: float {100 * acc['float']:.2f}%  int8 CPU {100 * acc['int8_cpu']:.2f}%  "
             f"int8 {report['backend']} {100 * acc['int8_backend']:.2f}%",
             f"  mismatches vs the CPU int8 path: {report['mismatches']} images"]
    if report["cycles_per_image"]:
        lines.append(f"  cycles per image: {report['cycles_per_image']:,.0f}  "
                     f"(ideal {report['macs_per_image'] / (report['rows'] * report['cols']):,.0f}; "
                     f"PE utilization {100 * report['utilization']:.1f}%)")
        lines.append(f"  {'layer':<8}{'MACs/img':>12}{'cycles/img':>12}{'util':>8}")
        for layer in report["layers"]:
            lines.append(f"  {layer['name']:<8}{layer['macs'] / report['images']:>12,.0f}"
                         f"{layer['cycles'] / report['images']:>12,.0f}{100 * layer['utilization']:>7.1f}%")
    if report["backend"] == "model":
        lines.append(f"  wall {report['backend_wall_s']:.1f} s: logits from the CPU int8 path, cycles from the exact "
                     f"cycle model (sim/cycle_model.py), equal to the verilator backend's counters")
    else:
        lines.append(f"  wall {report['backend_wall_s']:.1f} s on the backend: {report['images_per_s']:.1f} images/s"
                     + (f", {report['sim_cycles_per_s'] / 1e6:.2f} M simulated cycles/s"
                        if report["sim_cycles_per_s"] else ""))
    if report.get("host_fraction") is not None and report["backend"] not in ("cpu", "model"):
        lines.append(f"  host Python (lowering, read-back, pooling): {100 * report['host_fraction']:.0f}% of the "
                     f"workers' busy time")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Quantized MNIST on the accelerator")
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="classify test images on a backend and compare with the CPU int8 path")
    r.add_argument("--backend", default=os.environ.get("BACKEND", "verilator"), choices=BACKENDS)
    r.add_argument("--n", type=int, default=None, help="number of test images (default: all 10,000)")
    r.add_argument("--rows", type=int, default=8)
    r.add_argument("--cols", type=int, default=8)
    r.add_argument("--bus-bytes", type=int, default=None, choices=(4, 8, 16, 32),
                   help="AXI data width in bytes (default 8; wider buses feed bigger arrays)")
    r.add_argument("--batch", type=int, default=32, help="images per accelerator run (one weight load each)")
    r.add_argument("--workers", "--jobs", "-j", dest="workers", type=int, default=None,
                   help="batches simulated at once on the verilator backend (default: one per core)")
    r.add_argument("--model", type=Path, default=INT8_MODEL)
    r.add_argument("--report", type=Path, default=None)
    r.add_argument("--no-plot", action="store_true")
    q = sub.add_parser("quantize", help="post-training quantization of the float model")
    q.add_argument("--float", dest="float_path", type=Path, default=FLOAT_MODEL)
    q.add_argument("--out", type=Path, default=INT8_MODEL)
    q.add_argument("--calibration", type=int, default=2000, help="training images used for calibration")
    q.add_argument("--method", choices=("minmax", "percentile"), default="minmax")
    q.add_argument("--mnist-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.command == "quantize":
        qnet = quantize_mnist(args.float_path, args.out, calibration=args.calibration, method=args.method,
                              directory=args.mnist_dir)
        print(f"wrote {args.out} ({len(qnet.layers)} layers, input scale {qnet.input_scale:.6g}, "
              f"zero point {qnet.input_zero_point})")
        return 0
    if args.workers is not None and args.workers < 1:
        parser.error(f"--workers must be a positive integer, not {args.workers}")
    report = run(backend=args.backend, n=args.n, rows=args.rows, cols=args.cols, batch=args.batch,
                 model=args.model, report_path=args.report, plot=not args.no_plot, workers=args.workers,
                 bus_bytes=args.bus_bytes)
    return 0 if report["mismatches"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
