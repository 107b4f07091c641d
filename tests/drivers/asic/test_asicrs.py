"""The optional asic-rs driver: pyasic-rs against the simulated LuxOS miner over real TCP."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import pytest

from drivers.asic import asicrs
from drivers.asic import config as asic_config
from drivers.asic.asicrs import AsicRsDriver
from drivers.asic.config import AsicRsOptions
from drivers.asic.registry import create_asic_driver
from drivers.errors import Fatal, Unavailable
from drivers.sim.site import SimSite
from scheduler.config.devices import pools_of
from scheduler.config.loading import ConfigError, parse_config
from scheduler.core.model import Device, DeviceKind, OutcomeStatus, Pool, Workload

needs_wheel = pytest.mark.skipif(not asicrs.HAVE_ASIC_RS, reason="pyasic-rs is not installed")
POOLS = {"main": Pool("main", "stratum+tcp://main.example:3333", "site.w1")}
# model_construct: without the wheel, validation refuses asic-rs options (tested below).
OPTIONS = AsicRsOptions.model_construct(
    timeout_seconds=2.0, confirm_timeout_seconds=3.0, confirm_interval_seconds=0.05
)
ADDRESS = "127.39.3.1"  # the library probes the cgminer API on its default port, 4028


def test_without_the_wheel_the_driver_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(asicrs, "HAVE_ASIC_RS", False)
    with pytest.raises(Fatal, match=r"wattmux\[asic-rs\]"):
        AsicRsDriver(POOLS, OPTIONS)


def test_config_without_the_wheel_is_an_error_naming_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(asic_config, "find_spec", lambda _name: None)
    with pytest.raises(ConfigError, match=r"devices\[0\]\.options.*wattmux\[asic-rs\]"):
        parse_config(config(), environ={})


def config() -> dict[str, object]:
    return {
        "site": {"power_cap_kw": 100.0},
        "pools": [{"name": "main", "url": POOLS["main"].url, "user": "w"}],
        "devices": [
            {"id": "a", "model": "S19j Pro", "address": ADDRESS, "pools": ["main"],
             "options": {"driver": "asic-rs", "timeout_seconds": 2.0}},
        ],
    }  # fmt: skip


@needs_wheel
def test_config_picks_the_asic_rs_driver() -> None:
    parsed = parse_config(config(), environ={})
    device = parsed.all_devices()[0]
    assert (device.driver, device.port) == ("asic-rs", 4028)
    driver = create_asic_driver(pools_of(parsed), parsed.devices[0].options, concurrency=4)
    assert isinstance(driver, AsicRsDriver)


@dataclasses.dataclass
class Lux:
    site: SimSite
    device: Device


@pytest.fixture
async def lux() -> AsyncIterator[Lux]:
    device = Device(
        "rs-1", DeviceKind.ASIC, "S19j Pro", "asic-rs", ADDRESS, 4028, 104e12, 3068.0,
        sleep_power_w=20.0, pools=("main",),
    )  # fmt: skip
    async with SimSite([device], list(POOLS.values()), port=4028) as site:
        site.miners[device.id].version_extra = {"LUXminer": "2024.1.26"}
        yield Lux(site, device)


@pytest.mark.system
@needs_wheel
async def test_the_library_reads_the_simulated_miner(lux: Lux) -> None:
    sample = await AsicRsDriver(POOLS, OPTIONS).collect(lux.device)
    assert sample.workload == Workload.mine("main")
    assert sample.power_w == pytest.approx(3068.0, rel=0.03)
    assert sample.hashrate_hs == pytest.approx(104e12, rel=0.03)
    assert sample.temperature_c is not None and sample.temperature_c > 25


@pytest.mark.system
@needs_wheel
async def test_sleep_and_wake_go_through_the_library_and_are_read_back(lux: Lux) -> None:
    driver = AsicRsDriver(POOLS, OPTIONS)
    miner = lux.site.miners[lux.device.id]
    outcome = await driver.apply(lux.device, Workload.sleep())
    assert outcome.status is OutcomeStatus.CONFIRMED, outcome.detail
    assert miner.asleep and miner.command_counts["curtail"] == 1  # the library's LuxOS path
    asleep = await driver.collect(lux.device)
    assert asleep.workload == Workload.sleep() and asleep.power_w < 100
    awake = await driver.apply(lux.device, Workload.mine("main"))
    assert awake.status is OutcomeStatus.CONFIRMED, awake.detail
    assert not miner.asleep and miner.command_counts["curtail"] == 2


@pytest.mark.system
@needs_wheel
async def test_power_levels_are_refused_without_touching_the_miner(lux: Lux) -> None:
    outcome = await AsicRsDriver(POOLS, OPTIONS).apply(lux.device, Workload.mine("main", 0.8))
    assert outcome.status is OutcomeStatus.REJECTED and "power levels" in outcome.detail
    assert "curtail" not in lux.site.miners[lux.device.id].command_counts


@pytest.mark.system
@needs_wheel
async def test_a_miner_that_disappears_is_unavailable(lux: Lux) -> None:
    driver = AsicRsDriver(POOLS, OPTIONS)
    await driver.collect(lux.device)
    await lux.site.stop()
    with pytest.raises(Unavailable, match="no wattage"):  # the library answers with empty data
        await driver.collect(lux.device)
    outcome = await driver.apply(lux.device, Workload.sleep())
    assert outcome.status is OutcomeStatus.UNAVAILABLE and "identifies no miner" in outcome.detail


@pytest.mark.system
@needs_wheel
async def test_deep_health_comes_from_the_same_read(lux: Lux) -> None:
    await asyncio.sleep(1.1)  # an uptime of at least a second
    sample = await AsicRsDriver(POOLS, OPTIONS).collect(lux.device)
    miner = lux.site.miners[lux.device.id]
    truth = miner.physics.board_temperatures_c(miner._clock())  # per board: chips, boards
    health = sample.health
    assert health is not None and len(health.boards) == len(truth) == 3
    for board, (chips, sensors) in zip(health.boards, truth, strict=True):
        assert board.hashrate_hs == pytest.approx(104e12 / 3, rel=0.05)
        assert board.board_temp_c == pytest.approx(sum(sensors) / len(sensors), abs=1.0)
        # The library reports a board's chips as LuxOS does, the mean of its sensors.
        assert sum(chips) / len(chips) - 1.0 <= board.chip_temp_c <= max(chips) + 1.0
    assert health.uptime_s is not None and health.uptime_s >= 1
    assert health.firmware and health.errors == ()
    assert sample.hottest_c is not None and sample.hottest_c >= health.chip_temp_max_c
