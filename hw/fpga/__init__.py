"""The open FPGA flow (YoWASP Yosys + nextpnr): synthesis, place-and-route, reports, lint and a scaling study.

See docs/fpga.md; the command line is ``python -m hw.fpga {synth,lint,scaling,targets}``.
"""
