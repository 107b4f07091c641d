# wattmux: every target does its own set-up (virtualenv, packages, mosquitto for the tests).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
DEMO_ARGS ?=

.PHONY: help install demo test lint unit bench bench-api soak mosquitto clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "wattmux needs Python >= 3.11; found " + sys.version.split()[0])'
	@$(PYTHON) -m venv --help >/dev/null 2>&1 || { echo "python venv module missing: apt-get install python3-venv"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,fast]'
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install wattmux with its dev tools

demo: $(STAMP) ## run the daemon on a simulated site replaying real ERCOT prices (DEMO_ARGS="--asics 500")
	$(VENV)/bin/wattmux demo $(DEMO_ARGS)

mosquitto: ## make sure a mosquitto binary exists (the tests start their own broker)
	@if command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing mosquitto with apt-get"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null; \
	else \
		echo "mosquitto is missing: run 'sudo apt-get install mosquitto' (Debian/Ubuntu), then make test again"; exit 1; \
	fi

lint: $(STAMP) ## ruff and mypy --strict on scheduler/ and drivers/
	$(VENV)/bin/ruff check scheduler drivers tests bench
	$(VENV)/bin/mypy scheduler drivers

unit: $(STAMP) ## the test suite only
	$(PY) -m pytest -q

test: $(STAMP) mosquitto lint unit ## everything CI runs: install, lint, the whole test suite

bench: $(STAMP) ## every benchmark under bench/ (one JSON object per line)
	@set -e; for script in bench/bench_*.py; do $(PY) $$script; done

bench-api: $(STAMP) ## API latency: a read, a durable audited change, an audited refusal
	$(PY) bench/bench_api.py

soak: $(STAMP) ## long-running tests (not part of make test)
	$(PY) -m pytest -q -m soak --run-soak

clean: ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
