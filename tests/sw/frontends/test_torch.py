"""sw.frontends.torch: nn.Module -> torch.onnx.export -> onnxruntime PTQ -> IR. The flatten-order trap (PyTorch
flattens C, H, W; the IR is NHWC), an edge-CNN block (depthwise, ReLU6, residual add, pooling) and the recipe of
docs/onnx.md, run as written."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from sw.frontends import onnx as fe
from sw.frontends.torch import export_onnx, from_torch
from sw.kernels import graph_forward

SEED = 16
ROOT = Path(__file__).resolve().parents[3]


def _calibration(shape, n=32, seed=SEED):
    return np.random.default_rng(seed).normal(0, 1, (n,) + shape).astype(np.float32)


class FlattenNet(nn.Module):
    """Conv -> ReLU -> Flatten (C, H, W order) -> Linear: the model that gives wrong logits if the flatten order
    is ignored (max error 0.11 in issue 16)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.fc = nn.Linear(6 * 5 * 5, 10)

    def forward(self, x):
        return self.fc(torch.flatten(torch.relu(self.conv(x)), 1))


class EdgeNet(nn.Module):
    """A MobileNet-style block: conv, depthwise conv + ReLU6, pointwise conv, residual add, average pool, max pool,
    global average pool, linear, softmax."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, stride=2, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.pw = nn.Conv2d(8, 8, 1)
        self.pool = nn.AvgPool2d(2)
        self.mp = nn.MaxPool2d(2)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        y = self.pw(nn.functional.relu6(self.dw(x)))
        x = self.mp(self.pool(x + y))
        x = nn.functional.adaptive_avg_pool2d(x, 1).flatten(1)
        return torch.softmax(self.fc(x), dim=-1)


@pytest.fixture(scope="module")
def flatten_net(tmp_path_factory):
    torch.manual_seed(SEED)
    model = FlattenNet().eval()
    tmp = tmp_path_factory.mktemp("torch")
    cal = _calibration((3, 5, 5))
    graph = from_torch(model, cal[:1], cal, quantized_path=tmp / "flatten_int8.onnx")
    return model, graph, tmp / "flatten_int8.onnx", cal


def test_flatten_order_weight_rows_are_permuted_to_nhwc(flatten_net):
    model, graph, _, _ = flatten_net
    fc = next(n for n in graph.nodes if n.op == "fully_connected")
    assert graph.tensors[fc.inputs[0]].shape == (5, 5, 6)      # the FC reads the NHWC conv output directly
    w_pt = model.fc.weight.detach().numpy()                    # (10, C*H*W) in C, H, W order
    scale = fc.weight_scale.reshape(1, -1)
    # row (h, w, c) of the IR weight is PyTorch's column c*25 + h*5 + w (up to the int8 rounding)
    h, w, c = np.meshgrid(np.arange(5), np.arange(5), np.arange(6), indexing="ij")
    expect = w_pt[:, (c * 25 + h * 5 + w).reshape(-1)].T
    np.testing.assert_allclose(fc.weight * scale, expect, atol=float(scale.max()) / 2 + 1e-7)


def test_flatten_net_logits_match_pytorch_and_onnxruntime(flatten_net):
    model, graph, qpath, cal = flatten_net
    x = _calibration((3, 5, 5), 16, SEED + 1)
    (q,) = fe.to_graph_inputs(graph, x)
    y = graph_forward(graph, q)
    (logits,) = fe.from_graph_outputs(graph, y)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    out_scale = graph.tensors[graph.outputs[0]].quant.scale
    err = np.abs(logits - ref)
    # int8 quantization error of input, weights and two requantizations: a few output LSB, against the 0.11 of
    # the wrong (H, W, C) flatten
    assert err.max() < 4 * out_scale, f"seed {SEED}: max |int8 - float| {err.max()} vs output LSB {out_scale}"
    assert (logits.argmax(1) == ref.argmax(1)).mean() >= 0.9
    r = fe.reference_run(qpath, q)
    s = fe.agreement(y, r)
    assert s["max_diff"] <= 1 and s["within_1"] == 1.0, s


def test_edge_net_from_pytorch(tmp_path):
    torch.manual_seed(SEED)
    model = EdgeNet().eval()
    cal = _calibration((1, 16, 16))
    qpath = tmp_path / "edge_int8.onnx"
    graph = from_torch(model, cal[:1], cal, quantized_path=qpath)
    ops = [n.op for n in graph.nodes]
    assert {"conv2d", "depthwise_conv2d", "add", "max_pool2d", "mean", "fully_connected", "softmax"} <= set(ops), ops
    x = _calibration((1, 16, 16), 16, SEED + 2)
    (q,) = fe.to_graph_inputs(graph, x)
    y = graph_forward(graph, q)
    s = fe.agreement(y, fe.reference_run(qpath, q))
    assert s["max_diff"] <= 8 and s["within_1"] >= 0.9 and s["top1_identical"] >= 0.85, f"seed {SEED}: {s}"
    (probs,) = fe.from_graph_outputs(graph, y)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    assert np.abs(probs - ref).max() < 0.05, f"seed {SEED}: softmax outputs differ from PyTorch by {np.abs(probs - ref).max()}"


def test_export_rejects_non_modules(tmp_path):
    with pytest.raises(TypeError, match="torch.nn.Module"):
        export_onnx(lambda x: x, np.zeros((1, 3)), tmp_path / "f.onnx")
    with pytest.raises(fe.OnnxImportError, match="calibration data"):
        from_torch(FlattenNet(), np.zeros((1, 3, 5, 5), np.float32), None)


def test_docs_recipe_runs_as_written(tmp_path, monkeypatch):
    text = (ROOT / "docs" / "onnx.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    recipe = [b for b in blocks if "from_torch" in b]
    assert recipe, "docs/onnx.md has no PyTorch recipe"
    monkeypatch.chdir(tmp_path)
    scope = {}
    exec(compile(recipe[0], "docs/onnx.md", "exec"), scope)
    assert "graph" in scope and scope["graph"].source == "onnx"


def test_example_models_for_the_command_line(tmp_path):
    from sw.frontends import load_model
    from sw.frontends.onnx_testing import write_models
    paths = write_models(tmp_path, out=lambda line: None)
    names = sorted(p.name for p in paths)
    assert names == ["every_op_calibration.npy", "every_op_float.onnx", "every_op_qdq.onnx",
                     "every_op_qoperator.onnx", "torch_cnn_qdq.onnx", "torch_resnet8_qdq.onnx"]
    assert sorted(p.name for p in tmp_path.iterdir()) == names
    cal = np.load(tmp_path / "every_op_calibration.npy", allow_pickle=False)
    formats = {p.name: load_model(p, **({"calibration": cal} if "float" in p.name else {})).metadata["onnx"]["format"]
               for p in paths if p.suffix == ".onnx"}
    assert formats == {"every_op_float.onnx": "float+ptq", "every_op_qdq.onnx": "qdq",
                       "every_op_qoperator.onnx": "qoperator", "torch_cnn_qdq.onnx": "qdq",
                       "torch_resnet8_qdq.onnx": "qdq"}
    # the PyTorch ResNet-8 (BatchNorm folded, three residual stages, 12.5 M MACs): every layer within 1 LSB of
    # onnxruntime on its own inputs, the logits within the documented end-to-end bounds
    path = tmp_path / "torch_resnet8_qdq.onnx"
    g = load_model(path)
    assert sum(g.macs().values()) == 12_501_632
    assert [n.op for n in g.nodes].count("add") == 3
    q = np.random.default_rng(SEED).integers(-128, 128, (4,) + g.input.shape).astype(np.int8)
    for node, (op, st) in fe.layer_agreement(path, g, q).items():
        assert st["max_diff"] <= 1, f"seed {SEED}: {node} ({op}): {st}"
    st = fe.agreement(graph_forward(g, q), fe.reference_run(path, q))
    assert st["max_diff"] <= 8 and st["within_1"] >= 0.8, f"seed {SEED}: {st}"
