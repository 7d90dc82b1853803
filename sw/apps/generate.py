"""``systolic8 generate MODEL --config CHOSEN.json --out DIR``: everything a board bring-up needs for one point.

``DIR`` gets:

* ``accelerator_<R>x<C>.v`` and ``accelerator_<R>x<C>.json``: the Verilog and its parameters, register map, error
  codes and ports (:func:`hw.generate.generate_accelerator`);
* ``image.bin`` and ``memory_map.json``: one DRAM image holding every accelerator layer's program, weights and
  PARAM entries (bias, requantization, zero point, clamp) for batches of ``batch`` inputs, and where each layer's
  program, input matrix A, weights, parameters and output C lie (``image_base`` is the image's first byte);
* ``programs/<layer>.txt``: each program disassembled (docs/isa.md);
* ``driver.py``: the host-side driver (NumPy only; a memory-mapped AXI4-Lite window, :mod:`sw.apps.bundle_driver`)
  with a pluggable bus;
* ``report.json``: the point, predicted cycles and latency per layer and in all, resources (the fitted model, and
  place-and-route figures where the flow's cache has them) and Fmax;
* ``check.py``: runs the bundle's own ``driver.py`` on this exact image over a simulated bus - the Verilator model
  of the RTL (default) or the golden simulator - on a batch of inputs, and checks every output equals the CPU int8
  reference and the CYCLES of every layer equal the report's prediction (exit 0 only then). ``--check`` runs it.

``CHOSEN.json`` is a point as ``systolic8 explore`` writes it (``recommended.point`` of ``explore.json``, or the
whole ``explore.json``), or any JSON with ``rows`` and ``cols`` and optionally ``bus_bytes``, the depths,
``pe_multiplier``, ``dsp_pes`` and ``batch``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np

__all__ = ["SimulatedBus", "generate_bundle", "load_point", "add_arguments", "run", "main", "check_bundle"]

IMAGE_BASE = 0x1000
LAYER_ALIGN = 0x1000


def load_point(path):
    """The :class:`sw.apps.explore.Point` of a config JSON (see the module docstring)."""
    from .explore import Point
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"config file {path} not found") from None
    except ValueError as exc:
        raise ValueError(f"config file {path} is not JSON ({exc})") from None
    if isinstance(data, dict) and isinstance(data.get("recommended"), dict):
        data = data["recommended"]
    if isinstance(data, dict) and isinstance(data.get("point"), dict):
        data = data["point"]
    if not isinstance(data, dict) or "rows" not in data or "cols" not in data:
        raise ValueError(f"config file {path} has no 'rows' and 'cols' (write it with systolic8 explore, or "
                         f'{{"rows": 4, "cols": 4}})')
    known = {f.name for f in fields(Point)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"config file {path}: unknown field(s) {', '.join(sorted(unknown))}; known: "
                         f"{', '.join(sorted(known))}")
    point = Point(**data)
    point.config                 # noqa: B018 - validates nothing by itself; the Accelerator below does
    return point


def _layer_operands(compiled, step, batch):
    """The GEMM operands of an accelerator layer with a zero input (weights and parameters do not depend on it)."""
    x = np.zeros((batch, *step.input_shape), dtype=np.int8)
    return compiled.gemm_operands(step, x)


def _raw(step) -> bool:
    return bool(getattr(step, "raw", False))


def generate_bundle(model_path, point, out_dir, *, target="ecp5-85k", build_dir="build", say=None) -> dict:
    """Write the bundle (module docstring) for ``point`` and the model at ``model_path``; return its manifest."""
    from hw.generate import generate_accelerator
    from sim.isa_sim import IsaSimulator  # noqa: F401 - the disassembler's package must import
    from sim.programs import gemm_program

    from .explore import compile_model, fmax_estimate, measured_fmax
    say = say or (lambda line: None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    from hw.accelerator import Accelerator
    Accelerator(**{k: v for k, v in point.accelerator_params.items()})   # validates the parameters
    cfg = point.config
    say(f"generate {point.label}: Verilog and its JSON")
    v_path, j_path = generate_accelerator(rows=cfg.rows, cols=cfg.cols, act_depth=cfg.act_depth,
                                          wgt_depth=cfg.wgt_depth, acc_depth=cfg.acc_depth,
                                          param_depth=cfg.param_depth, data_width=8 * cfg.bus_bytes, out_dir=out)
    compiled = compile_model(model_path, cfg)
    batch = point.batch
    layers, blobs = [], []
    base = IMAGE_BASE
    (out / "programs").mkdir(exist_ok=True)
    for step in compiled.steps:
        if step.target != "accelerator":
            continue
        ops = _layer_operands(compiled, step, batch)
        shape = step.gemm_shape(batch)
        program = gemm_program(ops["a"], ops["w"], ops["bias"], ops["multiplier"], ops["shift"],
                               ops["zero_point"], ops["act_min"], ops["act_max"], _raw(step), config=cfg, base=base,
                               with_expected=False, tiling=compiled.tiling(step, batch))
        end = program.c_addr + program.c_nbytes
        blobs.append((base, program.dram[base:end]))
        layers.append({"name": step.name, "kind": step.kind, "gemm_mkn": list(shape),
                       "prog_addr": program.prog_addr, "prog_len": program.prog_len,
                       "a_addr": program.a_addr, "a_shape": [shape[0], shape[1]],
                       "w_addr": program.w_addr, "param_addr": program.param_addr, "c_addr": program.c_addr,
                       "c_shape": list(program.c_shape), "c_dtype": str(np.dtype(program.c_dtype)),
                       "raw_int32": _raw(step),
                       "region": [base, end]})
        (out / "programs" / f"{step.name}.txt").write_text(program.listing() + "\n")
        base = (end + LAYER_ALIGN - 1) // LAYER_ALIGN * LAYER_ALIGN
    image = np.zeros(base - IMAGE_BASE, dtype=np.uint8)
    for start, blob in blobs:
        image[start - IMAGE_BASE:start - IMAGE_BASE + len(blob)] = blob
    image.tofile(out / "image.bin")
    memory_map = {"image": "image.bin", "image_base": IMAGE_BASE, "image_bytes": int(image.size),
                  "dram_bytes_needed": int(base), "batch": batch, "hardware_json": j_path.name,
                  "hardware": {"rows": cfg.rows, "cols": cfg.cols, "act_depth": cfg.act_depth,
                               "wgt_depth": cfg.wgt_depth, "acc_depth": cfg.acc_depth,
                               "param_depth": cfg.param_depth, "bus_bytes": cfg.bus_bytes},
                  "layers": layers,
                  "notes": "A is written by the host per batch (int8, row-major M x K, the layer's im2col for "
                           "Conv2D); C is read back (int8 row-major M x N); everything else is in image.bin"}
    (out / "memory_map.json").write_text(json.dumps(memory_map, indent=1) + "\n")

    # ---- The report: predicted cycles per layer, resources, Fmax.
    predicted = compiled.predicted_cycles(batch)
    report_fmax = measured_fmax(target, point, build_dir)
    if report_fmax is not None:
        fmax, source = report_fmax["fmax_mhz"], f"measured: {report_fmax.get('report_path')}"
    else:
        fmax, source = fmax_estimate(target, cfg.rows, cfg.cols)
    try:
        from hw.fpga.resource_model import load_model
        resource_model = load_model(target)
        resources = {"model": resource_model.predict(point.accelerator_params),
                     "model_errors_pct": {k: v["stated_pct"] for k, v in resource_model.errors.items()
                                          if k != "packing"}}
    except FileNotFoundError as exc:
        resources = {"model": None, "note": str(exc)}
    if report_fmax is not None:
        resources["place_and_route"] = {k: v["count"] for k, v in report_fmax["resources"].items()}
    total = sum(predicted.values())
    report = {"model": str(model_path), "target": target, "point": asdict(point), "label": point.label,
              "predicted_cycles": {"layers": predicted, "batch": total, "per_inference": total / batch},
              "latency_ms": {"layers": {k: v / (fmax * 1e3) for k, v in predicted.items()},
                             "batch": total / (fmax * 1e3)},
              "inferences_per_s": fmax * 1e6 / (total / batch),
              "fmax_mhz": fmax, "fmax_source": source, "resources": resources}
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")

    # ---- Driver, check script, the model itself (check.py needs it for the host layers and the reference).
    shutil.copyfile(Path(__file__).with_name("bundle_driver.py"), out / "driver.py")
    model_copy = out / f"model{Path(model_path).suffix}"
    shutil.copyfile(model_path, model_copy)
    (out / "check.py").write_text(CHECK_SCRIPT)
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    manifest = {"files": files, "point": asdict(point), "verilog": v_path.name, "hardware_json": j_path.name}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    say(f"wrote {len(files) + 1} files to {out}")
    return manifest


CHECK_SCRIPT = '''"""Check run of this bundle: its driver.py on its image.bin over a simulated bus (the RTL by default).

    python check.py [--backend verilator|golden] [--batches N]

Needs the systolic8 toolkit (for the simulated bus, the host layers and the CPU int8 reference): run it from a
checkout with PYTHONPATH set to it, or with the package installed. Exit status 0: every output equals the CPU int8
reference and every layer's CYCLES equal report.json's prediction (on the RTL).
"""
import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("verilator", "golden"), default="verilator")
    parser.add_argument("--batches", type=int, default=1)
    args = parser.parse_args()
    from sw.apps.generate import check_bundle
    result = check_bundle(HERE, backend=args.backend, batches=args.batches)
    print(json.dumps(result, indent=1))
    sys.exit(0 if result["ok"] else 1)
'''


class SimulatedBus:
    """The bundle driver's bus on a simulated accelerator: the AXI4-Lite registers of :mod:`hw.regmap` and a
    DRAM array; writing CTRL = 1 runs the program from PROG_ADDR on ``backend`` ("verilator": the RTL in its
    native harness, which drives the same register sequence itself; "golden": the instruction-level simulator,
    whose counters come from the exact cycle model) and then reports DONE and the counters."""

    def __init__(self, config, *, backend="verilator", dram_bytes=1 << 24):
        from hw.regmap import OFFSETS, VERSION
        self.config = config
        self.dram = np.zeros(dram_bytes, dtype=np.uint8)
        self.offsets = {v: k for k, v in OFFSETS.items()}
        self.regs = {name: 0 for name in OFFSETS}
        self.regs.update(version=VERSION, rows=config.rows, cols=config.cols, act_depth=config.act_depth,
                         wgt_depth=config.wgt_depth, acc_depth=config.acc_depth, param_depth=config.param_depth,
                         bus_bytes=config.bus_bytes)
        self.backend = backend
        if backend == "verilator":
            from sim.verilator_backend import VerilatorAccelerator
            self._rtl = VerilatorAccelerator(config)
        elif backend != "golden":
            raise ValueError(f"simulated bus backend must be 'verilator' or 'golden', not {backend!r}")

    def read32(self, offset):
        return self.regs[self.offsets[offset]]

    def write32(self, offset, value):
        name = self.offsets[offset]
        if name in ("irq_enable", "prog_addr", "prog_len"):
            self.regs[name] = value
        elif name == "ctrl" and value & 1:
            self._start()

    def write_dram(self, addr, data):
        self.dram[addr:addr + len(data)] = np.frombuffer(data, dtype=np.uint8)

    def read_dram(self, addr, n):
        return self.dram[addr:addr + n].tobytes()

    def _start(self):
        from hw.regmap import COUNTERS, STATUS_DONE
        prog_addr, prog_len = self.regs["prog_addr"], self.regs["prog_len"]
        if self.backend == "verilator":
            result = self._rtl.run(self.dram, prog_addr, prog_len)
            counters, error, index = result.counters, int(result.error), result.error_index
        else:
            from hw.isa import decode, from_bytes
            from sim.cycle_model import predict
            from sim.isa_sim import IsaSimulator
            program = [decode(w) for w in from_bytes(self.dram[prog_addr:prog_addr + 16 * prog_len].tobytes())]
            result = IsaSimulator(self.config).run(self.dram, prog_addr=prog_addr, prog_len=prog_len)
            error, index = int(result.error), result.error_index or 0
            counters = predict(program, self.config) if not error else {c: 0 for c in COUNTERS}
        for name in COUNTERS:
            self.regs[name] = int(counters.get(name, counters.get(name.upper(), 0)))
        self.regs["error_index"] = index
        self.regs["status"] = STATUS_DONE | (error << 8)


def check_bundle(directory, *, backend="verilator", batches=1, images=None) -> dict:
    """Run the bundle in ``directory`` with its own ``driver.py`` over a :class:`SimulatedBus`: every output
    against the CPU int8 path and every layer's CYCLES against ``report.json``."""
    import importlib.util

    from sw.driver import Driver

    from .explore import Point, compile_model, sample_inputs
    directory = Path(directory)
    spec = importlib.util.spec_from_file_location("bundle_driver_under_check", directory / "driver.py")
    driver = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(driver)
    report = json.loads((directory / "report.json").read_text())
    point = Point(**report["point"])
    model_path = next(directory.glob("model.*"))
    compiled = compile_model(model_path, point.config)
    bundle = driver.Bundle(directory)
    bus = SimulatedBus(point.config, backend=backend, dram_bytes=max(1 << 20, bundle.memory_map["dram_bytes_needed"]))
    acc = bundle.load(bus)
    n = point.batch * batches
    inputs = images if images is not None else sample_inputs(model_path, n)
    from .explore import _model
    cpu = Driver(_model(str(model_path)), backend="cpu", config=point.config, batch_size=point.batch)
    x_all = cpu.quantize_input(inputs)
    graph = compiled.graph
    outputs, measured, mismatch = [], {}, None
    for b0 in range(0, len(x_all) - point.batch + 1, point.batch):
        values = {graph.inputs[0]: x_all[b0:b0 + point.batch]}
        for step in compiled.steps:
            ins = [values[t] for t in step.node.inputs]
            if step.target == "accelerator":
                (x,) = ins
                c, counters = bundle.run_layer(acc, step.name, compiled.gemm_operands(step, x)["a"])
                measured.setdefault(step.name, []).append(counters["CYCLES"])
                values[step.node.output] = compiled.finish(step, c, len(x))
            else:
                values[step.node.output] = compiled.run_host(step, ins)
        outputs.append(values[graph.outputs[0]].reshape(point.batch, -1))
    logits = np.concatenate(outputs)
    reference = cpu.run(inputs[:len(logits)])
    outputs_ok = bool(np.array_equal(logits, reference.logits))
    if not outputs_ok:
        i, j = map(int, np.argwhere(logits != reference.logits)[0])
        mismatch = f"input {i}, output {j}: bundle {int(logits[i, j])}, reference {int(reference.logits[i, j])}"
    cycles_ok = True
    predicted = report["predicted_cycles"]["layers"]
    for name, cycles in measured.items():
        if any(v != predicted[name] for v in cycles):
            cycles_ok = False
    return {"ok": outputs_ok and cycles_ok, "backend": backend, "inputs": int(len(logits)),
            "outputs_equal_reference": outputs_ok, "first_mismatch": mismatch,
            "cycles_equal_prediction": cycles_ok, "cycles_measured": measured, "cycles_predicted": predicted}


# ---------------------------------------------------------------------------------------------------------------
# Command line

def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .explore import DEFAULT_MODEL
    parser.add_argument("model", nargs="?", default=str(DEFAULT_MODEL), help="model file (default the MNIST CNN)")
    parser.add_argument("--config", required=True, type=Path,
                        help="the point: explore.json, its recommended point, or {\"rows\":..,\"cols\":..}")
    parser.add_argument("--out", required=True, type=Path, help="bundle folder")
    parser.add_argument("--target", default="ecp5-85k")
    parser.add_argument("--check", action="store_true", help="run the bundle's check.py (Verilator) afterwards")
    parser.add_argument("--build-dir", default="build")


def run(args) -> int:
    model = Path(args.model)
    if not model.is_file():
        print(f"error: model file {model} not found", file=sys.stderr)
        return 2
    try:
        point = load_point(args.config)
        generate_bundle(model, point, args.out, target=args.target, build_dir=args.build_dir,
                        say=lambda line: print(line, file=sys.stderr, flush=True))
    except (ValueError, FileNotFoundError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"bundle for {point.label} in {args.out}")
    if args.check:
        import os
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        done = subprocess.run([sys.executable, str(Path(args.out) / "check.py")], env=env)
        print(f"check: {'passed' if done.returncode == 0 else 'FAILED'}")
        return done.returncode
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="systolic8 generate", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
