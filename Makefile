# The two commands of the README are `make demo` and `make test`; both install first.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
DB ?= results/kdbench.duckdb

.PHONY: install browser-deps demo test test-fast e2e lint format docs bench bench-scale bench-onpolicy bench-app bench-bundle screenshot clean

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

# The browser test (tests/test_browser.py) drives Debian's headless Chromium: install it
# when /usr/bin/chromedriver is missing (as root, else through sudo).
browser-deps:
	@test -x /usr/bin/chromedriver || { \
	  if [ "$$(id -u)" -eq 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -q && $$SUDO apt-get install -y -q chromium chromium-driver; }

demo: install  ## run the two embedded suites, print their leaderboards, serve the web app
	$(VENV)/bin/kdbench run leaderboards/tiny.toml --db $(DB)
	$(VENV)/bin/kdbench run leaderboards/tiny-new.toml --db $(DB)
	$(VENV)/bin/kdbench app --db $(DB)

test: install browser-deps  ## lint, unit tests (with the browser test), then the end-to-end tier
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -m "not e2e"
	$(PY) -m pytest -m e2e

test-fast: install browser-deps
	$(PY) -m pytest -m "not e2e"

lint: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .

docs: install  ## regenerate docs/reference.md from the docstrings (a test checks it is current)
	$(PY) -m kdbench.reference docs/reference.md

bench: install  ## time the tiny suite with and without a cached teacher
	$(PY) benchmarks/tiny_suite.py

bench-scale: install  ## issue 4: cached-signal step time, suite with/without cache, concurrency, overhead, memory
	$(PY) benchmarks/scale.py step
	$(PY) benchmarks/scale.py suite
	$(PY) benchmarks/scale.py concurrency

bench-onpolicy: install  ## issue 13: on-policy gkd step vs sft and cached kd steps, generation share
	$(PY) benchmarks/onpolicy_step.py

bench-app: install  ## first render and filter change of the app over 100,000 synthetic runs, then 1,000,000 from 20 submitters
	$(PY) benchmarks/app_100k.py
	$(PY) benchmarks/app_100k.py --runs 1000000 --submitters 20 --db results/app_1m_synthetic.duckdb --target 1

bench-bundle: install  ## issue 14: export, verify and import of a 10,000-run bundle (seconds, peak RSS, size)
	$(PY) benchmarks/bundle_scale.py

screenshot: install browser-deps  ## refresh docs/leaderboard.png from the browser test
	KDBENCH_SCREENSHOT=docs/leaderboard.png $(PY) -m pytest -q tests/test_browser.py

clean:
	rm -rf results .pytest_cache .ruff_cache
