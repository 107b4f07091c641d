"""Hostile miners over real TCP: every misbehaviour ends as a DriverError, never a crash."""

from __future__ import annotations

import asyncio
import gc

import pytest

from drivers.asic.cgminer import CgminerClient, CgminerDriver
from drivers.asic.cgminer_client import decode_reply
from drivers.asic.config import CgminerOptions
from drivers.errors import DriverError, MalformedReply, Timeout, Unavailable
from drivers.sim.hostile import Behaviour, HostileMiner, reply_bytes
from scheduler.core.model import Device, DeviceKind, Pool

POOLS = {"main": Pool("main", "stratum+tcp://main.pool.invalid:3333", "site.w1")}
OPTIONS = CgminerOptions(timeout_seconds=0.5)
EXPECTED: dict[Behaviour, type[DriverError]] = {
    Behaviour.DEEP: MalformedReply,
    Behaviour.HUGE_INTEGER: MalformedReply,
    Behaviour.ENDLESS: MalformedReply,
    Behaviour.OVERSIZED: MalformedReply,
    Behaviour.DRIP: Timeout,
    Behaviour.GARBAGE: MalformedReply,
    Behaviour.TRUNCATED: MalformedReply,
    Behaviour.RESET: Unavailable,
    Behaviour.NEVER_CLOSE: Timeout,
    Behaviour.WRONG_TYPES: MalformedReply,
    Behaviour.NAN: MalformedReply,
    Behaviour.NEGATIVE: MalformedReply,
    Behaviour.ABSURD: MalformedReply,
}


def device(address: str, port: int) -> Device:
    return Device(
        "bad-1", DeviceKind.ASIC, "S21", "cgminer", address, port, 200e12, 3500.0, pools=("main",)
    )


@pytest.mark.parametrize(
    "raw",
    [reply_bytes(Behaviour.DEEP)[:-1], reply_bytes(Behaviour.HUGE_INTEGER)[:-1]],
    ids=["deep", "huge_integer"],
)
def test_decode_reply_refuses_deep_nesting_and_huge_integers(raw: bytes) -> None:
    with pytest.raises(MalformedReply):
        decode_reply(raw, "bad-1")


@pytest.mark.system
@pytest.mark.parametrize("behaviour", list(Behaviour), ids=str)
async def test_each_hostile_miner_is_a_driver_error(behaviour: Behaviour) -> None:
    address = f"127.91.1.{list(Behaviour).index(behaviour) + 1}"
    async with HostileMiner(address, behaviour, drip_seconds=0.2) as miner:
        driver = CgminerDriver(POOLS, OPTIONS, client=CgminerClient(timeout_seconds=0.5))
        with pytest.raises(EXPECTED[behaviour]):
            await driver.collect(device(address, miner.port))


@pytest.mark.system
async def test_a_deadline_inside_connect_leaves_no_unretrieved_exception() -> None:
    # Deadlines spread over the few microseconds of a loopback connect: some expire while
    # asyncio is still making the connection, which then closes it and fails the reply future.
    # Nothing may reach the loop's exception handler ("Future exception was never retrieved").
    loop = asyncio.get_running_loop()
    reported: list[str] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: reported.append(str(context.get("message"))))

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(b'{"STATUS":[{"STATUS":"S"}]}\x00')
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    outcomes: set[str] = set()
    try:
        for index in range(400):
            client = CgminerClient(timeout_seconds=0.00001 + 0.0005 * (index % 50) / 50)
            try:
                await client.command("127.0.0.1", port, "summary", source="x")
                outcomes.add("reply")
            except DriverError as exc:
                outcomes.add(type(exc).__name__)
        gc.collect()
        await asyncio.sleep(0.05)
        gc.collect()
    finally:
        server.close()
        await server.wait_closed()
        loop.set_exception_handler(previous)
    assert "Timeout" in outcomes  # the deadlines did expire
    assert [m for m in reported if "never retrieved" in m] == []
