"""Acceptance on a real Slurm cluster: the daemon moves a GPU node between an AI partition and mining."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from drivers.market.static import StaticMarketFeed
from scheduler.config.loading import parse_config
from scheduler.config.schema import WattmuxConfig
from scheduler.core.model import Reading
from scheduler.daemon import Daemon
from scheduler.store.journal import Store
from tests.slurm_cluster import NODE, SlurmCluster

pytestmark = pytest.mark.system

MARKET = {
    "btc_price_usd": 59_013.80,
    "difficulty": 86_871_474_313_762.0,
    "block_subsidy_btc": 3.125,
    "fees_btc_per_block": 0.0,
}
# At 10 USD/MWh a 3 kW node hashing 100 TH/s earns ~0.178 USD/h and pays 0.03 USD/h: mining pays.
CHEAP = 10.0
MINING_MARGIN = 0.148


class PriceFeed:
    """A fresh power price at every fetch."""

    name = "test-price"

    def __init__(self, price_usd_per_mwh: float) -> None:
        self.price_usd_per_mwh = price_usd_per_mwh

    async def fetch(self) -> dict[str, Reading]:
        return {
            "power_price_usd_per_mwh": Reading(self.price_usd_per_mwh, time.monotonic(), self.name)
        }


def gpu_site(tmp_path: Path, cluster: SlurmCluster, rate: float, preemption: bool) -> WattmuxConfig:
    data: dict[str, Any] = {
        "site": {"name": "gpu", "power_cap_kw": 100.0},
        "control": {"tick_seconds": 0.3},
        "economics": {"pool_fee": 0.0},
        "guard": {"min_dwell_seconds": 0.0, "stale_price_seconds": 60.0},
        "store": {"path": str(tmp_path / "wattmux.sqlite")},
        "pools": [{"name": "main", "url": "stratum+tcp://main.pool.invalid:3333", "user": "w"}],
        "queues": [
            {
                "name": "train",
                "contract_rate_usd_per_gpu_hour": rate,
                "preemption_allowed": preemption,
                "options": {
                    "driver": "slurm",
                    "partition": "ai",
                    "slurm_conf": str(cluster.conf),
                    "mining_command": "exec sleep 600",
                    "confirm_timeout_seconds": 3.0,
                    "confirm_interval_seconds": 0.2,
                    "cache_seconds": 0.0,
                },
            }
        ],
        "gpu_nodes": [
            {
                "id": "gpu-1",
                "node": NODE,
                "gpus": 4,
                "queues": ["train"],
                "pools": ["main"],
                "mining_hashrate_ths": 100.0,
                "nominal_power_w": 3000.0,
                "idle_power_w": 400.0,
            }
        ],
    }
    return parse_config(data, "<gpu acceptance>", environ={})


@dataclass
class Site:
    config: WattmuxConfig
    daemon: Daemon
    slurm: SlurmCluster

    def decisions(self) -> list[tuple[str, str, float | None]]:
        with Store.open(self.config.store.path) as store:
            records = store.audit(kind="decision", limit=1000)
        return [
            (str(r.workload), r.reason, r.expected_margin_usd_per_hour) for r in reversed(records)
        ]

    def running(self) -> list[str]:
        return self.slurm.command("squeue", "-h", "-t", "R", "-o", "%i %j %P").splitlines()


async def start(
    tmp_path: Path, slurm: SlurmCluster, rate: float, preemption: bool
) -> tuple[Site, asyncio.Event, asyncio.Task[None]]:
    config = gpu_site(tmp_path, slurm, rate, preemption)
    daemon = Daemon(config, feeds=[StaticMarketFeed(MARKET), PriceFeed(CHEAP)])
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop, serve_api=False), name="daemon.run")
    await asyncio.wait_for(daemon.ready.wait(), 20)
    return Site(config, daemon, slurm), stop, task


@pytest.fixture
async def site(tmp_path: Path, slurm: SlurmCluster) -> AsyncIterator[Site]:
    running, stop, task = await start(tmp_path, slurm, 2.0, preemption=False)
    try:
        yield running
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def eventually(predicate: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.2)


def mining(site: Site) -> bool:
    return any(f"wattmux-mine-{NODE} mining" in line for line in site.running())


async def test_empty_queue_mines_and_pending_work_above_the_mining_margin_takes_the_node_back(
    site: Site,
) -> None:
    await eventually(lambda: mining(site))
    to_mine = [d for d in site.decisions() if d[0] == "mine(main)"]
    assert to_mine and to_mine[0][1] == "queue_empty"
    assert to_mine[0][2] == pytest.approx(MINING_MARGIN, abs=0.01)

    job = site.slurm.sbatch("-p", "ai", "--gres=gpu:4", "--wrap", "exec sleep 60")
    await eventually(lambda: site.slurm.job_state(job) == "RUNNING")
    assert not mining(site)
    to_ai = [d for d in site.decisions() if d[0] == "ai(train)"]
    assert to_ai[-1][1] == "ai_demand"
    assert to_ai[-1][2] == pytest.approx(4 * 2.0 - 3.0 * CHEAP / 1000)  # 4 GPUs at 2 USD/GPU-h


async def test_a_lease_runs_to_its_end_before_the_node_mines(
    tmp_path: Path, slurm: SlurmCluster
) -> None:
    # The job pays 0.01 USD/GPU-h, mining pays more: the node is drained for AI work, not killed.
    marker = tmp_path / "finished"
    job = slurm.sbatch(
        "-p",
        "ai",
        "--gres=gpu:2",
        f"--output={tmp_path}/job.out",
        "--wrap",
        f"sleep 5 && touch {marker}",
    )
    await eventually(lambda: slurm.job_state(job) == "RUNNING")
    site, stop, task = await start(tmp_path, slurm, 0.01, preemption=False)
    try:
        await eventually(lambda: (site.decisions() or [("", "", None)])[-1][0] == "mine(main)")
        later = slurm.sbatch("-p", "ai", "--gres=gpu:1", "--wrap", "exec sleep 60")
        assert slurm.job_state(job) == "RUNNING"
        assert not mining(site)
        await eventually(lambda: slurm.job_state(job) == "")
        assert marker.exists()  # it ran to its natural end
        await eventually(lambda: mining(site))
        assert slurm.job_state(later) == "PENDING"  # kept off while mining pays more
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def test_preemption_when_configured_requeues_the_job_for_mining(
    tmp_path: Path, slurm: SlurmCluster
) -> None:
    job = slurm.sbatch("-p", "ai", "--gres=gpu:4", "--wrap", "exec sleep 300")
    await eventually(lambda: slurm.job_state(job) == "RUNNING")
    site, stop, task = await start(tmp_path, slurm, 0.01, preemption=True)
    try:
        await eventually(lambda: mining(site))
        assert (
            slurm.job_state(job) == "PENDING"
        )  # requeued: it will run again, it was not cancelled
        assert ("mine(main)", "queue_empty") in [d[:2] for d in site.decisions()]
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
