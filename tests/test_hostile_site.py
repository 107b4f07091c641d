"""One hostile miner, feed or driver bug never stops the site: the rest stays under control.

A daemon over real TCP runs good simulated miners beside hostile ones (a reply
10,000 brackets deep, a 5,000-digit integer), a driver whose collect raises a
RuntimeError, one whose apply does, and a market feed that raises.  A price
spike must still put every good miner to sleep, and the daemon stays up.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from drivers.asic.registry import AsicDriver
from drivers.market.static import StaticMarketFeed
from drivers.sim.hostile import Behaviour, HostileMiner
from drivers.sim.site import SimSite
from scheduler.config.devices import pools_of
from scheduler.config.loading import parse_config
from scheduler.core.model import Device, Outcome, Reading, Sample, Workload
from scheduler.daemon import Daemon
from tests.test_end_to_end import MARKET, SPIKE, eventually, free_port_on, metric_samples

pytestmark = pytest.mark.system

GOOD = "127.91.3.1"
HOSTILE = {
    "bad-deep": ("127.91.3.20", Behaviour.DEEP),
    "bad-int": ("127.91.3.21", Behaviour.HUGE_INTEGER),
}


class SpikeFeed:
    name = "spike"

    async def fetch(self) -> dict[str, Reading]:
        return {"power_price_usd_per_mwh": Reading(SPIKE, time.monotonic(), self.name)}


class BrokenFeed:
    name = "broken"

    async def fetch(self) -> dict[str, Reading]:
        raise RuntimeError("bug in a feed")


class CollectBug:
    """A driver whose collect raises what no driver should."""

    async def collect(self, device: Device) -> Sample:
        raise RuntimeError("bug in a parser")

    async def apply(self, device: Device, workload: Workload) -> Outcome:
        raise AssertionError("never commanded: never read")


class ApplyBug:
    """Reads through the real driver; its apply raises."""

    def __init__(self, driver: AsicDriver) -> None:
        self.driver = driver
        self.applied = 0

    async def collect(self, device: Device) -> Sample:
        return await self.driver.collect(device)

    async def apply(self, device: Device, workload: Workload) -> Outcome:
        self.applied += 1
        raise KeyError("bug in a command")


class BuggyDaemon(Daemon):
    apply_bug: ApplyBug | None = None

    def _drivers(self) -> Mapping[str, Any]:
        drivers = dict(super()._drivers())
        self.apply_bug = ApplyBug(drivers["s21-004"])
        drivers["s21-004"] = self.apply_bug
        drivers["s21-005"] = CollectBug()
        return drivers


async def test_hostile_miners_feeds_and_driver_bugs_cost_only_themselves(tmp_path: Path) -> None:
    port = free_port_on(GOOD)
    options = {"port": port, "timeout_seconds": 0.5, "confirm_timeout_seconds": 2.0}
    options["confirm_interval_seconds"] = 0.05
    config = parse_config(
        {
            "site": {"name": "hostile", "power_cap_kw": 1000.0},
            "control": {"tick_seconds": 0.2},
            "guard": {"min_dwell_seconds": 0.0, "stale_price_seconds": 60.0},
            "store": {"path": str(tmp_path / "w.sqlite")},
            "pools": [{"name": "main", "url": "stratum+tcp://main.pool.invalid:3333", "user": "w"}],
            "device_ranges": [
                {
                    "id_prefix": "s21",
                    "model": "S21",
                    "first_address": GOOD,
                    "count": 5,
                    "pools": ["main"],
                    "options": options,
                }
            ],
            "devices": [
                {
                    "id": name,
                    "model": "S21",
                    "address": address,
                    "pools": ["main"],
                    "options": options,
                }
                for name, (address, _) in HOSTILE.items()
            ],
        },
        "<hostile>",
        environ={},
    )
    good = [d for d in config.all_devices() if d.id.startswith("s21")]
    daemon = BuggyDaemon(config, feeds=[StaticMarketFeed(MARKET), SpikeFeed(), BrokenFeed()])
    hostile = [HostileMiner(address, behaviour, port) for address, behaviour in HOSTILE.values()]
    stop = asyncio.Event()
    async with SimSite(good, list(pools_of(config).values()), port=port) as site:
        for miner in hostile:
            await miner.start()
        try:
            task = asyncio.create_task(daemon.run(stop, serve_api=False))
            await asyncio.wait_for(daemon.ready.wait(), 10)
            miners = site.miners
            await eventually(lambda: all(miners[f"s21-00{i}"].asleep for i in (1, 2, 3)))
            assert daemon.loop is not None
            ticks = daemon.loop.ticks
            await eventually(lambda: daemon.loop is not None and daemon.loop.ticks >= ticks + 3)
            assert not task.done()  # still up
            status = daemon.state.status
            assert not status["bad-deep"].reachable and "deep" in status["bad-deep"].last_error
            assert not status["bad-int"].reachable and "digits" in status["bad-int"].last_error
            assert not status["s21-005"].reachable
            assert "RuntimeError" in status["s21-005"].last_error
            assert not miners["s21-005"].asleep  # never read, so never commanded
            assert daemon.apply_bug is not None and daemon.apply_bug.applied >= 1
            errors = metric_samples(daemon.metrics.render().decode(), "wattmux_poll_errors_total")
            assert errors[(("reason", "internal"),)] >= 2  # the collect bug and the apply bug
            assert errors[(("reason", "malformed"),)] >= 2
            up = metric_samples(daemon.metrics.render().decode(), "wattmux_source_up")
            assert up[(("source", "broken"),)] == 0.0
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
            for miner in hostile:
                await miner.stop()
