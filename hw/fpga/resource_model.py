"""A resource model of the accelerator, fitted to real Yosys synthesis runs and checked on held-out ones.

``predict(params)`` gives the LUT4s, flops, DSP blocks and block RAMs of an accelerator configuration (rows, cols,
bus width, buffer depths, PE multiplier kind, PEs on DSP blocks) without running a tool, which is what lets
``systolic8 explore`` sweep thousands of points.

How each resource is modelled:

* **Block RAM** is counted, not fitted: every memory of the design (ACT ``rows`` bytes x ``act_depth``, WGT
  ``cols`` bytes x ``wgt_depth``, PARAM ``9 cols + 3`` bytes x ``param_depth``, and the accumulator, ``32 cols``
  bits x ``acc_depth``, which Yosys builds twice because it has two read ports) takes the fewest DP16KD of any of
  the block's aspect ratios (16384x1 .. 512x36). The training runs check it exactly.
* **DSP blocks** are counted: four MULT18X18D per column for the epilogue's 32x32-bit requantization product, plus
  one per PE on a DSP block (``dsp_pes``).
* **LUT4s and flops** are linear in ``rows*cols`` (one coefficient per PE kind: carry-cell, fabric, DSP), ``rows``,
  ``cols``, the bus width in bytes, the address bits of the buffers, the skew and de-skew triangles
  (``rows (rows-1)/2``, ``cols (cols-1)/2``) and bus bytes x ``cols``, fitted by least squares to the training
  runs (:data:`TRAINING`), and their error measured on runs the fit never saw (:data:`HELD_OUT`).

LUT4s are counted as the flow's fit check counts Yosys's netlist (a CCU2C is two LUT4s): a lower bound of what
nextpnr packs into TRELLIS_COMB cells; :data:`PACKING` holds the ratio measured on placed-and-routed designs, which
``packed_luts`` applies.

The fit lives in ``hw/fpga/data/resource_model-<target>.json`` (committed: coefficients, every synthesis record it
came from, the held-out errors), so a fresh clone explores without synthesizing anything.
``python -m hw.fpga.resource_model fit`` re-runs the synthesis of every training and held-out point (cached in
``build/fpga/synth-only``, about 3-6 CPU-minutes a point) and rewrites the JSON; ``--from-json`` refits from the
recorded runs alone.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .synth_only import ACCELERATOR_PARAMETERS

__all__ = ["TRAINING", "HELD_OUT", "ResourceModel", "bram_blocks", "dsp_blocks", "features", "fit",
           "load_model", "model_path", "stale", "FEATURES"]

DATA_DIR = Path(__file__).resolve().parent / "data"

#: Synthesis runs the linear parts are fitted to (only the parameters that differ from the defaults).
TRAINING = (
    dict(rows=2, cols=2), dict(rows=4, cols=4), dict(rows=2, cols=4), dict(rows=4, cols=2),
    dict(rows=2, cols=2, pe_multiplier="fabric"), dict(rows=2, cols=2, data_width=32),
    dict(rows=2, cols=2, data_width=128),
    dict(rows=2, cols=2, act_depth=512, wgt_depth=512, acc_depth=256),
    dict(rows=2, cols=2, act_depth=4096, wgt_depth=4096, acc_depth=1024, param_depth=256),
    dict(rows=4, cols=4, dsp_pes=16), dict(rows=4, cols=4, pe_multiplier="fabric"),
    # The bus width on larger arrays, and long rows and columns (the skew and de-skew triangles).
    dict(rows=4, cols=4, data_width=128), dict(rows=8, cols=2), dict(rows=2, cols=8),
    dict(rows=8, cols=4, data_width=32), dict(rows=4, cols=8, data_width=128), dict(rows=8, cols=16),
)
#: Runs the fit never sees: the measured error of the model (up to 16x16).
HELD_OUT = (
    dict(rows=3, cols=5), dict(rows=6, cols=6, data_width=128),
    dict(rows=4, cols=8, pe_multiplier="fabric", act_depth=1024), dict(rows=8, cols=8),
    dict(rows=12, cols=6, data_width=128), dict(rows=8, cols=8, data_width=128), dict(rows=16, cols=4),
    dict(rows=12, cols=8, data_width=128, pe_multiplier="fabric"), dict(rows=16, cols=16, data_width=128),
)

#: DP16KD aspect ratios (depth, width).
_DP16KD_SHAPES = ((16384, 1), (8192, 2), (4096, 4), (2048, 9), (1024, 18), (512, 36))
#: Accumulator copies Yosys builds (one per read port: the read-modify-write and the STORE read).
ACC_COPIES = 2
#: MULT18X18D per column for the epilogue's requantization product.
EPILOGUE_DSPS_PER_COLUMN = 4

#: Names of the linear features of LUT4s and flops (:func:`features`).
FEATURES = ("const", "pe_carry", "pe_fabric", "pe_dsp", "rows", "cols", "bus_bytes", "addr_bits", "skew", "deskew",
            "bus_x_cols")


def _params(params: dict) -> dict:
    full = {**ACCELERATOR_PARAMETERS, **params}
    if full["pe_multiplier"] == "auto":
        full["pe_multiplier"] = "carry"        # ECP5: what the flow's "auto" means there
    return full


def _blocks(width_bits: int, depth: int) -> int:
    return min(math.ceil(width_bits / w) * math.ceil(depth / d) for d, w in _DP16KD_SHAPES)


def bram_blocks(params: dict) -> int:
    """DP16KD block RAMs of the accelerator's memories (see the module docstring)."""
    p = _params(params)
    r, c = p["rows"], p["cols"]
    return (_blocks(8 * r, p["act_depth"]) + _blocks(8 * c, p["wgt_depth"])
            + _blocks(8 * (9 * c + 3), p["param_depth"]) + ACC_COPIES * _blocks(32 * c, p["acc_depth"]))


def dsp_blocks(params: dict) -> int:
    p = _params(params)
    return EPILOGUE_DSPS_PER_COLUMN * p["cols"] + p["dsp_pes"]


def features(params: dict) -> list[float]:
    """The linear features of LUT4s and flops (:data:`FEATURES`)."""
    p = _params(params)
    pes = p["rows"] * p["cols"]
    fabric_pes = pes - p["dsp_pes"]
    carry = fabric_pes if p["pe_multiplier"] == "carry" else 0
    fabric = fabric_pes if p["pe_multiplier"] == "fabric" else 0
    addr = sum(math.log2(p[k]) for k in ("act_depth", "wgt_depth", "acc_depth", "param_depth"))
    rows, cols, bus = p["rows"], p["cols"], p["data_width"] / 8
    # The input skew delays row r by r cycles and the output de-skew column c by cols - 1 - c: triangles of
    # registers, rows (rows - 1) / 2 activation tokens and cols (cols - 1) / 2 partial sums. The STORE unit packs a
    # row of cols bytes (or words) into bus beats and the LOAD unit assembles weight rows of cols bytes from them:
    # multiplexers of about bus x cols.
    return [1.0, carry, fabric, p["dsp_pes"], rows, cols, bus, addr, rows * (rows - 1) / 2, cols * (cols - 1) / 2,
            bus * cols]


@dataclass
class ResourceModel:
    """Fitted coefficients of LUT4s and flops (:data:`FEATURES` order) plus the counted DSP and BRAM parts."""
    target: str
    coefficients: dict          # {"luts": [...], "ffs": [...]}
    packing: float              # nextpnr TRELLIS_COMB / Yosys LUT4-equivalents, measured
    errors: dict                # held-out errors, {"luts": {"max_pct":, "mean_pct":}, ...}
    records: list               # the synthesis records the fit and the errors came from

    def predict(self, params: dict) -> dict:
        """``{luts, ffs, dsp, bram, packed_luts}`` of a configuration (LUTs as Yosys counts them; packed_luts the
        estimate of nextpnr's count)."""
        x = np.array(features(params))
        luts = float(x @ np.array(self.coefficients["luts"]))
        ffs = float(x @ np.array(self.coefficients["ffs"]))
        return {"luts": round(luts), "ffs": round(ffs), "dsp": dsp_blocks(params), "bram": bram_blocks(params),
                "packed_luts": round(luts * self.packing)}

    def to_json(self) -> dict:
        return {"target": self.target, "features": list(FEATURES), "coefficients": self.coefficients,
                "packing": self.packing, "errors": self.errors, "records": self.records,
                "refit": "python -m hw.fpga.resource_model fit [--from-json]"}


#: Placed-and-routed designs (nextpnr's packed TRELLIS_COMB against Yosys's LUT4-equivalents of the same netlist):
#: 4x4 and 8x8 at f2b4147 (docs/fpga.md), the 12x6 with a 128-bit bus at eb2da55 (explore's verification).
PACKING = {"ecp5-85k": [{"config": "4x4", "yosys_luts": 12776, "packed_luts": 15042},
                        {"config": "8x8", "yosys_luts": 22925, "packed_luts": 27029},
                        {"config": "12x6-bus128", "yosys_luts": 23888, "packed_luts": 28200}]}


def _least_squares(rows: list[list[float]], values: list[float]) -> list[float]:
    a = np.array(rows)
    b = np.array(values, dtype=float)
    solution, *_ = np.linalg.lstsq(a, b, rcond=None)
    return [float(v) for v in solution]


def _error(model_fn, records, kind):
    errs = []
    for rec in records:
        measured = rec["resources"][kind]
        predicted = model_fn(rec["parameters"])[kind]
        errs.append(100.0 * (predicted - measured) / measured if measured else 0.0)
    return errs


def fit(records: list[dict], target: str = "ecp5-85k", packing=None) -> ResourceModel:
    """Fit LUT4s and flops to the records of :data:`TRAINING` and measure every resource on :data:`HELD_OUT`."""
    key = lambda p: json.dumps(_params(p), sort_keys=True)  # noqa: E731
    by_params = {key(r["parameters"]): r for r in records}
    missing = [p for p in (*TRAINING, *HELD_OUT) if key(p) not in by_params]
    if missing:
        raise ValueError(f"no synthesis record for {missing}: run `python -m hw.fpga.resource_model fit`")
    train = [by_params[key(p)] for p in TRAINING]
    held = [by_params[key(p)] for p in HELD_OUT]
    coefficients = {kind: _least_squares([features(r["parameters"]) for r in train],
                                         [r["resources"][kind] for r in train]) for kind in ("luts", "ffs")}
    packing = packing if packing is not None else PACKING.get(target, [])
    ratio = float(np.mean([p["packed_luts"] / p["yosys_luts"] for p in packing])) if packing else 1.0
    model = ResourceModel(target=target, coefficients=coefficients, packing=ratio, errors={},
                          records=[dict(r, role="training") for r in train] + [dict(r, role="held-out")
                                                                               for r in held])
    for kind in ("luts", "ffs", "dsp", "bram"):
        held_errs = _error(model.predict, held, kind)
        train_errs = _error(model.predict, train, kind)
        worst = max(abs(e) for e in held_errs)
        model.errors[kind] = {"held_out_max_abs_pct": round(worst, 2),
                              # What the model claims (explore's verification checks it): the held-out maximum
                              # rounded up to the next half per cent (0 stays 0: DSPs and BRAMs are counted).
                              "stated_pct": math.ceil(2 * round(worst, 2)) / 2,
                              "held_out_mean_abs_pct": round(float(np.mean(np.abs(held_errs))), 2),
                              "held_out_pct": [round(e, 2) for e in held_errs],
                              "training_max_abs_pct": round(max(abs(e) for e in train_errs), 2)}
    model.errors["packing"] = {"points": packing, "ratio": round(ratio, 4)}
    return model


def model_path(target: str) -> Path:
    return DATA_DIR / f"resource_model-{target}.json"


def load_model(target: str = "ecp5-85k", path=None) -> ResourceModel:
    """The committed fit for ``target``; a clear error naming the command that makes it when there is none."""
    path = Path(path) if path else model_path(target)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"no resource model for {target} ({path}): fit one with "
                                f"`python -m hw.fpga.resource_model fit --target {target}`") from None
    return ResourceModel(target=data["target"], coefficients=data["coefficients"], packing=data["packing"],
                         errors=data["errors"], records=data["records"])


def stale(model: ResourceModel) -> str | None:
    """None when the fit's smallest training run is of the design as it is now (same Verilog, synthesis command
    and tools), else a line saying the fit is of another design and how to refit. Generates one 2x2's Verilog
    (seconds); ``systolic8 explore`` prints the line, and a test keeps the committed fit current."""
    from .synth_only import inputs_sha256
    records = [r for r in model.records if r.get("role", "training") == "training"]
    rec = min(records, key=lambda r: r["parameters"]["rows"] * r["parameters"]["cols"])
    if inputs_sha256(target=rec["target"], **rec["parameters"]) == rec.get("inputs_sha256"):
        return None
    p = rec["parameters"]
    return (f"the resource model of {model.target} was fitted to another version of the design or the tools (its "
            f"{p['rows']}x{p['cols']} run's Verilog/tools digest differs): refit with `make resource-model` "
            f"(python -m hw.fpga.resource_model fit, about 20 CPU-minutes)")


def synthesize_points(target: str, points, *, workers: int = 1, build_dir="build", log=print) -> list[dict]:
    """Synth-only records of ``points`` (cached), ``workers`` Yosys runs at a time."""
    from concurrent.futures import ProcessPoolExecutor

    from .synth_only import synth_cells
    if workers <= 1:
        return [synth_cells(target=target, build_dir=build_dir, log=log, **p) for p in points]
    with ProcessPoolExecutor(workers) as pool:
        futures = [pool.submit(synth_cells, target=target, build_dir=build_dir, **p) for p in points]
        out = []
        for p, f in zip(points, futures):
            out.append(f.result())
            log(f"synthesized {p}: {out[-1]['resources']}")
        return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hw.fpga.resource_model", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("fit", help="synthesize the training and held-out points (cached) and write the fit")
    p.add_argument("--target", default="ecp5-85k")
    p.add_argument("--from-json", action="store_true", help="refit from the records in the committed JSON")
    p.add_argument("--workers", type=int, default=1, help="Yosys runs at a time (default 1)")
    p.add_argument("--build-dir", default="build")
    sub.add_parser("show", help="print the committed fit and its errors").add_argument("--target", default="ecp5-85k")
    args = parser.parse_args(argv)
    try:
        if args.command == "show":
            model = load_model(args.target)
        else:
            if args.from_json:
                records = load_model(args.target).records
            else:
                records = synthesize_points(args.target, [*TRAINING, *HELD_OUT], workers=args.workers,
                                            build_dir=args.build_dir)
            records = [{k: v for k, v in r.items() if k != "role"} for r in records]
            model = fit(records, args.target)
            DATA_DIR.mkdir(exist_ok=True)
            model_path(args.target).write_text(json.dumps(model.to_json(), indent=1) + "\n")
            print(f"wrote {model_path(args.target)}")
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for kind, err in model.errors.items():
        if kind != "packing":
            print(f"{kind:5} stated error {err['stated_pct']:.1f}%: held-out max {err['held_out_max_abs_pct']:.2f}%, "
                  f"mean "
                  f"{err['held_out_mean_abs_pct']:.2f}% ({len(err['held_out_pct'])} runs); training max "
                  f"{err['training_max_abs_pct']:.2f}%")
    print(f"packing (nextpnr LUTs / Yosys LUTs): {model.packing:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
