"""The compiler: lowers a quantized CNN to accelerator programs, layer by layer.

* **Conv2D** becomes a GEMM through im2col: ``A = im2col(x)`` (padding filled with the input zero point),
  ``W = weight (KH*KW*C_in, filters)``, and the input zero point folded into the bias
  (``bias' = bias - Z_in * sum_k W[k, c]``, :func:`sw.im2col.fold_zero_point`), so the array multiplies raw int8
  values exactly as docs/int8-spec.md allows. **Dense** is the same GEMM without im2col.
* The epilogue fuses the bias, the per-channel requantization, the output zero point and the ReLU clamp into STORE.
* **MaxPool2D** and **Flatten** run on the host (the hardware has no pooling unit yet), with the NumPy
  functions of :mod:`sw.reference`, so every backend shares them.
* A batch of images is one GEMM per layer (M = images x output pixels): one weight load serves the whole batch.
* Tiling in M, N and K to the array and buffer sizes of the :class:`hw.isa.HardwareConfig` - the values the
  hardware reports in its configuration registers - with double-buffered loads and stores, is done by
  :func:`sim.programs.gemm_program`. Of the best few tilings by a rough estimate
  (:func:`sim.programs.candidate_tilings`), the compiler takes the one the exact cycle model
  (:mod:`sim.cycle_model`) predicts fastest (:func:`choose_tiling`), and
  :meth:`CompiledNetwork.predicted_cycles` / :meth:`CompiledNetwork.choose_batch` give per-layer cycles and the
  batch size with the fewest cycles per image without running anything.

:func:`compile_network` checks that every layer is supported and returns a :class:`CompiledNetwork`;
:meth:`CompiledNetwork.lower` builds the program and DRAM image of one layer for a given input batch, and
:meth:`CompiledNetwork.listing` gives a readable summary (``--listing`` in the tools).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from hw.isa import HardwareConfig
from sim.cycle_model import predict
from sim.programs import GemmProgram, GemmTiling, candidate_tilings, gemm_program, gemm_schedule

from .im2col import im2col
from .network import Conv2D, Dense, Flatten, MaxPool2D
from .reference import max_pool

__all__ = ["CompileError", "LayerStep", "CompiledNetwork", "choose_tiling", "compile_network", "layer_gemm_shape",
           "predict_gemm", "GraphStep", "CompiledGraph", "compile_graph", "DEPTHWISE_TARGET"]

#: Tilings (best by the rough estimate) that :func:`choose_tiling` ranks with the exact cycle model.
TILING_CANDIDATES = 2

ROOT = Path(__file__).resolve().parents[1]
#: Predictions persist here across runs, keyed by shape, configuration, tiling and a hash of the timing sources.
PREDICTION_CACHE = ROOT / "build" / "cache" / "gemm_cycles.json"


@lru_cache(maxsize=1)
def _timing_sources_hash() -> str:
    digest = hashlib.sha256()
    for path in sorted([*(ROOT / "hw").glob("*.py"), ROOT / "sim" / "cycle_model.py", ROOT / "sim" / "programs.py"]):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


@lru_cache(maxsize=1)
def _disk_cache() -> dict:
    try:
        data = json.loads(PREDICTION_CACHE.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _store_disk_cache(key: str, value: dict) -> None:
    cache = _disk_cache()
    cache[key] = value
    try:
        import fcntl
        PREDICTION_CACHE.parent.mkdir(parents=True, exist_ok=True)
        # Parallel sweeps (sw.sweep) write from several processes: merge what the others stored since this one
        # read the file, under a lock, instead of overwriting their entries with this process's view.
        with open(PREDICTION_CACHE.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                on_disk = json.loads(PREDICTION_CACHE.read_text())
            except (OSError, ValueError):
                on_disk = {}
            if isinstance(on_disk, dict):
                for k, v in on_disk.items():
                    cache.setdefault(k, v)
            tmp = PREDICTION_CACHE.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(cache, sort_keys=True))
            os.replace(tmp, PREDICTION_CACHE)
    except OSError:
        pass    # a read-only checkout only loses the cache


@lru_cache(maxsize=256)
def predict_gemm(m: int, k: int, n: int, config: HardwareConfig, tiling: GemmTiling, raw: bool = False) -> dict:
    """The exact RTL counters (``sim.cycle_model.predict``) of the GEMM program with this tiling (cached in
    memory and in :data:`PREDICTION_CACHE`); ``raw`` for a program storing int32 accumulators."""
    fields = [m, k, n, dataclasses.astuple(config), dataclasses.astuple(tiling), _timing_sources_hash()]
    if raw:
        fields.append("raw")
    key = json.dumps(fields)
    stored = _disk_cache().get(key)
    if isinstance(stored, dict) and isinstance(stored.get("cycles"), int):
        return stored
    result = predict(gemm_schedule(m, k, n, config, tiling, raw=raw), config)
    _store_disk_cache(key, result)
    return result


@lru_cache(maxsize=256)
def choose_tiling(m: int, k: int, n: int, config: HardwareConfig, raw: bool = False) -> GemmTiling:
    """Of the :data:`TILING_CANDIDATES` best tilings by estimate, the one with the fewest predicted cycles."""
    candidates = candidate_tilings(m, k, n, config, limit=TILING_CANDIDATES)
    if len(candidates) == 1:
        return candidates[0]
    return min(candidates, key=lambda t: predict_gemm(m, k, n, config, t, raw)["cycles"])


class CompileError(ValueError):
    """A network the compiler cannot lower (the message names the layer and what is unsupported)."""


def layer_gemm_shape(layer, input_shape, output_shape, batch: int = 1):
    """(M, K, N) of the GEMM a Conv2D (im2col) or Dense layer becomes for ``batch`` images; None for other layers."""
    if isinstance(layer, Conv2D):
        oh, ow, f = output_shape
        kh, kw = layer.kernel
        return batch * oh * ow, kh * kw * input_shape[2], f
    if isinstance(layer, Dense):
        return batch, input_shape[0], output_shape[0]
    return None


@dataclass(frozen=True)
class LayerStep:
    """One layer as the compiler runs it: on the ``accelerator`` (a GEMM program) or on the ``host``."""
    index: int
    name: str
    kind: str            # conv2d | dense | maxpool2d | flatten
    target: str          # accelerator | host
    layer: object
    qlayer: object
    input_shape: tuple   # per image
    output_shape: tuple  # per image

    def gemm_shape(self, batch: int) -> tuple[int, int, int]:
        """(M, K, N) of this layer's GEMM for ``batch`` images."""
        shape = layer_gemm_shape(self.layer, self.input_shape, self.output_shape, batch)
        if shape is None:
            raise ValueError(f"layer {self.name!r} ({self.kind}) runs on the host and has no GEMM")
        return shape

    def macs(self, batch: int = 1) -> int:
        if self.target != "accelerator":
            return 0
        m, k, n = self.gemm_shape(batch)
        return m * k * n


@dataclass(eq=False)
class CompiledNetwork:
    qnet: object
    config: HardwareConfig
    steps: tuple

    def gemm_operands(self, step: LayerStep, x: np.ndarray):
        """The GEMM ``A`` matrix and epilogue parameters of an accelerator layer for the int8 batch ``x``."""
        q = step.qlayer
        if step.kind == "conv2d":
            n, h, w, _ = x.shape
            a = im2col(x, step.layer.kernel, step.layer.stride, step.layer.padding_amounts(h, w),
                       int(q.input_zero_point))
        else:
            a = x.reshape(x.shape[0], -1)
        return dict(a=a, w=q.weight_kn, bias=q.folded_bias, multiplier=q.multiplier, shift=q.shift,
                    zero_point=int(q.output_zero_point), act_min=int(q.act_min), act_max=int(q.act_max))

    def lower(self, step: LayerStep, x: np.ndarray, *, base=0x1000) -> GemmProgram:
        """Program + DRAM image computing ``step`` on the int8 batch ``x`` (NHWC, or (N, features))."""
        if step.target != "accelerator":
            raise ValueError(f"layer {step.name!r} runs on the host")
        ops = self.gemm_operands(step, x)
        return gemm_program(ops["a"], ops["w"], ops["bias"], ops["multiplier"], ops["shift"], ops["zero_point"],
                            ops["act_min"], ops["act_max"], False, config=self.config, base=base,
                            with_expected=False, tiling=choose_tiling(*step.gemm_shape(len(x)), self.config))

    def predicted_cycles(self, batch: int) -> dict:
        """RTL cycles of each accelerator layer for a batch of ``batch`` images, from the exact cycle model
        (the Verilator backend's memory model); ``{layer name: cycles}``."""
        out = {}
        for step in self.steps:
            if step.target == "accelerator":
                shape = step.gemm_shape(batch)
                out[step.name] = predict_gemm(*shape, self.config, choose_tiling(*shape, self.config))["cycles"]
        return out

    def choose_batch(self, candidates=(1, 2, 4, 8, 16, 32, 64), *, tolerance=0.01) -> int:
        """The smallest batch size whose predicted cycles per image are within ``tolerance`` of the best
        candidate's (bigger batches fetch weights less often but hold more data and latency)."""
        per_image = {b: sum(self.predicted_cycles(b).values()) / b for b in candidates}
        best = min(per_image.values())
        return min(b for b, c in per_image.items() if c <= best * (1 + tolerance))

    def output_of(self, step: LayerStep, program: GemmProgram, dram, batch: int) -> np.ndarray:
        """The layer's int8 output batch read back from a DRAM image after its program ran."""
        return program.read_c(dram).reshape((batch,) + tuple(step.output_shape))

    @staticmethod
    def run_host(step: LayerStep, x: np.ndarray) -> np.ndarray:
        if step.kind == "maxpool2d":
            return max_pool(x, step.layer.pool, step.layer.stride)
        if step.kind == "flatten":
            return x.reshape(x.shape[0], -1)
        raise ValueError(f"layer {step.name!r} ({step.kind}) does not run on the host")

    def listing(self, batch: int = 1, *, instructions=False, images=None) -> str:
        """A readable plan: per layer its target, shapes, GEMM size, tiling and MACs for ``batch`` images.

        With ``instructions`` and an int8 batch ``images``, also the disassembled program of every layer.
        """
        lines = [f"# {len(self.steps)} layers on a {self.config.rows}x{self.config.cols} array "
                 f"(ACT {self.config.act_depth}, WGT {self.config.wgt_depth}, ACC {self.config.acc_depth}, "
                 f"PARAM {self.config.param_depth}), batch {batch}"]
        x = images
        for step in self.steps:
            head = f"{step.index:2d} {step.name:<10} {step.kind:<9} {step.target:<11} " \
                   f"{'x'.join(map(str, step.input_shape))} -> {'x'.join(map(str, step.output_shape))}"
            if step.target == "accelerator":
                m, k, n = step.gemm_shape(batch)
                t = choose_tiling(m, k, n, self.config)
                head += (f"  GEMM M={m} K={k} N={n}  tiles: N {t.n_tiles} x M {t.m_chunks} x K {t.k_tiles} "
                         f"(m_chunk {t.m_chunk}, n_group {t.n_group}, k_group {t.k_group})  MACs {m * k * n:,}")
            lines.append(head)
            if instructions and x is not None:
                if step.target == "accelerator":
                    program = self.lower(step, x)
                    lines.append(program.listing())
                    from sim.isa_sim import IsaSimulator
                    dram = program.dram.copy()
                    IsaSimulator(self.config).run(dram, prog_addr=program.prog_addr,
                                                  prog_len=program.prog_len).raise_on_error()
                    x = self.output_of(step, program, dram, len(x))
                else:
                    x = self.run_host(step, x)
        return "\n".join(lines)


_ACCELERATED = {Conv2D: "conv2d", Dense: "dense"}
_HOST = {MaxPool2D: "maxpool2d", Flatten: "flatten"}


def compile_network(qnet, config: HardwareConfig) -> CompiledNetwork:
    """Check every layer of the quantized network ``qnet`` and assign it to the accelerator or the host."""
    if not isinstance(config, HardwareConfig):
        raise TypeError(f"config must be a hw.isa.HardwareConfig, not {type(config).__name__}")
    network = qnet.network
    shapes = network.shapes()
    steps = []
    for i, (layer, qlayer) in enumerate(zip(network.layers, qnet.layers)):
        kind = _ACCELERATED.get(type(layer)) or _HOST.get(type(layer))
        if kind is None:
            raise CompileError(f"layer {i} ({getattr(layer, 'name', '?')!r}): {type(layer).__name__} is not "
                               f"supported; supported layers: Conv2D, Dense, MaxPool2D, Flatten (ReLU fused)")
        target = "accelerator" if type(layer) in _ACCELERATED else "host"
        if target == "accelerator":
            if qlayer.weight is None or qlayer.multiplier is None:
                raise CompileError(f"layer {layer.name!r}: quantized weights or requantization parameters missing")
            k = int(np.prod(qlayer.weight.shape[:-1]))
            if k > (1 << 16) * config.rows:
                raise CompileError(f"layer {layer.name!r}: reduction depth K={k} is beyond what one program "
                                   f"can address")
        steps.append(LayerStep(index=i, name=layer.name, kind=kind, target=target, layer=layer, qlayer=qlayer,
                               input_shape=tuple(shapes[i]), output_shape=tuple(shapes[i + 1])))
    return CompiledNetwork(qnet=qnet, config=config, steps=tuple(steps))


# ---------------------------------------------------------------------------------------------------------------
# The graph IR (sw.ir): any imported model.

#: Where depthwise convolutions run. The host int8 reference: a depthwise layer is C independent GEMMs of N = 1
#: (or depth_multiplier) columns, so on the array it would use 1 of its ``cols`` columns (1/8 of an 8x8 array, a
#: K = kh*kw = 9 deep reduction filling 9 of 16 rows) and move every activation once per 9 MACs; DS-CNN's four
#: depthwise layers hold 10.8% of its MACs. docs/import.md has the figures.
DEPTHWISE_TARGET = "host"


@dataclass(frozen=True)
class GraphStep:
    """One IR node as the compiler runs it: a GEMM program on the ``accelerator`` or a reference kernel on the
    ``host``. ``raw`` accelerator steps store int32 accumulators that the host requantizes (single rounding)."""
    index: int
    name: str
    kind: str            # the IR op (or the legacy layer kind for a converted QuantizedNetwork)
    target: str          # accelerator | host
    node: object
    input_shape: tuple   # per sample, of the first input
    output_shape: tuple  # per sample
    macs_per_sample: int
    raw: bool = False

    def gemm_shape(self, batch: int) -> tuple[int, int, int]:
        """(M, K, N) of this node's GEMM for ``batch`` samples."""
        node = self.node
        if not getattr(node, "gemm", False):
            raise ValueError(f"node {self.name!r} ({self.kind}) is not GEMM-shaped")
        k, n = node.weight_kn.shape
        if node.op == "conv2d":
            return batch * self.output_shape[0] * self.output_shape[1], k, n
        return batch, k, n

    def macs(self, batch: int = 1) -> int:
        """Multiply-accumulates of the node for ``batch`` samples (wherever it runs)."""
        return self.macs_per_sample * batch


@dataclass(eq=False)
class CompiledGraph:
    """A :class:`sw.ir.Graph` assigned to the accelerator and the host, with the same interface as
    :class:`CompiledNetwork` (steps, lower, predicted_cycles, choose_batch, listing)."""
    graph: object
    config: HardwareConfig
    steps: tuple

    def z_in(self, step: GraphStep) -> int:
        return self.graph.tensors[step.node.inputs[0]].quant.zero_point

    def z_out(self, step: GraphStep) -> int:
        return self.graph.tensors[step.node.output].quant.zero_point

    def gemm_operands(self, step: GraphStep, x: np.ndarray) -> dict:
        """The GEMM ``A`` matrix, ``W``, the folded bias and the epilogue parameters of an accelerator step."""
        from .kernels import gemm_operands
        ops = gemm_operands(step.node, x, self.z_in(step))
        ops["zero_point"] = self.z_out(step)
        return ops

    def tiling(self, step: GraphStep, batch: int) -> GemmTiling:
        return choose_tiling(*step.gemm_shape(batch), self.config, step.raw)

    def lower(self, step: GraphStep, x: np.ndarray, *, base=0x1000) -> GemmProgram:
        """Program + DRAM image computing ``step`` on the int8 batch ``x``."""
        if step.target != "accelerator":
            raise ValueError(f"node {step.name!r} runs on the host")
        o = self.gemm_operands(step, x)
        return gemm_program(o["a"], o["w"], o["bias"], o["multiplier"], o["shift"], o["zero_point"], o["act_min"],
                            o["act_max"], step.raw, config=self.config, base=base, with_expected=False,
                            tiling=self.tiling(step, len(x)))

    def finish(self, step: GraphStep, c: np.ndarray, batch: int) -> np.ndarray:
        """The int8 output batch from the program's C matrix (requantized here for ``raw`` steps)."""
        if step.raw:
            from sim.arith import requantize
            node = step.node
            c = requantize(c, node.multiplier, node.shift, self.z_out(step), node.act_min, node.act_max,
                           node.rounding)
        return c.reshape((batch,) + tuple(step.output_shape))

    def output_of(self, step: GraphStep, program: GemmProgram, dram, batch: int) -> np.ndarray:
        return self.finish(step, program.read_c(dram), batch)

    def run_host(self, step: GraphStep, inputs: list) -> np.ndarray:
        from .kernels import run_node
        return run_node(self.graph, step.node, inputs)

    def predicted_cycles(self, batch: int) -> dict:
        """RTL cycles of each accelerator step for ``batch`` samples from the exact cycle model: ``{name: cycles}``."""
        out = {}
        for step in self.steps:
            if step.target == "accelerator":
                shape = step.gemm_shape(batch)
                out[step.name] = predict_gemm(*shape, self.config, self.tiling(step, batch), step.raw)["cycles"]
        return out

    def choose_batch(self, candidates=(1, 2, 4, 8, 16, 32, 64), *, tolerance=0.01) -> int:
        per_image = {b: sum(self.predicted_cycles(b).values()) / b for b in candidates}
        best = min(per_image.values())
        return min(b for b, c in per_image.items() if c <= best * (1 + tolerance))

    def macs(self) -> tuple[int, int]:
        """(MACs per sample on the accelerator, all MACs per sample)."""
        accel = sum(s.macs() for s in self.steps if s.target == "accelerator")
        return accel, sum(s.macs() for s in self.steps)

    def listing(self, batch: int = 1) -> str:
        cfg = self.config
        lines = [f"# {len(self.steps)} nodes on a {cfg.rows}x{cfg.cols} array (ACT {cfg.act_depth}, WGT "
                 f"{cfg.wgt_depth}, ACC {cfg.acc_depth}, PARAM {cfg.param_depth}), batch {batch}"]
        for step in self.steps:
            head = (f"{step.index:3d} {step.name:<24} {step.kind:<17} {step.target:<11} "
                    f"{'x'.join(map(str, step.input_shape))} -> {'x'.join(map(str, step.output_shape))}")
            if step.target == "accelerator":
                m, k, n = step.gemm_shape(batch)
                t = self.tiling(step, batch)
                head += (f"  GEMM M={m} K={k} N={n}{' raw' if step.raw else ''}  tiles: N {t.n_tiles} x M "
                         f"{t.m_chunks} x K {t.k_tiles}")
            if step.macs_per_sample:
                head += f"  MACs {step.macs(batch):,}"
            lines.append(head)
        return "\n".join(lines)


def compile_graph(graph, config: HardwareConfig, *, depthwise=DEPTHWISE_TARGET) -> CompiledGraph:
    """Assign every node of ``graph`` (a validated :class:`sw.ir.Graph`) to the accelerator (conv2d and
    fully_connected: GEMMs) or the host (everything else, with the reference kernels of :mod:`sw.kernels`)."""
    from .ir import Graph
    if not isinstance(graph, Graph):
        raise TypeError(f"compile_graph needs a sw.ir.Graph, not {type(graph).__name__}")
    if not isinstance(config, HardwareConfig):
        raise TypeError(f"config must be a hw.isa.HardwareConfig, not {type(config).__name__}")
    if depthwise != "host":
        raise CompileError(f"depthwise convolutions run on the host only, not {depthwise!r}")
    kinds = graph.metadata.get("layer_kinds", {})
    steps = []
    for i, node in enumerate(graph.nodes):
        ins = graph.input_tensors(node)
        out = graph.output_tensor(node)
        target = "accelerator" if node.gemm else "host"
        raw = False
        if target == "accelerator":
            k = node.weight_kn.shape[0]
            if k > (1 << 16) * config.rows:
                raise CompileError(f"node {i} {node.name!r} ({node.op}): reduction depth K={k} is beyond what one "
                                   f"program can address")
            raw = node.rounding != "double"
        steps.append(GraphStep(index=i, name=node.name, kind=kinds.get(node.name, node.op), target=target,
                               node=node, input_shape=tuple(ins[0].shape), output_shape=tuple(out.shape),
                               macs_per_sample=node.macs(ins, out), raw=raw))
    return CompiledGraph(graph=graph, config=config, steps=tuple(steps))
