"""Command line of the ASIC flow: ``python -m hw.asic [synth|scaling] ...`` (and ``systolic8 asic``).

``add_arguments(parser)`` adds the options to an :mod:`argparse` parser and ``run(args)`` runs them, so a larger
command line can register the flow as a subcommand. Exit status: 0 success, 1 a tool failed or is missing, 2 bad
arguments.
"""

from __future__ import annotations

import argparse
import json
import sys

from ..eda import FlowError, ToolMissing
from .flow import ASIC_DESIGNS, DEFAULT_FREQ_MHZ, DEFAULT_IO_DELAY_NS, DEFAULT_MEMORY_TIMING, synthesize
from .liberty import DEFAULT_LIBRARY, LIBRARIES
from .memories import DEFAULT_MACRO_MIN_BITS

__all__ = ["add_arguments", "run", "main"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ASIC flow's options: one configuration (``--rows/--cols``) or a study (``--sizes``)."""
    parser.add_argument("--design", choices=ASIC_DESIGNS, default="accelerator",
                        help="what to synthesize (default accelerator; array, pe, epilogue: that block of the "
                             "engine of --rows x --cols on its own)")
    parser.add_argument("--rows", type=int, default=8, help="array rows (default 8)")
    parser.add_argument("--cols", type=int, default=8, help="array columns (default 8)")
    parser.add_argument("--sizes", default=None,
                        help="comma-separated N (NxN) or RxC: synthesize each and write the scaling table + PNG "
                             "(with --blocks, also each size's PE, array and epilogue on their own)")
    parser.add_argument("--blocks", action="store_true",
                        help="with --sizes: also synthesize the blocks on their own for their Fmax")
    parser.add_argument("--no-block-areas", action="store_true",
                        help="skip the second, hierarchy-kept mapping that gives the area by block (it takes as long "
                             "as the flat one)")
    parser.add_argument("--acc-depth", type=int, default=None, help="accumulator rows (default: the design's)")
    parser.add_argument("--library", choices=list(LIBRARIES), default=DEFAULT_LIBRARY,
                        help=f"standard-cell library (default {DEFAULT_LIBRARY})")
    parser.add_argument("--freq", type=float, default=DEFAULT_FREQ_MHZ,
                        help=f"clock constraint in MHz (default {DEFAULT_FREQ_MHZ:g}); Fmax is reported either way")
    parser.add_argument("--io-delay", type=float, default=DEFAULT_IO_DELAY_NS,
                        help=f"input and output delay in ns against the clock (default {DEFAULT_IO_DELAY_NS:g})")
    parser.add_argument("--macro-min-bits", type=int, default=DEFAULT_MACRO_MIN_BITS,
                        help=f"memories of at least this many bits with synchronous reads are SRAM macros, smaller "
                             f"ones flops (default {DEFAULT_MACRO_MIN_BITS})")
    parser.add_argument("--memory-access-ns", type=float, default=DEFAULT_MEMORY_TIMING["access_ns"],
                        help="assumed SRAM macro clock-to-read-data time (default %(default)s ns)")
    parser.add_argument("--memory-setup-ns", type=float, default=DEFAULT_MEMORY_TIMING["setup_ns"],
                        help="assumed SRAM macro input setup time (default %(default)s ns)")
    parser.add_argument("--build-dir", default="build", help="root of build/asic and build/reports (default build)")
    parser.add_argument("--timeout", type=float, default=7200.0, help="seconds allowed per tool run")
    parser.add_argument("--reuse", action="store_true",
                        help="reuse a report made from the same Verilog, options and tools instead of rerunning")
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    """Run what ``args`` (from a parser given :func:`add_arguments`) asks for; returns the exit status."""
    say = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731 - progress on stderr
    options = dict(design=args.design, acc_depth=args.acc_depth, library=args.library, freq_mhz=args.freq,
                   io_delay_ns=args.io_delay, macro_min_bits=args.macro_min_bits,
                   memory_timing={"access_ns": args.memory_access_ns, "setup_ns": args.memory_setup_ns},
                   build_dir=args.build_dir, timeout_s=args.timeout, reuse=args.reuse, log=say,
                   blocks=not args.no_block_areas)
    try:
        if args.sizes is not None:
            from .report import format_scaling, run_scaling
            result = run_scaling(args.sizes, standalone_blocks=args.blocks, **options)
            print(json.dumps(result["rows"], indent=2) if args.json else format_scaling(result["rows"]))
            print(f"wrote {result['json']}, {result['csv']}, {result['png']}, {result['markdown']}")
            return 0
        from .report import format_report
        report = synthesize(rows=args.rows, cols=args.cols, **options)
        print(json.dumps(report, indent=2) if args.json else format_report(report))
        return 0
    except ToolMissing as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (TypeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except FlowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hw.asic", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))
