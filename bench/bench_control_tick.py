"""Benchmark: one control tick (poll every miner over TCP, plan, guard, reconcile) on a simulated site.

Prints one JSON object per line: {"name", "value", "unit"}.
Usage: python bench/bench_control_tick.py [--asics 200 1000] [--ticks 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from drivers.market.static import StaticMarketFeed
from drivers.sim.site import SimSite
from scheduler.config.devices import pools_of
from scheduler.config.loading import parse_config
from scheduler.daemon import Daemon

MARKET = {
    "btc_price_usd": 59_013.80,
    "difficulty": 86_871_474_313_762.0,
    "block_subsidy_btc": 3.125,
    "fees_btc_per_block": 0.0,
    "power_price_usd_per_mwh": 20.0,
}


def emit(name: str, value: float, unit: str) -> None:
    print(json.dumps({"name": name, "value": round(value, 3), "unit": unit}), flush=True)


async def measure(asics: int, ticks: int, directory: Path) -> None:
    data = {
        "site": {"name": "bench", "power_cap_kw": asics * 10.0},
        "guard": {"min_dwell_seconds": 0.0},
        "store": {"path": str(directory / f"bench-{asics}.sqlite")},
        "pools": [{"name": "main", "url": "stratum+tcp://main.pool.invalid:3333", "user": "w"}],
        "device_ranges": [
            {
                "id_prefix": "m",
                "model": "S21",
                "first_address": "127.88.0.1",
                "count": asics,
                "pools": ["main"],
                "options": {"port": 4028},
            }
        ],
    }
    config = parse_config(data, "<bench>", environ={})
    daemon = Daemon(config, feeds=[StaticMarketFeed(MARKET)])
    stop = asyncio.Event()
    async with SimSite(config.all_devices(), list(pools_of(config).values()), port=4028):
        task = asyncio.create_task(daemon.run(stop, serve_api=False))
        await daemon.ready.wait()
        loop = daemon.loop
        assert loop is not None
        durations = []
        for _ in range(ticks):
            started = time.perf_counter()
            await loop.tick()
            durations.append((time.perf_counter() - started) * 1000)
        stop.set()
        await task
    durations.sort()
    emit(f"control_tick_{asics}_asics_median_ms", statistics.median(durations), "ms")
    emit(f"control_tick_{asics}_asics_p95_ms", durations[int(len(durations) * 0.95) - 1], "ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--asics", type=int, nargs="+", default=[200, 1000])
    parser.add_argument("--ticks", type=int, default=20)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    with tempfile.TemporaryDirectory() as directory:
        for asics in args.asics:
            asyncio.run(measure(asics, args.ticks, Path(directory)))


if __name__ == "__main__":
    main()
