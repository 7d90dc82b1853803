"""FPGA targets for the open flow: device and package arguments, pins, and the resource inventory.

Each :class:`Target` knows how to call Yosys (``synth_ecp5`` / ``synth_ice40``) and nextpnr for one device in one
real package, which pins the :class:`~hw.fpga.pin_ring.PinRing` top level uses, and how many LUTs, flops, DSP blocks
and block RAMs the device has, so that reports can state utilization and a design that does not fit can be named
before place-and-route. The inventory numbers are the ones nextpnr itself reports as available (checked by
``tests/hw/test_fpga_flow.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Resource", "Target", "TARGETS", "DEFAULT_TARGET", "RESOURCE_KINDS", "get_target"]

#: The resource kinds every report lists, in this order.
RESOURCE_KINDS = ("luts", "ffs", "dsp", "bram")


@dataclass(frozen=True)
class Resource:
    """One kind of FPGA resource on one device.

    ``pnr_cell`` is the cell type in nextpnr's ``--report`` utilization (None when nextpnr does not count it
    separately, e.g. iCE40 flops live inside logic cells); ``yosys_cells`` are the cell types in the Yosys netlist
    that use one unit each, and ``yosys_double`` those that use two (an ECP5 ``CCU2C`` carry is two LUTs).
    """

    label: str
    available: int
    pnr_cell: str | None
    yosys_cells: tuple[str, ...] = ()
    yosys_double: tuple[str, ...] = ()

    def yosys_count(self, cells: dict[str, int]) -> int:
        """A lower bound on the units the synthesized netlist ``cells`` (type -> count) needs."""
        return (sum(cells.get(c, 0) for c in self.yosys_cells)
                + 2 * sum(cells.get(c, 0) for c in self.yosys_double))


@dataclass(frozen=True)
class Target:
    """One FPGA device in one package, as Yosys and nextpnr see it."""

    name: str
    family: str                      # "ecp5" or "ice40"
    device: str                      # the part number as the vendor spells it
    package: str
    nextpnr_args: tuple[str, ...]    # device, package and speed arguments
    synth_command: str               # Yosys synthesis command (without -top/-json)
    resources: dict[str, Resource]   # keyed by RESOURCE_KINDS
    pins: dict[str, str]             # PIN_RING_PINS -> package site
    default_mhz: float               # clock constraint when none is given
    notes: str = ""
    extra: dict[str, int] = field(default_factory=dict)  # other hard blocks, for the docs

    @property
    def nextpnr_tool(self) -> str:
        return f"yowasp-nextpnr-{self.family}"

    @property
    def pack_tool(self) -> str:
        return "yowasp-ecppack" if self.family == "ecp5" else "yowasp-icepack"

    @property
    def bitstream_suffix(self) -> str:
        return ".bit" if self.family == "ecp5" else ".bin"

    def constraints(self, *, clock="clk", mhz: float) -> tuple[str, str]:
        """The pin and clock constraint file for nextpnr: ``(suffix, text)`` (an LPF for ECP5, a PCF for iCE40)."""
        if self.family == "ecp5":
            lines = []
            for pin, site in self.pins.items():
                lines += [f'LOCATE COMP "{pin}" SITE "{site}";', f'IOBUF PORT "{pin}" IO_TYPE=LVCMOS33;']
            lines.append(f'FREQUENCY PORT "{clock}" {mhz:g} MHz;')
            return ".lpf", "\n".join(lines) + "\n"
        lines = [f"set_io {pin} {site}" for pin, site in self.pins.items()]
        lines.append(f"set_frequency {clock} {mhz:g}")
        return ".pcf", "\n".join(lines) + "\n"


def _ecp5(name, size, device, luts, ebr, mult, notes):
    return Target(
        name=name, family="ecp5", device=device, package="CABGA381",
        nextpnr_args=(f"--{size}", "--package", "CABGA381", "--speed", "6"),
        synth_command="synth_ecp5",
        resources={
            "luts": Resource("LUT4s (TRELLIS_COMB)", luts, "TRELLIS_COMB", ("LUT4",), ("CCU2C",)),
            "ffs": Resource("flip-flops (TRELLIS_FF)", luts, "TRELLIS_FF", ("TRELLIS_FF",)),
            "dsp": Resource("18x18 multipliers (MULT18X18D)", mult, "MULT18X18D", ("MULT18X18D",)),
            "bram": Resource("18 kbit block RAMs (DP16KD)", ebr, "DP16KD", ("DP16KD",)),
        },
        # G2 is a primary clock input (PCLK); the others are ordinary user I/O of the CABGA381 package.
        pins={"clk": "G2", "rst": "D6", "sdi": "B2", "update": "C2", "sdo": "C1"},
        default_mhz=150.0, notes=notes)


def _ice40(name, size, device, package, lcs, brams, dsps, pins, synth, notes, extra=None):
    resources = {
        "luts": Resource("logic cells (ICESTORM_LC)", lcs, "ICESTORM_LC", ("SB_LUT4",)),
        # Every iCE40 logic cell has one flop; nextpnr does not count them separately, Yosys does.
        "ffs": Resource("flip-flops (in logic cells)", lcs, None,
                        ("SB_DFF", "SB_DFFE", "SB_DFFSR", "SB_DFFR", "SB_DFFS", "SB_DFFESR", "SB_DFFER",
                         "SB_DFFES", "SB_DFFSS", "SB_DFFESS", "SB_DFFN", "SB_DFFNE", "SB_DFFNSR", "SB_DFFNR",
                         "SB_DFFNS", "SB_DFFNESR", "SB_DFFNER", "SB_DFFNES", "SB_DFFNSS", "SB_DFFNESS")),
        "dsp": Resource("16x16 MAC blocks (SB_MAC16)", dsps, "ICESTORM_DSP", ("SB_MAC16",)),
        "bram": Resource("4 kbit block RAMs (SB_RAM40_4K)", brams, "ICESTORM_RAM", ("SB_RAM40_4K",)),
    }
    return Target(name=name, family="ice40", device=device, package=package,
                  nextpnr_args=(f"--{size}", "--package", package), synth_command=synth, resources=resources,
                  pins=pins, default_mhz=50.0, notes=notes, extra=extra or {})


TARGETS: dict[str, Target] = {t.name: t for t in (
    _ecp5("ecp5-85k", "85k", "LFE5U-85F-6BG381C", 83640, 208, 156,
          "Lattice ECP5 85k (e.g. ULX3S-85F): the default; the accelerator's reference target."),
    _ecp5("ecp5-25k", "25k", "LFE5U-25F-6BG381C", 24288, 56, 28,
          "Lattice ECP5 25k: the smallest ECP5 most boards carry."),
    _ice40("ice40-hx8k", "hx8k", "iCE40HX8K-CT256", "ct256", 7680, 32, 0,
           # J3 is a global buffer input (the HX8K breakout board's 12 MHz clock).
           {"clk": "J3", "rst": "B5", "sdi": "B4", "update": "A2", "sdo": "A1"},
           "synth_ice40", "Lattice iCE40 HX8K: no DSP blocks, so multipliers are built from logic cells."),
    _ice40("ice40-up5k", "up5k", "iCE40UP5K-SG48", "sg48", 5280, 30, 8,
           # Pin 35 is a global buffer input (the iCEBreaker's 12 MHz clock).
           {"clk": "35", "rst": "10", "sdi": "4", "update": "2", "sdo": "47"},
           "synth_ice40 -dsp -device u", "Lattice iCE40 UltraPlus 5k: eight 16x16 DSPs; only tiny configurations fit.",
           extra={"spram_256kbit": 4}),
)}

DEFAULT_TARGET = "ecp5-85k"


def get_target(name: str) -> Target:
    """The target called ``name``; a ValueError listing the choices if there is none."""
    try:
        return TARGETS[name]
    except (KeyError, TypeError):
        raise ValueError(f"FPGA target must be one of {', '.join(TARGETS)}, not {name!r}") from None
