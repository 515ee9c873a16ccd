# marketpipe — `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Local servers used by `make test` (each test session creates its own database and Redis db).
export TEST_DATABASE_URL ?= postgresql://postgres@127.0.0.1:5432/postgres
export TEST_REDIS_URL ?= redis://127.0.0.1:6379/0

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

$(STAMP): requirements-dev.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-dev.lock
	$(BIN)/pip install -q --no-deps -e .
	touch $@

.PHONY: venv
venv: $(STAMP) ## create .venv with the locked dependencies

.PHONY: lint
lint: $(STAMP) ## ruff (all code) and mypy (the shared package)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

CHROMIUM := /usr/bin/chromium

.PHONY: browser-deps
browser-deps: ## Debian's chromium for the browser test (as root; only when missing)
	@if [ ! -x $(CHROMIUM) ]; then \
		if [ "$$(id -u)" != 0 ]; then echo "browser-deps: run as root to apt-get install chromium" >&2; exit 1; fi; \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium; \
	fi

.PHONY: test
test: $(STAMP) browser-deps lint ## install everything, lint, run all tests but the long chaos ones (incl. compose)
	$(BIN)/pytest -m "not chaos and not soak"

.PHONY: test-compose
test-compose: $(STAMP) browser-deps ## only the compose suite: the real stack on a Docker engine
	$(BIN)/pytest -m compose

.PHONY: chaos
chaos: $(STAMP) ## crash, outage, bad-input and security tests on real processes; one results table
	$(BIN)/python scripts/chaos.py

.PHONY: soak
soak: $(STAMP) ## a simulated month on the whole stack (~15 min): equal to a clean backfill, flat memory
	$(BIN)/pytest tests/soak -p no:cacheprovider -s -o tmp_path_retention_policy=failed

.PHONY: test-unit
test-unit: $(STAMP) ## unit tests only (no servers)
	$(BIN)/pytest -m unit

.PHONY: run
run: $(STAMP) ## the whole stack as local processes (no Docker); Ctrl-C stops it
	$(BIN)/python scripts/run_stack.py

.PHONY: up
up: ## the whole stack in Docker Compose (the demo: cp .env.example .env first)
	docker compose up --build

.PHONY: migrate
migrate: $(STAMP) ## create the database if missing and apply migrations
	$(BIN)/python -m marketpipe.migrate --create-database

.PHONY: bench
bench: $(STAMP) ## benchmarks, each with its baseline measured in the same run
	@# As modules from the repo root: benchmarks share tests/support (scratch servers, test clocks).
	@for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python -m bench.$$(basename $$b .py) || exit 1; done

.PHONY: log-share
log-share: $(STAMP) ## make run for 150 s on scratch stores: share of marketpipe's own log lines
	$(BIN)/python -m bench.log_share

.PHONY: lock
lock: ## re-resolve pyproject's pins into requirements*.lock
	scripts/lock.sh

.PHONY: clean
clean: ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache .hypothesis
