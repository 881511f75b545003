# Two commands: `make demo` (build the synthetic dataset end to end) and `make test` (the test suite).
# Both create .venv if it is missing and install the project with the tested versions in constraints.txt.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= all
PYTEST_ARGS ?=
# Rules call the `avat3r` command: make the venv's bin folder visible to Snakemake's shell jobs.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: install demo test lint format clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test]"
	@touch $@

demo: install
	$(BIN)/snakemake --workflow-profile workflow/profiles/default --cores $(CORES)

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakemake --lint
	$(BIN)/snakefmt --check Snakefile rules

format: install
	$(BIN)/ruff format .
	$(BIN)/snakefmt Snakefile rules

clean:
	rm -rf results data .snakemake
