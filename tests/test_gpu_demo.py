"""The demo's GPU site end to end: the daemon, the webhook driver and the simulated queue over loopback HTTP."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from drivers.market.static import StaticMarketFeed
from drivers.sim.queue import SimQueue, SimQueueSpec
from scheduler.config.loading import parse_config
from scheduler.core.model import Reading, WorkloadKind
from scheduler.daemon import Daemon
from scheduler.demo.gpu import gpu_config_entries, gpu_lines, node_names
from scheduler.store.journal import Store

MARKET = {
    "btc_price_usd": 59_013.80,
    "difficulty": 86_871_474_313_762.0,
    "block_subsidy_btc": 3.125,
    "fees_btc_per_block": 0.0,
}


class PriceFeed:
    name = "test-price"

    def __init__(self, price: float) -> None:
        self.price = price

    async def fetch(self) -> dict[str, Reading]:
        return {"power_price_usd_per_mwh": Reading(self.price, time.monotonic(), self.name)}


async def eventually(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


@pytest.mark.system
async def test_gpu_nodes_mine_when_the_queue_is_empty_and_serve_jobs_when_they_arrive(
    tmp_path: Path,
) -> None:
    spec = SimQueueSpec(rate_usd_per_gpu_hour=1.8, jobs_per_hour=0.0)
    names = node_names(3)
    async with SimQueue(dict.fromkeys(names, 8), {"train": spec}, host="127.50.2.1") as sim:
        data: dict[str, Any] = {
            "site": {"name": "gpu-demo", "power_cap_kw": 100.0},
            "control": {"tick_seconds": 0.1},
            "economics": {"pool_fee": 0.0},
            "guard": {"min_dwell_seconds": 0.0, "stale_price_seconds": 60.0},
            "store": {"path": str(tmp_path / "wattmux.sqlite")},
            "pools": [{"name": "main", "url": "stratum+tcp://main.pool.invalid:3333", "user": "w"}],
            **gpu_config_entries(3, sim.url, ["main"]),
        }
        config = parse_config(data, "<gpu demo>", environ={})
        price = PriceFeed(15.0)  # 150 TH/s pays ~0.27 USD/h, 6 kW cost 0.09 USD/h: mining pays
        daemon = Daemon(config, feeds=[StaticMarketFeed(MARKET), price])
        stop = asyncio.Event()
        task = asyncio.create_task(daemon.run(stop, serve_api=False))
        try:
            await asyncio.wait_for(daemon.ready.wait(), 10)
            await eventually(
                lambda: all(sim.nodes[n].assigned.kind is WorkloadKind.MINE for n in names)
            )
            job = sim.submit("train", 8, hours=10)
            await eventually(lambda: job.node is not None)
            moved = job.node
            await eventually(
                lambda: (
                    daemon.state.snapshot(0).current.get(str(moved)) is not None
                    and daemon.state.snapshot(0).current[str(moved)].kind is WorkloadKind.AI
                )
            )
            others = [n for n in names if n != moved]
            assert all(sim.nodes[n].assigned.kind is WorkloadKind.MINE for n in others)
            metrics = daemon.metrics.render().decode()
            assert f'wattmux_gpu_node_ai_gpus_busy{{device="{moved}"}} 8.0' in metrics
            assert 'wattmux_queue_rate_usd_per_gpu_hour{queue="train"} 1.8' in metrics
            assert 'wattmux_devices{state="ai"} 1.0' in metrics
            lines = gpu_lines(daemon.state.snapshot(time.monotonic()))
            assert "AI 1 (8/24 GPUs busy)  mining 2" in lines[0]
            assert all(len(line) <= 80 for line in lines), lines  # the demo screen's width

            price.price = 900.0  # mining stops paying: idle nodes stay available for AI
            await eventually(
                lambda: all(sim.nodes[n].assigned.kind is WorkloadKind.AI for n in others)
            )
            assert job.node == moved  # the running job was never touched
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
    with Store.open(config.store.path) as store:
        decisions = [
            (d.device_id, str(d.workload), d.reason) for d in reversed(store.audit(kind="decision"))
        ]
    assert (str(moved), "ai(train)", "ai_demand") in decisions
    assert (others[0], "mine(main)", "queue_empty") in decisions
    assert (others[0], "ai(train)", "mining_below_cost") in decisions


async def test_a_queue_that_cannot_be_reached_is_marked_down_and_earns_nothing(
    tmp_path: Path,
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.50.2.2", 0))
        dead_url = f"http://127.50.2.2:{probe.getsockname()[1]}"
    data: dict[str, Any] = {
        "site": {"name": "gpu-down", "power_cap_kw": 100.0},
        "control": {"tick_seconds": 0.1},
        "guard": {"min_dwell_seconds": 0.0, "stale_price_seconds": 60.0},
        "store": {"path": str(tmp_path / "wattmux.sqlite")},
        "pools": [{"name": "main", "url": "stratum+tcp://main.pool.invalid:3333", "user": "w"}],
        **gpu_config_entries(2, dead_url, ["main"]),
    }
    config = parse_config(data, "<gpu down>", environ={})
    daemon = Daemon(config, feeds=[StaticMarketFeed(MARKET), PriceFeed(15.0)])
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop, serve_api=False))
    try:
        await asyncio.wait_for(daemon.ready.wait(), 10)
        await eventually(lambda: daemon.loop is not None and daemon.loop.ticks >= 3)
        metrics = daemon.metrics.render().decode()
        assert 'wattmux_source_up{source="queue:train"} 0.0' in metrics
        assert daemon.state.queues == {}
        assert not any(status.reachable for status in daemon.state.status.values())
        assert (
            daemon.loop is not None and daemon.loop.reconciler.last_outcomes == {}
        )  # nothing commanded
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
