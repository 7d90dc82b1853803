"""Host-side driver of a systolic8 bring-up bundle (``systolic8 generate`` copies this file into it as
``driver.py``): runs the bundle's accelerator programs over a memory-mapped AXI4-Lite window.

It needs only Python 3 and NumPy, so it runs on a board's host CPU. The register map is read from the bundle's
``accelerator_<R>x<C>.json`` (the same table as docs/isa.md, "Register map"); a run is what docs/isa.md describes:

1. the DRAM image (``image.bin``: programs, weights, PARAM entries, at the addresses of ``memory_map.json``) is
   copied to the accelerator's DRAM window once;
2. per accelerator layer the host writes the layer's input matrix A (int8, row-major, M x K) at ``a_addr``,
   writes PROG_ADDR, PROG_LEN, IRQ_ENABLE = 1 and CTRL = 1, polls STATUS until DONE (bit 1), checks the ERROR field
   (bits 15:8) and reads the int8 (or int32) output C at ``c_addr``;
3. the performance counters (CYCLES, LOAD_BUSY, ...) are read after DONE.

The bus is pluggable: anything with ``read32(offset)``, ``write32(offset, value)``, ``write_dram(addr, bytes)`` and
``read_dram(addr, n)``. :class:`MmapBus` maps a physical window (``/dev/mem``, or a UIO device ``/dev/uioN``
whose map 0 is the AXI4-Lite window and map 1 the DRAM the accelerator sees); the bundle's ``check.py`` plugs in a
simulated bus that runs the same register sequence on the Verilator model of the RTL or on the golden simulator.

Example on a board (addresses are the SoC's)::

    from driver import Bundle, MmapBus
    bus = MmapBus(csr_base=0x4000_0000, dram_base=0x8000_0000, dram_size=64 << 20)
    bundle = Bundle(".")
    bundle.load(bus)
    c, counters = bundle.run_layer(bus, "conv1", a)     # a: int8 (M, K) from the host's im2col
"""

from __future__ import annotations

import json
import mmap
import os
import time
from pathlib import Path

import numpy as np

STATUS_BUSY, STATUS_DONE = 1 << 0, 1 << 1
COUNTERS = ("CYCLES", "LOAD_BUSY", "COMPUTE_BUSY", "STORE_BUSY", "VECTORS", "INSTRUCTIONS")


class AcceleratorError(RuntimeError):
    """The accelerator stopped with an error code, or did not finish in time."""


class MmapBus:
    """The AXI4-Lite window and the DRAM window mapped from ``device`` (``/dev/mem`` with physical bases, or a
    UIO device ``/dev/uioN`` whose maps 0 and 1 are the register window and the DRAM)."""

    def __init__(self, *, csr_base=0, dram_base=0, dram_size, device="/dev/mem", csr_size=0x1000):
        flags = os.O_RDWR | getattr(os, "O_SYNC", 0)
        self._fd = os.open(device, flags)
        page = mmap.PAGESIZE
        uio = os.path.basename(device).startswith("uio")
        # A UIO device selects map N at offset N * page size.
        csr_offset = 0 if uio else csr_base
        dram_offset = page if uio else dram_base
        self._csr = mmap.mmap(self._fd, csr_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE,
                              offset=csr_offset)
        self._dram = mmap.mmap(self._fd, dram_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE,
                               offset=dram_offset)
        self._regs = np.frombuffer(self._csr, dtype="<u4")

    def read32(self, offset: int) -> int:
        return int(self._regs[offset // 4])

    def write32(self, offset: int, value: int) -> None:
        self._regs[offset // 4] = value & 0xFFFF_FFFF

    def write_dram(self, addr: int, data: bytes) -> None:
        self._dram[addr:addr + len(data)] = data

    def read_dram(self, addr: int, n: int) -> bytes:
        return bytes(self._dram[addr:addr + n])

    def close(self) -> None:
        del self._regs
        self._csr.close()
        self._dram.close()
        os.close(self._fd)


class Accelerator:
    """The accelerator behind ``bus``, driven through the registers of ``register_map`` (name -> offset)."""

    def __init__(self, bus, register_map: dict):
        self.bus = bus
        self.reg = {name.upper(): offset for name, offset in register_map.items()}

    def read(self, name: str) -> int:
        return self.bus.read32(self.reg[name])

    def configuration(self) -> dict:
        """What the hardware reports: VERSION, ROWS, COLS, buffer depths, BUS_BYTES."""
        return {n: self.read(n) for n in ("VERSION", "ROWS", "COLS", "ACT_DEPTH", "WGT_DEPTH", "ACC_DEPTH",
                                          "PARAM_DEPTH", "BUS_BYTES")}

    def run(self, prog_addr: int, prog_len: int, *, timeout_s: float = 10.0) -> dict:
        """Start the program and poll STATUS until DONE; the counters. Raises :class:`AcceleratorError` on an
        error code or a timeout."""
        bus = self.bus
        bus.write32(self.reg["IRQ_ENABLE"], 1)
        bus.write32(self.reg["PROG_ADDR"], prog_addr)
        bus.write32(self.reg["PROG_LEN"], prog_len)
        bus.write32(self.reg["CTRL"], 1)
        deadline = time.monotonic() + timeout_s
        while True:
            status = self.read("STATUS")
            if status & STATUS_DONE:
                break
            if time.monotonic() > deadline:
                raise AcceleratorError(f"no DONE within {timeout_s} s (STATUS {status:#x})")
        error = (status >> 8) & 0xFF
        if error:
            raise AcceleratorError(f"the accelerator stopped with error code {error} at instruction "
                                   f"{self.read('ERROR_INDEX')} (docs/isa.md, error codes)")
        return {name: self.read(name) for name in COUNTERS}


class Bundle:
    """The bundle in ``directory``: its memory map, DRAM image and register map."""

    def __init__(self, directory="."):
        self.dir = Path(directory)
        self.memory_map = json.loads((self.dir / "memory_map.json").read_text())
        hw = json.loads((self.dir / self.memory_map["hardware_json"]).read_text())
        self.register_map = {r["name"]: r["offset"] for r in hw["registers"]}
        self.image = np.fromfile(self.dir / self.memory_map["image"], dtype=np.uint8)
        self.layers = {layer["name"]: layer for layer in self.memory_map["layers"]}

    def load(self, bus) -> Accelerator:
        """Copy the DRAM image to the accelerator's memory, check the hardware is the bundle's, and return it."""
        acc = Accelerator(bus, self.register_map)
        expected = {k.upper(): v for k, v in self.memory_map["hardware"].items()}
        found = acc.configuration()
        wrong = {k: (found[k], v) for k, v in expected.items() if k in found and found[k] != v}
        if wrong:
            raise AcceleratorError(f"the hardware is not the bundle's: {wrong} (found, expected)")
        bus.write_dram(self.memory_map["image_base"], self.image.tobytes())
        return acc

    def run_layer(self, acc: Accelerator, name: str, a: np.ndarray):
        """Run accelerator layer ``name`` on its input matrix ``a`` (int8, M x K): ``(C, counters)``."""
        layer = self.layers[name]
        a = np.ascontiguousarray(a, dtype=np.int8)
        if a.shape != tuple(layer["a_shape"]):
            raise ValueError(f"layer {name}: A must be {tuple(layer['a_shape'])}, not {a.shape}")
        acc.bus.write_dram(layer["a_addr"], a.tobytes())
        counters = acc.run(layer["prog_addr"], layer["prog_len"])
        dtype = np.dtype("<i4") if layer["c_dtype"] == "int32" else np.dtype(np.int8)
        n = int(np.prod(layer["c_shape"])) * dtype.itemsize
        c = np.frombuffer(acc.bus.read_dram(layer["c_addr"], n), dtype=dtype).reshape(layer["c_shape"])
        return c, counters
