"""Mutation testing of the RTL tests: ``make mutate`` (``python -m sim.mutation``).

Every mutant of the catalogue (:mod:`sim.mutants`) is applied alone to a scratch copy of the tree (a temporary
folder outside the worktree, removed afterwards), checked to change the generated Verilog (a 4x4 array on a
64-bit bus, ``src`` attributes stripped; a mutant that does not is reported as ``not-a-mutant``), then run through the tiers of the suite in order until one fails:

1. ``block``: the Amaranth-simulator tests of the mutated block (seconds);
2. ``rtl``: the Verilator-backend tests, the fuzz slice of ``tests/sim/test_fuzz.py`` (random legal and illegal
   programs and random CNNs, golden simulator against the RTL) and the cycle model's directed programs;
3. ``cocotb``: the block's cocotb tests (Icarus and Verilator) and the accelerator's cocotb tests;
4. ``rest``: the other tests that run the RTL (cycle model, driver, programs, bench).

Every tier is part of ``make test``, so a killed mutant is one ``make test`` kills. A tier that runs past its
timeout kills the mutant too (``make test`` would not pass), reported as such. Results go to
``build/reports/mutation.json`` (mutant, block, status, the tier and test that killed it, seconds) and a Markdown
table beside it (``mutation.md``) for docs/verification.md.

Options: ``--mutants`` (``MUTANTS=``: comma-separated names, blocks or glob patterns), ``--workers`` (a local
process pool, default one per core), ``--tiers`` (a prefix of the tier list), ``--list``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .mutants import CATALOGUE, Mutant, MutantError, apply, select

ROOT = Path(__file__).resolve().parent.parent

#: The Amaranth-simulator tests of each block (tier 1).
BLOCK_TESTS = {
    "pe": ["tests/hw/test_pe.py", "tests/hw/test_systolic_array.py"],
    "systolic_array": ["tests/hw/test_systolic_array.py"],
    "epilogue": ["tests/hw/test_epilogue.py"],
    "gemm_engine": ["tests/hw/test_gemm_engine.py"],
    "token_queue": ["tests/hw/test_token_queue.py", "tests/hw/test_dispatcher.py"],
    "dispatcher": ["tests/hw/test_dispatcher.py"],
    "instruction_fetch": ["tests/hw/test_instruction_fetch.py"],
    "load_unit": ["tests/hw/test_load_unit.py"],
    "compute_unit": ["tests/hw/test_compute_unit.py"],
    "store_unit": ["tests/hw/test_store_unit.py"],
    "axi4_master": ["tests/hw/test_axi4_master.py"],
    "read_arbiter": ["tests/hw/test_load_unit.py"],
    "axi4_lite": ["tests/hw/test_axi4_lite.py"],
    "accelerator": [],
}
#: Cocotb tests of each block (tier 3, before the accelerator's).
COCOTB_TESTS = {
    "pe": ["tests/hw/test_gemm_engine_cocotb.py"], "systolic_array": ["tests/hw/test_gemm_engine_cocotb.py"],
    "epilogue": ["tests/hw/test_epilogue.py", "tests/hw/test_gemm_engine_cocotb.py"],
    "gemm_engine": ["tests/hw/test_gemm_engine_cocotb.py"],
    "axi4_master": ["tests/hw/test_axi4_master.py"], "axi4_lite": ["tests/hw/test_axi4_lite.py"],
}
RTL_TESTS = ["tests/sim/test_fuzz.py", "tests/sim/test_verilator_backend.py",
             "tests/sim/test_cycle_model.py::test_directed_programs_match_rtl_exactly"]
REST_TESTS = ["tests/sim/test_cycle_model.py", "tests/sw/test_driver.py", "tests/sim/test_programs.py",
              "tests/sim/test_bench.py", "tests/hw/test_isa.py"]
TIERS = ("block", "rtl", "cocotb", "rest")
TIER_TIMEOUT = {"block": 600, "rtl": 1200, "cocotb": 1800, "rest": 1800}

#: Configurations whose generated Verilog must change (rows, cols, data_width): one, generation is a third of a
#: killed mutant's time.
VERILOG_CONFIGS = ((4, 4, 64),)
_SRC = re.compile(r"\(\* src = \"[^\"]*\" \*\)")


def tier_commands(mutant: Mutant) -> list[tuple[str, list[str]]]:
    """(tier, pytest arguments) for ``mutant``, empty tiers left out."""
    block = BLOCK_TESTS.get(mutant.block, [])
    cocotb = COCOTB_TESTS.get(mutant.block, [])
    tiers = [("block", [*block, "-m", "not cocotb"] if block else []),
             ("rtl", list(RTL_TESTS)),
             ("cocotb", sorted(set(cocotb)) + ["tests/hw/test_accelerator_cocotb.py", "-m", "cocotb"]),
             ("rest", list(REST_TESTS))]
    return [(name, args) for name, args in tiers if args]


def tree_files(root: Path = ROOT) -> list[str]:
    """The tree's files: tracked and untracked-but-not-ignored (what a fresh clone plus local work holds)."""
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=root, check=True,
                         capture_output=True).stdout.decode()
    return [p for p in out.split("\0") if p and (root / p).is_file()]


def scratch_copy(dest: Path, root: Path = ROOT, files=None) -> Path:
    """Copy the tree into ``dest`` (with ``.venv`` linked, not copied)."""
    for rel in files if files is not None else tree_files(root):
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, target)
    venv = root / ".venv"
    if venv.exists():
        (dest / ".venv").symlink_to(venv.resolve())
    return dest


def _env(tree: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(tree)
    env["S8_VERILATOR_QUICK"] = "1"      # each mutant's design is built once and runs briefly: build it fast
    env.pop("PYTEST_XDIST_WORKER", None)
    return env


_GENERATE = """
import sys
from hw.generate import generate_accelerator
for rows, cols, width in {configs}:
    generate_accelerator(rows=rows, cols=cols, act_depth=64, wgt_depth=64, acc_depth=32, param_depth=8,
                         data_width=width, out_dir=sys.argv[1], force=True)
"""


def generated_verilog(tree: Path, out: Path) -> dict:
    """The accelerator's Verilog for :data:`VERILOG_CONFIGS`, generated from ``tree``, ``src`` attributes removed."""
    out.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([sys.executable, "-c", _GENERATE.format(configs=VERILOG_CONFIGS), str(out)], cwd=tree,
                          env=_env(tree), capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["generation failed"]}
    return {p.name: _SRC.sub("", p.read_text()) for p in sorted(out.glob("*.v"))}


_FAILED = re.compile(r"^(FAILED|ERROR) (\S+)(?: - (.*))?$", re.M)


def run_tier(tree: Path, args: list[str], timeout: float) -> dict:
    """Run pytest on ``args`` in ``tree``: {passed, killed_by, detail, seconds}."""
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-rfE", "-p", "no:cacheprovider", "-n", "0",
           "--no-header", *args]
    start = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=tree, env=_env(tree), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"passed": False, "killed_by": "timeout", "detail": f"ran past {timeout:.0f} s",
                "seconds": time.monotonic() - start}
    seconds = time.monotonic() - start
    if proc.returncode == 0:
        return {"passed": True, "seconds": seconds}
    hit = _FAILED.search(proc.stdout)
    if hit:
        return {"passed": False, "killed_by": hit.group(2), "detail": (hit.group(3) or "")[:300], "seconds": seconds}
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
    return {"passed": False, "killed_by": f"pytest exit {proc.returncode}", "detail": " | ".join(tail)[:300],
            "seconds": seconds}


def run_mutant(mutant: Mutant, baseline: dict, tiers=TIERS, scratch_root=None, files=None, source=ROOT) -> dict:
    """Apply ``mutant`` to a scratch copy and run it through ``tiers``; the result record."""
    start = time.monotonic()
    record = {"mutant": mutant.name, "block": mutant.block, "file": mutant.path, "what": mutant.what}
    tmp = Path(tempfile.mkdtemp(prefix=f"s8-mutant-{mutant.name}-", dir=scratch_root))
    try:
        tree = scratch_copy(tmp / "tree", source, files=files)
        try:
            apply(mutant, tree)
        except MutantError as exc:
            return {**record, "status": "stale", "detail": str(exc), "seconds": time.monotonic() - start}
        verilog = generated_verilog(tree, tmp / "verilog")
        if "error" in verilog:
            # The mutated hardware does not elaborate: every test that builds it fails.
            return {**record, "status": "killed", "tier": "generate", "killed_by": "hw.generate",
                    "detail": " ".join(verilog["error"])[:300], "seconds": time.monotonic() - start}
        if verilog == baseline:
            return {**record, "status": "not-a-mutant", "detail": "the generated Verilog is unchanged",
                    "seconds": time.monotonic() - start}
        record["tiers_run"] = []
        for tier, args in tier_commands(mutant):
            if tier not in tiers:
                continue
            outcome = run_tier(tree, args, TIER_TIMEOUT[tier])
            record["tiers_run"].append({"tier": tier, **outcome})
            if not outcome["passed"]:
                return {**record, "status": "killed", "tier": tier, "killed_by": outcome["killed_by"],
                        "detail": outcome.get("detail", ""), "seconds": time.monotonic() - start}
        status = "equivalent" if mutant.equivalent else "survived"
        return {**record, "status": status, "detail": mutant.equivalent, "seconds": time.monotonic() - start}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def baseline_verilog(scratch_root=None, files=None, source=ROOT) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="s8-mutant-baseline-", dir=scratch_root))
    try:
        tree = scratch_copy(tmp / "tree", source, files=files)
        verilog = generated_verilog(tree, tmp / "verilog")
        if "error" in verilog:
            raise RuntimeError(f"the unmutated design does not generate: {verilog['error']}")
        return verilog
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def score(results: list[dict]) -> dict:
    counted = [r for r in results if r["status"] in ("killed", "survived")]   # equivalent ones excluded
    killed = sum(r["status"] == "killed" for r in counted)
    return {"mutants": len(results), "non_equivalent": len(counted), "killed": killed,
            "survived": len(counted) - killed,
            "not_a_mutant": sum(r["status"] == "not-a-mutant" for r in results),
            "equivalent": sum(r["status"] == "equivalent" for r in results),
            "pending": sum(r["status"] == "pending" for r in results),
            "stale": sum(r["status"] == "stale" for r in results),
            "score": killed / len(counted) if counted else None}


def markdown(results: list[dict]) -> str:
    s = score(results)
    lines = ["| mutant | block | fault | result | killed by | s |", "|---|---|---|---|---|---|"]
    for r in results:
        by = f"{r.get('tier', '')}: `{r.get('killed_by', '')}`" if r["status"] == "killed" else r.get("detail", "")
        lines.append(f"| {r['mutant']} | {r['block']} | {r['what']} | {r['status']} | {by} | {r['seconds']:.0f} |")
    if s["score"] is not None:
        lines.append("")
        lines.append(f"Score: {s['killed']} of {s['non_equivalent']} non-equivalent mutants killed "
                     f"({100 * s['score']:.1f}%); {s['equivalent']} equivalent (each argued in its row), "
                     f"{s['not_a_mutant']} not a mutant, {s['stale']} stale.")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sim.mutation", description=__doc__.splitlines()[0])
    parser.add_argument("--mutants", default=os.environ.get("MUTANTS", ""),
                        help="comma-separated mutant names, blocks or glob patterns (default: all)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--tiers", default=",".join(TIERS), help=f"tiers to run, from {', '.join(TIERS)}")
    parser.add_argument("--out", default=str(ROOT / "build" / "reports" / "mutation.json"))
    parser.add_argument("--scratch", default=None, help="folder for the scratch copies (default: the system's)")
    parser.add_argument("--list", action="store_true", help="list the catalogue and exit")
    args = parser.parse_args(argv)
    try:
        mutants = select(args.mutants)
        tiers = tuple(t.strip() for t in args.tiers.split(",") if t.strip())
        bad = [t for t in tiers if t not in TIERS]
        if bad:
            raise ValueError(f"--tiers: unknown tier {bad[0]!r}; the tiers are {', '.join(TIERS)}")
        if args.workers < 1:
            raise ValueError(f"--workers must be at least 1, not {args.workers}")
    except ValueError as exc:
        print(f"mutate: {exc}", file=sys.stderr)
        return 2
    if args.list:
        for m in mutants:
            print(f"{m.name:34s} {m.block:18s} {m.what}")
        return 0
    files = tree_files()
    print(f"mutate: {len(mutants)} mutants, tiers {', '.join(tiers)}, {args.workers} workers", flush=True)
    # A snapshot of the tree at the start: edits made while the campaign runs do not leak into later mutants.
    snapshot_dir = Path(tempfile.mkdtemp(prefix="s8-mutant-snapshot-", dir=args.scratch))
    source = scratch_copy(snapshot_dir / "tree", ROOT, files=files)
    try:
        return _campaign(args, mutants, tiers, files, source)
    finally:
        shutil.rmtree(snapshot_dir, ignore_errors=True)


def _campaign(args, mutants, tiers, files, source) -> int:
    """Breadth first: every mutant through the block tier, then the survivors through the later tiers, so a
    campaign cut short still has every mutant's first verdict (the others are ``pending``)."""
    baseline = baseline_verilog(args.scratch, files, source)
    start = time.monotonic()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    order = {m.name: i for i, m in enumerate(CATALOGUE)}
    by_name = {m.name: m for m in mutants}
    records = {}

    def publish(r, phase):
        records[r["mutant"]] = r
        by = f" by {r['tier']}: {r['killed_by']}" if r["status"] == "killed" else ""
        print(f"[{phase} {len(records)}/{len(mutants)} {time.monotonic() - start:6.0f}s] {r['mutant']}: "
              f"{r['status']}{by} ({r['seconds']:.0f} s)", flush=True)
        results = sorted(records.values(), key=lambda r: order[r["mutant"]])
        out.write_text(json.dumps({"score": score(results), "results": results}, indent=1) + "\n")

    first = tuple(t for t in tiers if t == "block")
    later = tuple(t for t in tiers if t != "block")
    with concurrent.futures.ProcessPoolExecutor(args.workers) as pool:
        futures = [pool.submit(run_mutant, m, baseline, first, args.scratch, files, source) for m in mutants]
        for future in concurrent.futures.as_completed(futures):
            r = future.result()
            # A survivor argued equivalent (sim/mutants.py) stops here: the later tiers cannot disprove an argument
            # and would cost minutes each; every other survivor goes on.
            if r["status"] == "survived" and later:
                r = {**r, "status": "pending", "detail": "survived the block tier; later tiers pending"}
            publish(r, "block")
        pending = [by_name[n] for n, r in sorted(records.items(), key=lambda kv: order[kv[0]])
                   if r["status"] == "pending"]
        futures = {pool.submit(run_mutant, m, baseline, later, args.scratch, files, source): m for m in pending}
        for future in concurrent.futures.as_completed(futures):
            r = future.result()
            before = records[r["mutant"]]
            r["tiers_run"] = before.get("tiers_run", []) + r.get("tiers_run", [])
            r["seconds"] += before["seconds"]
            publish(r, "later")
    results = sorted(records.values(), key=lambda r: order[r["mutant"]])
    out.with_suffix(".md").write_text(markdown(results))
    s = score(results)
    print(f"mutate: {s['killed']} of {s['non_equivalent']} non-equivalent mutants killed"
          + (f" ({100 * s['score']:.1f}%)" if s["score"] is not None else "")
          + f", {s['equivalent']} equivalent, {s['not_a_mutant']} not a mutant, {s['stale']} stale; survivors: "
          + (", ".join(r["mutant"] for r in results if r["status"] == "survived") or "none"))
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return 0 if s["stale"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
