"""Site power control end to end: simulated miners, a simulated SunSpec meter on pymodbus's
Modbus TCP server reporting their real draw plus a base load, and the daemon following an
operator's target over its API until the meter confirms it, then releasing it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from drivers.market.static import StaticMarketFeed
from drivers.meter.maps import load_map
from drivers.sim.meter import SimMeter, site_draw
from drivers.sim.site import SimSite
from scheduler.api.auth import hash_token, new_token
from scheduler.cli.main import main
from scheduler.config.devices import pools_of
from scheduler.config.loading import parse_config
from scheduler.daemon import Daemon
from scheduler.store.meterlog import read_meter_minutes
from scheduler.store.operator import ControlStore
from tests.conftest import free_port
from tests.test_end_to_end import CHEAP, MARKET, PriceFeed, free_port_on, metric_samples

pytestmark = pytest.mark.system

TOKEN = new_token()
AUTH = {"authorization": f"Bearer {TOKEN}"}
BASE_LOAD_W = 2000.0


async def eventually(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


async def test_the_daemon_follows_a_target_on_the_meter_and_restores_on_release(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    address, count = "127.67.0.1", 8
    port = free_port_on(address)
    meter_port = free_port()
    data: dict[str, Any] = {
        "site": {"name": "grid", "power_cap_kw": 1000.0},
        "control": {"tick_seconds": 0.2},
        "economics": {"pool_fee": 0.0},
        "guard": {"min_dwell_seconds": 0.0, "stale_price_seconds": 60.0},
        "store": {"path": str(tmp_path / "wattmux.sqlite")},
        "api": {
            "listen": f"127.0.0.1:{free_port()}",
            "tokens": [{"name": "op", "role": "operator", "sha256": hash_token(TOKEN)}],
        },
        "meter": {
            "source": "modbus",
            "host": "127.0.0.1",
            "port": meter_port,
            "map": "sunspec-203",
            "poll_seconds": 0.1,
        },
        "setpoint": {"confirm_seconds": 0.5, "restore_batch": 2},
        "pools": [{"name": "main", "url": "stratum+tcp://main.pool.invalid:3333", "user": "w"}],
        "device_ranges": [
            {
                "id_prefix": "s21",
                "model": "S21",
                "first_address": address,
                "count": count,
                "pools": ["main"],
                "options": {
                    "port": port,
                    "timeout_seconds": 1.0,
                    "confirm_timeout_seconds": 2.0,
                    "confirm_interval_seconds": 0.05,
                },
            }
        ],
    }
    config = parse_config(data, "<grid>", environ={})
    daemon = Daemon(config, feeds=[StaticMarketFeed(MARKET), PriceFeed(CHEAP)])
    stop = asyncio.Event()
    async with SimSite(config.all_devices(), list(pools_of(config).values()), port=port) as site:
        draw = site_draw(site.total_power_w, base_load_w=BASE_LOAD_W)
        async with SimMeter(load_map("sunspec-203"), draw, port=meter_port):
            task = asyncio.create_task(daemon.run(stop), name="daemon.run")
            try:
                await asyncio.wait_for(daemon.ready.wait(), 10)
                full_w = draw()
                target_kw = round((full_w - 14_000.0) / 1000.0, 1)
                base_url = f"http://{config.api.listen}"
                await asyncio.sleep(1.5)  # meter readings before the event: the M&V baseline
                async with httpx.AsyncClient(base_url=base_url, headers=AUTH) as http:
                    put = await http.put("/v1/setpoint", json={"kw": target_kw, "id": "t-1"})
                    assert put.status_code == 200, put.text

                    async def state() -> str:
                        body = (await http.get("/v1/setpoint")).json()
                        return str(body["target"]["state"]) if body["target"] else "none"

                    deadline = time.monotonic() + 10
                    while await state() != "confirmed":
                        assert time.monotonic() < deadline, (
                            await http.get("/v1/setpoint")
                        ).text + str(draw())
                        await asyncio.sleep(0.05)
                    metered = draw()
                    assert abs(metered - target_kw * 1000) <= 0.02 * target_kw * 1000
                    asleep = [m for m in site.miners.values() if m.asleep]
                    assert len(asleep) == 4  # sleep only: cgminer takes no power targets
                    meter = (await http.get("/v1/meter")).json()
                    assert meter["configured"] and meter["power_kw"] is not None
                    assert meter["disagreement_ratio"] == pytest.approx(
                        BASE_LOAD_W / metered, abs=0.03
                    )
                    metrics = (await http.get("/metrics")).text
                    assert (
                        metric_samples(metrics, "wattmux_setpoint_state")[(("state", "confirmed"),)]
                        == 1.0
                    )
                    assert metric_samples(metrics, "wattmux_site_meter_up")[()] == 1.0
                    again = await http.put("/v1/setpoint", json={"kw": target_kw, "id": "t-1"})
                    assert again.json()["outcome"] == "duplicate"

                    await asyncio.sleep(1.1)  # a reading at the target for the M&V
                    assert (await http.delete("/v1/setpoint")).status_code == 200
                    mv = (await http.get("/v1/events/operator:t-1/mv")).json()
                    assert mv["baseline_kw"] == pytest.approx(full_w / 1000, rel=0.02)
                    assert mv["target_kw"] == target_kw
                    assert 0 <= mv["response_seconds"] < 5
                    assert mv["delivered_kw"] > 0
                    csv = await http.get("/v1/events/operator:t-1/mv", params={"format": "csv"})
                    assert csv.headers["content-type"].startswith("text/csv")
                    assert csv.text.startswith("interval_start,metered_kw")
                    chart = await http.get("/v1/events/operator:t-1/mv", params={"format": "png"})
                    assert chart.status_code == 200, chart.text
                    assert chart.content.startswith(b"\x89PNG")
                    missing = await http.get("/v1/events/nope/mv")
                    assert missing.status_code == 404
                    cli = ["--url", base_url, f"--token={TOKEN}"]
                    capsys.readouterr()
                    assert await asyncio.to_thread(main, ["mv", "operator:t-1", "--csv", *cli]) == 0
                    assert capsys.readouterr().out.startswith("interval_start,metered_kw")
                    assert await asyncio.to_thread(main, ["setpoint", *cli]) == 0
                    assert "no target" in capsys.readouterr().out
                    assert await asyncio.to_thread(main, ["setpoint", "-5", *cli]) == 5
                    await eventually(lambda: not any(m.asleep for m in site.miners.values()))
            finally:
                stop.set()
                await asyncio.wait_for(task, 10)
            # A restart: the event's M&V comes from the store (per-minute means, its inputs)
            again, stop_again = (
                Daemon(config, feeds=[StaticMarketFeed(MARKET), PriceFeed(CHEAP)]),
                asyncio.Event(),
            )
            task = asyncio.create_task(again.run(stop_again), name="daemon.run.again")
            try:
                await asyncio.wait_for(again.ready.wait(), 10)
                async with httpx.AsyncClient(base_url=base_url, headers=AUTH) as http:
                    reply = await http.get("/v1/events/operator:t-1/mv")
                    assert reply.status_code == 200, reply.text
                    stored = reply.json()
                    assert (stored["start"], stored["end"]) == (mv["start"], mv["end"])
                    assert (stored["source"], stored["target_kw"]) == ("operator", target_kw)
            finally:
                stop_again.set()
                await asyncio.wait_for(task, 10)
            with ControlStore.open(config.store.path) as store:  # each stop wrote its readings
                minutes = read_meter_minutes(
                    store, datetime(2000, 1, 1, tzinfo=UTC), datetime.now(UTC)
                )
            assert minutes and all(power > BASE_LOAD_W for _, power in minutes)
