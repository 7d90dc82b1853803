"""Fanout repair of a mapped netlist: buffer trees on the nets that ABC left with too many loads.

ABC buffers the nets inside the logic it maps (``buffer -N``), but the inputs of its network - flop outputs and the
design's input ports - it leaves as they are, even with ``buffer -p`` and a driving cell given (measured with the
YoWASP Yosys 0.70 ABC). In the flat 2x2 accelerator the instruction FIFO's read pointer bit
``fetch.fifo.r_port__addr[2]`` then drives 765 gate inputs from one DFFPOSX1, 12.6 ns from clock to Q, and the
epilogue's ``o.ready`` 865: the STA would report those wires, not the design. A placement flow repairs them
(OpenROAD's resizer), but no such tool is packaged for Debian 12 or PyPI, and Yosys has no fanout pass; so this
module does the one thing needed, by hand: every net with more than ``max_fanout`` loads - those of flops and input
ports, and those of gates whose loads include memory-macro pins, which ABC does not see - gets a balanced tree of
the library's buffer, each buffer driving at most ``max_fanout`` loads.
The clock is left alone (an ideal clock: no clock tree is built). Yosys then reads the repaired netlist back and its
``stat -liberty`` gives the area, buffers included.

The netlist is Yosys's ``write_verilog -noattr -noexpr`` output of one flat module: every instance connection is a
``.PIN(net)`` line with a single bit or a constant.
"""

from __future__ import annotations

import re
from collections import defaultdict

__all__ = ["repair_fanout", "DEFAULT_MAX_FANOUT"]

DEFAULT_MAX_FANOUT = 16

_INSTANCE = re.compile(r"^  ([A-Za-z_][\w$]*) (\\\S+ |[A-Za-z_][\w$]*) \($")
_PIN = re.compile(r"^    \.([A-Za-z_]\w*)\((.*)\),?$")
_CONNECTION = re.compile(r"\((.*)\)(?=,?$)")
_PORT = re.compile(r"^  (input|output|inout)\s+(?:\[(\d+):(\d+)\]\s+)?(\\\S+ |[A-Za-z_][\w$]*)\s*;$")


def _ref(net: str) -> str:
    """A net as a Verilog reference: an escaped identifier ends at whitespace (``\\a.b )``)."""
    return net + " " if net.startswith("\\") and not net.endswith("]") else net


def repair_fanout(text: str, *, output_pins: dict[str, set[str]], clock_pins: set[tuple[str, str]],
                  sources: set[str], buffer: tuple[str, str, str], max_fanout: int = DEFAULT_MAX_FANOUT,
                  clock_net: str = "clk") -> tuple[str, dict]:
    """Return the repaired netlist text and a summary (``nets``: how many nets got a tree, ``buffers``, the
    largest fanout before).

    ``output_pins[cell]``: the cell's output pin names (from the Liberty file; a macro's too); ``sources``: the
    cells whose outputs ABC does not buffer (the flops, the memory macros); ``buffer``: ``(cell, input pin, output
    pin)``; ``clock_pins``: ``(cell, pin)`` pairs left alone.
    """
    lines = text.splitlines()
    if sum(1 for line in lines if line.startswith("module ")) != 1:
        raise ValueError("fanout repair expects one flat module")
    drivers = {}                    # net -> "port" or (cell type, instance)
    loads = defaultdict(list)       # net -> [(line index, pin)]
    cell = instance = None
    end = None
    for i, line in enumerate(lines):
        if (m := _PORT.match(line)) is not None:
            direction, hi, lo, name = m.groups()
            if direction == "input":
                bits = [None] if hi is None else range(min(int(hi), int(lo)), max(int(hi), int(lo)) + 1)
                for b in bits:
                    net = name.strip() if b is None else f"{name.strip()} [{b}]" if name.startswith("\\") \
                        else f"{name}[{b}]"
                    drivers[net] = "port"
            continue
        if (m := _INSTANCE.match(line)) is not None:
            cell, instance = m[1], m[2].strip()
            continue
        if cell is not None and (m := _PIN.match(line)) is not None:
            pin, net = m[1], m[2].strip()
            if not net or "'" in net:
                continue          # unconnected or a constant
            if pin in output_pins.get(cell, ()):
                drivers[net] = (cell, instance)
            elif (cell, pin) not in clock_pins:
                loads[net].append((i, pin))
            continue
        if line == "  );":
            cell = instance = None
        elif line == "endmodule":
            end = i
    if end is None:
        raise ValueError("no endmodule in the netlist")
    largest_before = max((len(v) for v in loads.values()), default=0)
    buf_cell, buf_in, buf_out = buffer
    wires, buffers = [], []          # buffers: [input net, output net]

    def connect(sink, net):
        kind, where = sink
        if kind == "line":
            lines[where] = _CONNECTION.sub(f"({_ref(net)})", lines[where], count=1)
        else:
            buffers[where][0] = net

    repaired = unbuffered = 0
    for net, net_loads in loads.items():
        if len(net_loads) <= max_fanout or net == clock_net:
            continue
        driver = drivers.get(net)
        if driver is None:
            continue              # an alias of another net (an assign), or undriven
        # ABC's own nets are buffered within its network, but it does not see the loads a net has on the memory
        # macros' pins (a macro is a black box to it): the parameter memory's bit-write enables, one gate driving
        # 1,200 macro pins at 16x16. So every driver counts; ``sources`` only says which drivers ABC never buffers.
        repaired += 1
        unbuffered += driver == "port" or driver[0] in sources
        level = [("line", i) for i, _ in net_loads]
        while len(level) > max_fanout:   # a balanced tree, built from the loads up
            upper = []
            for k in range(0, len(level), max_fanout):
                out = f"_fanout{len(wires)}_"
                wires.append(f"  wire {out};")
                buffers.append([None, out])
                for sink in level[k:k + max_fanout]:
                    connect(sink, out)
                upper.append(("buffer", len(buffers) - 1))
            level = upper
        for sink in level:
            connect(sink, net)
    body = []
    for k, (net_in, net_out) in enumerate(buffers):
        body += [f"  {buf_cell} _fanout_buf{k}_ (", f"    .{buf_in}({_ref(net_in)}),",
                 f"    .{buf_out}({net_out})", "  );"]
    return "\n".join(lines[:end] + wires + body + lines[end:]) + "\n", {
        "nets": repaired, "nets_from_flops_macros_ports": unbuffered, "buffers": len(buffers),
        "buffer_cell": buf_cell, "max_fanout": max_fanout, "largest_fanout_before": largest_before}
