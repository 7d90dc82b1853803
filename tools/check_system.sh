#!/usr/bin/env bash
# System packages the toolkit needs: Icarus Verilog (simulator), g++ and make (Verilator builds its models), and for
# the ASIC flow the OSU 0.18 um standard-cell library (qflow-tech-osu018) and OpenSTA (opensta).
# As root they are installed with apt; otherwise the exact command to run is printed and setup stops.
set -euo pipefail
missing=()
command -v iverilog >/dev/null 2>&1 && command -v vvp >/dev/null 2>&1 || missing+=(iverilog)
command -v g++ >/dev/null 2>&1 || missing+=(g++)
command -v make >/dev/null 2>&1 || missing+=(make)
[ -f /usr/share/qflow/tech/osu018/osu018_stdcells.lib ] || missing+=(qflow-tech-osu018)
command -v sta >/dev/null 2>&1 || missing+=(opensta)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing system packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
else
    echo "error: missing system packages: ${missing[*]}" >&2
    echo "install them with:  sudo apt-get install -y ${missing[*]}" >&2
    exit 1
fi
