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

This module holds the entry points (import, PTQ, layouts of inputs and outputs, the onnxruntime reference and the
agreement measures); :mod:`sw.frontends.onnx_graph` the conversion machinery and :mod:`sw.frontends.onnx_ops` one
converter per op type.
"""

from __future__ import annotations

import os

import numpy as np

from sw import ir

from .onnx_graph import (FloatModelError, Importer, OnnxImportError, _is_quantized, _load_proto, _require_onnx,
                         _require_ort, is_onnx_file)
from .onnx_ops import CONVERTERS, SUPPORTED_OPS

__all__ = ["OnnxImportError", "FloatModelError", "load_onnx", "import_model", "quantize_float_model",
           "reference_run", "agreement", "layer_agreement", "to_graph_inputs", "from_graph_outputs", "SUPPORTED_OPS",
           "is_onnx_file"]


def _importer(model, where, kind):
    return Importer(model, where, kind, CONVERTERS)


# ---------------------------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------------------------

def import_model(model_or_path) -> ir.Graph:
    """The IR of a quantized (QDQ or QOperator) ONNX model; a float model raises :class:`FloatModelError`."""
    model, where = _load_proto(model_or_path)
    if not _is_quantized(model):
        raise FloatModelError(f"{where} is a float model (no QuantizeLinear/DequantizeLinear or QLinear* "
                              f"operators): int8 import needs calibration data to quantize it - pass "
                              f"calibration=<sample inputs (N, ...) in the model's layout> to load_model / "
                              f"load_onnx, or use the int8 model quantize_float_model(path, data, out) writes")
    kind = "qoperator" if any(n.op_type.startswith("QLinear") or n.op_type == "QGemm"
                              for n in model.graph.node) else "qdq"
    return _importer(model, where, kind).run()


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
        graph = _importer(model, where, "qoperator" if any(
            n.op_type.startswith("QLinear") or n.op_type == "QGemm" for n in model.graph.node) else "qdq").run()
        return graph
    if calibration is None:
        raise FloatModelError(f"{where} is a float model (no QuantizeLinear/DequantizeLinear or QLinear* "
                              f"operators): int8 import needs calibration data to quantize it - pass "
                              f"calibration=<sample inputs (N, ...) in the model's layout> to load_model / "
                              f"load_onnx, or use the int8 model quantize_float_model(path, data, out) writes")
    qmodel = quantize_float_model(model, calibration, quantized_path)
    graph = _importer(qmodel, where + " (quantized by onnxruntime)", "float+ptq").run()
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
    graph = _importer(model, where, "reference").run()
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

