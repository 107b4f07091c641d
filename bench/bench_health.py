"""Benchmark: deep health kept per device, and the cost of parsing it.

Builds the health of 10,000 miners from bmminer-style STATS rows (3 boards, 4 fans, as
the stock, LuxOS and VNish firmware report them) with the drivers' parser and prints
one JSON object per line: {"name", "value", "unit"}.

    health_bytes_per_device   memory the kept Health objects hold, per device (tracemalloc;
                              the firmware text and the empty error tuple are shared)
    health_parse_us           parsing one device's STATS into Health (median of 5 runs)
    render_10k_ms             the per-device metric families of 10,000 devices without health,
    render_10k_health_ms      and with it (8 more series per device), median of 5 renders

Usage: python bench/bench_health.py [--devices 10000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from drivers.asic.health_parse import cgminer_health
from scheduler.core.model import Device, DeviceKind, Health, Sample, Workload
from scheduler.core.state import FleetState
from scheduler.observability.exposition import DeviceExposition

SUMMARY = {
    "Elapsed": 86400,
    "Accepted": 40000,
    "Rejected": 12,
    "Difficulty Accepted": 1.3e9,
    "Difficulty Rejected": 2.5e6,
}


def stats(index: int) -> list[dict[str, Any]]:
    """STATS rows of one miner, values varied by index (as a fleet's would be)."""
    detail: dict[str, Any] = {"Elapsed": 86400 + index, "fan_num": 4, "miner_count": 3}
    for fan in range(1, 5):
        detail[f"fan{fan}"] = 5000 + index % 97 + 30 * fan
    for board in range(1, 4):
        detail[f"temp_pcb{board}"] = f"{50 + index % 5}-45-51-52"
        detail[f"temp_chip{board}"] = f"{65 + index % 7}-60-66-67"
        detail[f"chain_rate{board}"] = f"{36000 + index % 1000}.25"
        detail[f"chain_acn{board}"] = 126 - (index % 50 == 0)
    return [{"BMMiner": "1.0.0", "Miner": "49.0.1.3", "Type": "Antminer S19j Pro"}, detail]


def emit(name: str, value: float, unit: str) -> None:
    print(json.dumps({"name": name, "value": round(value, 3), "unit": unit}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000)
    args = parser.parse_args()
    rows = [stats(i) for i in range(args.devices)]
    cgminer_health(SUMMARY, rows[0])  # interned firmware text, struct caches
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    kept = [cgminer_health(SUMMARY, r) for r in rows]
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    emit("health_bytes_per_device", (after - before) / len(kept), "bytes")
    runs = []
    for _ in range(5):
        started = time.perf_counter()
        for r in rows:
            cgminer_health(SUMMARY, r)
        runs.append((time.perf_counter() - started) / len(rows) * 1e6)
    emit("health_parse_us", statistics.median(runs), "us")
    for name, healths in (("render_10k_ms", None), ("render_10k_health_ms", kept)):
        emit(name, render_ms(healths, args.devices), "ms")


def render_ms(healths: list[Health] | None, count: int) -> float:
    """Median time of DeviceExposition.render over ``count`` S19j Pro devices."""
    devices = [
        Device(f"m{i:05d}", DeviceKind.ASIC, "S19j Pro", "cgminer", "127.0.0.1", 4028, 104e12, 3068)
        for i in range(count)
    ]
    state = FleetState(devices)
    workload = Workload.mine("main")
    for i, device in enumerate(devices):
        health = None if healths is None else healths[i]
        state.observe(Sample(device.id, 100.0, workload, 3000.0, 1e14, 70.0, health=health))
    exposition = DeviceExposition(state)
    exposition.render(101.0)
    runs = []
    for _ in range(5):
        started = time.perf_counter()
        exposition.render(101.0)
        runs.append((time.perf_counter() - started) * 1000)
    return statistics.median(runs)


if __name__ == "__main__":
    main()
