"""Benchmark: poll and curtail 10,000 simulated miners over real TCP; daemon memory per device.

The simulated site runs in its own process (``python -m drivers.sim``), so the
figures are the daemon's work, not the simulator's.  Prints one JSON object per
line: {"name", "value", "unit"}.

    poll_10k_seconds       one full poll of every miner (the daemon's own collect():
                           summary+pools+stats+config+power joined in one connection each)
    curtail_10k_seconds    from a power-price reading landing in FleetState to the last
                           miner acknowledging sleep (intent written, logon, curtail
                           accepted: two connections per miner)
    curtail_10k_confirmed_seconds
                           ... to the last miner's sleep being read back and every intent
                           closed (logoff, then config+pools: two more connections; with
                           --session-reuse-seconds above 0 the session is kept instead)
    rss_bytes_per_device   resident memory growth of this process per device, from before
                           the configuration is parsed to after the first poll

Usage: python bench/bench_asic.py [--miners 10000] [--concurrency 250] [--polls 3]
                                   [--session-reuse-seconds 0]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from drivers.limits import raise_open_files_limit
from scheduler.config.loading import parse_config
from scheduler.core.model import OutcomeStatus, Reading, WorkloadKind
from scheduler.daemon import Daemon

FIRST_ADDRESS = "127.30.0.1"  # 10,000 miners: 127.30.0.1 .. 127.30.39.16
POOL_URL = "stratum+tcp://main.pool.invalid:3333"
MARKET = {
    "btc_price_usd": 59_013.80,
    "difficulty": 86_871_474_313_762.0,
    "block_subsidy_btc": 3.125,
    "fees_btc_per_block": 0.0,
    "power_price_usd_per_mwh": 20.0,
}
SPIKE_USD_PER_MWH = 5000.0


def emit(name: str, value: float, unit: str) -> None:
    print(json.dumps({"name": name, "value": round(value, 3), "unit": unit}), flush=True)


def cpu_seconds_of(pid: int) -> float:
    """User + system CPU seconds of another process (the simulator), from /proc."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Feed:
    """A market feed whose values the benchmark sets."""

    name = "bench"

    def __init__(self) -> None:
        self.values = dict(MARKET)

    async def fetch(self) -> dict[str, Reading]:
        now = time.monotonic()
        return {key: Reading(value, now, self.name) for key, value in self.values.items()}


async def start_sim(miners: int) -> asyncio.subprocess.Process:
    sim = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "drivers.sim", "--first-address", FIRST_ADDRESS,
        "--count", str(miners), "--port", "4028", "--pool-url", POOL_URL,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        cwd=str(Path(sys.path[0])),
    )  # fmt: skip
    assert sim.stdout is not None
    line = await asyncio.wait_for(sim.stdout.readline(), 600)
    if not line or json.loads(line).get("ready") != miners:
        raise RuntimeError(f"simulator did not start: {line!r}")
    return sim


async def measure(args: argparse.Namespace, directory: Path) -> None:
    sim = await start_sim(args.miners)
    try:
        gc.collect()
        rss_before = rss_bytes()
        config = parse_config(
            {
                "site": {"name": "bench", "power_cap_kw": args.miners * 10.0},
                "control": {
                    "tick_seconds": 3600,
                    "poll_concurrency": args.concurrency,
                    "command_concurrency": args.concurrency,
                },
                "guard": {"min_dwell_seconds": 0.0},
                "store": {"path": str(directory / "bench.sqlite")},
                "pools": [{"name": "main", "url": POOL_URL, "user": "w"}],
                "device_ranges": [
                    {
                        "id_prefix": "m",
                        "model": "S21",
                        "first_address": FIRST_ADDRESS,
                        "count": args.miners,
                        "pools": ["main"],
                        "options": {
                            "port": 4028,
                            "timeout_seconds": 10.0,
                            "session_reuse_seconds": args.session_reuse_seconds,
                        },
                    }
                ],
            },
            "<bench>",
            environ={},
        )
        feed = Feed()
        daemon = Daemon(config, feeds=[feed])
        stop = asyncio.Event()
        task = asyncio.create_task(daemon.run(stop, serve_api=False))
        await daemon.ready.wait()  # the first tick has polled every miner
        loop = daemon.loop
        assert loop is not None
        gc.collect()
        rss_after = rss_bytes()
        reachable = sum(s.reachable for s in daemon.state.status.values())
        if reachable != args.miners:
            raise RuntimeError(f"only {reachable} of {args.miners} miners answered the poll")
        polls: list[float] = []
        poll_cpu: list[float] = []
        poll_sim_cpu: list[float] = []
        for _ in range(args.polls):
            started, cpu_started = time.perf_counter(), time.process_time()
            sim_started = cpu_seconds_of(sim.pid)
            await loop.poll_devices()
            polls.append(time.perf_counter() - started)
            poll_cpu.append(time.process_time() - cpu_started)
            poll_sim_cpu.append(cpu_seconds_of(sim.pid) - sim_started)
        profiler = cProfile.Profile() if args.profile_curtail else None
        started, cpu_started = time.perf_counter(), time.process_time()
        started_on_daemon_clock = daemon.clock()
        sim_started = cpu_seconds_of(sim.pid)
        if profiler is not None:
            profiler.enable()
        daemon.state.observe_market(
            {"power_price_usd_per_mwh": Reading(SPIKE_USD_PER_MWH, time.monotonic(), "bench")}
        )
        loop.react()
        await loop.reconciler.wait_idle()
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(args.profile_curtail)
        confirmed_seconds = time.perf_counter() - started
        acknowledged_at = loop.reconciler.last_acknowledged_at
        if acknowledged_at is None:
            raise RuntimeError("no miner acknowledged the curtail")
        acknowledged_seconds = acknowledged_at - started_on_daemon_clock
        curtail_cpu_seconds = time.process_time() - cpu_started
        curtail_sim_cpu_seconds = cpu_seconds_of(sim.pid) - sim_started
        outcomes = loop.reconciler.last_outcomes.values()
        confirmed = sum(
            o.status is OutcomeStatus.CONFIRMED and o.requested.kind is WorkloadKind.SLEEP
            for o in outcomes
        )
        stop.set()
        await task
    finally:
        if sim.returncode is None:
            sim.terminate()
        await sim.wait()
    size = f"{args.miners // 1000}k" if args.miners >= 1000 else str(args.miners)
    emit(f"poll_{size}_seconds", statistics.median(polls), "s")
    emit(f"poll_{size}_daemon_cpu_seconds", statistics.median(poll_cpu), "s")
    emit(f"poll_{size}_simulator_cpu_seconds", statistics.median(poll_sim_cpu), "s")
    emit(f"curtail_{size}_seconds", acknowledged_seconds, "s")
    emit(f"curtail_{size}_confirmed_seconds", confirmed_seconds, "s")
    emit(f"curtail_{size}_daemon_cpu_seconds", curtail_cpu_seconds, "s")
    emit(f"curtail_{size}_simulator_cpu_seconds", curtail_sim_cpu_seconds, "s")
    emit(f"curtail_{size}_confirmed", confirmed, "miners")
    emit("rss_bytes_per_device", (rss_after - rss_before) / args.miners, "bytes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--miners", type=int, default=10_000)
    parser.add_argument(
        "--concurrency", type=int, default=250,
        help="poll and command concurrency (more sockets at once costs memory, not speed)",
    )  # fmt: skip
    parser.add_argument("--polls", type=int, default=3)
    parser.add_argument(
        "--session-reuse-seconds", type=float, default=0.0,
        help=(
            "LuxOS session reuse, below the firmware's 60 s idle timeout "
            "(default 0, as in the shipped config: logon and logoff around every curtail)"
        ),
    )  # fmt: skip
    parser.add_argument(
        "--profile-curtail", metavar="FILE",
        help="write a cProfile of the curtail phase to FILE (its figures are then not comparable)",
    )  # fmt: skip
    args = parser.parse_args()
    raise_open_files_limit(args.concurrency * 2 + 1024)
    with tempfile.TemporaryDirectory() as directory:
        coroutine = measure(args, Path(directory))
        try:
            import uvloop
        except ImportError:
            asyncio.run(coroutine)
        else:
            uvloop.run(coroutine)


if __name__ == "__main__":
    main()
