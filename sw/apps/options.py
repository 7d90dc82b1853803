"""Command-line options shared by the subcommands, checked before anything runs.

Every check raises :class:`~sw.apps.cli.CliError` (or argparse's one-line error) naming the option, the value and
what is allowed. Hardware parameters are checked first, by name, so ``--rows 0`` says "--rows must be ..." rather
than failing later in the compiler with a consequence of it.
"""

from __future__ import annotations

import argparse

from hw.isa import HardwareConfig

from .cli import CliError

__all__ = ["BUS_BYTES", "MAX_ROWS", "MAX_COLS", "add_hardware", "hardware_config", "check_count", "check_output"]

#: AXI data widths the accelerator can be built with (hw.accelerator: 32, 64 or 128 bits)
BUS_BYTES = (4, 8, 16)
#: The largest array an instruction can address: MATMUL k_rows and STORE n_cols are 8-bit fields.
MAX_ROWS = 255
MAX_COLS = 255


def _int(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def add_hardware(parser, *, batch_default=32) -> None:
    """--rows, --cols, --bus-bytes, --batch."""
    group = parser.add_argument_group("accelerator")
    group.add_argument("--rows", type=_int, default=8, help=f"array rows, 1..{MAX_ROWS} (default 8)")
    group.add_argument("--cols", type=_int, default=8, help=f"array columns, 1..{MAX_COLS} (default 8)")
    group.add_argument("--bus-bytes", type=_int, default=None,
                       help="AXI data width in bytes: 4, 8 or 16 (default 8; wider buses feed bigger arrays)")
    group.add_argument("--batch", type=_int, default=batch_default,
                       help=f"inputs per accelerator run, one weight load each (default {batch_default})")


def _check_range(option: str, value, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise CliError(f"{option} must be an integer from {low} to {high}, not {value!r}")


def hardware_config(rows, cols, bus_bytes=None, *, batch=None) -> HardwareConfig:
    """The accelerator of the options, every parameter checked by name (before any model or data is read)."""
    from sw.driver import DEFAULT_CONFIG
    _check_range("--rows (ROWS)", rows, 1, MAX_ROWS)
    _check_range("--cols (COLS)", cols, 1, MAX_COLS)
    if bus_bytes is not None and bus_bytes not in BUS_BYTES:
        raise CliError(f"--bus-bytes (BUS_BYTES) must be one of {', '.join(map(str, BUS_BYTES))} "
                       f"(a 32-, 64- or 128-bit AXI bus), not {bus_bytes!r}")
    if batch is not None:
        _check_range("--batch (BATCH)", batch, 1, 1 << 16)
    return HardwareConfig(rows=rows, cols=cols, act_depth=DEFAULT_CONFIG.act_depth,
                          wgt_depth=DEFAULT_CONFIG.wgt_depth, acc_depth=DEFAULT_CONFIG.acc_depth,
                          param_depth=DEFAULT_CONFIG.param_depth, bus_bytes=bus_bytes or DEFAULT_CONFIG.bus_bytes)


def check_count(option: str, n, available: int | None, what: str) -> int:
    """``n`` inputs of ``available`` (None: all of them): a positive integer no larger than what there is."""
    if n is None:
        return available
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise CliError(f"{option} must be a positive number of {what}, not {n!r}")
    if available is not None and n > available:
        raise CliError(f"{option} is {n:,}, but the data holds {available:,} {what}; pass at most {available} "
                       f"(or leave {option} out for all of them)")
    return n


def check_output(path, *, force: bool = False) -> None:
    """Refuse to replace a model that ships with the toolkit (``models/``) unless ``force``; make the folder."""
    from pathlib import Path
    path = Path(path)
    shipped = (Path(__file__).resolve().parents[2] / "models").resolve()
    if path.exists() and path.resolve().parent == shipped and not force:
        raise CliError(f"{path} is a model shipped with the toolkit and is not replaced by default; write elsewhere "
                       f"(--out build/models/...) or pass --force to replace it")
    if path.is_dir():
        raise CliError(f"--out {path} is a folder; name the .npz file to write")
    path.parent.mkdir(parents=True, exist_ok=True)


def add_calibration(parser) -> None:
    """--calibration DATA and --calibration-n N: the samples a float ONNX model is quantized with."""
    group = parser.add_argument_group("float ONNX models")
    group.add_argument("--calibration", default=None, metavar="DATA",
                       help="sample inputs (.npy/.npz/IDX, the model's own layout) to quantize a float ONNX model")
    group.add_argument("--calibration-n", type=_int, default=500, metavar="N",
                       help="use the first N calibration samples (default 500)")


def calibration_of(args):
    """The calibration array of the options, or None."""
    if getattr(args, "calibration", None) is None:
        return None
    from .model import load_calibration
    return load_calibration(args.calibration, args.calibration_n)
