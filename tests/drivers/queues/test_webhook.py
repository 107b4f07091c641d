"""The webhook queue driver over real HTTP against the simulated queue (drivers/sim/queue.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from drivers.errors import Rejected, Unavailable
from drivers.queues.webhook import WebhookOptions, WebhookQueue
from drivers.sim.queue import SimQueue, SimQueueSpec
from scheduler.core.model import Device, DeviceKind, OutcomeStatus, Pool, Workload
from tests.conftest import free_port
from tests.fakes import FakeClock

HOST = "127.50.1.1"
POOLS = {"main": Pool("main", "stratum+tcp://main.pool.invalid:3333", "w")}


def node(name: str = "n1") -> Device:
    return Device(
        id=name,
        kind=DeviceKind.GPU_NODE,
        model="8xGPU",
        driver="queue",
        address=name,
        port=0,
        nominal_hashrate_hs=150e12,
        nominal_power_w=6000.0,
        sleep_power_w=800.0,
        pools=("main",),
        gpus=8,
        queues=("train",),
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def sim(clock: FakeClock) -> AsyncIterator[SimQueue]:
    spec = SimQueueSpec(rate_usd_per_gpu_hour=1.8, jobs_per_hour=0.0)
    async with SimQueue({"n1": 8, "n2": 8}, {"train": spec}, host=HOST, clock=clock) as queue:
        yield queue


def driver(sim: SimQueue, clock: FakeClock, preemption: bool = False) -> WebhookQueue:
    options = WebhookOptions(url=sim.url, confirm_timeout_seconds=2.0, confirm_interval_seconds=0.5)
    return WebhookQueue(options, {"train": preemption}, POOLS, clock=clock, sleep=clock.sleep)


async def test_demand_reports_pending_work_and_the_spot_rate(
    sim: SimQueue, clock: FakeClock
) -> None:
    queue = driver(sim, clock)
    await queue.apply(node("n1"), Workload.mine("main"))
    await queue.apply(node("n2"), Workload.mine("main"))
    sim.submit("train", 4, hours=1)
    sim.submit("train", 2, hours=1)
    demand = (await queue.demand())["train"]
    assert (demand.pending_jobs, demand.pending_gpus, demand.rate_usd_per_gpu_hour) == (2, 6, 1.8)
    assert sim.requests >= 3
    await queue.aclose()


async def test_mining_and_back_with_read_back(sim: SimQueue, clock: FakeClock) -> None:
    queue = driver(sim, clock)
    outcome = await queue.apply(node(), Workload.mine("main"))
    assert outcome.status is OutcomeStatus.CONFIRMED
    sample = await queue.collect(node())
    assert sample.workload == Workload.mine("main")
    assert sample.power_w == 6000.0 and sample.hashrate_hs == 150e12
    job = sim.submit("train", 4, hours=1)
    sim.nodes["n2"].assigned = Workload.mine("main")
    sim.step()
    assert job.started_at is None  # no node serves the queue
    outcome = await queue.apply(node(), Workload.ai("train"))
    assert outcome.status is OutcomeStatus.CONFIRMED
    sample = await queue.collect(node())
    assert [(j.job_id, j.gpus) for j in sample.jobs] == [(job.id, 4)]
    assert sample.power_w == pytest.approx(800 + 5200 * 0.5)
    await queue.aclose()


async def test_a_running_job_drains_unless_preemption_is_allowed(
    sim: SimQueue, clock: FakeClock
) -> None:
    queue = driver(sim, clock)
    job = sim.submit("train", 8, hours=1)
    sim.step()
    assert job.node == "n1"
    outcome = await queue.apply(node(), Workload.mine("main"))
    assert outcome.status is OutcomeStatus.UNCONFIRMED
    assert "AI jobs still running: 1" in outcome.detail
    assert job.node == "n1" and sim.nodes["n1"].jobs == [job]
    clock.now += 3600
    assert (await queue.collect(node())).workload == Workload.mine("main")  # ran to its end

    again = sim.submit("train", 8, hours=1)
    await queue.apply(node(), Workload.ai("train"))
    assert again.node == "n1"
    preempting = driver(sim, clock, preemption=True)
    outcome = await preempting.apply(node(), Workload.mine("main"))
    assert outcome.status is OutcomeStatus.CONFIRMED
    assert again.node is None and sim.pending[0] is again  # requeued at the head
    await queue.aclose()
    await preempting.aclose()


async def test_errors_name_the_problem(sim: SimQueue, clock: FakeClock) -> None:
    queue = driver(sim, clock)
    with pytest.raises(Rejected, match="404"):
        await queue.collect(node("n9"))
    with pytest.raises(Rejected, match="400"):
        await queue.apply(node(), Workload.ai("inference"))
    closed = WebhookQueue(
        WebhookOptions(url=f"http://{HOST}:{free_port(HOST)}"), {"train": False}, POOLS
    )
    with pytest.raises(Unavailable):
        await closed.demand()
    await closed.aclose()
    await queue.aclose()


def test_arrivals_follow_the_rate_and_the_profile(clock: FakeClock) -> None:
    spec = SimQueueSpec(rate_usd_per_gpu_hour=2.0, jobs_per_hour=10.0, mean_job_hours=0.01)
    day_only = SimQueue(
        {"n1": 8},
        {"train": spec},
        clock=clock,
        seed=7,
        profile=lambda s: 1.0 if s % 86400 < 43200 else 0.0,
    )
    always = SimQueue({"n1": 8}, {"train": spec}, clock=clock, seed=7)
    arrivals = {"day_only": 0, "always": 0}
    for _ in range(100 * 4):  # 100 simulated hours in 15-minute steps
        clock.now += 900
        for name, sim in (("day_only", day_only), ("always", always)):
            before = len(sim.pending) + sum(len(n.jobs) for n in sim.nodes.values())
            sim.nodes["n1"].assigned = Workload.mine("main")  # nothing starts: count arrivals
            sim.step()
            arrivals[name] += (
                len(sim.pending) + sum(len(n.jobs) for n in sim.nodes.values()) - before
            )
    assert 800 <= arrivals["always"] <= 1200  # Poisson, mean 1000
    assert 300 <= arrivals["day_only"] <= 700  # only half the hours
