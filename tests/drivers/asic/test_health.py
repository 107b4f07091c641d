"""Deep health read over the real wire protocols: the simulators and the captured replies.

Captured replies are read from ../shared/fidelity/captures (never copied into the
project); those tests skip where it is absent.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
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
from drivers.sim import boser
from drivers.sim.braiins_grpc import SimBraiinsGrpc
from drivers.sim.site import SimSite
from drivers.sim.whatsminer import SimWhatsminer
from scheduler.api.views import DeviceDetailView, device_view
from scheduler.core.model import TERA, Device, DeviceKind, Health, Pool, Sample, Workload
from scheduler.core.state import FleetState
from tests.fakes import asic

CAPTURES = Path(__file__).resolve().parents[3] / ".." / "shared" / "fidelity" / "captures"
ASIC_RS = CAPTURES / "256foundation" / "asic-rs" / "asic-rs-firmwares"
VNISH = CAPTURES / "block/proto-fleet/tests/plugin-contract/testdata/antminer-vnish/rpc"
pytestmark = pytest.mark.system  # simulators and replay servers on loopback
POOLS = {"main": Pool("main", "stratum+tcp://main.example:3333", "site.w1")}
FAST = {"timeout_seconds": 1.0, "confirm_timeout_seconds": 2.0, "confirm_interval_seconds": 0.05}


def device(driver: str, model: str, index: int) -> Device:
    return asic(f"{driver}-{index}", model, driver=driver, address=f"127.61.0.{index + 1}", port=0)


# ---- simulators ------------------------------------------------------------------------------


@pytest.fixture
async def site() -> AsyncIterator[SimSite]:
    devices = [
        device("cgminer", "S19j Pro", 0),
        device("luxos", "S19j Pro", 1),
        device("vnish", "S21 Pro", 2),
        device("antminer", "S19 Pro", 3),
        device("whatsminer", "M60S", 4),
        device("braiins", "S19j Pro", 5),
    ]
    async with SimSite(devices, list(POOLS.values()), port=0) as sim:
        for miner in sim.miners.values():
            if isinstance(miner, SimWhatsminer):
                miner.password = "s3cret"
        yield sim


def driver_for(site: SimSite, target: Device) -> Any:
    companion = site.companions.get(target.id)
    port = getattr(companion, "port", 0)
    if target.driver == "cgminer":
        return CgminerDriver(POOLS, CgminerOptions(**FAST))
    if target.driver == "luxos":
        return LuxosDriver(POOLS, LuxosOptions(**FAST))
    if target.driver == "vnish":
        return VnishDriver(POOLS, VnishOptions(web_port=port, **FAST))
    if target.driver == "antminer":
        return AntminerDriver(POOLS, AntminerOptions(web_port=port, **FAST))
    if target.driver == "braiins":
        return BraiinsDriver(POOLS, BraiinsOptions(grpc_port=port, password="root", **FAST))
    return WhatsminerDriver(POOLS, WhatsminerOptions(password=SecretStr("s3cret"), **FAST))


async def test_every_simulated_firmware_reports_boards_fans_and_rejects(site: SimSite) -> None:
    for target in site.devices:
        sample = await driver_for(site, target).collect(target)
        health = sample.health
        assert health is not None, target.driver
        boards = health.boards
        assert len(boards) == 3, target.driver
        if target.driver != "cgminer":  # the generic cgminer personality counts no chips
            assert all(b.chips and b.chips > 0 for b in boards), target.driver
        assert all(b.chip_temp_c and b.chip_temp_c > 20 for b in boards), target.driver
        total = sum(b.hashrate_hs or 0.0 for b in boards)
        assert total == pytest.approx(sample.hashrate_hs, rel=0.1), target.driver
        assert health.fans_rpm and min(health.fans_rpm) > 1000, target.driver
        assert health.reject_ratio is not None and 0 <= health.reject_ratio < 0.01
        assert health.uptime_s is not None
        assert health.firmware, target.driver
        assert health.errors == ()
        # the boards' hottest chip is the sample's temperature (Whatsminer: its summary's
        # Chip Temp Max and the boards' are read a moment apart, within a degree or so)
        assert health.chip_temp_max_c == pytest.approx(sample.temperature_c, abs=1.5)
        assert sample.hottest_c == max(health.chip_temp_max_c or 0, sample.temperature_c or 0)


async def test_braiins_boards_and_fans_come_over_grpc(site: SimSite) -> None:
    target = next(d for d in site.devices if d.driver == "braiins")
    grpc = site.companions[target.id]
    assert isinstance(grpc, SimBraiinsGrpc)
    sample = await driver_for(site, target).collect(target)
    assert grpc.calls["GetHashboards"] == 1 and grpc.calls["GetCoolingState"] == 1
    assert sample.health is not None
    reply = boser.hashboards(site.miners[target.id], site.miners[target.id]._clock())
    assert [b.chips for b in sample.health.boards] == [
        b.chips_count.value for b in reply.hashboards if b.chips_count is not None
    ]
    assert len(sample.health.fans_rpm) == len(boser.fan_rpms(site.miners[target.id], 0.0))


async def test_whatsminer_error_codes_are_read_when_the_summary_counts_them(
    site: SimSite,
) -> None:
    target = next(d for d in site.devices if d.driver == "whatsminer")
    miner = site.miners[target.id]
    assert isinstance(miner, SimWhatsminer)
    driver = driver_for(site, target)
    before = miner.command_counts.get("get_error_code", 0)
    await driver.collect(target)
    assert miner.command_counts.get("get_error_code", 0) == before  # none counted: not asked
    miner.error_codes = ["329", "2010"]
    sample = await driver.collect(target)
    assert sample.health is not None and sample.health.errors == ("329", "2010")
    view = device_view(FleetState([target]), target.id, 0.0, detail=True)
    assert view.health is None  # not observed yet
    state = FleetState([target])
    state.observe(sample)
    detail = device_view(state, target.id, sample.observed_at, detail=True)
    assert isinstance(detail, DeviceDetailView) and detail.health is not None
    assert detail.health.error_codes == ["329", "2010"] and detail.health.errors == 2


async def test_missing_chips_and_hot_chip_from_the_simulator(site: SimSite) -> None:
    target = next(d for d in site.devices if d.driver == "antminer")
    sample = await driver_for(site, target).collect(target)
    state = FleetState([target])
    state.observe(sample)
    view = device_view(state, target.id, sample.observed_at)
    assert view.health is not None
    assert view.health.chips_expected == 3 * 114  # S19 Pro in the catalog
    assert view.health.chips_found is not None
    assert view.health.chips_missing == 3 * 114 - view.health.chips_found


# ---- captured replies --------------------------------------------------------------------------


def _captures(folder: Path) -> Path:
    if not folder.is_dir():
        pytest.skip(f"captured replies not present at {folder} (../shared is absent)")
    return folder


class Replay:
    """Answers cgminer-API commands (``+``-joined too) from captured replies."""

    INVALID = {"STATUS": [{"STATUS": "E", "Code": 14, "Msg": "Invalid command"}], "id": 1}

    def __init__(self, address: str, replies: dict[str, Any]) -> None:
        self.address, self.replies, self.port = address, replies, 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Replay:
        self._server = await asyncio.start_server(self._serve, self.address, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        command = str(json.loads(await reader.read(65536)).get("command"))
        if "+" in command:
            reply: Any = {n: [self.replies.get(n, self.INVALID)] for n in command.split("+")}
        else:
            reply = self.replies.get(command, self.INVALID)
        writer.write(json.dumps(reply).encode() + b"\x00")
        await writer.drain()
        writer.close()


def _load(folder: Path) -> dict[str, Any]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


async def _replayed(folder: Path, address: str, model: str) -> Health:
    replies = _load(_captures(folder))
    replies.setdefault("power", {"POWER": [{"Watts": 3000}], "STATUS": [{"STATUS": "S"}]})
    async with Replay(address, replies) as api:
        target = Device(
            "captured",
            DeviceKind.ASIC,
            model,
            "cgminer",
            address,
            api.port,
            nominal_hashrate_hs=100 * TERA,
            nominal_power_w=3000.0,
        )
        sample = await CgminerDriver({}, CgminerOptions(port=api.port)).collect(target)
    assert sample.health is not None
    return sample.health


async def test_stock_s19pro_capture_health() -> None:
    health = await _replayed(ASIC_RS / "antminer/src/test/json/v2020", "127.61.1.1", "S19 Pro")
    assert [b.chips for b in health.boards] == [114, 114, 114]  # chain 4: empty slot, dropped
    assert [b.hashrate_hs for b in health.boards] == pytest.approx(
        [37603.30e9, 35536.22e9, 37427.38e9], rel=1e-6
    )
    assert [b.chip_temp_c for b in health.boards] == [78, 71, 69]  # "78-50-69-70", ...
    assert [b.board_temp_c for b in health.boards] == [73, 66, 64]  # "73-45-64-65", ...
    assert health.fans_rpm == (6000, 5880, 5040, 5040)
    assert health.uptime_s == 50474
    assert health.reject_ratio == pytest.approx(2490368.0 / (1305083904.0 + 2490368.0))
    assert health.firmware == "BMMiner 1.0.0 (stock firmware 49.0.1.3)"


async def test_vnish_s21pro_capture_health() -> None:
    health = await _replayed(VNISH, "127.61.1.2", "S21 Pro")
    assert [b.chips for b in health.boards] == [65, 65, 65]
    assert [b.chip_temp_c for b in health.boards] == [65, 64, 64]
    assert health.fans_rpm == (5850, 5850, 5940, 5940)
    assert health.firmware == "VNish 1.2.7"
    assert health.uptime_s == 4423
    assert health.errors == ()  # chain_faultN are empty


async def test_luxos_s19kpro_capture_health() -> None:
    folder = ASIC_RS / "luxminer/src/test/json/v1"
    health = await _replayed(folder, "127.61.1.3", "S19k Pro")
    assert [b.chips for b in health.boards] == [77, 77, 77]  # miner_count 3
    assert health.fans_rpm == (1920, 1920, 2340, 2340)
    assert health.chip_temp_max_c == 47


async def test_whatsminer_capture_health() -> None:
    folder = _captures(ASIC_RS / "whatsminer/src/test/json/v1")
    replies = _load(folder)
    async with Replay("127.61.1.4", replies) as api:
        target = asic(
            "captured-wm", "M30S", driver="whatsminer", address="127.61.1.4", port=api.port
        )
        options = WhatsminerOptions(password=SecretStr("admin"), port=api.port)
        sample = await WhatsminerDriver({}, options).collect(target)
    health = sample.health
    assert health is not None
    assert [b.chips for b in health.boards] == [105, 105, 105]  # DEVS "Effective Chips"
    assert [b.chip_temp_c for b in health.boards] == [90.0, 90.1, 92.5]  # tenths kept
    assert [b.board_temp_c for b in health.boards] == [70.0, 69.5, 71.5]
    assert health.fans_rpm == (6450, 6480)  # SUMMARY "Fan Speed In" / "Fan Speed Out"
    assert health.firmware == "Whatsminer 20210322.22.REL"  # quotes dropped
    assert health.uptime_s == 10154 and health.reject_ratio == 0.0 and health.errors == ()


def test_health_is_small_and_bounded() -> None:
    board = {"hashrate_hs": 66e12, "chips": 108, "board_temp_c": 60.0, "chip_temp_c": 75.5}
    from scheduler.core.model import BoardHealth

    health = Health.of(
        [BoardHealth(**board)] * 40,  # type: ignore[arg-type]
        [5000] * 40,
        reject_ratio=0.001,
        uptime_s=123456,
        firmware=sys.intern("BMMiner 1.0.0"),
        errors=["x" * 500] * 40,
    )
    assert len(health.boards) == 16 and len(health.fans_rpm) == 16 and len(health.errors) == 8
    assert all(len(e) == 80 for e in health.errors)
    three = Health.of(
        [BoardHealth(**board)] * 3,  # type: ignore[arg-type]
        [5000] * 4,
        reject_ratio=0.001,
        uptime_s=123456,
        firmware=sys.intern("BMMiner 1.0.0"),
    )
    own = sys.getsizeof(three) + sys.getsizeof(three.packed)
    assert own <= 176, own  # per device; firmware text and () are shared
    assert three.boards[0].chip_temp_c == 75.5 and three.boards[0].chips == 108
    # the header's figures (what a scrape reads) agree with the boards and fans
    mixed = Health.of(
        [BoardHealth(chips=100, chip_temp_c=81.25, board_temp_c=60.0), BoardHealth(chips=3)],
        [5200, 0, 4800],
    )
    assert mixed.chip_temp_max_c == max(b.chip_temp_c or 0 for b in mixed.boards) == 81.2
    assert mixed.board_temp_max_c == 60.0 and mixed.fan_rpm_min == 0 == min(mixed.fans_rpm)
    assert mixed.chips_found == 103 and mixed.summary()[0] == 2
    assert Health().summary() == (0, None, None, None, None, None, None)


def test_thermal_guard_takes_the_hottest_chip() -> None:
    from scheduler.core.model import BoardHealth

    sample = Sample(
        "m1",
        0.0,
        Workload.mine("main"),
        3000.0,
        1e14,
        70.0,  # what the firmware's one temperature says
        health=Health.of([BoardHealth(chip_temp_c=70.0), BoardHealth(chip_temp_c=91.0)]),
    )
    assert sample.hottest_c == 91.0
    assert Sample("m1", 0.0, Workload.sleep(), 15.0, 0.0, None).hottest_c is None
