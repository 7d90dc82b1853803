"""Model frontends: a model file to the graph IR (:class:`sw.ir.Graph`).

:func:`load_model` picks the frontend from the file's content (and suffix): ``.tflite`` (TFLite FlatBuffer,
:mod:`sw.frontends.tflite`), ``.onnx`` (:mod:`sw.frontends.onnx`), and the toolkit's own int8 ``.npz``
(:mod:`sw.model_io`, converted with :meth:`sw.ir.Graph.from_quantized_network`). The TFLite and ONNX frontends need
the ``model`` extra (``pip install -e '.[model]'``); the core imports without it.
"""

from __future__ import annotations

from pathlib import Path

from .common import MODEL_EXTRA_HINT, ModelImportError

__all__ = ["load_model", "model_kind", "ModelImportError", "MODEL_EXTRA_HINT", "KINDS"]

#: File kinds load_model understands.
KINDS = ("tflite", "onnx", "npz")


def model_kind(path) -> str:
    """``"tflite"``, ``"onnx"`` or ``"npz"`` from the file's first bytes (falling back on the suffix); a
    :class:`ModelImportError` for anything else."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as exc:
        raise ModelImportError(f"{path}: cannot read the model file ({exc.strerror or exc})") from None
    if len(head) >= 8 and head[4:8] == b"TFL3":
        return "tflite"
    if head[:2] == b"PK":
        return "npz"
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return "onnx"
    if suffix in (".tflite", ".npz"):
        return suffix[1:]      # the frontend reports what is wrong with its content
    raise ModelImportError(f"{path}: unknown model kind (suffix {suffix or 'none'!r}, first bytes {head!r}); "
                           f"supported: .tflite (TFLite), .onnx (ONNX), .npz (systolic8 int8 model)")


def load_model(path, **options):
    """Import the model at ``path`` as a :class:`sw.ir.Graph` (``options`` go to the frontend)."""
    kind = model_kind(path)
    if kind == "tflite":
        from .tflite import load_tflite
        return load_tflite(path, **options)
    if kind == "onnx":
        try:
            from .onnx import load_onnx
        except ImportError as exc:
            if "sw.frontends.onnx" in str(exc) or "No module named 'sw.frontends.onnx'" in str(exc):
                raise ModelImportError(f"{path}: the ONNX frontend is not part of this installation") from None
            raise
        return load_onnx(path, **options)
    from sw.ir import Graph
    from sw.model_io import ModelFileError, load_quantized
    if options:
        raise TypeError(f"the .npz loader takes no options, not {sorted(options)}")
    try:
        qnet = load_quantized(path)
    except ModelFileError as exc:
        raise ModelImportError(str(exc)) from None
    return Graph.from_quantized_network(qnet)
