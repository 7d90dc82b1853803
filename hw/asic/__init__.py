"""The standard-cell ASIC flow (YoWASP Yosys + a Liberty library + OpenSTA): area, cells, flops, memories, timing.

See docs/asic.md; the command line is ``python -m hw.asic`` (:mod:`hw.asic.cli`).
"""
