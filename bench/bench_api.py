"""Benchmark: API latency in process (token check, routing, handler) for a read and for a
durable change (committed with its audit row, synchronous=FULL), and the cost of a refusal.

Prints one JSON object per line: {"name", "value", "unit"}.
Usage: python bench/bench_api.py [--requests 300]
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx

from scheduler.api.auth import Role
from tests.scheduler.api_fixtures import Tokens, build_app
from tests.scheduler.test_api_security import make_view


def emit(name: str, value: float, unit: str) -> None:
    print(json.dumps({"name": name, "value": round(value, 3), "unit": unit}), flush=True)


async def timed(
    client: httpx.AsyncClient, method: str, path: str, body: object, n: int
) -> list[float]:
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        response = await client.request(method, path, json=body)
        samples.append((time.perf_counter() - started) * 1000)
        assert response.status_code in (200, 403), response.text
    return samples


async def measure(requests: int, directory: Path) -> None:
    tokens = Tokens()
    app = build_app(make_view(directory), tokens, per_minute=1e9, burst=10**9)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        client.headers.update(tokens.header(Role.OPERATOR))
        await timed(client, "GET", "/v1/summary", None, 20)  # warm up
        for name, method, path, body in (
            ("api_summary_read", "GET", "/v1/summary", None),
            ("api_mode_change_durable", "PUT", "/v1/mode", {"mode": "auto"}),
        ):
            samples = sorted(await timed(client, method, path, body, requests))
            emit(f"{name}_p50", statistics.median(samples), "ms")
            emit(f"{name}_p99", samples[int(len(samples) * 0.99) - 1], "ms")
        client.headers.update(tokens.header(Role.VIEWER))
        refused = sorted(await timed(client, "PUT", "/v1/mode", {"mode": "auto"}, requests))
        emit("api_refused_change_audited_p50", statistics.median(refused), "ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="wattmux-bench-api-") as directory:
        asyncio.run(measure(args.requests, Path(directory)))


if __name__ == "__main__":
    main()
