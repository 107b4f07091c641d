"""Benchmark: daemon memory with a miner that streams forever beside 20 good ones.

    hostile_rss_growth_pct_10min  RSS growth of the daemon from the end of a warm-up (a sixth
                                  of the run, at least 10 s) to the end of the run, in percent,
                                  polling (tick 0.5 s) 20 good simulated miners and one that
                                  answers every poll with an endless stream; goal <= 10 % over
                                  10 minutes (--seconds 600; the default run is 60 s)
    hostile_rss_mb_end            the daemon's RSS at the end

Usage: python bench/bench_hostile_rss.py [--seconds 60] [--tick-seconds 0.5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_hostile import GOOD_FIRST, HOSTILE_FIRST, MARKET, site_config
from bench.hostile_server import start_good, start_hostile, stop_process
from drivers.market.static import StaticMarketFeed
from scheduler.daemon import Daemon


def emit(name: str, value: float, unit: str) -> None:
    print(json.dumps({"name": name, "value": round(value, 3), "unit": unit}), flush=True)


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def measure(args: argparse.Namespace, directory: Path) -> None:
    good = await start_good(GOOD_FIRST, 20)
    endless = await start_hostile(HOSTILE_FIRST, 1, kinds="endless")
    try:
        config = site_config(directory, 20, 1, args.tick_seconds)
        daemon = Daemon(config, feeds=[StaticMarketFeed(MARKET)])
        stop = asyncio.Event()
        task = asyncio.create_task(daemon.run(stop, serve_api=False))
        await daemon.ready.wait()
        warm_up = max(10.0, args.seconds / 6)
        await asyncio.sleep(warm_up)
        assert daemon.loop is not None
        ticks, started, rss_start = daemon.loop.ticks, time.monotonic(), rss_bytes()
        await asyncio.sleep(max(0.0, args.seconds - warm_up))
        rss_end = rss_bytes()
        ticks = daemon.loop.ticks - ticks
        elapsed = time.monotonic() - started
        stop.set()
        await task
    finally:
        await stop_process(endless)
        await stop_process(good)
    emit("hostile_rss_growth_pct_10min", (rss_end - rss_start) / rss_start * 100, "%")
    emit("hostile_rss_mb_end", rss_end / 2**20, "MiB")
    emit("hostile_rss_measured_seconds", elapsed, "s")
    emit("hostile_rss_ticks", ticks, "ticks")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=60.0, help="600 for the 10-minute figure")
    parser.add_argument("--tick-seconds", type=float, default=0.5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        asyncio.run(measure(args, Path(directory)))


if __name__ == "__main__":
    main()
