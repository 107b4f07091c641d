"""Braiins OS, read path only: telemetry over the cgminer-compatible API; commands refused."""

from __future__ import annotations

from drivers.asic.braiins import BraiinsDriver
from drivers.asic.config import BraiinsOptions
from drivers.asic.discover import discover
from drivers.sim.site import SimSite
from scheduler.model import Device, DeviceKind, OutcomeStatus, Pool, Workload

POOLS = {"main": Pool("main", "stratum+tcp://main.example:3333", "w")}


async def test_reads_work_and_every_command_is_refused_without_touching_the_miner() -> None:
    device = Device(
        "bos-1", DeviceKind.ASIC, "S19j Pro", "braiins", "127.35.2.1", 0, 104e12, 3068.0,
        pools=("main",),
    )  # fmt: skip
    async with SimSite([device], list(POOLS.values()), port=0) as site:
        miner = site.miners[device.id]
        miner.version_extra = {"BOSminer": "bosminer-plus-tuner 0.9.0"}
        device = site.devices[0]
        driver = BraiinsDriver(POOLS, BraiinsOptions(timeout_seconds=0.5))
        sample = await driver.collect(device)
        assert sample.workload == Workload.mine("main") and sample.power_w > 3000
        for workload in (Workload.sleep(), Workload.mine("main", 0.8)):
            outcome = await driver.apply(device, workload)
            assert outcome.status is OutcomeStatus.REJECTED and "gRPC" in outcome.detail
        assert not miner.asleep and "curtail" not in miner.command_counts
        found = await discover([device.address], port=device.port, timeout_seconds=0.5)
    assert [(f.driver, f.model) for f in found] == [("braiins", "S19j Pro")]
