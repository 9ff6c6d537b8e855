# The commands a newcomer needs. CI runs `make test` (see .ci/run).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.DEFAULT_GOAL := help
.PHONY: help install run test lint format openapi bench clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is required")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP) ## Create .venv and install the gateway with its dev tools (pinned)

run: $(STAMP) ## Serve on 127.0.0.1:8000 (embedded Redis unless REDIS_URL; demo shop without credentials)
	$(BIN)/neuroon-gateway serve --dev

# The whole suite runs once per Redis shape the gateway supports (tests/redis_shapes.py starts each
# from the embedded Valkey); `make test REDIS_SHAPES=cluster` runs one. With REDIS_URL set, the suite
# runs once, against that server.
REDIS_SHAPES ?= server sentinel cluster

test: $(STAMP) lint ## Lint, then the whole suite against one Redis, Sentinel and Cluster (or REDIS_URL)
	@if [ -n "$$REDIS_URL" ]; then $(BIN)/pytest; else \
	  for shape in $(REDIS_SHAPES); do \
	    echo "== the whole suite against Redis shape: $$shape"; \
	    GATEWAY_TEST_REDIS=$$shape $(BIN)/pytest || exit 1; \
	  done; fi

lint: $(STAMP) ## ruff (lint + format check) and mypy --strict
	$(BIN)/ruff check app tests bench
	$(BIN)/ruff format --check app tests bench
	$(BIN)/mypy

format: $(STAMP) ## Apply ruff's fixes and formatting
	$(BIN)/ruff check --fix app tests bench
	$(BIN)/ruff format app tests bench

openapi: $(STAMP) ## Regenerate openapi/openapi.json from the app
	$(BIN)/python -m app.openapi > openapi/openapi.json

bench: $(STAMP) ## Benchmarks, each as a ratio against a baseline measured in the same run
	$(BIN)/python -m bench

clean: ## Remove the virtualenv and local data
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
