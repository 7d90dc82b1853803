"""The standard-cell library the ASIC flow maps to, read with the ``liberty-parser`` package.

:data:`LIBRARIES` names the libraries the flow knows (the OSU 0.18 um cells from Debian's ``qflow-tech-osu018``);
:func:`read_library` returns each cell's area, whether it is a flop (it has an ``ff`` group) or a latch, and the pin
capacitances the STA constraints use. :func:`macro_liberty` writes the Liberty cells that stand for the memories the
flow keeps as macros (see :mod:`hw.asic.memories`).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from ..eda import ToolMissing

__all__ = ["Library", "LIBRARIES", "DEFAULT_LIBRARY", "get_library", "read_library", "LibraryCells",
           "opensta", "macro_liberty", "OPENSTA_PACKAGE"]

OPENSTA_PACKAGE = "opensta"


@dataclass(frozen=True)
class Library:
    """A standard-cell library: where its Liberty file is, which Debian package ships it, and which of its cells
    the flow names in constraints (the input driver and the flop whose D pin loads each output)."""

    name: str
    liberty: str
    package: str
    description: str
    driver_cell: str
    driver_pin: str
    load_cell: str
    load_pin: str
    #: The buffer the fanout repair builds its trees from: cell, input pin, output pin.
    buffer_cell: str
    buffer_in: str
    buffer_out: str
    #: The area per bit (um^2) of a real SRAM macro of the same process generation, periphery included, and
    #: where the figure comes from: the memories' area estimate when the library has no SRAM compiler.
    sram_macro_um2_per_bit: float
    sram_macro_source: str

    def path(self) -> Path:
        """The Liberty file; :class:`~hw.eda.ToolMissing` naming the package and its install command if absent."""
        path = Path(self.liberty)
        if not path.is_file():
            raise ToolMissing(
                f"The {self.name} standard-cell library ({self.liberty}) is not installed: it comes with Debian's "
                f"{self.package} package. Install it with `sudo apt-get install -y {self.package} {OPENSTA_PACKAGE}` "
                f"(`make setup` does this when run as root).")
        return path


LIBRARIES = {
    "osu018": Library(
        name="osu018", liberty="/usr/share/qflow/tech/osu018/osu018_stdcells.lib", package="qflow-tech-osu018",
        description="OSU 0.18 um standard cells (TSMC 0.18 um, MOSIS SCMOS deep-submicron rules), typical corner "
                    "1.8 V 25 C",
        driver_cell="BUFX2", driver_pin="Y", load_cell="DFFPOSX1", load_pin="D",
        buffer_cell="BUFX4", buffer_in="A", buffer_out="Y",
        # 209,400.2768 um^2 for 512 x 8 bits: the `area` of gf180mcu_fd_ip_sram__sram512x8m8wm1 in its Liberty
        # files (google/globalfoundries-pdk-ip-gf180mcu_fd_ip_sram, Apache-2.0), the open 180 nm PDK's SRAM.
        sram_macro_um2_per_bit=round(209400.2768 / (512 * 8), 3),
        sram_macro_source="GF180MCU gf180mcu_fd_ip_sram__sram512x8m8wm1, a 512 x 8 single-port SRAM macro of the "
                          "open GlobalFoundries 180 nm PDK: 209,400 um^2 for 4,096 bits (its Liberty area)"),
}
DEFAULT_LIBRARY = "osu018"


def get_library(name: str) -> Library:
    try:
        return LIBRARIES[name]
    except KeyError:
        raise ValueError(f"Standard-cell library must be one of {', '.join(LIBRARIES)}, not {name!r}") from None


@dataclass(frozen=True)
class LibraryCells:
    """What the flow needs from a Liberty file: ``area[cell]`` (um^2), ``flops`` (cells with an ``ff`` group),
    ``latches``, ``pin_capacitance[(cell, pin)]`` (pF) and the library's time and capacitance units."""

    name: str
    area: dict[str, float]
    flops: frozenset[str]
    latches: frozenset[str]
    pin_capacitance: dict[tuple[str, str], float] = field(default_factory=dict)
    output_pins: dict[str, frozenset[str]] = field(default_factory=dict)
    clock_pins: frozenset[tuple[str, str]] = frozenset()
    time_unit: str = "1ns"
    capacitive_load_unit: str = "1pf"


def _number(value) -> float:
    return float(str(value).strip('"'))


@lru_cache(maxsize=None)
def read_library(path: str) -> LibraryCells:
    """Parse a Liberty file (``liberty-parser``; ``pip install -e .[asic]``)."""
    try:
        from liberty.parser import parse_liberty
    except ImportError:
        raise ToolMissing("The ASIC flow reads Liberty files with the liberty-parser package: "
                          "run `make setup` or `pip install -e .[asic]`.") from None
    lib = parse_liberty(Path(path).read_text())
    area, flops, latches, caps, outputs, clocks = {}, set(), set(), {}, {}, set()
    for cell in lib.get_groups("cell"):
        name = str(cell.args[0]).strip('"')
        area[name] = _number(cell["area"])
        if cell.get_groups("ff"):
            flops.add(name)
        if cell.get_groups("latch"):
            latches.add(name)
        outs = set()
        for pin in cell.get_groups("pin"):
            pin_name = str(pin.args[0]).strip('"')
            if pin["capacitance"] is not None:
                caps[(name, pin_name)] = _number(pin["capacitance"])
            if str(pin["direction"]).strip('"') == "output":
                outs.add(pin_name)
            if str(pin["clock"]).strip('"') == "true":
                clocks.add((name, pin_name))
        outputs[name] = frozenset(outs)
    time_unit = str(lib["time_unit"]).strip('"')
    cap_unit = "".join(str(part) for part in (lib.get_attributes("capacitive_load_unit") or [[1, "pf"]])[0])
    if time_unit != "1ns" or cap_unit != "1pf":
        raise ValueError(f"{path}: the ASIC flow expects time in 1ns and capacitance in 1pf, not {time_unit} and "
                         f"{cap_unit}")
    return LibraryCells(name=str(lib.args[0]), area=area, flops=frozenset(flops), latches=frozenset(latches),
                        pin_capacitance=caps, output_pins=outputs, clock_pins=frozenset(clocks),
                        time_unit=time_unit, capacitive_load_unit=cap_unit)


def opensta() -> str:
    """Path of OpenSTA's ``sta``; :class:`~hw.eda.ToolMissing` naming the Debian package if it is not installed."""
    found = shutil.which("sta")
    if found is None:
        raise ToolMissing(f"OpenSTA (`sta`) is not installed: it comes with Debian's {OPENSTA_PACKAGE} package. "
                          f"Install it with `sudo apt-get install -y {OPENSTA_PACKAGE}` (`make setup` does this when "
                          f"run as root).")
    return found


def macro_liberty(macros: list[dict], *, access_ns: float, setup_ns: float, hold_ns: float,
                  pin_capacitance_pf: float) -> str:
    """A Liberty library with one cell per memory macro type (``macros``: ``{"type", "pins": {name: direction},
    "clock": pin, "area_um2"}``): inputs are checked against the rising clock with ``setup_ns``/``hold_ns``, outputs
    change ``access_ns`` after it. Scalar (load-independent) figures, as a memory compiler's would be at one load:
    the assumed interface of an SRAM that no compiler made (docs/asic.md)."""
    def scalar(name, value):
        return f'{name} (scalar) {{ values ("{value:.4f}"); }}'

    out = ["library (s8_memory_macros) {", '  delay_model : table_lookup;', '  time_unit : "1ns";',
           '  voltage_unit : "1V";', '  current_unit : "1uA";', '  capacitive_load_unit (1,pf);',
           '  nom_process : 1;', '  nom_voltage : 1.8;', '  nom_temperature : 25;',
           '  input_threshold_pct_rise : 50;', '  input_threshold_pct_fall : 50;',
           '  output_threshold_pct_rise : 50;', '  output_threshold_pct_fall : 50;',
           '  slew_lower_threshold_pct_rise : 20;', '  slew_upper_threshold_pct_rise : 80;',
           '  slew_lower_threshold_pct_fall : 20;', '  slew_upper_threshold_pct_fall : 80;']
    for macro in macros:
        out += [f"  cell ({macro['type']}) {{", f"    area : {macro['area_um2']:.2f};",
                "    dont_touch : true;", "    dont_use : true;"]
        clock = macro["clock"]
        out += [f"    pin ({clock}) {{", "      direction : input;", "      clock : true;",
                f"      capacitance : {pin_capacitance_pf:.5f};", "    }"]
        for pin, direction in macro["pins"].items():
            if pin == clock:
                continue
            out += [f"    pin ({pin}) {{", f"      direction : {direction};"]
            related = f'        related_pin : "{clock}";'
            if direction == "input":
                out.append(f"      capacitance : {pin_capacitance_pf:.5f};")
                for kind, value in (("setup_rising", setup_ns), ("hold_rising", hold_ns)):
                    out += ["      timing () {", related, f"        timing_type : {kind};",
                            f"        {scalar('rise_constraint', value)}",
                            f"        {scalar('fall_constraint', value)}", "      }"]
            else:
                out += ["      timing () {", related, "        timing_type : rising_edge;",
                        f"        {scalar('cell_rise', access_ns)}", f"        {scalar('cell_fall', access_ns)}",
                        f"        {scalar('rise_transition', 0.2)}", f"        {scalar('fall_transition', 0.2)}",
                        "      }"]
            out.append("    }")
        out.append("  }")
    out.append("}")
    return "\n".join(out) + "\n"
