"""sd_notify over a real unix datagram socket: READY after the first tick, WATCHDOG only on progress."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from drivers.sim.site import SimSite
from scheduler.config.devices import pools_of
from scheduler.config.loading import load_config
from scheduler.control.systemd import (
    SystemdHeartbeat,
    SystemdNotifier,
    notify_address,
    watchdog_seconds,
)
from scheduler.core.model import Reading
from tests.deploy.sim_daemon import free_port_on, sim_daemon, wait_ticks


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    """A unix datagram socket standing in for systemd's notify socket."""
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setblocking(False)
    try:
        yield path, sock
    finally:
        sock.close()


def drain(sock: socket.socket) -> list[str]:
    messages = []
    while True:
        try:
            messages.append(sock.recv(4096).decode())
        except BlockingIOError:
            return messages


def test_notify_sends_one_datagram_of_key_value_lines(listener: tuple[str, socket.socket]) -> None:
    path, sock = listener
    notifier = SystemdNotifier.from_environ({"NOTIFY_SOCKET": path})
    assert notifier.enabled
    assert notifier.notify(READY="1", STATUS="running")
    assert drain(sock) == ["READY=1\nSTATUS=running"]


def test_abstract_namespace_socket() -> None:
    name = f"wattmux-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(notify_address("@" + name))
        sock.settimeout(2)
        assert SystemdNotifier("@" + name).notify(WATCHDOG="1")
        assert sock.recv(100) == b"WATCHDOG=1"


def test_without_notify_socket_nothing_is_sent() -> None:
    notifier = SystemdNotifier.from_environ({})
    assert not notifier.enabled
    assert not notifier.notify(READY="1")


def test_a_missing_socket_is_logged_once_and_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = SystemdNotifier(str(tmp_path / "gone.sock"))
    with caplog.at_level(logging.WARNING):
        assert not notifier.notify(WATCHDOG="1")
        assert not notifier.notify(WATCHDOG="1")
    assert len([r for r in caplog.records if "sd_notify" in r.message]) == 1


def test_watchdog_seconds() -> None:
    assert watchdog_seconds({"WATCHDOG_USEC": "30000000"}) == 30.0
    pid = str(os.getpid())
    assert watchdog_seconds({"WATCHDOG_USEC": "1500000", "WATCHDOG_PID": pid}) == 1.5
    assert watchdog_seconds({"WATCHDOG_USEC": "1500000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_seconds({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_seconds({}) is None


def test_heartbeat_ready_once_then_watchdog(listener: tuple[str, socket.socket]) -> None:
    path, sock = listener
    heartbeat = SystemdHeartbeat(SystemdNotifier(path))
    heartbeat.tick_done(1)
    heartbeat.tick_done(2)
    heartbeat.tick_done(3)
    heartbeat.stopping()
    messages = drain(sock)
    assert messages[0].startswith("READY=1\n")
    assert messages[1:] == ["WATCHDOG=1", "WATCHDOG=1", "STOPPING=1\nSTATUS=stopping"]


class GateFeed:
    """A feed whose fetch hangs while ``open`` is cleared: a control loop stuck in a tick."""

    name = "gate"

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.open.set()

    async def fetch(self) -> dict[str, Reading]:
        await self.open.wait()
        return {}


async def test_daemon_is_ready_after_first_tick_and_pings_only_while_ticking(
    tmp_path: Path, listener: tuple[str, socket.socket]
) -> None:
    path, sock = listener
    gate = GateFeed()
    gate.open.clear()  # the first tick cannot complete: no READY yet
    task_ready: list[str] = []

    async def release_later() -> None:
        await asyncio.sleep(1.0)
        task_ready.extend(drain(sock))  # nothing may arrive while the first tick hangs
        gate.open.set()

    releaser = asyncio.create_task(release_later())
    async with sim_daemon(
        tmp_path, subnet=4, extra_feeds=[gate], notifier=SystemdNotifier(path)
    ) as sim:
        await releaser
        assert task_ready == []
        await wait_ticks(sim, 5)
        first, *rest = drain(sock)
        assert first.startswith("READY=1\n")
        assert rest and set(rest) == {"WATCHDOG=1"}

        gate.open.clear()  # the loop hangs inside its next tick
        await asyncio.sleep(0.5)
        drain(sock)  # a tick that was already past the feeds may still complete
        ticks = sim.daemon.loop.ticks  # type: ignore[union-attr]
        await asyncio.sleep(1.5)  # six tick periods
        assert drain(sock) == []
        assert sim.daemon.loop.ticks == ticks  # type: ignore[union-attr]

        gate.open.set()  # progress again: pings resume
        await wait_ticks(sim, ticks + 2)
        assert "WATCHDOG=1" in drain(sock)
    assert drain(sock)[-1] == "STOPPING=1\nSTATUS=stopping"


@pytest.mark.system
async def test_wattmux_run_under_a_notify_socket(
    tmp_path: Path, listener: tuple[str, socket.socket]
) -> None:
    """The real ``wattmux run`` process: READY=1, then WATCHDOG=1 per tick, STOPPING=1 on SIGTERM."""
    path, sock = listener
    port = free_port_on("127.80.9.1")
    api = f"127.80.9.254:{free_port_on('127.80.9.254')}"
    config = tmp_path / "wattmux.toml"
    config.write_text(
        f"""
[site]
name = "notify"
power_cap_kw = 100.0

[control]
tick_seconds = 0.2

[store]
path = "{tmp_path / "store.sqlite"}"

[api]
listen = "{api}"

[[pools]]
name = "main"
url = "stratum+tcp://main.pool.invalid:3333"
user = "w"

[[device_ranges]]
id_prefix = "s21"
model = "S21"
first_address = "127.80.9.1"
count = 2
pools = ["main"]
options = {{ port = {port}, timeout_seconds = 0.5 }}

[[market]]
driver = "static"
power_price_usd_per_mwh = 30.0
btc_price_usd = 60000.0
difficulty = 86871474313762.0
block_subsidy_btc = 3.125
"""
    )
    parsed = load_config(config)
    async with SimSite(parsed.all_devices(), list(pools_of(parsed).values()), port=port):
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "scheduler.cli.main",
            "run",
            "--config",
            str(config),
            env={**os.environ, "NOTIFY_SOCKET": path},
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        messages: list[str] = []
        try:
            for _ in range(300):
                messages.extend(drain(sock))
                if messages.count("WATCHDOG=1") >= 3:
                    break
                await asyncio.sleep(0.05)
        finally:
            process.terminate()
            _, err = await asyncio.wait_for(process.communicate(), 30)
        messages.extend(drain(sock))
    assert process.returncode == 0, err.decode()
    assert messages[0].startswith("READY=1\nSTATUS=running"), messages
    assert messages.count("WATCHDOG=1") >= 3
    assert messages[-1] == "STOPPING=1\nSTATUS=stopping"
