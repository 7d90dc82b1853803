"""``systolic8 run``: a model on data through a backend, checked against the int8 reference, with a report.

    systolic8 run models/mnist_int8.npz --data mnist --labels ... --backend verilator --n 300
    systolic8 run model.tflite --random 100 --seed 1 --backend golden --compare-reference

The data: ``--data`` an IDX file or folder (any data set: magic and shape checked), a ``.npy``/``.npz`` array
(read without pickle; shape and dtype checked against the model's input), or ``mnist`` for the MNIST test set that
ships with the toolkit; or ``--random N --seed S`` seeded random inputs. Labels (``--labels``, or those of the
data set) give accuracy.

Every run compares the backend's int8 outputs with the CPU int8 reference path element by element (``mismatches``
counts the inputs that differ; the exit status is 1 if any does); ``--compare-reference`` also runs the model's own
runtime (LiteRT's reference kernels for .tflite, onnxruntime for .onnx) and counts the output elements that differ.
The report (JSON, default ``build/reports/<model>.json``) and a PNG of the per-layer cycles go beside each other.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from .cli import CliError
from .options import add_calibration, add_hardware, calibration_of, check_count, hardware_config
from .report import Progress, summary, write_plot

__all__ = ["add_arguments", "run", "run_model", "REPORTS"]

ROOT = Path(__file__).resolve().parents[2]
REPORTS = ROOT / "build" / "reports"


def add_arguments(parser) -> None:
    from sw.driver import BACKENDS
    parser.add_argument("model", type=Path, help="the model: .tflite, .onnx or the toolkit's int8 .npz")
    source = parser.add_argument_group("data (one of --data and --random)")
    source.add_argument("--data", help="IDX file or folder, .npy/.npz array, or 'mnist' (the shipped test set)")
    source.add_argument("--labels", type=Path, default=None, help="labels (IDX, .npy, .npz) for accuracy")
    source.add_argument("--split", choices=("train", "test"), default=None,
                        help="which split of an IDX folder or of 'mnist' (default test)")
    source.add_argument("--random", type=int, default=None, metavar="N", help="N seeded random inputs")
    source.add_argument("--seed", type=int, default=0, help="seed of --random (default 0)")
    parser.add_argument("--backend", default="verilator", choices=BACKENDS, help="what runs it (default verilator)")
    parser.add_argument("--n", type=int, default=None, help="the first N inputs of the data (default all)")
    add_hardware(parser)
    parser.add_argument("--workers", "-j", type=int, default=None,
                        help="batches simulated at once on the verilator backend (default: one per core)")
    add_calibration(parser)
    parser.add_argument("--float-model", type=Path, default=None,
                        help="the float .npz an int8 .npz was quantized from (checked by the digest it records)")
    parser.add_argument("--compare-reference", action="store_true",
                        help="also run the model's own runtime (LiteRT / onnxruntime) and count differing elements")
    parser.add_argument("--report", type=Path, default=None, help="the JSON report (default build/reports/MODEL.json)")
    parser.add_argument("--no-plot", action="store_true", help="no PNG beside the report")
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no summary")


def run(args) -> int:
    config = hardware_config(args.rows, args.cols, args.bus_bytes, batch=args.batch)
    if args.workers is not None and not 1 <= args.workers <= 256:
        raise CliError(f"--workers (WORKERS) must be an integer from 1 to 256, not {args.workers}")
    if (args.data is None) == (args.random is None):
        raise CliError("give the inputs with exactly one of --data DATA (IDX, .npy/.npz, 'mnist') and --random N")
    if args.random is not None and args.labels is not None:
        raise CliError("--labels go with --data; random inputs have no labels")
    from .model import open_model
    model = open_model(args.model, float_path=args.float_model, calibration=calibration_of(args))
    report = run_model(model, data=args.data, labels=args.labels, split=args.split, random=args.random,
                       seed=args.seed, n=args.n, backend=args.backend, config=config, batch=args.batch,
                       workers=args.workers, compare_reference=args.compare_reference, report_path=args.report,
                       plot=not args.no_plot, quiet=args.quiet)
    return 1 if report["mismatches"] or reference_failed(report.get("reference")) else 0


def _inputs(model, data, labels, split, random, seed, n):
    from sw.datasets import load_data, random_inputs
    if random is not None:
        count = check_count("--random", random, None, "inputs")
        x = random_inputs(count, model.input_shape, model.random_dtype, seed)
        if n is not None:
            x = x[:check_count("--n", n, len(x), "inputs")]
        return x, None, f"{len(x)} random {model.random_dtype} inputs (seed {seed})", False
    dataset = load_data(data, labels=labels, split=split)
    count = check_count("--n (N)", n, len(dataset), "images" if str(data) == "mnist" else "inputs")
    x = model.fit(dataset.x[:count], dataset.source)
    y = None if dataset.labels is None else dataset.labels[:count]
    return x, y, dataset.source, str(data) == "mnist"


def _announce_icarus_work(driver, n, batch, what):
    """Icarus runs a few hundred cycles a second: say up front (from the exact cycle model) how long the run will
    take, and give the progress lines their whole-run ETA."""
    from sim.icarus_backend import expect_cycles

    sizes = [min(batch, n - b) for b in range(0, n, batch)]
    per_batch = {s: sum(driver.compiled.predicted_cycles(s).values()) for s in set(sizes)}
    expect_cycles(sum(per_batch[s] for s in sizes), what=what)


def run_model(model, *, data=None, labels=None, split=None, random=None, seed=0, n=None, backend="verilator",
              config=None, batch=32, workers=None, compare_reference=False, report_path=None, plot=True,
              quiet=False, title=None):
    """Run ``model`` (a :class:`sw.apps.model.Model`); print the summary, write the report; return it as a dict."""
    if config is None:
        config = hardware_config(8, 8)
    if compare_reference:
        model.check_reference()
    x, y, source, is_mnist = _inputs(model, data, labels, split, random, seed, n)
    n = len(x)
    noun = ("test images" if split in (None, "test") else "training images") if is_mnist else "inputs"
    title = title or ("MNIST" if is_mnist and model.name.startswith("mnist") else model.name)
    start = time.perf_counter()
    float_logits = model.float_logits(x) if y is not None else None
    cpu = model.driver("cpu", config).run(x)
    driver = model.driver(backend, config, batch_size=batch, workers=workers)
    if backend == "icarus" and not quiet:
        _announce_icarus_work(driver, n, batch, f"{n} {noun} on icarus")
    backend_label = backend
    if backend == "gpu" and getattr(getattr(driver, "_torch", None), "device", None) is not None \
            and driver._torch.device.type != "cuda":
        backend_label = "gpu (no CUDA: PyTorch on the CPU)"
    if driver.note and not quiet:
        print(f"note: {driver.note}", file=sys.stderr)
    progress = None if quiet else Progress(n, backend, noun="images" if is_mnist else "inputs")
    t0 = time.perf_counter()
    result = driver.run(x, progress=progress)
    backend_wall = time.perf_counter() - t0
    if progress is not None:
        progress.close()
    out, ref_out = _flat(result, n), _flat(cpu, n)
    mismatched = np.flatnonzero(np.any(out != ref_out, axis=1))
    layers, host_layers, order = [], [], []
    for stats in result.layers:
        order.append(stats.name)
        if stats.target != "accelerator":
            host_layers.append({"name": stats.name, "kind": stats.kind, "macs": stats.macs})
            continue
        layers.append({"name": stats.name, "kind": stats.kind, "macs": stats.macs, "cycles": stats.cycles,
                       "ideal_cycles": stats.macs / (config.rows * config.cols),
                       "utilization": stats.utilization(config),
                       "instructions": stats.instructions, "wall_s": round(stats.wall_s, 3),
                       "host_s": round(stats.host_s, 3), "sim_s": round(stats.sim_s, 3)})
    cycles = result.cycles
    acc_macs = sum(layer["macs"] for layer in layers)
    all_macs = acc_macs + sum(layer["macs"] for layer in host_layers)
    accuracy = None
    if y is not None:
        accuracy = {"float": None if float_logits is None else float(np.mean(np.argmax(float_logits, 1) == y)),
                    "int8_cpu": float(np.mean(cpu.predictions == y)),
                    "int8_backend": float(np.mean(result.predictions == y))}
    report = {
        "title": title, "noun": noun, "model": str(model.path), "data": source,
        "float_model": None if model.float_path is None else str(model.float_path),
        "images": n, "backend": backend, "backend_label": backend_label, "rows": config.rows, "cols": config.cols,
        "bus_bytes": config.bus_bytes, "batch": batch, "workers": result.workers,
        "accuracy": accuracy,
        "mismatches": int(mismatched.size),
        "mismatched_images": mismatched[:20].tolist(),
        "cycles_per_image": cycles / n if cycles else None,
        "macs_per_image": acc_macs / n,
        "accelerator_mac_share": acc_macs / all_macs if all_macs else None,
        "utilization": acc_macs / (cycles * config.rows * config.cols) if cycles else None,
        "layers": layers,
        "host_layers": host_layers,
        "order": order,
        "wall_s": None,
        "backend_wall_s": round(backend_wall, 3),
        "images_per_s": n / backend_wall,
        "sim_cycles_per_s": cycles / backend_wall if cycles else None,
        "host_fraction": _host_fraction(result.layers),
        "note": result.note,
    }
    if compare_reference:
        runtime, expected = model.reference(x)
        if isinstance(expected, dict):
            names = list(getattr(result, "outputs", {}) or expected)
            expected = np.concatenate([np.asarray(expected[k]).reshape(n, -1) for k in names], axis=1)
        expected = np.asarray(expected).reshape(n, -1)
        diff = np.abs(out.astype(np.int32) - expected.astype(np.int32))
        top1 = np.argmax(out[:, :result.logits.shape[1]].astype(np.int16), 1) == \
            np.argmax(expected[:, :result.logits.shape[1]].astype(np.int16), 1)
        report["reference"] = {"runtime": runtime, "elements": int(diff.size),
                               "mismatched_elements": int(np.count_nonzero(diff)),
                               "beyond_1_lsb": int(np.count_nonzero(diff > 1)),
                               "max_abs_diff": int(diff.max()) if diff.size else 0,
                               "top1_identical": float(np.mean(top1)),
                               "exact": model.kind != "onnx"}
    report["wall_s"] = round(time.perf_counter() - start, 3)
    report_path = Path(report_path) if report_path else REPORTS / f"{model.name}.json"
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps(report, indent=2) + "\n")
    plotted = write_plot(report, report_path) if plot else ""
    if not quiet:
        print(summary(report))
        print(f"wrote {report_path}{plotted}")
    return report


def _flat(inference, n) -> np.ndarray:
    """Every output of a run, flattened per sample and side by side (graph output order)."""
    outputs = getattr(inference, "outputs", None)
    if outputs:
        return np.concatenate([np.asarray(v).reshape(n, -1) for v in outputs.values()], axis=1)
    return inference.logits.reshape(n, -1)


def reference_failed(reference) -> bool:
    """Whether a ``--compare-reference`` result fails the run: any differing element against LiteRT, whose integer
    arithmetic the toolkit follows exactly. Against onnxruntime, which requantizes in float with round-half-even,
    the agreement is measured and reported (elements within 1 LSB, top-1), not required (docs/import.md)."""
    return bool(reference and reference.get("exact", True) and reference["mismatched_elements"])


def _host_fraction(layers) -> float | None:
    host = sum(layer.host_s for layer in layers)
    busy = host + sum(layer.sim_s for layer in layers)
    return host / busy if busy > 0 else None
