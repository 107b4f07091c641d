"""deploy/mosquitto: a QoS 1 price queued for the daemon survives the broker being killed (SIGKILL).

The broker runs the shipped ``wattmux.conf`` (as tests/deploy/test_mosquitto.py
rewrites it: free ports, the test's own files), its persistence file in the
test's directory.  The daemon's MQTT ingest (persistent session, clean_start
false) subscribes once and goes away; the price gateway publishes a QoS 1
price; the broker is killed with SIGKILL once it has saved, started again with
the same settings, and the daemon, back, gets the price.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiomqtt
import pytest

from drivers.telemetry.mqtt import MqttIngest, MqttOptions
from scheduler.control.ingest import FleetSink
from scheduler.core.state import FleetState
from scheduler.observability.metrics import Metrics
from tests.deploy.test_mosquitto import (
    DEPLOY,
    HOST,
    IDENTITIES,
    MOSQUITTO,
    broker_config,
    free_port,
    make_certificates,
    pytestmark,  # noqa: F401  (skipped where mosquitto, mosquitto_passwd or openssl is missing)
)
from tests.scheduler.helpers import device

PREFIX = "wattmux/s1"


class Broker:
    """The shipped config on free ports; start, kill -9, start again on the same files."""

    def __init__(self, directory: Path) -> None:
        make_certificates(directory / "certs")
        self.directory = directory
        self.port = free_port()
        self.config = broker_config(directory, self.port, free_port())
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert MOSQUITTO is not None
        log = (self.directory / "mosquitto.log").open("ab")
        self.process = subprocess.Popen(  # cwd: where the shipped config's persistence writes
            [MOSQUITTO, "-c", str(self.config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.directory,
        )
        log.close()
        for _ in range(200):
            try:
                with socket.create_connection((HOST, self.port), timeout=0.2):
                    return
            except OSError:
                assert self.process.poll() is None, (self.directory / "mosquitto.log").read_text()
                time.sleep(0.05)
        raise AssertionError("mosquitto did not start")

    def kill(self) -> None:
        process, self.process = self.process, None
        assert process is not None
        process.send_signal(signal.SIGKILL)
        process.wait(10)

    def saved(self) -> tuple[int, int, int] | None:
        """Identity of the persistence file (it is written anew and renamed on each save)."""
        try:
            stat = (self.directory / "mosquitto.db").stat()
        except FileNotFoundError:
            return None
        return (stat.st_ino, stat.st_mtime_ns, stat.st_size)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    running = Broker(tmp_path)
    running.start()
    try:
        yield running
    finally:
        if running.process is not None:
            running.process.terminate()
            running.process.wait(10)


def test_the_shipped_config_saves_on_every_change() -> None:
    lines = (DEPLOY / "wattmux.conf").read_text().splitlines()
    assert "autosave_on_changes true" in lines and "autosave_interval 1" in lines


async def settled(
    broker: Broker, changed_from: tuple[int, int, int] | None = None, limit_s: float = 2.0
) -> None:
    """Wait (at most limit_s) until the persistence file changed from changed_from, if given,
    and then stayed the same for 0.2 s: no save is half written when the broker is killed."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        seen = broker.saved()
        await asyncio.sleep(0.2)
        if broker.saved() == seen and (changed_from is None or seen != changed_from):
            return


async def until(predicate: object, limit_s: float = 10.0) -> None:
    deadline = time.monotonic() + limit_s
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


@pytest.mark.system
async def test_a_queued_price_survives_a_broker_kill(broker: Broker) -> None:
    state = FleetState([device("m1")])
    options = MqttOptions.model_validate(
        {
            "host": HOST,
            "port": broker.port,
            "prefix": PREFIX,
            "client_id": "wattmux-s1",
            "username": "wattmux",
            "password": IDENTITIES["wattmux"],
            "backoff_base_seconds": 0.05,
            "backoff_cap_seconds": 0.5,
        }
    )

    def daemon() -> MqttIngest:
        return MqttIngest(options, FleetSink(state, Metrics(state)), site="s1")

    # The daemon's session: subscribed once, then away (a restart, an upgrade).
    async with daemon() as ingest:
        await asyncio.wait_for(ingest.connected.wait(), 10)

    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    price = {
        "usd_per_mwh": 61.25,
        "interval_start": start.isoformat(),
        "interval_end": (start + timedelta(minutes=60)).isoformat(),
        "source": "hb_south",
    }
    await settled(broker)  # the saves of the daemon's session are done
    before = broker.saved()
    async with aiomqtt.Client(
        HOST, broker.port, username="price-feed", password=IDENTITIES["price-feed"], timeout=5
    ) as gateway:
        await gateway.publish(f"{PREFIX}/price/power", json.dumps(price).encode(), qos=1)
    # The broker acknowledges first and saves in the same pass of its loop, right after: give
    # it that moment (without autosave_on_changes it saves only every 30 minutes or at exit).
    await settled(broker, changed_from=before)

    broker.kill()
    broker.start()

    async with daemon() as ingest:
        await asyncio.wait_for(ingest.connected.wait(), 10)
        await until(lambda: state.market.power_price_usd_per_mwh is not None, 5.0)
    reading = state.market.power_price_usd_per_mwh
    assert reading is not None and reading.value == 61.25
    assert reading.source == "mqtt:hb_south"
