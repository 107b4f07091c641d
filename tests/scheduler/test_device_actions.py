"""Maintenance actions against the simulators: each write verified, batches, refusals.

Every firmware here is a simulator speaking its real protocol on loopback (cgminer API,
stock Antminer web, VNish web, Whatsminer API v2, Braiins gRPC, LuxOS).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import SecretStr

from drivers.asic.antminer import AntminerDriver
from drivers.asic.braiins import BraiinsDriver
from drivers.asic.cgminer import CgminerDriver
from drivers.asic.config import (
    AntminerOptions,
    BraiinsOptions,
    CgminerOptions,
    LuxosOptions,
    WhatsminerOptions,
)
from drivers.asic.luxos import LuxosDriver
from drivers.asic.vnish import VnishDriver, VnishOptions
from drivers.asic.whatsminer import WhatsminerDriver
from drivers.sim.antminer_web import SimAntminerWeb
from drivers.sim.braiins_grpc import SimBraiinsGrpc
from drivers.sim.site import SimSite
from drivers.sim.vnish import SimVnishWeb
from drivers.sim.whatsminer import SimWhatsminer
from scheduler.control.device_actions import (
    Action,
    ActionRequest,
    ActionStatus,
    MaintenanceError,
    MaintenanceRunner,
)
from scheduler.core.model import Device, Pool, WorkloadKind
from tests.fakes import asic

pytestmark = pytest.mark.system  # simulators on loopback

POOLS = {
    "main": Pool("main", "stratum+tcp://main.example:3333", "site.w1"),
    "backup": Pool("backup", "stratum+tcp://backup.example:3333", "site.w1"),
}
FAST: dict[str, Any] = {
    "timeout_seconds": 1.0,
    "confirm_timeout_seconds": 2.0,
    "confirm_interval_seconds": 0.05,
}
FIRMWARES = (
    ("cgminer", "S19j Pro"),
    ("antminer", "S19 Pro"),
    ("vnish", "S21 Pro"),
    ("whatsminer", "M60S"),
    ("braiins", "S19j Pro"),
    ("luxos", "S19j Pro"),
)


def make_device(index: int, driver: str, model: str) -> Device:
    return asic(
        driver,
        model,
        driver=driver,
        address=f"127.62.0.{index + 1}",
        port=0,
        pools=("main", "backup"),
    )


@pytest.fixture
async def site() -> AsyncIterator[SimSite]:
    devices = [make_device(i, d, m) for i, (d, m) in enumerate(FIRMWARES)]
    async with SimSite(devices, list(POOLS.values()), port=0) as sim:
        for miner in sim.miners.values():
            if isinstance(miner, SimWhatsminer):
                miner.password = "s3cret"
                miner.power_pct_delay_seconds = 0.1
        yield sim


def driver_for(driver: str, port: int) -> Any:
    if driver == "cgminer":
        return CgminerDriver(POOLS, CgminerOptions(**FAST))
    if driver == "antminer":
        return AntminerDriver(POOLS, AntminerOptions(web_port=port, **FAST))
    if driver == "vnish":
        return VnishDriver(POOLS, VnishOptions(web_port=port, **FAST))
    if driver == "whatsminer":
        return WhatsminerDriver(POOLS, WhatsminerOptions(password=SecretStr("s3cret"), **FAST))
    if driver == "braiins":
        return BraiinsDriver(POOLS, BraiinsOptions(grpc_port=port, password="root", **FAST))
    return LuxosDriver(POOLS, LuxosOptions(**FAST))


def drivers(site: SimSite) -> dict[str, Any]:
    return {
        d.id: driver_for(d.driver, getattr(site.companions.get(d.id), "port", 0))
        for d in site.devices
    }


def runner(site: SimSite) -> MaintenanceRunner:
    return MaintenanceRunner(
        {d.id: d for d in site.devices}, drivers(site), POOLS, verify_interval_seconds=0.05
    )


def request(action: Action, devices: tuple[str, ...], **more: Any) -> ActionRequest:
    return ActionRequest(action, devices, **{"verify_timeout_seconds": 3.0, **more})


ALL = tuple(d for d, _ in FIRMWARES)


async def test_locate_is_read_back_where_the_firmware_has_an_led(site: SimSite) -> None:
    job = await runner(site).run(request(Action.LOCATE, ALL), "tester")
    status = {d: o.status for d, o in job.outcomes.items()}
    assert status == {
        "cgminer": ActionStatus.UNSUPPORTED,
        "antminer": ActionStatus.CONFIRMED,
        "vnish": ActionStatus.CONFIRMED,
        "whatsminer": ActionStatus.CONFIRMED,
        "braiins": ActionStatus.CONFIRMED,
        "luxos": ActionStatus.CONFIRMED,
    }
    assert "has no locate LED it can read back" in job.outcomes["cgminer"].detail
    luxos = site.miners["luxos"].luxos
    assert luxos.red_led == "blink"
    web = site.companions["antminer"]
    assert isinstance(web, SimAntminerWeb) and web.blink
    vnish = site.companions["vnish"]
    assert isinstance(vnish, SimVnishWeb) and vnish.find_miner
    grpc = site.companions["braiins"]
    assert isinstance(grpc, SimBraiinsGrpc) and grpc.locate
    whatsminer = site.miners["whatsminer"]
    assert isinstance(whatsminer, SimWhatsminer) and not whatsminer.led_auto
    off = await runner(site).run(
        request(
            Action.LOCATE, ("antminer", "vnish", "whatsminer", "braiins", "luxos"), locate=False
        ),
        "tester",
    )
    assert set(off.counts()) == {"confirmed"}
    assert not web.blink and not vnish.find_miner and not grpc.locate and whatsminer.led_auto
    assert luxos.red_led == "auto"


async def test_luxos_locate_that_does_not_show_is_unconfirmed(site: SimSite) -> None:
    miner = site.miners["luxos"]
    luxos = miner.luxos
    miner._handlers["ledset"] = lambda _parameter: miner._ok(342, "LED set")  # says so, does not
    job = await runner(site).run(
        request(Action.LOCATE, ("luxos",), verify_timeout_seconds=0.3), "tester"
    )
    assert job.outcomes["luxos"].status is ActionStatus.UNCONFIRMED
    assert luxos.red_led == "auto"


async def test_reboot_is_verified_by_the_uptime_starting_again(site: SimSite) -> None:
    for miner in site.miners.values():
        miner.physics.started_at -= 3600  # up an hour
    job = await runner(site).run(request(Action.REBOOT, ALL), "tester")
    status = {d: o.status for d, o in job.outcomes.items()}
    assert status == {
        "cgminer": ActionStatus.UNSUPPORTED,
        "antminer": ActionStatus.CONFIRMED,
        "vnish": ActionStatus.CONFIRMED,
        "whatsminer": ActionStatus.CONFIRMED,
        "braiins": ActionStatus.CONFIRMED,
        "luxos": ActionStatus.CONFIRMED,
    }
    assert "(was 36" in job.outcomes["antminer"].detail
    assert "(was 36" in job.outcomes["luxos"].detail
    rebooted = ("antminer", "vnish", "whatsminer", "luxos", "braiins", "cgminer")
    assert [site.miners[d].reboots for d in rebooted] == [1, 1, 1, 1, 1, 0]
    grpc = site.companions["braiins"]
    assert isinstance(grpc, SimBraiinsGrpc) and grpc.calls["Reboot"] == 1


async def test_luxos_reboot_needs_the_session_and_ends_it(site: SimSite) -> None:
    miner = site.miners["luxos"]
    refused = miner.handle("rebootdevice", "deadbeef")
    assert refused["STATUS"][0]["STATUS"] == "E" and miner.reboots == 0
    driver = LuxosDriver(POOLS, LuxosOptions(session_reuse_seconds=60.0, **FAST))
    device = next(d for d in site.devices if d.id == "luxos")
    await driver.reboot(device)
    assert miner.reboots == 1
    assert miner.handle("session")["SESSION"][0]["SessionID"] == ""  # gone with the reboot
    await driver.set_power_level(device, 0.9)  # a fresh session, not the dead one


async def test_a_reboot_the_firmware_ignores_is_unconfirmed(site: SimSite) -> None:
    miner = site.miners["antminer"]
    miner.physics.started_at -= 3600
    miner.reboot = lambda: None  # type: ignore[method-assign]  # answers, never restarts
    job = await runner(site).run(
        request(Action.REBOOT, ("antminer",), verify_timeout_seconds=0.3), "tester"
    )
    outcome = job.outcomes["antminer"]
    assert outcome.status is ActionStatus.UNCONFIRMED
    assert "wanted uptime started again; last read: uptime 36" in outcome.detail


async def test_pool_set_is_read_back_and_refused_for_a_pool_not_listed(site: SimSite) -> None:
    maintenance = runner(site)
    job = await maintenance.run(
        request(Action.POOL, ("cgminer", "whatsminer", "luxos"), pool="backup"), "tester"
    )
    assert set(job.counts()) == {"confirmed"}, job.outcomes
    for device_id in ("cgminer", "whatsminer", "luxos"):
        observed = await maintenance.drivers[device_id].observe(maintenance.devices[device_id])
        assert observed.kind is WorkloadKind.MINE and observed.pool == "backup"
    only_main = MaintenanceRunner(
        {"cgminer": site.devices[0].__class__(**{**_fields(site.devices[0]), "pools": ("main",)})},
        {"cgminer": maintenance.drivers["cgminer"]},
        POOLS,
    )
    refused = await only_main.run(request(Action.POOL, ("cgminer",), pool="backup"), "tester")
    assert refused.outcomes["cgminer"].status is ActionStatus.REFUSED
    assert "not one of the device's pools (main)" in refused.outcomes["cgminer"].detail


def _fields(device: Device) -> dict[str, Any]:
    return {name: getattr(device, name) for name in device.__slots__}


async def test_power_profile_where_firmware_has_profiles(site: SimSite) -> None:
    job = await runner(site).run(
        request(Action.POWER_PROFILE, ("luxos", "whatsminer", "antminer"), power_level=0.8),
        "tester",
    )
    status = {d: o.status for d, o in job.outcomes.items()}
    assert status["luxos"] is ActionStatus.CONFIRMED, job.outcomes["luxos"]
    assert status["whatsminer"] is ActionStatus.CONFIRMED, job.outcomes["whatsminer"]
    assert status["antminer"] is ActionStatus.UNSUPPORTED
    low = await runner(site).run(
        request(Action.POWER_PROFILE, ("luxos",), power_level=0.2), "tester"
    )
    assert low.outcomes["luxos"].status is ActionStatus.REFUSED
    assert "S19j Pro power targets run 1840..3068 W (catalog)" in low.outcomes["luxos"].detail


async def test_batches_stop_after_a_failed_batch(site: SimSite) -> None:
    await site.miners["whatsminer"].stop()  # unreachable: the first batch fails
    job = await runner(site).run(
        request(Action.LOCATE, ("whatsminer", "antminer", "vnish"), batch_size=1), "tester"
    )
    assert [job.outcomes[d].status for d in ("whatsminer", "antminer", "vnish")] == [
        ActionStatus.FAILED,
        ActionStatus.SKIPPED,
        ActionStatus.SKIPPED,
    ]
    assert job.outcomes["antminer"].detail == "batch 1 had 1 device(s) fail: stopped"
    assert job.batches == 3 and job.batches_done == 1 and job.done
    web = site.companions["antminer"]
    assert isinstance(web, SimAntminerWeb) and not web.blink  # never sent
    going_on = await runner(site).run(
        request(Action.LOCATE, ("whatsminer", "antminer"), batch_size=1, stop_on_failure=False),
        "tester",
    )
    assert going_on.outcomes["antminer"].status is ActionStatus.CONFIRMED


async def test_bad_requests_name_the_problem(site: SimSite) -> None:
    maintenance = runner(site)
    for bad, message in (
        (ActionRequest(Action.LOCATE, ()), "no devices given"),
        (ActionRequest(Action.LOCATE, ("nope",)), "unknown device(s): 'nope'"),
        (ActionRequest(Action.POOL, ("cgminer",), pool="elsewhere"), "pool: give a configured"),
        (ActionRequest(Action.POWER_PROFILE, ("luxos",)), "power-profile: give power_level"),
        (ActionRequest(Action.LOCATE, ("cgminer", "cgminer")), "a device is listed twice"),
    ):
        with pytest.raises(MaintenanceError, match=message.replace("(", r"\(").replace(")", r"\)")):
            maintenance.check(bad)
