"""The ``gpu`` backend: the accelerator layers' integer GEMM on PyTorch, CUDA when present.

The int8 x int8 products summed over K are integers far below 2**53, so a float64 matrix product is exact; it is
converted back to integers and wrapped to int32, then requantized by :func:`sim.arith.requantize` - the project's
single implementation of the rounding - so the logits are bit-identical to every other backend. PyTorch is an
optional dependency (``pip install -e .[torch]``).
"""

from __future__ import annotations

import numpy as np

from sim.arith import requantize, wrap_int32

__all__ = ["TorchInt8"]


class TorchInt8:
    def __init__(self, device: str | None = None):
        try:
            import torch
        except ImportError as exc:
            from .driver import BackendUnavailable
            raise BackendUnavailable("the gpu backend needs PyTorch: pip install -e '.[torch]' "
                                     "(torch==2.13.0; `make setup` installs it)") from exc
        self.torch = torch
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.note = ("" if self.device.type == "cuda" else
                     "no CUDA GPU found: the gpu backend runs the same integer path on PyTorch's CPU backend")

    def gemm_int32(self, a: np.ndarray, w: np.ndarray) -> np.ndarray:
        torch = self.torch
        ta = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64)).to(self.device)
        tw = torch.from_numpy(np.ascontiguousarray(w, dtype=np.float64)).to(self.device)
        exact = (ta @ tw).round().to(torch.int64).cpu().numpy()
        return wrap_int32(exact)

    def quantized_gemm(self, *, a, w, bias, multiplier, shift, zero_point, act_min, act_max,
                       rounding="double") -> np.ndarray:
        acc = wrap_int32(self.gemm_int32(a, w).astype(np.int64) + np.asarray(bias, dtype=np.int64))
        return requantize(acc, multiplier, shift, zero_point, act_min, act_max, rounding)
