"""deploy/mosquitto: a real mosquitto with the shipped config refuses anonymous clients and enforces the ACL.

The broker runs the shipped ``wattmux.conf`` and ``wattmux.acl`` with only the
file paths and listener ports rewritten (free ports on 127.80.7.1; certificates
made by openssl for the test; ``user root`` added when the tests run as root,
so mosquitto can read the test's private temporary directory).  Clients are
aiomqtt (MQTT 3.1.1), as the daemon's MQTT ingest uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
import pytest

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto"
HOST = "127.80.7.1"
MOSQUITTO = shutil.which("mosquitto") or (
    "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
)
PASSWD = shutil.which("mosquitto_passwd")
OPENSSL = shutil.which("openssl")
IDENTITIES = {
    "wattmux": "daemon-secret",
    "telemetry": "telemetry-secret",
    "price-feed": "price-secret",
    "dr-gateway": "dr-secret",
    "observer": "observer-secret",
}

REFUSED = r"[Nn]ot authori[sz]ed|[Bb]ad user name or password"

pytestmark = pytest.mark.skipif(
    None in (MOSQUITTO, PASSWD, OPENSSL), reason="mosquitto, mosquitto_passwd or openssl missing"
)


@dataclass
class Broker:
    port: int
    tls_port: int
    ca: Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def make_certificates(directory: Path) -> None:
    """A throwaway CA and a server certificate for HOST."""
    assert OPENSSL is not None
    directory.mkdir()

    def run(*args: str) -> None:
        subprocess.run([OPENSSL, *args], cwd=directory, check=True, capture_output=True, timeout=60)

    run(
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=wattmux test CA",
    )
    run(
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        f"/CN={HOST}",
    )
    (directory / "san.ext").write_text(f"subjectAltName=IP:{HOST}\n")
    run(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    )


def broker_config(tmp_path: Path, port: int, tls_port: int) -> Path:
    text = (DEPLOY / "wattmux.conf").read_text()
    for line in ("listener 1883 127.0.0.1", "listener 8883"):
        assert f"\n{line}\n" in text, line
    text = text.replace("listener 1883 127.0.0.1", f"listener {port} {HOST}")
    text = text.replace("listener 8883", f"listener {tls_port} {HOST}")
    text = text.replace("/etc/mosquitto/", f"{tmp_path}/")
    if os.geteuid() == 0:
        text += "\nuser root\n"
    path = tmp_path / "mosquitto.conf"
    path.write_text(text)
    shutil.copy(DEPLOY / "wattmux.acl", tmp_path / "wattmux.acl")
    assert PASSWD is not None
    passwd = tmp_path / "wattmux.passwd"
    passwd.touch()
    for user, password in IDENTITIES.items():
        subprocess.run([PASSWD, "-b", str(passwd), user, password], check=True, timeout=30)
    return path


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    make_certificates(tmp_path / "certs")
    port, tls_port = free_port(), free_port()
    config = broker_config(tmp_path, port, tls_port)
    assert MOSQUITTO is not None
    log = (tmp_path / "mosquitto.log").open("wb")
    process = subprocess.Popen(  # cwd: where the shipped config's persistence writes
        [MOSQUITTO, "-c", str(config)], stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path
    )
    try:
        for _ in range(100):
            with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.2):
                break
            assert process.poll() is None, (tmp_path / "mosquitto.log").read_text()
            time.sleep(0.05)
        yield Broker(port, tls_port, tmp_path / "certs" / "ca.crt")
    finally:
        process.terminate()
        process.wait(10)
        log.close()


@contextlib.asynccontextmanager
async def client(
    broker: Broker, user: str | None, password: str | None = None, *, tls: bool = False
) -> AsyncIterator[aiomqtt.Client]:
    tls_context = ssl.create_default_context(cafile=str(broker.ca)) if tls else None
    async with aiomqtt.Client(
        HOST,
        broker.tls_port if tls else broker.port,
        username=user,
        password=password if password is not None else IDENTITIES.get(user or ""),
        tls_context=tls_context,
        timeout=5,
    ) as connected:
        yield connected


async def collect(subscriber: aiomqtt.Client, until: str) -> set[tuple[str, str]]:
    """(topic, publisher) of every message received until the marker topic arrives."""
    seen: set[tuple[str, str]] = set()
    async with asyncio.timeout(10):
        async for message in subscriber.messages:
            topic = message.topic.value
            if topic == until:
                return seen
            assert isinstance(message.payload, bytes)
            seen.add((topic, message.payload.decode()))
    return seen


def test_one_shipped_config_keeps_the_daemons_session() -> None:
    assert sorted(p.name for p in DEPLOY.parent.glob("mosquitto*")) == ["mosquitto"]
    lines = (DEPLOY / "wattmux.conf").read_text().splitlines()
    assert "persistence true" in lines and "max_queued_messages 10000" in lines


@pytest.mark.system
@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
async def test_anonymous_and_wrong_passwords_are_refused(broker: Broker, tls: bool) -> None:
    with pytest.raises(aiomqtt.MqttError, match=REFUSED):
        async with client(broker, None, tls=tls):
            pass
    with pytest.raises(aiomqtt.MqttError, match=REFUSED):
        async with client(broker, "wattmux", "wrong", tls=tls):
            pass
    async with client(broker, "wattmux", tls=tls) as daemon:
        await daemon.publish("wattmux/s1/status", b"online", qos=1)


@pytest.mark.system
async def test_tls_listener_needs_tls(broker: Broker) -> None:
    with pytest.raises(aiomqtt.MqttError):
        async with aiomqtt.Client(
            HOST, broker.tls_port, username="wattmux", password=IDENTITIES["wattmux"], timeout=2
        ):
            pass


@pytest.mark.system
async def test_each_identity_reaches_only_its_topics(broker: Broker) -> None:
    async with (
        client(broker, "wattmux") as daemon,
        client(broker, "telemetry") as telemetry,
        client(broker, "price-feed") as price,
        client(broker, "dr-gateway") as dr,
        client(broker, "observer") as observer,
    ):
        await daemon.subscribe("wattmux/#", qos=1)
        await observer.subscribe("wattmux/#", qos=1)
        clients = {
            "wattmux": daemon,
            "telemetry": telemetry,
            "price-feed": price,
            "dr-gateway": dr,
            "observer": observer,
        }
        attempts = [
            ("telemetry", "wattmux/s1/telemetry/m1"),  # allowed
            ("telemetry", "wattmux/s1/price/power"),  # denied: not a price gateway
            ("telemetry", "wattmux/s1/plan/m1"),  # denied
            ("price-feed", "wattmux/s1/price/power"),  # allowed
            ("price-feed", "wattmux/s1/price/other"),  # denied: not the power price
            ("price-feed", "wattmux/s1/events/dr"),  # denied
            ("dr-gateway", "wattmux/s1/events/dr"),  # allowed
            ("dr-gateway", "wattmux/s1/telemetry/m2"),  # denied
            ("observer", "wattmux/s1/price/power"),  # denied: read-only
            ("observer", "wattmux/s1/status"),  # denied: read-only
            ("wattmux", "wattmux/s1/plan/m1"),  # allowed
            ("wattmux", "wattmux/s1/status"),  # allowed
            ("wattmux", "wattmux/s1/telemetry/m3"),  # denied: the daemon does not forge telemetry
        ]
        for name, topic in attempts:  # the payload names the publisher
            await clients[name].publish(topic, name.encode(), qos=1)
        await telemetry.publish("wattmux/s1/telemetry/end", b"", qos=1)
        await daemon.publish("wattmux/s1/plan/end", b"", qos=1)

        assert await collect(daemon, "wattmux/s1/telemetry/end") == {
            ("wattmux/s1/telemetry/m1", "telemetry"),
            ("wattmux/s1/price/power", "price-feed"),
            ("wattmux/s1/events/dr", "dr-gateway"),
            ("wattmux/s1/status", "wattmux"),  # the daemon reads its own status (readwrite)
        }
        assert await collect(observer, "wattmux/s1/plan/end") == {
            ("wattmux/s1/plan/m1", "wattmux"),
            ("wattmux/s1/status", "wattmux"),
        }
