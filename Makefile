# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean sysdeps

$(STAMP): pyproject.toml setup.py src/closedloop/_kernels.c src/closedloop/_trees.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m examples.phishing.demo

# Debian packages the suite drives for real (browser, PostgreSQL, wrk): installed when missing.
sysdeps:
	bash scripts/ensure_system_deps.sh

test: $(STAMP) sysdeps
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests examples bench
	$(BIN)/mypy

bench: $(STAMP) sysdeps
	$(BIN)/python bench/decide.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
