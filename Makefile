# asynq-aio developer commands. The two that matter:
#   make demo   set up, start a local Redis Cluster and run the Redis Cluster tutorial end to end
#   make test   set up, then ruff, ruff format --check, mypy and pytest (what CI runs)
# Both create .venv and make sure a redis-server binary exists (installing it with apt-get when
# run as root or with sudo). Override PYTHON, VENV, CLUSTER_DIR or PORT_BASE on the command line.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
CLUSTER_DIR ?= .devcluster
PORT_BASE ?= 7000
PURGE ?=

BIN := $(VENV)/bin
TOOLS_DIR ?= .tools
UV_VERSION ?= 0.13.9
UV ?= $(or $(shell command -v uv 2>/dev/null),$(TOOLS_DIR)/bin/uv)
# Never let uv fetch a Python build (only package registries are reachable); use $(PYTHON). Trust the
# system's certificate store as pip does (uv otherwise uses its own bundled roots, which fail behind
# a TLS-inspecting proxy whose CA only the system store knows).
UV_ENV := UV_PYTHON_DOWNLOADS=never UV_NO_PROGRESS=1 UV_NATIVE_TLS=1
# mkdocs-material prints a banner about its successor on every run; it is not a warning.
MKDOCS := NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs
STAMP := $(VENV)/.installed

.PHONY: help demo test test-deps lock lint format docs docs-serve venv redis cluster-up cluster-down cluster-status clean bench

help:
	@echo "make demo            set up, start a local Redis Cluster, run the tutorial worker and client"
	@echo "make test            set up, then ruff check, ruff format --check, mypy, the docs build, pytest -q"
	@echo "make test-deps       the core suite on the newest and on the lowest dependency versions allowed"
	@echo "make lock            re-resolve uv.lock after changing a dependency in pyproject.toml"
	@echo "make venv            only create $(VENV) and install the locked project with its dev tools"
	@echo "make lint            ruff check, ruff format --check and mypy only"
	@echo "make format          ruff format and ruff check --fix"
	@echo "make docs            build the documentation site into site/ (mkdocs --strict)"
	@echo "make docs-serve      serve the documentation on http://127.0.0.1:8000 with live reload"
	@echo "make bench           benchmarks vs arq, SAQ, taskiq-redis, streaq (BENCH_ARGS=--quick: ~2 min)"
	@echo "make cluster-up      start the dev Redis Cluster on 127.0.0.1:$(PORT_BASE)-$$(($(PORT_BASE) + 5))"
	@echo "make cluster-status  show its nodes"
	@echo "make cluster-down    stop it (keeps its data in $(CLUSTER_DIR); PURGE=1 deletes it)"
	@echo "make clean           stop it and delete $(VENV), $(CLUSTER_DIR) and caches"

# -- setup ------------------------------------------------------------------------------------------

# The locked environment. uv.lock pins every package (direct and transitive) for dev, `make demo`,
# `make test` and CI, so a fresh machine gets what CI tested; pyproject.toml keeps the ranges that
# library users get. `uv sync --frozen` installs exactly the lock (and removes what it does not list)
# and fails if pyproject.toml and the lock disagree: run `make lock` after changing a dependency.
# uv itself comes from PATH, or is installed with pip into $(TOOLS_DIR) from PyPI (pinned below).
# The project is installed editable in setuptools' compat mode ([tool.uv] config-settings), which
# puts the project directory on sys.path, so `examples` and the package import the same way.
$(STAMP): pyproject.toml uv.lock | $(UV)
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { \
	  echo "error: asynq-aio needs Python 3.11 or newer; '$(PYTHON)' is $$($(PYTHON) -V 2>&1 || echo missing)." \
	       "Run e.g. make $(MAKECMDGOALS) PYTHON=python3.12" >&2; exit 1; }
	@echo "==> installing the locked asynq-aio and its dev tools into $(VENV) (uv sync --frozen)"
	$(UV_ENV) UV_PROJECT_ENVIRONMENT=$(VENV) $(UV) sync --frozen --extra dev --python $(PYTHON) --quiet
	@touch $@

# Bootstraps uv when it is not on PATH: a private venv with pip's uv wheel (a PyPI package).
$(TOOLS_DIR)/bin/uv:
	@echo "==> uv is not on PATH; installing uv $(UV_VERSION) into $(TOOLS_DIR) with pip"
	@$(PYTHON) -m venv $(TOOLS_DIR) || { \
	  rm -rf $(TOOLS_DIR); \
	  echo "error: '$(PYTHON) -m venv' failed. On Debian/Ubuntu install the venv module" \
	       "(apt-get install -y python3-venv) and run make again." >&2; \
	  exit 1; }
	$(TOOLS_DIR)/bin/python -m pip install --quiet --disable-pip-version-check 'uv==$(UV_VERSION)'

venv: $(STAMP)

redis:
	@bash scripts/ensure-redis.sh

# -- the two commands of the README -----------------------------------------------------------------

demo: venv redis
	@VENV=$(VENV) CLUSTER_DIR=$(CLUSTER_DIR) PORT_BASE=$(PORT_BASE) bash scripts/demo.sh

test: venv redis
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(MKDOCS) build --strict --quiet
	$(BIN)/pytest -q

# The core suite (no slow tests, no chaos) against the newest and the lowest versions that
# pyproject.toml's ranges allow, each in its own venv (.venv-newest, .venv-lowest). CI runs it after
# `make test`. EDGES=newest or EDGES=lowest runs one.
test-deps: venv redis
	UV=$(UV) PYTHON=$(PYTHON) bash scripts/test-deps.sh $(EDGES)

# After changing a dependency in pyproject.toml: re-resolve uv.lock (commit it with the change).
lock: | $(UV)
	$(UV_ENV) $(UV) lock --python $(PYTHON)

# -- everyday helpers -------------------------------------------------------------------------------

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Benchmarks: starts its own Redis (single and cluster) on free ports, creates one venv per system
# under benchmarks/.venv-<name>/ on first use, prints one table, writes benchmarks/results/.
# BENCH_ARGS=--quick for a ~2 minute smoke run.
bench: venv redis
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

# The docs site (mkdocs.yml). --strict turns every warning (a broken link or anchor, a docstring
# the API reference cannot render) into a failure, as in `make test`. Builds offline.
docs: venv
	$(MKDOCS) build --strict

docs-serve: venv
	$(MKDOCS) serve --strict

cluster-up: venv redis
	$(BIN)/asynq-aio dev cluster up --dir $(CLUSTER_DIR) --port-base $(PORT_BASE)

cluster-status: venv
	$(BIN)/asynq-aio dev cluster status --dir $(CLUSTER_DIR)

cluster-down:
	@if [ -x $(BIN)/asynq-aio ]; then \
	  $(BIN)/asynq-aio dev cluster down --dir $(CLUSTER_DIR) $(if $(PURGE),--purge); \
	else \
	  echo "no $(BIN)/asynq-aio; run make demo or make cluster-up first" >&2; \
	fi

# Stops the dev cluster first (by the pid files it recorded, if the venv is already gone).
clean:
	@if [ -x $(BIN)/asynq-aio ] && [ -f $(CLUSTER_DIR)/cluster.json ]; then \
	  $(BIN)/asynq-aio dev cluster down --dir $(CLUSTER_DIR) --purge; \
	elif [ -d $(CLUSTER_DIR) ]; then \
	  for f in $(CLUSTER_DIR)/*/redis.pid; do [ -f "$$f" ] && kill "$$(cat "$$f")" 2>/dev/null || true; done; \
	fi
	rm -rf $(VENV) $(VENV)-newest $(VENV)-lowest $(TOOLS_DIR) $(CLUSTER_DIR) .mypy_cache .ruff_cache .pytest_cache build dist *.egg-info
	find . -name __pycache__ -type d -prune -not -path './.git/*' -exec rm -rf {} +
