"""Benchmark: /metrics for a site of 10,000 devices, rendered and scraped over HTTP.

Prints one JSON object per line: {"name", "value", "unit"}.
Usage: python bench/bench_metrics.py [--devices 10000] [--scrapes 20]

``metrics_render_10k_devices_ms`` is the median time of ``Metrics.render()``
(``..._cpu_ms`` the same in process CPU time, less sensitive to a busy machine);
``metrics_scrape_10k_devices_ms`` the median time of a full HTTP GET /metrics
against the daemon's API server (uvicorn) on a loopback port.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx

from scheduler.api.app import bound_port, create_app, serve
from scheduler.api.auth import Authenticator, RateLimiter, Role, TokenEntry, hash_token, new_token
from scheduler.api.wiring import ApiSecurity
from scheduler.core.model import TERA, Device, DeviceKind, Plan, Reading, Sample, Workload
from scheduler.core.state import FleetState
from scheduler.observability.metrics import Metrics

NOW = 10_000.0


def emit(name: str, value: float, unit: str) -> None:
    print(json.dumps({"name": name, "value": round(value, 3), "unit": unit}), flush=True)


def build_state(count: int) -> FleetState:
    """A site of ``count`` S21s: most mining, some asleep, one in fifty unreachable."""
    devices = [
        Device(
            id=f"s21-{index:05d}",
            kind=DeviceKind.ASIC,
            model="S21",
            driver="cgminer",
            address=f"10.{index >> 16 & 255}.{index >> 8 & 255}.{index & 255}",
            port=4028,
            nominal_hashrate_hs=200 * TERA,
            nominal_power_w=3500.0,
            pools=("main",),
        )
        for index in range(count)
    ]
    state = FleetState(devices, pool_fee=0.02)
    for index, device in enumerate(devices):
        asleep = index % 7 == 0
        state.observe(
            Sample(
                device.id,
                NOW - (index % 30) / 10,
                Workload.sleep() if asleep else Workload.mine("main"),
                14.0 if asleep else 3450.0 + index % 100,
                0.0 if asleep else (198.0 + (index % 50) / 10) * TERA,
                40.0 + index % 40 / 3,
            )
        )
        if index % 50 == 0:
            state.mark_unreachable(device.id, "timeout", NOW)
    state.observe_market(
        {
            "btc_price_usd": Reading(59_013.8, NOW, "bench"),
            "difficulty": Reading(86_871_474_313_762.0, NOW, "bench"),
            "block_subsidy_btc": Reading(3.125, NOW, "bench"),
            "fees_btc_per_block": Reading(0.0, NOW, "bench"),
            "power_price_usd_per_mwh": Reading(41.7, NOW, "bench"),
        }
    )
    return state


class View:
    """What the API reads: the state, the metrics, no plan."""

    def __init__(self, state: FleetState, metrics: Metrics) -> None:
        self.state = state
        self.metrics = metrics

    def current_plan(self) -> Plan | None:
        return None

    def clock(self) -> float:
        return NOW


async def scrape_over_http(view: View, scrapes: int) -> tuple[list[float], int]:
    timings: list[float] = []
    size = 0
    token = new_token()  # /metrics needs a viewer token, as Prometheus holds one
    security = ApiSecurity(
        authenticator=Authenticator([TokenEntry("bench", Role.VIEWER, hash_token(token))]),
        limiter=RateLimiter(per_minute=60.0, burst=10),
    )
    async with serve(create_app(view, security), "127.80.0.1", 0) as server:
        url = f"http://127.80.0.1:{bound_port(server)}/metrics"
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(timeout=30, headers=headers) as client:
            await client.get(url)  # warm-up
            for _ in range(scrapes):
                started = time.perf_counter()
                response = await client.get(url)
                timings.append((time.perf_counter() - started) * 1000)
                response.raise_for_status()
                size = len(response.content)
    return timings, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--scrapes", type=int, default=20)
    args = parser.parse_args()
    state = build_state(args.devices)
    metrics = Metrics(state, clock=lambda: NOW)
    text = metrics.render()
    series = sum(1 for line in text.splitlines() if line and not line.startswith(b"#"))
    render_ms = []
    render_cpu_ms = []
    for _ in range(args.scrapes):
        started, started_cpu = time.perf_counter(), time.process_time()
        metrics.render()
        render_ms.append((time.perf_counter() - started) * 1000)
        render_cpu_ms.append((time.process_time() - started_cpu) * 1000)
    http_ms, size = asyncio.run(scrape_over_http(View(state, metrics), args.scrapes))
    label = f"{args.devices // 1000}k" if args.devices % 1000 == 0 else str(args.devices)
    emit(f"metrics_series_{label}_devices", series, "series")
    emit(f"metrics_bytes_{label}_devices", size, "bytes")
    emit(f"metrics_render_{label}_devices_ms", statistics.median(render_ms), "ms")
    emit(f"metrics_render_{label}_devices_cpu_ms", statistics.median(render_cpu_ms), "ms")
    emit(f"metrics_scrape_{label}_devices_ms", statistics.median(http_ms), "ms")


if __name__ == "__main__":
    main()
