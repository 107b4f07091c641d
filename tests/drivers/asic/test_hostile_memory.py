"""Buffers are released on every path: polling a miner that never stops sending keeps nothing."""

from __future__ import annotations

import gc
import tracemalloc

import pytest

from drivers.asic.cgminer import CgminerClient, CgminerDriver
from drivers.asic.config import CgminerOptions
from drivers.errors import MalformedReply
from drivers.sim.hostile import Behaviour, HostileMiner
from scheduler.core.model import Device, DeviceKind, Pool

pytestmark = pytest.mark.system

POOLS = {"main": Pool("main", "stratum+tcp://main.pool.invalid:3333", "site.w1")}
POLLS = 20


@pytest.mark.parametrize(
    ("address", "behaviour"),
    [("127.91.6.1", Behaviour.ENDLESS), ("127.91.6.2", Behaviour.OVERSIZED)],
    ids=["endless", "oversized"],
)
async def test_polling_a_miner_that_streams_forever_retains_no_memory(
    address: str, behaviour: Behaviour
) -> None:
    async with HostileMiner(address, behaviour) as miner:
        device = Device(
            "bad-1", DeviceKind.ASIC, "S21", "cgminer", address, miner.port, 200e12, 3500.0
        )
        driver = CgminerDriver(
            POOLS, CgminerOptions(timeout_seconds=2.0), client=CgminerClient(timeout_seconds=2.0)
        )

        async def poll() -> None:
            with pytest.raises(MalformedReply, match="larger than"):
                await driver.collect(device)

        await poll()  # warm up: first-use allocations
        gc.collect()
        gc.disable()  # as in the daemon's frozen, rarely collected heap: cycles would stay
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for _ in range(POLLS):
                await poll()
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
            gc.enable()
    # one reply is up to 1 MiB: keeping one per poll would be 20 MiB
    assert grown < 1024 * 1024, f"{grown} bytes retained after {POLLS} polls"
    assert miner.bytes_sent < POLLS * 8 * 1024 * 1024  # it stopped reading, the miner noticed
