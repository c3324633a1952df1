# Two commands set everything up: `make demo` (the main job) and `make test` (lint, types, tests).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test lint types pytest demo bench bench-sql bench-compare clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: $(STAMP) lint types pytest

lint: $(STAMP)
	$(BIN)/ruff check memprof tests benchmarks
	$(BIN)/ruff format --check memprof tests benchmarks

types: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	MEMPROF_RAISE_INTERNAL_ERRORS=1 $(BIN)/pytest -q $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/memprof demo

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run_middleware $(BENCH_ARGS)

bench-sql: $(STAMP)
	$(BIN)/python -m benchmarks.bench_sqlalchemy $(BENCH_ARGS)

# The peers (OpenTelemetry, Sentry, uvicorn[standard]) come with the bench extra.
$(VENV)/.bench-installed: $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $@

bench-compare: $(VENV)/.bench-installed
	$(BIN)/python -m benchmarks.run_compare $(BENCH_ARGS)

clean:
	rm -rf $(VENV) memprof-data memprof-demo .mypy_cache .ruff_cache
