"""The simulated ASIC and site, exercised over real TCP on loopback."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import math
import resource
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from drivers.sim.miner import Fault, SimMiner
from drivers.sim.site import SimSite
from scheduler.core.model import Device, Pool
from tests.fakes import FakeClock, asic, sim_address

POOLS = [
    Pool("main", "stratum+tcp://main.example:3333", "site.w1"),
    Pool("backup", "stratum+tcp://backup.example:3333", "site.w1"),
]
NOMINAL_HS = 104e12
NOMINAL_W = 3068.0
SLEEP_W = 20.0


def make_device(index: int, prefix: str = "127.77") -> Device:
    return asic(
        f"sim-{index:04d}",
        "S19j Pro",
        address=sim_address(prefix, index),
        port=0,
        pools=(),
        hashrate_hs=NOMINAL_HS,
        power_w=NOMINAL_W,
        sleep_power_w=SLEEP_W,
    )


async def exchange(address: str, port: int, payload: bytes, *, half_close: bool = False) -> bytes:
    """Send raw bytes and read everything until the miner closes."""
    reader, writer = await asyncio.open_connection(address, port)
    try:
        writer.write(payload)
        if half_close:
            writer.write_eof()
        await writer.drain()
        async with asyncio.timeout(5):
            return await reader.read()
    finally:
        writer.close()


async def ask(miner: SimMiner, command: str, parameter: str | None = None) -> dict[str, Any]:
    request: dict[str, Any] = {"command": command}
    if parameter is not None:
        request["parameter"] = parameter
    raw = await exchange(miner.address, miner.port, json.dumps(request).encode())
    assert raw.endswith(b"\x00") and raw.count(b"\x00") == 1
    reply = json.loads(raw[:-1])
    assert isinstance(reply, dict)
    return reply


def status(reply: dict[str, Any]) -> dict[str, Any]:
    entry = reply["STATUS"][0]
    assert set(entry) == {"STATUS", "When", "Code", "Msg", "Description"}
    assert reply["id"] == 1
    return dict(entry)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def miner(clock: FakeClock) -> AsyncIterator[SimMiner]:
    sim = SimMiner(
        make_device(1),
        POOLS,
        port=0,
        ramp_seconds=0,
        thermal_tau_seconds=0,
        clock=clock,
        noise_fraction=0.0,
    )
    async with sim:
        yield sim


# ---- reply shapes ---------------------------------------------------------------------------


async def test_summary_is_one_nul_terminated_document_then_close(miner: SimMiner) -> None:
    raw = await exchange(miner.address, miner.port, b'{"command":"summary"}')
    assert raw.endswith(b"\x00") and raw.count(b"\x00") == 1  # and EOF followed
    reply = json.loads(raw[:-1])
    assert status(reply)["STATUS"] == "S" and status(reply)["Code"] == 11
    row = reply["SUMMARY"][0]
    assert {"Elapsed", "MHS av", "MHS 5s", "Accepted", "Rejected", "Power"} <= set(row)
    assert row["MHS 5s"] == pytest.approx(NOMINAL_HS / 1e6)
    assert row["Power"] == NOMINAL_W


async def test_pools_lists_every_pool_with_the_first_active(miner: SimMiner) -> None:
    reply = await ask(miner, "pools")
    assert status(reply)["Code"] == 7
    pools = reply["POOLS"]
    assert [p["URL"] for p in pools] == [p.url for p in POOLS]
    assert [p["POOL"] for p in pools] == [0, 1]
    assert [p["Priority"] for p in pools] == [0, 1]
    assert [p["Stratum Active"] for p in pools] == [True, False]
    assert {p["Status"] for p in pools} == {"Alive"}
    assert pools[0]["User"] == "site.w1"


async def test_stats_carry_bmminer_style_temperatures_and_fans(miner: SimMiner) -> None:
    reply = await ask(miner, "stats")
    assert status(reply)["Code"] == 70
    identity, detail = reply["STATS"]
    assert identity["Type"] == "Antminer S19j Pro"
    chips = [[int(v) for v in detail[f"temp_chip{b}"].split("-")] for b in (1, 2, 3)]
    pcbs = [[int(v) for v in detail[f"temp_pcb{b}"].split("-")] for b in (1, 2, 3)]
    assert all(len(sensors) == 4 for sensors in chips + pcbs)
    assert max(max(c) for c in chips) == miner.state().chip_temperature_c == 70.0
    assert max(max(p) for p in pcbs) < max(max(c) for c in chips)
    assert all(detail[f"fan{f}"] > 0 for f in (1, 2, 3, 4))


async def test_version_and_config(miner: SimMiner) -> None:
    version = await ask(miner, "version")
    assert status(version)["Code"] == 22 and "S19j Pro" in version["VERSION"][0]["Type"]
    config = await ask(miner, "config")
    assert config["CONFIG"][0]["CurtailMode"] == "None"
    assert config["CONFIG"][0]["IsPowerSupplyOn"] is True


async def test_joined_report_commands_answer_in_one_connection(miner: SimMiner) -> None:
    reply = await ask(miner, "summary+pools+stats+config")
    assert set(reply) == {"summary", "pools", "stats", "config", "id"}
    for name, key in (("summary", "SUMMARY"), ("pools", "POOLS"), ("stats", "STATS")):
        assert isinstance(reply[name], list) and len(reply[name]) == 1
        inner = reply[name][0]
        assert status(inner)["STATUS"] == "S" and key in inner
    assert reply["config"][0]["CONFIG"][0]["CurtailMode"] == "None"


async def test_joined_command_refuses_a_non_report_part(miner: SimMiner) -> None:
    reply = await ask(miner, "summary+switchpool+nonsense")
    assert reply["summary"][0]["STATUS"][0]["STATUS"] == "S"
    assert reply["switchpool"][0]["STATUS"][0]["STATUS"] == "E"
    assert reply["nonsense"][0]["STATUS"][0]["Code"] == 14
    assert miner.state().active_pool_url == POOLS[0].url


async def test_unknown_command_is_cgminer_code_14(miner: SimMiner) -> None:
    entry = status(await ask(miner, "frobnicate"))
    assert (entry["STATUS"], entry["Code"], entry["Msg"]) == ("E", 14, "Invalid command")


async def test_bad_json_and_missing_command(miner: SimMiner) -> None:
    raw = await exchange(miner.address, miner.port, b"{not json", half_close=True)
    assert json.loads(raw[:-1])["STATUS"][0]["Code"] == 23
    raw = await exchange(miner.address, miner.port, b'{"parameter":"1"}')
    assert json.loads(raw[:-1])["STATUS"][0]["Code"] == 24


# ---- pool commands --------------------------------------------------------------------------


async def test_switchpool_enablepool_disablepool(miner: SimMiner) -> None:
    assert status(await ask(miner, "switchpool", "1"))["Code"] == 27
    pools = (await ask(miner, "pools"))["POOLS"]
    assert [p["Stratum Active"] for p in pools] == [False, True]
    assert [p["Priority"] for p in pools] == [1, 0]
    assert status(await ask(miner, "switchpool", "5"))["Code"] == 26
    assert status(await ask(miner, "switchpool"))["Code"] == 25
    assert status(await ask(miner, "disablepool", "1"))["Code"] == 48
    assert miner.state().active_pool_url == POOLS[0].url
    assert (await ask(miner, "pools"))["POOLS"][1]["Status"] == "Disabled"
    assert status(await ask(miner, "disablepool", "0"))["Code"] == 51  # the last enabled pool
    assert status(await ask(miner, "enablepool", "1"))["Code"] == 47
    assert status(await ask(miner, "enablepool", "1"))["Code"] == 49
    assert miner.state().active_pool_url == POOLS[1].url  # priority 0 again once enabled


async def test_addpool_appends_a_pool_and_honours_escapes(miner: SimMiner) -> None:
    entry = status(await ask(miner, "addpool", r"stratum+tcp://new.example:3333,acct\,w9,x"))
    assert (entry["STATUS"], entry["Code"]) == ("S", 55)
    new = (await ask(miner, "pools"))["POOLS"][2]
    assert (new["URL"], new["User"], new["Priority"]) == (
        "stratum+tcp://new.example:3333",
        "acct,w9",
        2,
    )
    assert new["Stratum Active"] is False
    assert status(await ask(miner, "addpool", "stratum+tcp://x.example:1"))["Code"] == 53
    assert status(await ask(miner, "addpool"))["Code"] == 52


# ---- sessions and sleep ---------------------------------------------------------------------


async def test_curtail_without_a_session_is_denied(miner: SimMiner) -> None:
    entry = status(await ask(miner, "curtail", "deadbeef,sleep"))
    assert (entry["STATUS"], entry["Code"]) == ("E", 45)
    assert "denied" in entry["Msg"].lower()
    assert not miner.asleep


async def test_logon_curtail_sleep_wakeup_logoff(miner: SimMiner) -> None:
    logon = await ask(miner, "logon")
    session_id = logon["SESSION"][0]["SessionID"]
    assert status(logon)["STATUS"] == "S" and session_id
    assert status(await ask(miner, "logon"))["STATUS"] == "E"  # one session at a time
    assert (await ask(miner, "session"))["SESSION"][0]["SessionID"] == session_id

    assert status(await ask(miner, "curtail", f"{session_id},sleep"))["STATUS"] == "S"
    joined = await ask(miner, "summary+pools+config")
    assert joined["config"][0]["CONFIG"][0]["CurtailMode"] == "Sleep"
    assert not any(p["Stratum Active"] for p in joined["pools"][0]["POOLS"])
    summary = joined["summary"][0]["SUMMARY"][0]
    assert (summary["MHS 5s"], summary["Power"]) == (0, SLEEP_W)

    assert status(await ask(miner, "curtail", f"{session_id},nap"))["STATUS"] == "E"
    assert status(await ask(miner, "curtail", f"{session_id},wakeup"))["STATUS"] == "S"
    assert miner.state().active_pool_url == POOLS[0].url
    assert status(await ask(miner, "logoff", session_id))["STATUS"] == "S"
    assert status(await ask(miner, "logoff", session_id))["Code"] == 45
    assert status(await ask(miner, "curtail", f"{session_id},sleep"))["Code"] == 45
    assert not miner.asleep


async def test_session_expires_after_idle_timeout(miner: SimMiner, clock: FakeClock) -> None:
    first = (await ask(miner, "logon"))["SESSION"][0]["SessionID"]
    clock.advance(miner.session_timeout_seconds - 1)
    assert status(await ask(miner, "logon"))["STATUS"] == "E"
    clock.advance(miner.session_timeout_seconds)
    second = (await ask(miner, "logon"))["SESSION"][0]["SessionID"]
    assert second != first
    assert status(await ask(miner, "curtail", f"{first},sleep"))["Code"] == 45


# ---- physics --------------------------------------------------------------------------------


async def test_power_and_hashrate_ramp_linearly(clock: FakeClock) -> None:
    sim = SimMiner(make_device(2), POOLS, port=0, ramp_seconds=30, clock=clock, noise_fraction=0)
    async with sim:
        sim.set_asleep(True)
        clock.advance(15)
        assert sim.power_w() == pytest.approx((NOMINAL_W + SLEEP_W) / 2)
        assert sim.hashrate_hs() == pytest.approx(NOMINAL_HS / 2)
        assert (await ask(sim, "summary"))["SUMMARY"][0]["Power"] == round(
            (NOMINAL_W + SLEEP_W) / 2
        )
        clock.advance(15)
        assert (sim.power_w(), sim.hashrate_hs()) == (pytest.approx(SLEEP_W), pytest.approx(0))
        clock.advance(100)
        sim.set_asleep(False)
        clock.advance(10)
        assert sim.power_w() == pytest.approx(SLEEP_W + (NOMINAL_W - SLEEP_W) / 3)
        clock.advance(20)
        assert sim.hashrate_hs() == pytest.approx(NOMINAL_HS)


async def test_a_reversal_mid_ramp_starts_from_the_present_value(clock: FakeClock) -> None:
    sim = SimMiner(make_device(3), POOLS, port=0, ramp_seconds=30, clock=clock, noise_fraction=0)
    sim.set_asleep(True)
    clock.advance(10)
    midway_w = sim.power_w()
    sim.set_asleep(False)
    assert sim.power_w() == pytest.approx(midway_w)
    clock.advance(30)
    assert sim.power_w() == pytest.approx(NOMINAL_W)


async def test_average_hashrate_counts_time_asleep(miner: SimMiner, clock: FakeClock) -> None:
    clock.advance(100)
    miner.set_asleep(True)
    clock.advance(100)
    row = (await ask(miner, "summary"))["SUMMARY"][0]
    assert row["Elapsed"] == 200
    assert row["MHS av"] == pytest.approx(NOMINAL_HS / 2 / 1e6, rel=1e-6)
    assert row["MHS 5s"] == 0


async def test_chip_temperature_follows_a_first_order_lag(clock: FakeClock) -> None:
    tau = 60.0
    sim = SimMiner(
        make_device(4),
        POOLS,
        port=0,
        ramp_seconds=0,
        thermal_tau_seconds=tau,
        clock=clock,
        noise_fraction=0,
    )
    hot, idle = sim.chip_temperature_c(), 25.0 + 3.0
    assert hot == pytest.approx(70.0)
    sim.set_asleep(True)
    assert sim.chip_temperature_c() == pytest.approx(hot)  # no jump
    clock.advance(tau)
    assert sim.chip_temperature_c() == pytest.approx(idle + (hot - idle) * math.exp(-1))
    clock.advance(20 * tau)
    assert sim.chip_temperature_c() == pytest.approx(idle, abs=1e-6)


async def test_temperature_is_continuous_and_monotone_through_a_ramp(clock: FakeClock) -> None:
    sim = SimMiner(
        make_device(5),
        POOLS,
        port=0,
        ramp_seconds=30,
        thermal_tau_seconds=45,
        clock=clock,
        noise_fraction=0,
    )
    start = clock.now
    sim.set_asleep(True)
    temperatures = [sim.chip_temperature_c(start + t / 10) for t in range(0, 3000)]
    steps = [b - a for a, b in itertools.pairwise(temperatures)]
    assert all(step <= 1e-12 for step in steps)  # cooling only
    assert max(abs(s) for s in steps) < 0.1  # no jump, at the ramp's end included
    assert temperatures[-1] < temperatures[0] - 30


async def test_temperature_during_a_ramp_matches_a_numerical_integration(
    clock: FakeClock,
) -> None:
    ramp, tau = 30.0, 45.0
    sim = SimMiner(
        make_device(9),
        POOLS,
        ramp_seconds=ramp,
        thermal_tau_seconds=tau,
        clock=clock,
        noise_fraction=0,
    )
    start = clock.now
    sim.set_asleep(True)
    step, temperature_c = 0.001, sim.chip_temperature_c()
    for i in range(int(90 / step)):
        target_c = 25.0 + 3.0 + 42.0 * sim.hashrate_hs(start + i * step) / NOMINAL_HS
        temperature_c += (target_c - temperature_c) / tau * step
        if (i + 1) % int(15 / step) == 0:
            at = start + (i + 1) * step
            assert sim.chip_temperature_c(at) == pytest.approx(temperature_c, abs=0.01)


async def test_noise_is_seeded_by_device_id(clock: FakeClock) -> None:
    one = SimMiner(make_device(6), POOLS, clock=clock)
    same = SimMiner(make_device(6), POOLS, clock=clock)
    other = SimMiner(make_device(7), POOLS, clock=clock)
    assert one.power_w() == same.power_w() and one.hashrate_hs() == same.hashrate_hs()
    assert one.power_w() != other.power_w()
    assert abs(one.power_w() / NOMINAL_W - 1) <= 0.01


# ---- faults and wire variants ---------------------------------------------------------------


async def test_fault_close_accepts_then_closes_silently(miner: SimMiner) -> None:
    miner.fault = Fault.CLOSE
    assert await exchange(miner.address, miner.port, b'{"command":"summary"}') == b""


async def test_fault_garbage_is_broken_json_with_nul(miner: SimMiner) -> None:
    miner.fault = Fault.GARBAGE
    raw = await exchange(miner.address, miner.port, b'{"command":"summary"}')
    assert raw.endswith(b"\x00")
    with pytest.raises(json.JSONDecodeError):
        json.loads(raw[:-1])


async def test_fault_hang_never_answers_and_stop_still_returns(clock: FakeClock) -> None:
    sim = SimMiner(make_device(8), POOLS, port=0, clock=clock)
    await sim.start()
    sim.fault = Fault.HANG
    reader, writer = await asyncio.open_connection(sim.address, sim.port)
    writer.write(b'{"command":"summary"}')
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await reader.read()
    assert sim.connections.active == 1
    async with asyncio.timeout(2):
        await sim.stop()
    assert await reader.read() == b""  # the miner dropped the hung connection
    writer.close()


async def test_fault_slow_answers_after_the_delay(miner: SimMiner) -> None:
    miner.fault, miner.fault_delay_seconds = Fault.SLOW, 0.2
    started = time.monotonic()
    reply = await ask(miner, "summary")
    assert time.monotonic() - started >= 0.2
    assert status(reply)["STATUS"] == "S"


async def test_reply_without_nul_when_configured(miner: SimMiner) -> None:
    miner.nul_terminator = False
    raw = await exchange(miner.address, miner.port, b'{"command":"summary"}')
    assert b"\x00" not in raw
    assert json.loads(raw)["SUMMARY"][0]["Power"] == NOMINAL_W


async def test_hashrate_in_ghs_when_configured(miner: SimMiner) -> None:
    miner.hashrate_unit = "GHS"
    row = (await ask(miner, "summary"))["SUMMARY"][0]
    assert "MHS 5s" not in row and row["GHS 5s"] == pytest.approx(NOMINAL_HS / 1e9)


async def test_connections_are_counted_while_served(miner: SimMiner) -> None:
    miner.fault, miner.fault_delay_seconds = Fault.SLOW, 0.1
    await asyncio.gather(*(ask(miner, "summary") for _ in range(5)))
    assert (miner.connections.peak, miner.connections.active, miner.connections.total) == (5, 0, 5)


# ---- the site -------------------------------------------------------------------------------


@pytest.mark.parametrize("address", ["10.0.0.7", "::1", "miner.local", "128.0.0.1"])
def test_site_refuses_addresses_outside_loopback(address: str) -> None:
    bad = dataclasses.replace(make_device(1), address=address)
    with pytest.raises(ValueError, match=bad.id):
        SimSite([bad], POOLS)


def test_site_refuses_the_same_endpoint_twice() -> None:
    device = make_device(1)
    twin = dataclasses.replace(device, id="twin")
    with pytest.raises(ValueError, match="twin"):
        SimSite([device, twin], POOLS, port=4028)


async def test_site_starts_200_miners_quickly_all_mining_on_the_first_pool() -> None:
    devices = [make_device(i, prefix="127.76") for i in range(200)]
    started = time.monotonic()
    async with SimSite(devices, POOLS, port=0) as site:
        elapsed = time.monotonic() - started
        assert elapsed < 2.0
        assert len(site.miners) == 200 and all(d.port > 0 for d in site.devices)
        assert {m.state().active_pool_url for m in site.miners.values()} == {POOLS[0].url}
        probe = site.devices[123]
        summary = await ask(site.miners[probe.id], "summary")
        assert summary["SUMMARY"][0]["Power"] == round(site.miners[probe.id].power_w())
        assert site.total_power_w() == pytest.approx(200 * NOMINAL_W, rel=0.01)


async def test_site_total_power_drops_by_what_a_sleeping_miner_saves(clock: FakeClock) -> None:
    devices = [make_device(i, prefix="127.75") for i in range(5)]
    async with SimSite(devices, POOLS, port=0, clock=clock) as site:
        before = site.total_power_w()
        miner = site.miners[devices[2].id]
        saved = miner.power_w() - SLEEP_W
        miner.set_asleep(True)
        assert site.total_power_w() == pytest.approx(before - saved)


async def test_site_runs_a_thousand_miners() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2500 and hard >= 2500:
        resource.setrlimit(resource.RLIMIT_NOFILE, (2500, hard))
    elif soft < 2500:
        pytest.skip(f"open-file limit {soft}/{hard} too low for 1,000 listeners")
    devices = [make_device(i, prefix="127.74") for i in range(1000)]
    async with SimSite(devices, POOLS, port=0) as site:
        last = site.miners[devices[-1].id]
        assert status(await ask(last, "version"))["STATUS"] == "S"
