# Two commands set everything up: `make demo` (the main job) and `make test` (lint, types, tests).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test lint types pytest demo bench bench-sql bench-compare clean test-py313 smoke-py312 test-oldest

# The other Pythons memprof supports, each in a venv of its own (.venv-3.12, .venv-3.13): the newest pyenv
# build of that version, else pythonX.Y on PATH. PYTHON312=/path/to/python overrides the search.
PYENV_ROOT ?= $(HOME)/.pyenv
find_python = $(or $(shell ls -d $(PYENV_ROOT)/versions/$(1).*/bin/python$(1) 2>/dev/null | sort -V | tail -n 1),$(shell command -v python$(1) 2>/dev/null))
PYTHON312 ?= $(call find_python,3.12)
PYTHON313 ?= $(call find_python,3.13)
PYTHON311 ?= $(or $(call find_python,3.11),$(PYTHON))
# $(call with_python,VERSION,INTERPRETER,COMMAND): run COMMAND when the interpreter was found; else say
# what was skipped and why (one line), and fail under CI=true.
with_python = if [ -n "$(2)" ]; then $(3); else echo "SKIPPED $@: no Python $(1) (looked for $(PYENV_ROOT)/versions/$(1).*/bin/python$(1) and python$(1) on PATH)"; if [ "$$CI" = true ]; then echo "$@: CI needs Python $(1)"; exit 1; fi; fi
# What 3.12 runs besides the demo: the tests of behaviour that differs between Pythons (fork with threads,
# memory readings, frames and stacks in dumps, tracemalloc, import laziness) and the invariants.
SMOKE_TESTS := tests/test_demo.py tests/test_fork.py tests/test_memory.py tests/test_dump.py \
	tests/test_dump_process.py tests/test_invariants.py tests/test_middleware.py tests/test_imports.py \
	tests/test_sqlalchemy.py

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

# The whole suite on 3.13 (lint and types do not depend on the interpreter: `make test` runs them).
test-py313:
	@$(call with_python,3.13,$(PYTHON313),$(MAKE) --no-print-directory pytest VENV=.venv-3.13 PYTHON=$(PYTHON313))

# The demo and the tests of interpreter-dependent behaviour on 3.12.
smoke-py312:
	@$(call with_python,3.12,$(PYTHON312),$(MAKE) --no-print-directory pytest VENV=.venv-3.12 PYTHON=$(PYTHON312) PYTEST_ARGS="$(SMOKE_TESTS)")

# The lowest versions the pins allow (constraints-oldest.txt) in .venv-oldest, with the tests of what depends
# on them: route templates, the middleware, the SQLAlchemy integration, the CLI, the analyzer (DuckDB) and
# its HTML report.
OLDEST := .venv-oldest
OLDEST_TESTS := tests/test_routes.py tests/test_middleware.py tests/test_sqlalchemy.py \
	tests/test_sqlalchemy_async.py tests/test_sqlalchemy_listeners.py tests/test_sqlalchemy_sites.py \
	tests/test_cli_analyze.py tests/test_analysis.py tests/test_analysis_findings.py tests/test_analysis_fleet.py \
	tests/test_analysis_heap.py tests/test_analysis_input.py tests/test_analysis_real.py \
	tests/test_analysis_render.py tests/test_analysis_sqlalchemy.py tests/test_report_html.py

$(OLDEST)/.installed: pyproject.toml constraints-oldest.txt
	$(PYTHON311) -m venv $(OLDEST)
	$(OLDEST)/bin/pip install --quiet --upgrade pip
	$(OLDEST)/bin/pip install --quiet -c constraints-oldest.txt -e '.[dev]'
	touch $@

test-oldest: $(OLDEST)/.installed
	MEMPROF_RAISE_INTERNAL_ERRORS=1 $(OLDEST)/bin/pytest -q $(OLDEST_TESTS)

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
	rm -rf $(VENV) .venv-3.12 .venv-3.13 $(OLDEST) memprof-data memprof-demo .mypy_cache .ruff_cache
