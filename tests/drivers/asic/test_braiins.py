"""Braiins OS over real sockets: cgminer-API reads, gRPC login, pause/resume, power targets."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator

import pytest
from pydantic import SecretStr

from drivers.asic.bos_client import BosClient
from drivers.asic.bos_messages import MinerStatus
from drivers.asic.braiins import BraiinsDriver
from drivers.asic.config import BraiinsOptions
from drivers.asic.discover import discover
from drivers.base import MinerControl, TelemetrySource
from drivers.errors import Fatal, Timeout, Unavailable
from drivers.sim.braiins_grpc import SimBraiinsGrpc
from drivers.sim.miner import SimMiner
from drivers.sim.site import SimSite
from scheduler.core.model import Device, DeviceKind, OutcomeStatus, Pool, Workload

pytestmark = pytest.mark.system

POOLS = {
    "main": Pool("main", "stratum+tcp://main.example:3333", "w"),
    "backup": Pool("backup", "stratum+tcp://backup.example:3333", "w"),
}
NOMINAL_W = 3068.0


@dataclasses.dataclass
class Bos:
    site: SimSite
    miner: SimMiner
    api: SimBraiinsGrpc
    device: Device
    options: BraiinsOptions

    def driver(self, **changes: object) -> BraiinsDriver:
        return BraiinsDriver(POOLS, self.options.model_copy(update=changes))


@pytest.fixture
async def bos() -> AsyncIterator[Bos]:
    device = Device(
        "bos-1", DeviceKind.ASIC, "S19j Pro", "braiins", "127.39.2.1", 0, 104e12, NOMINAL_W,
        sleep_power_w=20.0, pools=("main", "backup"),
    )  # fmt: skip
    async with SimSite([device], [POOLS["main"], POOLS["backup"]], port=0) as site:
        api = site.braiins[device.id]
        api.pause_delay_seconds = api.resume_delay_seconds = 0.15
        options = BraiinsOptions(
            grpc_port=api.port,
            password="root",
            timeout_seconds=0.5,
            confirm_timeout_seconds=2.0,
            confirm_interval_seconds=0.03,
        )
        yield Bos(site, site.miners[device.id], api, site.devices[0], options)


async def test_reads_go_over_the_cgminer_api_and_the_state_over_grpc(bos: Bos) -> None:
    driver = bos.driver()
    assert isinstance(driver, TelemetrySource | MinerControl)
    sample = await driver.collect(bos.device)
    assert sample.workload == Workload.mine("main") and sample.power_w > 3000
    assert bos.api.calls["Login"] == 1 and bos.api.calls["GetMinerDetails"] == 1
    assert bos.miner.command_counts["summary+pools+stats+config+power"] == 1
    found = await discover([bos.device.address], port=bos.device.port, timeout_seconds=0.5)
    assert [(f.driver, f.model) for f in found] == [("braiins", "S19j Pro")]


async def test_pause_is_read_back_once_the_miner_has_ramped_down_then_resume(bos: Bos) -> None:
    driver = bos.driver()
    started = time.monotonic()
    outcome = await driver.apply(bos.device, Workload.sleep())
    assert outcome.status is OutcomeStatus.CONFIRMED, outcome.detail
    assert time.monotonic() - started >= bos.api.pause_delay_seconds  # waited for the ramp
    assert bos.api.calls["GetMinerDetails"] >= 2  # first read-back still showed NORMAL
    assert bos.miner.asleep and bos.api.calls["PauseMining"] == 1
    assert "curtail" not in bos.miner.command_counts  # never the LuxOS path
    asleep = await driver.collect(bos.device)
    assert asleep.workload == Workload.sleep() and asleep.power_w < 100
    assert await driver.api.pause(bos.device.id, bos.device.address) is True  # already paused
    awake = await driver.apply(bos.device, Workload.mine("main"))
    assert awake.status is OutcomeStatus.CONFIRMED, awake.detail
    assert not bos.miner.asleep and bos.api.calls["ResumeMining"] == 1
    assert bos.api.calls["Login"] == 1  # one token for the whole exchange


async def test_a_power_target_is_set_read_back_and_followed_by_the_power(bos: Bos) -> None:
    driver = bos.driver()
    outcome = await driver.apply(bos.device, Workload.mine("main", 0.8))
    assert outcome.status is OutcomeStatus.CONFIRMED, outcome.detail
    assert outcome.observed == Workload.mine("main", 0.8)
    assert bos.api.target_w == round(0.8 * NOMINAL_W) == bos.api.saved_target_w
    assert bos.miner.power_w() == pytest.approx(0.8 * NOMINAL_W, rel=0.03)
    assert (await driver.collect(bos.device)).workload == Workload.mine("main", 0.8)
    fresh = await bos.driver().collect(bos.device)  # no memory of the request: target / nominal
    assert fresh.workload == Workload.mine("main", round(2454 / NOMINAL_W, 3))
    again = await driver.apply(bos.device, Workload.mine("main", 0.8))
    assert again.status is OutcomeStatus.CONFIRMED and bos.api.calls["SetPowerTarget"] == 1


async def test_waking_to_a_power_level_sets_the_target_before_resuming(bos: Bos) -> None:
    driver = bos.driver()
    assert (await driver.apply(bos.device, Workload.sleep())).status is OutcomeStatus.CONFIRMED
    outcome = await driver.apply(bos.device, Workload.mine("main", 0.6))
    assert outcome.status is OutcomeStatus.CONFIRMED, outcome.detail
    assert not bos.miner.asleep and bos.api.target_w == round(0.6 * NOMINAL_W)


async def test_a_target_outside_the_model_range_is_rejected_with_the_firmware_words(
    bos: Bos,
) -> None:
    driver = bos.driver()
    low, high = round(0.3 * NOMINAL_W), round(1.9 * NOMINAL_W)
    assert await driver.api.power_range_w("bos-1", bos.device.address) == (3068, low, high)
    outcome = await driver.apply(bos.device, Workload.mine("main", 0.1))
    assert outcome.status is OutcomeStatus.REJECTED
    assert "INVALID_ARGUMENT" in outcome.detail and "not in allowed range" in outcome.detail
    assert bos.api.target_w == round(NOMINAL_W)  # unchanged


async def test_a_wrong_password_is_fatal_and_nothing_is_commanded(bos: Bos) -> None:
    driver = bos.driver(password=SecretStr("wrong"))
    outcome = await driver.apply(bos.device, Workload.sleep())
    assert outcome.status is OutcomeStatus.REJECTED
    assert "login refused" in outcome.detail and "Bad credentials" in outcome.detail
    assert bos.api.calls["PauseMining"] == 0 and not bos.miner.asleep
    with pytest.raises(Fatal):
        await driver.api.status(bos.device.id, bos.device.address)


async def test_an_expired_token_is_replaced_by_a_new_login(bos: Bos) -> None:
    client = BosClient(port=bos.api.port, password="root", timeout_seconds=0.5)
    assert await client.status("bos-1", bos.device.address) is MinerStatus.NORMAL
    bos.api.token_timeout_seconds = 0.1
    await asyncio.sleep(0.15)  # the firmware's clock passes the token's idle timeout
    assert await client.status("bos-1", bos.device.address) is MinerStatus.NORMAL
    assert client.logins == 2 and bos.api.calls["Login"] == 2
    bos.api.token_timeout_seconds = 3600.0
    bos.api.expire_tokens()  # a firmware restart forgets every token
    assert await client.power_target_w("bos-1", bos.device.address) == round(NOMINAL_W)
    assert client.logins == 3


async def test_firmware_before_api_1_1_gives_the_token_only_in_the_header(bos: Bos) -> None:
    bos.api.token_in_body = False
    client = BosClient(port=bos.api.port, password="root", timeout_seconds=0.5)
    assert await client.status("bos-1", bos.device.address) is MinerStatus.NORMAL
    assert client.logins == 1 and bos.api.calls["GetMinerDetails"] == 1


async def test_a_hung_api_times_out_and_the_outcome_is_unavailable(bos: Bos) -> None:
    bos.api.hang = True
    client = BosClient(port=bos.api.port, password="root", timeout_seconds=0.2)
    started = time.monotonic()
    with pytest.raises(Timeout, match=r"Login: no reply within 0\.2 s"):
        await client.status("bos-1", bos.device.address)
    assert time.monotonic() - started < 1.0
    outcome = await bos.driver(timeout_seconds=0.2).apply(bos.device, Workload.sleep())
    assert outcome.status is OutcomeStatus.UNAVAILABLE and "timeout" in outcome.detail
    assert not bos.miner.asleep


async def test_an_unreachable_api_is_unavailable(bos: Bos) -> None:
    await bos.api.stop()
    client = BosClient(port=bos.api.port, password="root", timeout_seconds=0.5)
    with pytest.raises(Unavailable, match=r"cannot talk to 127\.39\.2\.1"):
        await client.status("bos-1", bos.device.address)
    outcome = await bos.driver().apply(bos.device, Workload.mine("main", 0.8))
    assert outcome.status is OutcomeStatus.UNAVAILABLE


async def test_a_pause_slower_than_the_deadline_is_unconfirmed(bos: Bos) -> None:
    bos.api.pause_delay_seconds = 30.0
    outcome = await bos.driver(confirm_timeout_seconds=0.3).apply(bos.device, Workload.sleep())
    assert outcome.status is OutcomeStatus.UNCONFIRMED
    assert outcome.observed == Workload.mine("main")


async def test_a_miner_on_another_pool_is_refused_not_moved(bos: Bos) -> None:
    outcome = await bos.driver().apply(bos.device, Workload.mine("backup"))
    assert outcome.status is OutcomeStatus.REJECTED and "not switched" in outcome.detail
    assert bos.miner.state().active_pool_url == POOLS["main"].url
    assert bos.api.calls["SetPowerTarget"] == 0
