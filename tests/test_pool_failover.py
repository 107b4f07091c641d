"""Pool failover end to end over real TCP: the miners report a pool Dead, the daemon moves them.

The simulated miners start with only the cheaper pool configured; the daemon's
``max-margin`` policy may use a second one.  When the cheaper pool goes Dead on
every miner, the next plan moves them to the backup pool through the real
driver (addpool + switchpool, confirmed by reading back); when it comes back,
the daemon returns to it only after ``control.pool_recovery_seconds``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from drivers.market.static import StaticMarketFeed
from drivers.sim.site import SimSite
from scheduler.config.devices import pools_of
from scheduler.config.loading import parse_config
from scheduler.config.schema import WattmuxConfig
from scheduler.daemon import Daemon
from scheduler.store.journal import Store
from tests.conftest import free_port
from tests.test_end_to_end import AUTH, CHEAP, MARKET, TOKEN, PriceFeed, eventually, free_port_on

pytestmark = pytest.mark.system

MAIN_URL = "stratum+tcp://main.pool.invalid:3333"
BACKUP_URL = "stratum+tcp://backup.pool.invalid:3333"
RECOVERY_SECONDS = 1.5
COUNT = 4


def failover_config(tmp_path: Path, first_address: str, port: int) -> WattmuxConfig:
    """Four S21s on max-margin with a cheap main pool and a dearer backup."""
    from scheduler.api.auth import hash_token

    data: dict[str, Any] = {
        "site": {"name": "failover", "power_cap_kw": 1000.0},
        "control": {"tick_seconds": 0.2, "pool_recovery_seconds": RECOVERY_SECONDS},
        "economics": {"pool_fee": 0.02},
        "policy": {"name": "max-margin", "pool_fees": {"main": 0.01, "backup": 0.03}},
        "guard": {"min_dwell_seconds": 0.0, "stale_price_seconds": 60.0},
        "store": {"path": str(tmp_path / "wattmux.sqlite")},
        "api": {
            "listen": f"127.0.0.1:{free_port()}",
            "tokens": [{"name": "e2e", "role": "viewer", "sha256": hash_token(TOKEN)}],
        },
        "pools": [
            {"name": "main", "url": MAIN_URL, "user": "w"},
            {"name": "backup", "url": BACKUP_URL, "user": "w"},
        ],
        "device_ranges": [
            {
                "id_prefix": "s21",
                "model": "S21",
                "first_address": first_address,
                "count": COUNT,
                "pools": ["main", "backup"],
                "options": {
                    "port": port,
                    "timeout_seconds": 1.0,
                    "confirm_timeout_seconds": 2.0,
                    "confirm_interval_seconds": 0.05,
                },
            }
        ],
    }
    return parse_config(data, "<failover>", environ={})


@pytest.fixture
async def site_and_daemon(tmp_path: Path) -> AsyncIterator[tuple[WattmuxConfig, Daemon, SimSite]]:
    first_address = "127.63.4.1"
    port = free_port_on(first_address)
    config = failover_config(tmp_path, first_address, port)
    daemon = Daemon(config, feeds=[StaticMarketFeed(MARKET), PriceFeed(CHEAP)])
    main_only = [pools_of(config)["main"]]  # the miners know only main: backup is added
    stop = asyncio.Event()
    async with SimSite(config.all_devices(), main_only, port=port) as site:
        task = asyncio.create_task(daemon.run(stop), name="daemon.run")
        await asyncio.wait_for(daemon.ready.wait(), 10)
        try:
            yield config, daemon, site
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)


def on(site: SimSite, url: str) -> bool:
    return all(m.state().active_pool_url == url for m in site.miners.values())


async def test_dead_pool_fails_over_and_returns_after_the_recovery_dwell(
    site_and_daemon: tuple[WattmuxConfig, Daemon, SimSite],
) -> None:
    config, daemon, site = site_and_daemon
    base_url = f"http://{config.api.listen}"
    await eventually(lambda: daemon.state.pools_up.get("main") is True)
    assert on(site, MAIN_URL)

    site.set_pool_alive(MAIN_URL, False)
    await eventually(lambda: on(site, BACKUP_URL), timeout_s=10)
    assert daemon.state.pools_up["main"] is False
    async with httpx.AsyncClient(base_url=base_url, headers=AUTH) as http:
        market = (await http.get("/v1/market")).json()
        assert market["pools_up"]["main"] is False
        summary = (await http.get("/v1/summary")).json()
        assert summary["pools_down"] == ["main"]
        metrics = (await http.get("/metrics")).text
        assert 'wattmux_pool_up{pool="main"} 0.0' in metrics

        site.set_pool_alive(MAIN_URL, True)
        revived_at = time.monotonic()
        await eventually(lambda: on(site, MAIN_URL), timeout_s=10)
        assert time.monotonic() - revived_at >= RECOVERY_SECONDS
        metrics = (await http.get("/metrics")).text
        assert 'wattmux_pool_up{pool="main"} 1.0' in metrics
    loop = daemon.loop
    assert loop is not None
    await loop.reconciler.wait_idle()
    with Store.open(config.store.path) as store:
        commands = store.audit(kind="command", limit=1000)
    history: dict[str, list[tuple[str, str, str | None]]] = {}
    for record in reversed(commands):
        history.setdefault(record.device_id, []).append(
            (str(record.workload), record.reason, record.outcome)
        )
    assert len(history) == COUNT
    for device_history in history.values():
        assert device_history == [
            ("mine(backup)", "pool_down", "confirmed"),
            ("mine(main)", "lower_pool_fee", "confirmed"),
        ]
