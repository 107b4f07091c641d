"""Slow devices do not slow the site, no command goes out twice, and a stuck loop runs the failsafe.

A daemon over real TCP runs 20 good simulated miners beside hung ones (a miner
that never answers, one that answers a byte a second) with the shipped 3 s
per-command timeout: ticks stay on time, and a site-wide curtail sends exactly
one sleep to each good miner.  A second daemon whose control loop hangs has its
watchdog put every miner to sleep and exit.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from drivers.market.static import StaticMarketFeed
from drivers.sim.hostile import Behaviour, HostileMiner
from drivers.sim.site import SimSite
from scheduler.config.devices import pools_of
from scheduler.config.loading import parse_config
from scheduler.config.schema import WattmuxConfig
from scheduler.control.watchdog import EXIT_STUCK
from scheduler.core.model import Reading
from scheduler.daemon import Daemon
from tests.test_end_to_end import CHEAP, MARKET, SPIKE, PriceFeed, eventually, free_port_on

pytestmark = pytest.mark.system

GOOD = "127.91.4.1"
GOOD_COUNT = 20
HUNG = {
    "hung-silent": ("127.91.4.40", Behaviour.NEVER_CLOSE),
    "hung-silent-2": ("127.91.4.41", Behaviour.NEVER_CLOSE),
    "hung-drip": ("127.91.4.42", Behaviour.DRIP),
    "hung-drip-2": ("127.91.4.43", Behaviour.DRIP),
}


def config_for(
    tmp_path: Path, port: int, control: dict[str, Any], hostile: dict[str, tuple[str, Behaviour]]
) -> WattmuxConfig:
    options = {"port": port, "timeout_seconds": 3.0, "confirm_timeout_seconds": 2.0}
    options["confirm_interval_seconds"] = 0.05
    return parse_config(
        {
            "site": {"name": "slow", "power_cap_kw": 1000.0},
            "control": control,
            "guard": {"min_dwell_seconds": 0.0, "stale_price_seconds": 60.0},
            "store": {"path": str(tmp_path / "w.sqlite")},
            "pools": [{"name": "main", "url": "stratum+tcp://main.pool.invalid:3333", "user": "w"}],
            "device_ranges": [
                {
                    "id_prefix": "s21",
                    "model": "S21",
                    "first_address": GOOD,
                    "count": GOOD_COUNT,
                    "pools": ["main"],
                    "options": options,
                }
            ],
            "devices": [
                {"id": name, "model": "S21", "address": address, "pools": ["main"]}
                | {"options": options}
                for name, (address, _) in hostile.items()
            ],
        },
        "<slow>",
        environ={},
    )


def sleep_intents(path: Path) -> dict[str, int]:
    with sqlite3.connect(path) as db:
        rows = db.execute(
            "SELECT device_id, COUNT(*) FROM intents WHERE workload = 'sleep' GROUP BY device_id"
        ).fetchall()
    return {device_id: count for device_id, count in rows}


async def test_hung_miners_do_not_hold_the_tick_and_good_miners_are_commanded_once(
    tmp_path: Path,
) -> None:
    port = free_port_on(GOOD)
    config = config_for(tmp_path, port, {"tick_seconds": 0.2, "poll_deadline_seconds": 0.3}, HUNG)
    good = [d for d in config.all_devices() if d.id.startswith("s21")]
    price = PriceFeed(CHEAP)
    daemon = Daemon(config, feeds=[StaticMarketFeed(MARKET), price])
    hostile = [HostileMiner(address, behaviour, port) for address, behaviour in HUNG.values()]
    stop = asyncio.Event()
    async with SimSite(good, list(pools_of(config).values()), port=port) as site:
        for miner in hostile:
            await miner.start()
        try:
            task = asyncio.create_task(daemon.run(stop, serve_api=False))
            await asyncio.wait_for(daemon.ready.wait(), 10)
            assert daemon.loop is not None
            loop = daemon.loop
            # Ticks keep their period while every hung poll runs into its 3 s timeout.
            ticks = loop.ticks
            await asyncio.sleep(3.0)
            assert loop.ticks - ticks >= 8, loop.ticks - ticks
            assert all(not m.asleep for m in site.miners.values())
            price.price_usd_per_mwh = SPIKE  # a site-wide curtail
            await eventually(lambda: all(m.asleep for m in site.miners.values()), 5.0)
            ticks = loop.ticks
            await eventually(lambda: loop.ticks >= ticks + 10, 10.0)  # later ticks send nothing
            assert not task.done()
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
            for miner in hostile:
                await miner.stop()
    intents = sleep_intents(tmp_path / "w.sqlite")
    assert intents == {d.id: 1 for d in good}  # 20 intents: each good miner commanded once
    assert sum(m.command_counts["ascset"] for m in site.miners.values()) <= GOOD_COUNT


class HangingFeed:
    """A market feed that answers twice, then never again: the tick hangs on it."""

    name = "hangs"

    def __init__(self) -> None:
        self.calls = 0

    async def fetch(self) -> dict[str, Reading]:
        self.calls += 1
        if self.calls > 2:
            await asyncio.Event().wait()
        return {}


async def test_a_stuck_loop_runs_the_failsafe_from_the_watchdog_and_exits(tmp_path: Path) -> None:
    port = free_port_on(GOOD)
    hostile_spec = {"bad-deep": ("127.91.4.50", Behaviour.DEEP), **dict(list(HUNG.items())[:1])}
    config = config_for(
        tmp_path,
        port,
        {
            "tick_seconds": 0.1,
            "poll_deadline_seconds": 0.3,
            "watchdog_ticks": 5,
            "watchdog_min_seconds": 1.5,
        },
        hostile_spec,
    )
    good = [d for d in config.all_devices() if d.id.startswith("s21")]
    exited = threading.Event()
    codes: list[int] = []

    main_loop = asyncio.get_running_loop()
    tasks: list[asyncio.Task[None]] = []

    def exit_process(code: int) -> None:  # instead of os._exit: the daemon stops
        codes.append(code)
        main_loop.call_soon_threadsafe(tasks[0].cancel)
        exited.set()

    daemon = Daemon(
        config,
        feeds=[StaticMarketFeed(MARKET), PriceFeed(CHEAP), HangingFeed()],
        exit_process=exit_process,
    )
    hostile = [HostileMiner(a, behaviour, port) for a, behaviour in hostile_spec.values()]
    stop = asyncio.Event()
    async with SimSite(good, list(pools_of(config).values()), port=port) as site:
        for miner in hostile:
            await miner.start()
        assert all(not m.asleep for m in site.miners.values())
        try:
            task = asyncio.create_task(daemon.run(stop, serve_api=False))
            tasks.append(task)
            await asyncio.wait_for(daemon.ready.wait(), 10)  # then the third tick hangs
            await asyncio.wait_for(asyncio.to_thread(exited.wait, 30), 35)
            assert codes == [EXIT_STUCK]
            assert all(m.asleep for m in site.miners.values())  # the failsafe reached them all
        finally:
            stop.set()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            for miner in hostile:
                await miner.stop()
