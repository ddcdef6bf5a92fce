# The two commands a fresh machine needs: `make run` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PYTHONPATH := $(CURDIR)/src
LINT_PATHS := src/service tests scripts gateway clients/python $(wildcard bench)
# The generated code: Python stubs (the saas-llm-grpc package), TypeScript stubs, OpenAPI.
GENERATED := clients/python-grpc/src/saas_llm clients/node/src/gen gateway/openapi.json
NODE_CLIENT := clients/node
NODE_STAMP := $(NODE_CLIENT)/node_modules/.package-lock.json
# The seeds' Node.js examples that import npm packages (the official `openai` SDK, Pattern B).
SEED_NODE := tests/contract/node
SEED_NODE_STAMP := $(SEED_NODE)/node_modules/.package-lock.json
# The admin dashboard's browser tests drive Debian's Chromium (Playwright is pointed at it: no
# browser is downloaded). Installed by `make test` when missing; root, or sudo.
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: help install lock gen gen-check lint fmt test run migrate bench audit clean

help: ## Show this help
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*?## "}{printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

# The Python dependencies come from requirements.lock (every version pinned, every file hashed:
# pip refuses anything else), then the three local packages from the tree without their
# dependencies (and without build isolation: setuptools is in the lock). `pip check` fails when
# a pyproject.toml asks for something the lock lacks: run `make lock` and commit.
LOCAL_PACKAGES := -e clients/python-grpc -e '.[dev]' -e 'clients/python[grpc]'
LOCK_EXCLUDE := saas-llm-gateway saas-llm-grpc saas-litellm-client

$(STAMP): requirements.lock pyproject.toml clients/python-grpc/pyproject.toml clients/python/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --require-hashes -r requirements.lock
	$(BIN)/pip install -q --no-deps --no-build-isolation $(LOCAL_PACKAGES)
	$(BIN)/pip check
	touch $(STAMP)

lock: ## Re-resolve requirements.in (pyproject.toml's runtime and dev deps, the clients) into requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	test -x $(BIN)/uv || $(BIN)/pip install -q uv
	$(BIN)/uv pip compile requirements.in --generate-hashes --python $(BIN)/python \
	  $(foreach p,$(LOCK_EXCLUDE),--no-emit-package $(p)) --custom-compile-command 'make lock' \
	  $(LOCK_ARGS) -o requirements.lock

# The TypeScript client's dependencies (ts-proto generates its stubs in `make gen`), exactly as
# package-lock.json pins them; npm's cache makes a reinstall quick.
$(NODE_STAMP): $(NODE_CLIENT)/package.json $(NODE_CLIENT)/package-lock.json
	cd $(NODE_CLIENT) && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error

$(SEED_NODE_STAMP): $(SEED_NODE)/package.json $(SEED_NODE)/package-lock.json
	cd $(SEED_NODE) && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error

# promtool (the tests check the metrics exposition and the Prometheus config with it), taken
# from Debian's prometheus package without installing the server.
PROMTOOL := build/tools/promtool
$(PROMTOOL):
	@if ! command -v apt-get >/dev/null; then echo "no apt-get: promtool checks will be skipped"; exit 0; fi; \
	set -e; rm -rf build/tools/deb; mkdir -p build/tools/deb; cd build/tools/deb; \
	apt-get download prometheus 2>/dev/null || { apt-get update -qq && apt-get download prometheus; }; \
	dpkg-deb -x prometheus_*.deb root; cp root/usr/bin/promtool ..; cd ..; rm -rf deb

# Go from Debian's packages, for the Go client test (buf generate + go run in GOPATH mode, no
# module download). Needs root for apt-get; without it the test is skipped outside CI.
GO_DEBS := golang-go protoc-gen-go protoc-gen-go-grpc golang-google-grpc-dev \
  golang-google-genproto-dev golang-google-protobuf-dev golang-github-golang-protobuf-1-5-dev
GO_STAMP := build/.go-debs

$(GO_STAMP):
	@if ! dpkg -s $(GO_DEBS) >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
	      --no-install-recommends $(GO_DEBS) >/dev/null; \
	  else echo "not root: Go packages not installed, the Go client test will be skipped"; fi; \
	fi
	mkdir -p build && touch $@

install: $(STAMP) $(NODE_STAMP) $(SEED_NODE_STAMP) $(GO_STAMP) $(PROMTOOL) ## Create .venv and install the project with its dev tools (npm, Go packages, promtool)

gen: $(STAMP) $(NODE_STAMP) ## Generate Python and TypeScript stubs, the Envoy descriptor set and the OpenAPI document from proto/
	$(BIN)/python scripts/gen.py
	$(BIN)/python -m gateway.openapi build/descriptor.pb gateway/openapi.json

gen-check: gen ## Fail if generated files differ from the committed ones
	@git diff --exit-code --stat -- $(GENERATED) || \
	  (echo "generated code is stale: run 'make gen' and commit" >&2; exit 1)
	@test -z "$$(git status --porcelain -- $(GENERATED))" || \
	  (git status --porcelain -- $(GENERATED); echo "untracked generated files: run 'make gen' and commit" >&2; exit 1)

lint: gen ## ruff, mypy --strict, import boundaries, buf lint and breaking (against main), tsc, envoy validate
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/buf lint
	$(BIN)/buf build -o /dev/null
	$(BIN)/python scripts/buf_breaking.py
	cd $(NODE_CLIENT) && node_modules/.bin/tsc -p . --noEmit
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

$(CHROMIUM):
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q chromium

test: gen $(CHROMIUM) $(SEED_NODE_STAMP) ## Run the whole test suite (SQLite, PostgreSQL, gRPC, Envoy REST, the dashboard in Chromium)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: gen ## Measure throughput and latency; writes bench/results/
	$(BIN)/python -m bench

audit: gen ## Check the credit ledger invariants of DATABASE_URL
	$(BIN)/python -m service audit

clean: ## Remove the venv and generated build files
	rm -rf $(VENV) build $(NODE_CLIENT)/node_modules $(NODE_CLIENT)/dist $(SEED_NODE)/node_modules
