# Set-up is part of every target: a fresh clone needs only `make run` or `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup run demo-grid test test-slow test-all bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

## The default job: 1,000 households on IEEE 123 for one day (records under runs/).
run: setup
	$(BIN)/cosim run experiments/configs/ieee123_1000.toml

## The power-flow demo: random load scenarios on IEEE 123 and a voltage-profile plot.
demo-grid: setup
	$(BIN)/cosim grid solve ieee123 --plot runs/demo/ieee123-voltages.png

## Fast tests (what CI runs).
test: setup
	$(BIN)/python -m pytest -m "not slow"

## Long tests: the 8500-node feeder, torch.compile, full sweeps.
test-slow: setup
	$(BIN)/python -m pytest -m slow

test-all: setup
	$(BIN)/python -m pytest

## Re-measure and record every benchmark in BENCHMARKS.md (about 70 minutes on 2 cores).
bench: setup
	$(BIN)/cosim bench powerflow --compile --update-benchmarks BENCHMARKS.md
	$(BIN)/cosim bench engine --update-benchmarks BENCHMARKS.md
	$(BIN)/cosim bench profiles --update-benchmarks BENCHMARKS.md
	$(BIN)/cosim bench households --households 10000 --repeats 5 --update-benchmarks BENCHMARKS.md
	$(BIN)/cosim bench markets --update-benchmarks BENCHMARKS.md
	$(BIN)/cosim bench rl --update-benchmarks BENCHMARKS.md
	$(BIN)/cosim bench gradmap --update-benchmarks BENCHMARKS.md

clean:
	rm -rf $(VENV) runs .pytest_cache
