"""MQTT over TLS with a password and the shipped ACL, against a real mosquitto."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiomqtt
import pytest

from drivers.errors import Fatal
from drivers.sim.broker import Mosquitto
from drivers.telemetry.mqtt import MqttIngest, MqttOptions
from tests.drivers.telemetry.test_mqtt import ListSink

pytestmark = pytest.mark.system

ACL = Path(__file__).resolve().parents[3] / "deploy" / "mosquitto" / "wattmux.acl"


def run(*args: str, cwd: Path) -> None:
    subprocess.run(args, cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[tuple[Mosquitto, Path]]:
    run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "ca.key",
        "-out", "ca.crt", "-days", "1", "-subj", "/CN=wattmux test CA", cwd=tmp_path)  # fmt: skip
    run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "server.key",
        "-out", "server.csr", "-subj", "/CN=127.0.0.1", cwd=tmp_path)  # fmt: skip
    (tmp_path / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    run("openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.crt", "-days", "1", "-extfile", "san.ext", cwd=tmp_path)  # fmt: skip
    run("mosquitto_passwd", "-b", "-c", "passwd", "wattmux", "s3cret", cwd=tmp_path)
    run("mosquitto_passwd", "-b", "passwd", "price-feed", "gw-pass", cwd=tmp_path)
    broker = Mosquitto(directory=tmp_path)
    conf = broker.conf_path.read_text().replace("allow_anonymous true", "allow_anonymous false")
    conf += (
        f"cafile {tmp_path}/ca.crt\ncertfile {tmp_path}/server.crt\nkeyfile {tmp_path}/server.key\n"
        f"password_file {tmp_path}/passwd\nacl_file {ACL}\n"
    )
    broker.conf_path.write_text(conf)
    with broker:
        yield broker, tmp_path / "ca.crt"


def options(broker: Mosquitto, ca: Path, password: str) -> MqttOptions:
    return MqttOptions(
        host=broker.host,
        port=broker.port,
        tls=True,
        ca_file=ca,
        username="wattmux",
        password=password,
        prefix="wattmux/tls",
        backoff_base_seconds=0.05,
    )


async def test_tls_with_credentials_and_acl(tls_broker: tuple[Mosquitto, Path]) -> None:
    broker, ca = tls_broker
    sink = ListSink(set())
    start = datetime.now(UTC)
    price = {
        "usd_per_mwh": 33.0,
        "interval_start": start.isoformat(),
        "interval_end": (start + timedelta(minutes=15)).isoformat(),
    }
    gateway = aiomqtt.Client(
        broker.host,
        broker.port,
        username="price-feed",
        password="gw-pass",
        tls_params=aiomqtt.TLSParameters(ca_certs=str(ca)),
        identifier="gw",
    )
    async with MqttIngest(options(broker, ca, "s3cret"), sink) as ingest, gateway:
        await asyncio.wait_for(ingest.connected.wait(), 10)
        await gateway.publish("wattmux/tls/price/power", json.dumps(price).encode(), qos=1)
        for _ in range(500):
            if sink.prices:
                break
            await asyncio.sleep(0.01)
    assert [r.value for r in sink.prices] == [33.0]


async def test_tls_wrong_password_is_fatal(tls_broker: tuple[Mosquitto, Path]) -> None:
    broker, ca = tls_broker
    ingest = MqttIngest(options(broker, ca, "wrong"), ListSink(set()))
    with pytest.raises(Fatal):
        await asyncio.wait_for(ingest.supervisor.run(), 10)
