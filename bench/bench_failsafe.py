"""Benchmark: the failsafe puts 10,000 simulated miners to sleep with 1 % of them hostile.

    failsafe_seconds_10k        from the start of the failsafe (``curtail_all``: every
                                device to sleep through the drivers, each read back until
                                confirmed) to the last of the 10,000 good simulated miners
                                (their own process) confirmed asleep, with 100 hostile ones
                                beside them (every behaviour of drivers/sim/hostile.py,
                                cycled; their own process), over real TCP, shipped
                                per-command timeouts; goal <= 10 s
    failsafe_report_seconds_10k from the start to the failsafe's report (the hostile miners
                                given up after their last attempt)
    failsafe_confirmed_10k      good miners confirmed asleep (goal: all of them)
    failsafe_unreached_hostile  hostile miners reported as not reached

The suffix follows --miners (``_1k`` for --miners 1000).

Usage: python bench/bench_failsafe.py [--miners 10000] [--concurrency 250]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.hostile_server import POOL_URL, start_good, start_hostile, stop_process
from drivers.limits import raise_open_files_limit
from scheduler.config.loading import parse_config
from scheduler.control.failsafe import curtail_all
from scheduler.core.model import Outcome, OutcomeStatus

GOOD_FIRST = "127.30.0.1"  # 10,000 miners: 127.30.0.1 .. 127.30.39.16
HOSTILE_FIRST = "127.34.0.1"


def emit(name: str, value: float, unit: str) -> None:
    print(json.dumps({"name": name, "value": round(value, 3), "unit": unit}), flush=True)


async def measure(args: argparse.Namespace, directory: Path) -> None:
    hostile_count = max(1, args.miners // 100)
    good = await start_good(GOOD_FIRST, args.miners)
    hostile = await start_hostile(HOSTILE_FIRST, hostile_count)
    try:
        config = parse_config(
            {
                "site": {"name": "bench", "power_cap_kw": args.miners * 10.0},
                "control": {"command_concurrency": args.concurrency},
                "store": {"path": str(directory / "bench.sqlite")},
                "pools": [{"name": "main", "url": POOL_URL, "user": "w"}],
                "device_ranges": [
                    {
                        "id_prefix": prefix,
                        "model": "S21",
                        "first_address": first,
                        "count": count,
                        "pools": ["main"],
                        "options": {"port": 4028},
                    }
                    for prefix, first, count in (
                        ("m", GOOD_FIRST, args.miners),
                        ("bad", HOSTILE_FIRST, hostile_count),
                    )
                ],
            },
            "<bench>",
            environ={},
        )
        last_good = [0.0]

        def seen(outcome: Outcome) -> None:
            if outcome.device_id.startswith("m") and outcome.status is OutcomeStatus.CONFIRMED:
                last_good[0] = time.perf_counter()

        started = time.perf_counter()
        report = await curtail_all(config, on_outcome=seen)
        seconds = time.perf_counter() - started
    finally:
        await stop_process(hostile)
        await stop_process(good)
    confirmed = sum(
        1
        for o in report.outcomes
        if o.device_id.startswith("m") and o.status is OutcomeStatus.CONFIRMED
    )
    unreached = sum(1 for o in report.failed if o.device_id.startswith("bad"))
    size = f"{args.miners // 1000}k" if args.miners >= 1000 else str(args.miners)
    emit(f"failsafe_seconds_{size}", last_good[0] - started, "s")
    emit(f"failsafe_report_seconds_{size}", seconds, "s")
    emit(f"failsafe_confirmed_{size}", confirmed, "miners")
    emit("failsafe_unreached_hostile", unreached, "miners")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--miners", type=int, default=10_000, help="good miners (1 %% more hostile)"
    )
    parser.add_argument(
        "--concurrency", type=int, default=250, help="[control] command_concurrency"
    )
    args = parser.parse_args()
    raise_open_files_limit(args.concurrency * 2 + 1024)
    with tempfile.TemporaryDirectory() as directory:
        asyncio.run(measure(args, Path(directory)))


if __name__ == "__main__":
    main()
