.DEFAULT_GOAL := help
VENV ?= .venv
PY := $(VENV)/bin/python

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-10s %s\n", $$1, $$2}'

install: ## create .venv and install touchstream with its dev tools
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'

run: install ## the embedded service on :8080 with simulated traffic (chat drops after 10 min)
	$(VENV)/bin/touchstream serve --simulate 20 --drop channel=chat:15:10m

test: ## the whole suite as CI runs it: install, ruff, mypy, import contracts, unit + integration tests
	bash scripts/test.sh

lint: install ## ruff, mypy and the import contracts only
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache

bench: install ## benchmark scripts (print figures and ratios measured in one run)
	$(PY) benchmarks/bench_decode.py
	$(PY) benchmarks/bench_engine.py
	$(PY) benchmarks/bench_embedded.py
	$(PY) benchmarks/bench_api.py
	$(PY) benchmarks/bench_worker.py
	$(PY) benchmarks/bench_pipeline.py
	$(PY) benchmarks/bench_latency.py
	$(PY) benchmarks/bench_instructions.py

.PHONY: help install run test lint bench
