"""What every model frontend shares: the import error, the extra to install, and TFLite-style helpers."""

from __future__ import annotations

import numpy as np

from sim.arith import round_half_away

__all__ = ["ModelImportError", "MODEL_EXTRA_HINT", "require", "activation_range"]

#: How to install the model frontends' dependencies.
MODEL_EXTRA_HINT = "pip install -e '.[model]' (or `make setup`)"


class ModelImportError(ValueError):
    """A model file that cannot be imported: unreadable, corrupt, of the wrong kind, float where int8 is needed, or
    using an operator or quantization the toolkit does not support. The message names the file, the operator
    (index, output tensor, op) where there is one, the cause and the fix."""


def require(module: str, feature: str):
    """Import an optional dependency or raise ImportError saying which extra provides it."""
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"{feature} needs the Python package {module!r}: {MODEL_EXTRA_HINT}") from exc


def activation_range(kind: str, scale: float, zero_point: int) -> tuple[int, int]:
    """int8 clamp of a fused activation, as TFLite's CalculateActivationRangeQuantized computes it.

    ``kind`` is ``"none"``, ``"relu"``, ``"relu6"`` or ``"relu_n1_to_1"``. Each bound is ``zero_point +
    round(f / scale)`` with the division in float32 (the C++ divides floats) and rounding half away from zero,
    intersected with [-128, 127].
    """
    def q(f):
        return zero_point + int(round_half_away(np.float32(f) / np.float32(scale)))
    lo, hi = -128, 127
    if kind == "relu":
        lo = max(lo, q(0.0))
    elif kind == "relu6":
        lo, hi = max(lo, q(0.0)), min(hi, q(6.0))
    elif kind == "relu_n1_to_1":
        lo, hi = max(lo, q(-1.0)), min(hi, q(1.0))
    elif kind != "none":
        raise ValueError(f"unknown fused activation {kind!r}")
    return lo, hi
