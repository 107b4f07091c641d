"""Whatsminer API v3 over real TCP: framing, salted tokens, service stop/start, power percent."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from pydantic import SecretStr

from drivers.asic.config import WhatsminerOptions
from drivers.asic.health_parse import whatsminer_v3_health
from drivers.asic.whatsminer_crypto import frame
from drivers.asic.whatsminer_v3 import V3Client, WhatsminerV3Driver
from drivers.errors import Fatal, MalformedReply, Rejected, Timeout, Unavailable
from drivers.sim.whatsminer import SimWhatsminer
from scheduler.core.model import Device, DeviceKind, OutcomeStatus, Pool, Workload

POOLS = {"main": Pool("main", "stratum+tcp://main.example:3333", "site.w1")}
PASSWORD = "n3wpass"
OPTIONS = WhatsminerOptions(
    api_version=3,
    password=PASSWORD,
    timeout_seconds=0.5,
    confirm_timeout_seconds=3.0,
    confirm_interval_seconds=0.05,
)


@pytest.fixture
async def miner() -> AsyncIterator[SimWhatsminer]:
    device = Device(
        "wm3",
        DeviceKind.ASIC,
        "M60S",
        "whatsminer",
        "127.38.2.1",
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
        power_off_delay_seconds=0.3,
        power_on_delay_seconds=0.4,
        power_pct_delay_seconds=0.2,
    )
    async with sim:
        yield sim


def v3_device(miner: SimWhatsminer) -> Device:
    d = miner.device
    return Device(
        d.id,
        d.kind,
        d.model,
        d.driver,
        d.address,
        miner.v3.port,
        d.nominal_hashrate_hs,
        d.nominal_power_w,
        d.sleep_power_w,
        pools=d.pools,
    )


async def test_options_default_to_port_4433_for_api_v3() -> None:
    assert WhatsminerOptions.model_validate({"api_version": 3}).port == 4433
    assert WhatsminerOptions.model_validate({"api_version": 3, "port": 14433}).port == 14433
    assert WhatsminerOptions.model_validate({}).port == 4028


@pytest.mark.system
async def test_sleep_and_wake_stop_and_start_the_service_with_signed_writes(
    miner: SimWhatsminer,
) -> None:
    device = v3_device(miner)
    driver = WhatsminerV3Driver(POOLS, OPTIONS)
    outcome = await driver.apply(device, Workload.sleep())
    assert outcome.status is OutcomeStatus.CONFIRMED, outcome.detail
    assert miner.asleep and miner.v3.requests.count("set.miner.service") == 1
    assert miner.v3.requests.count("get.miner.status") >= 2  # slow: the first read still mined
    awake = await driver.apply(device, Workload.mine("main", 0.6))
    assert awake.status is OutcomeStatus.CONFIRMED, awake.detail
    assert awake.observed == Workload.mine("main", 0.6)
    assert miner.power_pct == 60 and not miner.asleep
    assert miner.v3.requests.count("get.device.info") >= 1


@pytest.mark.system
async def test_wrong_password_is_refused_then_fatal_after_a_fresh_salt(
    miner: SimWhatsminer,
) -> None:
    device = v3_device(miner)
    driver = WhatsminerV3Driver(POOLS, OPTIONS.model_copy(update={"password": SecretStr("wrong")}))
    outcome = await driver.apply(device, Workload.sleep())
    assert outcome.status is OutcomeStatus.REJECTED and "invalid token" in (outcome.detail or "")
    with pytest.raises(Fatal):
        await driver.sleep(device)
    assert not miner.asleep


@pytest.mark.system
async def test_default_password_means_no_write_permission(miner: SimWhatsminer) -> None:
    miner.v3.password = "super"
    driver = WhatsminerV3Driver(POOLS, OPTIONS.model_copy(update={"password": SecretStr("super")}))
    with pytest.raises(Rejected, match="no permission"):
        await driver.sleep(v3_device(miner))


@pytest.mark.system
async def test_a_new_salt_after_a_restart_is_fetched_again(miner: SimWhatsminer) -> None:
    device = v3_device(miner)
    driver = WhatsminerV3Driver(POOLS, OPTIONS)
    await driver.set_power_level(device, 0.9)
    miner.salt = "N3wSa1t!"  # the miner restarted with another salt
    await driver.set_power_level(device, 0.8)
    assert miner.v3.requests.count("set.miner.power_percent") == 3  # refused once, then accepted
    assert miner.v3.requests.count("get.device.info") == 2


@pytest.mark.system
async def test_replies_split_across_reads_and_heartbeats_are_handled(miner: SimWhatsminer) -> None:
    miner.v3.split_replies = True
    client = V3Client(timeout_seconds=1.0)
    reply = await client.call(
        miner.address, miner.v3.port, {"cmd": "get.device.info", "param": "salt"}, source="t"
    )
    assert reply["msg"] == {"salt": miner.salt}
    # A request written in pieces, with a heartbeat before it, on a raw socket.
    reader, writer = await asyncio.open_connection(miner.address, miner.v3.port)
    payload = frame(json.dumps({"cmd": "get.miner.setting"}).encode())
    for piece in (b"\x00\x00\x00\x00", payload[:3], payload[3:10], payload[10:]):
        writer.write(piece)
        await writer.drain()
        await asyncio.sleep(0.01)
    length = int.from_bytes(await reader.readexactly(4), "little")
    body = json.loads(await reader.readexactly(length))
    assert body["code"] == 0 and body["msg"]["power-percent"] == 100
    writer.close()


async def raw_server(payload: bytes) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(4096)
        writer.write(payload)
        await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.38.3.1", 0)


@pytest.mark.parametrize(
    ("payload", "error", "match"),
    [
        ((10).to_bytes(4, "little") + b'{"co', Unavailable, "closed after 4 bytes"),
        ((1 << 30).to_bytes(4, "little"), MalformedReply, "over the limit"),
        (frame(b"[1, 2]"), MalformedReply, "not an object"),
        (frame(b'{"code": -2, "msg": "invalid command"}'), Rejected, "code -2"),
        (frame(b'{"msg": "ok"}'), MalformedReply, "no integer code"),
    ],
)
@pytest.mark.system
async def test_bad_frames_map_to_driver_errors(
    payload: bytes, error: type[Exception], match: str
) -> None:
    server = await raw_server(payload)
    async with server:
        port = int(server.sockets[0].getsockname()[1])
        with pytest.raises(error, match=match):
            await V3Client(timeout_seconds=1.0).call("127.38.3.1", port, {"cmd": "x"}, source="t")


@pytest.mark.system
async def test_a_hung_v3_miner_times_out(miner: SimWhatsminer) -> None:
    miner.v3.hang = True
    with pytest.raises(Timeout):
        await WhatsminerV3Driver(POOLS, OPTIONS).collect(v3_device(miner))


@pytest.mark.system
async def test_pool_moves_are_refused_over_v3(miner: SimWhatsminer) -> None:
    pools = {**POOLS, "other": Pool("other", "stratum+tcp://other.example:3333", "w")}
    outcome = await WhatsminerV3Driver(pools, OPTIONS).apply(
        v3_device(miner), Workload.mine("other")
    )
    assert outcome.status is OutcomeStatus.REJECTED and "not supported" in (outcome.detail or "")


@pytest.mark.system
async def test_deep_health_from_edevs_summary_and_device_info(miner: SimWhatsminer) -> None:
    device = v3_device(miner)
    driver = WhatsminerV3Driver(POOLS, OPTIONS)
    sample = await driver.collect(device)
    health = sample.health
    assert health is not None
    assert "get.miner.status" in miner.v3.requests and "get.device.info" in miner.v3.requests
    boards = miner._boards()
    assert len(health.boards) == len(boards) == 3
    assert [b.chips for b in health.boards] == [row["Effective Chips"] for row in boards]
    assert [b.board_temp_c for b in health.boards] == [row["Temperature"] for row in boards]
    assert [b.chip_temp_c for b in health.boards] == [row["Chip Temp Max"] for row in boards]
    per_board = sample.hashrate_hs / 3
    for board in health.boards:
        assert board.hashrate_hs == pytest.approx(per_board, rel=0.01)
    assert list(health.fans_rpm) == list(miner._fans())
    assert health.firmware == "Whatsminer 20240722.07.51.REL"
    assert health.uptime_s is not None and health.uptime_s < 60
    assert health.reject_ratio is None  # API v3 reports no share counts
    assert health.errors == ()
    assert sample.pools_alive == (("main", True),)
    miner.error_codes = ["531", "2010"]
    again = await driver.collect(device)
    assert again.health is not None
    assert again.health.errors == ("531: Slot1 not found.", "2010: error")
    miner.reboot()
    rebooted = await driver.collect(device)
    assert rebooted.health is not None and rebooted.health.uptime_s == 0


def test_v3_health_parse_tolerates_missing_and_odd_fields() -> None:
    health = whatsminer_v3_health(
        {"board-temperature": [69.6, "70.1"], "fan-speed-in": 4980, "bootup-time": 1175},
        [
            {"slot": 1, "hash-average": 33.9, "effective-chips": 156, "chip-temp-max": 100.3},
            "junk",
            {"hash-average": None},
        ],
        {"fwversion": "'20240722.07.51.REL'"},
        [{"531": "2025-03-12 14:52:35", "reason": "Slot1 not found."}, {"reason": "x"}, 7],
    )
    first, second = health.boards
    assert first.board_temp_c == pytest.approx(70.1)  # slot 1's temperature
    assert first.hashrate_hs == pytest.approx(33.9e12, rel=1e-3) and first.chips == 156
    assert second.hashrate_hs is None and second.board_temp_c is None
    assert list(health.fans_rpm) == [4980]
    assert health.uptime_s == 1175  # no elapsed: the system's uptime
    assert health.firmware == "Whatsminer 20240722.07.51.REL"
    assert health.errors == ("531: Slot1 not found.",)
    assert whatsminer_v3_health({}, []).boards == ()


@pytest.mark.system
async def test_reboot_and_locate_over_api_v3(miner: SimWhatsminer) -> None:
    driver = WhatsminerV3Driver(POOLS, OPTIONS)
    device = v3_device(miner)
    assert await driver.locate_on(device) is False
    await driver.set_locate(device, True)
    assert await driver.locate_on(device) is True and miner.led_auto is False
    await driver.set_locate(device, False)
    assert await driver.locate_on(device) is False and miner.led_auto is True
    await asyncio.sleep(1.1)
    before = await driver.collect(device)
    assert before.health is not None and before.health.uptime_s is not None
    await driver.reboot(device)
    after = await driver.collect(device)
    assert miner.reboots == 1
    assert after.health is not None and after.health.uptime_s is not None
    assert after.health.uptime_s < before.health.uptime_s


@pytest.mark.system
async def test_the_simulated_led_refuses_what_the_firmware_would(miner: SimWhatsminer) -> None:
    driver = WhatsminerV3Driver(POOLS, OPTIONS)
    device = v3_device(miner)
    for bad in ([], [{"color": "blue", "period": 1, "duration": 1, "start": 0}], "on", 3):
        with pytest.raises(Rejected, match="invalid param"):
            await driver.write(device, "set.system.led", bad)
    assert miner.led_auto is True
