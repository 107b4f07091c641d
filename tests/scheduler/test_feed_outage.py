"""The daemon with a live power-price feed that fails: it stays up, the feed is down, the guard acts."""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import datetime
from pathlib import Path

import pytest

from drivers.market.ercot import ERCOT_ZONE
from scheduler.config.loading import parse_config
from scheduler.daemon import Daemon
from tests.conftest import free_port
from tests.drivers.market.replay_server import ReplayServer, Reply

pytestmark = pytest.mark.system


def ercot_body(price: str) -> bytes:
    local = datetime.now(ERCOT_ZONE)
    hour_ending = local.hour + 1
    interval = local.minute // 15 + 1
    return (
        '{"fields": [{"name": "deliveryDate"}, {"name": "deliveryHour"}, {"name": "deliveryInterval"},'
        ' {"name": "settlementPoint"}, {"name": "settlementPointPrice"}],'
        f' "data": [["{local.date().isoformat()}", {hour_ending}, {interval}, "HB_SOUTH", {price}]]}}'
    ).encode()


async def test_price_feed_outage_leads_to_the_safe_action(tmp_path: Path) -> None:
    async with ReplayServer("127.40.1.1") as server:
        server.set("/rtm", Reply(body=ercot_body("20.0")))
        config = parse_config(
            {
                "site": {"name": "out", "power_cap_kw": 100.0},
                "control": {"tick_seconds": 0.1},
                "guard": {"min_dwell_seconds": 0.0, "stale_price_seconds": 1.0},
                "store": {"path": str(tmp_path / "w.sqlite")},
                "pools": [{"name": "main", "url": "stratum+tcp://p.invalid:3333", "user": "w"}],
                "devices": [
                    {
                        "id": "a1",
                        "model": "S21",
                        "address": "127.40.1.2",
                        "pools": ["main"],
                        "options": {"port": free_port("127.40.1.2"), "timeout_seconds": 0.1},
                    }
                ],
                "market": [
                    {"driver": "static", "btc_price_usd": 95000.0, "difficulty": 1.0e14},
                    {"driver": "ercot-rtm", "url": server.url("/rtm"), "timeout_seconds": 0.3},
                ],
            },
            environ={},
        )
        daemon = Daemon(config)
        stop = asyncio.Event()
        runner = asyncio.create_task(daemon.run(stop, serve_api=False))
        try:
            await asyncio.wait_for(daemon.ready.wait(), 10)
            price = daemon.state.market.power_price_usd_per_mwh
            assert price is not None and price.value == 20.0
            # Outage: 5xx first, then (as backoff allows) NaN, absurd, slow, truncated; it keeps running.
            server.set(
                "/rtm",
                Reply(503, b"down", {"Retry-After": "0"}),
                Reply(body=ercot_body("NaN")),
                Reply(body=ercot_body("99999.0")),
                Reply(body=ercot_body("20.0"), delay_s=1.0),
                Reply(body=ercot_body("20.0"), truncate_to=40),
                Reply(500, b"still down"),
            )
            deadline = time.monotonic() + 10
            while True:
                plan = daemon.current_plan()
                if plan is not None and {a.reason for a in plan.assignments} == {"stale_price"}:
                    break
                assert time.monotonic() < deadline, "guard never took the safe action"
                assert not runner.done()
                await asyncio.sleep(0.05)
            assert [a.workload.kind.value for a in plan.assignments] == ["sleep"]
            rendered = daemon.metrics.render().decode()
            assert 'wattmux_source_up{source="ercot-rtm"} 0.0' in rendered
        finally:
            stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(runner, 10)
