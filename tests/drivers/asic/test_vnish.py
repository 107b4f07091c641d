"""VNish and stock Antminer personalities over real TCP and HTTP on free loopback ports.

Fixtures here are written from what the captured replies show (VNish 1.2.7 on an S21 Pro:
``chain_consumptionN``, the ``DevFee`` pool, ``version`` refused; Hiveon ``total_power``);
the captures themselves are replayed in tests/conformance/test_antminer_luxos_vnish.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import httpx
import pytest
from pydantic import SecretStr

from drivers.asic.antminer import AntminerDriver
from drivers.asic.cgminer_parse import current_pool_url, parse_pools, parse_power_w
from drivers.asic.config import AntminerOptions
from drivers.asic.discover import discover, vnish_identity
from drivers.asic.vnish import VnishDriver, VnishOptions, VnishWebClient, preset_for
from drivers.errors import Fatal, MalformedReply
from drivers.sim.antminer_web import SimAntminerWeb
from drivers.sim.site import SimSite
from drivers.sim.vnish import SimVnishWeb
from scheduler.core.model import Device, OutcomeStatus, Pool, Workload
from tests.fakes import asic

POOLS = {"main": Pool("main", "stratum+tcp://main.example:3333", "site.w1")}


def test_power_from_chain_consumption_and_total_power() -> None:
    vnish_stats = [
        {"Type": "Antminer S21 Pro (Vnish 1.2.7)"},
        {
            "chain_consumption1": 861,
            "chain_consumption2": 861,
            "chain_consumption3": 861,
            "chain_hw1": 29,
        },
    ]
    assert parse_power_w({}, vnish_stats, []) == 2583
    hiveon = [{"total_power": 1345, "chain_power1": 454, "chain_power2": 437}]
    assert parse_power_w({}, hiveon, []) == 1345  # the firmware's own total first
    assert parse_power_w({}, [{"chain_power1": 454, "chain_power2": 437}], []) == 891
    stock = [{"BMMiner": "1.0.0"}, {"temp1": 73, "chain_rate1": "37603.30"}]
    assert parse_power_w({}, stock, []) is None  # stock bmminer reports none
    assert parse_power_w({}, [{"chain_consumption1": "n/a"}], []) is None


def test_the_devfee_pool_is_no_pool_of_the_site() -> None:
    rows = [
        {"POOL": 0, "URL": "stratum.braiins.com:3333", "Status": "Alive", "Stratum Active": True},
        {"POOL": 1, "URL": "DevFee", "User": "DevFee", "Status": "Alive", "Stratum Active": True},
    ]
    pools = parse_pools(rows)
    assert [p.url for p in pools] == ["stratum.braiins.com:3333"]
    assert current_pool_url(pools) == "stratum.braiins.com:3333"


def test_vnish_identity_from_the_stats_type() -> None:
    assert vnish_identity([{"Type": "Antminer S21 Pro (Vnish 1.2.7)"}]) == ("S21 Pro", "1.2.7")
    assert vnish_identity([{"Type": "Antminer S19 Pro"}]) is None
    assert vnish_identity([]) is None


def make_device(index: int, driver: str, model: str = "S21 Pro") -> Device:
    return asic(
        f"{driver}-{index}",
        model,
        driver=driver,
        address=f"127.77.41.{index + 40}",
        port=0,
        hashrate_hs=234e12,
        power_w=3510.0,
        sleep_power_w=20.0,
    )


@dataclasses.dataclass
class Vnish:
    site: SimSite
    web: SimVnishWeb
    device: Device
    options: VnishOptions


@pytest.fixture
async def vnish() -> AsyncIterator[Vnish]:
    async with AsyncExitStack() as stack:
        site = await stack.enter_async_context(
            SimSite([make_device(0, "vnish")], list(POOLS.values()), port=0)
        )
        web = site.companions[site.devices[0].id]
        assert isinstance(web, SimVnishWeb)
        options = VnishOptions(
            web_port=web.port,
            timeout_seconds=1.0,
            confirm_timeout_seconds=3.0,
            confirm_interval_seconds=0.05,
        )
        yield Vnish(site, web, site.devices[0], options)


@pytest.mark.system
async def test_vnish_telemetry_power_is_the_sum_of_the_chains(vnish: Vnish) -> None:
    miner = vnish.site.miners[vnish.device.id]
    sample = await VnishDriver(POOLS, vnish.options).collect(vnish.device)
    assert sample.workload == Workload.mine("main")
    assert not sample.power_estimated
    assert sample.power_w == pytest.approx(miner.power_w(), rel=0.01)
    assert sample.hashrate_hs == pytest.approx(miner.hashrate_hs(), rel=0.01)
    assert [name for name, _ in sample.pools_alive] == ["main"]  # DevFee is not listed
    assert "version" not in miner.command_counts  # VNish refuses it; the driver never asks


@pytest.mark.system
async def test_vnish_is_discovered_through_stats(vnish: Vnish) -> None:
    found = await discover([vnish.device.address], port=vnish.device.port)
    assert [(m.driver, m.model, m.firmware) for m in found] == [("vnish", "S21 Pro", "VNish 1.2.7")]


@pytest.mark.system
async def test_vnish_sleep_and_wake_over_the_web_api_confirmed_by_read_back(
    vnish: Vnish,
) -> None:
    driver = VnishDriver(POOLS, vnish.options)
    miner = vnish.site.miners[vnish.device.id]
    asleep = await driver.apply(vnish.device, Workload.sleep())
    assert asleep.status is OutcomeStatus.CONFIRMED, asleep.detail
    assert miner.asleep
    assert "POST /api/v1/unlock" in vnish.web.requests
    assert "POST /api/v1/mining/stop" in vnish.web.requests
    sample = await driver.collect(vnish.device)
    assert sample.workload == Workload.sleep() and sample.power_w == pytest.approx(20, abs=1)
    awake = await driver.apply(vnish.device, Workload.mine("main"))
    assert awake.status is OutcomeStatus.CONFIRMED, awake.detail
    assert not miner.asleep


@pytest.mark.system
async def test_vnish_wrong_web_password_is_fatal(vnish: Vnish) -> None:
    options = vnish.options.model_copy(update={"web_password": SecretStr("nope")})
    outcome = await VnishDriver(POOLS, options).apply(vnish.device, Workload.sleep())
    assert outcome.status is OutcomeStatus.REJECTED and "password" in (outcome.detail or "")
    assert not vnish.site.miners[vnish.device.id].asleep
    with pytest.raises(Fatal):
        await VnishDriver(POOLS, options).sleep(vnish.device)


@pytest.mark.system
async def test_vnish_web_api_refuses_reads_without_the_token(vnish: Vnish) -> None:
    base = f"http://{vnish.device.address}:{vnish.web.port}/api/v1"
    async with httpx.AsyncClient(timeout=2) as http:
        assert (await http.get(f"{base}/summary")).status_code == 401
        assert (await http.get(f"{base}/info")).json()["fw_version"] == "1.2.7"
        token = (await http.post(f"{base}/unlock", json={"pw": "admin"})).json()["token"]
        summary = (await http.get(f"{base}/summary", headers={"Authorization": token})).json()
    assert summary["miner"]["power_consumption"] == sum(
        chain["power_consumption"] for chain in summary["miner"]["chains"]
    )


@pytest.fixture
async def stock() -> AsyncIterator[tuple[SimSite, SimAntminerWeb, Device]]:
    async with SimSite(
        [make_device(1, "antminer", "S19 Pro")], list(POOLS.values()), port=0
    ) as site:
        web = site.companions[site.devices[0].id]
        assert isinstance(web, SimAntminerWeb)
        yield site, web, site.devices[0]


@pytest.mark.system
async def test_stock_web_stats_watt_is_read_where_the_firmware_measures_it(
    stock: tuple[SimSite, SimAntminerWeb, Device],
) -> None:
    site, web, device = stock
    options = AntminerOptions(web_port=web.port, timeout_seconds=1.0)
    estimated = await AntminerDriver(POOLS, options).collect(device)
    assert estimated.power_estimated  # S19 Pro firmware: no watt in stats.cgi
    web.reports_watt = True  # newer stock firmware (S21 XP Hyd., S23 Hyd.) reports it
    measured = await AntminerDriver(POOLS, options).collect(device)
    assert not measured.power_estimated
    assert measured.power_w == pytest.approx(site.miners[device.id].power_w(), abs=1)
    assert "GET /cgi-bin/stats.cgi" in web.requests


@pytest.mark.system
async def test_stock_set_miner_conf_without_miner_mode_keeps_the_mode(
    stock: tuple[SimSite, SimAntminerWeb, Device],
) -> None:
    site, web, device = stock
    url = f"http://{device.address}:{web.port}/cgi-bin/set_miner_conf.cgi"
    auth = httpx.DigestAuth("root", "root")
    async with httpx.AsyncClient(timeout=2) as http:
        reply = await http.post(url, json={"bitmain-fan-ctrl": False, "pools": []}, auth=auth)
        assert reply.json()["code"] == "M000"
        assert not site.miners[device.id].asleep
        await http.post(url, json={"miner-mode": 1}, auth=auth)
        assert site.miners[device.id].asleep
        bad = await http.post(url, content=b"[1, 2]", auth=auth)
        assert bad.status_code == 400
    found = await discover([device.address], port=device.port)
    assert [(m.driver, m.model, m.firmware) for m in found] == [
        ("antminer", "S19 Pro", "BMMiner 1.0.0 (stock firmware 49.0.1.3)")
    ]


@pytest.mark.system
@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"[" * 100 + b"]" * 100, "nested more than"),
        (b'{"miner_state": "' + b"x" * (2 << 20) + b'"}', "over"),
        (b"<html>busy</html>", "not JSON"),
    ],
)
async def test_vnish_web_replies_are_bounded(body: bytes, why: str) -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.77.41.60", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        device = dataclasses.replace(make_device(20, "vnish"), address="127.77.41.60")
        client = VnishWebClient(VnishOptions(web_port=port, timeout_seconds=2.0))
        with pytest.raises(MalformedReply, match=why):
            await client.status(device)
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.system
async def test_vnish_power_level_through_the_tuned_presets_confirmed_by_read_back(
    vnish: Vnish,
) -> None:
    driver = VnishDriver(POOLS, vnish.options)
    miner = vnish.site.miners[vnish.device.id]
    stock_w = miner.physics.mining_power_w
    outcome = await driver.apply(vnish.device, Workload.mine("main", 0.8))
    assert outcome.status is OutcomeStatus.CONFIRMED, outcome.detail
    # presets are 70/80/90/100 % of the stock power: 0.8 x 3510 W picks the 80 % one
    assert vnish.web.preset == str(round(stock_w * 0.8))
    assert "POST /api/v1/settings" in vnish.web.requests
    sample = await driver.collect(vnish.device)
    assert sample.power_w == pytest.approx(stock_w * 0.8, rel=0.01)
    assert sample.workload == Workload.mine("main", 0.8)
    back = await driver.apply(vnish.device, Workload.mine("main"))
    assert back.status is OutcomeStatus.CONFIRMED, back.detail
    assert vnish.web.preset == str(round(stock_w))
    refused = await driver.apply(vnish.device, Workload.mine("elsewhere", 0.8))
    assert refused.status is OutcomeStatus.REJECTED and "unknown pool" in (refused.detail or "")


def test_preset_for_picks_the_nearest_preset() -> None:
    presets = [("2450", 2450.0), ("2800", 2800.0), ("3150", 3150.0)]
    assert preset_for(presets, 2900) == "2800"
    assert preset_for(presets, 3510) == "3150"  # stock preset a little over the nominal
    assert preset_for(presets, 2975) == "2800"  # a tie: the lower
    assert preset_for(presets, 1000) == "2450"
    assert preset_for([], 3000) is None
