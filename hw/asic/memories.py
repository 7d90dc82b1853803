"""How the ASIC flow treats the design's memories: large ones become SRAM macros, small ones flops.

No SRAM compiler is available for the OSU 0.18 um library, so a memory cannot become real SRAM. After Yosys's
coarse synthesis every Amaranth ``Memory`` (and every FIFO's storage) is one ``$mem_v2`` cell; :func:`extract_macros`
reads them from Yosys's JSON netlist and decides, memory by memory:

* a memory of at least ``macro_min_bits`` bits whose read ports are all synchronous (a registered read, as an SRAM
  has) becomes a *macro*: a black-box cell ``S8RAM_<depth>x<width>_<r>r<w>w`` with one clock pin and bit-level
  enable, address and data pins, which the rest of the flow keeps as it is (it takes no standard-cell area; the
  report lists it under ``memories`` with its bits and area estimates) and which OpenSTA times through a Liberty
  model of assumed interface figures (:func:`hw.asic.liberty.macro_liberty`);
* every other memory (the instruction and command FIFOs: a few hundred to about a thousand bits, most of them read
  asynchronously, which an SRAM cannot do) stays a ``$mem_v2`` cell that Yosys's ``memory_map`` turns into flops and
  multiplexers; its cells are counted in the standard-cell area of the block that owns it.

The rewritten netlist (the macros' ``$mem_v2`` cells replaced by macro instances, and one black-box module per
macro type) is written back as JSON for Yosys to finish mapping.
"""

from __future__ import annotations

__all__ = ["DEFAULT_MACRO_MIN_BITS", "extract_macros", "memory_cells"]

#: Memories with at least this many bits (and only synchronous read ports) become SRAM macros.
DEFAULT_MACRO_MIN_BITS = 4096


def _param(value) -> int:
    """A Yosys JSON parameter (a binary string, or an integer) as an unsigned integer; ``x`` bits read as 0."""
    if isinstance(value, int):
        return value
    return int(str(value).replace("x", "0").replace("z", "0") or "0", 2)


def _bits(value) -> str:
    return str(value) if isinstance(value, str) else format(value, "b")


def _instance_path(module: str, top: str) -> str:
    """``top.engine.array`` -> ``engine.array`` (Amaranth names each module after its place in the hierarchy)."""
    module = module.lstrip("\\")
    return module[len(top) + 1:] if module.startswith(top + ".") else ("" if module == top else module)


def memory_cells(netlist: dict, top: str = "top"):
    """Every ``$mem_v2`` cell: ``(module, cell_name, cell, info)`` with ``info`` the memory's shape."""
    for module_name, module in netlist["modules"].items():
        for cell_name, cell in module.get("cells", {}).items():
            if cell["type"] != "$mem_v2":
                continue
            p = cell["parameters"]
            rd_ports, wr_ports = _param(p["RD_PORTS"]), _param(p["WR_PORTS"])
            size, width, abits = _param(p["SIZE"]), _param(p["WIDTH"]), _param(p["ABITS"])
            rd_clk = _bits(p["RD_CLK_ENABLE"]).zfill(max(rd_ports, 1))
            name = cell_name.lstrip("\\").split("$")[-1] if cell_name.startswith("$") else cell_name.lstrip("\\")
            path = _instance_path(module_name, top)
            yield module_name, cell_name, cell, {
                "name": f"{path}.{name}" if path else name, "module": module_name.lstrip("\\"),
                "depth": size, "width": width, "abits": abits, "bits": size * width,
                "read_ports": rd_ports, "write_ports": wr_ports,
                "sync_read": rd_ports > 0 and set(rd_clk[-rd_ports:]) == {"1"},
            }


def _conn(bits, index):
    return [bits[index]]


def extract_macros(netlist: dict, *, top: str = "top", macro_min_bits: int = DEFAULT_MACRO_MIN_BITS):
    """Replace the memories that become macros in ``netlist`` (Yosys JSON, modified in place).

    Returns ``(memories, macro_types)``: one entry per memory (``name``, ``depth``, ``width``, ``bits``, ports,
    ``implementation``: ``"macro"`` or ``"flops"``, and for a macro its ``cell`` type and ``instance`` name), and
    one entry per macro type (``type``, ``clock``, ``pins``: name -> direction) for the Liberty model.
    """
    memories, types = [], {}
    next_bit = [max((b for m in netlist["modules"].values() for n in m.get("netnames", {}).values()
                     for b in n["bits"] if isinstance(b, int)), default=1) + 1]
    for module_name, cell_name, cell, info in list(memory_cells(netlist, top)):
        p, conns = cell["parameters"], cell["connections"]
        macro = info["bits"] >= macro_min_bits and info["sync_read"] and info["write_ports"] <= 1
        wide = _param(p.get("RD_WIDE_CONTINUATION", 0)) or _param(p.get("WR_WIDE_CONTINUATION", 0))
        resets = [b for key in ("RD_ARST", "RD_SRST") for b in conns.get(key, []) if b != "0"]
        clocks = {b for key in ("RD_CLK", "WR_CLK") for b in conns.get(key, [])}
        if macro and (wide or resets or len(clocks) != 1 or not set(_bits(p["WR_CLK_ENABLE"])) <= {"1"}
                      or "0" in _bits(p["RD_CLK_POLARITY"]) + _bits(p["WR_CLK_POLARITY"])):
            macro = False  # not the shape of a one-clock SRAM: leave it to memory_map
        entry = dict(info, implementation="macro" if macro else "flops")
        if not macro:
            memories.append(entry)
            continue
        width, abits = info["width"], info["abits"]
        rd, wr = info["read_ports"], info["write_ports"]
        type_name = f"S8RAM_{info['depth']}x{width}_{rd}r{wr}w"
        pins, connections = {"CLK": "input"}, {"CLK": [next(iter(clocks))]}
        for i in range(rd):
            pins[f"R{i}_EN"] = "input"
            connections[f"R{i}_EN"] = _conn(conns["RD_EN"], i)
            for b in range(abits):
                pins[f"R{i}_A{b}"] = "input"
                connections[f"R{i}_A{b}"] = _conn(conns["RD_ADDR"], i * abits + b)
            for b in range(width):
                pins[f"R{i}_Q{b}"] = "output"
                connections[f"R{i}_Q{b}"] = _conn(conns["RD_DATA"], i * width + b)
        for i in range(wr):
            for b in range(abits):
                pins[f"W{i}_A{b}"] = "input"
                connections[f"W{i}_A{b}"] = _conn(conns["WR_ADDR"], i * abits + b)
            for b in range(width):
                pins[f"W{i}_D{b}"] = "input"
                connections[f"W{i}_D{b}"] = _conn(conns["WR_DATA"], i * width + b)
                pins[f"W{i}_BE{b}"] = "input"   # a bit-write enable, as SRAM compilers offer
                connections[f"W{i}_BE{b}"] = _conn(conns["WR_EN"], i * width + b)
        types.setdefault(type_name, {"type": type_name, "clock": "CLK", "pins": pins, "depth": info["depth"],
                                     "width": width, "bits": info["bits"]})
        module = netlist["modules"][module_name]
        instance = "mem_" + info["name"].split(".")[-1].replace("$", "_")
        del module["cells"][cell_name]
        module["cells"][instance] = {
            "hide_name": 0, "type": type_name, "parameters": {}, "attributes": {},
            "port_directions": pins, "connections": connections,
        }
        where = f"{_instance_path(module_name, top)}.{instance}".lstrip(".")
        memories.append(dict(entry, cell=type_name, instance=where))
    for type_name, t in types.items():
        ports = {}
        for pin, direction in t["pins"].items():
            ports[pin] = {"direction": direction, "bits": [next_bit[0]]}
            next_bit[0] += 1
        netlist["modules"][type_name] = {"attributes": {"blackbox": "1"}, "ports": ports, "cells": {},
                                         "netnames": {}}
    return memories, list(types.values())
