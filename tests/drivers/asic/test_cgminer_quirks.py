"""cgminer client quirks (bmminer JSON slips, refusals) and LuxOS session reuse, over real TCP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from drivers.asic.cgminer import CgminerDriver, decode_reply
from drivers.asic.cgminer_client import CgminerClient
from drivers.asic.config import CgminerOptions
from drivers.errors import MalformedReply, Rejected
from drivers.sim.site import SimSite
from scheduler.core.model import Device, OutcomeStatus, Pool, Workload
from tests.fakes import asic

POOLS = {"main": Pool("main", "stratum+tcp://main.example:3333", "site.w1")}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'{"STATS":[{"a":1}{"b":2}],"id":1}', {"STATS": [{"a": 1}, {"b": 2}], "id": 1}),
        (
            b'{"STATS":[{"a":1,},{"b":[1,2,]}],"id":1}',
            {"STATS": [{"a": 1}, {"b": [1, 2]}], "id": 1},
        ),
        (b'{"STATS":[{"t":nan,"u":-inf}],"id":1}', {"STATS": [{"t": None, "u": None}], "id": 1}),
        (b'{"Msg":"tab\there"}', {"Msg": "tab\there"}),
        (b'{"Msg":"nan stays text","v":1}', {"Msg": "nan stays text", "v": 1}),
    ],
)
def test_known_firmware_json_slips_are_repaired(raw: bytes, expected: dict[str, object]) -> None:
    assert decode_reply(raw, "m") == expected


@pytest.mark.parametrize("raw", [b'{"STATUS":[{"STATUS":"S"', b"[1,2]", b"hello"])
def test_other_broken_replies_stay_malformed(raw: bytes) -> None:
    with pytest.raises(MalformedReply):
        decode_reply(raw, "m")


async def serve_once(reply: bytes) -> tuple[asyncio.Server, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(4096)
        writer.write(reply)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.33.0.1", 0)
    return server, int(server.sockets[0].getsockname()[1])


@pytest.mark.parametrize(
    "reply",
    [
        b'{"STATUS":[{"STATUS":"E","When":1,"Code":45,"Msg":"Access denied to \'ascset\' command","Description":"bmminer"}],"id":1}\x00',
        b'{"STATUS":"E","When":1,"Code":14,"Msg":"invalid cmd","Description":""}',
    ],
)
async def test_access_denied_and_privileged_errors_are_rejected(reply: bytes) -> None:
    server, port = await serve_once(reply)
    async with server:
        with pytest.raises(Rejected, match=r"denied|invalid cmd"):
            await CgminerClient(timeout_seconds=1.0).command("127.33.0.1", port, "ascset", "0")


def make_device(index: int) -> Device:
    return asic(f"q-{index}", address=f"127.33.1.{index + 1}", port=0)


@pytest.fixture
async def site() -> AsyncIterator[SimSite]:
    async with SimSite([make_device(0)], list(POOLS.values()), port=0) as sim:
        yield sim


async def test_a_kept_session_is_reused_and_renewed_when_it_expired(site: SimSite) -> None:
    now = [1000.0]
    options = CgminerOptions(
        timeout_seconds=0.5,
        confirm_timeout_seconds=1.0,
        confirm_interval_seconds=0.02,
        session_reuse_seconds=30.0,
    )
    driver = CgminerDriver(POOLS, options, clock=lambda: now[0])
    device = site.devices[0]
    miner = site.miners[device.id]
    for workload in (Workload.sleep(), Workload.mine("main"), Workload.sleep()):
        outcome = await driver.apply(device, workload)
        assert outcome.status is OutcomeStatus.CONFIRMED
    assert (miner.command_counts["logon"], miner.command_counts["logoff"]) == (1, 0)
    assert miner.command_counts["curtail"] == 3
    kept = miner.handle("session")["SESSION"][0]["SessionID"]
    miner.handle("logoff", kept)  # someone else ended our session meanwhile
    outcome = await driver.apply(device, Workload.mine("main"))
    assert outcome.status is OutcomeStatus.CONFIRMED and not miner.asleep
    assert miner.command_counts["logon"] == 2  # refused once, logged on again
    now[0] += 31.0  # past our own reuse window: log on without trying the old one
    before = miner.command_counts["curtail"]
    assert (await driver.apply(device, Workload.sleep())).status is OutcomeStatus.CONFIRMED
    assert miner.command_counts["curtail"] == before + 1
    assert miner.command_counts["logon"] == 3
