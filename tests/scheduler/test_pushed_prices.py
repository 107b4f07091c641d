"""Pushed prices survive restarts and lies; pushed state stays bounded.

The last valid MQTT price is kept in the store with its interval and used after
a restart while its interval lasts; prices dated far ahead are refused
(``future``); DR events are capped; unknown device ids are logged once each.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiomqtt
import pytest

from drivers.sim.broker import Mosquitto
from drivers.telemetry.mqtt import UNKNOWN_DEVICES_LOGGED, MqttIngest, MqttOptions
from scheduler.config.loading import parse_config
from scheduler.control.ingest import POWER_PRICE, FleetSink
from scheduler.core.model import Event, Reading
from scheduler.core.state import FleetState
from scheduler.daemon import Daemon
from scheduler.observability.metrics import Metrics
from scheduler.store.operator import ControlStore
from scheduler.store.prices import PushedPrice
from tests.scheduler.test_ingest import DEVICES, config, samples, until
from tests.scheduler.test_staleness import device

PREFIX = "wattmux/t"
WALL = datetime(2026, 8, 20, 20, 0, tzinfo=UTC)


def ingest(state: FleetState) -> MqttIngest:
    return MqttIngest(
        MqttOptions.model_validate({"prefix": PREFIX}), FleetSink(state, Metrics(state))
    )


def price_payload(usd: float, start: datetime, minutes: float = 15) -> bytes:
    end = start + timedelta(minutes=minutes)
    return json.dumps(
        {"usd_per_mwh": usd, "interval_start": start.isoformat(), "interval_end": end.isoformat()}
    ).encode()


def rejected(mqtt: MqttIngest, reason: str) -> float:
    line = f'wattmux_ingest_rejected_total{{reason="{reason}"}} '
    for text in mqtt.sink.metrics.render().decode().splitlines():  # type: ignore[attr-defined]
        if text.startswith(line):
            return float(text[len(line) :])
    return 0.0


def test_a_price_for_the_year_2999_is_refused_as_future() -> None:
    state = FleetState([device("a")])
    mqtt = ingest(state)
    year_2999 = datetime(2999, 1, 1, tzinfo=UTC)
    mqtt.handle(f"{PREFIX}/price/power", price_payload(4999.0, year_2999))
    assert state.market.power_price_usd_per_mwh is None
    assert rejected(mqtt, "future") == 1.0
    # The tolerance is configurable; a price for the interval now is taken.
    mqtt.handle(f"{PREFIX}/price/power", price_payload(41.0, datetime.now(UTC)))
    price = state.market.power_price_usd_per_mwh
    assert price is not None and price.value == 41.0


def test_unknown_device_ids_are_logged_once_each_then_only_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    state = FleetState([device("a")])
    mqtt = ingest(state)
    body = {"ts": time.time(), "power_w": 3000.0, "workload": "sleep"}
    with caplog.at_level(logging.WARNING, logger="drivers.telemetry.mqtt"):
        for _ in range(50):
            mqtt.handle(f"{PREFIX}/telemetry/ghost-1", json.dumps(body).encode())
            mqtt.handle(f"{PREFIX}/telemetry/ghost-2", json.dumps(body).encode())
        batch = [{**body, "device_id": f"stray-{n}"} for n in range(UNKNOWN_DEVICES_LOGGED + 500)]
        mqtt.handle(f"{PREFIX}/telemetry/batch/rack9", json.dumps(batch).encode())
        mqtt.handle(f"{PREFIX}/telemetry/batch/rack9", json.dumps(batch).encode())
    lines = [r.getMessage() for r in caplog.records]
    assert sum("'ghost-1'" in line for line in lines) == 1
    assert sum("'ghost-2'" in line for line in lines) == 1
    # The set of logged ids is bounded: one line per id up to the limit, one line saying so.
    assert len(lines) == UNKNOWN_DEVICES_LOGGED + 1
    assert "further ones are not logged" in lines[-1]
    assert len(mqtt._unknown_logged) == UNKNOWN_DEVICES_LOGGED
    assert rejected(mqtt, "unknown_device") == 100 + 2 * (UNKNOWN_DEVICES_LOGGED + 500)


def test_dr_events_are_bounded() -> None:
    state = FleetState([device("a")])
    sink = FleetSink(state, Metrics(state), wall_clock=lambda: WALL, max_events=1000)
    mqtt = MqttIngest(
        MqttOptions.model_validate({"prefix": PREFIX}),
        sink,
        wall_clock=lambda: WALL.timestamp(),
    )

    def event(n: int, kw: float = 5.0) -> bytes:
        start = WALL + timedelta(minutes=n % 600)
        return json.dumps(
            {
                "id": f"dr-{n}",
                "start": start.isoformat(),
                "end": (start + timedelta(hours=1)).isoformat(),
                "target_kw": kw,
            }
        ).encode()

    for n in range(12_000):
        mqtt.handle(f"{PREFIX}/events/dr", event(n))
    assert len(state.events) == 1000
    assert rejected(mqtt, "too_many_events") == 11_000
    # A known event can still be updated, and room made by events that end lets new ones in.
    mqtt.handle(f"{PREFIX}/events/dr", event(7, kw=2.0))
    assert next(e for e in state.events if e.id == "dr-7").target_kw == 2.0
    later = WALL + timedelta(hours=20)
    sink._wall = lambda: later
    sink.on_event(Event("late", later, later + timedelta(hours=1), target_kw=1.0))
    assert [e.id for e in state.events] == ["late"]


def test_a_stored_price_is_restored_only_while_its_interval_lasts(tmp_path: Path) -> None:
    with ControlStore.open(tmp_path / "w.sqlite") as store:
        state = FleetState([device("a")])
        sink = FleetSink(
            state, Metrics(state), wall_clock=lambda: WALL, persist=store.put_pushed_price
        )
        sink.on_power_price(
            Reading(35.5, 100.0, "mqtt:hb_south"),
            WALL - timedelta(minutes=5),
            WALL + timedelta(hours=2),
        )
        kept = store.pushed_price(POWER_PRICE)
    assert kept == PushedPrice(
        POWER_PRICE,
        35.5,
        "mqtt:hb_south",
        WALL - timedelta(minutes=5),
        WALL + timedelta(hours=2),
        WALL,
    )
    with ControlStore.open(tmp_path / "w.sqlite") as store:
        kept = store.pushed_price(POWER_PRICE)
    assert kept is not None

    later = WALL + timedelta(minutes=10)
    state = FleetState([device("a")])
    assert FleetSink(state, Metrics(state), wall_clock=lambda: later).restore(kept, 5000.0)
    restored = state.market.power_price_usd_per_mwh
    # Its age is the time since it arrived: 600 s.
    assert restored == Reading(35.5, 4400.0, "mqtt:hb_south")

    over = WALL + timedelta(hours=2)
    state = FleetState([device("a")])
    assert not FleetSink(state, Metrics(state), wall_clock=lambda: over).restore(kept, 5000.0)
    assert state.market.power_price_usd_per_mwh is None


@pytest.mark.system
async def test_a_pushed_price_survives_a_daemon_restart(tmp_path: Path) -> None:
    def reasons(daemon: Daemon) -> set[str]:
        plan = daemon.current_plan()
        return {a.reason for a in plan.assignments} if plan else set()

    async def run(broker: Mosquitto, publish: list[tuple[str, bytes, int]]) -> set[str]:
        daemon = Daemon(parse_config(config(tmp_path, broker), environ={}))
        stop = asyncio.Event()
        runner = asyncio.create_task(daemon.run(stop, serve_api=False))
        try:
            assert daemon.ingest is not None
            await asyncio.wait_for(daemon.ingest.connected.wait(), 10)
            await asyncio.wait_for(daemon.ready.wait(), 10)
            async with aiomqtt.Client(broker.host, broker.port, identifier="site-pub") as pub:
                for topic, payload, qos in publish:
                    await pub.publish(topic, payload, qos=qos)
                await until(lambda: len(daemon.state.samples) == len(DEVICES))
                await until(lambda: bool(reasons(daemon)) and "stale_price" not in reasons(daemon))
            return reasons(daemon)
        finally:
            stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(runner, 15)

    telemetry = ("wattmux/ing/telemetry/batch/rack1", samples("mine(main)"), 0)
    start = datetime.now(UTC) - timedelta(minutes=1)
    valid_2h = price_payload(2450.0, start, minutes=120)
    with Mosquitto() as broker:
        first = await run(broker, [telemetry, ("wattmux/ing/price/power", valid_2h, 1)])
        assert first == {"price_above_breakeven"}
        # A new daemon on the same store; the broker has nothing queued for it (the price was
        # acknowledged), so only the store can tell it the price.
        second = await run(broker, [telemetry])
        assert second == {"price_above_breakeven"}
