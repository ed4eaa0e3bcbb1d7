# The two commands of the README are `make demo` and `make test`; both install first.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
DB ?= results/kdbench.duckdb

.PHONY: install demo test test-fast e2e lint format bench clean

# torch first: on a machine without an NVIDIA GPU take the local CPU build (an open
# `torch` requirement would pull a multi-GB CUDA build); with a GPU take the default build.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	if command -v nvidia-smi >/dev/null 2>&1; then $(PIP) install -q torch; \
	else $(PIP) install -q torch==2.13.0; fi
	$(PIP) install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

demo: install  ## run the tiny suite, print the leaderboard, serve the web app
	$(VENV)/bin/kdbench run leaderboards/tiny.toml --db $(DB)
	$(VENV)/bin/kdbench app --db $(DB)

test: install  ## lint, unit tests, then the end-to-end tier
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -m "not e2e"
	$(PY) -m pytest -m e2e

test-fast: install
	$(PY) -m pytest -m "not e2e"

lint: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .

bench: install  ## time the tiny suite with and without a cached teacher
	$(PY) benchmarks/tiny_suite.py

clean:
	rm -rf results .pytest_cache .ruff_cache
