# Set-up is part of every target: a fresh clone needs only `make run` or `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup run test test-slow test-all bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

## The default job: the power-flow demo on IEEE 123, then the power-flow benchmark.
run: setup
	$(BIN)/cosim grid solve ieee123 --plot runs/demo/ieee123-voltages.png
	$(BIN)/cosim bench powerflow

## Fast tests (what CI runs).
test: setup
	$(BIN)/python -m pytest -m "not slow"

## Long tests: the 8500-node feeder, torch.compile, full sweeps.
test-slow: setup
	$(BIN)/python -m pytest -m slow

test-all: setup
	$(BIN)/python -m pytest

## Re-measure and record the benchmarks in BENCHMARKS.md.
bench: setup
	$(BIN)/cosim bench powerflow --compile --update-benchmarks BENCHMARKS.md

clean:
	rm -rf $(VENV) runs .pytest_cache
