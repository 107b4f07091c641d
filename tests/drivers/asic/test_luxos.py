"""LuxOS personality over real TCP: power targets via profiles with ATM off around them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from drivers.asic.config import LuxosOptions
from drivers.asic.luxos import LuxosDriver
from drivers.base import MinerControl, TelemetrySource
from drivers.errors import Rejected
from drivers.sim.miner import SimMiner
from drivers.sim.site import SimSite
from drivers.sim.tcp import Fault
from scheduler.core.model import Device, DeviceKind, OutcomeStatus, Pool, Workload
from tests.fakes import asic

FIXTURES = Path(__file__).parents[2] / "fixtures" / "luxos" / "s19jpro_2024.1.26"
POOLS = {
    "main": Pool("main", "stratum+tcp://main.example:3333", "site.w1"),
    "backup": Pool("backup", "stratum+tcp://backup.example:3333", "site.w1"),
}
OPTIONS = LuxosOptions(
    timeout_seconds=0.5, confirm_timeout_seconds=1.0, confirm_interval_seconds=0.02
)


def make_device(index: int) -> Device:
    return asic(
        f"lux-{index}",
        "S19j Pro",
        driver="luxos",
        address=f"127.34.0.{index + 1}",
        port=0,
        pools=("main", "backup"),
    )


@pytest.fixture
async def site() -> AsyncIterator[SimSite]:
    pools = [POOLS["main"], POOLS["backup"]]
    async with SimSite([make_device(i) for i in range(2)], pools, port=0) as sim:
        yield sim


def commands(miner: SimMiner) -> list[str]:
    return [c for c in miner.command_counts if c in ("atmset", "profileset")]


async def test_power_target_turns_atm_off_sets_the_profile_and_turns_atm_back_on(
    site: SimSite,
) -> None:
    driver = LuxosDriver(POOLS, OPTIONS)
    assert isinstance(driver, MinerControl) and isinstance(driver, TelemetrySource)
    device = site.devices[0]
    miner = site.miners[device.id]
    outcome = await driver.apply(device, Workload.mine("main", 0.8))
    assert outcome.status is OutcomeStatus.CONFIRMED, outcome.detail
    assert outcome.observed == Workload.mine("main", 0.8)
    assert miner.luxos.atm_enabled and miner.luxos.changes_with_atm_on == 0
    assert miner.command_counts["atmset"] == 2 and miner.command_counts["profileset"] == 1
    assert miner.power_w() == pytest.approx(0.8 * 3068.0, rel=0.03)
    assert miner.command_counts["logoff"] == 1
    sample = await driver.collect(device)
    assert sample.workload == Workload.mine("main", 0.8)
    again = await driver.apply(device, Workload.mine("main", 0.8))
    assert again.status is OutcomeStatus.CONFIRMED and miner.command_counts["profileset"] == 1
    back = await driver.apply(device, Workload.mine("main"))
    assert back.status is OutcomeStatus.CONFIRMED and back.observed == Workload.mine("main")
    assert miner.power_w() == pytest.approx(3068.0, rel=0.02)


async def test_waking_to_a_power_level_wakes_switches_and_sets_the_level(site: SimSite) -> None:
    driver = LuxosDriver(POOLS, OPTIONS)
    device = site.devices[1]
    miner = site.miners[device.id]
    assert (await driver.apply(device, Workload.sleep())).status is OutcomeStatus.CONFIRMED
    outcome = await driver.apply(device, Workload.mine("backup", 0.6))
    assert outcome.status is OutcomeStatus.CONFIRMED, outcome.detail
    assert not miner.asleep and miner.state().active_pool_url == POOLS["backup"].url
    assert miner.power_w() == pytest.approx(0.6 * 3068.0, rel=0.03)


async def test_atm_is_turned_back_on_when_the_profile_change_is_refused(site: SimSite) -> None:
    driver = LuxosDriver(POOLS, OPTIONS)
    device = site.devices[0]
    miner = site.miners[device.id]
    miner._handlers["profileset"] = lambda _p: miner._error(322, "Invalid profile '2454W'")
    outcome = await driver.apply(device, Workload.mine("main", 0.8))
    assert outcome.status is OutcomeStatus.REJECTED and "Invalid profile" in outcome.detail
    assert miner.luxos.atm_enabled  # restored even though profileset failed
    assert miner.handle("session")["SESSION"][0]["SessionID"] == ""  # session released


async def test_a_device_that_does_not_reach_the_target_is_unconfirmed(site: SimSite) -> None:
    driver = LuxosDriver(POOLS, OPTIONS)
    device = site.devices[0]
    miner = site.miners[device.id]
    miner.set_power_level = lambda _level: None  # type: ignore[method-assign]  # accepts, ignores
    outcome = await driver.apply(device, Workload.mine("main", 0.6))
    assert outcome.status is OutcomeStatus.UNCONFIRMED
    assert outcome.observed is not None and outcome.observed.pool == "main"
    assert outcome.observed.power_level == pytest.approx(1.0, abs=0.02)  # what it measures


async def replay(directory: Path) -> tuple[asyncio.Server, dict[str, int]]:
    """A TCP server answering each command with its recorded reply (NUL-terminated)."""
    seen: dict[str, int] = {}
    replies = {
        "logon": "logon.json",
        "atmset": "atmset.json",
        "profileset": "profileset.json",
        "logoff": "atmset.json",
        "curtail": "curtail_denied.json",
    }

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = json.loads(await reader.read(4096))
        command = request["command"]
        seen[command] = seen.get(command, 0) + 1
        writer.write((directory / replies[command]).read_bytes() + b"\x00")
        await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.34.1.1", 0), seen


async def test_recorded_luxos_replies_drive_a_profile_change_and_a_refused_curtail() -> None:
    server, seen = await replay(FIXTURES)
    async with server:
        port = int(server.sockets[0].getsockname()[1])
        device = Device(
            "fx", DeviceKind.ASIC, "S19j Pro", "luxos", "127.34.1.1", port, 104e12, 3068.0
        )
        driver = LuxosDriver(POOLS, OPTIONS)
        await driver.set_power_level(device, 0.9)
        assert seen == {"logon": 1, "atmset": 2, "profileset": 1, "logoff": 1}
        with pytest.raises(Rejected, match="Access denied"):
            await driver.sleep(device)


async def test_the_simulated_curtail_reply_says_only_that_the_command_was_sent(
    site: SimSite,
) -> None:
    """LuxOS answers curtail with code 335 "Curtailment command sent": no state in it."""
    device = site.devices[0]
    client = LuxosDriver(POOLS, OPTIONS)._client
    logon = await client.command(device.address, device.port, "logon")
    session_id = logon["SESSION"][0]["SessionID"]
    reply = await client.command(device.address, device.port, "curtail", f"{session_id},sleep")
    assert reply["STATUS"][0]["Code"] == 335
    assert reply["STATUS"][0]["Msg"] == "Curtailment command sent"
    assert reply["CURTAIL"] == [{"Action": "sleep mode"}]


async def test_an_accepted_curtail_that_does_not_sleep_is_unconfirmed(site: SimSite) -> None:
    device = site.devices[0]
    miner = site.miners[device.id]
    miner.set_asleep = lambda _asleep: None  # type: ignore[method-assign]  # accepts, ignores
    outcome = await LuxosDriver(POOLS, OPTIONS).apply(device, Workload.sleep())
    assert outcome.status is OutcomeStatus.UNCONFIRMED
    assert miner.command_counts["curtail"] == 1  # one command; the read-backs decide


async def test_a_kept_session_makes_a_curtail_two_connections(site: SimSite) -> None:
    """With session reuse: logon once, then each command is curtail plus one read-back."""
    device = site.devices[0]
    miner = site.miners[device.id]
    options = OPTIONS.model_copy(update={"session_reuse_seconds": 30.0})
    driver = LuxosDriver(POOLS, options)
    asleep = await driver.apply(device, Workload.sleep())
    assert asleep.status is OutcomeStatus.CONFIRMED
    awake = await driver.apply(device, Workload.mine("main"))
    assert awake.status is OutcomeStatus.CONFIRMED
    before = miner.connections.total
    again = await driver.apply(device, Workload.sleep())
    assert again.status is OutcomeStatus.CONFIRMED
    assert miner.command_counts.get("logoff", 0) == 0
    assert miner.command_counts["logon"] == 1
    assert miner.connections.total - before == 2  # curtail sleep, config+pools read-back


def open_session(miner: SimMiner) -> str:
    return str(miner.handle("session")["SESSION"][0]["SessionID"])


async def test_send_owes_the_logoff_to_confirm(site: SimSite) -> None:
    """The curtail is acknowledged before the logoff: confirm() logs off, then reads back."""
    driver = LuxosDriver(POOLS, OPTIONS)
    device = site.devices[0]
    miner = site.miners[device.id]
    assert await driver.send(device, Workload.sleep()) is None
    assert miner.command_counts["logon"] == 1 and miner.command_counts["curtail"] == 1
    assert miner.command_counts.get("logoff", 0) == 0 and open_session(miner) != ""
    outcome = await driver.confirm(device, Workload.sleep())
    assert outcome.status is OutcomeStatus.CONFIRMED, outcome.detail
    assert miner.command_counts["logoff"] == 1 and open_session(miner) == ""


async def test_waking_to_a_power_level_takes_one_session(site: SimSite) -> None:
    """Wakeup and the profile change share the session send() opened: one logon, one logoff."""
    driver = LuxosDriver(POOLS, OPTIONS)
    device = site.devices[1]
    miner = site.miners[device.id]
    assert (await driver.apply(device, Workload.sleep())).status is OutcomeStatus.CONFIRMED
    outcome = await driver.apply(device, Workload.mine("main", 0.7))
    assert outcome.status is OutcomeStatus.CONFIRMED, outcome.detail
    assert miner.command_counts["logon"] == 2 and miner.command_counts["logoff"] == 2
    assert "session" not in miner.command_counts  # never had to take an open session over
    assert open_session(miner) == ""


async def test_a_send_that_fails_logs_off_before_it_returns(site: SimSite) -> None:
    driver = LuxosDriver(POOLS, OPTIONS)
    device = site.devices[0]
    miner = site.miners[device.id]
    miner._handlers["profileset"] = lambda _p: miner._error(322, "Invalid profile '2148W'")
    outcome = await driver.send(device, Workload.mine("main", 0.7))
    assert outcome is not None and outcome.status is OutcomeStatus.REJECTED
    assert miner.command_counts["logoff"] == 1 and open_session(miner) == ""


async def test_a_shared_session_that_meets_no_answer_is_still_logged_off(site: SimSite) -> None:
    """Wakeup opens the session; the profile change gets no answer: the send still logs off."""
    driver = LuxosDriver(POOLS, OPTIONS)
    device = site.devices[1]
    miner = site.miners[device.id]
    assert (await driver.apply(device, Workload.sleep())).status is OutcomeStatus.CONFIRMED
    miner.fault, miner.fault_commands = Fault.CLOSE, frozenset({"atmset"})
    outcome = await driver.send(device, Workload.mine("main", 0.7))
    assert outcome is not None and outcome.status is OutcomeStatus.UNCONFIRMED, outcome
    assert "no answer" in outcome.detail
    assert miner.command_counts["logoff"] == 2 and open_session(miner) == ""
