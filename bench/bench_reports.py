"""Benchmark: the report accounting a tick adds, and its once-a-minute write, for 1,000 and 10,000 machines.

Prints one JSON object per line: {"name", "value", "unit"}.
Usage: python bench/bench_reports.py [--devices 1000 10000] [--ticks 200]

``reports_accounting_per_tick_{n}_devices_ms``: mean time the accounting adds
to a 1 s tick (``Accountant.__call__``, flushes apart: the state is sampled
every 10 s, so most ticks cost one subtraction);
``reports_accounting_sample_{n}_devices_ms``: median time of one sampling
(``..._cpu_ms`` in process CPU time); ``reports_flush_{n}_devices_ms``: median
time of the write of the sums to SQLite (once a minute);
``reports_read_{n}_devices_30_days_ms``: GET /v1/reports' work for 30 days
(site totals per day and the first page of 10,000 machine-day rows).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_metrics import build_state
from scheduler.control.accounting import Accountant, report_rows, site_days
from scheduler.store.operator import ControlStore


def emit(name: str, value: float, unit: str) -> None:
    print(json.dumps({"name": name, "value": round(value, 3), "unit": unit}), flush=True)


def measure(count: int, ticks: int, directory: Path) -> None:
    state = build_state(count)
    store = ControlStore.open(directory / f"reports-{count}.sqlite")
    clock = [0.0]
    wall = [datetime(2026, 3, 1, tzinfo=UTC)]
    held = frozenset(f"s21-{i:05d}" for i in range(0, count, 97))
    accountant = Accountant(
        state,
        store,
        clock=lambda: clock[0],
        wall_clock=lambda: wall[0],
        maintenance=lambda _wall: held,
        flush_seconds=1e12,  # flushes are measured apart
    )
    accountant(0)
    per_tick = []
    for _ in range(ticks):
        clock[0] += 1.0
        started = time.perf_counter()
        accountant(1)
        per_tick.append((time.perf_counter() - started) * 1000)
    emit(f"reports_accounting_per_tick_{count}_devices_ms", statistics.mean(per_tick), "ms")
    wall_ms, cpu_ms = [], []
    for _ in range(max(ticks // 10, 5)):
        started, cpu = time.perf_counter(), time.process_time()
        accountant.add(10.0, wall[0])
        wall_ms.append((time.perf_counter() - started) * 1000)
        cpu_ms.append((time.process_time() - cpu) * 1000)
    emit(f"reports_accounting_sample_{count}_devices_ms", statistics.median(wall_ms), "ms")
    emit(f"reports_accounting_sample_{count}_devices_cpu_ms", statistics.median(cpu_ms), "ms")
    flushes = []
    for day in range(30):
        wall[0] = datetime(2026, 3, 1, tzinfo=UTC) + timedelta(days=day)
        accountant.day = wall[0].date()
        clock[0] += 1.0
        accountant.add(1.0, wall[0])
        started = time.perf_counter()
        accountant.flush()
        flushes.append((time.perf_counter() - started) * 1000)
    emit(f"reports_flush_{count}_devices_ms", statistics.median(flushes), "ms")
    started = time.perf_counter()
    days = site_days(accountant, date(2026, 3, 1), date(2026, 3, 30))
    rows = report_rows(accountant, date(2026, 3, 1), date(2026, 3, 30), limit=10_000)
    emit(f"reports_read_{count}_devices_30_days_ms", (time.perf_counter() - started) * 1000, "ms")
    assert len(days) == 30 and days[0]["machines"] == count and len(rows) == min(10_000, 30 * count)
    store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--ticks", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="wattmux-bench-reports-") as directory:
        for count in args.devices:
            measure(count, args.ticks, Path(directory))


if __name__ == "__main__":
    main()
