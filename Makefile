# Stockade: every entry point a newcomer or CI needs. Each target installs what it uses.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SYSTEM_TOOLS := nft iptables ipset conntrack ip redis-server promtool shellcheck curl
APT_PACKAGES := nftables iptables ipset conntrack iproute2 redis-server prometheus shellcheck curl python3 python3-venv python3-pip

.PHONY: help deps venv lint protos protos-check test test-fast demo reach bench clean

help:
	@echo "make demo    - the lab with the Sock Shop scenario (root)"
	@echo "make test    - install everything, then lint, type-check and run the whole test suite (root)"
	@echo "make lint    - ruff, mypy, import contracts, generated-code freshness"
	@echo "make protos  - regenerate services/common/stockade/v1 from protos/"
	@echo "make reach   - offline reachability of the Sock Shop manifests"
	@echo "make bench   - run every benchmark (slow; see BENCHMARKS.md)"

# System packages: installed with apt-get only when a tool is missing.
deps:
	@missing=""; for t in $(SYSTEM_TOOLS); do command -v $$t >/dev/null 2>&1 || [ -x /usr/sbin/$$t ] || missing="$$missing $$t"; done; \
	if ! $(PYTHON) -c 'import venv, ensurepip' >/dev/null 2>&1; then missing="$$missing python3-venv"; fi; \
	if [ -n "$$missing" ]; then \
		echo "==> installing system packages (missing:$$missing)"; \
		if [ "$$(id -u)" != 0 ]; then echo "error: run as root (sudo make ...) to install system packages"; exit 1; fi; \
		export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && apt-get install -y -qq $(APT_PACKAGES) >/dev/null; \
	fi

# setup.py maps every package folder at install time: a new package folder means a reinstall.
$(BIN)/stockade: pyproject.toml setup.py $(shell find services -name __init__.py)
	@echo "==> creating $(VENV) and installing stockade with its development tools"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --upgrade pip
	@$(BIN)/python -m pip install -q -e '.[dev]'
	@# Only its Compose specification schema is read (tests/deploy); its pins would downgrade PyYAML.
	@$(BIN)/python -m pip install -q --no-deps docker-compose==1.29.2
	@touch $@

venv: deps $(BIN)/stockade

protos: venv
	$(BIN)/python scripts/gen_protos.py

protos-check: venv
	$(BIN)/python scripts/gen_protos.py --check

lint: venv protos-check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check services tests benchmarks scripts
	$(BIN)/mypy services
	$(BIN)/lint-imports

test: lint
	@if [ "$$(id -u)" != 0 ]; then echo "error: the suite builds network namespaces and nftables rules: run as root (sudo make test)"; exit 1; fi
	$(BIN)/pytest -q -rfEs tests

test-fast: venv
	$(BIN)/pytest -q -x -m "not root and not slow" tests

demo: venv
	@if [ "$$(id -u)" != 0 ]; then echo "error: the lab builds network namespaces: run as root (sudo make demo)"; exit 1; fi
	$(BIN)/stockade lab demo

reach: venv
	$(BIN)/stockade reach -f examples/sock-shop/

bench: venv
	@for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis build *.egg-info
