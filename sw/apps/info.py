"""``systolic8 info MODEL``: the imported network layer by layer.

For each layer: its op, input and output shapes (per input, NHWC), quantization (scale and zero point of its input
and output; weights; the clamp of a fused activation), where it runs (``accelerator`` or ``host``), MACs per input,
and the cycles per input the exact cycle model (:mod:`sim.cycle_model`) predicts for the configured array and batch
- the CYCLES counter the RTL would report, not an estimate.
"""

from __future__ import annotations

import json
from pathlib import Path

from .options import add_calibration, add_hardware, calibration_of, hardware_config

__all__ = ["add_arguments", "run", "table"]


def add_arguments(parser) -> None:
    parser.add_argument("model", type=Path, help="the model: .tflite, .onnx or the toolkit's int8 .npz")
    add_hardware(parser)
    add_calibration(parser)
    parser.add_argument("--json", action="store_true", help="print the records as JSON instead of a table")


def _quant(q) -> str:
    s_out, z_out = q["output"]
    text = " + ".join(f"{s:.4g}/{z}" for s, z in q["input"]) + f" -> {s_out:.4g}/{z_out}"
    if "clamp" in q and tuple(q["clamp"]) != (-128, 127):
        text += f" clamp [{q['clamp'][0]}, {q['clamp'][1]}]"
    return text


def _shape(shape) -> str:
    return "x".join(map(str, shape))


def table(model, config, batch: int, records) -> str:
    """The layer table ``systolic8 info`` prints (columns as wide as their longest entry)."""
    cells = []
    for r in records:
        util = (r["macs"] / (r["cycles"] * config.rows * config.cols)) if r["cycles"] else None
        target = r["target"] + (" (int32)" if r.get("raw") else "")
        cells.append((r["name"], r["op"], _shape(r["input_shape"]), _shape(r["output_shape"]), _quant(r["quant"]),
                      target, f"{r['macs']:,}", "" if r["cycles"] is None else f"{round(r['cycles']):,}",
                      "" if util is None else f"{100 * util:.1f}%"))
    head = ("layer", "op", "in", "out", "quantization (scale/zero point)", "runs on", "MACs", "cycles", "util")
    widths = [max(len(row[i]) for row in cells + [head]) for i in range(len(head))]
    right = {2, 3, 6, 7, 8}

    def line(row):
        return "  " + "  ".join(c.rjust(w) if i in right else c.ljust(w)
                                for i, (c, w) in enumerate(zip(row, widths))).rstrip()

    lines = [f"{model.path}: {len(records)} layers, input {_shape(model.input_shape)} "
             f"{'/'.join(d.name for d in model.input_dtypes)}; on a {config.rows}x{config.cols} array, "
             f"{config.bus_bytes}-byte bus, batch {batch}", line(head)] + [line(row) for row in cells]
    macs = sum(r["macs"] for r in records)
    acc_macs = sum(r["macs"] for r in records if r["target"] == "accelerator")
    cycles = sum(r["cycles"] or 0 for r in records if r["target"] == "accelerator")
    share = f"{100 * acc_macs / macs:.1f}%" if macs else "-"
    util = f"{100 * acc_macs / (cycles * config.rows * config.cols):.1f}%" if cycles else "-"
    lines.append(f"  total: {macs:,} MACs per input ({share} on the accelerator), {cycles:,.0f} predicted cycles "
                 f"per input on the accelerator (PE utilization {util}; exact cycle model)")
    return "\n".join(lines)


def run(args) -> int:
    config = hardware_config(args.rows, args.cols, args.bus_bytes, batch=args.batch)
    from .model import open_model
    model = open_model(args.model, calibration=calibration_of(args))
    records = model.describe(config, args.batch)
    if args.json:
        print(json.dumps({"model": str(model.path), "rows": config.rows, "cols": config.cols,
                          "bus_bytes": config.bus_bytes, "batch": args.batch, "layers": records}, indent=2))
    else:
        print(table(model, config, args.batch, records))
    return 0
