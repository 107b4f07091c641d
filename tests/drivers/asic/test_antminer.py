"""Stock Antminer personality over real TCP and HTTP: web-CGI sleep with digest auth, read-back."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import pytest

from drivers.asic.antminer import AntminerDriver
from drivers.asic.config import AntminerOptions
from drivers.sim.antminer_web import SimAntminerWeb
from drivers.sim.site import SimSite
from scheduler.core.model import Device, OutcomeStatus, Pool, Workload
from tests.fakes import asic

POOLS = {"main": Pool("main", "stratum+tcp://main.example:3333", "site.w1")}


def make_device(index: int) -> Device:
    return asic(
        f"ant-{index}", "S19j Pro", driver="antminer", address=f"127.35.1.{index + 1}", port=0
    )


@dataclasses.dataclass
class Stock:
    site: SimSite
    web: SimAntminerWeb
    device: Device
    options: AntminerOptions


@pytest.fixture
async def stock() -> AsyncIterator[Stock]:
    async with AsyncExitStack() as stack:
        site = await stack.enter_async_context(
            SimSite([make_device(0)], list(POOLS.values()), port=0)
        )
        miner = next(iter(site.miners.values()))
        miner.become_stock_bmminer()
        web = await stack.enter_async_context(SimAntminerWeb(miner, mode_delay_seconds=0.3))
        options = AntminerOptions(
            web_port=web.port,
            timeout_seconds=1.0,
            confirm_timeout_seconds=3.0,
            confirm_interval_seconds=0.05,
        )
        yield Stock(site, web, site.devices[0], options)


async def test_telemetry_without_a_power_reading_is_estimated_and_flagged(stock: Stock) -> None:
    driver = AntminerDriver(POOLS, stock.options)
    sample = await driver.collect(stock.device)
    assert sample.workload == Workload.mine("main")
    assert sample.power_estimated
    assert sample.power_w == pytest.approx(3068.0, rel=0.03)  # nominal x measured hash share


async def test_sleep_goes_through_the_web_interface_and_is_confirmed_by_read_back(
    stock: Stock,
) -> None:
    driver = AntminerDriver(POOLS, stock.options)
    miner = next(iter(stock.site.miners.values()))
    outcome = await driver.apply(stock.device, Workload.sleep())
    assert outcome.status is OutcomeStatus.CONFIRMED, outcome.detail
    assert miner.asleep
    assert "POST /cgi-bin/set_miner_conf.cgi" in stock.web.requests
    assert stock.web.unauthorized >= 1  # digest: challenged first, then authorised
    asleep = await driver.collect(stock.device)
    assert asleep.workload == Workload.sleep() and asleep.power_w == 20.0
    assert asleep.power_estimated
    awake = await driver.apply(stock.device, Workload.mine("main"))
    assert awake.status is OutcomeStatus.CONFIRMED and not miner.asleep
    assert "curtail" not in miner.command_counts  # never the LuxOS path on stock firmware


async def test_a_mode_change_slower_than_the_deadline_is_unconfirmed(stock: Stock) -> None:
    stock.web.mode_delay_seconds = 30.0
    options = stock.options.model_copy(update={"confirm_timeout_seconds": 0.3})
    outcome = await AntminerDriver(POOLS, options).apply(stock.device, Workload.sleep())
    assert outcome.status is OutcomeStatus.UNCONFIRMED
    assert outcome.observed == Workload.mine("main")


async def test_wrong_web_credentials_are_fatal_not_retried(stock: Stock) -> None:
    options = stock.options.model_copy(update={"web_password": "wrong"})
    outcome = await AntminerDriver(POOLS, options).apply(stock.device, Workload.sleep())
    assert outcome.status is OutcomeStatus.REJECTED and "login refused" in outcome.detail


async def test_power_targets_are_refused_on_stock_firmware(stock: Stock) -> None:
    outcome = await AntminerDriver(POOLS, stock.options).apply(
        stock.device, Workload.mine("main", 0.8)
    )
    assert outcome.status is OutcomeStatus.REJECTED and "power targets" in outcome.detail
