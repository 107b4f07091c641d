"""The daemon with [mqtt]: pushed telemetry and prices reach FleetState and drive decisions."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from drivers.sim.broker import Mosquitto
from scheduler.config.loading import parse_config
from scheduler.core.model import WorkloadKind
from scheduler.daemon import Daemon
from tests.conftest import free_port

pytestmark = pytest.mark.system

MARKET = {
    "driver": "static",
    "btc_price_usd": 59_013.80,
    "difficulty": 86_871_474_313_762.0,
    "block_subsidy_btc": 3.125,
    "fees_btc_per_block": 0.0,
}
DEVICES = ["s21-001", "s21-002", "s21-003"]


def config(tmp_path: Path, broker: Mosquitto) -> dict[str, Any]:
    return {
        "site": {"name": "ing", "power_cap_kw": 1000.0},
        "control": {"tick_seconds": 5.0},
        "economics": {"pool_fee": 0.0},
        "guard": {"min_dwell_seconds": 0.0, "stale_price_seconds": 600.0},
        "store": {"path": str(tmp_path / "w.sqlite")},
        "api": {"listen": f"127.0.0.1:{free_port()}"},
        "pools": [{"name": "main", "url": "stratum+tcp://main.pool.invalid:3333", "user": "w"}],
        "device_ranges": [
            {
                "id_prefix": "s21",
                "model": "S21",
                "first_address": "127.40.0.1",
                "count": 3,
                "pools": ["main"],
                "options": {"port": free_port("127.40.0.1"), "timeout_seconds": 0.2},
            }
        ],
        "market": [MARKET],
        "mqtt": {
            "host": broker.host,
            "port": broker.port,
            "push_devices": DEVICES,
            "backoff_base_seconds": 0.05,
            "backoff_cap_seconds": 0.5,
        },
    }


def price(usd: float) -> bytes:
    start = datetime.now(UTC)
    end = start + timedelta(minutes=15)
    return json.dumps(
        {"usd_per_mwh": usd, "interval_start": start.isoformat(), "interval_end": end.isoformat()}
    ).encode()


def samples(workload: str) -> bytes:
    return json.dumps(
        [
            {
                "device_id": d,
                "ts": time.time(),
                "power_w": 3500,
                "hashrate_hs": 2e14,
                "workload": workload,
            }
            for d in DEVICES
        ]
    ).encode()


async def until(predicate: Callable[[], bool], limit_s: float = 10.0) -> None:
    deadline = time.monotonic() + limit_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_pushed_samples_and_prices_drive_the_daemon(tmp_path: Path) -> None:
    with Mosquitto() as broker:
        daemon = Daemon(parse_config(config(tmp_path, broker), environ={}))
        stop = asyncio.Event()
        runner = asyncio.create_task(daemon.run(stop, serve_api=False))
        try:
            assert daemon.ingest is not None
            await asyncio.wait_for(daemon.ingest.connected.wait(), 10)
            await asyncio.wait_for(daemon.ready.wait(), 10)
            pub = aiomqtt.Client(broker.host, broker.port, identifier="site-pub")
            async with pub:
                await pub.publish("wattmux/ing/telemetry/batch/rack1", samples("mine(main)"))
                await pub.publish("wattmux/ing/telemetry/s21-002", b"{broken")
                await until(lambda: len(daemon.state.samples) == 3)
                assert all(daemon.state.status[d].reachable for d in DEVICES)
                # No price yet: the guard's stale action (sleep) holds.
                plan = daemon.current_plan()
                assert plan is not None and {a.reason for a in plan.assignments} == {"stale_price"}

                started = time.monotonic()
                await pub.publish("wattmux/ing/price/power", price(2450.0), qos=1)

                def decided(reason: str) -> bool:
                    plan = daemon.current_plan()
                    return plan is not None and {a.reason for a in plan.assignments} == {reason}

                await until(lambda: decided("price_above_breakeven"))
                # Woken by the price, not by the 5 s tick.
                assert time.monotonic() - started < 2.5

            # The broker restarts; a price sent while the daemon is away still arrives.
            broker.restart()
            async with aiomqtt.Client(broker.host, broker.port, identifier="site-pub") as pub:
                await pub.publish("wattmux/ing/price/power", price(20.0), qos=1)
                await until(lambda: decided("price_below_breakeven"), 15)
                power = daemon.state.market.power_price_usd_per_mwh
                assert power is not None and power.value == 20.0
                # Telemetry (QoS 0) resumes once the daemon is back.
                await until(daemon.ingest.connected.is_set)
                await pub.publish("wattmux/ing/telemetry/batch/rack1", samples("sleep"))
                await until(
                    lambda: daemon.state.samples["s21-001"].workload.kind is WorkloadKind.SLEEP
                )
            rendered = daemon.metrics.render().decode()
            assert 'wattmux_ingest_rejected_total{reason="malformed"} 1.0' in rendered

            # A demand-response event over MQTT: the site may draw 4 kW, so one S21 mines.
            now = datetime.now(UTC)
            event = {
                "id": "ercot-eea-1",
                "start": (now - timedelta(minutes=1)).isoformat(),
                "end": (now + timedelta(hours=1)).isoformat(),
                "target_kw": 4.0,
            }
            async with aiomqtt.Client(broker.host, broker.port, identifier="site-pub") as pub:
                await pub.publish("wattmux/ing/events/dr", json.dumps(event).encode(), qos=1)

            def reasons() -> list[str]:
                plan = daemon.current_plan()
                return sorted(a.reason for a in plan.assignments) if plan else []

            await until(lambda: reasons().count("dr_event") == 2)
            assert [e.id for e in daemon.state.events] == ["ercot-eea-1"]
        finally:
            stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(runner, 15)
