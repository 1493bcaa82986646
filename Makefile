PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch 2.14.1 / torchvision 0.29.1 are the releases our CI machines cache locally; the
# project's ranges accept any 2.x torch.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1

.PHONY: install lint format test test-fast demo bench bench-scale clean

install:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install $(TORCH_PINS)
	$(BIN)/python -m pip install -e '.[dev]'
	@test -x $(BIN)/tsp

# ruff (lint and format check) and mypy, as configured in pyproject.toml; CI runs it before the tests.
lint:
	$(BIN)/ruff check tsp_cli tests benchmarks examples
	$(BIN)/ruff format --check tsp_cli tests benchmarks examples
	$(BIN)/mypy

format:
	$(BIN)/ruff check --fix tsp_cli tests benchmarks examples
	$(BIN)/ruff format tsp_cli tests benchmarks examples

# The whole suite (what CI runs); test-fast leaves out the tests marked slow (real networks on the CPU).
test:
	$(BIN)/python -m pytest -q

test-fast:
	$(BIN)/python -m pytest -q -m "not slow"

bench:
	$(BIN)/python -m benchmarks.run

# Kinetics scale (issue 13): planning from a 650k-row CSV, status/inspect/merge over 2k and 20k videos,
# HDF5 root groups; not part of `make bench` (it generates 650k files; about 15 minutes on 2 cores).
bench-scale:
	$(BIN)/python -m benchmarks.scale

clean:
	rm -rf $(VENV) build *.egg-info

demo:
	$(BIN)/python examples/demo.py
