"""A daemon running in-process over a small simulated site, for the deployment tests.

The site lives in 127.80.<subnet>.1-12, the API on a free port of 127.80.<subnet>.254.  A
few devices are made faulty and one extra feed always fails, so that the
"trouble" series (unreachable devices, a source down) exist alongside the
healthy ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drivers.base import MarketFeed
from drivers.errors import Unavailable
from drivers.sim.miner import Fault
from drivers.sim.site import SimSite
from scheduler.api.auth import hash_token, new_token
from scheduler.config.devices import pools_of
from scheduler.config.loading import parse_config
from scheduler.config.schema import WattmuxConfig
from scheduler.control.systemd import SystemdNotifier
from scheduler.core.model import Reading
from scheduler.daemon import Daemon, build_feeds

MODELS = (("s19jpro", "S19j Pro", 4), ("s21", "S21", 6), ("s21xp", "S21 XP", 2))
SCRAPE_TOKEN = new_token()  # a viewer token, as a Prometheus server would hold one


class BrokenFeed:
    """A market feed whose every fetch fails, as an unreachable price API would."""

    name = "broken-feed"

    async def fetch(self) -> dict[str, Reading]:
        raise Unavailable(self.name, "connection refused (test feed)")


def free_port_on(address: str) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


def sim_config(tmp_path: Path, subnet: int, port: int, speed: float) -> WattmuxConfig:
    """Twelve ASICs of three models on 127.80.<subnet>.x, replaying ERCOT prices."""
    ranges: list[dict[str, Any]] = []
    offset = 1
    for prefix, model, count in MODELS:
        ranges.append(
            {
                "id_prefix": prefix,
                "model": model,
                "first_address": f"127.80.{subnet}.{offset}",
                "count": count,
                "pools": ["main"],
                "options": {
                    "port": port,
                    "timeout_seconds": 0.5,
                    "confirm_timeout_seconds": 2.0,
                    "confirm_interval_seconds": 0.05,
                },
            }
        )
        offset += count
    data: dict[str, Any] = {
        "site": {"name": "sim", "power_cap_kw": 60.0},
        "control": {"tick_seconds": 0.25},
        "economics": {"pool_fee": 0.02},
        "guard": {"min_dwell_seconds": 0.0, "stale_price_seconds": 30.0},
        "store": {"path": str(tmp_path / "wattmux.sqlite")},
        "api": {
            "listen": f"127.80.{subnet}.254:{free_port_on(f'127.80.{subnet}.254')}",
            "tokens": [
                {"name": "prometheus", "role": "viewer", "sha256": hash_token(SCRAPE_TOKEN)}
            ],
        },
        "pools": [{"name": "main", "url": "stratum+tcp://main.pool.invalid:3333", "user": "w"}],
        "device_ranges": ranges,
        "market": [{"driver": "ercot-replay", "speed": speed}],
    }
    return parse_config(data, "<sim daemon>", environ={})


@dataclass
class SimDaemon:
    """The running daemon and its site."""

    config: WattmuxConfig
    daemon: Daemon
    site: SimSite

    @property
    def base_url(self) -> str:
        return f"http://{self.config.api.listen}"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {SCRAPE_TOKEN}"}


@contextlib.asynccontextmanager
async def sim_daemon(
    tmp_path: Path,
    subnet: int,
    *,
    faulty: int = 1,
    speed: float = 1500.0,
    extra_feeds: Sequence[MarketFeed] = (),
    notifier: SystemdNotifier | None = None,
) -> AsyncIterator[SimDaemon]:
    """Run the daemon over the simulated site until the block ends; ``faulty`` miners close."""
    port = free_port_on(f"127.80.{subnet}.1")
    config = sim_config(tmp_path, subnet, port, speed)
    feeds = [*build_feeds(config, time.monotonic), BrokenFeed(), *extra_feeds]
    daemon = Daemon(config, feeds=feeds, notifier=notifier)
    stop = asyncio.Event()
    async with SimSite(config.all_devices(), list(pools_of(config).values()), port=port) as site:
        for miner in list(site.miners.values())[:faulty]:
            miner.fault = Fault.CLOSE
        task = asyncio.create_task(daemon.run(stop), name="daemon.run")
        try:
            await asyncio.wait_for(daemon.ready.wait(), 15)
            yield SimDaemon(config, daemon, site)
        finally:
            stop.set()
            await asyncio.wait_for(task, 15)


async def wait_ticks(sim: SimDaemon, ticks: int, timeout_s: float = 20.0) -> None:
    """Return once the control loop has run ``ticks`` ticks; fail after timeout_s."""
    loop = sim.daemon.loop
    assert loop is not None
    for _ in range(int(timeout_s / 0.05)):
        if loop.ticks >= ticks:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"only {loop.ticks} ticks in {timeout_s} s")
