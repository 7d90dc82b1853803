"""MNIST cycles per image on an array size, from the RTL's own counters: the hook of the FPGA scaling study.

``python -m hw.fpga scaling --cycles-per-image sw.perf:mnist_cycles_per_image`` (what ``make scaling`` runs) calls
:func:`mnist_cycles_per_image` for every synthesized size, so each row of the study gets the measured cycles per
image and the projected images/s = Fmax / cycles.

The figure is measured, never estimated: one batch of test images goes through the compiled network on the
Verilator backend (the accelerator's RTL), and the CYCLES counters of its layers are summed. Results are cached in
``build/reports/mnist_cycles.json`` under the configuration and a hash of the hardware and compiler sources, so a
re-run of the study does not re-simulate.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from hw.isa import HardwareConfig

__all__ = ["mnist_cycles_per_image", "network_macs_per_image", "CACHE"]

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "build" / "reports" / "mnist_cycles.json"


def _sources_hash() -> str:
    digest = hashlib.sha256()
    for folder in ("hw", "sim", "sw"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            digest.update(path.relative_to(ROOT).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def mnist_cycles_per_image(rows: int, cols: int, *, images: int = 32, bus_bytes: int = 8,
                           cache: Path | str | None = CACHE) -> float:
    """RTL cycles per MNIST image (batch of ``images``) on a ``rows`` x ``cols`` accelerator.

    The buffers are the default accelerator's (``sw.driver.DEFAULT_CONFIG``); ``bus_bytes`` is the AXI data width in
    bytes (8, the width ``make synth`` builds). The batch's logits are checked against the CPU int8 path: a
    mismatch raises ``AssertionError`` (a cycle count of wrong hardware means nothing).
    """
    from .driver import DEFAULT_CONFIG, Driver
    from .mnist import load_mnist
    from .mnist_app import INT8_MODEL
    from .model_io import load_quantized

    config = HardwareConfig(rows=rows, cols=cols, act_depth=DEFAULT_CONFIG.act_depth,
                            wgt_depth=DEFAULT_CONFIG.wgt_depth, acc_depth=DEFAULT_CONFIG.acc_depth,
                            param_depth=DEFAULT_CONFIG.param_depth, bus_bytes=bus_bytes)
    key = f"{rows}x{cols}-bus{bus_bytes}-n{images}-{_sources_hash()}"
    cache = Path(cache) if cache else None
    stored = {}
    if cache is not None and cache.exists():
        try:
            stored = json.loads(cache.read_text())
        except (OSError, ValueError):
            stored = {}     # a damaged cache is only a cache: measure again
        if isinstance(stored, dict) and isinstance(stored.get(key), (int, float)):
            return float(stored[key])
    qnet = load_quantized(INT8_MODEL)
    batch, _ = load_mnist("test")
    batch = batch[:images]
    result = Driver(qnet, backend="verilator", config=config, batch_size=images).run(batch)
    reference = Driver(qnet, backend="cpu", config=config).run(batch)
    if not (result.logits == reference.logits).all():
        raise AssertionError(f"MNIST logits on the {rows}x{cols} RTL differ from the CPU int8 path")
    value = result.cycles / len(batch)
    if cache is not None:
        stored = stored if isinstance(stored, dict) else {}
        stored[key] = value
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(stored, indent=2, sort_keys=True) + "\n")
    return value


def network_macs_per_image(network) -> int:
    """MACs of one image through the Conv2D and Dense layers of ``network`` (what the accelerator computes)."""
    from .network import Conv2D, Dense

    shapes = network.shapes()
    total = 0
    for layer, shape_in, shape_out in zip(network.layers, shapes, shapes[1:]):
        if isinstance(layer, Conv2D):
            kh, kw = layer.kernel
            oh, ow, filters = shape_out
            total += oh * ow * filters * kh * kw * shape_in[2]
        elif isinstance(layer, Dense):
            total += int(shape_in[0]) * int(shape_out[0])
    return total


def _reference_macs() -> int:
    from .network import mnist_cnn
    return network_macs_per_image(mnist_cnn())


#: Read by the scaling study for its MACs-per-DSP-per-cycle column.
mnist_cycles_per_image.macs_per_image = _reference_macs()
