"""Reference models of individual hardware blocks, one pure function each, built on :mod:`sim.arith`.

Each ``ref_<block>`` has the same signature as the ``rtl_<block>`` wrapper in the block's test file, so a test
compares the two over the same inputs. The functions never import a simulator and keep no state.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from sim.arith import requantize, wrap_int32

__all__ = ["ref_epilogue", "epilogue_row_params"]


# --- Epilogue (hw/epilogue.py) -------------------------------------------------------------------------------------

_EPILOGUE_COLUMN_FIELDS = {"bias": (-(1 << 31), (1 << 31) - 1),
                           "multiplier": (-(1 << 31), (1 << 31) - 1),
                           "shift": (-31, 31)}
_EPILOGUE_SCALAR_FIELDS = {"zero_point": (-128, 127), "act_min": (-128, 127), "act_max": (-128, 127),
                           "raw": (0, 1)}


def _epilogue_field(params: Mapping, name: str, shapes: tuple, bounds: tuple) -> np.ndarray:
    value = np.asarray(params[name])
    if value.dtype == np.bool_:
        value = value.astype(np.int64)
    if not np.issubdtype(value.dtype, np.integer):
        raise TypeError(f"Epilogue parameter {name!r} must hold integers, not {value.dtype}")
    if value.shape not in shapes:
        raise ValueError(f"Epilogue parameter {name!r} has shape {value.shape}; expected one of {list(shapes)} "
                         "(one value for all rows, or one per row)")
    lo, hi = bounds
    if value.size and (value.min() < lo or value.max() > hi):
        raise ValueError(f"Epilogue parameter {name!r} must lie in [{lo}, {hi}], "
                         f"not {int(value.min())}..{int(value.max())}")
    return value.astype(np.int64)


def epilogue_row_params(params: Mapping, n: int, cols: int) -> dict[str, np.ndarray]:
    """Validate epilogue ``params`` and broadcast them to one set per row.

    Per-column fields (``bias``, ``multiplier``, ``shift``) may have shape ``(cols,)`` or ``(n, cols)``; scalar
    fields (``zero_point``, ``act_min``, ``act_max``, ``raw``) may be scalars or have shape ``(n,)``. Returns
    int64 arrays of shape ``(n, cols)`` and ``(n,)``.
    """
    if not isinstance(params, Mapping):
        raise TypeError(f"Epilogue parameters must be a mapping of field names to values, not {type(params).__name__}")
    expected = set(_EPILOGUE_COLUMN_FIELDS) | set(_EPILOGUE_SCALAR_FIELDS)
    missing, unknown = expected - set(params), set(params) - expected
    if missing or unknown:
        raise ValueError(f"Epilogue parameters need exactly the fields {sorted(expected)}; "
                         f"missing {sorted(missing)}, unknown {sorted(unknown)}")
    rows = {}
    for name, bounds in _EPILOGUE_COLUMN_FIELDS.items():
        rows[name] = np.broadcast_to(_epilogue_field(params, name, ((cols,), (n, cols)), bounds), (n, cols))
    for name, bounds in _EPILOGUE_SCALAR_FIELDS.items():
        rows[name] = np.broadcast_to(_epilogue_field(params, name, ((), (n,)), bounds), (n,))
    bad = np.flatnonzero(rows["act_min"] > rows["act_max"])
    if bad.size:
        r = int(bad[0])
        raise ValueError(f"Epilogue clamp bounds must satisfy act_min <= act_max; row {r} has "
                         f"[{int(rows['act_min'][r])}, {int(rows['act_max'][r])}]")
    return rows


def ref_epilogue(acc_rows, params) -> np.ndarray:
    """Golden model of :class:`hw.epilogue.Epilogue`: bias add, then requantization or raw pass-through.

    Parameters
    ----------
    acc_rows : array_like, shape (n, cols)
        int32 accumulators, one row per output of the array.
    params : mapping
        ``bias``, ``multiplier``, ``shift`` (per column, shape ``(cols,)`` or ``(n, cols)``) and ``zero_point``,
        ``act_min``, ``act_max``, ``raw`` (scalars or shape ``(n,)``), as in
        :func:`hw.epilogue.epilogue_params_layout`.

    Returns
    -------
    numpy.ndarray, shape (n, cols), int32
        ``wrap32(acc + bias)`` for raw rows, otherwise
        ``requantize(wrap32(acc + bias), multiplier, shift, zero_point, act_min, act_max)`` sign-extended.
    """
    acc = np.asarray(acc_rows)
    if acc.ndim != 2:
        raise ValueError(f"Accumulator rows must be a 2-D array (n, cols), not shape {acc.shape}")
    if not np.issubdtype(acc.dtype, np.integer):
        raise TypeError(f"Accumulator rows must hold integers, not {acc.dtype}")
    if acc.size and (acc.min() < -(1 << 31) or acc.max() > (1 << 31) - 1):
        raise ValueError("Accumulator rows must lie in the int32 range; wrap them with sim.arith.wrap_int32 first")
    n, cols = acc.shape
    p = epilogue_row_params(params, n, cols)
    s = wrap_int32(acc.astype(np.int64) + p["bias"])
    out = s.copy()
    for r in range(n):
        if not p["raw"][r]:
            out[r] = requantize(s[r], p["multiplier"][r], p["shift"][r], int(p["zero_point"][r]),
                                int(p["act_min"][r]), int(p["act_max"][r]))
    return out
