"""ONNX frontend: quantized ONNX models (QDQ and QOperator) and float ONNX models -> the int8 graph IR.

The model is read with the ``onnx`` package (``onnx.load`` + ``onnx.checker``); nothing here parses protobuf by hand.
Three kinds of model are accepted:

* **QDQ**: ``QuantizeLinear`` / ``DequantizeLinear`` pairs around float operators, as
  ``onnxruntime.quantization.quantize_static(..., quant_format=QuantFormat.QDQ, per_channel=True)`` writes them.
  Each ``DQ -> op -> Q`` group folds into one int8 IR node (weights and bias taken from their ``DQ`` initializers).
* **QOperator**: ``QLinearConv``, ``QLinearMatMul``, ``QGemm``, ``QLinearAdd``, ``QLinearAveragePool``,
  ``QLinearGlobalAveragePool``, ``QLinearSoftmax`` (the ``com.microsoft`` ones onnxruntime emits) on int8 tensors.
* **float** models: quantized first with onnxruntime's ``quantize_static`` (QDQ, per channel, int8) over the user's
  calibration data (:func:`quantize_float_model`), then imported as QDQ.

Arithmetic: the IR follows ONE integer semantics, TFLite's (``docs/int8-spec.md``: per-channel
``MultiplyByQuantizedMultiplier`` with double rounding, TFLite's ADD rescaling, average pooling rounded half away from
zero, TFLite's fixed-point softmax). onnxruntime requantizes in float with round-half-to-even, so the two differ by at
most a few LSB on a small fraction of elements; ``docs/onnx.md`` has the measured agreement.

Layout is settled here, once: ONNX activations are NCHW with a batch axis; IR tensors are per-sample NHWC. A rank-4
ONNX tensor (N, C, H, W) is the IR tensor (H, W, C); others keep their order without the batch axis. ``Flatten`` /
``Reshape`` of an NCHW tensor into (N, C*H*W) followed by ``Gemm`` / ``MatMul`` becomes a fully connected layer on
the NHWC tensor whose weight rows are permuted to NHWC order (no data movement); anywhere else the flatten is
materialised as ``Transpose`` + ``Reshape`` so the element order is PyTorch's. uint8 activations are supported
exactly by shifting their zero points by -128 (``q_int8 = q_uint8 - 128`` represents the same real values).

Anything the importer cannot represent exactly is an :class:`OnnxImportError` naming the node, its op type and the
offending attribute or input, and listing what is supported.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from sim.arith import preprocess_softmax_scaling, quantize_multiplier
from sw import ir

from .common import ModelImportError, require

__all__ = ["OnnxImportError", "FloatModelError", "load_onnx", "import_model", "quantize_float_model",
           "reference_run", "agreement", "to_graph_inputs", "from_graph_outputs", "SUPPORTED_OPS", "is_onnx_file"]

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


class _Importer:
    def __init__(self, model, where, kind):
        onnx = _require_onnx()
        from onnx import numpy_helper
        self.onnx = onnx
        self.numpy_helper = numpy_helper
        self.model = model
        self.where = where
        self.kind = kind
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
            conv = _CONVERTERS.get(key)
            if node.op_type not in _CONST_FOLDABLE_EXCLUDED and self._all_const(node):
                self._fold(node)      # shape arithmetic, Brevitas' Clip of its int8 weights, ...
                continue
            if conv is None:
                raise self.error(node, f"op type {key!r} is not supported; supported ops: "
                                 f"{', '.join(sorted(_CONVERTERS))}")
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


# ---------------------------------------------------------------------------------------------------------------
# Quantize / Dequantize
# ---------------------------------------------------------------------------------------------------------------

def _qdq_params(imp, node):
    imp.check_attrs(node, {"axis", "saturate", "block_size", "output_dtype"})
    a = imp.attrs(node)
    if a.get("block_size", 0):
        raise imp.error(node, f"attribute 'block_size' = {a['block_size']}: blocked quantization is not supported")
    scale = imp.const(node, 1, "scale")
    zp = imp.const(node, 2, "zero point", optional=True)
    if zp is None:
        zp = np.zeros(scale.shape, np.uint8)
    return scale, zp, a.get("axis", 1)


def _quantize_linear(imp, node):
    scale, zp, axis = _qdq_params(imp, node)
    out = node.output[0]
    v = imp.get(node, 0)
    where = f"node {node.name!r} (QuantizeLinear)"
    if isinstance(v, _FloatInput):
        quant = _quant(scale, zp, f"{imp.where}: {where}")
        if v.act is not None:
            if imp.quant_of(v.act) != quant:
                raise imp.error(node, f"graph input {v.name!r} is quantized twice with different parameters")
            imp.values[out] = v.act
            return
        rank = len(v.shape)
        shape = (v.shape[2], v.shape[3], v.shape[1]) if rank == 4 else tuple(v.shape[1:])
        imp.tensors[v.name] = ir.Tensor(v.name, shape, quant)
        v.act = _Act(v.name, v.shape, "nchw" if rank == 4 else "plain")
        imp.values[out] = v.act
    elif isinstance(v, _Pending):
        quant = _quant(scale, zp, f"{imp.where}: {where}")
        # Relu / Clip before QuantizeLinear clamp the real values: the int8 bounds are those values quantized as
        # QuantizeLinear does (float32 division, round half to even)
        lo = -128 if v.lo == -math.inf else \
            max(-128, quant.zero_point + int(np.rint(np.float32(v.lo) / np.float32(quant.scale))))
        hi = 127 if v.hi == math.inf else \
            min(127, quant.zero_point + int(np.rint(np.float32(v.hi) / np.float32(quant.scale))))
        if lo > hi:
            raise imp.error(node, f"the fused clamp [{v.lo}, {v.hi}] is empty at scale {quant.scale}")
        imp.current = v.node          # the IR node(s) come from the op, not from this QuantizeLinear
        imp.values[out] = v.emit(out, quant, lo, hi)
    elif isinstance(v, _Float):
        quant = _quant(scale, zp, f"{imp.where}: {where}")
        imp.values[out] = imp.requantize(v.act, quant, -128, 127, out, imp.node_base(node))
    elif isinstance(v, np.ndarray):
        raise imp.error(node, f"quantizes the constant {node.input[0]!r} at load time; store quantized weights "
                        f"(as onnxruntime does) instead")
    else:
        raise imp.error(node, f"input {node.input[0]!r} is already quantized")


def _dequantize_linear(imp, node):
    scale, zp, axis = _qdq_params(imp, node)
    v = imp.get(node, 0)
    out = node.output[0]
    if isinstance(v, np.ndarray):
        scale = np.asarray(scale, np.float32)
        if scale.size == 1:
            axis_ = None
        else:
            axis_ = axis % v.ndim
            if scale.ndim != 1 or scale.shape[0] != v.shape[axis_]:
                raise imp.error(node, f"scale of shape {scale.shape} does not match axis {axis} of {v.shape}")
        imp.values[out] = _QConst(v, scale.reshape(-1), np.asarray(zp).reshape(-1), axis_, node.input[0])
    elif isinstance(v, _Act):
        quant = _quant(scale, zp, f"{imp.where}: node {node.name!r} (DequantizeLinear)")
        if quant != imp.quant_of(v):
            raise imp.error(node, f"dequantizes {node.input[0]!r} with {quant}, but it was quantized with "
                            f"{imp.quant_of(v)}")
        imp.values[out] = _Float(v)
    else:
        raise imp.error(node, f"input {node.input[0]!r} is not an int8 tensor or a quantized constant")


# ---------------------------------------------------------------------------------------------------------------
# Weights, bias and requantization parameters
# ---------------------------------------------------------------------------------------------------------------

def _weight(imp, node, w: _QConst, channel_axis, channels, what="weight"):
    """int8 weight values and per-channel (or per-tensor) scales, checked: symmetric, quantized per output channel."""
    if w.q.dtype != np.int8:
        raise imp.error(node, f"{what} {w.source!r} is {w.q.dtype}; only int8 weights are supported "
                        f"(quantize with weight_type=QuantType.QInt8)")
    if np.any(w.zero_point != 0):
        raise imp.error(node, f"{what} {w.source!r} has non-zero zero points {np.unique(w.zero_point)[:4]}; only "
                        f"symmetric weights (zero point 0) are supported")
    if w.axis is not None and w.axis != channel_axis:
        raise imp.error(node, f"{what} {w.source!r} is quantized along axis {w.axis}; per-channel scales must be "
                        f"along the output-channel axis {channel_axis}")
    scale = np.asarray(w.scale, np.float64)
    if not np.all(np.isfinite(scale) & (scale > 0)):
        raise imp.error(node, f"{what} {w.source!r} has non-positive or non-finite scales")
    if scale.size not in (1, channels):
        raise imp.error(node, f"{what} {w.source!r} has {scale.size} scales for {channels} output channels")
    return w.q, scale


def _bias(imp, node, b, s_in, w_scale, channels):
    """int32 bias with scale S_in * S_w[c]; ``b`` is a _QConst (QDQ) or an int32 array (QOperator) or None."""
    if b is None:
        return np.zeros(channels, np.int32)
    if isinstance(b, _QConst):
        if b.q.dtype != np.int32:
            raise imp.error(node, f"bias {b.source!r} is {b.q.dtype}; an int32 bias is needed")
        if np.any(b.zero_point != 0):
            raise imp.error(node, f"bias {b.source!r} has non-zero zero points")
        expect = np.broadcast_to(np.float32(s_in) * np.asarray(w_scale, np.float32), (channels,))
        got = np.broadcast_to(np.asarray(b.scale, np.float64), (channels,))
        if not np.allclose(got, expect, rtol=1e-5, atol=0):
            i = int(np.argmax(np.abs(got - expect) / expect))
            raise imp.error(node, f"bias {b.source!r} scale {got[i]:.8g} (channel {i}) is not input scale x weight "
                            f"scale = {expect[i]:.8g}; the int32 bias must use scale S_in * S_w")
        q = b.q
    elif isinstance(b, np.ndarray):
        if b.dtype != np.int32:
            raise imp.error(node, f"bias is {b.dtype}; an int32 bias is needed")
        q = b
    else:
        raise imp.error(node, "the bias must be a quantized constant (int32 DequantizeLinear initializer)")
    q = np.asarray(q).reshape(-1)
    if q.shape != (channels,):
        raise imp.error(node, f"bias has {q.size} values for {channels} output channels")
    return q.astype(np.int32)


def _requant_params(s_in, w_scale, s_out, channels):
    """Per-channel (multiplier, shift) of S_in * S_w[c] / S_out, computed in double from the float32 scales (TFLite)."""
    real = float(s_in) * np.broadcast_to(np.asarray(w_scale, np.float64), (channels,)) / float(s_out)
    m, s = quantize_multiplier(real)
    return m, s.astype(np.int32)


def _add_params(s1, s2, s_out, left_shift=20):
    """TFLite's int8 ADD rescaling (PrepareGeneralSubOp): inputs to a common scale 2*max(S1, S2) / 2**20."""
    twice_max = 2.0 * max(s1, s2)
    m1, e1 = quantize_multiplier(s1 / twice_max)
    m2, e2 = quantize_multiplier(s2 / twice_max)
    mo, eo = quantize_multiplier(twice_max / ((1 << left_shift) * s_out))
    return dict(input1_multiplier=int(m1[0]), input1_shift=int(e1[0]), input2_multiplier=int(m2[0]),
                input2_shift=int(e2[0]), output_multiplier=int(mo[0]), output_shift=int(eo[0]),
                left_shift=left_shift)


def _softmax_params(imp, node, s_in, beta=1.0):
    """TFLite's int8 SOFTMAX parameters (PreprocessSoftmaxScaling with 5 integer bits, CalculateInputRadius)."""
    try:
        m, e, diff_min = preprocess_softmax_scaling(beta, s_in, 5)
    except ValueError as exc:
        raise imp.error(node, str(exc)) from None
    return dict(beta=beta, input_multiplier=m, input_left_shift=e, diff_min=diff_min)


# ---------------------------------------------------------------------------------------------------------------
# Convolution
# ---------------------------------------------------------------------------------------------------------------

def _auto_pad(imp, node, mode, in_hw, kernel, stride, dilation, pads):
    if mode in ("", "NOTSET"):
        if pads is None:
            return (0, 0, 0, 0)
        if len(pads) != 4 or any(p < 0 for p in pads):
            raise imp.error(node, f"attribute 'pads' = {list(pads)}: four non-negative values are needed")
        t, l, b, r = pads
        return (t, b, l, r)
    if mode == "VALID":
        return (0, 0, 0, 0)
    if mode in ("SAME_UPPER", "SAME_LOWER"):
        out = []
        for size, k, s, d in zip(in_hw, kernel, stride, dilation):
            before, after = ir.same_padding(size, k, s, d)
            out.append((before, after) if mode == "SAME_UPPER" else (after, before))
        return (out[0][0], out[0][1], out[1][0], out[1][1])
    raise imp.error(node, f"attribute 'auto_pad' = {mode!r} is not supported (NOTSET, VALID, SAME_UPPER, SAME_LOWER)")


def _window_attrs(imp, node, in_hw, kernel, allowed, dilation_ok=True):
    imp.check_attrs(node, allowed)
    a = imp.attrs(node)
    if "kernel_shape" in a and tuple(a["kernel_shape"]) != tuple(kernel):
        raise imp.error(node, f"attribute 'kernel_shape' = {list(a['kernel_shape'])} disagrees with the weight "
                        f"{list(kernel)}")
    if len(kernel) != 2:
        raise imp.error(node, f"a {len(kernel)}-D window is not supported (2-D only)")
    stride = tuple(a.get("strides", (1, 1)))
    dilation = tuple(a.get("dilations", (1, 1)))
    if not dilation_ok and dilation != (1, 1):
        raise imp.error(node, f"attribute 'dilations' = {list(dilation)} is not supported (only [1, 1])")
    auto = a.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    pads = _auto_pad(imp, node, auto, in_hw, kernel, stride, dilation, a.get("pads"))
    return stride, dilation, pads, a


def _build_conv(imp, node, act: _Act, w: _QConst, b):
    """The pending int8 Conv2D / DepthwiseConv2D of a Conv node (group 1 or group == C_in)."""
    if act.layout != "nchw":
        raise imp.error(node, f"needs a 4-D NCHW input, not shape {list(act.shape)}")
    _, cin, h, wd = act.shape
    if w.q.ndim != 4:
        raise imp.error(node, f"weight {w.source!r} of shape {list(w.q.shape)}: only 2-D convolutions are supported")
    cout, cin_g, kh, kw = w.q.shape
    a = imp.attrs(node)
    group = int(a.get("group", 1))
    stride, dilation, pads, _ = _window_attrs(
        imp, node, (h, wd), (kh, kw), {"group", "kernel_shape", "strides", "dilations", "pads", "auto_pad"})
    weight, w_scale = _weight(imp, node, w, 0, cout)
    s_in = imp.quant_of(act).scale
    bias = _bias(imp, node, b, s_in, w_scale, cout)
    base = imp.node_base(node)
    if group == 1:
        if cin_g != cin:
            raise imp.error(node, f"weight has {cin_g} input channels, the input {cin}")
        cls, kernel = ir.Conv2D, np.transpose(weight, (2, 3, 1, 0))       # OIHW -> HWIO
        extra = {}
    elif group == cin and cin_g == 1 and cout % cin == 0:
        cls, kernel = ir.DepthwiseConv2D, np.transpose(weight[:, 0], (1, 2, 0))   # (C*m, KH, KW) -> (KH, KW, C*m)
        extra = {"depth_multiplier": cout // cin}
    else:
        raise imp.error(node, f"attribute 'group' = {group} is not supported: group 1 (convolution) or group = "
                        f"input channels {cin} (depthwise) only")

    def emit(out, quant, lo, hi):
        m, s = _requant_params(s_in, w_scale, quant.scale, cout)
        t = imp.add_node(cls, base, [act.tensor], out, quant, weight=np.ascontiguousarray(kernel), bias=bias,
                         weight_scale=w_scale, multiplier=m, shift=s, stride=stride, padding=pads,
                         dilation=dilation, act_min=lo, act_max=hi, **extra)
        return imp.act_from_ir(t, act.shape[0], "nchw")
    return _Pending(node, emit)


def _conv(imp, node):
    act = imp.act_of(node, 0)
    w = imp.get(node, 1)
    if not isinstance(w, _QConst):
        raise imp.error(node, f"weight {node.input[1]!r} must be a constant int8 initializer behind a "
                        f"DequantizeLinear (a non-constant or float weight is not supported)")
    b = imp.get(node, 2, optional=True)
    imp.values[node.output[0]] = _build_conv(imp, node, act, w, b)


def _qlinear_conv(imp, node):
    act = imp.act_of(node, 0)
    _check_input_quant(imp, node, act, 1, 2)
    w = _qconst_from_inputs(imp, node, 3, 4, 5, axis=0)
    b = imp.const(node, 8, "bias", optional=True)
    pend = _build_conv(imp, node, act, w, b)
    _finalize(imp, node, pend, 6, 7)


def _check_input_quant(imp, node, act, si, zi):
    zp = imp.const(node, zi, "zero point", optional=True)
    q = _quant(imp.const(node, si, "scale"), np.uint8(0) if zp is None else zp,
               f"{imp.where}: node {node.name!r} ({node.op_type})")
    if q != imp.quant_of(act):
        raise imp.error(node, f"input {act.tensor!r} is read with {q} but was produced with {imp.quant_of(act)}")


def _qconst_from_inputs(imp, node, qi, si, zi, axis):
    q = imp.const(node, qi, "weight")
    s = np.asarray(imp.const(node, si, "weight scale"), np.float32).reshape(-1)
    z = imp.const(node, zi, "weight zero point", optional=True)
    z = np.zeros(s.shape, q.dtype) if z is None else np.asarray(z).reshape(-1)
    return _QConst(q, s, z, None if s.size == 1 else axis, node.input[qi])


def _finalize(imp, node, pend: _Pending, si, zi):
    """Emit a QOperator node's pending result with the output quantization of inputs (si, zi)."""
    zp = imp.const(node, zi, "output zero point", optional=True) if zi is not None else None
    quant = _quant(imp.const(node, si, "output scale"), np.uint8(0) if zp is None else zp,   # ONNX's default
                   f"{imp.where}: node {node.name!r} ({node.op_type})")
    imp.values[node.output[0]] = pend.emit(node.output[0], quant, -128, 127)


# ---------------------------------------------------------------------------------------------------------------
# Fully connected (Gemm, MatMul)
# ---------------------------------------------------------------------------------------------------------------

def _build_fc(imp, node, act: _Act, w: _QConst, b, trans_b):
    """A pending FullyConnected: ``act`` (N, K) times the (K, N) weight (after transB) plus bias."""
    if len(act.shape) != 2:
        raise imp.error(node, f"needs a 2-D (batch, features) input, not shape {list(act.shape)} (flatten first)")
    if w.q.ndim != 2:
        raise imp.error(node, f"weight {w.source!r} of shape {list(w.q.shape)} must be 2-D")
    q = w.q.T if trans_b else w.q                       # (K, N)
    k, n = q.shape
    channel_axis = 0 if trans_b else 1
    weight, w_scale = _weight(imp, node, w, channel_axis, n)
    if act.shape[1] != k:
        raise imp.error(node, f"weight takes {k} features, the input {list(act.shape)} has {act.shape[1]}")
    weight = np.ascontiguousarray(weight.T if trans_b else weight)
    if act.layout == "flat_nchw":
        # The IR input is the (H, W, C) tensor; ONNX row i is element (c, h, w) in C, H, W order.
        h, wd, c = imp.ir_shape(act)
        order = np.arange(c * h * wd).reshape(c, h, wd).transpose(1, 2, 0).reshape(-1)
        weight = np.ascontiguousarray(weight[order])
    s_in = imp.quant_of(act).scale
    bias = _bias(imp, node, b, s_in, w_scale, n)
    base = imp.node_base(node)

    def emit(out, quant, lo, hi):
        m, s = _requant_params(s_in, w_scale, quant.scale, n)
        t = imp.add_node(ir.FullyConnected, base, [act.tensor], out, quant, weight=weight, bias=bias,
                         weight_scale=w_scale, multiplier=m, shift=s, act_min=lo, act_max=hi)
        return imp.act_from_ir(t, act.shape[0], "plain")
    return _Pending(node, emit)


def _gemm_attrs(imp, node, allowed):
    imp.check_attrs(node, allowed)
    a = imp.attrs(node)
    if a.get("transA", 0):
        raise imp.error(node, f"attribute 'transA' = {a['transA']} is not supported (0 only)")
    for what in ("alpha", "beta"):
        if what in a and a[what] != 1.0:
            raise imp.error(node, f"attribute {what!r} = {a[what]} is not supported (1.0 only)")
    return int(a.get("transB", 0))


def _gemm(imp, node):
    trans_b = _gemm_attrs(imp, node, {"alpha", "beta", "transA", "transB"})
    act = imp.act_of(node, 0)
    w = imp.get(node, 1)
    if not isinstance(w, _QConst):
        raise imp.error(node, f"weight {node.input[1]!r} must be a constant int8 initializer behind a "
                        f"DequantizeLinear")
    b = imp.get(node, 2, optional=True)
    if isinstance(b, _QConst) and b.q.ndim == 2 and b.q.shape[0] == 1:
        b = _QConst(b.q.reshape(-1), b.scale, b.zero_point, b.axis, b.source)
    imp.values[node.output[0]] = _build_fc(imp, node, act, w, b, trans_b)


def _matmul(imp, node):
    imp.check_attrs(node, set())
    act = imp.act_of(node, 0)
    w = imp.get(node, 1)
    if not isinstance(w, _QConst):
        raise imp.error(node, f"the second operand {node.input[1]!r} must be a constant int8 weight behind a "
                        f"DequantizeLinear (activation x activation products are not supported)")
    imp.values[node.output[0]] = _build_fc(imp, node, act, w, None, False)


def _qlinear_matmul(imp, node):
    imp.check_attrs(node, set())
    act = imp.act_of(node, 0)
    _check_input_quant(imp, node, act, 1, 2)
    w = _qconst_from_inputs(imp, node, 3, 4, 5, axis=1)
    _finalize(imp, node, _build_fc(imp, node, act, w, None, False), 6, 7)


def _qgemm(imp, node):
    trans_b = _gemm_attrs(imp, node, {"alpha", "transA", "transB"})
    act = imp.act_of(node, 0)
    _check_input_quant(imp, node, act, 1, 2)
    w = _qconst_from_inputs(imp, node, 3, 4, 5, axis=0 if trans_b else 1)
    b = imp.const(node, 6, "bias", optional=True)
    pend = _build_fc(imp, node, act, w, b, trans_b)
    if len(node.input) < 8 or not node.input[7]:
        imp.values[node.output[0]] = pend     # float output: a later QuantizeLinear decides
    else:
        _finalize(imp, node, pend, 7, 8 if len(node.input) > 8 and node.input[8] else None)


# ---------------------------------------------------------------------------------------------------------------
# Add, pooling, activations, softmax
# ---------------------------------------------------------------------------------------------------------------

def _build_add(imp, node, a: _Act, b: _Act):
    a = imp.materialize(a, imp.node_base(node) + "/a") if a.layout != b.layout else a
    b = imp.materialize(b, imp.node_base(node) + "/b") if a.layout != b.layout else b
    if a.shape != b.shape or a.layout != b.layout:
        raise imp.error(node, f"inputs of shapes {list(a.shape)} and {list(b.shape)}: broadcasting is not "
                        f"supported (two activations of one shape only)")
    qa, qb = imp.quant_of(a), imp.quant_of(b)
    base = imp.node_base(node)

    def emit(out, quant, lo, hi):
        t = imp.add_node(ir.Add, base, [a.tensor, b.tensor], out, quant, act_min=lo, act_max=hi,
                         **_add_params(qa.scale, qb.scale, quant.scale))
        return imp.act_from_ir(t, a.shape[0], a.layout)
    return _Pending(node, emit)


def _add(imp, node):
    imp.check_attrs(node, set())
    for i in (0, 1):
        v = imp.get(node, i)
        if isinstance(v, (np.ndarray, _QConst)):
            raise imp.error(node, f"input {i} {node.input[i]!r} is a constant; Add of a constant is not supported "
                            f"(residual Add of two activations only)")
    imp.values[node.output[0]] = _build_add(imp, node, imp.act_of(node, 0), imp.act_of(node, 1))


def _qlinear_add(imp, node):
    imp.check_attrs(node, set())
    a, b = imp.act_of(node, 0), imp.act_of(node, 3)
    _check_input_quant(imp, node, a, 1, 2)
    _check_input_quant(imp, node, b, 4, 5)
    _finalize(imp, node, _build_add(imp, node, a, b), 6, 7)


def _pool_geometry(imp, node, act, allowed, dilation_ok):
    if act.layout != "nchw":
        raise imp.error(node, f"needs a 4-D NCHW input, not shape {list(act.shape)}")
    a = imp.attrs(node)
    if "kernel_shape" not in a:
        raise imp.error(node, "attribute 'kernel_shape' is missing")
    kernel = tuple(a["kernel_shape"])
    _, c, h, w = act.shape
    stride, dilation, pads, a = _window_attrs(imp, node, (h, w), kernel, allowed, dilation_ok)
    if a.get("ceil_mode", 0):
        for size, k, s, p0, p1 in ((h, kernel[0], stride[0], pads[0], pads[1]),
                                   (w, kernel[1], stride[1], pads[2], pads[3])):
            if (size + p0 + p1 - k) % s:
                raise imp.error(node, "attribute 'ceil_mode' = 1 changes the output size here; only ceil_mode 0 "
                                "(or a ceil_mode that does not change the shape) is supported")
    return kernel, stride, pads, a


def _build_average_pool(imp, node, act: _Act):
    kernel, stride, pads, a = _pool_geometry(
        imp, node, act, {"kernel_shape", "strides", "pads", "auto_pad", "ceil_mode", "count_include_pad",
                         "channels_last", "dilations"}, dilation_ok=False)
    if a.get("channels_last", 0):
        raise imp.error(node, "attribute 'channels_last' = 1 is not supported (NCHW only)")
    include_pad = bool(a.get("count_include_pad", 0)) and any(pads)
    q_in = imp.quant_of(act)
    c = act.shape[1]
    base = imp.node_base(node)

    def emit(out, quant, lo, hi):
        if quant == q_in and not include_pad:
            t = imp.add_node(ir.AveragePool2D, base, [act.tensor], out, quant, filter=kernel, stride=stride,
                             padding=pads, act_min=lo, act_max=hi)
        elif include_pad or not any(pads):
            # Divide by the whole window: a depthwise convolution with unit weights and multiplier
            # S_in / (S_out * KH * KW) (padded taps read the zero point, i.e. contribute 0).
            m, s = quantize_multiplier(np.full(c, q_in.scale / (quant.scale * kernel[0] * kernel[1] * _UNIT)))
            t = imp.add_node(ir.DepthwiseConv2D, base, [act.tensor], out, quant,
                             weight=np.full(kernel + (c,), _UNIT, np.int8), bias=np.zeros(c, np.int32),
                             weight_scale=np.full(1, 1.0 / _UNIT), multiplier=m, shift=s.astype(np.int32),
                             stride=stride,
                             padding=pads, act_min=lo, act_max=hi)
        else:
            mid = imp.add_node(ir.AveragePool2D, base, [act.tensor], imp.unique_tensor_name(f"{out}/pooled"), q_in,
                               filter=kernel, stride=stride, padding=pads)
            return imp.requantize(imp.act_from_ir(mid, act.shape[0], "nchw"), quant, lo, hi, out, base)
        return imp.act_from_ir(t, act.shape[0], "nchw")
    return _Pending(node, emit)


def _average_pool(imp, node):
    imp.values[node.output[0]] = _build_average_pool(imp, node, imp.act_of(node, 0))


def _qlinear_average_pool(imp, node):
    act = imp.act_of(node, 0)
    _check_input_quant(imp, node, act, 1, 2)
    _finalize(imp, node, _build_average_pool(imp, node, act), 3, 4)


def _build_global_average_pool(imp, node, act: _Act):
    if act.layout != "nchw":
        raise imp.error(node, f"needs a 4-D NCHW input, not shape {list(act.shape)}")
    q_in = imp.quant_of(act)
    _, c, h, w = act.shape
    base = imp.node_base(node)

    def emit(out, quant, lo, hi):
        m, s = quantize_multiplier(q_in.scale / (quant.scale * h * w))
        t = imp.add_node(ir.Mean, base, [act.tensor], out, quant, multiplier=int(m[0]), shift=int(s[0]),
                         keep_dims=True, act_min=lo, act_max=hi)
        return imp.act_from_ir(t, act.shape[0], "nchw")
    return _Pending(node, emit)


def _global_average_pool(imp, node):
    imp.check_attrs(node, set())
    imp.values[node.output[0]] = _build_global_average_pool(imp, node, imp.act_of(node, 0))


def _qlinear_global_average_pool(imp, node):
    imp.check_attrs(node, {"channels_last"})
    if imp.attrs(node).get("channels_last", 0):
        raise imp.error(node, "attribute 'channels_last' = 1 is not supported (NCHW only)")
    act = imp.act_of(node, 0)
    _check_input_quant(imp, node, act, 1, 2)
    _finalize(imp, node, _build_global_average_pool(imp, node, act), 3, 4)


def _reduce_mean(imp, node):
    """ReduceMean over H and W of an NCHW tensor (what ``adaptive_avg_pool2d(x, 1)`` exports): a global average."""
    imp.check_attrs(node, {"axes", "keepdims", "noop_with_empty_axes"})
    a = imp.attrs(node)
    act = imp.act_of(node, 0)
    axes = a.get("axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        axes = [int(v) for v in np.asarray(imp.const(node, 1, "axes")).reshape(-1)]
    rank = len(act.shape)
    if act.layout != "nchw" or axes is None or sorted(x % rank for x in axes) != [2, 3]:
        raise imp.error(node, f"axes {axes} on shape {list(act.shape)}: only the mean over H and W (axes [2, 3]) of "
                        f"an NCHW tensor is supported (global average pooling)")
    keep = bool(a.get("keepdims", 1))
    pend = _build_global_average_pool(imp, node, act)
    if keep:
        imp.values[node.output[0]] = pend
        return
    base = imp.node_base(node)

    def emit(out, quant, lo, hi):
        mid = pend.emit(imp.unique_tensor_name(f"{out}/keepdims"), quant, lo, hi)
        t = imp.add_node(ir.Reshape, f"{base}/squeeze", [mid.tensor], out, quant, shape=(act.shape[1],))
        return imp.act_from_ir(t, act.shape[0], "plain")
    imp.values[node.output[0]] = _Pending(node, emit)


def _max_pool(imp, node):
    if len(node.output) > 1 and node.output[1]:
        raise imp.error(node, "the Indices output is not supported")
    v = imp.get(node, 0)
    act = imp.act_of(node, 0)
    kernel, stride, pads, a = _pool_geometry(
        imp, node, act, {"kernel_shape", "strides", "pads", "auto_pad", "ceil_mode", "dilations",
                         "storage_order"}, dilation_ok=False)
    q = imp.quant_of(act)
    t = imp.add_node(ir.MaxPool2D, imp.node_base(node), [act.tensor], imp.unique_tensor_name(node.output[0]), q,
                     filter=kernel, stride=stride, padding=pads)
    out = imp.act_from_ir(t, act.shape[0], "nchw")
    # max commutes with the (monotonic) quantization: DQ -> MaxPool is the DQ of the int8 max pool
    imp.values[node.output[0]] = _Float(out) if isinstance(v, _Float) else out


def _clamp_of(imp, node):
    if node.op_type == "Relu":
        imp.check_attrs(node, set())
        return 0.0, math.inf
    imp.check_attrs(node, {"min", "max"})
    a = imp.attrs(node)
    lo, hi = a.get("min", -math.inf), a.get("max", math.inf)
    if len(node.input) > 1 and node.input[1]:
        lo = float(np.asarray(imp.const(node, 1, "min")).reshape(()))
    if len(node.input) > 2 and node.input[2]:
        hi = float(np.asarray(imp.const(node, 2, "max")).reshape(()))
    return float(lo), float(hi)


def _int_clip(imp, node, act):
    """Clip on an int8 tensor (a Brevitas-style Q -> Clip -> DQ narrowing the integer range): the bounds are integers
    of the tensor's own type (uint8 bounds shift by -128 like the values)."""
    if node.op_type == "Relu":
        raise imp.error(node, "Relu on an integer tensor is not supported (onnxruntime fuses it into the producer; "
                        "quantize the model with the Relu in float)")
    bounds = []
    for i, default in ((1, -128), (2, 127)):
        if len(node.input) > i and node.input[i]:
            c = np.asarray(imp.const(node, i, "min" if i == 1 else "max"))
            if c.dtype not in (np.int8, np.uint8) or c.size != 1:
                raise imp.error(node, f"Clip bound {node.input[i]!r} of an int8 tensor must be an int8 or uint8 "
                                f"scalar, not {c.dtype} of shape {c.shape}")
            v = int(c.reshape(())) - (128 if c.dtype == np.uint8 else 0)
            bounds.append(max(-128, min(127, v)))
        else:
            bounds.append(default)
    lo, hi = bounds
    if lo > hi:
        raise imp.error(node, f"Clip bounds [{lo}, {hi}] are empty")
    return imp.requantize(act, imp.quant_of(act), lo, hi, node.output[0], imp.node_base(node))


def _relu_clip(imp, node):
    v = imp.get(node, 0)
    if isinstance(v, _Act):
        imp.values[node.output[0]] = _int_clip(imp, node, v)
        return
    lo, hi = _clamp_of(imp, node)
    if isinstance(v, _Pending):
        imp.values[node.output[0]] = _Pending(v.node, v.emit, max(v.lo, lo), min(v.hi, hi))
    elif isinstance(v, _Float):
        act = v.act
        base = imp.node_base(node)

        def emit(out, quant, qlo, qhi):
            return imp.requantize(act, quant, qlo, qhi, out, base)
        imp.values[node.output[0]] = _Pending(node, emit, lo, hi)
    else:
        imp.act_of(node, 0)  # raises the right error


def _build_softmax(imp, node, act: _Act):
    imp.check_attrs(node, {"axis", "opset"})
    a = imp.attrs(node)
    rank = len(act.shape)
    axis = a.get("axis", -1 if imp.opset.get("ai.onnx", 13) >= 13 else 1)
    if axis % rank != rank - 1 or act.layout == "nchw" and rank == 4:
        raise imp.error(node, f"attribute 'axis' = {axis} on shape {list(act.shape)}: only a softmax over the last "
                        f"axis of a non-image tensor is supported")
    act = imp.materialize(act, imp.node_base(node))
    q_in = imp.quant_of(act)
    base = imp.node_base(node)
    params = _softmax_params(imp, node, q_in.scale)
    fixed = ir.Quant(1.0 / 256.0, -128)

    def emit(out, quant, lo, hi):
        if quant == fixed and (lo, hi) == (-128, 127):
            t = imp.add_node(ir.Softmax, base, [act.tensor], out, fixed, **params)
            return imp.act_from_ir(t, act.shape[0], act.layout)
        mid = imp.add_node(ir.Softmax, base, [act.tensor], imp.unique_tensor_name(f"{out}/softmax"), fixed, **params)
        return imp.requantize(imp.act_from_ir(mid, act.shape[0], act.layout), quant, lo, hi, out, base)
    return _Pending(node, emit)


def _softmax(imp, node):
    imp.values[node.output[0]] = _build_softmax(imp, node, imp.act_of(node, 0))


def _qlinear_softmax(imp, node):
    act = imp.act_of(node, 0)
    _check_input_quant(imp, node, act, 1, 2)
    _finalize(imp, node, _build_softmax(imp, node, act), 3, 4)


# ---------------------------------------------------------------------------------------------------------------
# Layout: Reshape, Flatten, Squeeze, Unsqueeze, Transpose, Identity
# ---------------------------------------------------------------------------------------------------------------

def _layout(fn):
    """A layout converter ``fn(imp, node, act) -> act`` on int8 tensors (QOperator), dequantized ones (QDQ: the
    result is the dequantized layout op) and pending float results (onnxruntime leaves e.g. ReduceMean -> Reshape
    -> QuantizeLinear: the layout op applies once the producer is quantized)."""
    def convert(imp, node):
        v = imp.get(node, 0)
        if imp._all_const(node):          # shape arithmetic on constants
            imp._fold(node)
            return
        if isinstance(v, _QConst) and fn is _identity:
            imp.values[node.output[0]] = v
            return
        if isinstance(v, _Pending):
            def emit(out, quant, lo, hi):
                inner = v.emit(imp.unique_tensor_name(f"{out}/before_{node.op_type.lower()}"), quant, lo, hi)
                return fn(imp, node, inner)
            imp.values[node.output[0]] = _Pending(v.node, emit, v.lo, v.hi)
            return
        act = fn(imp, node, imp.act_of(node, 0))
        imp.values[node.output[0]] = _Float(act) if isinstance(v, _Float) else act
    convert.__name__ = fn.__name__
    convert.__doc__ = fn.__doc__
    return convert


def _reshape_to(imp, node, act: _Act, target: tuple) -> _Act:
    """The activation reshaped (in ONNX element order) to the ONNX shape ``target`` (batch axis kept)."""
    if target[0] != act.shape[0]:
        raise imp.error(node, f"reshapes {list(act.shape)} to {list(target)}: the batch axis must stay first and "
                        f"unchanged")
    if tuple(target) == tuple(act.shape):
        return act
    base = imp.node_base(node)
    q = imp.quant_of(act)
    rest = tuple(target[1:])
    if act.layout == "nchw" and len(rest) == 1:
        h, w, c = imp.ir_shape(act)
        if h * w == 1 or c == 1:     # C,H,W and H,W,C orders coincide
            t = imp.add_node(ir.Reshape, base, [act.tensor], imp.unique_tensor_name(node.output[0]), q, shape=rest)
            return _Act(t, tuple(target), "plain")
        return _Act(act.tensor, tuple(target), "flat_nchw")
    if act.layout == "flat_nchw" and len(rest) == 3:
        h, w, c = imp.ir_shape(act)
        if rest == (c, h, w):
            return _Act(act.tensor, tuple(target), "nchw")
    src = act
    if act.layout == "nchw":
        src_t = imp.add_node(ir.Transpose, f"{base}/to_nchw", [act.tensor],
                             imp.unique_tensor_name(f"{node.output[0]}/nchw"), q, perm=(2, 0, 1))
        src = _Act(src_t, act.shape, "plain")
    src = imp.materialize(src, base)
    if len(rest) == 4 - 1:   # a rank-4 result is an NCHW tensor: its IR tensor is (H, W, C)
        mid = imp.add_node(ir.Reshape, base, [src.tensor], imp.unique_tensor_name(f"{node.output[0]}/chw"), q,
                           shape=rest)
        t = imp.add_node(ir.Transpose, f"{base}/to_nhwc", [mid], imp.unique_tensor_name(node.output[0]), q,
                         perm=(1, 2, 0))
        return _Act(t, tuple(target), "nchw")
    if imp.ir_shape(src) == rest:
        return _Act(src.tensor, tuple(target), "plain")
    t = imp.add_node(ir.Reshape, base, [src.tensor], imp.unique_tensor_name(node.output[0]), q, shape=rest)
    return _Act(t, tuple(target), "plain")


def _reshape(imp, node, act):
    imp.check_attrs(node, {"allowzero"})
    shape = [int(d) for d in np.asarray(imp.const(node, 1, "shape")).reshape(-1)]
    allowzero = imp.attrs(node).get("allowzero", 0)
    out = []
    for i, d in enumerate(shape):
        if d == 0 and not allowzero:
            if i >= len(act.shape):
                raise imp.error(node, f"shape {shape}: a 0 beyond the input's rank {len(act.shape)}")
            d = act.shape[i]
        out.append(d)
    total = int(np.prod(act.shape))
    if out.count(-1) > 1 or any(d < -1 for d in out) or 0 in out:
        raise imp.error(node, f"shape {shape} is not a valid target for {list(act.shape)}")
    if -1 in out:
        known = int(np.prod([d for d in out if d != -1]))
        if known == 0 or total % known:
            raise imp.error(node, f"cannot reshape {list(act.shape)} to {shape}")
        out[out.index(-1)] = total // known
    if int(np.prod(out)) != total:
        raise imp.error(node, f"cannot reshape {list(act.shape)} ({total} elements) to {shape}")
    return _reshape_to(imp, node, act, tuple(out))


def _flatten(imp, node, act):
    imp.check_attrs(node, {"axis"})
    axis = imp.attrs(node).get("axis", 1) % max(len(act.shape), 1)
    if axis != 1:
        raise imp.error(node, f"attribute 'axis' = {axis} is not supported (1: keep the batch axis)")
    return _reshape_to(imp, node, act, (act.shape[0], int(np.prod(act.shape[1:]))))


def _squeeze_unsqueeze(imp, node, act):
    imp.check_attrs(node, {"axes"})
    axes = imp.attrs(node).get("axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        axes = [int(x) for x in np.asarray(imp.const(node, 1, "axes")).reshape(-1)]
    shape = list(act.shape)
    if node.op_type == "Squeeze":
        rank = len(shape)
        axes = [a % rank for a in axes] if axes is not None else [i for i, d in enumerate(shape) if d == 1]
        if any(shape[a] != 1 for a in axes):
            raise imp.error(node, f"attribute 'axes' = {axes}: cannot squeeze non-unit axes of {shape}")
        out = [d for i, d in enumerate(shape) if i not in axes]
    else:
        if axes is None:
            raise imp.error(node, "the axes are missing")
        rank = len(shape) + len(axes)
        axes = sorted(a % rank for a in axes)
        out = shape
        for a in axes:
            out = out[:a] + [1] + out[a:]
    if 0 in axes:
        raise imp.error(node, f"axes {axes}: the batch axis must stay")
    return _reshape_to(imp, node, act, tuple(out))


def _transpose(imp, node, act):
    imp.check_attrs(node, {"perm"})
    act = imp.materialize(act, imp.node_base(node))
    rank = len(act.shape)
    perm = list(imp.attrs(node).get("perm", list(range(rank))[::-1]))
    if sorted(perm) != list(range(rank)) or perm[0] != 0:
        raise imp.error(node, f"attribute 'perm' = {perm}: the batch axis must stay first")
    out_shape = tuple(act.shape[p] for p in perm)

    def ir_axes(layout, r):      # ONNX axis of each IR axis
        return (2, 3, 1) if layout == "nchw" else tuple(range(1, r))
    pos_in = {a: i for i, a in enumerate(ir_axes(act.layout, rank))}
    out_layout = "nchw" if rank == 4 else "plain"
    ir_perm = tuple(pos_in[perm[d]] for d in ir_axes(out_layout, rank))
    if ir_perm == tuple(range(rank - 1)):
        res = _Act(act.tensor, out_shape, out_layout)
    else:
        t = imp.add_node(ir.Transpose, imp.node_base(node), [act.tensor], imp.unique_tensor_name(node.output[0]),
                         imp.quant_of(act), perm=ir_perm)
        res = _Act(t, out_shape, out_layout)
    return res


def _identity(imp, node, act):
    imp.check_attrs(node, set())
    return act


def _constant(imp, node):
    a = imp.attrs(node)
    if "value" not in a:
        raise imp.error(node, f"only the 'value' attribute is supported, not {sorted(a)}")
    imp.values[node.output[0]] = imp.numpy_helper.to_array(a["value"])


#: Converters by op type (the ONNX domain's and onnxruntime's com.microsoft quantized ops).
_CONVERTERS = {
    "QuantizeLinear": _quantize_linear, "DequantizeLinear": _dequantize_linear,
    "Conv": _conv, "Gemm": _gemm, "MatMul": _matmul, "Add": _add,
    "AveragePool": _average_pool, "GlobalAveragePool": _global_average_pool, "ReduceMean": _reduce_mean,
    "MaxPool": _max_pool,
    "Relu": _relu_clip, "Clip": _relu_clip, "Softmax": _softmax,
    "Reshape": _layout(_reshape), "Flatten": _layout(_flatten), "Squeeze": _layout(_squeeze_unsqueeze),
    "Unsqueeze": _layout(_squeeze_unsqueeze), "Transpose": _layout(_transpose), "Identity": _layout(_identity),
    "Constant": _constant,
    "QLinearConv": _qlinear_conv, "QLinearMatMul": _qlinear_matmul, "QGemm": _qgemm, "QLinearAdd": _qlinear_add,
    "QLinearAveragePool": _qlinear_average_pool, "QLinearGlobalAveragePool": _qlinear_global_average_pool,
    "QLinearSoftmax": _qlinear_softmax,
}

#: The op types the importer converts (shape arithmetic on constants is folded besides).
SUPPORTED_OPS = tuple(sorted(_CONVERTERS))

# Ops never folded even on constant inputs (their constant form carries quantization, handled by the converters).
_CONST_FOLDABLE_EXCLUDED = {"QuantizeLinear", "DequantizeLinear", "Constant"}


# ---------------------------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------------------------

def import_model(model_or_path) -> ir.Graph:
    """The IR of a quantized (QDQ or QOperator) ONNX model; a float model raises :class:`FloatModelError`."""
    model, where = _load_proto(model_or_path)
    if not _is_quantized(model):
        raise FloatModelError(f"{where} is a float model (no QuantizeLinear/DequantizeLinear or QLinear* "
                              f"operators): int8 import needs calibration data to quantize it - pass "
                              f"calibration=<array of sample inputs> (load_model(path, calibration=...))")
    kind = "qoperator" if any(n.op_type.startswith("QLinear") or n.op_type == "QGemm"
                              for n in model.graph.node) else "qdq"
    return _Importer(model, where, kind).run()


class _Calibration:
    """onnxruntime CalibrationDataReader over the user's samples (one feed per sample or batch)."""

    def __init__(self, name, samples, batch):
        self.name = name
        self.samples = samples
        self.batch = batch
        self.i = 0

    def get_next(self):
        if self.i >= len(self.samples):
            return None
        step = self.batch or len(self.samples)
        chunk = self.samples[self.i:self.i + step]
        self.i += step
        return {self.name: np.ascontiguousarray(chunk, dtype=np.float32)}

    def rewind(self):
        self.i = 0


def _check_calibration(model, calibration, where):
    inputs = [vi for vi in model.graph.input if vi.name not in {i.name for i in model.graph.initializer}]
    if len(inputs) != 1:
        raise OnnxImportError(f"{where}: calibration of models with {len(inputs)} inputs is not supported (one)")
    vi = inputs[0]
    dims = [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
    data = np.asarray(calibration)
    if data.dtype == object or not np.issubdtype(data.dtype, np.number):
        raise OnnxImportError(f"{where}: calibration data must be a numeric array, not {data.dtype}")
    if data.ndim != len(dims) or any(d is not None and d != s for d, s in zip(dims[1:], data.shape[1:])):
        raise OnnxImportError(f"{where}: calibration data of shape {data.shape} does not fit input {vi.name!r} of "
                              f"shape {['N' if d is None else d for d in dims]} (samples along the first axis, "
                              f"in the model's own layout, e.g. NCHW)")
    if len(data) == 0:
        raise OnnxImportError(f"{where}: the calibration data holds no samples")
    if not np.all(np.isfinite(data)):
        raise OnnxImportError(f"{where}: the calibration data holds NaN or infinite values")
    return vi.name, data.astype(np.float32), dims[0]


def quantize_float_model(model_or_path, calibration, output_path=None, *, per_channel=True):
    """Quantize a float ONNX model with onnxruntime's ``quantize_static`` over ``calibration`` (samples along the
    first axis, in the model's own layout): QDQ format, int8 activations (asymmetric, per tensor) and int8 weights
    (symmetric, per output channel), MinMax calibration. Returns the quantized ``onnx.ModelProto`` (also written to
    ``output_path`` when given).

    onnxruntime's quantizer is used rather than the toolkit's ``sw.quantize`` because it works on any ONNX graph
    (residual adds, pooling, softmax, layout ops) and writes a model that onnxruntime itself runs as the reference;
    ``sw.quantize`` knows only the toolkit's own sequential networks."""
    onnx = _require_onnx()
    _require_ort()
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process
    import tempfile
    import logging
    model, where = _load_proto(model_or_path)
    if _is_quantized(model):
        raise OnnxImportError(f"{where} is already quantized; import it without calibration data")
    name, data, batch = _check_calibration(model, calibration, where)
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "float.onnx")
        pre = os.path.join(tmp, "pre.onnx")
        dst = os.path.join(tmp, "int8.onnx")
        onnx.save(model, src)
        logger = logging.getLogger()
        level = logger.level
        logger.setLevel(logging.ERROR)   # onnxruntime.quantization logs advice through the root logger
        try:
            quant_pre_process(src, pre, skip_symbolic_shape=True)
            quantize_static(pre, dst, _Calibration(name, data, None if batch in (None, 0) else batch),
                            quant_format=QuantFormat.QDQ, per_channel=per_channel,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
        finally:
            logger.setLevel(level)
        qmodel = onnx.load(dst)
    if output_path is not None:
        onnx.save(qmodel, os.fspath(output_path))
    return qmodel


def load_onnx(path_or_model, *, calibration=None, quantized_path=None) -> ir.Graph:
    """Import an ONNX model as the int8 graph IR.

    A quantized model (QDQ or QOperator) imports directly. A float model needs ``calibration`` (sample inputs in
    the model's own layout, samples along the first axis): it is quantized by :func:`quantize_float_model` (written
    to ``quantized_path`` if given, so onnxruntime can run the same int8 model as the reference) and imported."""
    model, where = _load_proto(path_or_model)
    if _is_quantized(model):
        if calibration is not None:
            raise OnnxImportError(f"{where} is already quantized; calibration data would be ignored - drop it")
        graph = _Importer(model, where, "qoperator" if any(
            n.op_type.startswith("QLinear") or n.op_type == "QGemm" for n in model.graph.node) else "qdq").run()
        return graph
    if calibration is None:
        raise FloatModelError(f"{where} is a float model (no QuantizeLinear/DequantizeLinear or QLinear* "
                              f"operators): int8 import needs calibration data to quantize it - pass "
                              f"calibration=<sample inputs (N, ...) in the model's layout> "
                              f"(load_model(path, calibration=...), systolic8 ... --calibration DATA)")
    qmodel = quantize_float_model(model, calibration, quantized_path)
    graph = _Importer(qmodel, where + " (quantized by onnxruntime)", "float+ptq").run()
    graph.metadata["onnx"]["quantized_path"] = None if quantized_path is None else os.fspath(quantized_path)
    return graph


def to_graph_inputs(graph: ir.Graph, *arrays) -> list:
    """Float inputs in the ONNX model's layout (batch first, e.g. NCHW) -> the graph's int8 inputs (batch, NHWC).

    Quantized as ONNX ``QuantizeLinear`` does: ``saturate(round_half_even(x / scale) + zero_point)``."""
    meta = graph.metadata["onnx"]["inputs"]
    if len(arrays) != len(meta):
        raise ValueError(f"graph {graph.name!r} takes {len(meta)} input(s) ({[m['name'] for m in meta]}), "
                         f"not {len(arrays)}")
    out = []
    for m, x in zip(meta, arrays):
        x = np.asarray(x, dtype=np.float32)
        if x.shape[1:] != tuple(m["shape"][1:]):
            raise ValueError(f"input {m['name']!r} needs shape (N, {', '.join(map(str, m['shape'][1:]))}) in the "
                             f"ONNX model's layout, not {x.shape}")
        q = graph.tensors[m["tensor"]].quant
        v = np.clip(np.rint(x / np.float32(q.scale)) + q.zero_point, -128, 127).astype(np.int8)
        out.append(np.ascontiguousarray(v.transpose(0, 2, 3, 1)) if m["layout"] == "NCHW" else v)
    return out


def from_graph_outputs(graph: ir.Graph, *outputs, dequantize=True) -> list:
    """The graph's int8 outputs (batch first, IR layout) -> the ONNX model's outputs (its layout; float if the
    model dequantizes them, as onnxruntime returns them)."""
    meta = graph.metadata["onnx"]["outputs"]
    res = []
    for m, y in zip(meta, outputs):
        y = np.asarray(y)
        if m["layout"] == "NCHW":
            y = y.transpose(0, 3, 1, 2)
        if dequantize and m["dequantized"]:
            q = graph.tensors[m["tensor"]].quant
            y = (np.float32(q.scale) * (y.astype(np.float32) - np.float32(q.zero_point))).astype(np.float32)
        res.append(y)
    return res


def _session(model, optimize):
    ort = _require_ort()
    opts = ort.SessionOptions()
    opts.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                     else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def reference_run(path_or_model, inputs, *, calibration=None, optimize=True):
    """Run the model on onnxruntime (CPU) for the int8 graph inputs ``inputs`` (the batch in the IR's layout, as
    :func:`sw.kernels.graph_forward` takes it: an array for a single input or ``{tensor name: array}``); returns the
    int8 outputs in the IR's layout (an array, or ``{tensor name: array}`` for several outputs).

    The int8 values are dequantized exactly into the model's float inputs (NCHW) - its own QuantizeLinear gives
    them back unchanged - and its float outputs are quantized back with the output tensor's parameters (exact:
    they are dequantized int8 values). ``optimize`` keeps onnxruntime's default graph optimizations, which fuse
    QDQ groups into its integer kernels (what a deployment runs); ``optimize=False`` runs the QDQ graph op by op
    in float. A float model is quantized with ``calibration`` first, exactly as :func:`load_onnx` does."""
    model, where = _load_proto(path_or_model)
    if not _is_quantized(model):
        if calibration is None:
            raise FloatModelError(f"{where} is a float model: the reference run needs the calibration data it "
                                  f"was imported with")
        model = quantize_float_model(model, calibration)
    graph = _Importer(model, where, "reference").run()
    meta = graph.metadata["onnx"]
    if not isinstance(inputs, dict):
        if len(graph.inputs) != 1:
            raise ValueError(f"{where} has {len(graph.inputs)} inputs: pass {{tensor name: array}}")
        inputs = {graph.inputs[0]: inputs}
    feeds, n = {}, None
    for m in meta["inputs"]:
        t = graph.tensors[m["tensor"]]
        if m["tensor"] not in inputs:
            raise ValueError(f"missing input {m['tensor']!r}; inputs: {list(graph.inputs)}")
        q = np.asarray(inputs[m["tensor"]])
        if q.dtype != np.int8 or q.shape[1:] != t.shape:
            raise ValueError(f"input {m['tensor']!r} must be int8 of shape (N, {', '.join(map(str, t.shape))}), "
                             f"not {q.dtype} {q.shape}")
        x = (np.float32(t.quant.scale) * (q.astype(np.float32) - np.float32(t.quant.zero_point))).astype(np.float32)
        feeds[m["name"]] = x.transpose(0, 3, 1, 2) if m["layout"] == "NCHW" else x
        n = len(q)
    sess = _session(model, optimize)
    names = [o["name"] for o in meta["outputs"]]
    fixed_batch = {i.name: (i.shape[0] if isinstance(i.shape[0], int) else None) for i in sess.get_inputs()}
    if all(b == 1 for b in fixed_batch.values()):
        runs = [sess.run(names, {k: v[i:i + 1] for k, v in feeds.items()}) for i in range(n)]
        outs = [np.concatenate([r[k] for r in runs]) for k in range(len(names))]
    else:
        outs = sess.run(names, feeds)
    result = {}
    for m, y in zip(meta["outputs"], outs):
        t = graph.tensors[m["tensor"]]
        y = np.asarray(y)
        if m["dequantized"]:
            y = np.clip(np.rint(y / np.float32(t.quant.scale)) + t.quant.zero_point, -128, 127)
        elif y.dtype == np.uint8:
            y = y.astype(np.int16) - 128
        y = y.astype(np.int8)
        result[m["tensor"]] = np.ascontiguousarray(y.transpose(0, 2, 3, 1)) if m["layout"] == "NCHW" else y
    return result[graph.outputs[0]] if len(result) == 1 else result


def agreement(ours, reference) -> dict:
    """How far two int8 output batches (N, ...) differ: the fraction of elements equal and within 1 LSB, the
    largest difference, and the fraction of samples whose top-1 (argmax over each sample) is identical."""
    a = np.asarray(ours).astype(np.int64)
    b = np.asarray(reference).astype(np.int64)
    if a.shape != b.shape:
        raise ValueError(f"outputs of shapes {a.shape} and {b.shape} cannot be compared")
    d = np.abs(a - b)
    n = len(a)
    return {"elements": int(d.size), "exact": float(np.mean(d == 0)), "within_1": float(np.mean(d <= 1)),
            "max_diff": int(d.max()) if d.size else 0,
            "top1_identical": float(np.mean(a.reshape(n, -1).argmax(1) == b.reshape(n, -1).argmax(1)))}


def layer_agreement(path_or_model, graph: ir.Graph, inputs, *, optimize=True) -> dict:
    """Per-node agreement with onnxruntime: each IR node whose input and output tensors are int8 tensors of the
    ONNX graph runs the reference kernel on onnxruntime's own int8 inputs and is compared with onnxruntime's output
    (so the figures are the arithmetic difference of that one op, not accumulated). ``{node name: (op,
    agreement)}`` where op is ``"<ONNX op> -> <IR op>"``; ``inputs`` as :func:`reference_run` takes them (a quantized
    model)."""
    from sw.kernels import run_node
    onnx = _require_onnx()
    model, where = _load_proto(path_or_model)
    meta = graph.metadata["onnx"]
    int8 = meta["int8_tensors"]
    model = onnx.ModelProto.FromString(model.SerializeToString())
    present = {o.name for o in model.graph.output}
    for ir_name, (onnx_name, _) in int8.items():
        if onnx_name not in present and onnx_name not in {i.name for i in model.graph.input}:
            model.graph.output.append(onnx.ValueInfoProto(name=onnx_name))
            present.add(onnx_name)
    if not isinstance(inputs, dict):
        inputs = {graph.inputs[0]: inputs}
    feeds = {}
    for m in meta["inputs"]:
        t = graph.tensors[m["tensor"]]
        q = np.asarray(inputs[m["tensor"]])
        x = (np.float32(t.quant.scale) * (q.astype(np.float32) - np.float32(t.quant.zero_point))).astype(np.float32)
        feeds[m["name"]] = x.transpose(0, 3, 1, 2) if m["layout"] == "NCHW" else x
    sess = _session(model, optimize)
    names = [o.name for o in sess.get_outputs()]
    n = len(next(iter(feeds.values())))
    runs = [sess.run(names, {k: v[i:i + 1] for k, v in feeds.items()}) for i in range(n)]
    got = {name: np.concatenate([r[k] for r in runs]) for k, name in enumerate(names)}
    values = {}
    for ir_name, (onnx_name, layout) in int8.items():
        if onnx_name in got and got[onnx_name].dtype in (np.int8, np.uint8):
            v = got[onnx_name]
            v = (v.astype(np.int16) - 128).astype(np.int8) if v.dtype == np.uint8 else v
            values[ir_name] = np.ascontiguousarray(v.transpose(0, 2, 3, 1)) if layout == "NCHW" else v
    for name in graph.inputs:
        values[name] = np.asarray(inputs[name])
    result = {}
    for node in graph.nodes:
        if node.output in values and all(t in values for t in node.inputs):
            ours = run_node(graph, node, [values[t] for t in node.inputs])
            src = meta.get("node_ops", {}).get(node.name, "")
            result[node.name] = (f"{src} -> {node.op}" if src else node.op, agreement(ours, values[node.output]))
    return result
