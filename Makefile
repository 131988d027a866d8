# Two commands: `make repro` (set up + build the default dataset) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
TORCH_VERSION ?= 2.13.0
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)
export DVC_NO_ANALYTICS := 1
export OMP_NUM_THREADS ?= 2
# Cache the modules' bytecode, as Python does by default: some machines (the development one
# among them) set PYTHONDONTWRITEBYTECODE=1, and every `sirst5k` command then compiles the
# project's modules again (0.05-0.09 s each). The cache lives in the venv, out of the source
# tree, whose folders DVC hashes.
unexport PYTHONDONTWRITEBYTECODE
export PYTHONPYCACHEPREFIX ?= $(abspath $(VENV))/pycache

.PHONY: setup repro evaluate test test-fast bench verify clean

setup: $(VENV)/.installed

# torch first, pinned: a looser requirement with no torch installed pulls the CUDA build.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q torch==$(TORCH_VERSION)
	$(BIN)/python -m pip install -q -e '.[all,dev]'
	touch $@

repro: setup
	$(BIN)/dvc config core.check_update false --local >/dev/null 2>&1 || true
	$(BIN)/dvc repro dvc.yaml

# Trains one network per arm and seed (params.yaml: evaluate): 12 runs, tens of minutes on 2 CPU cores.
evaluate: repro
	$(BIN)/dvc repro evaluate/dvc.yaml

verify: setup
	$(BIN)/sirst5k verify manifests/sirst5k.json

test: setup
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

# Every speed figure of docs/speed.md (~10 min); BENCH_ARGS=--full adds 10 x SIRST and the "before" runs.
bench: setup
	$(BIN)/python benchmarks/run_all.py $(BENCH_ARGS)

clean:
	rm -rf output .dvc/cache .dvc/tmp
