# systolic8 - every target installs what it needs first (`make setup` is implied).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
ROWS ?= 8
COLS ?= 8
ACC_DEPTH ?= 512
# Extras installed by `make setup`: torch (CPU int8/float paths and training), fpga (YoWASP), plot, model (importers),
# cluster (Dask distributed sweeps), asic (liberty-parser).
EXTRAS ?= torch,fpga,plot,model,cluster,asic
PYTEST_WORKERS ?= 2

.PHONY: setup test test-fast sim verilog train mnist bench synth lint scaling clean help tiny tiny-check \
	explore explore-scaling resource-model mutate fuzz asic mutate-netlist
TARGET ?= ecp5-85k
SIZES ?= 2,4,8,16
PNR_TIMEOUT ?= 7200
# nextpnr router for synth/scaling (empty: nextpnr's default, router1); DSP_PES: PEs on DSP blocks (auto: 0 up to 8x8);
# PE_MULTIPLIER: the other PEs' multiplier (auto: ECP5 carry cells on ECP5, fabric on iCE40)
ROUTER ?=
DSP_PES ?= auto
PE_MULTIPLIER ?= auto
FPGA_OPTS = --dsp-pes $(DSP_PES) --pe-multiplier $(PE_MULTIPLIER) $(if $(ROUTER),--router $(ROUTER),)
BACKEND ?= verilator
N ?= 300
BATCH ?= 32
# The MNIST training set for developers and CI lives beside the repository; users get it downloaded and verified.
MNIST_DIR ?= $(if $(wildcard ../shared/data/mnist),$(abspath ../shared/data/mnist),)
export MNIST_DIR

help:
	@echo "make setup    create .venv and install everything (iverilog via apt when root)"
	@echo "make test     the whole suite: unit, golden, Amaranth-sim and cocotb on Icarus + Verilator"
	@echo "make sim      the cocotb suite on both simulators, with a per-simulator summary"
	@echo "make train    train the reference MNIST CNN (PyTorch, CPU, seeded) and quantize it into build/models/ (MODEL_DIR=, FORCE=1 to replace models/)"
	@echo "make mnist    MNIST test images through the RTL (BACKEND=verilator|icarus|golden|cpu|gpu|model, N=, ROWS=, COLS=, BUS_BYTES=, WORKERS=)"
	@echo "make bench    simulator speeds (Verilator harness, cocotb+Verilator/Icarus, Amaranth), MNIST images/s, per-layer cycles vs SCALE-Sim and the cycle model (ROWS=, COLS=, BUS_BYTES=, IMAGES=, WORKERS=, QUICK=1)"
	@echo "make synth    Yosys + nextpnr (YoWASP) report and bitstream (TARGET=ecp5-85k|ecp5-25k|ice40-hx8k|ice40-up5k)"
	@echo "make lint     verilator --lint-only on the generated Verilog with lint/verilator.vlt"
	@echo "make scaling  synthesize SIZES= array sizes: resources, Fmax, MNIST RTL cycles/image, images/s (table + PNG)"
	@echo "make tiny     MLPerf Tiny ResNet-8 + DS-CNN through the RTL on 8x8 and 16x16, bit-exact vs LiteRT: cycles, utilization, latency at Fmax (N=, BACKEND=, TINY_ARRAYS=)"
	@echo "make tiny-check  100 seeded inputs per MLPerf Tiny model on cpu, golden, gpu and verilator vs LiteRT (every element)"
	@echo "make mutate   mutation score of the RTL tests: catalogue faults in hw/, each run through the tiered suite (MUTANTS=, WORKERS=)"
	@echo "make mutate-netlist   Yosys mutate-pass mutants of the 2x2 netlist: fuzz slice, deep and reach stages (NETLIST_MUTANTS=, SEED=, REACH=, NETLIST_ONLY=)"
	@echo "make fuzz     random programs (golden vs RTL vs cycle model) and random CNNs (cpu vs RTL) (FUZZ_PROGRAMS=, FUZZ_NETWORKS=, SEED=, CONFIGS=)"
	@echo "make asic     standard cells (Yosys + OSU 0.18 um) and OpenSTA for ASIC_SIZES= (default 2,4,8,16): area by block, memories, Fmax (table + PNG)"
	@echo "make verilog  Verilog + JSON for the accelerator in build/ (ROWS=, COLS= override; default 8x8; DESIGN=engine)"

setup: $(STAMP)

$(STAMP): pyproject.toml
	@bash tools/check_system.sh
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	@touch $@

test: $(STAMP)
	$(PY) -m pytest -n $(PYTEST_WORKERS) tests

test-fast: $(STAMP)
	$(PY) -m pytest -n $(PYTEST_WORKERS) -m "not cocotb" tests

sim: $(STAMP)
	$(PY) -m sim.run_suite -n $(PYTEST_WORKERS)

DESIGN ?= accelerator
verilog: $(STAMP)
	$(PY) -m hw.generate --design $(DESIGN) --rows $(ROWS) --cols $(COLS) --acc-depth $(ACC_DEPTH) --out build

# make train writes build/models/; MODEL_DIR=models FORCE=1 replaces the shipped models.
MODEL_DIR ?= build/models
train: $(STAMP)
	$(PY) -m sw.apps.cli train --network mnist_cnn --data mnist --epochs 8 --out $(MODEL_DIR)/mnist_float.npz $(if $(FORCE),--force)
	$(PY) -m sw.apps.cli quantize $(MODEL_DIR)/mnist_float.npz --data mnist --out $(MODEL_DIR)/mnist_int8.npz $(if $(FORCE),--force)

mnist: $(STAMP)
	$(PY) -m sw.apps.cli run models/mnist_int8.npz --float-model models/mnist_float.npz --data mnist --report build/reports/mnist.json --backend $(BACKEND) --n $(N) --rows $(ROWS) --cols $(COLS) --batch $(BATCH) $(if $(WORKERS),--workers $(WORKERS)) $(if $(BUS_BYTES),--bus-bytes $(BUS_BYTES))

bench: $(STAMP)
	$(PY) -m sim.bench --rows $(ROWS) --cols $(COLS) $(if $(BUS_BYTES),--bus-bytes $(BUS_BYTES)) $(if $(IMAGES),--images $(IMAGES)) $(if $(WORKERS),--workers $(WORKERS)) $(if $(QUICK),--quick)

synth: $(STAMP)
	$(PY) -m hw.fpga synth --target $(TARGET) --rows $(ROWS) --cols $(COLS) $(FPGA_OPTS)

lint: $(STAMP)
	$(PY) -m hw.fpga lint --rows $(ROWS) --cols $(COLS)

scaling: $(STAMP)
	$(PY) -m hw.fpga scaling --sizes $(SIZES) --target $(TARGET) --reuse --timeout $(PNR_TIMEOUT) $(FPGA_OPTS) \
		--cycles-per-image sw.perf:mnist_cycles_per_image

clean:
	rm -rf build sim_build .pytest_cache

# MLPerf Tiny (docs/import.md): the two int8 reference models of models/mlperf-tiny, checked against LiteRT.
TINY_N ?= 16
TINY_ARRAYS ?= 8x8,16x16
tiny: $(STAMP)
	$(PY) -m sw.apps.tiny --backend $(BACKEND) --n $(if $(filter command line environment,$(origin N)),$(N),$(TINY_N)) --arrays $(TINY_ARRAYS) $(if $(WORKERS),--workers $(WORKERS))

# The acceptance campaign: 100 seeded inputs per model on every fast backend, every output element vs LiteRT.
tiny-check: $(STAMP)
	$(PY) -m sw.apps.tiny --backend cpu,golden,gpu,verilator --n 100 --arrays 8x8 --out build/reports/tiny-check.json

# ONNX frontend: agreement of the int8 reference kernels with onnxruntime on the seeded test models (docs/onnx.md)
.PHONY: onnx-agreement
SEEDS ?= 10
onnx-agreement: $(STAMP)
	$(PY) -m sw.frontends.onnx_testing --seeds $(SEEDS)

# VERILATOR_BUILD=baseline: `make mnist` (and everything else using the Verilator backend) on the harness as built
# before the speed work (sim/verilator_backend.py BASELINE; `make bench` measures both in every run).
ifdef VERILATOR_BUILD
export SYSTOLIC8_VERILATOR_BUILD := $(VERILATOR_BUILD)
endif

# Design-space exploration (docs/explore.md): the Pareto frontier of a model on TARGET and the verified recommendation.
MODEL ?= models/mnist_int8.npz
EXPLORE_OPTS ?=
explore: $(STAMP)
	$(PY) -m sw.apps.explore $(MODEL) --target $(TARGET) $(EXPLORE_OPTS)

# The explore view of the scaling study: the MNIST CNN and the MLPerf Tiny models against array size.
explore-scaling: $(STAMP)
	$(PY) -m sw.apps.explore models/mnist_int8.npz --scaling --target $(TARGET) \
		--also models/mlperf-tiny/dscnn_kws_int8.tflite,models/mlperf-tiny/resnet8_cifar10_int8.tflite

# Refit the resource model to Yosys runs (hw/fpga/data/resource_model-$(TARGET).json; runs cached in build/).
resource-model: $(STAMP)
	$(PY) -m hw.fpga.resource_model fit --target $(TARGET) --workers $(PYTEST_WORKERS)

# Mutation testing and fuzzing (docs/verification.md); not part of `make test`, which runs a slice of each.
mutate: $(STAMP)
	$(PY) -m sim.mutation $(if $(MUTANTS),--mutants '$(MUTANTS)') $(if $(WORKERS),--workers $(WORKERS))

fuzz: $(STAMP)
	$(PY) -m sim.fuzz $(if $(FUZZ_PROGRAMS),--programs $(FUZZ_PROGRAMS)) $(if $(FUZZ_NETWORKS),--networks $(FUZZ_NETWORKS)) \
		$(if $(SEED),--seed $(SEED)) $(if $(CONFIGS),--configs $(CONFIGS)) $(if $(WORKERS),--workers $(WORKERS))

# ASIC flow: every size and its PE, array and epilogue alone; reports reused when nothing changed (docs/asic.md).
# ASIC_OPTS: more options, e.g. --no-block-areas (skip the by-block mapping: at 16x16 another half hour of Yosys).
ASIC_SIZES ?= 2,4,8,16
ASIC_LIB ?= osu018
ASIC_OPTS ?=
asic: $(STAMP)
	$(PY) -m hw.asic --sizes $(ASIC_SIZES) --blocks --library $(ASIC_LIB) --reuse $(ASIC_OPTS)

# Netlist mutation (docs/verification.md): Yosys `mutate` mutants of the generated 2x2 netlist, each run through
# the kill check's stages (fuzz slice, deep cases, reach programs) until killed; NETLIST_MUTANTS= (default 30),
# SEED=, NETLIST_CONFIG= (2x2, 4x4, 8x8), STAGES= (e.g. fuzz,deep), REACH= (default 20,26), NETLIST_ONLY= (indices
# to re-run; their rows of the report are updated), WORKERS=.
mutate-netlist: $(STAMP)
	$(PY) -m sim.netlist_mutation $(if $(NETLIST_MUTANTS),--netlist $(NETLIST_MUTANTS)) $(if $(SEED),--seed $(SEED)) \
		$(if $(NETLIST_CONFIG),--config $(NETLIST_CONFIG))
