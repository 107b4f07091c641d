"""End to end over real TCP: simulated miners, the daemon, its store, API and /metrics."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from drivers.market.static import StaticMarketFeed
from drivers.sim.miner import Fault
from drivers.sim.site import SimSite
from scheduler.api.auth import hash_token, new_token
from scheduler.config.devices import pools_of
from scheduler.config.loading import parse_config
from scheduler.config.schema import WattmuxConfig
from scheduler.core.model import Reading
from scheduler.daemon import Daemon
from scheduler.store.journal import Store
from tests.conftest import free_port

pytestmark = pytest.mark.system

# 2024-08-20: the S21's break-even is about 101.7 USD/MWh at a 0 % pool fee.
MARKET = {
    "btc_price_usd": 59_013.80,
    "difficulty": 86_871_474_313_762.0,
    "block_subsidy_btc": 3.125,
    "fees_btc_per_block": 0.0,
}
CHEAP = 20.0
TOKEN = new_token()
AUTH = {"authorization": f"Bearer {TOKEN}"}
SPIKE = 2450.22


class PriceFeed:
    """A power price the test sets, observed fresh at every fetch."""

    name = "test-price"

    def __init__(self, price_usd_per_mwh: float) -> None:
        self.price_usd_per_mwh = price_usd_per_mwh

    async def fetch(self) -> dict[str, Reading]:
        return {
            "power_price_usd_per_mwh": Reading(self.price_usd_per_mwh, time.monotonic(), self.name)
        }


def free_port_on(address: str) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


def site_config(tmp_path: Path, first_address: str, count: int, port: int) -> WattmuxConfig:
    data: dict[str, Any] = {
        "site": {"name": "e2e", "power_cap_kw": 1000.0},
        "control": {"tick_seconds": 0.2},
        "economics": {"pool_fee": 0.0},
        "guard": {"min_dwell_seconds": 0.0, "stale_price_seconds": 60.0},
        "store": {"path": str(tmp_path / "wattmux.sqlite")},
        "api": {
            "listen": f"127.0.0.1:{free_port()}",
            "tokens": [{"name": "e2e", "role": "viewer", "sha256": hash_token(TOKEN)}],
        },
        "pools": [
            {"name": "main", "url": "stratum+tcp://main.pool.invalid:3333", "user": "w"},
            {"name": "backup", "url": "stratum+tcp://backup.pool.invalid:3333", "user": "w"},
        ],
        "device_ranges": [
            {
                "id_prefix": "s21",
                "model": "S21",
                "first_address": first_address,
                "count": count,
                "pools": ["main", "backup"],
                "options": {
                    "port": port,
                    "timeout_seconds": 1.0,
                    "confirm_timeout_seconds": 2.0,
                    "confirm_interval_seconds": 0.05,
                },
            }
        ],
    }
    return parse_config(data, "<e2e>", environ={})


@dataclass
class Running:
    config: WattmuxConfig
    daemon: Daemon
    site: SimSite
    price: PriceFeed

    @property
    def base_url(self) -> str:
        return f"http://{self.config.api.listen}"


async def eventually(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


@pytest.fixture
async def running(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Running]:
    first_address, count = request.param
    port = free_port_on(first_address)
    config = site_config(tmp_path, first_address, count, port)
    price = PriceFeed(CHEAP)
    daemon = Daemon(config, feeds=[StaticMarketFeed(MARKET), price])
    stop = asyncio.Event()
    async with SimSite(config.all_devices(), list(pools_of(config).values()), port=port) as site:
        task = asyncio.create_task(daemon.run(stop), name="daemon.run")
        await asyncio.wait_for(daemon.ready.wait(), 10)
        try:
            yield Running(config, daemon, site, price)
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)


def metric_samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


@pytest.mark.parametrize("running", [("127.66.0.1", 6)], indirect=True)
async def test_spike_sleeps_every_asic_within_two_ticks_and_cheap_power_wakes_them(
    running: Running,
) -> None:
    miners = running.site.miners.values()
    loop = running.daemon.loop
    assert loop is not None
    assert not any(m.asleep for m in miners)

    running.price.price_usd_per_mwh = SPIKE
    ticks_at_change = loop.ticks
    await eventually(lambda: all(m.asleep for m in miners))
    assert loop.ticks - ticks_at_change <= 2

    async with httpx.AsyncClient(base_url=running.base_url, headers=AUTH) as http:
        await eventually(
            lambda: all(
                str(w) == "sleep" for w in running.daemon.state.snapshot(0).current.values()
            )
        )
        metrics = (await http.get("/metrics")).text
        devices = metric_samples(metrics, "wattmux_devices")
        assert devices[(("state", "sleeping"),)] == 6
        assert devices[(("state", "mining"),)] == 0
        assert metric_samples(metrics, "wattmux_power_price_usd_per_mwh")[()] == SPIKE
        commands = metric_samples(metrics, "wattmux_commands_total")
        assert commands[(("outcome", "confirmed"),)] == 6
        plan = (await http.get("/v1/plan")).json()
        assert {(p["workload"], p["reason"]) for p in plan} == {("sleep", "price_above_breakeven")}
        assert all(p["expected_margin_usd_per_hour"] < 0 for p in plan)

        running.price.price_usd_per_mwh = CHEAP
        ticks_at_change = loop.ticks
        await eventually(lambda: not any(m.asleep for m in miners))
        assert loop.ticks - ticks_at_change <= 2
        await eventually(
            lambda: all(
                str(w) == "mine(main)" for w in running.daemon.state.snapshot(0).current.values()
            )
        )
        await running.daemon.loop.reconciler.wait_idle()  # type: ignore[union-attr]

    with Store.open(running.config.store.path) as store:
        commands_log = store.audit(kind="command", limit=1000)
        decisions = store.audit(kind="decision", limit=1000)
    by_device: dict[str, list[tuple[str, str, str | None]]] = {}
    for record in reversed(commands_log):
        by_device.setdefault(record.device_id, []).append(
            (str(record.workload), record.reason, record.outcome)
        )
    assert len(by_device) == 6
    for history in by_device.values():
        assert history == [
            ("sleep", "price_above_breakeven", "confirmed"),
            ("mine(main)", "price_below_breakeven", "confirmed"),
        ]
    assert {(str(d.workload), d.reason) for d in decisions} >= {
        ("sleep", "price_above_breakeven"),
        ("mine(main)", "price_below_breakeven"),
    }


@pytest.mark.parametrize("running", [("127.66.1.1", 4)], indirect=True)
async def test_miners_that_fail_are_counted_and_never_commanded(running: Running) -> None:
    miners = list(running.site.miners.values())
    healthy, closing, garbage, hanging = miners
    closing.fault = Fault.CLOSE
    garbage.fault = Fault.GARBAGE
    hanging.fault = Fault.HANG
    loop = running.daemon.loop
    assert loop is not None
    await eventually(lambda: not running.daemon.state.status[hanging.device.id].reachable)
    await eventually(lambda: not running.daemon.state.status[garbage.device.id].reachable)
    await eventually(lambda: not running.daemon.state.status[closing.device.id].reachable)

    running.price.price_usd_per_mwh = SPIKE
    ticks = loop.ticks
    await eventually(lambda: healthy.asleep)
    await eventually(lambda: loop.ticks >= ticks + 3)  # the daemon keeps going
    assert not closing.asleep and not garbage.asleep and not hanging.asleep

    async with httpx.AsyncClient(base_url=running.base_url, headers=AUTH) as http:
        metrics = (await http.get("/metrics")).text
        errors = metric_samples(metrics, "wattmux_poll_errors_total")
        assert errors[(("reason", "unavailable"),)] >= 1  # closed without replying
        assert errors[(("reason", "malformed"),)] >= 1  # broken JSON
        assert errors[(("reason", "timeout"),)] >= 1  # never answers
        up = metric_samples(metrics, "wattmux_device_up")
        assert up[(("device", healthy.device.id),)] == 1
        assert up[(("device", hanging.device.id),)] == 0
        devices = {d["id"]: d for d in (await http.get("/v1/devices")).json()}
        assert devices[garbage.device.id]["reachable"] is False
        assert devices[garbage.device.id]["last_error"]

    # the devices come back: now they can be read, so they are acted on
    for miner in (closing, garbage, hanging):
        miner.fault = None
    await eventually(lambda: all(m.asleep for m in miners))
