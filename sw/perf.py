"""MNIST cycles per image on an array size, from the RTL's own counters: the hook of the FPGA scaling study.

``python -m hw.fpga scaling --cycles-per-image sw.perf:mnist_cycles_per_image`` (what ``make scaling`` runs) calls
:func:`mnist_cycles_per_image` for every synthesized size, so each row of the study gets the measured cycles per
image and the projected images/s = Fmax / cycles.

The figure is measured, never estimated: one batch of test images goes through the compiled network on the
Verilator backend (the accelerator's RTL), and the CYCLES counters of its layers are summed. The Verilator build is
cached by the backend, so a re-run of the study only re-simulates one batch per size (seconds).
"""

from __future__ import annotations

from hw.isa import HardwareConfig

__all__ = ["mnist_cycles_per_image", "network_macs_per_image", "MEASURED_FMAX_MHZ", "measured_fmax_mhz"]

#: Fmax measured by the open FPGA flow (`make synth`, Yosys + nextpnr, LFE5U-85F speed grade 6, seed 1, router1,
#: pin ring included, 64-bit AXI bus) at commit f2b4147: README.md "On an FPGA" and docs/fpga.md. The one place
#: the software takes these figures from (latency = cycles / Fmax); re-measure with `make synth ROWS= COLS=`.
MEASURED_FMAX_MHZ = {("ecp5-85k", 4, 4): 82.6, ("ecp5-85k", 8, 8): 74.9, ("ecp5-85k", 16, 16): 54.7}


def measured_fmax_mhz(rows: int, cols: int, target: str = "ecp5-85k") -> float | None:
    """The measured Fmax (MHz) of a ``rows`` x ``cols`` accelerator on ``target``, or None if never measured."""
    return MEASURED_FMAX_MHZ.get((target, rows, cols))


def mnist_cycles_per_image(rows: int, cols: int, *, images: int = 32, bus_bytes: int = 8) -> float:
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
    qnet = load_quantized(INT8_MODEL)
    batch, _ = load_mnist("test")
    batch = batch[:images]
    result = Driver(qnet, backend="verilator", config=config, batch_size=images).run(batch)
    reference = Driver(qnet, backend="cpu", config=config).run(batch)
    if not (result.logits == reference.logits).all():
        raise AssertionError(f"MNIST logits on the {rows}x{cols} RTL differ from the CPU int8 path")
    return result.cycles / len(batch)


def network_macs_per_image(network) -> int:
    """MACs of one image through the Conv2D and Dense layers of ``network`` (what the accelerator computes)."""
    from .compiler import layer_gemm_shape

    shapes = network.shapes()
    total = 0
    for layer, shape_in, shape_out in zip(network.layers, shapes, shapes[1:]):
        shape = layer_gemm_shape(layer, tuple(shape_in), tuple(shape_out))
        if shape is not None:
            m, k, n = shape
            total += m * k * n
    return total


def _reference_macs() -> int:
    from .network import mnist_cnn
    return network_macs_per_image(mnist_cnn())


#: Read by the scaling study for its MACs-per-DSP-per-cycle column.
mnist_cycles_per_image.macs_per_image = _reference_macs()
