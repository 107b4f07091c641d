"""DR events over a real mosquitto get target states: pending, dispatched, confirmed, drifted, ended."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import pytest

from drivers.meter.base import MeterReading
from drivers.sim.broker import Mosquitto
from drivers.telemetry.mqtt import MqttIngest, MqttOptions
from scheduler.api.app import create_app
from scheduler.api.auth import RateLimiter, Role
from scheduler.api.grid import grid_routes
from scheduler.api.wiring import ApiSecurity
from scheduler.config.grid import MeterConfig, SetpointConfig
from scheduler.control.grid import GridControl
from scheduler.control.ingest import FleetSink
from scheduler.core.state import FleetState
from scheduler.observability.metrics import Metrics
from scheduler.store.operator import ControlStore
from tests.scheduler.api_fixtures import ControlledView, Tokens, make_control, small_config

TOKENS = Tokens()


@pytest.mark.system
async def test_dr_events_over_mqtt_have_target_states_in_api_and_metrics(tmp_path: Path) -> None:
    config = small_config(tmp_path)
    state = FleetState(config.all_devices())
    metrics = Metrics(state)
    clock = {"mono": 1000.0, "wall": datetime.now(UTC).replace(microsecond=0)}
    started = clock["wall"]
    assert isinstance(started, datetime)

    def wall() -> datetime:
        value = clock["wall"]
        assert isinstance(value, datetime)
        return value

    def mono() -> float:
        value = clock["mono"]
        assert isinstance(value, float)
        return value

    grid = GridControl(
        MeterConfig(source="mqtt"),
        SetpointConfig(confirm_seconds=5, drift_seconds=5),
        state,
        clock=mono,
        wall_clock=wall,
    )
    grid.register(metrics.registry)
    assert grid.meter is not None
    store = ControlStore.open(tmp_path / "w.sqlite")
    view = ControlledView(state, metrics, config, make_control(store, state))
    security = ApiSecurity(TOKENS.authenticator(), RateLimiter(per_minute=600, burst=100), 4096)
    app = create_app(view, security, [grid_routes(grid, view, None, wall_clock=wall)])

    def tick(seconds: float, metered_kw: float) -> None:
        clock["mono"] = mono() + seconds
        clock["wall"] = wall() + timedelta(seconds=seconds)
        assert grid.meter is not None
        grid.meter.push(MeterReading(metered_kw * 1000.0, mono()))
        grid.setpoint.apply({}, state.snapshot(mono(), wall()), {})

    async def states() -> tuple[list[tuple[str, str, float]], str]:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://wattmux.test",
            headers=TOKENS.header(Role.VIEWER),
        ) as client:
            reply = await client.get("/v1/setpoint")
        assert reply.status_code == 200, reply.text
        body: dict[str, Any] = reply.json()
        listed = [(t["id"], t["state"], t["kw"]) for t in body["dr_events"]]
        lines = [
            line
            for line in metrics.render().decode().splitlines()
            if line.startswith("wattmux_dr_event_targets{") and line.endswith(" 1.0")
        ]
        return listed, ",".join(lines)

    with Mosquitto() as broker:
        sink = FleetSink(state, metrics, wall_clock=wall)
        ingest = MqttIngest(MqttOptions(host=broker.host, port=broker.port), sink, site="s1")
        async with ingest:
            await asyncio.wait_for(ingest.connected.wait(), 10)
            event = {
                "id": "eea-1",
                "start": (started + timedelta(seconds=60)).isoformat(),
                "end": (started + timedelta(seconds=300)).isoformat(),
                "target_kw": 3.0,
            }
            async with aiomqtt.Client(broker.host, broker.port) as client:
                await client.publish("wattmux/s1/events/dr", json.dumps(event).encode(), qos=1)
            for _ in range(500):
                if state.events:
                    break
                await asyncio.sleep(0.01)
    assert [e.id for e in state.events] == ["eea-1"]

    tick(0, 5.0)  # before its start
    assert await states() == (
        [("eea-1", "pending", 3.0)],
        'wattmux_dr_event_targets{state="pending"} 1.0',
    )
    tick(60, 5.0)  # in force, the site still above the limit
    assert (await states())[0] == [("eea-1", "dispatched", 3.0)]
    tick(1, 2.9)
    tick(5, 2.95)  # at or below 3 kW for confirm_seconds: the meter confirms it
    assert await states() == (
        [("eea-1", "confirmed", 3.0)],
        'wattmux_dr_event_targets{state="confirmed"} 1.0',
    )
    tick(1, 3.5)
    tick(5, 3.5)  # above it again for drift_seconds
    assert (await states())[0] == [("eea-1", "drifted", 3.0)]
    tick(300, 3.5)  # past its end
    assert await states() == (
        [("eea-1", "ended", 3.0)],
        'wattmux_dr_event_targets{state="ended"} 1.0',
    )
    store.close()
