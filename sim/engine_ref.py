"""Host-side schedule for the GEMM engine and its golden model (pure NumPy).

:func:`plan_gemm` tiles ``C = requant(A @ W + bias)`` into the engine's MATMUL and STORE commands the way a driver
would: N in tiles of ``cols`` columns, K in tiles of ``rows`` (accumulating), M in chunks that fit half of the
accumulator memory (two halves alternate, so one chunk is stored while the next is computed). :func:`ref_engine`
executes the same commands with the golden arithmetic; :func:`assemble` puts the STORE outputs back into a matrix.
Testbenches drive the RTL with the very same command list and compare every output row with :func:`ref_engine`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .arith import quantized_gemm, requantize, wrap_int32

__all__ = ["MatmulOp", "StoreOp", "plan_gemm", "ref_engine", "assemble", "pack_params"]


@dataclass(eq=False)
class MatmulOp:
    acc_addr: int
    count: int
    accumulate: bool
    weights: np.ndarray   # (rows, cols) int8, zero-padded
    act: np.ndarray       # (count, rows) int8, zero-padded
    region: int           # accumulator half this op writes (for the testbench's dependency tracking)


@dataclass(eq=False)
class StoreOp:
    acc_addr: int
    count: int
    params: dict          # epilogue parameters, per-column arrays padded to cols
    dest: tuple           # (m0, n0, m_count, n_count) of the output matrix this store fills
    region: int


def pack_params(cols, bias, multiplier, shift, zero_point, act_min, act_max, raw):
    """Epilogue parameters as the dict that ``epilogue_params_layout(cols).const(...)`` takes."""
    def lane(values, fill=0):
        out = np.full(cols, fill, dtype=np.int64)
        values = np.atleast_1d(np.asarray(values, dtype=np.int64))
        out[:values.size] = values
        return [int(v) for v in out]
    return {"bias": lane(bias), "multiplier": lane(multiplier), "shift": lane(shift),
            "zero_point": int(zero_point), "act_min": int(act_min), "act_max": int(act_max), "raw": int(bool(raw))}


def plan_gemm(a, w, bias, multiplier, shift, zero_point=0, act_min=-128, act_max=127, raw=False, *,
              rows, cols, acc_depth, m_chunk=None):
    """Commands computing ``quantized_gemm(a, w, ...)`` on a ``rows x cols`` engine with ``acc_depth`` rows."""
    a = np.asarray(a, dtype=np.int8)
    w = np.asarray(w, dtype=np.int8)
    m_total, k_total = a.shape
    n_total = w.shape[1]
    bias = np.broadcast_to(np.asarray(bias, dtype=np.int64), (n_total,))
    multiplier = np.broadcast_to(np.asarray(multiplier, dtype=np.int64), (n_total,))
    shift = np.broadcast_to(np.asarray(shift, dtype=np.int64), (n_total,))
    half = acc_depth // 2
    m_chunk = min(m_chunk or half, half)
    ops = []
    chunk = 0
    for n0 in range(0, n_total, cols):
        n1 = min(n0 + cols, n_total)
        for m0 in range(0, m_total, m_chunk):
            m1 = min(m0 + m_chunk, m_total)
            region = chunk % 2
            base = region * half
            for k0 in range(0, k_total, rows):
                k1 = min(k0 + rows, k_total)
                wt = np.zeros((rows, cols), dtype=np.int8)
                wt[:k1 - k0, :n1 - n0] = w[k0:k1, n0:n1]
                at = np.zeros((m1 - m0, rows), dtype=np.int8)
                at[:, :k1 - k0] = a[m0:m1, k0:k1]
                ops.append(MatmulOp(base, m1 - m0, k0 > 0, wt, at, region))
            params = pack_params(cols, bias[n0:n1], multiplier[n0:n1], shift[n0:n1], zero_point, act_min, act_max,
                                 raw)
            ops.append(StoreOp(base, m1 - m0, params, (m0, n0, m1 - m0, n1 - n0), region))
            chunk += 1
    return ops


def ref_engine(ops, *, rows, cols, acc_depth):
    """Golden model of the engine: returns the output rows of each StoreOp, in order ((count, cols) int32 each)."""
    acc = np.zeros((acc_depth, cols), dtype=np.int32)
    outputs = []
    for op in ops:
        if isinstance(op, MatmulOp):
            addrs = (op.acc_addr + np.arange(op.count)) % acc_depth
            sums = wrap_int32(op.act.astype(np.int64) @ op.weights.astype(np.int64))
            if op.accumulate:
                sums = wrap_int32(acc[addrs].astype(np.int64) + sums)
            acc[addrs] = sums
        else:
            addrs = (op.acc_addr + np.arange(op.count)) % acc_depth
            p = op.params
            s = wrap_int32(acc[addrs].astype(np.int64) + np.asarray(p["bias"], dtype=np.int64))
            if p["raw"]:
                outputs.append(s)
            else:
                outputs.append(requantize(s, p["multiplier"], p["shift"], p["zero_point"], p["act_min"],
                                          p["act_max"]).astype(np.int32))
    return outputs


def assemble(ops, outputs, shape, dtype=np.int32):
    """Scatter the STORE outputs back into the (M, N) result matrix."""
    result = np.zeros(shape, dtype=dtype)
    stores = [op for op in ops if isinstance(op, StoreOp)]
    for op, rows_out in zip(stores, outputs):
        m0, n0, mc, nc = op.dest
        result[m0:m0 + mc, n0:n0 + nc] = np.asarray(rows_out)[:mc, :nc]
    return result


def check_plan(a, w, bias, multiplier, shift, zero_point, act_min, act_max, raw, *, rows, cols, acc_depth):
    """Self-check of the schedule: the golden engine on the plan equals the direct fused GEMM."""
    ops = plan_gemm(a, w, bias, multiplier, shift, zero_point, act_min, act_max, raw,
                    rows=rows, cols=cols, acc_depth=acc_depth)
    got = assemble(ops, ref_engine(ops, rows=rows, cols=cols, acc_depth=acc_depth), (a.shape[0], w.shape[1]))
    want = quantized_gemm(a, w, bias, multiplier, shift, zero_point, act_min, act_max, raw=raw).astype(np.int32)
    return ops, got, want
