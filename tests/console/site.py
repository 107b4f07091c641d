"""A running daemon over a simulated site, in a thread of its own, for the browser tests.

The browser is driven with Playwright's sync API in the test's thread; the
daemon and its simulated miners (real cgminer protocol on 127.77.44.x) run on
an event loop in a background thread, as the daemon would run in its process.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drivers.market.static import StaticMarketFeed
from drivers.sim.site import SimSite
from scheduler.api.auth import Role, hash_token, new_token
from scheduler.config.devices import pools_of
from scheduler.config.loading import parse_config
from scheduler.config.schema import WattmuxConfig
from scheduler.core.model import Reading
from scheduler.daemon import Daemon
from tests.conftest import free_port

AXE = Path(__file__).parent / "vendor" / "axe-core-4.10.3" / "axe.min.js"
MARKET = {
    "btc_price_usd": 59_013.80,
    "difficulty": 86_871_474_313_762.0,
    "block_subsidy_btc": 3.125,
    "fees_btc_per_block": 0.0,
}


def chromium_path() -> str | None:
    """Debian's chromium (installed by `make chromium`)."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


class PriceFeed:
    """A cheap power price, fresh at every fetch: every S21 mines."""

    name = "test-price"

    def __init__(self, price: float) -> None:
        self.price = price

    async def fetch(self) -> dict[str, Reading]:
        return {"power_price_usd_per_mwh": Reading(self.price, time.monotonic(), self.name)}


def console_config(
    store: Path, first_address: str, count: int, sim_port: int, tokens: dict[Role, str], **api: Any
) -> WattmuxConfig:
    data: dict[str, Any] = {
        "site": {"name": "console-test", "power_cap_kw": 1000.0},
        "control": {"tick_seconds": 0.25, "watchdog_ticks": 0},
        "economics": {"pool_fee": 0.0},
        "guard": {"min_dwell_seconds": 0.0, "stale_price_seconds": 60.0},
        "store": {"path": str(store)},
        "api": {
            "listen": f"127.0.0.1:{free_port()}",
            "tokens": [
                {"name": f"{role.label}-1", "role": role.label, "sha256": hash_token(token)}
                for role, token in tokens.items()
            ],
            "mutations_per_minute": 600.0,
            "mutation_burst": 100,
            **api,
        },
        "pools": [
            {"name": "main", "url": "stratum+tcp://main.pool.invalid:3333", "user": "w"},
            {"name": "backup", "url": "stratum+tcp://backup.pool.invalid:3333", "user": "w"},
        ],
        "device_ranges": [
            {
                "id_prefix": "s21",
                "model": "S21",
                "first_address": first_address,
                "count": count,
                "pools": ["main", "backup"],
                "location": {"rack": "R", "per_rack": 20},
                "options": {
                    "port": sim_port,
                    "timeout_seconds": 1.0,
                    "confirm_timeout_seconds": 2.0,
                    "confirm_interval_seconds": 0.05,
                },
            }
        ],
    }
    return parse_config(data, "<console test>", environ={})


@dataclass
class RunningSite:
    config: WattmuxConfig
    daemon: Daemon
    tokens: dict[Role, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://{self.config.api.listen}"


@contextmanager
def running_site(
    directory: Path, first_address: str, count: int, **api: Any
) -> Iterator[RunningSite]:
    """Start the simulated miners and the daemon in a thread; stop both on exit."""
    with socket.socket() as sock:
        sock.bind((first_address, 0))
        sim_port = int(sock.getsockname()[1])
    tokens = {role: new_token() for role in Role}
    config = console_config(directory / "w.sqlite", first_address, count, sim_port, tokens, **api)
    daemon = Daemon(config, feeds=[StaticMarketFeed(MARKET), PriceFeed(20.0)])
    loop = asyncio.new_event_loop()
    started = threading.Event()
    failure: list[BaseException] = []
    stop: asyncio.Event | None = None

    async def main() -> None:
        nonlocal stop
        stop = asyncio.Event()
        pools = list(pools_of(config).values())
        async with SimSite(config.all_devices(), pools, port=sim_port, ramp_seconds=0.5):
            task = asyncio.create_task(daemon.run(stop))
            try:
                await asyncio.wait_for(daemon.ready.wait(), 20)
            finally:
                started.set()
            await task

    def thread_main() -> None:
        try:
            loop.run_until_complete(main())
        except BaseException as exc:
            failure.append(exc)
            started.set()

    thread = threading.Thread(target=thread_main, name="console-site", daemon=True)
    thread.start()
    started.wait(30)
    if failure:
        raise RuntimeError(f"the daemon did not start: {failure[0]!r}")
    try:
        yield RunningSite(config, daemon, tokens)
    finally:
        if stop is not None:
            loop.call_soon_threadsafe(stop.set)
        thread.join(20)
        loop.close()
