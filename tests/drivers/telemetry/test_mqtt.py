"""MQTT ingest against a real mosquitto started by the test."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from drivers.errors import Fatal
from drivers.sim.broker import Mosquitto
from drivers.telemetry.mqtt import MqttIngest, MqttOptions
from scheduler.core.model import Event, Reading, Sample, WorkloadKind

pytestmark = pytest.mark.system

PREFIX = "wattmux/t"


class ListSink:
    def __init__(self, known: set[str]) -> None:
        self.known = known
        self.samples: list[Sample] = []
        self.prices: list[Reading] = []
        self.events: list[Event] = []
        self.rejected: Counter[str] = Counter()

    def on_sample(self, sample: Sample) -> bool:
        if sample.device_id not in self.known:
            return False
        self.samples.append(sample)
        return True

    def on_samples(self, samples: list[Sample]) -> list[Sample]:
        return [s for s in samples if not self.on_sample(s)]

    def on_power_price(self, reading: Reading) -> None:
        self.prices.append(reading)

    def on_event(self, event: Event) -> None:
        self.events.append(event)

    def on_rejected(self, reason: str) -> None:
        self.rejected[reason] += 1


def options(broker: Mosquitto, **extra: object) -> MqttOptions:
    return MqttOptions.model_validate(
        {
            "host": broker.host,
            "port": broker.port,
            "prefix": PREFIX,
            "client_id": "wattmux-test",
            "backoff_base_seconds": 0.05,
            "backoff_cap_seconds": 0.5,
            **extra,
        }
    )


def publisher(broker: Mosquitto, name: str = "pub") -> aiomqtt.Client:
    return aiomqtt.Client(
        broker.host, broker.port, identifier=name, protocol=aiomqtt.ProtocolVersion.V5
    )


def sample(device: str | None = None, **fields: object) -> bytes:
    body: dict[str, object] = {
        "ts": time.time(),
        "power_w": 3500.0,
        "hashrate_hs": 200e12,
        "temperature_c": 61.5,
        "workload": "mine(main)",
    }
    if device:
        body["device_id"] = device
    body.update(fields)
    return json.dumps(body).encode()


def price(usd: float, minutes: int = 15, ago_minutes: int = 0, **fields: object) -> bytes:
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=ago_minutes)
    body = {
        "usd_per_mwh": usd,
        "interval_start": start.isoformat(),
        "interval_end": (start + timedelta(minutes=minutes)).isoformat(),
        "source": "hb_south",
        **fields,
    }
    return json.dumps(body).encode()


async def wait_for(predicate: Callable[[], object], limit_s: float = 10.0) -> None:
    deadline = time.monotonic() + limit_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def test_samples_prices_and_events_reach_the_sink(broker: Mosquitto) -> None:
    sink = ListSink({"a1", "a2", "a3"})
    async with MqttIngest(options(broker), sink) as ingest, publisher(broker) as pub:
        await asyncio.wait_for(ingest.connected.wait(), 10)
        await pub.publish(f"{PREFIX}/telemetry/a1", sample())
        batch = [json.loads(sample("a2")), json.loads(sample("a3", workload="sleep", power_w=12))]
        await pub.publish(f"{PREFIX}/telemetry/batch/rack7", json.dumps(batch).encode())
        await pub.publish(f"{PREFIX}/price/power", price(42.5), qos=1)
        end = datetime.now(UTC) + timedelta(hours=1)
        event = {
            "id": "dr-1",
            "start": datetime.now(UTC).isoformat(),
            "end": end.isoformat(),
            "target_kw": 500,
        }
        await pub.publish(f"{PREFIX}/events/dr", json.dumps(event).encode(), qos=1)
        await wait_for(lambda: len(sink.samples) == 3 and sink.prices and sink.events)
    by_id = {s.device_id: s for s in sink.samples}
    assert by_id["a1"].power_w == 3500.0 and by_id["a1"].workload.pool == "main"
    assert by_id["a3"].workload.kind is WorkloadKind.SLEEP
    assert by_id["a1"].observed_at <= time.monotonic()
    assert sink.prices[0].value == 42.5 and sink.prices[0].source == "mqtt:hb_south"
    assert sink.events[0].id == "dr-1" and sink.events[0].target_kw == 500
    assert not sink.rejected


async def test_status_is_retained_online_then_offline(broker: Mosquitto) -> None:
    sink = ListSink(set())
    seen: list[bytes] = []

    async def read_status() -> None:
        async with publisher(broker, "watcher") as watcher:
            await watcher.subscribe(f"{PREFIX}/status", qos=1)
            async for message in watcher.messages:
                seen.append(bytes(message.payload))  # type: ignore[arg-type]
                return

    async with MqttIngest(options(broker), sink) as ingest:
        await asyncio.wait_for(ingest.connected.wait(), 10)
        await asyncio.wait_for(read_status(), 10)  # retained: arrives after the fact
    await asyncio.wait_for(read_status(), 10)
    assert seen == [b"online", b"offline"]


async def test_bad_messages_are_counted_by_reason_and_dropped(broker: Mosquitto) -> None:
    sink = ListSink({"a1"})
    cases = {
        "malformed": [b"{not json", sample(power_w="lots"), b'{"power_w": NaN}'],
        "oversized": [b"[" + b" " * 5000 + b"]"],
        "out_of_range": [sample(power_w=-5), sample(temperature_c=900), sample(hashrate_hs=1e30)],
        "stale": [sample(ts=time.time() - 3600)],
        "future": [sample(ts=time.time() + 3600)],
        "unknown_workload": [sample(workload="dance")],
    }
    async with (
        MqttIngest(options(broker, max_payload_bytes=4096), sink) as ingest,
        publisher(broker) as pub,
    ):
        await asyncio.wait_for(ingest.connected.wait(), 10)
        for payloads in cases.values():
            for payload in payloads:
                await pub.publish(f"{PREFIX}/telemetry/a1", payload)
        await pub.publish(f"{PREFIX}/telemetry/ghost", sample())
        await pub.publish(f"{PREFIX}/price/power", price(99_999.0), qos=1)
        await pub.publish(f"{PREFIX}/price/power", price(30.0, ago_minutes=60), qos=1)
        await pub.publish(f"{PREFIX}/events/dr", b'{"id": "x"}', qos=1)
        await pub.publish(f"{PREFIX}/telemetry/a1", sample())  # a good one after all the bad
        await wait_for(lambda: len(sink.samples) == 1)
    expected = Counter({reason: len(p) for reason, p in cases.items()})
    expected.update({"unknown_device": 1, "out_of_range": 1, "stale": 1, "malformed": 1})
    assert sink.rejected == expected
    assert sink.prices == [] and sink.events == []


async def test_broker_restart_loses_no_qos1_price_or_event(broker: Mosquitto) -> None:
    sink = ListSink(set())
    states: list[bool] = []
    reconnect = asyncio.Event()  # the backoff timer: the test fires it

    async def backoff_sleep(delay: float) -> None:
        await reconnect.wait()

    ingest = MqttIngest(options(broker), sink, on_state=states.append, sleep=backoff_sleep)
    async with ingest:
        await asyncio.wait_for(ingest.connected.wait(), 10)
        async with publisher(broker) as pub:
            for i in range(20):
                await pub.publish(f"{PREFIX}/price/power", price(float(i)), qos=1)
        await wait_for(lambda: len(sink.prices) == 20)
        broker.stop()
        await wait_for(lambda: not ingest.connected.is_set())
        # The broker is back, the daemon is still backing off: these wait in its session.
        broker.start()
        async with publisher(broker, "pub2") as pub:
            for i in range(20, 40):
                await pub.publish(f"{PREFIX}/price/power", price(float(i)), qos=1)
            end = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
            event = {
                "id": "dr-2",
                "start": datetime.now(UTC).isoformat(),
                "end": end,
                "reduction_kw": 80,
            }
            await pub.publish(f"{PREFIX}/events/dr", json.dumps(event).encode(), qos=1)
        assert len(sink.prices) == 20 and not ingest.connected.is_set()
        reconnect.set()
        await wait_for(lambda: len({r.value for r in sink.prices}) == 40 and sink.events, 20)
        await wait_for(ingest.connected.is_set)
    assert {r.value for r in sink.prices} == {float(i) for i in range(40)}
    assert [e.id for e in sink.events] == ["dr-2"]
    assert ingest.supervisor.connections == 2
    assert states[:3] == [True, False, True]


async def test_expired_price_is_not_delivered_after_an_absence(broker: Mosquitto) -> None:
    sink = ListSink(set())
    async with MqttIngest(options(broker), sink) as ingest:
        await asyncio.wait_for(ingest.connected.wait(), 10)
    # Away: the broker queues QoS 1 messages on our persistent session, minus the expired ones.
    async with publisher(broker) as pub:
        short = Properties(PacketTypes.PUBLISH)
        short.MessageExpiryInterval = 1
        long = Properties(PacketTypes.PUBLISH)
        long.MessageExpiryInterval = 3600
        await pub.publish(f"{PREFIX}/price/power", price(11.0), qos=1, properties=short)
        await pub.publish(f"{PREFIX}/price/power", price(22.0), qos=1, properties=long)
    await asyncio.sleep(2.2)
    async with MqttIngest(options(broker), sink) as ingest:
        await wait_for(lambda: len(sink.prices) >= 1)
        await asyncio.sleep(0.3)
    assert [r.value for r in sink.prices] == [22.0]


async def test_refused_credentials_are_fatal_not_retried() -> None:
    with Mosquitto(extra_conf="") as broker:
        pass
    refusing = Mosquitto()
    refusing.conf_path.write_text(
        refusing.conf_path.read_text().replace("allow_anonymous true", "allow_anonymous false")
    )
    with refusing:
        ingest = MqttIngest(options(refusing, username="u", password="p"), ListSink(set()))
        with pytest.raises(Fatal):
            await asyncio.wait_for(ingest.supervisor.run(), 10)
        assert ingest.supervisor.connections == 0
    del broker


CHILD = """
import asyncio, sys
from drivers.telemetry.mqtt import MqttIngest, MqttOptions
from tests.drivers.telemetry.test_mqtt import ListSink

async def main():
    options = MqttOptions(host="127.0.0.1", port=int(sys.argv[1]), prefix="wattmux/t", keepalive_seconds=5)
    async with MqttIngest(options, ListSink(set())) as ingest:
        await ingest.connected.wait()
        print("up", flush=True)
        await asyncio.Event().wait()

asyncio.run(main())
"""


ROOT = Path(__file__).resolve().parents[3]


async def test_last_will_says_offline_when_the_daemon_dies(broker: Mosquitto) -> None:
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, str(broker.port), cwd=ROOT, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert child.stdout is not None
        assert await asyncio.wait_for(child.stdout.readline(), 20) == b"up\n"
        seen: list[bytes] = []
        async with publisher(broker, "watcher") as watcher:
            await watcher.subscribe(f"{PREFIX}/status", qos=1)
            messages = aiter(watcher.messages)
            seen.append(bytes((await asyncio.wait_for(anext(messages), 10)).payload))  # type: ignore[arg-type]
            child.kill()  # no DISCONNECT: the broker publishes the will
            seen.append(bytes((await asyncio.wait_for(anext(messages), 10)).payload))  # type: ignore[arg-type]
        assert seen == [b"online", b"offline"]
    finally:
        if child.returncode is None:
            child.kill()
        await child.wait()
