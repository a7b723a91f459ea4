# Two entry points (see README): `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CORES ?= 2

.PHONY: setup demo test test-fast lint slurm-test clean

$(BIN)/snakemake: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

setup: $(BIN)/snakemake

demo: setup
	$(BIN)/snakemake --cores $(CORES)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakemake --lint
	$(BIN)/snakefmt --check Snakefile rules/

test: setup lint
	$(BIN)/pytest -q

# Unit tests only (no workflow runs): a few minutes on 2 cores.
test-fast: setup
	$(BIN)/pytest -q -m "not slow"

# A real single-node SLURM (apt, as root) running the tiny demo with
# profiles/slurm; compared with a local run (tests/slurm/run_slurm_ci.sh).
slurm-test: setup
	tests/slurm/run_slurm_ci.sh
