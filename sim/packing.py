"""Packing of integer lanes into bus words and back: the one definition shared by testbenches and drivers.

Lane ``i`` occupies bits ``[i*width, (i+1)*width)`` (little-endian lanes), which is how Amaranth lays out a
``data.ArrayLayout(shape, n)`` and how the accelerator's memories and buses order elements.
"""

from __future__ import annotations

import numpy as np

__all__ = ["pack_lanes", "unpack_lanes"]


def pack_lanes(values, width: int) -> int:
    """Two's-complement lanes of ``width`` bits, lane 0 in the least significant bits, as one integer."""
    mask = (1 << width) - 1
    word = 0
    for i, v in enumerate(np.asarray(values).ravel().tolist()):
        word |= (int(v) & mask) << (i * width)
    return word


def unpack_lanes(word: int, count: int, width: int, *, signed: bool = True) -> list[int]:
    """Inverse of :func:`pack_lanes`."""
    mask = (1 << width) - 1
    out = []
    for i in range(count):
        v = (int(word) >> (i * width)) & mask
        out.append(v - (1 << width) if signed and v >> (width - 1) else v)
    return out
