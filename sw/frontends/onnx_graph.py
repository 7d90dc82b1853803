"""The ONNX importer's machinery: the values that flow through a conversion, file loading and checking, and
:class:`Importer`, which walks an ONNX graph in order, hands each node to its converter (:mod:`sw.frontends.onnx_ops`)
and builds the :class:`sw.ir.Graph`. The public entry points are in :mod:`sw.frontends.onnx`."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Callable

import numpy as np

from sim.arith import quantize_multiplier
from sw import ir

from .common import ModelImportError, require

class OnnxImportError(ModelImportError):
    """An ONNX model the toolkit cannot import exactly (the message names the node, op type and cause)."""


class FloatModelError(OnnxImportError):
    """A float ONNX model where an int8 one is needed and no calibration data was given."""


def _require_onnx():
    return require("onnx", "the ONNX frontend")


def _require_ort():
    return require("onnxruntime", "running or quantizing ONNX models")


def is_onnx_file(path) -> bool:
    """Whether ``path`` looks like an ONNX file (by its suffix)."""
    return str(path).lower().endswith(".onnx")


# ---------------------------------------------------------------------------------------------------------------
# Values flowing through the conversion
# ---------------------------------------------------------------------------------------------------------------

@dataclass
class _Act:
    """An int8 activation: an IR tensor and how its elements map to the ONNX tensor.

    ``layout`` is ``"nchw"`` (ONNX (N, C, H, W) is the IR tensor (H, W, C)), ``"plain"`` (the IR tensor is the ONNX
    tensor without its batch axis, same element order) or ``"flat_nchw"`` (ONNX (N, C*H*W) in C, H, W order whose IR
    tensor is still the (H, W, C) tensor it was flattened from: a fully connected consumer permutes its weight rows,
    any other consumer materialises the flatten)."""
    tensor: str
    shape: tuple          # ONNX shape including the batch axis
    layout: str


@dataclass
class _Float:
    """A float tensor that is exactly the dequantized int8 activation ``act`` (a ``DequantizeLinear`` output)."""
    act: _Act


@dataclass
class _QConst:
    """A dequantized constant: int values, scale(s), zero point(s) and the quantized axis (None: per tensor)."""
    q: np.ndarray
    scale: np.ndarray
    zero_point: np.ndarray
    axis: int | None
    source: str


@dataclass
class _Pending:
    """The float output of an operator, waiting for the ``QuantizeLinear`` that fixes its output quantization.

    ``emit(name, quant, act_min, act_max)`` appends the IR node(s) and returns the :class:`_Act`. ``lo``/``hi`` are the
    real bounds of fused ``Relu`` / ``Clip`` nodes seen on the way to the ``QuantizeLinear``."""
    node: object
    emit: Callable
    lo: float = -math.inf
    hi: float = math.inf


@dataclass
class _FloatInput:
    """A float graph input, which only a ``QuantizeLinear`` may read."""
    name: str
    shape: tuple
    act: _Act | None = None


# ---------------------------------------------------------------------------------------------------------------
# Loading and checking the file
# ---------------------------------------------------------------------------------------------------------------

_QUANT_OPS = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "QGemm", "QLinearAdd",
              "QLinearAveragePool", "QLinearGlobalAveragePool", "QLinearSoftmax", "ConvInteger", "MatMulInteger",
              "QLinearMul", "QLinearConcat", "QLinearSigmoid", "QLinearLeakyRelu"}


def _load_proto(path_or_model):
    onnx = _require_onnx()
    if isinstance(path_or_model, onnx.ModelProto):
        model, where = path_or_model, "the ONNX model"
    else:
        path = os.fspath(path_or_model)
        where = f"ONNX model {path!r}"
        if not os.path.isfile(path):
            raise OnnxImportError(f"{where}: no such file")
        with open(path, "rb") as fh:
            data = fh.read()
        if not data:
            raise OnnxImportError(f"{where}: the file is empty")
        if data[:4] == b"TFL3" or data[4:8] == b"TFL3":
            raise OnnxImportError(f"{where}: this is a TFLite flatbuffer, not an ONNX protobuf (load it as .tflite)")
        try:
            model = onnx.load(path)   # also reads external data stored beside the file
        except Exception as exc:  # google.protobuf.message.DecodeError and friends
            raise OnnxImportError(f"{where}: not a readable ONNX protobuf (corrupt or truncated file, or another "
                                  f"format): {exc}") from None
    if model.ir_version <= 0 or not model.opset_import or not model.graph.node:
        raise OnnxImportError(f"{where}: not an ONNX model (ir_version {model.ir_version}, "
                              f"{len(model.opset_import)} opset imports, {len(model.graph.node)} nodes): corrupt, "
                              f"truncated or another kind of file")
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        raise OnnxImportError(f"{where}: fails the ONNX checker (corrupt or truncated model): "
                              f"{str(exc).strip().splitlines()[0]}") from None
    return model, where


def _is_quantized(model) -> bool:
    return any(n.op_type in _QUANT_OPS for n in model.graph.node)


# ---------------------------------------------------------------------------------------------------------------
# The importer
# ---------------------------------------------------------------------------------------------------------------

def _f32(x) -> float:
    """A scale exactly as the file holds it (float32) widened to a Python float."""
    return float(np.float32(x))


def _quant(scale, zero_point, what) -> ir.Quant:
    """An IR Quant from an ONNX per-tensor scale / zero point (uint8 zero points shifted by -128)."""
    zp = np.asarray(zero_point)
    s = np.asarray(scale)
    if s.size != 1 or zp.size != 1:
        raise OnnxImportError(f"{what}: per-axis activation quantization (scale of shape {s.shape}) is not "
                              f"supported; activations need one scale and zero point per tensor")
    if zp.dtype == np.uint8:
        z = int(zp.reshape(())) - 128
    elif zp.dtype == np.int8:
        z = int(zp.reshape(()))
    else:
        raise OnnxImportError(f"{what}: activation zero point of type {zp.dtype} is not supported (int8 or uint8)")
    return ir.Quant(_f32(s.reshape(())), z)


#: The weight of the depthwise convolutions that stand for a requantization or a whole-window average (with the
#: multiplier divided by it): 64 rather than 1 puts the first rounding of the double-rounding scheme (SRDHM) six
#: bits below the result's LSB, so the result is the real average rounded once (a multiplier of 1/4 on a unit
#: weight would round twice and be off by one on 30% of the outputs). 64 * 255 * window fits int32 easily.
_UNIT = 64


class Importer:
    """One conversion: ``Importer(model, where, kind, converters).run()`` -> :class:`sw.ir.Graph`."""

    def __init__(self, model, where, kind, converters):
        onnx = _require_onnx()
        from onnx import numpy_helper
        self.onnx = onnx
        self.numpy_helper = numpy_helper
        self.model = model
        self.where = where
        self.kind = kind
        self.converters = converters
        self.values: dict = {}
        self.tensors: dict = {}
        self.nodes: list = []
        self.node_names: set = set()
        self.inputs: list = []
        self.node_ops: dict = {}       # IR node name -> the ONNX op type it came from
        self.current = None
        self.opset = {o.domain or "ai.onnx": o.version for o in model.opset_import}
        g = model.graph
        for init in g.initializer:
            self.values[init.name] = numpy_helper.to_array(init)
        self.onnx_names = {i.name for i in g.initializer} | {v.name for v in g.input} | \
            {o for n in g.node for o in n.output if o}
        self.consumers: dict = {}
        for n in g.node:
            for i in n.input:
                if i:
                    self.consumers.setdefault(i, []).append(n)
        init_names = {i.name for i in g.initializer}
        for vi in g.input:
            if vi.name in init_names:
                continue
            self.values[vi.name] = _FloatInput(vi.name, self._input_shape(vi))

    # -- errors and helpers ------------------------------------------------------------------------------------

    def error(self, node, problem) -> OnnxImportError:
        name = node.name or "(unnamed)"
        domain = f"{node.domain}." if node.domain and node.domain != "ai.onnx" else ""
        return OnnxImportError(f"{self.where}: node {name!r} ({domain}{node.op_type}): {problem}")

    def _input_shape(self, vi):
        t = vi.type.tensor_type
        elem = t.elem_type
        if elem != self.onnx.TensorProto.FLOAT:
            raise OnnxImportError(f"{self.where}: graph input {vi.name!r} has element type "
                                  f"{self.onnx.TensorProto.DataType.Name(elem)}; quantized ONNX models take float "
                                  f"inputs that a QuantizeLinear quantizes")
        dims = []
        for i, d in enumerate(t.shape.dim):
            if d.HasField("dim_value"):
                dims.append(int(d.dim_value))
            elif i == 0:
                dims.append(1)  # a symbolic batch axis
            else:
                raise OnnxImportError(f"{self.where}: graph input {vi.name!r} has a symbolic dimension {i} "
                                      f"({d.dim_param!r}); only the batch axis may be symbolic")
        if len(dims) < 2:
            raise OnnxImportError(f"{self.where}: graph input {vi.name!r} has shape {dims}; inputs need a batch "
                                  f"axis and at least one more")
        return tuple(dims)

    def attrs(self, node) -> dict:
        return {a.name: self.onnx.helper.get_attribute_value(a) for a in node.attribute}

    def check_attrs(self, node, allowed):
        for a in node.attribute:
            if a.name not in allowed:
                raise self.error(node, f"attribute {a.name!r} is not supported (supported: {sorted(allowed)})")

    def unique_node_name(self, base):
        name, i = base, 1
        while name in self.node_names:
            i += 1
            name = f"{base}_{i}"
        self.node_names.add(name)
        return name

    def unique_tensor_name(self, base):
        """A free IR tensor name: not an IR tensor yet, and no ONNX tensor name of the model other than the outputs
        of the node being converted (so a later ONNX tensor can keep its own name)."""
        own = set(self.current.output) if self.current is not None else set()
        name, i = base, 1
        while name in self.tensors or (name in self.onnx_names and name not in own):
            i += 1
            name = f"{base}_{i}"
        return name

    def node_base(self, node):
        return node.name or f"{node.op_type}_{list(self.model.graph.node).index(node)}"

    def get(self, node, index, optional=False):
        if index >= len(node.input) or not node.input[index]:
            if optional:
                return None
            raise self.error(node, f"input {index} is missing")
        name = node.input[index]
        if name not in self.values:
            raise self.error(node, f"input {name!r} is not produced by any earlier node, initializer or graph input")
        return self.values[name]

    def const(self, node, index, what, optional=False):
        v = self.get(node, index, optional)
        if v is None:
            return None
        if not isinstance(v, np.ndarray):
            raise self.error(node, f"{what} (input {index}, {node.input[index]!r}) must be a constant "
                             f"(initializer or Constant), not a computed tensor")
        return v

    def act_of(self, node, index, what="input"):
        """The int8 activation behind input ``index``: a DequantizeLinear output (QDQ) or an int8 tensor (QOperator)."""
        v = self.get(node, index)
        if isinstance(v, _Float):
            return v.act
        if isinstance(v, _Act):
            return v
        if isinstance(v, _FloatInput):
            raise self.error(node, f"{what} {node.input[index]!r} is a float graph input read without a "
                             f"QuantizeLinear: the model is not fully quantized")
        if isinstance(v, _Pending):
            raise self.error(node, f"{what} {node.input[index]!r} is a float tensor that no QuantizeLinear "
                             f"quantizes (output of {v.node.op_type} {v.node.name!r}); every activation must be int8")
        if isinstance(v, (_QConst, np.ndarray)):
            raise self.error(node, f"{what} {node.input[index]!r} is a constant; constant activations are not "
                             f"supported (only weights and biases may be constants)")
        raise self.error(node, f"{what} {node.input[index]!r} is not an int8 activation")

    # -- IR construction ---------------------------------------------------------------------------------------

    def add_node(self, cls, base, inputs, out_name, quant, **params) -> str:
        """Build an IR node, infer its output shape, register the output tensor; returns the tensor name."""
        name = self.unique_node_name(base)
        node = cls(name=name, inputs=tuple(inputs), outputs=(out_name,), **params)
        self.node_ops[name] = self.current.op_type if self.current is not None else ""
        shape = node.infer([self.tensors[t] for t in inputs])
        tensor = ir.Tensor(out_name, shape, quant)
        node.check_quant([self.tensors[t] for t in inputs], tensor)
        if out_name in self.tensors:
            raise OnnxImportError(f"{self.where}: tensor name {out_name!r} is produced twice")
        self.tensors[out_name] = tensor
        self.nodes.append(node)
        return out_name

    def quant_of(self, act: _Act) -> ir.Quant:
        return self.tensors[act.tensor].quant

    def ir_shape(self, act: _Act) -> tuple:
        return self.tensors[act.tensor].shape

    def act_from_ir(self, tensor, batch, layout):
        shape = self.tensors[tensor].shape
        if layout == "nchw":
            h, w, c = shape
            onnx_shape = (batch, c, h, w)
        else:
            onnx_shape = (batch,) + tuple(shape)
        return _Act(tensor, onnx_shape, layout)

    def requantize(self, act: _Act, quant: ir.Quant, act_min, act_max, out_name, base) -> _Act:
        """Rescale an activation to ``quant`` and clamp: a 1x1 depthwise convolution with unit weights.

        ``y = clamp(MBQM(x - Z_in, S_in / S_out) + Z_out)``; flat tensors go through a (1, 1, C) reshape."""
        if self.quant_of(act) == quant and (act_min, act_max) == (-128, 127):
            return act
        act = self.materialize(act, base)
        q_in = self.quant_of(act)
        shape = self.ir_shape(act)
        src = act.tensor
        if len(shape) != 3:
            src = self.add_node(ir.Reshape, f"{base}/to_hwc", [src], self.unique_tensor_name(f"{out_name}/hwc"),
                                q_in, shape=(1, 1, int(np.prod(shape))))
        c = self.tensors[src].shape[2]
        mult, shift = quantize_multiplier(np.full(c, q_in.scale / (quant.scale * _UNIT)))
        final = out_name if len(shape) == 3 else self.unique_tensor_name(f"{out_name}/hwc_out")
        self.add_node(ir.DepthwiseConv2D, f"{base}/requantize", [src], final, quant,
                      weight=np.full((1, 1, c), _UNIT, np.int8), bias=np.zeros(c, np.int32),
                      weight_scale=np.full(1, 1.0 / _UNIT), multiplier=mult, shift=shift.astype(np.int32),
                      act_min=act_min, act_max=act_max)
        if len(shape) != 3:
            self.add_node(ir.Reshape, f"{base}/from_hwc", [final], out_name, quant, shape=shape)
        return _Act(out_name, act.shape, act.layout)

    def materialize(self, act: _Act, base) -> _Act:
        """An activation whose IR tensor holds the ONNX elements in ONNX order (resolves a lazy NCHW flatten)."""
        if act.layout != "flat_nchw":
            return act
        q = self.quant_of(act)
        h, w, c = self.ir_shape(act)
        src = act.tensor
        if h * w > 1 and c > 1:
            src = self.add_node(ir.Transpose, f"{base}/nchw_order", [src],
                                self.unique_tensor_name(f"{act.tensor}/chw"), q, perm=(2, 0, 1))
        out = self.add_node(ir.Reshape, f"{base}/flatten", [src], self.unique_tensor_name(f"{act.tensor}/flat"), q,
                            shape=(h * w * c,))
        return _Act(out, act.shape, "plain")

    # -- the walk ----------------------------------------------------------------------------------------------

    def run(self) -> ir.Graph:
        for node in self.model.graph.node:
            self.current = node
            domain = node.domain or ""
            key = node.op_type if domain in ("", "ai.onnx", "com.microsoft") else f"{domain}.{node.op_type}"
            conv = self.converters.get(key)
            if node.op_type not in CONST_FOLD_EXCLUDED and self._all_const(node):
                self._fold(node)      # shape arithmetic, Brevitas' Clip of its int8 weights, ...
                continue
            if conv is None:
                raise self.error(node, f"op type {key!r} is not supported; supported ops: "
                                 f"{', '.join(sorted(self.converters))}")
            try:
                conv(self, node)
            except OnnxImportError:
                raise
            except (ir.GraphError, ValueError) as exc:
                # an IR check or an out-of-range requantization multiplier: name the ONNX op it came from
                raise self.error(self.current or node, f"cannot be represented in the int8 IR: {exc}") from None
        try:
            return self.finish()
        except OnnxImportError:
            raise
        except (ir.GraphError, ValueError) as exc:
            raise OnnxImportError(f"{self.where}: the imported graph is inconsistent: {exc}") from None

    def _all_const(self, node):
        return all((not i) or isinstance(self.values.get(i), np.ndarray) for i in node.input) and len(node.input) > 0

    def _fold(self, node):
        """Evaluate a node whose inputs are all constants with onnx's reference evaluator (shape arithmetic)."""
        from onnx import helper
        from onnx.reference import ReferenceEvaluator
        ins = [i for i in node.input if i]
        g = helper.make_graph([node], "fold",
                              [helper.make_tensor_value_info(i, helper.np_dtype_to_tensor_dtype(self.values[i].dtype),
                                                             self.values[i].shape) for i in ins],
                              [helper.make_empty_tensor_value_info(o) for o in node.output if o])
        m = helper.make_model(g, opset_imports=list(self.model.opset_import))
        try:
            outs = ReferenceEvaluator(m).run(None, {i: self.values[i] for i in ins})
        except Exception as exc:
            raise self.error(node, f"constant folding failed: {exc}") from None
        for name, val in zip([o for o in node.output if o], outs):
            self.values[name] = np.asarray(val)

    def inputs_ir(self) -> set:
        return {v.act.tensor for v in self.values.values() if isinstance(v, _FloatInput) and v.act is not None}

    def finish(self) -> ir.Graph:
        self.current = None
        g = self.model.graph
        outputs, out_meta = [], []
        for vo in g.output:
            v = self.values.get(vo.name)
            if isinstance(v, _Float):
                act, dequantized = v.act, True
            elif isinstance(v, _Act):
                act, dequantized = v, False
            elif isinstance(v, _Pending):
                raise self.error(v.node, f"graph output {vo.name!r} is a float tensor that no QuantizeLinear "
                                 f"quantizes; the model's outputs must be quantized")
            else:
                raise OnnxImportError(f"{self.where}: graph output {vo.name!r} is not an activation computed by the "
                                      f"graph (constant or graph input)")
            act = self.materialize(act, f"output/{vo.name}")
            outputs.append(act.tensor)
            out_meta.append({"name": vo.name, "tensor": act.tensor, "shape": list(act.shape),
                             "layout": "NCHW" if act.layout == "nchw" else "plain", "dequantized": dequantized})
        in_meta = []
        for vi in g.input:
            v = self.values.get(vi.name)
            if isinstance(v, _FloatInput):
                if v.act is None:
                    raise OnnxImportError(f"{self.where}: graph input {vi.name!r} is never quantized "
                                          f"(no QuantizeLinear reads it)")
                in_meta.append({"name": vi.name, "tensor": v.act.tensor, "shape": list(v.shape),
                                "layout": "NCHW" if v.act.layout == "nchw" else "plain"})
        # Name the output tensors after the ONNX graph outputs (the DequantizeLinear's output, not the internal
        # QuantizeLinear's) where that name is free.
        rename = {}
        for m in out_meta:
            if m["name"] != m["tensor"] and m["name"] not in self.tensors and m["tensor"] not in self.inputs_ir() \
                    and m["name"] not in rename.values() and m["tensor"] not in rename:
                rename[m["tensor"]] = m["name"]
        if rename:
            self.nodes = [n.replace(inputs=tuple(rename.get(t, t) for t in n.inputs),
                                    outputs=tuple(rename.get(t, t) for t in n.outputs)) for n in self.nodes]
            self.tensors = {rename.get(k, k): (ir.Tensor(rename[k], t.shape, t.quant) if k in rename else t)
                            for k, t in self.tensors.items()}
            outputs = [rename.get(t, t) for t in outputs]
            for m in out_meta:
                m["tensor"] = rename.get(m["tensor"], m["tensor"])
        used = {t for n in self.nodes for t in n.inputs} | {t for n in self.nodes for t in n.outputs}
        # IR tensors that are int8 tensors of the ONNX graph too (QuantizeLinear and QLinear* outputs), with
        # their layout there: for per-layer comparisons with onnxruntime (sw.frontends.onnx.layer_agreement)
        onnx_tensors = {}
        for key, v in self.values.items():
            if isinstance(v, _Act) and v.layout != "flat_nchw":
                ir_name = rename.get(v.tensor, v.tensor)
                if ir_name in used:
                    onnx_tensors.setdefault(ir_name, [key, "NCHW" if v.layout == "nchw" else "plain"])
        tensors = {k: t for k, t in self.tensors.items() if k in used or k in outputs}
        name = self.model.graph.name or "onnx"
        graph = ir.Graph(tensors=tensors, inputs=tuple(m["tensor"] for m in in_meta), outputs=tuple(outputs),
                         nodes=self.nodes, name=name, source="onnx",
                         metadata={"onnx": {"format": self.kind, "inputs": in_meta, "outputs": out_meta,
                                            "int8_tensors": onnx_tensors, "node_ops": self.node_ops,
                                            "opset": self.opset.get("ai.onnx")}})
        return graph




# Ops never folded even on constant inputs (their constant form carries quantization, handled by the converters).
CONST_FOLD_EXCLUDED = {"QuantizeLinear", "DequantizeLinear", "Constant"}
