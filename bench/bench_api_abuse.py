"""Benchmark: polls of simulated miners while 2,000 idle sockets hold the API.

The daemon runs here with its API on loopback and RLIMIT_NOFILE lowered (soft
and hard) to --open-files, so that idle sockets could exhaust it; the miners
(``python -m drivers.sim``) and the attacker (idle sockets from 100 loopback
addresses, reopened as soon as the API closes one) run in their own processes.
Goal of ``api_fd_starvation_polls_failed``: 0.  ``--unguarded`` lifts the API's
connection caps and deadlines to show what happens without them.

Prints one JSON object per line: {"name", "value", "unit"}.
Usage: python bench/bench_api_abuse.py [--miners 50] [--sockets 2000] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scheduler.api.connections import ConnectionLimits
from scheduler.config.loading import parse_config
from scheduler.daemon import Daemon

FIRST_ADDRESS = "127.31.0.1"
POOL_URL = "stratum+tcp://main.pool.invalid:3333"

ATTACKER = r"""
import asyncio, sys
port, count, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
held = 0
async def hold(i):
    global held
    source = f"127.32.0.{2 + i % 100}"
    end = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < end:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
        except OSError:
            await asyncio.sleep(0.05)
            continue
        held += 1
        try:
            await asyncio.wait_for(reader.read(), end - asyncio.get_running_loop().time())
        except (asyncio.TimeoutError, OSError):
            pass
        held -= 1
        writer.close()
async def main():
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)  # "go"
    await asyncio.gather(*(hold(i) for i in range(count)))
asyncio.run(main())
"""


def emit(name: str, value: float, unit: str) -> None:
    print(json.dumps({"name": name, "value": round(value, 3), "unit": unit}), flush=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def failed_polls(daemon: Daemon) -> float:
    total = 0.0
    for metric in daemon.metrics.poll_errors.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                total += sample.value
    return total


async def measure(args: argparse.Namespace, directory: Path) -> None:
    sim = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "drivers.sim", "--first-address", FIRST_ADDRESS,
        "--count", str(args.miners), "--port", "4028", "--pool-url", POOL_URL,
        stdout=asyncio.subprocess.PIPE, cwd=str(Path(sys.path[0])),
    )  # fmt: skip
    assert sim.stdout is not None
    line = await asyncio.wait_for(sim.stdout.readline(), 120)
    if not line or json.loads(line).get("ready") != args.miners:
        raise RuntimeError(f"simulator did not start: {line!r}")
    port = free_port()
    attacker = await asyncio.create_subprocess_exec(
        sys.executable, "-c", ATTACKER, str(port), str(args.sockets), str(args.seconds + 5),
        stdin=asyncio.subprocess.PIPE,
    )  # fmt: skip
    # children are started: from here on this process has only --open-files descriptors
    resource.setrlimit(resource.RLIMIT_NOFILE, (args.open_files, args.open_files))
    config = parse_config(
        {
            "site": {"name": "bench", "power_cap_kw": args.miners * 10.0},
            "control": {"tick_seconds": 0.5, "poll_concurrency": 64, "command_concurrency": 32},
            "store": {"path": str(directory / "bench.sqlite")},
            "api": {"listen": f"127.0.0.1:{port}"},
            "pools": [{"name": "main", "url": POOL_URL, "user": "w"}],
            "device_ranges": [
                {
                    "id_prefix": "m",
                    "model": "S21",
                    "first_address": FIRST_ADDRESS,
                    "count": args.miners,
                    "pools": ["main"],
                    "options": {"port": 4028, "timeout_seconds": 3.0},
                }
            ],
        },
        "<bench>",
        environ={},
    )
    daemon = Daemon(config, feeds=[])
    if args.unguarded:
        unbounded = ConnectionLimits(
            max_connections=10**6,
            max_per_client=10**6,
            header_timeout_seconds=3600,
            body_timeout_seconds=3600,
        )
        daemon.connection_limits = lambda: unbounded  # type: ignore[method-assign]
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    try:
        await asyncio.wait_for(daemon.ready.wait(), 60)
        await asyncio.sleep(1.0)
        errors_before = failed_polls(daemon)
        ticks_before = daemon.metrics.ticks._value.get()
        assert attacker.stdin is not None
        attacker.stdin.write(b"go\n")
        await attacker.stdin.drain()
        started = time.monotonic()
        await asyncio.sleep(args.seconds)
        failed = failed_polls(daemon) - errors_before
        ticks = daemon.metrics.ticks._value.get() - ticks_before
        elapsed = time.monotonic() - started
        emit("api_fd_starvation_polls_failed", failed, "polls")
        emit("api_fd_starvation_polls", ticks * args.miners, "polls")
        emit("api_fd_starvation_ticks_per_s", ticks / elapsed, "ticks/s")
        emit("api_fd_starvation_open_files_limit", args.open_files, "fds")
    finally:
        if attacker.returncode is None:
            attacker.kill()
            await attacker.wait()
        stop.set()
        await asyncio.wait_for(task, 30)
        sim.kill()
        await sim.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--miners", type=int, default=50)
    parser.add_argument("--sockets", type=int, default=2000, help="idle sockets at the API")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long the attack runs")
    parser.add_argument("--open-files", type=int, default=1024, help="RLIMIT_NOFILE here")
    parser.add_argument("--unguarded", action="store_true", help="no API connection bounds")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="wattmux-bench-api-abuse-") as directory:
        asyncio.run(measure(args, Path(directory)))


if __name__ == "__main__":
    main()
