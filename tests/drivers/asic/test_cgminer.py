"""The cgminer client and driver against the simulated site and recorded replies, over TCP."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from drivers.asic.cgminer import (
    CgminerClient,
    CgminerDriver,
    current_pool_url,
    parse_chip_temperature_c,
    parse_hashrate_hs,
    parse_pools,
    rows,
    same_url,
)
from drivers.asic.config import CgminerOptions
from drivers.base import MinerControl, TelemetrySource
from drivers.errors import MalformedReply, Rejected, Timeout, Unavailable
from drivers.sim.miner import Fault
from drivers.sim.site import SimSite
from scheduler.core.model import Device, OutcomeStatus, Pool, Workload
from tests.fakes import asic, sim_address

FIXTURES = Path(__file__).parents[2] / "fixtures" / "cgminer"
POOLS = {
    "main": Pool("main", "stratum+tcp://main.example:3333", "site.w1"),
    "backup": Pool("backup", "stratum+tcp://backup.example:3333", "site.w1"),
    "spare": Pool("spare", "stratum+tcp://spare.example:3333", "site.w2", "p,w"),
}
SITE_POOLS = [POOLS["main"], POOLS["backup"]]
OPTIONS = CgminerOptions(
    timeout_seconds=0.5, confirm_timeout_seconds=2.0, confirm_interval_seconds=0.02
)


class FakeTime:
    """A clock and a sleep that only move when the driver sleeps."""

    def __init__(self) -> None:
        self.now = 500.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def make_device(index: int, prefix: str = "127.32") -> Device:
    return asic(
        f"asic-{index:04d}",
        "S19j Pro",
        address=sim_address(prefix, index),
        port=0,
        pools=("main", "backup"),
    )


@pytest.fixture
async def site() -> AsyncIterator[SimSite]:
    async with SimSite([make_device(i) for i in range(3)], SITE_POOLS, port=0) as sim:
        yield sim


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def driver(fake_time: FakeTime) -> CgminerDriver:
    return CgminerDriver(POOLS, OPTIONS, clock=fake_time.clock, sleep=fake_time.sleep)


def test_driver_implements_the_protocols(driver: CgminerDriver) -> None:
    for protocol in (TelemetrySource, MinerControl):
        assert isinstance(driver, protocol)


# ---- telemetry ------------------------------------------------------------------------------


async def test_collect_reads_telemetry(site: SimSite, driver: CgminerDriver) -> None:
    device = site.devices[0]
    state = site.miners[device.id].state()
    sample = await driver.collect(device)
    assert sample.device_id == device.id
    assert sample.workload == Workload.mine("main")
    assert sample.pool_url == POOLS["main"].url
    assert sample.power_w == round(state.power_w)
    assert sample.hashrate_hs == pytest.approx(state.hashrate_hs, abs=1e4)  # 0.01 MH/s
    assert sample.temperature_c == state.chip_temperature_c
    assert sample.observed_at == 500.0
    assert site.miners[device.id].connections.total == 1  # one joined command


async def test_collect_reads_sleep_back(site: SimSite, driver: CgminerDriver) -> None:
    device = site.devices[1]
    site.miners[device.id].set_asleep(True)
    sample = await driver.collect(device)
    assert sample.workload == Workload.sleep()
    assert (sample.pool_url, sample.power_w, sample.hashrate_hs) == (None, 20.0, 0.0)


async def test_collect_names_an_unconfigured_pool_by_its_url(site: SimSite) -> None:
    driver = CgminerDriver({"backup": POOLS["backup"]}, OPTIONS)
    sample = await driver.collect(site.devices[0])
    assert sample.workload == Workload.mine(POOLS["main"].url)


async def test_collect_parses_replies_without_nul(site: SimSite, driver: CgminerDriver) -> None:
    device = site.devices[0]
    site.miners[device.id].nul_terminator = False
    sample = await driver.collect(device)
    assert sample.power_w == round(site.miners[device.id].power_w())


async def test_collect_parses_ghs_hashrates(site: SimSite, driver: CgminerDriver) -> None:
    device = site.devices[0]
    miner = site.miners[device.id]
    miner.hashrate_unit = "GHS"
    sample = await driver.collect(device)
    assert sample.hashrate_hs == pytest.approx(miner.hashrate_hs(), abs=1e7)  # 0.01 GH/s


# ---- apply ----------------------------------------------------------------------------------


async def test_switching_pool_is_confirmed_by_read_back(
    site: SimSite, driver: CgminerDriver
) -> None:
    device = site.devices[0]
    miner = site.miners[device.id]
    outcome = await driver.apply(device, Workload.mine("backup"))
    assert outcome.status is OutcomeStatus.CONFIRMED
    assert outcome.observed == Workload.mine("backup")
    assert miner.state().active_pool_url == POOLS["backup"].url
    assert miner.command_counts["switchpool"] == 1


async def test_apply_sends_nothing_when_already_there(site: SimSite, driver: CgminerDriver) -> None:
    device = site.devices[0]
    outcome = await driver.apply(device, Workload.mine("main"))
    assert outcome.status is OutcomeStatus.CONFIRMED
    assert set(site.miners[device.id].command_counts) == {
        "summary+pools+stats+config+power",
        "config+pools",
    }


async def test_sleep_and_wake_are_confirmed(site: SimSite, driver: CgminerDriver) -> None:
    device = site.devices[2]
    miner = site.miners[device.id]
    asleep = await driver.apply(device, Workload.sleep())
    assert (asleep.status, asleep.observed) == (OutcomeStatus.CONFIRMED, Workload.sleep())
    assert miner.asleep and miner.power_w() == 20.0
    assert miner.command_counts["logoff"] == 1
    assert miner.handle("session")["SESSION"][0]["SessionID"] == ""  # session released
    awake = await driver.apply(device, Workload.mine("main"))
    assert (awake.status, awake.observed) == (OutcomeStatus.CONFIRMED, Workload.mine("main"))
    assert not miner.asleep


async def test_wake_then_switch_from_sleep(site: SimSite, driver: CgminerDriver) -> None:
    device = site.devices[0]
    miner = site.miners[device.id]
    miner.set_asleep(True)
    outcome = await driver.apply(device, Workload.mine("backup"))
    assert outcome.status is OutcomeStatus.CONFIRMED
    assert miner.state().active_pool_url == POOLS["backup"].url and not miner.asleep


async def test_a_missing_pool_is_added_then_switched_to(
    site: SimSite, driver: CgminerDriver
) -> None:
    device = site.devices[1]
    miner = site.miners[device.id]
    outcome = await driver.apply(device, Workload.mine("spare"))
    assert outcome.status is OutcomeStatus.CONFIRMED
    assert miner.command_counts["addpool"] == 1
    listed = miner.handle("pools")["POOLS"]
    added = [p for p in listed if p["URL"] == POOLS["spare"].url]
    assert len(added) == 1 and added[0]["User"] == "site.w2" and added[0]["Stratum Active"]
    again = await driver.apply(device, Workload.mine("spare"))
    assert again.status is OutcomeStatus.CONFIRMED and miner.command_counts["addpool"] == 1


async def test_an_open_session_is_taken_over(site: SimSite, driver: CgminerDriver) -> None:
    device = site.devices[0]
    miner = site.miners[device.id]
    stale = miner.handle("logon")["SESSION"][0]["SessionID"]
    outcome = await driver.apply(device, Workload.sleep())
    assert outcome.status is OutcomeStatus.CONFIRMED
    assert miner.handle("session")["SESSION"][0]["SessionID"] == stale  # not ours to log off


@pytest.mark.parametrize(
    "workload",
    [Workload.off(), Workload.ai("q"), Workload.mine("nowhere"), Workload.mine("main", 0.8)],
)
async def test_what_the_driver_cannot_do_is_rejected_without_commands(
    site: SimSite, driver: CgminerDriver, workload: Workload
) -> None:
    device = site.devices[0]
    outcome = await driver.apply(device, workload)
    assert outcome.status is OutcomeStatus.REJECTED and outcome.detail
    assert not site.miners[device.id].command_counts


async def test_unconfirmed_when_the_device_does_not_follow(
    site: SimSite, driver: CgminerDriver, fake_time: FakeTime
) -> None:
    device = site.devices[0]
    miner = site.miners[device.id]
    miner.set_pool_alive(1, False)  # switchpool is accepted but the miner stays on main
    started = fake_time.now
    outcome = await driver.apply(device, Workload.mine("backup"))
    assert outcome.status is OutcomeStatus.UNCONFIRMED
    assert outcome.observed == Workload.mine("main")
    assert fake_time.now - started == pytest.approx(OPTIONS.confirm_timeout_seconds)
    assert max(fake_time.sleeps) <= OPTIONS.confirm_interval_seconds
    assert miner.command_counts["switchpool"] == 1


async def test_switch_pool_and_sleep_capabilities(site: SimSite, driver: CgminerDriver) -> None:
    device = site.devices[2]
    miner = site.miners[device.id]
    await driver.switch_pool(device, POOLS["spare"].url)
    assert miner.state().active_pool_url == POOLS["spare"].url
    await driver.sleep(device)
    assert miner.asleep
    await driver.wake(device)
    assert not miner.asleep


# ---- failures -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "error"),
    [(Fault.CLOSE, Unavailable), (Fault.GARBAGE, MalformedReply), (Fault.HANG, Timeout)],
)
async def test_faults_raise_the_matching_error(
    site: SimSite, driver: CgminerDriver, fault: Fault, error: type[Exception]
) -> None:
    device = site.devices[0]
    site.miners[device.id].fault = fault
    started = time.monotonic()
    with pytest.raises(error) as caught:
        await driver.collect(device)
    assert type(caught.value) is error
    assert time.monotonic() - started < OPTIONS.timeout_seconds + 0.5
    assert caught.value.source == device.id


async def test_a_command_cancelled_from_outside_is_cancelled_not_timed_out(
    site: SimSite, driver: CgminerDriver
) -> None:
    device = site.devices[0]
    site.miners[device.id].fault = Fault.HANG
    command = asyncio.create_task(driver.collect(device))
    await asyncio.sleep(0.05)  # connected, waiting for the reply that never comes
    command.cancel()
    with pytest.raises(asyncio.CancelledError):
        await command
    # The client's own deadline still works afterwards, and reports a timeout.
    with pytest.raises(Timeout):
        await driver.collect(device)


async def test_a_refused_port_is_unavailable(driver: CgminerDriver) -> None:
    with socket.socket() as probe:
        probe.bind(("127.78.200.1", 0))
        free_port = probe.getsockname()[1]
    device = dataclasses.replace(make_device(0), address="127.78.200.1", port=free_port)
    with pytest.raises(Unavailable) as caught:
        await driver.collect(device)
    assert type(caught.value) is Unavailable
    assert "refused" in caught.value.message.lower()


@pytest.mark.parametrize("fault", [Fault.CLOSE, Fault.GARBAGE, Fault.HANG])
@pytest.mark.parametrize("workload", [Workload.sleep(), Workload.mine("backup")])
async def test_apply_on_a_faulty_miner_is_unavailable(
    site: SimSite, driver: CgminerDriver, fault: Fault, workload: Workload
) -> None:
    device = site.devices[1]
    site.miners[device.id].fault = fault
    outcome = await driver.apply(device, workload)
    assert outcome.status is OutcomeStatus.UNAVAILABLE
    assert outcome.observed is None and outcome.detail


async def test_a_fault_after_the_command_leaves_it_unconfirmed_or_unavailable(
    site: SimSite, fake_time: FakeTime
) -> None:
    """The command went through but nothing can be read back: never CONFIRMED."""
    device = site.devices[1]
    miner = site.miners[device.id]

    class BreakAfterSwitch(CgminerClient):
        async def command(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
            reply = await super().command(*args, **kwargs)
            if args[2] == "switchpool":
                miner.fault = Fault.GARBAGE
            return reply

    driver = CgminerDriver(
        POOLS,
        OPTIONS,
        clock=fake_time.clock,
        sleep=fake_time.sleep,
        client=BreakAfterSwitch(timeout_seconds=0.5),
    )
    outcome = await driver.apply(device, Workload.mine("backup"))
    assert outcome.status is OutcomeStatus.UNAVAILABLE
    assert "malformed" in outcome.detail


async def test_concurrency_bound_holds_across_200_miners() -> None:
    devices = [make_device(i, prefix="127.79") for i in range(200)]
    async with SimSite(devices, SITE_POOLS, port=0) as site:
        for miner in site.miners.values():
            miner.fault, miner.fault_delay_seconds = Fault.SLOW, 0.02
        driver = CgminerDriver(POOLS, OPTIONS, concurrency=8)
        samples = await asyncio.gather(*(driver.collect(d) for d in site.devices))
        assert {s.workload for s in samples} == {Workload.mine("main")}
        assert 2 <= site.connections.peak <= 8
        assert site.connections.total == 200


# ---- client and recorded replies ------------------------------------------------------------


class ReplayServer:
    """Answers each command with a recorded reply; everything else gets cgminer's code 14."""

    INVALID = (
        b'{"STATUS":[{"STATUS":"E","When":1724073612,"Code":14,"Msg":"Invalid command",'
        b'"Description":"cgminer 1.0.0"}],"id":1}\x00'
    )

    def __init__(self, replies: dict[str, bytes], address: str = "127.78.250.1") -> None:
        self.replies = replies
        self.address = address
        self.seen: list[str] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> ReplayServer:
        self._server = await asyncio.start_server(self._serve, self.address, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        command = json.loads(await reader.read(65536))["command"]
        self.seen.append(command)
        writer.write(self.replies.get(command, self.INVALID))
        await writer.drain()
        writer.close()


def recorded(name: str) -> bytes:
    return (FIXTURES / "antminer_s19jpro_bmminer" / f"{name}.json").read_bytes().strip()


def bmminer_device(server: ReplayServer) -> Device:
    return dataclasses.replace(make_device(0), address=server.address, port=server.port)


def test_recorded_bmminer_replies_parse() -> None:
    client_side = json.loads(recorded("summary"))
    assert parse_hashrate_hs(client_side["SUMMARY"][0]) == pytest.approx(101873.14e9)
    assert parse_hashrate_hs({"GHS av": "13,623.31"}) == pytest.approx(13623.31e9)
    assert parse_hashrate_hs({"MHS av": 95000000.5}) == pytest.approx(95e12 + 5e5)
    stats = json.loads(recorded("stats").replace(b"}{", b"},{"))
    assert parse_chip_temperature_c(rows(stats, "STATS")) == 74.0
    assert parse_chip_temperature_c([{"temp2_1": 61, "temp2_2": "NaN", "temp1": 90}]) == 61.0
    assert parse_chip_temperature_c([{"temp1": 50}]) is None
    pools = parse_pools(rows(json.loads(recorded("pools")), "POOLS"))
    assert current_pool_url(pools) == "stratum+tcp://main.example:3333"
    assert [p.status for p in pools] == ["Alive", "Alive", "Dead"]


def test_pool_urls_compare_loosely_but_not_too_loosely() -> None:
    assert same_url("stratum+tcp://Main.example:3333/", "stratum+tcp://main.example:3333")
    assert same_url("main.example:3333", "stratum+tcp://main.example:3333")
    assert not same_url("stratum+ssl://main.example:3333", "stratum+tcp://main.example:3333")
    assert not same_url("stratum+tcp://main.example:3334", "stratum+tcp://main.example:3333")


async def test_firmware_without_joined_commands_is_read_one_command_at_a_time() -> None:
    summary = json.loads(recorded("summary"))
    summary["SUMMARY"][0]["Power"] = 3250  # as if this firmware reported power
    replies = {
        "summary": json.dumps(summary).encode() + b"\x00",
        "pools": recorded("pools") + b"\x00",
        "stats": recorded("stats"),  # no NUL, "}{" quirk and all
    }
    async with ReplayServer(replies) as server:
        sample = await CgminerDriver(POOLS, OPTIONS).collect(bmminer_device(server))
    assert server.seen[0] == "summary+pools+stats+config+power"
    assert sorted(server.seen[1:]) == ["config", "pools", "power", "stats", "summary"]
    assert sample.workload == Workload.mine("main")
    assert (sample.power_w, sample.temperature_c) == (3250.0, 74.0)
    assert sample.hashrate_hs == pytest.approx(101873.14e9)


async def test_stock_bmminer_without_power_is_malformed_not_guessed() -> None:
    replies = {name: recorded(name) + b"\x00" for name in ("summary", "pools", "stats")}
    async with ReplayServer(replies) as server:
        with pytest.raises(MalformedReply, match="power"):
            await CgminerDriver(POOLS, OPTIONS).collect(bmminer_device(server))


async def test_sleep_on_firmware_without_sessions_is_rejected() -> None:
    summary = json.loads(recorded("summary"))
    summary["SUMMARY"][0]["Power"] = 3250
    replies = {
        "summary": json.dumps(summary).encode() + b"\x00",
        "pools": recorded("pools") + b"\x00",
        "stats": recorded("stats") + b"\x00",
    }
    async with ReplayServer(replies) as server:
        outcome = await CgminerDriver(POOLS, OPTIONS).apply(
            bmminer_device(server), Workload.sleep()
        )
    assert outcome.status is OutcomeStatus.REJECTED
    assert "logon" in outcome.detail and "curtail" not in server.seen


async def test_client_rejects_on_status_e_and_caps_reply_size(site: SimSite) -> None:
    device = site.devices[0]
    client = CgminerClient(timeout_seconds=0.5)
    with pytest.raises(Rejected, match="Invalid command"):
        await client.command(device.address, device.port, "frobnicate")
    reply = await client.command(device.address, device.port, "switchpool", "1")
    assert reply["STATUS"][0]["Code"] == 27
    small = CgminerClient(timeout_seconds=0.5, max_reply_bytes=200)
    with pytest.raises(MalformedReply, match="larger than 200"):
        await small.command(device.address, device.port, "stats")


async def test_client_reports_an_empty_reply_and_a_missing_status() -> None:
    replies = {"summary": b"\x00", "pools": b'{"POOLS":[]}\x00', "version": b"[1,2]\x00"}
    async with ReplayServer(replies) as server:
        client = CgminerClient(timeout_seconds=0.5)
        with pytest.raises(MalformedReply, match="empty"):
            await client.command(server.address, server.port, "summary")
        with pytest.raises(MalformedReply, match="STATUS"):
            await client.command(server.address, server.port, "pools")
        with pytest.raises(MalformedReply, match="list"):
            await client.command(server.address, server.port, "version")
