# The two commands a fresh machine needs: `make run` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PYTHONPATH := $(CURDIR)/src
LINT_PATHS := src/service tests scripts gateway $(wildcard bench)

.PHONY: help install gen gen-check lint fmt test run migrate bench audit clean

help: ## Show this help
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*?## "}{printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

# promtool (the tests check the metrics exposition and the Prometheus config with it), taken
# from Debian's prometheus package without installing the server.
PROMTOOL := build/tools/promtool
$(PROMTOOL):
	@if ! command -v apt-get >/dev/null; then echo "no apt-get: promtool checks will be skipped"; exit 0; fi; \
	set -e; rm -rf build/tools/deb; mkdir -p build/tools/deb; cd build/tools/deb; \
	apt-get download prometheus 2>/dev/null || { apt-get update -qq && apt-get download prometheus; }; \
	dpkg-deb -x prometheus_*.deb root; cp root/usr/bin/promtool ..; cd ..; rm -rf deb

install: $(STAMP) $(PROMTOOL) ## Create .venv and install the project with its dev tools

gen: $(STAMP) ## Generate Python stubs, the Envoy descriptor set and the OpenAPI document from proto/
	$(BIN)/python scripts/gen.py
	$(BIN)/python -m gateway.openapi build/descriptor.pb gateway/openapi.json

gen-check: gen ## Fail if generated files differ from the committed ones
	@git diff --exit-code --stat -- src/saas_llm gateway/openapi.json || \
	  (echo "generated code is stale: run 'make gen' and commit" >&2; exit 1)
	@test -z "$$(git status --porcelain -- src/saas_llm gateway/openapi.json)" || \
	  (git status --porcelain -- src/saas_llm gateway/openapi.json; echo "untracked generated files: run 'make gen' and commit" >&2; exit 1)

lint: gen ## ruff, mypy --strict, buf lint
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/mypy
	$(BIN)/buf lint
	$(BIN)/buf build -o /dev/null
	$(BIN)/envoy --mode validate -c envoy.yaml --log-level warn

fmt: $(STAMP) ## Format the code
	$(BIN)/ruff check --fix $(LINT_PATHS)
	$(BIN)/ruff format $(LINT_PATHS)

migrate: gen ## Apply database migrations to DATABASE_URL
	$(BIN)/python -m service migrate

run: gen ## Start the service and Envoy (REST on :8080, gRPC on :50051) on SQLite
	$(BIN)/python -m service run-all

run-cluster: gen ## 2 service replicas behind one Envoy on PostgreSQL (REST :8080, gRPC :50051/:50052)
	$(BIN)/python -m service run-cluster

soak: gen ## The long reliability/security variants (pytest -m soak; not part of make test)
	$(BIN)/python -m pytest -m soak $(PYTEST_ARGS) tests/reliability tests/security

test: gen ## Run the whole test suite (SQLite, PostgreSQL, gRPC, Envoy REST)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: gen ## Measure throughput and latency; writes bench/results/
	$(BIN)/python -m bench

audit: gen ## Check the credit ledger invariants of DATABASE_URL
	$(BIN)/python -m service audit

clean: ## Remove the venv and generated build files
	rm -rf $(VENV) build
