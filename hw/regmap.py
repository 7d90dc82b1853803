"""The accelerator's AXI4-Lite register map: defined once, for the hardware, the drivers and docs/isa.md.

Pure Python (no Amaranth) so the host-side driver and the testbenches import it without the HDL.
"""

from dataclasses import dataclass

__all__ = ["Register", "REGISTERS", "OFFSETS", "COUNTERS", "CONFIG_REGISTERS", "VERSION", "STATUS_BUSY", "STATUS_DONE", "status_error"]

#: VERSION register: major << 16 | minor.
VERSION = 0x0001_0000

STATUS_BUSY = 1 << 0
STATUS_DONE = 1 << 1


def status_error(status: int) -> int:
    """The error code field (bits 15:8) of STATUS."""
    return (status >> 8) & 0xFF


@dataclass(frozen=True)
class Register:
    name: str
    offset: int
    access: str      # "rw" or "ro" (CTRL is rw: writing bit 0 starts)
    description: str


REGISTERS = (
    Register("ctrl", 0x00, "rw", "bit 0 START: clear the counters and status, fetch from PROG_ADDR (ignored while busy)"),
    Register("status", 0x04, "ro", "bit 0 BUSY, bit 1 DONE (sticky until the next START), bits 15:8 ERROR code"),
    Register("error_index", 0x08, "ro", "index of the faulting instruction"),
    Register("irq_enable", 0x0C, "rw", "bit 0: drive irq high while DONE"),
    Register("prog_addr", 0x10, "rw", "byte address of instruction 0 (low 4 bits ignored)"),
    Register("prog_len", 0x14, "rw", "maximum number of instructions (PROGRAM_OVERRUN past it)"),
    Register("cycles", 0x18, "ro", "cycles from START to DONE"),
    Register("load_busy", 0x1C, "ro", "cycles the LOAD unit was executing an instruction"),
    Register("compute_busy", 0x20, "ro", "cycles the COMPUTE unit was executing an instruction"),
    Register("store_busy", 0x24, "ro", "cycles the STORE unit was executing an instruction"),
    Register("vectors", 0x28, "ro", "activation vectors streamed into the array"),
    Register("instructions", 0x2C, "ro", "instructions dispatched"),
    Register("version", 0x40, "ro", "0x00010000 (major.minor)"),
    Register("rows", 0x44, "ro", "array rows"),
    Register("cols", 0x48, "ro", "array columns"),
    Register("act_depth", 0x4C, "ro", "ACT buffer entries"),
    Register("wgt_depth", 0x50, "ro", "WGT buffer entries"),
    Register("acc_depth", 0x54, "ro", "accumulator rows"),
    Register("param_depth", 0x58, "ro", "PARAM buffer entries"),
    Register("bus_bytes", 0x5C, "ro", "AXI4 data width in bytes"),
)

OFFSETS = {r.name: r.offset for r in REGISTERS}

#: The performance counters (cleared by START), in register order.
COUNTERS = ("cycles", "load_busy", "compute_busy", "store_busy", "vectors", "instructions")
#: The read-only registers that describe the hardware to a driver.
CONFIG_REGISTERS = ("version", "rows", "cols", "act_depth", "wgt_depth", "acc_depth", "param_depth", "bus_bytes")
