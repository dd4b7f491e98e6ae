# One command each: `make demo` (set up, then the main job), `make test` (set up, then the tests).
VENV ?= .venv
BIN := $(VENV)/bin
PYTHON ?= python3
TORCH_INDEX ?=

.PHONY: setup demo smoke test test-slow lint

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch first and pinned. PyPI's Linux torch is the multi-GB CUDA build; TORCH_INDEX="--index-url
	# https://download.pytorch.org/whl/cpu" takes the CPU wheel (as the CI machine's local wheels are).
	$(BIN)/pip install -q $(TORCH_INDEX) torch==2.13.0
	$(BIN)/pip install -q wheel setuptools
	# DeepSpeed ships as source and its setup imports torch, so it is built against the torch above, without its CUDA
	# ops (DS_BUILD_OPS=0), by the setuptools above (a Python >= 3.12 venv has none, and without build isolation pip
	# does not fetch it); the slow tests run it for real on 2 CPU processes (DS_ACCELERATOR=cpu).
	DS_BUILD_OPS=0 $(BIN)/pip install -q --no-build-isolation "deepspeed>=0.19,<0.20"
	$(BIN)/pip install -q -e ".[dev,deepspeed]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/prefix-rft demo

smoke: setup
	$(BIN)/prefix-rft train --config configs/smoke_cpu.yaml

test: setup
	$(BIN)/python -m pytest -q -m "not slow"

test-slow: setup
	$(BIN)/python -m pytest -q -m slow

lint: setup
	$(BIN)/ruff check src tests benchmarks && $(BIN)/ruff format --check src tests benchmarks
