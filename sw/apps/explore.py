"""``systolic8 explore MODEL --target ecp5-85k``: which accelerator to build for a model on a part, and what it costs.

The sweep (docs/explore.md):

1. **Hardware points**: rows x cols (``--sizes``, square and not, up to ``--max-aspect``), the AXI bus width
   (``--bus-bytes``), the PE multiplier kind (carry-cell or fabric LUTs, or every PE the DSP blocks can hold on a DSP
   block), at the default buffer depths and batch ``--batch``. Cycles per inference of the whole model come from
   the exact cycle model (``CompiledNetwork.predicted_cycles``: no simulation), resources from the resource model
   fitted to Yosys runs (:mod:`hw.fpga.resource_model`), Fmax from place-and-route reports where the flow's cache
   has one for that configuration, else an estimate interpolated from the measured place-and-route figures
   (:data:`MEASURED_FMAX`; every point says which).
2. **Refinement** of the points on the frontier: the buffer depths (``--depths``) and the batch size
   (``--batches``) are swept there.
3. **Frontier**: the Pareto set of inferences/s against packed LUTs, DSP blocks and block RAMs (no other point is
   as fast with no more of every resource), the points inside the budget (``--max-luts/--max-dsp/--max-bram``,
   ``--min-fps``), and the recommendation: the cheapest (fewest LUTs) point within ``--tolerance`` of the fastest
   one in the budget.
4. **Place-and-route of the finalists** (``--pnr-points K``, default 3): the recommended point, the fastest one in
   the budget, then the in-budget frontier points nearest the recommended one in throughput (distinct hardware:
   the batch does not change the design)
   are placed and routed (in parallel, through the same sweep runner; the flow's report cache is reused; an 8x8
   takes about 8 minutes of a core). Their measured Fmax and packed LUTs replace the estimates, and the
   recommendation is made again among them on measured figures alone (``recommended_before_pnr`` keeps the first
   one).
5. **Verification** (``--verify``, on by default): the recommended point's RTL cycles on the model (Verilator)
   equal the prediction, its Yosys resources are within the resource model's measured error, and its Fmax is the
   measured one.

Writes ``OUT/explore.json``, ``OUT/frontier.csv``, ``OUT/frontier.png`` (default ``build/explore/<model>``); the
points run through :func:`sw.sweep.run_sweep` (a local process pool, or Dask with ``--cluster``).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path

from hw.isa import HardwareConfig

__all__ = ["Point", "MEASURED_FMAX", "add_arguments", "run", "main", "pareto", "recommend", "evaluate_cycles",
           "fmax_estimate", "explore", "design_points", "fits_budget", "finalists", "apply_place_and_route",
           "pnr_finalists", "place_and_route"]

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODEL = ROOT / "models" / "mnist_int8.npz"

#: Place-and-route Fmax measured on ecp5-85k (seed 1, router1, 150 MHz constraint, pin ring; docs/fpga.md):
#: PEs -> MHz, at f2b4147 (2x2 at ffcb321). What :func:`fmax_estimate` interpolates between.
MEASURED_FMAX = {"ecp5-85k": {4: 83.9, 16: 82.6, 64: 74.9, 256: 54.7}}

DEFAULT_SIZES = (4, 6, 8, 12, 16, 24, 32)
DEFAULT_DEPTHS = (2048, 2048, 512, 64)          # act, wgt, acc, param
DEPTH_PRESETS = {"small": (1024, 1024, 256, 64), "default": DEFAULT_DEPTHS, "large": (4096, 4096, 1024, 64)}


@dataclass(frozen=True)
class Point:
    """One accelerator configuration and batch size."""
    rows: int
    cols: int
    bus_bytes: int = 8
    act_depth: int = 2048
    wgt_depth: int = 2048
    acc_depth: int = 512
    param_depth: int = 64
    pe_multiplier: str = "carry"     # carry | fabric (the PEs not on DSP blocks)
    dsp_pes: int = 0
    batch: int = 8

    @property
    def config(self) -> HardwareConfig:
        return HardwareConfig(rows=self.rows, cols=self.cols, act_depth=self.act_depth, wgt_depth=self.wgt_depth,
                              acc_depth=self.acc_depth, param_depth=self.param_depth, bus_bytes=self.bus_bytes)

    @property
    def accelerator_params(self) -> dict:
        """The :class:`hw.accelerator.Accelerator` parameters (what the resource model and the flow take)."""
        return dict(rows=self.rows, cols=self.cols, act_depth=self.act_depth, wgt_depth=self.wgt_depth,
                    acc_depth=self.acc_depth, param_depth=self.param_depth, data_width=8 * self.bus_bytes,
                    dsp_pes=self.dsp_pes, pe_multiplier=self.pe_multiplier)

    @property
    def flow_params(self) -> dict:
        """The accelerator parameters the FPGA flow takes beyond rows/cols/acc_depth/PEs, where not the defaults."""
        defaults = dict(act_depth=2048, wgt_depth=2048, param_depth=64, data_width=64)
        return {k: v for k, v in self.accelerator_params.items() if k in defaults and defaults[k] != v}

    @property
    def label(self) -> str:
        mult = f"{self.pe_multiplier}" + (f"+{self.dsp_pes}dsp" if self.dsp_pes else "")
        depths = "" if (self.act_depth, self.wgt_depth, self.acc_depth, self.param_depth) == DEFAULT_DEPTHS else \
            f" A{self.act_depth}/W{self.wgt_depth}/C{self.acc_depth}"
        return f"{self.rows}x{self.cols} {8 * self.bus_bytes}b {mult}{depths} b{self.batch}"


# ---------------------------------------------------------------------------------------------------------------
# Cycles (exact cycle model) - run in the sweep's workers

@lru_cache(maxsize=4)
def _model(path: str):
    """The model at ``path``: a legacy quantized network for ``.npz`` files (what :class:`sw.driver.Driver` runs
    with that network's own input quantization), else the :class:`sw.ir.Graph` of its importer."""
    if Path(path).suffix == ".npz":
        from sw.model_io import load_quantized
        return load_quantized(path)
    from sw.frontends import load_model
    return load_model(path)


def _graph(model):
    from sw.ir import Graph
    return model if isinstance(model, Graph) else Graph.from_quantized_network(model)


def compile_model(path, config: HardwareConfig):
    """The compiled graph of the model file ``path`` for ``config`` (the same steps, names and tilings as the
    driver runs)."""
    from sw.compiler import compile_graph
    return compile_graph(_graph(_model(str(path))), config)


def evaluate_cycles(job) -> dict:
    """``job = (model path, HardwareConfig fields, batches)``: predicted cycles per layer for each batch,
    ``{"config": ..., "batches": {batch: {layer: cycles}}, "macs_per_inference": ...}``."""
    path, fields, batches = job
    config = HardwareConfig(**fields)
    compiled = compile_model(path, config)
    out = {str(b): compiled.predicted_cycles(b) for b in batches}
    macs = sum(s.macs(1) for s in compiled.steps if s.target == "accelerator")
    return {"config": fields, "batches": out, "macs_per_inference": macs}


# ---------------------------------------------------------------------------------------------------------------
# Fmax

def fmax_estimate(target: str, rows: int, cols: int) -> tuple[float, str]:
    """(MHz, where it comes from): interpolated linearly in log2(PEs) between the measured place-and-route
    figures of :data:`MEASURED_FMAX`, continued with the slope of the last two beyond them."""
    table = MEASURED_FMAX.get(target)
    if not table:
        return 50.0, f"no measured place-and-route for {target}: 50 MHz assumed"
    xs = sorted(table)
    pes = rows * cols
    lx = math.log2(pes)
    pts = [(math.log2(p), table[p]) for p in xs]
    if lx <= pts[0][0]:
        return table[xs[0]], f"estimate: the smallest measured array ({xs[0]} PEs)"
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        if lx <= x1:
            return round(y0 + (y1 - y0) * (lx - x0) / (x1 - x0), 1), \
                "estimate: interpolated between measured place-and-route Fmax (docs/fpga.md)"
    (x0, y0), (x1, y1) = pts[-2], pts[-1]
    return round(max(10.0, y1 + (y1 - y0) * (lx - x1) / (x1 - x0)), 1), \
        f"estimate: extrapolated beyond the largest measured array ({xs[-1]} PEs)"


def measured_fmax(target: str, point: Point, build_dir="build") -> dict | None:
    """The flow's cached place-and-route report for exactly this configuration, if there is one."""
    from hw.fpga.flow import report_path
    path = report_path(target, "accelerator", point.rows, point.cols, build_dir, point.flow_params)
    try:
        report = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    same = ((report.get("accelerator_params") or {}) == point.flow_params and report.get("dsp_pes") == point.dsp_pes
            and report.get("pe_multiplier") == point.pe_multiplier
            and (report.get("acc_depth") or 512) == point.acc_depth)
    if not same or not report.get("fmax_mhz"):
        return None
    return report


# ---------------------------------------------------------------------------------------------------------------
# Design points, Pareto frontier, budget, recommendation

def design_points(target: str, sizes, *, max_aspect: float, bus_bytes, multipliers) -> list[Point]:
    """Hardware points of stage 1: every rows x cols within the aspect ratio, bus width and PE multiplier kind."""
    from hw.fpga.flow import FABRIC_ONLY_PES
    from hw.fpga.targets import get_target
    tgt = get_target(target)
    dsp_total = tgt.resources["dsp"].available
    points = []
    for r in sizes:
        for c in sizes:
            if max(r, c) / min(r, c) > max_aspect:
                continue
            for bb in bus_bytes:
                for mult in multipliers:
                    if mult == "dsp":
                        # The flow's own rule (hw.fpga.flow.auto_dsp_pes): PEs on DSP blocks only past
                        # FABRIC_ONLY_PES; an 8x8 with every PE on the ECP5's few DSP rows did not route at all.
                        spare = dsp_total - 4 * c
                        if spare <= 0 or r * c <= FABRIC_ONLY_PES:
                            continue
                        points.append(Point(r, c, bb, pe_multiplier="carry", dsp_pes=min(r * c, spare)))
                    else:
                        points.append(Point(r, c, bb, pe_multiplier=mult))
    return points


def dominates(a: dict, b: dict) -> bool:
    """``a`` is at least as fast with no more of any resource, and better in one."""
    keys = ("packed_luts", "dsp", "bram")
    no_worse = a["fps"] >= b["fps"] and all(a["resources"][k] <= b["resources"][k] for k in keys)
    better = a["fps"] > b["fps"] or any(a["resources"][k] < b["resources"][k] for k in keys)
    return no_worse and better


def pareto(rows: list[dict]) -> list[dict]:
    """The rows no other row dominates (:func:`dominates`), fastest first."""
    front = [a for a in rows if not any(dominates(b, a) for b in rows if b is not a)]
    return sorted(front, key=lambda r: -r["fps"])


def pareto_2d(rows: list[dict], key="packed_luts") -> list[dict]:
    """The staircase of the plot: fewest ``key`` for each throughput level (cheapest first)."""
    best, out = -1.0, []
    for r in sorted(rows, key=lambda r: (r["resources"][key], -r["fps"])):
        if r["fps"] > best:
            out.append(r)
            best = r["fps"]
    return out


@dataclass
class Budget:
    max_luts: int | None = None
    max_ffs: int | None = None
    max_dsp: int | None = None
    max_bram: int | None = None
    min_fps: float | None = None

    @classmethod
    def for_target(cls, target: str, **given) -> "Budget":
        """The user's limits, each defaulting to what the device has (LUTs: the flow's routability limit,
        :data:`hw.fpga.flow.DENSE_LUT_PCT` of the device)."""
        from hw.fpga.flow import DENSE_LUT_PCT
        from hw.fpga.targets import get_target
        res = get_target(target).resources
        device = dict(max_luts=int(res["luts"].available * DENSE_LUT_PCT / 100), max_ffs=res["ffs"].available,
                      max_dsp=res["dsp"].available, max_bram=res["bram"].available)
        return cls(**{k: (given.get(k) if given.get(k) is not None else device.get(k)) for k in
                      ("max_luts", "max_ffs", "max_dsp", "max_bram")}, min_fps=given.get("min_fps"))


def fits_budget(row: dict, budget: Budget) -> list[str]:
    """What ``row`` exceeds (empty when it fits)."""
    res, over = row["resources"], []
    for key, limit, name in (("packed_luts", budget.max_luts, "LUTs"), ("ffs", budget.max_ffs, "flops"),
                             ("dsp", budget.max_dsp, "DSPs"), ("bram", budget.max_bram, "BRAMs")):
        if limit is not None and res[key] > limit:
            over.append(f"{name} {res[key]:,} > {limit:,}")
    if budget.min_fps is not None and row["fps"] < budget.min_fps:
        over.append(f"{row['fps']:,.0f} inferences/s < {budget.min_fps:,.0f}")
    return over


def recommend(rows: list[dict], budget: Budget, tolerance: float = 0.05) -> tuple[dict | None, str]:
    """The point to build and why: of the points inside the budget, the one with the fewest packed LUTs (then
    DSPs, BRAMs, the smaller batch) whose throughput is within ``tolerance`` of the fastest one's."""
    inside = [r for r in rows if not fits_budget(r, budget)]
    if not inside:
        return None, "no point fits the budget: raise a --max-* limit or lower --min-fps"
    fastest = max(inside, key=lambda r: r["fps"])
    near = [r for r in inside if r["fps"] >= fastest["fps"] * (1 - tolerance)]
    best = min(near, key=lambda r: (r["resources"]["packed_luts"], r["resources"]["dsp"], r["resources"]["bram"],
                                    r["point"]["batch"]))
    why = (f"the fastest point inside the budget is {fastest['label']} ({fastest['fps']:,.0f} inferences/s, "
           f"{fastest['resources']['packed_luts']:,} LUTs); ")
    if best is fastest:
        why += f"no point within {100 * tolerance:.0f}% of its throughput is cheaper"
    else:
        saved = fastest["resources"]["packed_luts"] - best["resources"]["packed_luts"]
        why += (f"{best['label']} reaches {100 * best['fps'] / fastest['fps']:.1f}% of it "
                f"({best['fps']:,.0f} inferences/s) with {saved:,} fewer LUTs, the cheapest point within "
                f"{100 * tolerance:.0f}% (--tolerance)")
    return best, why


# ---------------------------------------------------------------------------------------------------------------
# The sweep

def _row(point: Point, cycles_by_layer: dict, macs: int, resource_model, target: str, build_dir) -> dict:
    per_batch = sum(cycles_by_layer.values())
    per_inference = per_batch / point.batch
    report = measured_fmax(target, point, build_dir)
    if report is not None:
        fmax, source = report["fmax_mhz"], f"measured: place-and-route report {report.get('report_path')}"
    else:
        fmax, source = fmax_estimate(target, point.rows, point.cols)
    res = resource_model.predict(point.accelerator_params)
    return {"label": point.label, "point": asdict(point), "cycles_per_batch": per_batch,
            "cycles_per_inference": per_inference, "layers": cycles_by_layer,
            "utilization": macs / (per_inference * point.rows * point.cols),
            "fmax_mhz": fmax, "fmax_source": source,
            "fps": fmax * 1e6 / per_inference, "latency_ms": per_batch / (fmax * 1e3),
            "resources": res}


def _say(line):
    print(line, file=sys.stderr, flush=True)


def _cycles_sweep(model, configs, batches, *, workers, cluster, say, what):
    """Cycles of every ``configs`` item for ``batches``, through the sweep runner, with progress lines."""
    from sw.sweep import run_sweep
    jobs = [(str(model), asdict(c), tuple(batches)) for c in configs]
    t0 = time.monotonic()
    best = {"fps": 0.0}

    def progress(done, total, result):
        elapsed = time.monotonic() - t0
        left = elapsed / done * (total - done)
        b = str(batches[-1])
        cyc = sum(result["batches"][b].values()) / int(b)
        c = result["config"]
        if best["fps"] == 0.0 or cyc < best["cycles"]:
            best.update(fps=1.0, cycles=cyc, label=f"{c['rows']}x{c['cols']} {8 * c['bus_bytes']}b")
        if done == total or done % max(1, total // 20) == 0:
            say(f"  {what}: {done}/{total} points, {elapsed:.0f} s, about {left:.0f} s left; fewest cycles so far "
                f"{best['cycles']:,.0f}/inference ({best['label']})")

    return run_sweep(evaluate_cycles, jobs, workers=workers, cluster=cluster, progress=progress)


def explore(model=DEFAULT_MODEL, *, target="ecp5-85k", sizes=DEFAULT_SIZES, max_aspect=2.0,
            bus_bytes=(4, 8, 16), multipliers=("carry", "fabric", "dsp"), batch=8, batches=(1, 8, 32),
            depths=("small", "default", "large"), budget: Budget | None = None, tolerance=0.05, refine=4,
            workers=None, cluster=None, build_dir="build", say=_say) -> dict:
    """Run the sweep (module docstring) and return the result (what ``explore.json`` holds)."""
    from hw.fpga.resource_model import load_model
    t_start = time.monotonic()
    resource_model = load_model(target)
    from hw.fpga.resource_model import stale
    stale_fit = stale(resource_model)
    if stale_fit:
        say(f"warning: {stale_fit}; its stated errors are not of this design")
    budget = budget or Budget.for_target(target)
    points = design_points(target, sizes, max_aspect=max_aspect, bus_bytes=bus_bytes, multipliers=multipliers)
    points = [replace(p, batch=batch) for p in points]
    configs = sorted({p.config for p in points}, key=lambda c: (c.rows * c.cols, c.rows, c.bus_bytes))
    say(f"explore {Path(model).name} on {target}: {len(points)} hardware points ({len(configs)} cycle-model "
        f"configurations: the PE multiplier does not change a cycle), batch {batch}")
    results = _cycles_sweep(model, configs, [batch], workers=workers, cluster=cluster, say=say, what="stage 1")
    by_config = {HardwareConfig(**r["config"]): r for r in results}
    rows = [_row(p, by_config[p.config]["batches"][str(batch)], by_config[p.config]["macs_per_inference"],
                 resource_model, target, build_dir) for p in points]

    # ---- Stage 2: depths and batch sizes at the frontier points (the fastest in budget first).
    front = [r for r in pareto(rows) if not fits_budget(r, Budget(**{**asdict(budget), "min_fps": None}))][:refine]
    refined = []
    if front and (len(depths) > 1 or tuple(batches) != (batch,)):
        variants = []
        for r in front:
            p = Point(**r["point"])
            for d in depths:
                a, w, c, pd = DEPTH_PRESETS[d]
                variants.append(replace(p, act_depth=a, wgt_depth=w, acc_depth=c, param_depth=pd))
        vconfigs = sorted({v.config for v in variants}, key=lambda c: (c.rows * c.cols, c.bus_bytes, c.act_depth))
        say(f"stage 2: {len(front)} frontier points x {len(depths)} buffer depths x batches "
            f"{', '.join(map(str, batches))} ({len(vconfigs)} configurations)")
        vres = _cycles_sweep(model, vconfigs, list(batches), workers=workers, cluster=cluster, say=say,
                             what="stage 2")
        vby = {HardwareConfig(**r["config"]): r for r in vres}
        seen = {json.dumps(r["point"], sort_keys=True) for r in rows}
        for v in variants:
            res = vby[v.config]
            for b in batches:
                q = replace(v, batch=b)
                if json.dumps(asdict(q), sort_keys=True) in seen:
                    continue
                seen.add(json.dumps(asdict(q), sort_keys=True))
                refined.append(_row(q, res["batches"][str(b)], res["macs_per_inference"], resource_model, target,
                                    build_dir))
    rows += refined
    frontier = pareto(rows)
    inside = [r for r in rows if not fits_budget(r, budget)]
    chosen, why = recommend(rows, budget, tolerance)
    return {"model": str(model), "target": target, "budget": asdict(budget), "tolerance": tolerance,
            "resource_model": {"path": str(Path(resource_model_path(target)).relative_to(ROOT)),
                               "errors": resource_model.errors, "packing": resource_model.packing,
                               "stale": stale_fit},
            "fmax_note": "Fmax is measured where a place-and-route report of that configuration is cached "
                         "(fmax_source says so), else estimated from the measured figures in docs/fpga.md",
            "points": len(rows), "frontier": frontier, "frontier_luts": pareto_2d(rows),
            "in_budget": len(inside), "in_budget_frontier": pareto(inside) if inside else [],
            "recommended": chosen, "why": why, "wall_s": round(time.monotonic() - t_start, 1),
            "all": rows}


def resource_model_path(target):
    from hw.fpga.resource_model import model_path
    return model_path(target)


# ---------------------------------------------------------------------------------------------------------------
# Output

def table(rows: list[dict], *, limit=None, placed=False) -> str:
    """The rows as a text table ('~' marks an estimated Fmax); ``placed`` adds the LUTs nextpnr packed."""
    head = (f"{'point':<34} {'cycles/inf':>11} {'util':>6} {'Fmax':>6} {'inf/s':>9} {'lat ms':>7} "
            f"{'LUTs':>7} {'FFs':>7} {'DSP':>4} {'BRAM':>4}" + (f" {'placed':>7}" if placed else ""))
    lines = [head, "-" * len(head)]
    for r in rows[:limit]:
        res = r["resources"]
        est = "~" if r["fmax_source"].startswith("estimate") else " "
        lines.append(f"{r['label']:<34} {r['cycles_per_inference']:>11,.0f} {100 * r['utilization']:>5.1f}% "
                     f"{est}{r['fmax_mhz']:>5.1f} {r['fps']:>9,.0f} {r['latency_ms']:>7.2f} "
                     f"{res['packed_luts']:>7,} {res['ffs']:>7,} {res['dsp']:>4} {res['bram']:>4}"
                     + (f" {r['placed']['packed_luts']:>7,}" if placed and "placed" in r else ""))
    return "\n".join(lines)


def write_outputs(result: dict, out_dir: Path) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "explore.json", "csv": out_dir / "frontier.csv", "png": out_dir / "frontier.png"}
    paths["json"].write_text(json.dumps(result, indent=1) + "\n")
    with paths["csv"].open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["label", "rows", "cols", "bus_bytes", "pe_multiplier", "dsp_pes", "act_depth", "wgt_depth",
                    "acc_depth", "batch", "cycles_per_inference", "utilization", "fmax_mhz", "fmax_source", "fps",
                    "latency_ms", "packed_luts", "yosys_luts", "ffs", "dsp", "bram"])
        for r in result["frontier"]:
            p, res = r["point"], r["resources"]
            w.writerow([r["label"], p["rows"], p["cols"], p["bus_bytes"], p["pe_multiplier"], p["dsp_pes"],
                        p["act_depth"], p["wgt_depth"], p["acc_depth"], p["batch"],
                        round(r["cycles_per_inference"], 1), round(r["utilization"], 4), r["fmax_mhz"],
                        r["fmax_source"], round(r["fps"], 1), round(r["latency_ms"], 4), res["packed_luts"],
                        res["luts"], res["ffs"], res["dsp"], res["bram"]])
    try:
        plot(result, paths["png"])
    except ImportError:
        paths["png"] = None
        _say("no plot: matplotlib is not installed (pip install -e .[plot])")
    return paths


def plot(result: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, budget = result["all"], result["budget"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 5.2), sharey=True)
    chosen = result["recommended"]
    for ax, key, name, limit in ((axes[0], "packed_luts", "LUT4s (packed estimate)", budget["max_luts"]),
                                 (axes[1], "dsp", "MULT18X18D DSP blocks", budget["max_dsp"]),
                                 (axes[2], "bram", "DP16KD block RAMs", budget["max_bram"])):
        xs = [r["resources"][key] for r in rows]
        ys = [r["fps"] for r in rows]
        colors = ["tab:blue" if not fits_budget(r, Budget(**budget)) else "0.75" for r in rows]
        ax.scatter(xs, ys, s=12, c=colors, alpha=0.7, linewidths=0)
        stair = pareto_2d(rows, key)
        ax.step([r["resources"][key] for r in stair], [r["fps"] for r in stair], where="post", color="tab:red",
                lw=1.5, label="frontier")
        for r in stair[-6:]:
            ax.annotate(f"{r['point']['rows']}x{r['point']['cols']}", (r["resources"][key], r["fps"]),
                        fontsize=7, xytext=(3, -9), textcoords="offset points")
        if limit is not None:
            ax.axvline(limit, color="0.3", ls="--", lw=1, label="budget")
        if chosen is not None:
            ax.scatter([chosen["resources"][key]], [chosen["fps"]], marker="*", s=220, c="gold", edgecolors="k",
                       zorder=5, label=f"recommended: {chosen['label']}")
        ax.set_xlabel(name)
        ax.set_yscale("log")
        ax.set_xscale("log")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("inferences / s (Fmax / cycles per inference)")
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle(f"{Path(result['model']).name} on {result['target']}: {result['points']} points "
                 f"(blue: inside the budget; cycles from the exact cycle model, resources from the fitted model)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------------------
# The scaling view: model scale against hardware

def scaling(models, *, target="ecp5-85k", sizes=(2, 4, 8, 16, 32), bus_bytes=None, batch=8, workers=None,
            cluster=None, build_dir="build", say=_say) -> dict:
    """For each model and square array size: cycles per inference, PE utilization, inferences/s, latency and the
    resources (the same rows as the exploration, on the carry-cell PE with the flow's automatic DSP PEs past 8x8;
    bus ``bus_bytes`` or, by default, 8 bytes up to 8x8 and 16 above, which is what keeps a 16x16 fed)."""
    from hw.fpga.flow import auto_dsp_pes
    from hw.fpga.resource_model import load_model
    resource_model = load_model(target)
    points = [Point(n, n, bus_bytes or (8 if n <= 8 else 16), dsp_pes=auto_dsp_pes(target, n, n), batch=batch)
              for n in sizes]
    out = {"target": target, "batch": batch, "models": {}}
    for model in models:
        say(f"scaling: {Path(model).name} on {len(points)} array sizes")
        res = _cycles_sweep(model, [p.config for p in points], [batch], workers=workers, cluster=cluster, say=say,
                            what=Path(model).stem)
        rows = [_row(p, r["batches"][str(batch)], r["macs_per_inference"], resource_model, target, build_dir)
                for p, r in zip(points, res)]
        for r in rows:
            r["fits_device"] = not fits_budget(r, Budget.for_target(target))
        out["models"][str(model)] = {"macs_per_inference": res[0]["macs_per_inference"], "rows": rows}
    return out


def scaling_table(result: dict) -> str:
    lines = []
    for model, data in result["models"].items():
        lines.append(f"{Path(model).name}: {data['macs_per_inference']:,} MACs per inference on the accelerator, "
                     f"batch {result['batch']}")
        head = (f"{'array':>7} {'bus':>4} {'cycles/inf':>11} {'util':>6} {'Fmax':>6} {'inf/s':>9} {'LUTs':>7} "
                f"{'DSP':>4} {'BRAM':>4} {'inf/s per kLUT':>14} {'fits':>5}")
        lines += [head, "-" * len(head)]
        for r in data["rows"]:
            p, res = r["point"], r["resources"]
            lines.append(f"{p['rows']:>3}x{p['cols']:<3} {8 * p['bus_bytes']:>4} {r['cycles_per_inference']:>11,.0f} "
                         f"{100 * r['utilization']:>5.1f}% {r['fmax_mhz']:>6.1f} {r['fps']:>9,.0f} "
                         f"{res['packed_luts']:>7,} {res['dsp']:>4} {res['bram']:>4} "
                         f"{1000 * r['fps'] / res['packed_luts']:>14.2f} {'yes' if r['fits_device'] else 'no':>5}")
    return "\n".join(lines)


def scaling_plot(result: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    for model, data in result["models"].items():
        rows = data["rows"]
        pes = [r["point"]["rows"] * r["point"]["cols"] for r in rows]
        name = Path(model).stem
        axes[0].plot(pes, [r["fps"] for r in rows], "o-", label=name)
        axes[1].plot(pes, [100 * r["utilization"] for r in rows], "o-", label=name)
        axes[2].plot([r["resources"]["packed_luts"] for r in rows], [r["fps"] for r in rows], "o-", label=name)
        for r, x in zip(rows, pes):
            axes[0].annotate(f"{r['point']['rows']}x{r['point']['cols']}", (x, r["fps"]), fontsize=7,
                             xytext=(3, -9), textcoords="offset points")
    axes[0].set(xscale="log", yscale="log", xlabel="PEs (rows x cols)", ylabel="inferences / s")
    axes[1].set(xscale="log", xlabel="PEs", ylabel="PE utilization over the whole model (%)", ylim=(0, 100))
    axes[2].set(xscale="log", yscale="log", xlabel="LUT4s (packed estimate)", ylabel="inferences / s")
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Scaling on {result['target']}: exact cycle model, fitted resources, Fmax measured or estimated",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------------------
# Verification of the chosen point

def verify(result: dict, *, build_dir="build", pnr=True, pnr_timeout=7200, images=None, say=_say) -> dict:
    """Check the recommended point for real (module docstring, step 4); returns the checks (also in the
    result under ``verification``). A failed check sets ``ok`` False."""
    chosen = result["recommended"]
    point = Point(**chosen["point"])
    target = result["target"]
    checks = {"point": chosen["label"]}

    # ---- RTL cycles on the model (Verilator) against the prediction.
    say(f"verify {point.label}: running the model on the RTL (Verilator backend; builds in 20-45 s)")
    t0 = time.monotonic()
    cycles = rtl_cycles(result["model"], point, images=images)
    predicted = chosen["cycles_per_batch"]
    checks["rtl"] = {"measured_cycles_per_batch": cycles["total"], "predicted_cycles_per_batch": predicted,
                     "layers_measured": cycles["layers"], "layers_predicted": chosen["layers"],
                     "outputs_match_reference": cycles["outputs_match"], "equal": cycles["total"] == predicted
                     and cycles["layers"] == chosen["layers"], "wall_s": round(time.monotonic() - t0, 1)}
    say(f"  RTL cycles per batch of {point.batch}: {cycles['total']:,} measured, {predicted:,} predicted "
        f"({'equal' if checks['rtl']['equal'] else 'DIFFERENT'}); outputs "
        f"{'match' if cycles['outputs_match'] else 'DIFFER FROM'} the int8 reference")

    # ---- Yosys resources against the model.
    from hw.fpga.resource_model import load_model
    from hw.fpga.synth_only import synth_cells
    model = load_model(target)
    say(f"verify {point.label}: Yosys synthesis (no place-and-route; a few minutes)")
    record = synth_cells(target=target, build_dir=build_dir, log=say, **point.accelerator_params)
    pred = model.predict(point.accelerator_params)
    res_checks = {}
    for kind in ("luts", "ffs", "dsp", "bram"):
        measured = record["resources"][kind]
        err = 100.0 * (pred[kind] - measured) / measured if measured else 0.0
        allowed = model.errors[kind]["stated_pct"]
        res_checks[kind] = {"measured": measured, "predicted": pred[kind], "error_pct": round(err, 2),
                            "stated_error_pct": allowed, "within": abs(err) <= max(allowed, 0.0) + 1e-9}
    checks["resources"] = res_checks
    say("  resources: " + ", ".join(f"{k} {v['measured']:,} measured / {v['predicted']:,} predicted "
                                    f"({v['error_pct']:+.1f}%, stated {v['stated_error_pct']:.1f}%)"
                                    for k, v in res_checks.items()))

    # ---- Fmax by place-and-route.
    if pnr:
        from hw.fpga.flow import synthesize
        t0 = time.monotonic()
        if "placed" in chosen:      # placed and routed as a finalist: its report, not a second run of the flow
            say(f"verify {point.label}: Fmax from its place-and-route as a finalist ({chosen['placed']['report']})")
            report = json.loads(Path(chosen["placed"]["report"]).read_text())
        else:
            say(f"verify {point.label}: place-and-route for Fmax (reuses the flow's report cache; an 8x8 takes "
                f"about 8 minutes on two idle cores, a 4x4 about 6, a 16x16 about an hour)")
            report = synthesize(target=target, rows=point.rows, cols=point.cols, acc_depth=point.acc_depth,
                                dsp_pes=point.dsp_pes, pe_multiplier=point.pe_multiplier,
                                accelerator_params=point.flow_params,
                                bitstream=False, reuse=True, build_dir=build_dir, timeout_s=pnr_timeout, log=say)
        fmax = report.get("fmax_mhz")
        estimated = chosen.get("fmax_estimated_mhz", chosen["fmax_mhz"])
        checks["pnr"] = {"fmax_mhz": fmax, "estimated_mhz": estimated, "report": report["report_path"],
                         "packed_luts": report["resources"]["luts"]["count"],
                         "packed_luts_predicted": pred["packed_luts"],
                         "limited_by": report.get("limited_by"), "wall_s": round(time.monotonic() - t0, 1),
                         "fps_measured_fmax": fmax * 1e6 / chosen["cycles_per_inference"] if fmax else None}
        say(f"  Fmax {fmax} MHz measured (estimate was {estimated} MHz): "
            f"{checks['pnr']['fps_measured_fmax']:,.0f} inferences/s; packed LUTs "
            f"{checks['pnr']['packed_luts']:,} (predicted {pred['packed_luts']:,})")
    checks["ok"] = bool(checks["rtl"]["equal"] and checks["rtl"]["outputs_match_reference"]
                        and all(v["within"] for v in res_checks.values()))
    return checks


def _hardware_key(row: dict) -> str:
    """What place-and-route depends on: the point without its batch size."""
    return json.dumps({k: v for k, v in row["point"].items() if k != "batch"}, sort_keys=True)


def finalists(result: dict, k: int) -> list[dict]:
    """The points whose Fmax decides the recommendation, one per hardware configuration: the recommended one,
    the fastest in the budget (the recommendation is made against it), then the points of the in-budget frontier
    nearest the recommended one in throughput, ``k`` in all."""
    chosen = result["recommended"]
    if chosen is None or k < 1:
        return []
    picked, seen = [chosen], {_hardware_key(chosen)}
    front = result["in_budget_frontier"]
    fastest = max(front, key=lambda r: r["fps"]) if front else chosen
    order = [fastest] + sorted(front, key=lambda r: abs(math.log(r["fps"] / chosen["fps"])))
    for row in order:
        if len(picked) >= k:
            break
        if _hardware_key(row) not in seen:
            picked.append(row)
            seen.add(_hardware_key(row))
    return picked


def place_and_route(job) -> dict:
    """``job = (target, Point fields, build dir, timeout)``: the FPGA flow (Yosys, nextpnr; no bitstream) on that
    point, reusing the flow's report cache; ``{fmax_mhz, packed_luts, dsp, bram, report, limited_by, wall_s}``.
    Runs in a sweep worker."""
    target, fields, build_dir, timeout = job
    point = Point(**fields)
    from hw.fpga.flow import synthesize
    t0 = time.monotonic()
    report = synthesize(target=target, rows=point.rows, cols=point.cols, acc_depth=point.acc_depth,
                        dsp_pes=point.dsp_pes, pe_multiplier=point.pe_multiplier,
                        accelerator_params=point.flow_params, bitstream=False, reuse=True, build_dir=build_dir,
                        timeout_s=timeout, log=_say)     # the flow's own progress lines (a minute apart at most)
    res = report["resources"]
    return {"fmax_mhz": report.get("fmax_mhz"), "packed_luts": res["luts"]["count"], "dsp": res["dsp"]["count"],
            "bram": res["bram"]["count"], "report": report.get("report_path"), "limited_by": report.get("limited_by"),
            "wall_s": round(time.monotonic() - t0, 1)}


def apply_place_and_route(result: dict, measured: dict[str, dict], budget: Budget) -> None:
    """Put the measured figures (``{hardware key: place_and_route() result}``) into every row of that hardware
    and recommend again among the measured finalists only (their packed LUTs, DSPs and BRAMs as placed)."""
    for row in result["all"]:
        m = measured.get(_hardware_key(row))
        if m is None or not m["fmax_mhz"]:
            continue
        row["fmax_estimated_mhz"] = row["fmax_mhz"]
        row["fmax_mhz"], row["fmax_source"] = m["fmax_mhz"], f"measured: place-and-route report {m['report']}"
        row["fps"] = m["fmax_mhz"] * 1e6 / row["cycles_per_inference"]
        row["latency_ms"] = row["cycles_per_batch"] / (m["fmax_mhz"] * 1e3)
        row["placed"] = {"packed_luts": m["packed_luts"], "dsp": m["dsp"], "bram": m["bram"], "report": m["report"]}
    placed = [dict(r, resources={**r["resources"], **{k: r["placed"][k] for k in ("packed_luts", "dsp", "bram")}})
              for r in result["all"] if "placed" in r]
    result["recommended_before_pnr"] = result["recommended"]["label"] if result["recommended"] else None
    chosen, why = recommend(placed, budget, result["tolerance"])
    if chosen is None:
        result["recommended"], result["why"] = None, (f"none of the {len(measured)} placed-and-routed finalists "
                                                      f"fits the budget as placed: {why}")
        return
    # The row itself (with the model's resources; its placed figures under "placed").
    result["recommended"] = next(r for r in result["all"] if r["label"] == chosen["label"])
    result["why"] = (f"after place-and-route of {len(measured)} finalists (measured Fmax and packed LUTs): {why}"
                     + ("" if chosen["label"] == result["recommended_before_pnr"] else
                        f"; before place-and-route it was {result['recommended_before_pnr']}"))
    result["frontier"] = pareto(result["all"])


def pnr_finalists(result: dict, budget: Budget, *, k: int = 3, build_dir="build", timeout=7200, workers=None,
                  cluster=None, say=_say) -> dict[str, dict]:
    """Place and route :func:`finalists` (in parallel) and :func:`apply_place_and_route` the results."""
    from sw.sweep import run_sweep
    rows = finalists(result, k)
    if not rows:
        return {}
    from sw.sweep import default_workers
    workers = min(len(rows), workers or default_workers())
    say(f"place-and-route of {len(rows)} finalists, {workers} at a time (the flow's report cache is reused; an "
        f"8x8 takes about 8 minutes of a core, a 16x16 about an hour): " + ", ".join(r["label"] for r in rows))
    t0 = time.monotonic()

    def progress(done, total, m):
        say(f"  place-and-route {done}/{total} done ({time.monotonic() - t0:.0f} s): {m['fmax_mhz']} MHz, "
            f"{m['packed_luts']:,} LUTs placed")

    jobs = [(result["target"], r["point"], build_dir, timeout) for r in rows]
    out = run_sweep(place_and_route, jobs, workers=workers, cluster=cluster, progress=progress)
    measured = {_hardware_key(r): m for r, m in zip(rows, out)}
    apply_place_and_route(result, measured, budget)
    result["finalists"] = [{"label": r["label"], **m} for r, m in zip(rows, out)]
    return measured


def rtl_cycles(model_path, point: Point, *, images=None) -> dict:
    """One batch of ``point.batch`` inputs through the model on the Verilator backend: its CYCLES per layer, and
    whether the outputs equal the CPU int8 path's."""
    import numpy as np

    from sw.driver import Driver
    model = _model(str(model_path))
    if images is None:
        images = sample_inputs(model_path, point.batch)
    rtl = Driver(model, backend="verilator", config=point.config, batch_size=point.batch, workers=1).run(images)
    cpu = Driver(model, backend="cpu", config=point.config, batch_size=point.batch).run(images)
    layers = {s.name: s.cycles for s in rtl.layers if s.target == "accelerator"}
    return {"total": rtl.cycles, "layers": layers, "outputs_match": bool(np.array_equal(rtl.logits, cpu.logits))}


def sample_inputs(model_path, n: int):
    """``n`` inputs for a check run: MNIST test images for the MNIST CNN, else seeded random inputs."""
    import numpy as np
    model = _model(str(model_path))
    if Path(model_path).resolve() == DEFAULT_MODEL.resolve():
        from sw.mnist import load_mnist
        return load_mnist("test")[0][:n]
    if hasattr(model, "network"):      # a legacy network: uint8 images through its own input quantization
        return np.random.default_rng(0).integers(0, 256, size=(n, *model.network.input_shape), dtype=np.uint8)
    return np.random.default_rng(0).integers(-128, 128, size=(n, *model.input.shape), dtype=np.int8)


# ---------------------------------------------------------------------------------------------------------------
# Command line

def _ints(text):
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, not {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", nargs="?", default=str(DEFAULT_MODEL),
                        help="model file (default: the MNIST CNN, models/mnist_int8.npz)")
    parser.add_argument("--target", default="ecp5-85k", help="FPGA target (default ecp5-85k)")
    parser.add_argument("--max-luts", type=int, help="LUT4 budget (default: 90%% of the device, nextpnr's limit)")
    parser.add_argument("--max-dsp", type=int, help="DSP block budget (default: the device's)")
    parser.add_argument("--max-bram", type=int, help="block RAM budget (default: the device's)")
    parser.add_argument("--min-fps", type=float, help="least inferences/s")
    parser.add_argument("--sizes", type=_ints, default=None,
                        help="array rows and columns to combine (default 4,6,8,12,16,24,32; 2 and 3 work, but "
                             "the cycle model takes minutes on them; with --scaling the square sizes, default "
                             "2,4,8,16,32)")
    parser.add_argument("--scaling", action="store_true",
                        help="the scaling view instead: throughput, utilization and cost against array size")
    parser.add_argument("--also", default="", metavar="MODEL,...",
                        help="with --scaling: more models to put beside MODEL")
    parser.add_argument("--max-aspect", type=float, default=2.0, help="largest rows/cols ratio (default 2)")
    parser.add_argument("--bus-bytes", type=_ints, default=None,
                        help="AXI widths in bytes (default 4,8,16; --scaling: 8 up to 8x8, 16 above)")
    parser.add_argument("--multipliers", default="carry,fabric,dsp",
                        help="PE multiplier kinds: carry, fabric, dsp (default all three)")
    parser.add_argument("--batch", type=int, default=8, help="batch size of the hardware sweep (default 8)")
    parser.add_argument("--batches", type=_ints, default=(1, 8, 32),
                        help="batch sizes swept at the frontier (default 1,8,32)")
    parser.add_argument("--depths", default="small,default,large",
                        help="buffer depth presets swept at the frontier: " + ", ".join(
                            f"{k}={'/'.join(map(str, v[:3]))}" for k, v in DEPTH_PRESETS.items()))
    parser.add_argument("--refine", type=int, default=4, help="frontier points refined in stage 2 (default 4)")
    parser.add_argument("--tolerance", type=float, default=0.05,
                        help="recommend the cheapest point within this fraction of the fastest (default 0.05)")
    parser.add_argument("--workers", type=int, default=None, help="local processes (default: one per core)")
    parser.add_argument("--cluster", default=None, metavar="ADDRESS",
                        help="Dask distributed scheduler to run the sweep on (e.g. tcp://host:8786)")
    parser.add_argument("--no-verify", dest="verify", action="store_false",
                        help="skip checking the recommended point on the RTL, Yosys and place-and-route")
    parser.add_argument("--no-pnr", dest="pnr", action="store_false", help="verify without place-and-route")
    parser.add_argument("--pnr-points", type=int, default=3,
                        help="finalists to place and route before the recommendation is final: the recommended "
                             "point, the fastest in the budget and the recommended one's nearest in-budget frontier "
                             "neighbours (default 3; 1: the recommended one only)")
    parser.add_argument("--pnr-timeout", type=float, default=7200, help="seconds per place-and-route tool run")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default build/explore/<model>)")
    parser.add_argument("--build-dir", default="build")


def run(args) -> int:
    from hw.fpga.targets import TARGETS
    if args.target not in TARGETS:
        print(f"error: unknown --target {args.target!r}; choose one of {', '.join(TARGETS)}", file=sys.stderr)
        return 2
    model = Path(args.model)
    if not model.is_file():
        print(f"error: model file {model} not found", file=sys.stderr)
        return 2
    args.bus_bytes_given = args.bus_bytes is not None
    args.bus_bytes = args.bus_bytes or (4, 8, 16)
    if args.scaling:
        return _run_scaling(args, model)
    args.sizes = args.sizes or DEFAULT_SIZES
    mults = tuple(m.strip() for m in args.multipliers.split(",") if m.strip())
    bad = [m for m in mults if m not in ("carry", "fabric", "dsp")]
    depths = tuple(d.strip() for d in args.depths.split(",") if d.strip())
    bad_d = [d for d in depths if d not in DEPTH_PRESETS]
    if bad or bad_d or min(args.sizes) < 2 or max(args.sizes) > 32 or args.batch < 1:
        print(f"error: bad sweep option ({', '.join(bad + bad_d) or 'sizes must be 2..32, batch >= 1'}); "
              f"multipliers: carry, fabric, dsp; depths: {', '.join(DEPTH_PRESETS)}", file=sys.stderr)
        return 2
    budget = Budget.for_target(args.target, max_luts=args.max_luts, max_dsp=args.max_dsp, max_bram=args.max_bram,
                               min_fps=args.min_fps)
    t0 = time.monotonic()
    try:
        result = explore(model, target=args.target, sizes=args.sizes, max_aspect=args.max_aspect,
                         bus_bytes=args.bus_bytes, multipliers=mults, batch=args.batch, batches=args.batches,
                         depths=depths, budget=budget, tolerance=args.tolerance, refine=args.refine,
                         workers=args.workers, cluster=args.cluster, build_dir=args.build_dir)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        from sw.sweep import ClusterUnavailable
        if isinstance(exc, ClusterUnavailable):
            print(f"error: {exc}", file=sys.stderr)
            return 2
        raise
    out = args.out or Path(args.build_dir) / "explore" / model.stem
    print(f"Pareto frontier ({len(result['frontier'])} of {result['points']} points; '~' = Fmax estimated):")
    print(table(result["frontier"]))
    errs = result["resource_model"]["errors"]
    print(f"resources: fitted model, held-out error (max) LUTs {errs['luts']['held_out_max_abs_pct']:.2f}%, flops "
          f"{errs['ffs']['held_out_max_abs_pct']:.2f}%, DSP {errs['dsp']['held_out_max_abs_pct']:.1f}%, BRAM "
          f"{errs['bram']['held_out_max_abs_pct']:.1f}% (stated: LUTs {errs['luts']['stated_pct']:.1f}%, flops "
          f"{errs['ffs']['stated_pct']:.1f}%); LUTs packed = Yosys x "
          f"{result['resource_model']['packing']:.3f}")
    print(f"{result['in_budget']} points fit the budget "
          f"({', '.join(f'{k} {v:,}' for k, v in result['budget'].items() if v is not None)})")
    if result["recommended"] is None:
        print(f"no recommendation: {result['why']}")
        write_outputs(result, out)
        return 1
    print(f"recommended: {result['recommended']['label']}: {result['why']}")
    status = 0
    if args.verify and args.pnr and args.pnr_points > 0:
        from hw.fpga.flow import FlowError
        try:
            pnr_finalists(result, budget, k=args.pnr_points, build_dir=args.build_dir, timeout=args.pnr_timeout,
                          workers=args.workers, cluster=args.cluster)
        except FlowError as exc:
            result["verification"] = {"ok": False, "error": str(exc).splitlines()[0]}
            print(f"place-and-route failed: {exc}", file=sys.stderr)
            write_outputs(result, out)
            return 1
        print("finalists after place-and-route:")
        print(table(sorted((r for r in result["all"] if "placed" in r), key=lambda r: -r["fps"]), placed=True))
        if result["recommended"] is None:
            print(f"no recommendation: {result['why']}")
            write_outputs(result, out)
            return 1
        print(f"recommended: {result['recommended']['label']}: {result['why']}")
    if args.verify:
        try:
            result["verification"] = checks = verify(result, build_dir=args.build_dir, pnr=args.pnr,
                                                     pnr_timeout=args.pnr_timeout)
        except Exception as exc:       # noqa: BLE001 - a tool failure is reported, the sweep's results kept
            from hw.fpga.flow import FlowError
            if not isinstance(exc, FlowError):
                raise
            result["verification"] = {"ok": False, "error": str(exc).splitlines()[0]}
            print(f"verification failed: {exc}", file=sys.stderr)
            status = 1
        else:
            print(f"verification: {'PASSED' if checks['ok'] else 'FAILED'} "
                  f"(RTL cycles {'=' if checks['rtl']['equal'] else '!='} prediction; resources "
                  f"{'within' if all(v['within'] for v in checks['resources'].values()) else 'OUTSIDE'} the stated "
                  f"error" + (f"; Fmax {checks['pnr']['fmax_mhz']} MHz measured" if 'pnr' in checks else "") + ")")
            status = 0 if checks["ok"] else 1
    result["wall_s"] = round(time.monotonic() - t0, 1)
    paths = write_outputs(result, out)
    print(f"wrote {paths['json']}, {paths['csv']}" + (f", {paths['png']}" if paths["png"] else "")
          + f" ({result['wall_s']:.0f} s)")
    return status


def _run_scaling(args, model) -> int:
    models = [model] + [Path(m) for m in args.also.split(",") if m.strip()]
    missing = [str(m) for m in models if not m.is_file()]
    if missing:
        print(f"error: model file(s) not found: {', '.join(missing)}", file=sys.stderr)
        return 2
    sizes = args.sizes or (2, 4, 8, 16, 32)
    if min(sizes) < 2 or max(sizes) > 32:
        print("error: --sizes must lie in 2..32", file=sys.stderr)
        return 2
    result = scaling(models, target=args.target, sizes=sizes, batch=args.batch, workers=args.workers,
                     cluster=args.cluster, build_dir=args.build_dir,
                     bus_bytes=args.bus_bytes[0] if args.bus_bytes_given else None)
    print(scaling_table(result))
    out = args.out or Path(args.build_dir) / "explore" / "scaling"
    out.mkdir(parents=True, exist_ok=True)
    (out / "scaling.json").write_text(json.dumps(result, indent=1) + "\n")
    try:
        scaling_plot(result, out / "scaling.png")
        print(f"wrote {out / 'scaling.json'}, {out / 'scaling.png'}")
    except ImportError:
        print(f"wrote {out / 'scaling.json'} (no plot: pip install -e .[plot])")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="systolic8 explore", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
