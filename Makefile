PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch 2.14.1 / torchvision 0.29.1 are the releases our CI machines cache locally; the
# project's ranges accept any 2.x torch.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1

.PHONY: install lint format test test-fast test-gpu demo bench bench-gpu bench-scale clean

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

# The tests marked cuda (tests/test_gpu.py): GPU features against the CPU references, each
# precision's deviation, --devices on one GPU, pinned memory; skipped where there is no GPU.
test-gpu:
	$(BIN)/python -m pytest -q -rs -m cuda

bench:
	$(BIN)/python -m benchmarks.run

# The network per precision and memory format, the input pipeline with 4/8/16 workers, and end to
# end, on a GPU, in one table (under 8 minutes); `python -m benchmarks.gpu --device cpu --tiny` is
# its smoke test (part of `make test`).
bench-gpu:
	$(BIN)/python -m benchmarks.gpu --device cuda

# Kinetics scale (issue 13): planning from a 650k-row CSV, status/inspect/merge over 2k and 20k videos,
# HDF5 root groups; not part of `make bench` (it generates 650k files; about 15 minutes on 2 cores).
bench-scale:
	$(BIN)/python -m benchmarks.scale

clean:
	rm -rf $(VENV) build *.egg-info

demo:
	$(BIN)/python examples/demo.py
