"""Benchmark: the control tick of 20 good miners, alone and with a dozen misbehaving ones beside them.

    hostile_tick_p95_ms          p95 of the control tick (poll, plan, guard, reconcile) of 20
                                 good simulated miners with 12 hostile ones beside them (a
                                 reply 10,000 deep, a 5,000-digit integer, an endless stream,
                                 64 MiB, one byte a second, garbage, truncated, reset, never
                                 answering, wrong types, NaN, negative), shipped settings
                                 (3 s per-command timeout, 2 s poll deadline); goal <= 2 x:
    hostile_tick_p95_ms_without  the same with the 20 good miners alone
    hostile_tick_p95_ratio       the first over the second

Both run over real TCP, the miners in processes of their own.

Usage: python bench/bench_hostile.py [--ticks 100] [--tick-seconds 0.2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.hostile_server import POOL_URL, start_good, start_hostile, stop_process
from drivers.market.static import StaticMarketFeed
from scheduler.config.loading import parse_config
from scheduler.config.schema import WattmuxConfig
from scheduler.core.model import Plan
from scheduler.daemon import Daemon

GOOD_FIRST = "127.33.0.1"
HOSTILE_FIRST = "127.33.1.1"
MARKET = {
    "btc_price_usd": 59_013.80,
    "difficulty": 86_871_474_313_762.0,
    "block_subsidy_btc": 3.125,
    "fees_btc_per_block": 0.0,
    "power_price_usd_per_mwh": 20.0,
}


def emit(name: str, value: float, unit: str) -> None:
    print(json.dumps({"name": name, "value": round(value, 3), "unit": unit}), flush=True)


def site_config(
    directory: Path,
    good: int,
    hostile: int,
    tick_seconds: float,
    extra: dict[str, Any] | None = None,
) -> WattmuxConfig:
    ranges = [{"id_prefix": "good", "model": "S21", "first_address": GOOD_FIRST, "count": good}]
    if hostile:
        ranges.append(
            {"id_prefix": "bad", "model": "S21", "first_address": HOSTILE_FIRST, "count": hostile}
        )
    return parse_config(
        {
            "site": {"name": "bench", "power_cap_kw": 100_000.0},
            "control": {"tick_seconds": tick_seconds, **(extra or {})},
            "guard": {"min_dwell_seconds": 0.0},
            "store": {"path": str(directory / f"bench-{hostile}.sqlite")},
            "pools": [{"name": "main", "url": POOL_URL, "user": "w"}],
            "device_ranges": [{**r, "pools": ["main"], "options": {"port": 4028}} for r in ranges],
        },
        "<bench>",
        environ={},
    )


async def tick_times(config: WattmuxConfig, ticks: int) -> list[float]:
    """Run the daemon; the durations of ``ticks`` control ticks after the first (seconds)."""
    daemon = Daemon(config, feeds=[StaticMarketFeed(MARKET)])
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop, serve_api=False))
    await daemon.ready.wait()
    loop = daemon.loop
    assert loop is not None
    durations: list[float] = []
    done = asyncio.Event()
    tick = loop.tick

    async def timed() -> Plan:
        started = time.perf_counter()
        plan = await tick()
        durations.append(time.perf_counter() - started)
        if len(durations) >= ticks:
            done.set()
        return plan

    loop.tick = timed  # type: ignore[method-assign]
    await done.wait()
    stop.set()
    await task
    return durations


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1]


async def measure(args: argparse.Namespace, directory: Path) -> None:
    good = await start_good(GOOD_FIRST, 20)
    try:
        alone = await tick_times(site_config(directory, 20, 0, args.tick_seconds), args.ticks)
        hostile = await start_hostile(HOSTILE_FIRST, 12)
        try:
            config = site_config(directory, 20, 12, args.tick_seconds)
            beside = await tick_times(config, args.ticks)
        finally:
            await stop_process(hostile)
    finally:
        await stop_process(good)
    emit("hostile_tick_p95_ms", p95(beside) * 1000, "ms")
    emit("hostile_tick_p95_ms_without", p95(alone) * 1000, "ms")
    emit("hostile_tick_p95_ratio", p95(beside) / p95(alone), "x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ticks", type=int, default=100, help="ticks measured per run")
    parser.add_argument("--tick-seconds", type=float, default=0.2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        asyncio.run(measure(args, Path(directory)))


if __name__ == "__main__":
    main()
