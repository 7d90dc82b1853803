"""`make mnist`: the quantized MNIST CNN through the accelerator's RTL (or another backend), checked image by image.

    python -m sw.mnist_app run [--backend verilator] [--n 200] [--rows 8 --cols 8] [--batch 32] [--workers 2]
    python -m sw.mnist_app quantize --float models/mnist_float.npz --out build/models/mnist_int8.npz

``run`` is ``systolic8 run models/mnist_int8.npz --float-model models/mnist_float.npz --data mnist`` (see
:mod:`sw.apps.run`); the int8 model must be quantized from the shipped float model (the digest it records is
checked). It classifies the first N test images (the test set ships inside the package) on the chosen backend and on the
CPU int8 reference, counts the images whose int8 logits differ (``mismatches``, which must be 0), measures float,
CPU-int8 and backend accuracy, reads per-layer cycles from the hardware counters, prints a summary and writes
``build/reports/mnist.json`` and a PNG of per-layer cycles against the ideal ``MACs / (rows * cols)``. On the
Verilator backend ``--workers`` batches are simulated at once (default: one per core; see :mod:`sw.driver`).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .apps.cli import CliError
from .apps.report import Progress, plot_layers, summary  # noqa: F401  (kept importable from here)
from .driver import BACKENDS
from .mnist import images_to_float, load_mnist
from .model_io import load_float, save_quantized

ROOT = Path(__file__).resolve().parent.parent
FLOAT_MODEL = ROOT / "models" / "mnist_float.npz"
INT8_MODEL = ROOT / "models" / "mnist_int8.npz"
REPORTS = ROOT / "build" / "reports"


def quantize_mnist(float_path=FLOAT_MODEL, out_path=INT8_MODEL, *, calibration=2000, method="minmax",
                   directory=None):
    """Post-training quantization of the float model, calibrated on the first training images."""
    from .quantize import quantize
    network, params = load_float(float_path)
    images, _ = load_mnist("train", directory=directory)
    qnet = quantize(network, params, images_to_float(images[:calibration]), method=method)
    save_quantized(out_path, qnet)
    return qnet


def run(backend="verilator", n=None, rows=8, cols=8, batch=32, model=INT8_MODEL, report_path=None,
        plot=True, quiet=False, workers=None, bus_bytes=None):
    """``make mnist``: the first ``n`` shipped MNIST test images (default all) through ``backend``.

    The int8 ``model`` must have been quantized from the shipped float model (the digest it records is checked),
    so the float accuracy printed beside it is that of its own float model. Returns the report
    (:func:`sw.apps.run.run_model`); the hardware parameters are checked first, by name.
    """
    from .apps.model import open_model
    from .apps.options import hardware_config
    from .apps.run import run_model
    config = hardware_config(rows, cols, bus_bytes, batch=batch)
    if backend not in BACKENDS:
        raise CliError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    qmodel = open_model(model, float_path=FLOAT_MODEL)
    return run_model(qmodel, data="mnist", n=n, backend=backend, config=config, batch=batch, workers=workers,
                     report_path=report_path or REPORTS / "mnist.json", plot=plot, quiet=quiet, title="MNIST")


def main(argv=None):
    from .apps.cli import Parser, guarded
    parser = Parser(prog="python -m sw.mnist_app", description="Quantized MNIST on the accelerator "
                    "(`make mnist`; the general command is `systolic8 run`)")
    parser.add_argument("--debug", action="store_true", help="print the traceback of an error (default: one line)")
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="classify test images on a backend and compare with the CPU int8 path")
    r.add_argument("--backend", default=os.environ.get("BACKEND", "verilator"), choices=BACKENDS)
    r.add_argument("--n", type=int, default=None, help="number of test images (default: all 10,000)")
    r.add_argument("--rows", type=int, default=8)
    r.add_argument("--cols", type=int, default=8)
    r.add_argument("--bus-bytes", type=int, default=None,
                   help="AXI data width in bytes: 4, 8 or 16 (default 8; wider buses feed bigger arrays)")
    r.add_argument("--batch", type=int, default=32, help="images per accelerator run (one weight load each)")
    r.add_argument("--workers", "--jobs", "-j", dest="workers", type=int, default=None,
                   help="batches simulated at once on the verilator backend (default: one per core)")
    r.add_argument("--model", type=Path, default=INT8_MODEL,
                   help="an int8 model quantized from models/mnist_float.npz (default models/mnist_int8.npz)")
    r.add_argument("--report", type=Path, default=None)
    r.add_argument("--no-plot", action="store_true")
    q = sub.add_parser("quantize", help="post-training quantization of the float model")
    q.add_argument("--float", dest="float_path", type=Path, default=FLOAT_MODEL)
    q.add_argument("--out", type=Path, required=True, help="the int8 .npz to write")
    q.add_argument("--force", action="store_true", help="allow replacing a shipped model in models/")
    q.add_argument("--calibration", type=int, default=2000, help="training images used for calibration")
    q.add_argument("--method", choices=("minmax", "percentile"), default="minmax")
    q.add_argument("--mnist-dir", type=Path, default=None)
    for p in (r, q):
        p.add_argument("--debug", dest="debug_here", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    def command():
        if args.command == "quantize":
            from .apps.options import check_output
            check_output(args.out, force=args.force)
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

    return guarded(f"python -m sw.mnist_app {args.command}", command, debug=args.debug or args.debug_here)


if __name__ == "__main__":
    sys.exit(main())
