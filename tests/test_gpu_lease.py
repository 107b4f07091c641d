"""An AI lease end to end: the daemon keeps a leased node on AI over the simulated queue's HTTP API."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from drivers.market.static import StaticMarketFeed
from drivers.sim.queue import SimQueue, SimQueueSpec
from scheduler.config.loading import parse_config
from scheduler.core.model import WorkloadKind
from scheduler.daemon import Daemon
from scheduler.demo.gpu import gpu_config_entries, node_names
from scheduler.store.journal import Store
from tests.test_gpu_demo import MARKET, PriceFeed, eventually

pytestmark = pytest.mark.system


async def test_a_leased_node_serves_ai_while_the_others_mine(tmp_path: Path) -> None:
    spec = SimQueueSpec(rate_usd_per_gpu_hour=1.8, jobs_per_hour=0.0)
    names = node_names(2)
    leased, free = names
    now = datetime.now(UTC)
    async with SimQueue(dict.fromkeys(names, 8), {"train": spec}, host="127.63.5.1") as sim:
        data: dict[str, Any] = {
            "site": {"name": "gpu-lease", "power_cap_kw": 100.0},
            "control": {"tick_seconds": 0.1},
            "economics": {"pool_fee": 0.0},
            "guard": {"min_dwell_seconds": 0.0, "stale_price_seconds": 60.0},
            "store": {"path": str(tmp_path / "wattmux.sqlite")},
            "pools": [{"name": "main", "url": "stratum+tcp://main.pool.invalid:3333", "user": "w"}],
            **gpu_config_entries(2, sim.url, ["main"]),
            "leases": [
                {
                    "id": "acme",
                    "node": leased,
                    "queue": "train",
                    "start": (now - timedelta(hours=1)).isoformat(),
                    "end": (now + timedelta(hours=1)).isoformat(),
                    "price_usd_per_hour": 12.0,
                }
            ],
        }
        config = parse_config(data, "<gpu lease>", environ={})
        daemon = Daemon(config, feeds=[StaticMarketFeed(MARKET), PriceFeed(15.0)])  # mining pays
        stop = asyncio.Event()
        task = asyncio.create_task(daemon.run(stop, serve_api=False))
        try:
            await asyncio.wait_for(daemon.ready.wait(), 10)
            await eventually(
                lambda: (
                    sim.nodes[leased].assigned.kind is WorkloadKind.AI
                    and sim.nodes[free].assigned.kind is WorkloadKind.MINE
                )
            )
            await eventually(
                lambda: (
                    (w := daemon.state.snapshot(0).current.get(leased)) is not None
                    and w.kind is WorkloadKind.AI
                )
            )
            plan = daemon.current_plan()
            assert plan is not None
            by_device = plan.by_device()
            assert by_device[leased].reason == "ai_lease"
            assert by_device[leased].expected_margin_usd_per_hour > 11.0
            assert by_device[free].reason == "queue_empty"
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
    with Store.open(config.store.path) as store:
        commands = [(c.device_id, str(c.workload)) for c in store.audit(kind="command")]
        decisions = [(d.device_id, str(d.workload), d.reason) for d in store.audit(kind="decision")]
    # The nodes start on AI: the free one is moved to mining (it pays), the leased one never is.
    assert commands == [(free, "mine(main)")]
    assert (leased, "ai(train)", "ai_lease") in decisions
    assert all(device != leased or reason == "ai_lease" for device, _, reason in decisions)
