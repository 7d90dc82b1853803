"""PyTorch frontend: an ``nn.Module`` -> ONNX (``torch.onnx.export``) -> int8 (onnxruntime PTQ over the user's
calibration data) -> the graph IR, through :mod:`sw.frontends.onnx`.

The module is exported in its own layout (NCHW images, PyTorch's C, H, W flatten order); the ONNX importer turns it
into the IR's NHWC and re-orders the first fully connected layer's weight rows after a flatten, so the logits equal
PyTorch's without the user touching the layout. Inputs to the imported graph are made with
:func:`sw.frontends.onnx.to_graph_inputs` from NCHW arrays, outputs mapped back with
:func:`sw.frontends.onnx.from_graph_outputs`.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np

from sw import ir

from .common import require
from .onnx import OnnxImportError, load_onnx

__all__ = ["export_onnx", "from_torch"]


def _torch():
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - the torch extra is installed in CI
        raise ImportError("the PyTorch frontend needs torch: pip install -e .[torch]") from exc
    return torch


def export_onnx(module, example_input, path, *, opset: int = 18) -> str:
    """Export ``module`` (put in eval mode) to a single-file float ONNX model at ``path`` with
    ``torch.onnx.export`` (the dynamo exporter); input ``input``, output ``output``. Returns the path."""
    torch = _torch()
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, not {type(module).__name__}")
    x = torch.as_tensor(np.asarray(example_input, dtype=np.float32)) \
        if not isinstance(example_input, torch.Tensor) else example_input.float()
    if x.ndim < 2:
        raise ValueError(f"example_input needs a batch axis: shape (1, ...), not {tuple(x.shape)}")
    require("onnxscript", "torch.onnx.export (the PyTorch path)")
    module = module.eval()
    import logging
    import warnings
    path = os.fspath(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        level = logging.getLogger("torch").level
        try:
            torch.onnx.export(module, (x[:1],), path, input_names=["input"], output_names=["output"],
                              opset_version=opset, dynamo=True, external_data=False, verbose=False)
        finally:
            logging.getLogger("torch").setLevel(level)
    return path


def from_torch(module, example_input, calibration, *, onnx_path=None, quantized_path=None,
               opset: int = 18) -> ir.Graph:
    """The int8 IR of a PyTorch module.

    ``example_input``: one sample with its batch axis (e.g. (1, C, H, W)), as PyTorch takes it. ``calibration``:
    representative inputs (N, ...) in the same layout (numpy or torch); onnxruntime's ``quantize_static`` (QDQ,
    int8, per-channel weights, MinMax) calibrates on them. ``onnx_path`` / ``quantized_path`` keep the float and
    int8 ONNX files (e.g. to run onnxruntime on the same int8 model); by default they live in a temporary folder."""
    torch = _torch()
    if calibration is None:
        raise OnnxImportError("from_torch needs calibration data: representative inputs (N, ...) in the module's "
                              "own layout")
    if isinstance(calibration, torch.Tensor):
        calibration = calibration.detach().cpu().numpy()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.fspath(onnx_path) if onnx_path is not None else os.path.join(tmp, "float.onnx")
        export_onnx(module, example_input, path, opset=opset)
        graph = load_onnx(path, calibration=np.asarray(calibration, dtype=np.float32),
                          quantized_path=quantized_path)
    graph.metadata["onnx"]["exported_from"] = f"torch {torch.__version__}: {type(module).__name__}"
    return graph
