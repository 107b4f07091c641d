"""Benchmark: the M&V history in the store (scheduler.control.mvstore).

Prints one JSON object per line: {"name", "value", "unit"}.
Usage: python bench/bench_mv_store.py [--days 45] [--readings 100000]

``mv_store_on_reading_us``: what each site meter reading costs (added to its
minute's sum in memory, no I/O); ``mv_store_flush_ms``: median time of the
once-a-minute write (one minute row and one changed event);
``mv_store_days_of_history_30d_ms``: median time of a 30-day days-of-history
M&V read entirely from the store holding ``--days`` of minutes;
``mv_store_insert_{days}d_minutes_s``: writing that many days of minutes at once.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from drivers.meter.base import MeterReading
from scheduler.config.grid import MeterConfig, SetpointConfig
from scheduler.control.grid import GridControl
from scheduler.control.mvstore import MeterRecorder, event_mv
from scheduler.core.state import FleetState
from scheduler.store.meterlog import add_meter_minutes
from scheduler.store.sqlite import Database

T0 = datetime(2026, 7, 4, 18, 0, tzinfo=UTC)


def emit(name: str, value: float, unit: str) -> None:
    print(json.dumps({"name": name, "value": round(value, 4), "unit": unit}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=45)
    parser.add_argument("--readings", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        store = Database.open(Path(directory) / "bench.sqlite")
        wall = [T0]
        grid = GridControl(
            MeterConfig(source="mqtt"),
            SetpointConfig(mv_baseline_days=30),
            FleetState([]),
            wall_clock=lambda: wall[0],
        )
        recorder = MeterRecorder(store, grid, retention_days=0)
        rows = [(T0 - timedelta(minutes=m), 6e7, 60) for m in range(1, args.days * 1440 + 1)]
        started = time.perf_counter()
        add_meter_minutes(store, rows)
        emit(f"mv_store_insert_{args.days}d_minutes_s", time.perf_counter() - started, "s")
        reading = MeterReading(1e6, 0.0)
        started = time.perf_counter()
        for _ in range(args.readings):
            recorder.on_reading(reading)
        emit("mv_store_on_reading_us", (time.perf_counter() - started) / args.readings * 1e6, "us")
        grid.setpoint.set_target(500.0, "operator", "operator:bench")
        flushes = []
        for minute in range(20):
            wall[0] = T0 + timedelta(minutes=minute)
            recorder.on_reading(reading)
            started = time.perf_counter()
            recorder.flush()
            flushes.append(time.perf_counter() - started)
        emit("mv_store_flush_ms", statistics.median(flushes) * 1e3, "ms")
        grid.setpoint.clear()
        grid.history.samples.clear()  # as after a restart: everything from the store
        reads = []
        for _ in range(20):
            started = time.perf_counter()
            mv = event_mv(grid, (), "operator:bench", "days_of_history", wall[0])
            reads.append(time.perf_counter() - started)
            assert mv is not None and mv.baseline_kw is not None
        emit("mv_store_days_of_history_30d_ms", statistics.median(reads) * 1e3, "ms")
        store.close()


if __name__ == "__main__":
    main()
