# wattmux: every target does its own set-up (virtualenv, packages, mosquitto for the tests).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
DEMO_ARGS ?=

.PHONY: help install demo test lint unit system bench soak mosquitto clean prometheus bench-metrics systemd-analyze bench-policy bench-asic bench-ingest bench-api bench-api-abuse bench-hostile bench-health backtest-matrix

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

CONSTRAINTS := constraints.txt

$(STAMP): pyproject.toml $(CONSTRAINTS)
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "wattmux needs Python >= 3.11; found " + sys.version.split()[0])'
	@$(PYTHON) -m venv --help >/dev/null 2>&1 || { echo "python venv module missing: apt-get install python3-venv"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade -c $(CONSTRAINTS) pip
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) -e '.[dev,fast,plot]'
	@$(PY) -m pip install --quiet -c $(CONSTRAINTS) --only-binary=pyasic-rs -e '.[asic-rs]' \
		|| echo "pyasic-rs has no wheel for this platform: the optional asic-rs driver and its tests are skipped"
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install wattmux with its dev tools (versions pinned in constraints.txt)

demo: $(STAMP) ## run the daemon on a simulated site replaying real ERCOT prices (DEMO_ARGS="--asics 500")
	$(VENV)/bin/wattmux demo $(DEMO_ARGS)

mosquitto: ## make sure a mosquitto binary exists (the tests start their own broker)
	@if { command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]; } && command -v openssl >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing mosquitto with apt-get"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto openssl >/dev/null; \
	else \
		echo "mosquitto or openssl is missing: run 'sudo apt-get install mosquitto openssl' (Debian/Ubuntu), then make test again"; exit 1; \
	fi

lint: $(STAMP) ## ruff check and format, mypy --strict, the import contracts (pyproject [tool.importlinter])
	$(VENV)/bin/ruff check scheduler drivers tests bench
	$(VENV)/bin/ruff format --check scheduler drivers tests bench
	$(VENV)/bin/mypy scheduler drivers
	$(VENV)/bin/lint-imports --no-logo

unit: $(STAMP) ## the quick tests: no process, no server, no external binary, not exhaustive (not system, slow or soak)
	$(PY) -m pytest -q -m "not system and not slow and not soak"

system: $(STAMP) mosquitto prometheus systemd-analyze slurm chromium alertmanager nspawn-root ## the tests that start processes: mosquitto, Slurm, Prometheus, the daemon
	$(PY) -m pytest -q -m "system and not soak"

test: $(STAMP) mosquitto prometheus systemd-analyze slurm chromium alertmanager nspawn-root lint ## everything CI runs: install, lint, the whole test suite (soak aside)
	$(PY) -m pytest -q

bench: $(STAMP) mosquitto ## every benchmark under bench/ (one JSON object per line)
	@set -e; for script in bench/bench_*.py; do $(PY) $$script; done

bench-asic: $(STAMP) ## poll and curtail 10,000 simulated miners (sim in its own process)
	$(PY) bench/bench_asic.py $(BENCH_ASIC_ARGS)

bench-health: $(STAMP) ## deep health: bytes kept per device and parse time per device
	$(PY) bench/bench_health.py

bench-policy: $(STAMP) ## max-margin plan for 100,000 devices and the 10-month backtest for 1,000
	$(PY) bench/bench_policy.py

backtest-matrix: $(STAMP) ## max-margin over the scenario matrix -> docs/backtest-matrix.md (about 20 min on 2 cores; BACKTEST_MATRIX_ARGS="--jobs 4" or "--exact defaults")
	$(PY) -m scheduler.backtest.matrix $(BACKTEST_MATRIX_ARGS)

bench-ingest: $(STAMP) mosquitto ## MQTT ingest rate and price-to-decision latency (real mosquitto)
	$(PY) bench/bench_decode.py
	$(PY) bench/bench_ingest.py
bench-api: $(STAMP) ## API latency: a read, a durable audited change, an audited refusal
	$(PY) bench/bench_api.py
bench-api-abuse: $(STAMP) ## miner polls failed while 2,000 idle sockets hold the API (goal 0)
	$(PY) bench/bench_api_abuse.py
bench-hostile: $(STAMP) ## tick p95 beside hostile miners, RSS with an endless miner, failsafe of 10,000 with 1 % hostile
	$(PY) bench/bench_hostile.py
	$(PY) bench/bench_hostile_rss.py $(BENCH_RSS_ARGS)
	$(PY) bench/bench_failsafe.py $(BENCH_FAILSAFE_ARGS)

soak: $(STAMP) ## long-running tests (not part of make test)
	$(PY) -m pytest -q -m soak --run-soak

clean: ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .import_linter_cache

prometheus: ## make sure promtool and prometheus exist (Debian package; the tests start their own server)
	@if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing prometheus (promtool) with apt-get"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	else \
		echo "prometheus/promtool missing: run 'sudo apt-get install prometheus' (Debian/Ubuntu), then make test again"; exit 1; \
	fi

bench-metrics: $(STAMP) ## /metrics render and HTTP scrape for 10,000 devices
	$(PY) bench/bench_metrics.py

.PHONY: slurm
slurm: ## make sure Slurm and munge exist (the tests start their own one-host cluster)
	@if command -v slurmctld >/dev/null 2>&1 || [ -x /usr/sbin/slurmctld ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing slurm-wlm, munge and slurmrestd with apt-get"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			slurm-wlm munge slurmrestd >/dev/null; \
	else \
		echo "Slurm is missing: run 'sudo apt-get install slurm-wlm munge' (Debian/Ubuntu); the Slurm tests skip until then"; \
	fi

systemd-analyze: ## make sure systemd-analyze exists (scores the hardening of deploy/*.service offline)
	@if command -v systemd-analyze >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing systemd (systemd-analyze) with apt-get"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd >/dev/null; \
	else \
		echo "systemd-analyze is missing: run 'sudo apt-get install systemd', then make test again"; exit 1; \
	fi
.PHONY: bench-gpu
bench-gpu: $(STAMP) slurm ## GPU-node policy on 100/1000 nodes, and node switches on a real one-host Slurm
	$(PY) bench/bench_gpu_queue.py

# --- the operator's console (docs/console.md) -------------------------------------------------
.PHONY: chromium bench-console
chromium: ## make sure Debian's chromium exists (the console tests drive it with Playwright; no browser download)
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing chromium with apt-get"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; \
	else \
		echo "chromium is missing: run 'sudo apt-get install chromium' (Debian/Ubuntu), then make test again"; exit 1; \
	fi

bench-console: $(STAMP) chromium ## the console in Chromium on 10,000 machines: first paint, update lag, bytes, daemon CPU
	$(PY) bench/bench_console.py $(BENCH_CONSOLE_ARGS)

# --- alerts that reach people, reports (docs/alerting.md) ---------------------------------------
.PHONY: alertmanager bench-reports
alertmanager: ## make sure Debian's prometheus-alertmanager exists (the tests start their own)
	@if command -v prometheus-alertmanager >/dev/null 2>&1 || command -v alertmanager >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing prometheus-alertmanager with apt-get"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus-alertmanager >/dev/null; \
	else \
		echo "Alertmanager is missing: run 'sudo apt-get install prometheus-alertmanager', then make test again"; exit 1; \
	fi
bench-reports: $(STAMP) ## report accounting per tick, its write and a 30-day report, 1,000 and 10,000 machines
	$(PY) bench/bench_reports.py

# --- the shipped units under a real systemd (tests/deploy/test_systemd_nspawn.py) ---------------
.PHONY: nspawn-root bench-systemd
NSPAWN_DIR ?= /var/tmp/wattmux-nspawn
nspawn-root: $(STAMP) ## build once a Debian 12 root for systemd-nspawn and a wheelhouse of the pins (cached in NSPAWN_DIR)
	@if [ "$$(id -u)" != 0 ]; then echo "nspawn-root needs root: the systemd unit tests skip"; \
	else PY=$(abspath $(PY)) tests/deploy/nspawn_root.sh $(NSPAWN_DIR); fi

bench-systemd: $(STAMP) nspawn-root ## shipped units under systemd: watchdog restart and daemon death to 100 miners asleep
	$(PY) bench/bench_systemd.py
bench-grid: $(STAMP) ## site power control: settle of 10,000 miners on the simulated meter, base-point tracking, webhook signal to first command
	$(PY) bench/bench_grid.py
	$(PY) bench/bench_mv_store.py
