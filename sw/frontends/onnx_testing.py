"""Seeded ONNX test models and the agreement campaign against onnxruntime (``make onnx-agreement``).

The models are float ONNX graphs built with ``onnx.helper`` from seeded random weights, so that onnxruntime's own
quantizer writes their QDQ and QOperator forms: :func:`every_op_model` holds every operator the importer supports
(and the awkward attributes: asymmetric pads, SAME_UPPER / SAME_LOWER, dilation, depth multiplier 2, padded pools
with and without count_include_pad, a transpose before the flatten), :func:`layout_model` the reshape and flatten
orders. Nothing is downloaded. The tests (``tests/sw/frontends/test_onnx.py``) and the campaign
(``python -m sw.frontends.onnx_testing --seeds 10``) use the same builders; ``docs/onnx.md`` quotes the campaign.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from .common import require

__all__ = ["every_op_model", "layout_model", "calibration_data", "ort_quantize", "random_inputs", "campaign",
           "write_models", "resnet8_torch", "INPUT_SHAPE", "SEED"]

SEED = 16
INPUT_SHAPE = (1, 3, 11, 11)

onnx = require("onnx", "the ONNX test models")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
_q = require("onnxruntime.quantization", "the ONNX test models")
CalibrationDataReader, QuantFormat, QuantType, quantize_static = (
    _q.CalibrationDataReader, _q.QuantFormat, _q.QuantType, _q.quantize_static)


class _Builder:
    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits = [], []
        self.n = 0

    def const(self, arr, name=None):
        self.n += 1
        name = name or f"c{self.n}"
        self.inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    def op(self, op_type, inputs, **attrs):
        self.n += 1
        out = f"t{self.n}_{op_type.lower()}"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=f"{op_type.lower()}_{self.n}", **attrs))
        return out

    def conv(self, x, cin, cout, k, group=1, bias=True, **attrs):
        fan_in = cin // group * k * k
        w = self.rng.normal(0, 1.5 / np.sqrt(fan_in), (cout, cin // group, k, k)).astype(np.float32)
        ins = [x, self.const(w)]
        if bias:
            ins.append(self.const(self.rng.normal(0, 0.1, cout).astype(np.float32)))
        return self.op("Conv", ins, group=group, kernel_shape=[k, k], **attrs)

    def gemm(self, x, k, n, trans_b=1):
        w = self.rng.normal(0, 1.5 / np.sqrt(k), (n, k) if trans_b else (k, n)).astype(np.float32)
        return self.op("Gemm", [x, self.const(w), self.const(self.rng.normal(0, 0.1, n).astype(np.float32))],
                       transB=trans_b)

    def matmul(self, x, k, n):
        return self.op("MatMul", [x, self.const(self.rng.normal(0, 1.5 / np.sqrt(k), (k, n)).astype(np.float32))])

    def model(self, inputs, outputs, opset=17):
        g = helper.make_graph(self.nodes, "test_model",
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs],
                              self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
        m.ir_version = 8
        onnx.checker.check_model(m)
        return m


def every_op_model(seed=SEED):
    """Conv (asymmetric pads, dilation, SAME_UPPER / SAME_LOWER, stride 2), depthwise Conv (multiplier 2), Relu,
    Clip (ReLU6), residual Add, AveragePool (count_include_pad 0 and 1 with padding), MaxPool (padded),
    GlobalAveragePool, Squeeze, Transpose, Flatten, Gemm (transB 0 and 1), MatMul, Softmax; two outputs."""
    b = _Builder(seed)
    x = "x"
    c1 = b.op("Relu", [b.conv(x, 3, 8, 3, pads=[0, 1, 1, 0])])                          # 10x10
    dw = b.op("Clip", [b.conv(c1, 8, 16, 3, group=8, auto_pad="SAME_UPPER", strides=[2, 2]),
                       b.const(np.float32(0.0)), b.const(np.float32(6.0))])              # 5x5x16
    c3 = b.conv(dw, 16, 16, 3, dilations=[2, 2], pads=[2, 2, 2, 2])                      # 5x5x16
    add = b.op("Add", [c3, dw])
    ap1 = b.op("AveragePool", [add], kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=0)
    ap2 = b.op("AveragePool", [ap1], kernel_shape=[2, 2], pads=[0, 0, 1, 1], count_include_pad=1)
    mp = b.op("MaxPool", [ap2], kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 1, 1])   # 3x3
    c4 = b.op("Relu", [b.conv(mp, 16, 12, 2, auto_pad="SAME_LOWER", strides=[2, 2])])    # 2x2x12
    tr = b.op("Transpose", [c4], perm=[0, 1, 3, 2])
    fl = b.op("Flatten", [tr], axis=1)                                                  # 48, C-major
    g1 = b.op("Relu", [b.gemm(fl, 48, 20)])
    logits = b.matmul(g1, 20, 10)
    b.nodes.append(helper.make_node("Softmax", [logits], ["probs"], name="softmax", axis=-1))
    gap = b.op("GlobalAveragePool", [add])
    sq = b.op("Squeeze", [gap, b.const(np.array([2, 3], np.int64))])
    b.nodes.append(helper.make_node("Gemm", [sq, b.const(b.rng.normal(0, 0.3, (16, 4)).astype(np.float32)),
                                             b.const(np.zeros(4, np.float32))], ["aux"], name="aux_gemm"))
    return b.model([("x", INPUT_SHAPE)], [("probs", (1, 10)), ("aux", (1, 4))])


def layout_model(seed=SEED):
    """Reshape of an NCHW tensor (the flatten trap), an NCHW -> 2-D -> NCHW reshape round trip, a 3-D reshape and
    transpose, Unsqueeze / Squeeze."""
    b = _Builder(seed)
    c1 = b.op("Relu", [b.conv("x", 2, 5, 3)])                                           # 5x4x4 (C, H, W)
    r1 = b.op("Reshape", [c1, b.const(np.array([1, -1], np.int64))])                    # 80
    r2 = b.op("Reshape", [r1, b.const(np.array([1, 5, 4, 4], np.int64))])               # back to NCHW
    c2 = b.conv(r2, 5, 3, 1)
    r3 = b.op("Reshape", [c2, b.const(np.array([1, 3, 16], np.int64))])                 # (C, H*W) plain 3-D
    t3 = b.op("Transpose", [r3], perm=[0, 2, 1])                                        # (H*W, C)
    f3 = b.op("Flatten", [t3])
    u3 = b.op("Unsqueeze", [f3, b.const(np.array([2], np.int64))])                     # (N, 48, 1)
    s3 = b.op("Squeeze", [u3, b.const(np.array([2], np.int64))])
    b.nodes.append(helper.make_node("Gemm", [s3, b.const(b.rng.normal(0, 0.2, (48, 6)).astype(np.float32)),
                                             b.const(np.zeros(6, np.float32))], ["logits"], name="fc"))
    return b.model([("x", (1, 2, 6, 6))], [("logits", (1, 6))])


class _Reader(CalibrationDataReader):
    def __init__(self, name, data):
        self.it = iter([{name: d[None]} for d in data])

    def get_next(self):
        return next(self.it, None)


def calibration_data(shape, n=24, seed=SEED):
    return np.random.default_rng(seed + 1).normal(0, 1, (n,) + tuple(shape[1:])).astype(np.float32)


def ort_quantize(model, tmp_path, fmt="QDQ", activation=None, name="q", per_channel=True):
    """Quantize ``model`` with onnxruntime (QDQ or QOperator, per channel) over :func:`calibration_data`;
    returns the path of the int8 model written under ``tmp_path``."""
    activation = QuantType.QInt8 if activation is None else activation
    tmp_path = Path(tmp_path)
    src = tmp_path / f"{name}_float.onnx"
    dst = tmp_path / f"{name}_{fmt}.onnx"
    onnx.save(model, src)
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    logging.getLogger().setLevel(logging.ERROR)
    quantize_static(str(src), str(dst), _Reader(model.graph.input[0].name, calibration_data(shape)),
                    quant_format=getattr(QuantFormat, fmt), per_channel=per_channel, activation_type=activation,
                    weight_type=QuantType.QInt8)
    return dst


def random_inputs(graph, n=32, seed=SEED):
    t = graph.tensors[graph.inputs[0]]
    return np.random.default_rng(seed).integers(-128, 128, (n,) + t.shape).astype(np.int8)




def campaign(seeds=10, samples=64, out=print):
    """Agreement of the reference kernels with onnxruntime on every test model, format and seed: end to end (each
    output) and per layer (each node on onnxruntime's own inputs). Returns the rows; prints a table."""
    from sw.kernels import graph_forward

    from . import onnx as fe
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for builder in (every_op_model, layout_model):
            for fmt, act in (("QDQ", QuantType.QInt8), ("QOperator", QuantType.QInt8), ("QDQ", QuantType.QUInt8),
                             ("QOperator", QuantType.QUInt8)):
                label = f"{builder.__name__} {fmt} {'uint8' if act == QuantType.QUInt8 else 'int8'}"
                ends, layers = {}, {}
                for seed in range(seeds):
                    path = ort_quantize(builder(seed), tmp, fmt, act, name=f"m{seed}")
                    g = fe.load_onnx(path)
                    x = random_inputs(g, samples, seed)
                    ours, ref = graph_forward(g, x), fe.reference_run(path, x)
                    if not isinstance(ours, dict):
                        ours, ref = {g.outputs[0]: ours}, {g.outputs[0]: ref}
                    for k in g.outputs:
                        ends.setdefault(k, []).append(fe.agreement(ours[k], ref[k]))
                    for node, (op, s) in fe.layer_agreement(path, g, x).items():
                        layers.setdefault(op, []).append(s)
                for k, ss in ends.items():
                    rows.append(_row(label, f"output {k}", ss))
                for op, ss in sorted(layers.items()):
                    rows.append(_row(label, f"layer {op}", ss))
    out(f"| {'model':<30} | {'output / layer':<46} | {'n':>3} | {'exact':>6} | {'min':>6} | {'<=1 LSB':>7} | "
        f"{'min':>6} | {'max':>3} | {'top-1':>5} | {'min':>5} |")
    out("|" + "|".join("-" * w for w in (32, 48, 5, 8, 8, 9, 8, 5, 7, 7)) + "|")
    for r in rows:
        out(f"| {r['model']:<30} | {r['what']:<46} | {r['n']:>3} | {r['exact']:>6.4f} | {r['min_exact']:>6.4f} | "
            f"{r['within_1']:>7.4f} | {r['min_within_1']:>6.4f} | {r['max_diff']:>3} | {r['top1']:>5.3f} | "
            f"{r['min_top1']:>5.3f} |")
    return rows


def _row(model, what, ss):
    return {"model": model, "what": what, "n": len(ss),
            "exact": float(np.mean([s["exact"] for s in ss])),
            "min_exact": float(min(s["exact"] for s in ss)),
            "within_1": float(np.mean([s["within_1"] for s in ss])),
            "min_within_1": float(min(s["within_1"] for s in ss)),
            "max_diff": int(max(s["max_diff"] for s in ss)),
            "top1": float(np.mean([s["top1_identical"] for s in ss])),
            "min_top1": float(min(s["top1_identical"] for s in ss))}


def resnet8_torch(seed=SEED):
    """A PyTorch ResNet-8 of MLPerf Tiny's shape (CIFAR-10 32x32x3, three residual stages of 16/32/64 channels, a
    1x1 strided shortcut where the shape changes, global average pool, linear 10), seeded random weights with
    BatchNorm folded by the exporter's optimizer. Needs torch."""
    torch = require("torch", "the PyTorch ResNet-8")
    nn = torch.nn

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.c1 = nn.Conv2d(cin, cout, 3, stride, 1)
            self.b1 = nn.BatchNorm2d(cout)
            self.c2 = nn.Conv2d(cout, cout, 3, 1, 1)
            self.b2 = nn.BatchNorm2d(cout)
            self.short = nn.Conv2d(cin, cout, 1, stride) if stride != 1 or cin != cout else None

        def forward(self, x):
            y = self.b2(self.c2(torch.relu(self.b1(self.c1(x)))))
            return torch.relu(y + (x if self.short is None else self.short(x)))

    class ResNet8(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1), nn.BatchNorm2d(16), nn.ReLU())
            self.stages = nn.Sequential(Block(16, 16, 1), Block(16, 32, 2), Block(32, 64, 2))
            self.fc = nn.Linear(64, 10)

        def forward(self, x):
            x = self.stages(self.stem(x))
            return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))

    torch.manual_seed(seed)
    net = ResNet8()
    for m in net.modules():       # non-trivial BatchNorm statistics, so folding them matters
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.1)
    return net.eval()


def write_models(folder, seed=SEED, out=print):
    """Write the example models to ``folder`` for ``systolic8 info`` / ``run``: the every-op model as float ONNX
    (with ``every_op_calibration.npy``, NCHW), QDQ and QOperator, and two QDQ models made from PyTorch modules
    (exported with torch.onnx.export, quantized by onnxruntime over seeded normal data): a small CNN (conv -> ReLU
    -> max pool -> flatten -> linear) and :func:`resnet8_torch`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = every_op_model(seed)
    onnx.save(model, folder / "every_op_float.onnx")
    np.save(folder / "every_op_calibration.npy", calibration_data(INPUT_SHAPE, seed=seed))
    written = [folder / "every_op_float.onnx", folder / "every_op_calibration.npy"]
    for fmt in ("QDQ", "QOperator"):
        p = ort_quantize(model, folder, fmt, name="every_op")
        target = folder / f"every_op_{fmt.lower()}.onnx"
        os.replace(p, target)
        written.append(target)
    for leftover in folder.glob("every_op_float*.onnx"):
        if leftover.name != "every_op_float.onnx":
            leftover.unlink()
    torch = require("torch", "the PyTorch example model")
    from .torch import from_torch
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                              torch.nn.Flatten(), torch.nn.Linear(8 * 14 * 14, 10)).eval()
    cal = np.random.default_rng(seed).normal(size=(64, 1, 28, 28)).astype(np.float32)
    from_torch(net, cal[:1], cal, quantized_path=folder / "torch_cnn_qdq.onnx")
    written.append(folder / "torch_cnn_qdq.onnx")
    cal = np.random.default_rng(seed).normal(size=(64, 3, 32, 32)).astype(np.float32)
    from_torch(resnet8_torch(seed), cal[:1], cal, quantized_path=folder / "torch_resnet8_qdq.onnx")
    written.append(folder / "torch_resnet8_qdq.onnx")
    for p in written:
        out(f"wrote {p}")
    return written


def main(argv=None):
    ap = argparse.ArgumentParser(description="agreement of the int8 reference kernels with onnxruntime on the "
                                             "seeded ONNX test models; --write saves the example models")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--write", metavar="DIR", help="write the example ONNX models to DIR instead")
    args = ap.parse_args(argv)
    logging.getLogger().setLevel(logging.ERROR)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if args.write:
        write_models(args.write)
    else:
        campaign(args.seeds, args.samples)


if __name__ == "__main__":
    main()
