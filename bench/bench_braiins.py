"""Benchmark: Braiins OS gRPC round trips over loopback against the simulated API (one process).

Measures, per call (median of --calls, wall and CPU of this process, which also
runs the simulator): Login, GetMinerDetails with a kept token, SetPowerTarget,
and a whole apply(sleep) -> confirmed with no pause delay in the simulator.
Also the import time of the gRPC stack (grpclib, h2) in a fresh interpreter.

Prints one JSON object per line: {"name", "value", "unit"}.
Usage: python bench/bench_braiins.py [--calls 200] [--loop asyncio|uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from drivers.asic.bos_client import BosClient
from drivers.asic.braiins import BraiinsDriver
from drivers.asic.config import BraiinsOptions
from drivers.sim.site import SimSite
from scheduler.core.model import Device, DeviceKind, Pool, Workload

POOL = Pool("main", "stratum+tcp://main.example:3333", "w")


def emit(name: str, value: float, unit: str) -> None:
    print(json.dumps({"name": name, "value": round(value, 3), "unit": unit}), flush=True)


async def timed(name: str, n: int, call: Callable[[], Awaitable[object]]) -> None:
    walls, cpus = [], []
    for _ in range(n):
        wall, cpu = time.perf_counter(), time.process_time()
        await call()
        walls.append((time.perf_counter() - wall) * 1000)
        cpus.append((time.process_time() - cpu) * 1000)
    emit(f"braiins_{name}_ms", statistics.median(walls), "ms")
    emit(f"braiins_{name}_cpu_ms", statistics.median(cpus), "ms")


async def run(calls: int) -> None:
    device = Device(
        "bos-b", DeviceKind.ASIC, "S19j Pro", "braiins", "127.39.9.1", 0, 104e12, 3068.0,
        pools=("main",),
    )  # fmt: skip
    async with SimSite([device], [POOL], port=0) as site:
        api = site.braiins[device.id]
        api.pause_delay_seconds = api.resume_delay_seconds = 0.0
        address = device.address
        client = BosClient(port=api.port, password="root")
        await timed("login", calls, lambda: client.login("b", address))
        await timed("get_miner_details", calls, lambda: client.status("b", address))
        watts = iter([2400, 2500] * calls)
        await timed(
            "set_power_target", calls, lambda: client.set_power_target("b", address, next(watts))
        )
        options = BraiinsOptions(grpc_port=api.port, confirm_interval_seconds=0.001)
        driver = BraiinsDriver({"main": POOL}, options)
        target = site.devices[0]
        workloads = iter([Workload.sleep(), Workload.mine("main")] * calls)
        await timed("apply_confirmed", calls // 4, lambda: driver.apply(target, next(workloads)))


def import_ms() -> None:
    code = (
        "import time; t, c = time.perf_counter(), time.process_time(); import grpclib.client, h2; "
        "print((time.perf_counter() - t) * 1000, (time.process_time() - c) * 1000)"
    )
    runs = [
        [float(v) for v in subprocess.check_output([sys.executable, "-c", code]).split()]
        for _ in range(5)
    ]
    emit("braiins_grpc_stack_import_ms", statistics.median(r[0] for r in runs), "ms")
    emit("braiins_grpc_stack_import_cpu_ms", statistics.median(r[1] for r in runs), "ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="uvloop")
    args = parser.parse_args()
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(run(args.calls))
    else:
        asyncio.run(run(args.calls))
    import_ms()


if __name__ == "__main__":
    main()
