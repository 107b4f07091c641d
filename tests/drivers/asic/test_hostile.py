"""Hostile miners over real TCP: every misbehaviour ends as a DriverError, never a crash."""

from __future__ import annotations

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
