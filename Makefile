PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch 2.14.1 / torchvision 0.29.1 are the releases our CI machines cache locally; the
# project's ranges accept any 2.x torch.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1

.PHONY: install test demo bench clean

install:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install $(TORCH_PINS)
	$(BIN)/python -m pip install -e '.[dev]'
	@test -x $(BIN)/tsp

test:
	$(BIN)/python -m pytest -q

bench:
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) build *.egg-info

demo:
	$(BIN)/python examples/demo.py
