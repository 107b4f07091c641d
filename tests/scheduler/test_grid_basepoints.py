"""Base points over a real mosquitto: a point becomes the target once; bad messages are counted."""

from __future__ import annotations

import asyncio
import json

import aiomqtt
import pytest

from drivers.sim.broker import Mosquitto
from drivers.telemetry.basepoints import BasePointRejected, decode_basepoint
from drivers.telemetry.mqtt import MqttOptions
from scheduler.config.grid import MeterConfig, SetpointConfig
from scheduler.control.grid import GridControl
from scheduler.core.state import FleetState
from tests.scheduler.helpers import device


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'{"id": "a", "kw": -1}', "bad_kw"),
        (b'{"id": "a", "kw": NaN}', "malformed"),
        (b'{"id": "a b", "kw": 1}', "bad_id"),
        (b'{"id": "a", "kw": 1, "more": 2}', "malformed"),
        (b'{"id": "a", "kw": 1, "hold_seconds": 0}', "bad_hold"),
        (b"x" * 5000, "too_large"),
    ],
)
def test_bad_base_points_are_rejected_with_a_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(BasePointRejected) as caught:
        decode_basepoint(payload)
    assert caught.value.reason == reason


@pytest.mark.system
async def test_base_points_over_mqtt_set_the_target_once() -> None:
    with Mosquitto() as broker:
        options = MqttOptions(host=broker.host, port=broker.port)
        grid = GridControl(None, SetpointConfig(), FleetState([device("m1")]))
        subscriber = grid.subscribe_basepoints(options, "site")
        async with grid:
            await asyncio.wait_for(subscriber.connected.wait(), 10)
            async with aiomqtt.Client(broker.host, broker.port) as client:
                point = json.dumps({"id": "bp-1", "kw": 120.5}).encode()
                for payload in (point, point, b'{"id": "bp-2", "kw": "lots"}'):
                    await client.publish(subscriber.topic, payload, qos=1)
                for _ in range(500):
                    if sum(grid.counts.values()) >= 3:
                        break
                    await asyncio.sleep(0.01)
    assert grid.setpoint.target is not None
    assert (grid.setpoint.target.kw, grid.setpoint.target.source) == (120.5, "basepoint")
    assert len(grid.setpoint.history) == 1
    assert grid.counts == {
        ("basepoint", "accepted"): 1,
        ("basepoint", "duplicate"): 1,
        ("basepoint", "invalid"): 1,
    }


@pytest.mark.system
async def test_site_meter_readings_pushed_over_mqtt() -> None:
    with Mosquitto() as broker:
        options = MqttOptions(host=broker.host, port=broker.port)
        grid = GridControl(MeterConfig(source="mqtt"), SetpointConfig(), FleetState([device("m1")]))
        assert grid.meter is not None
        subscriber = grid.subscribe_basepoints(options, "site")
        async with grid:
            await asyncio.wait_for(subscriber.connected.wait(), 10)
            async with aiomqtt.Client(broker.host, broker.port) as client:
                for payload in (b'{"power_w": 1e40}', b'{"power_w": 5250.5}'):
                    await client.publish(subscriber.meter_topic, payload, qos=1)
                for _ in range(500):
                    if grid.meter.latest is not None:
                        break
                    await asyncio.sleep(0.01)
    assert grid.meter.power_w() == 5250.5
    assert grid.meter.reads == {"ok": 1, "malformed": 1}
    assert grid.setpoint.target is None  # a reading is not a base point
