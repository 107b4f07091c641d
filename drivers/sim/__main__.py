"""Serve a simulated site from the command line: ``python -m drivers.sim --count 10000 ...``.

Runs in its own process so that benchmarks measure the daemon, not the
simulator.  Prints one JSON line ``{"ready": N, "first_address": ..., "port": ...}``
once every miner listens, then serves until SIGTERM/SIGINT or stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Coroutine
from typing import Any

from drivers.limits import raise_open_files_limit
from drivers.sim.site import SimSite, range_devices, simulated_firmwares
from scheduler.core.model import Device, Pool


def site_devices(args: argparse.Namespace) -> list[Device]:
    """The devices of a simulated range, ids sim-00001.., consecutive loopback addresses."""
    return range_devices(
        args.first_address,
        args.count,
        args.port,
        model=args.model,
        hashrate_ths=args.hashrate_ths,
        power_w=args.power_w,
        sleep_power_w=args.sleep_power_w,
        driver=args.firmware,
    )


async def serve(args: argparse.Namespace) -> None:
    """Start the site, announce it, serve until told to stop."""
    pool = Pool("main", args.pool_url, "sim.worker")
    devices = site_devices(args)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    stdin = sys.stdin.fileno()
    # A parent holding our stdin pipe stops us by closing it; stdin that cannot be
    # watched (a file, /dev/null) leaves the signals only.
    with contextlib.suppress(OSError):
        loop.add_reader(stdin, lambda: stop.set() if not os.read(stdin, 1) else None)
    async with SimSite(
        devices,
        [pool],
        port=args.port,
        ramp_seconds=args.ramp_seconds,
        braiins_grpc_port=args.grpc_port,
    ) as site:
        ready = {"ready": len(devices), "first_address": args.first_address, "port": args.port}
        if site.companions:
            ready["grpc_port"] = args.grpc_port
        print(json.dumps(ready), flush=True)
        await stop.wait()


def run(coroutine: Coroutine[Any, Any, None]) -> None:
    """Run on uvloop where installed."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(coroutine)
    else:
        uvloop.run(coroutine)


def main() -> None:
    """Parse arguments and serve."""
    parser = argparse.ArgumentParser(prog="python -m drivers.sim", description=__doc__)
    parser.add_argument("--first-address", default="127.30.0.1", help="first loopback address")
    parser.add_argument("--count", type=int, default=100, help="number of miners")
    parser.add_argument("--port", type=int, default=4028, help="API port of every miner")
    parser.add_argument("--model", default="S21", help="model name the miners report")
    parser.add_argument("--hashrate-ths", type=float, default=200.0, help="nominal TH/s")
    parser.add_argument("--power-w", type=float, default=3500.0, help="nominal power in W")
    parser.add_argument("--sleep-power-w", type=float, default=15.0, help="power asleep in W")
    parser.add_argument(
        "--firmware",
        choices=simulated_firmwares(),
        default="cgminer",
        help="personality: cgminer (with LuxOS commands), luxos (LuxOS's replies), antminer"
        " (stock bmminer; web CGI on --grpc-port), vnish (web API on --grpc-port), whatsminer"
        " (API v2; v3 on free ports) or braiins (cgminer reads plus the gRPC API on --grpc-port,"
        " user root/root)",
    )
    parser.add_argument("--pool-url", default="stratum+tcp://main.pool.invalid:3333")
    parser.add_argument("--ramp-seconds", type=float, default=0.0, help="power ramp time")
    parser.add_argument(
        "--grpc-port",
        type=int,
        default=50051,
        help="braiins: gRPC API port; antminer, vnish: web port (0 = a free port each)",
    )
    args = parser.parse_args()
    raise_open_files_limit(args.count + 4096)
    with contextlib.suppress(KeyboardInterrupt):
        run(serve(args))


if __name__ == "__main__":
    main()
