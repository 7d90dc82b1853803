"""MLPerf Tiny on the accelerator: ``python -m sw.apps.tiny`` (``make tiny``).

For each of the two MLPerf Tiny int8 reference models shipped in ``models/mlperf-tiny`` (ResNet-8 on CIFAR-10, DS-CNN
keyword spotting) and each array size, seeded random int8 inputs go through the imported graph on a backend
(default: the RTL on Verilator), every output element is compared with LiteRT's reference kernels
(``OpResolverType.BUILTIN_REF``), and the report gives cycles per inference (the RTL's CYCLES counters, batch 1 by
default: MLPerf Tiny's single-stream latency), end-to-end PE utilization, the share of MACs that ran on the
accelerator, a per-layer table and the latency at the FPGA Fmax measured by the open flow
(:data:`sw.perf.MEASURED_FMAX_MHZ`). The data sets are not shipped, so accuracy is not measured; bit-exactness is.
Writes ``build/reports/tiny.json``; exits 1 on any mismatching element.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from hw.isa import HardwareConfig

ROOT = Path(__file__).resolve().parents[2]
MODELS_DIR = ROOT / "models" / "mlperf-tiny"
#: The MLPerf Tiny models: name -> (file, task).
MODELS = {
    "resnet8": ("resnet8_cifar10_int8.tflite", "image classification, CIFAR-10"),
    "dscnn": ("dscnn_kws_int8.tflite", "keyword spotting, Speech Commands"),
}
#: Array sizes reported by default: the two sizes placed and routed on the ECP5-85k (64-bit bus).
ARRAYS = ("8x8", "16x16")
REPORT = ROOT / "build" / "reports" / "tiny.json"


def array_config(spec: str, bus_bytes: int = 8) -> HardwareConfig:
    """The HardwareConfig of ``"RxC"`` with the default accelerator's buffers."""
    from sw.driver import DEFAULT_CONFIG
    try:
        rows, cols = (int(v) for v in spec.lower().split("x"))
    except ValueError:
        raise ValueError(f"array size must look like 8x8, not {spec!r}") from None
    return HardwareConfig(rows=rows, cols=cols, act_depth=DEFAULT_CONFIG.act_depth, wgt_depth=DEFAULT_CONFIG.wgt_depth,
                          acc_depth=DEFAULT_CONFIG.acc_depth, param_depth=DEFAULT_CONFIG.param_depth,
                          bus_bytes=bus_bytes)


def run_model(name: str, path: Path, *, arrays, backend: str, n: int, seed: int, batch: int, workers, bus_bytes: int,
              log=print) -> dict:
    """One model on every array: the report dict (see the module docstring)."""
    from sw.driver import Driver
    from sw.frontends import load_model
    from sw.frontends.tflite import reference_run
    from sw.perf import measured_fmax_mhz

    graph = load_model(path)
    x = np.random.default_rng(seed).integers(-128, 128, (n,) + graph.input.shape, dtype=np.int8)
    t0 = time.perf_counter()
    reference = reference_run(path, x).reshape(n, -1)
    ref_s = time.perf_counter() - t0
    macs = sum(graph.macs().values())
    out = {"model": name, "file": str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path),
           "task": MODELS.get(name, ("", ""))[1], "inputs": n, "seed": seed, "backend": backend, "batch": batch,
           "macs_per_inference": macs, "reference": "ai_edge_litert BUILTIN_REF", "reference_s": ref_s, "arrays": []}
    for spec in arrays:
        config = array_config(spec, bus_bytes)
        driver = Driver(graph, backend=backend, config=config, batch_size=batch, workers=workers)
        t0 = time.perf_counter()
        result = driver.run(x)
        wall = time.perf_counter() - t0
        mismatched = int((result.logits != reference).sum())
        cycles = result.cycles
        predicted = sum(driver.compiled.predicted_cycles(batch).values()) * (-(-n // batch))
        per_inf = cycles / n if cycles else None
        fmax = measured_fmax_mhz(config.rows, config.cols)
        layers = []
        for stats, step in zip(result.layers, driver.compiled.steps):
            layers.append({"name": stats.name, "op": step.kind, "target": stats.target,
                           "macs": stats.macs // n, "cycles": stats.cycles / n if stats.cycles else None,
                           "utilization": stats.utilization(config),
                           "raw_int32": step.raw})
        entry = {"array": spec, "rows": config.rows, "cols": config.cols, "bus_bytes": config.bus_bytes,
                 "mismatched_elements": mismatched, "elements": int(reference.size),
                 "cycles_per_inference": per_inf, "cycle_model_cycles_per_inference": predicted / n,
                 "utilization": result.utilization(), "accelerator_mac_share": result.accelerator_share,
                 "fmax_mhz": fmax, "latency_ms": (per_inf / (fmax * 1e3)) if (per_inf and fmax) else None,
                 "wall_s": wall, "workers": driver.workers, "note": result.note, "layers": layers}
        out["arrays"].append(entry)
        log(f"  {spec}: {mismatched} mismatching elements of {reference.size}, "
            + (f"{per_inf:,.0f} cycles/inference" if per_inf else "no cycle counters on this backend")
            + f" ({wall:.1f} s)")
    return out


def format_report(report: dict) -> str:
    lines = []
    for m in report["models"]:
        lines.append(f"{m['model']} ({m['task']}): {m['macs_per_inference']:,} MACs/inference, {m['inputs']} seeded "
                     f"int8 inputs on {m['backend']}, batch {m['batch']}, every output element vs LiteRT BUILTIN_REF")
        if not m["arrays"]:
            continue
        lines.append(f"  {'array':<6} {'mismatches':>10} {'cycles/inf':>11} {'util':>6} {'MACs on accel':>13} "
                     f"{'Fmax':>9} {'latency':>9}")
        for a in m["arrays"]:
            cyc = f"{a['cycles_per_inference']:,.0f}" if a["cycles_per_inference"] else "-"
            util = f"{a['utilization']:.1%}" if a["utilization"] else "-"
            fmax = f"{a['fmax_mhz']} MHz" if a["fmax_mhz"] else "-"
            lat = f"{a['latency_ms']:.2f} ms" if a["latency_ms"] else "-"
            lines.append(f"  {a['array']:<6} {a['mismatched_elements']:>10} {cyc:>11} {util:>6} "
                         f"{a['accelerator_mac_share']:>13.1%} {fmax:>9} {lat:>9}")
        first = m["arrays"][0]
        lines.append(f"  per layer ({first['array']}):")
        lines.append(f"    {'layer':<22} {'op':<17} {'runs on':<11} {'MACs':>10} {'cycles':>9} {'util':>6}")
        for layer in first["layers"]:
            cyc = f"{layer['cycles']:,.0f}" if layer["cycles"] else "-"
            util = f"{layer['utilization']:.1%}" if layer["utilization"] else "-"
            lines.append(f"    {layer['name']:<22} {layer['op']:<17} {layer['target']:<11} {layer['macs']:>10,} "
                         f"{cyc:>9} {util:>6}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sw.apps.tiny", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated: " + ", ".join(MODELS))
    parser.add_argument("--arrays", default=",".join(ARRAYS), help="comma-separated array sizes (default 8x8,16x16)")
    parser.add_argument("--backend", default="verilator",
                        help="one or more (comma-separated) of cpu, golden, verilator, icarus, gpu, model")
    parser.add_argument("--n", type=int, default=16, help="seeded random inputs per model (default 16)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=1, help="inputs per accelerator run (default 1: latency)")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--bus-bytes", type=int, default=8, help="AXI data width in bytes (8: what make synth builds)")
    parser.add_argument("--out", type=Path, default=REPORT)
    args = parser.parse_args(argv)
    from sw.driver import BACKENDS
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    backends = [b.strip() for b in args.backend.split(",") if b.strip()]
    if not backends or any(b not in BACKENDS for b in backends):
        print(f"tiny: unknown backend in {args.backend!r}; choose from {', '.join(BACKENDS)}", file=sys.stderr)
        return 2
    unknown = [m for m in names if m not in MODELS]
    if unknown or args.n < 1 or args.batch < 1:
        print(f"tiny: unknown model(s) {unknown}; choose from {', '.join(MODELS)}" if unknown
              else "tiny: --n and --batch must be positive", file=sys.stderr)
        return 2
    try:
        arrays = [array_config(a.strip(), args.bus_bytes) and a.strip() for a in args.arrays.split(",") if a.strip()]
    except ValueError as exc:
        print(f"tiny: {exc}", file=sys.stderr)
        return 2
    report = {"models": [], "command": "python -m sw.apps.tiny " + " ".join(argv if argv is not None else sys.argv[1:])}
    try:
        for backend in backends:
            for name in names:
                print(f"{name}: {args.n} inputs on {backend} ({', '.join(arrays)}) ...", file=sys.stderr)
                report["models"].append(run_model(name, MODELS_DIR / MODELS[name][0], arrays=arrays,
                                                  backend=backend, n=args.n, seed=args.seed, batch=args.batch,
                                                  workers=args.workers, bus_bytes=args.bus_bytes,
                                                  log=lambda s: print(s, file=sys.stderr)))
    except (ImportError, RuntimeError, ValueError) as exc:
        print(f"tiny: {exc}", file=sys.stderr)
        return 2
    print(format_report(report))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    bad = sum(a["mismatched_elements"] for m in report["models"] for a in m["arrays"])
    if bad:
        print(f"tiny: {bad} output elements differ from LiteRT", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
