"""Verilog generation for the accelerator (or the bare GEMM engine), with a JSON description beside it.

``python -m hw.generate --rows 8 --cols 8 --out build`` writes ``build/accelerator_8x8.v`` and
``build/accelerator_8x8.json`` (parameters, register map, error codes, ports); ``--design engine`` writes
``build/gemm_engine_8x8.v`` and its JSON (parameters, latency figures, ports, command layouts). Generation is cached: the output is rewritten
only when the parameters or the hardware sources change (a hash of both is stored in the JSON), so test suites and
simulator builds that depend on the file never redo work for an unchanged design.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

__all__ = ["generate_engine", "generate_accelerator", "hardware_source_hash", "describe_ports"]

HW_DIR = Path(__file__).resolve().parent


def hardware_source_hash() -> str:
    """SHA-256 over every hardware source file: part of each generated file's cache key."""
    digest = hashlib.sha256()
    for path in sorted(HW_DIR.glob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def describe_ports(component) -> list[dict]:
    """Flattened Verilog ports of a Component: name, direction and width."""
    ports = []
    for path, member, value in component.signature.flatten(component):
        name = "__".join(str(p) for p in path)
        ports.append({"name": name, "direction": "input" if member.flow.name == "In" else "output",
                      "width": len(value.as_value()) if hasattr(value, "as_value") else len(value)})
    return ports


def describe_layout(layout, prefix="", offset=0) -> list[dict]:
    """Bit fields of a (nested) struct/array layout: name, least significant bit, width, signedness."""
    from amaranth import Shape
    from amaranth.lib import data

    fields = []
    if isinstance(layout, (data.StructLayout, data.ArrayLayout)):
        for key, field in layout:
            name = f"{prefix}.{key}" if prefix and isinstance(key, str) else (f"{prefix}[{key}]" if prefix else str(key))
            fields += describe_layout(field.shape, name, offset + field.offset)
    else:
        shape = Shape.cast(layout)
        fields.append({"field": prefix, "lsb": offset, "width": shape.width, "signed": shape.signed})
    return fields


def _atomic_write(path: Path, text: str) -> None:
    """Write through a unique temporary file and rename, so concurrent generators never see half a file."""
    import os
    import tempfile

    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _cached(out_v: Path, out_json: Path, key: str) -> bool:
    if not (out_v.exists() and out_json.exists()):
        return False
    try:
        return json.loads(out_json.read_text()).get("cache_key") == key
    except (OSError, ValueError):
        return False


def _generate(make, *, toplevel, name, params, out_dir, force, describe) -> tuple[Path, Path]:
    """Write the Verilog and JSON description of the component ``make()`` builds unless the cached pair is current.

    The component is only built on a cache miss (a cached pair exists only for parameters that were valid), so a
    cache hit leaves no unelaborated Amaranth objects behind (no ``UnusedElaboratable`` warnings)."""
    out_dir = Path(out_dir)
    out_v, out_json = out_dir / f"{name}.v", out_dir / f"{name}.json"
    key = hashlib.sha256(json.dumps(params, sort_keys=True).encode() + hardware_source_hash().encode()).hexdigest()
    if not force and _cached(out_v, out_json, key):
        return out_v, out_json
    from amaranth.back import verilog

    component = make()  # validates the parameters
    out_dir.mkdir(parents=True, exist_ok=True)
    text = verilog.convert(component, name=toplevel)
    description = {"design": toplevel, "toplevel": toplevel, "parameters": params, **describe(component),
                   "ports": [{"name": "clk", "direction": "input", "width": 1},
                             {"name": "rst", "direction": "input", "width": 1}] + describe_ports(component),
                   "cache_key": key}
    _atomic_write(out_v, text)
    _atomic_write(out_json, json.dumps(description, indent=2) + "\n")
    return out_v, out_json


def generate_engine(*, rows=8, cols=8, acc_depth=512, out_dir="build", force=False) -> tuple[Path, Path]:
    """Write the GEMM engine's Verilog and JSON description (latencies, command layouts); returns their paths."""
    from .gemm_engine import GemmEngine, matmul_command_layout, store_command_layout

    return _generate(lambda: GemmEngine(rows=rows, cols=cols, acc_depth=acc_depth),
                     toplevel="gemm_engine", name=f"gemm_engine_{rows}x{cols}",
                     params={"rows": rows, "cols": cols, "acc_depth": acc_depth}, out_dir=out_dir, force=force,
                     describe=lambda engine: {
                         "latency": {"pipeline_depth": engine.pipeline_depth,
                                     "matmul_latency": f"count + {engine.matmul_latency(0)}",
                                     "min_overlapped_count": engine.min_overlapped_count,
                                     "store_latency": engine.store_latency},
                         "payload_layouts": {"mm_cmd": describe_layout(matmul_command_layout(acc_depth)),
                                             "st_cmd": describe_layout(store_command_layout(acc_depth, cols))}})


def generate_accelerator(*, rows=8, cols=8, act_depth=2048, wgt_depth=2048, acc_depth=512, param_depth=64,
                         data_width=64, dsp_pes=0, out_dir="build", force=False) -> tuple[Path, Path]:
    """Write the whole accelerator's Verilog and a JSON with its parameters, register map and ports.

    ``dsp_pes`` is :class:`~hw.accelerator.Accelerator`'s (PEs whose product is one multiplier; same results and
    timing). The file is named ``accelerator_<rows>x<cols>.v``, or ``accelerator_<rows>x<cols>_dsp<n>.v`` with DSP
    PEs, so the two never overwrite each other in one folder."""
    from .accelerator import Accelerator
    from .isa import ErrorCode
    from .regmap import REGISTERS

    params = {"rows": rows, "cols": cols, "act_depth": act_depth, "wgt_depth": wgt_depth, "acc_depth": acc_depth,
              "param_depth": param_depth, "data_width": data_width}
    if dsp_pes:     # only then: the cache keys (and files) of the plain design stay what they were
        params["dsp_pes"] = dsp_pes
    name = f"accelerator_{rows}x{cols}" + (f"_dsp{dsp_pes}" if dsp_pes else "")
    return _generate(lambda: Accelerator(**params), toplevel="accelerator", name=name,
                     params=params, out_dir=out_dir, force=force,
                     describe=lambda top: {
                         "registers": [{"name": r.name.upper(), "offset": r.offset, "access": r.access,
                                        "description": r.description} for r in REGISTERS],
                         "error_codes": {e.name: int(e) for e in ErrorCode},
                         "docs": {"isa": "docs/isa.md"}})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--design", choices=("accelerator", "engine"), default="accelerator")
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--cols", type=int, default=8)
    parser.add_argument("--acc-depth", type=int, default=512)
    parser.add_argument("--out", default="build")
    parser.add_argument("--force", action="store_true", help="regenerate even if the cached output is current")
    args = parser.parse_args(argv)
    # Elaboration grows with the array (8x8: seconds; 64x64: minutes): say what runs, then every 30 s that it does.
    import threading
    import time
    start, done = time.monotonic(), threading.Event()

    def heartbeat():
        if done.wait(2.0):
            return
        print(f"generating the {args.rows}x{args.cols} {args.design}'s Verilog (large arrays take minutes) ...",
              file=sys.stderr, flush=True)
        while not done.wait(30.0):
            print(f"  ... still elaborating ({time.monotonic() - start:.0f} s)", file=sys.stderr, flush=True)

    beat = threading.Thread(target=heartbeat, daemon=True)
    beat.start()
    try:
        if args.design == "engine":
            paths = generate_engine(rows=args.rows, cols=args.cols, acc_depth=args.acc_depth, out_dir=args.out,
                                    force=args.force)
        else:
            paths = generate_accelerator(rows=args.rows, cols=args.cols, acc_depth=args.acc_depth,
                                         out_dir=args.out, force=args.force)
    except (TypeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        done.set()
        beat.join()
    for path in paths:
        print(f"wrote {path}")
    if time.monotonic() - start > 2.0:
        print(f"  ({time.monotonic() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
