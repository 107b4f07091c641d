"""Whatsminer API v3 reboot and locate, with pyasic 0.79.0 as the independent client.

pyasic's own API v3 backend (``BTMinerV3``: ``fault_light_on`` / ``fault_light_off``
send ``set.system.led``, ``reboot`` sends ``set.system.reboot``, the light is read
from ``get.device.info`` ``system.ledstatus``) talks to the simulated miner, and
so does wattmux's driver: each reads back what the other wrote.  The simulator
must accept what an independent client sends, and the driver must write what
that client reads.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from drivers.asic.config import WhatsminerOptions
from drivers.asic.whatsminer_v3 import WhatsminerV3Driver
from drivers.sim.whatsminer import SimWhatsminer
from scheduler.core.model import Device, DeviceKind
from tests.drivers.asic.test_whatsminer_v3 import PASSWORD, POOLS, v3_device

pyasic = pytest.importorskip("pyasic", reason="pyasic (dev extra) is not installed")
from pyasic.miners.backends.btminer import BTMinerV3  # noqa: E402

pytestmark = pytest.mark.system

OPTIONS = WhatsminerOptions(
    api_version=3, password=PASSWORD, timeout_seconds=2.0, confirm_interval_seconds=0.05
)


@pytest.fixture
async def miner() -> AsyncIterator[SimWhatsminer]:
    device = Device(
        "wm3",
        DeviceKind.ASIC,
        "M60S",
        "whatsminer",
        "127.38.3.1",
        0,
        186e12,
        3422.0,
        10.0,
        pools=("main",),
    )
    sim = SimWhatsminer(
        device,
        list(POOLS.values()),
        port=0,
        ramp_seconds=0.0,
        thermal_tau_seconds=0.0,
        v3_password=PASSWORD,
    )
    async with sim:
        yield sim


def _pyasic(miner: SimWhatsminer) -> BTMinerV3:
    client = BTMinerV3(miner.device.address)
    client.rpc.port = miner.v3.port
    client.rpc.pwd = PASSWORD
    return client


async def test_pyasic_sets_the_light_and_wattmux_reads_it(miner: SimWhatsminer) -> None:
    client, driver, device = (
        _pyasic(miner),
        WhatsminerV3Driver(POOLS, OPTIONS),
        v3_device(miner),
    )
    assert await client.fault_light_on() is True
    assert await driver.locate_on(device) is True
    assert await client.fault_light_off() is True
    assert await driver.locate_on(device) is False


async def test_wattmux_sets_the_light_and_pyasic_reads_it(miner: SimWhatsminer) -> None:
    client, driver, device = (
        _pyasic(miner),
        WhatsminerV3Driver(POOLS, OPTIONS),
        v3_device(miner),
    )
    await driver.set_locate(device, True)
    assert await client._get_light_flashing() is True
    await driver.set_locate(device, False)
    assert await client._get_light_flashing() is False


async def test_a_reboot_from_pyasic_restarts_the_uptime_wattmux_reads(miner: SimWhatsminer) -> None:
    client, driver, device = (
        _pyasic(miner),
        WhatsminerV3Driver(POOLS, OPTIONS),
        v3_device(miner),
    )
    await asyncio.sleep(1.1)
    before = await driver.collect(device)
    assert await client.reboot() is True
    after = await driver.collect(device)
    assert before.health is not None and after.health is not None
    assert after.health.uptime_s is not None and before.health.uptime_s is not None
    assert after.health.uptime_s < before.health.uptime_s and miner.reboots == 1
