"""GPU nodes between AI queues and mining, priced on the 2024-08-20 economics (hashprice ~0.042 USD/TH/day)."""

from __future__ import annotations

import dataclasses

import pytest

from scheduler.config.schema import PolicyConfig
from scheduler.core.economics import (
    ai_option_economics,
    market_economics,
    option_economics,
    switch_cost,
)
from scheduler.core.model import (
    Device,
    DeviceKind,
    QueueDemand,
    RunningJob,
    Sample,
    Snapshot,
    Workload,
)
from scheduler.policies import create_policy
from scheduler.policies.breakeven import BreakevenPolicy
from scheduler.policies.gpu_queue import plan_gpu_nodes
from tests.scheduler.helpers import device, snapshot

CHEAP = 10.0  # USD/MWh: mining a 3 kW node pays (~0.03 USD/h cost vs ~0.18 USD/h revenue)
SPIKE = 500.0  # USD/MWh: it does not


def gpu_node(node_id: str = "g1", hashrate_ths: float = 100.0) -> Device:
    return Device(
        id=node_id,
        kind=DeviceKind.GPU_NODE,
        model="4xGPU",
        driver="slurm",
        address=node_id,
        port=0,
        nominal_hashrate_hs=hashrate_ths * 1e12,
        nominal_power_w=3000.0,
        sleep_power_w=400.0,
        pools=("main",),
        gpus=4,
        queues=("train",),
    )


def demand(pending_gpus: int, rate: float | None = 2.0, preemption: bool = False) -> QueueDemand:
    return QueueDemand("train", 100.0, int(pending_gpus > 0), pending_gpus, rate, preemption)


def gpu_snapshot(
    nodes: list[Device],
    price: float,
    queue: QueueDemand,
    current: Workload | None = None,
    jobs: dict[str, tuple[RunningJob, ...]] | None = None,
) -> Snapshot:
    base = snapshot(nodes, price, {n.id: current or Workload.ai("train") for n in nodes})
    samples = {
        node_id: dataclasses.replace(sample, jobs=(jobs or {}).get(node_id, ()))
        for node_id, sample in base.samples.items()
    }
    return dataclasses.replace(base, samples=samples, queues={"train": queue})


def decide(snap: Snapshot) -> dict[str, tuple[str, str]]:
    economics = market_economics(snap)
    assert economics is not None
    return {a.device_id: (str(a.workload), a.reason) for a in plan_gpu_nodes(snap, economics)}


def test_pending_work_above_the_mining_margin_sends_the_node_to_ai() -> None:
    snap = gpu_snapshot([gpu_node()], CHEAP, demand(4), current=Workload.mine("main"))
    assert decide(snap) == {"g1": ("ai(train)", "ai_demand")}
    economics = market_economics(snap)
    assert economics is not None
    option = ai_option_economics(gpu_node(), "train", economics)
    assert option.revenue_usd_per_hour == pytest.approx(8.0)
    assert option.margin_usd_per_hour == pytest.approx(8.0 - 3.0 * CHEAP / 1000)


def test_an_empty_queue_and_a_positive_mining_margin_send_the_node_to_mining() -> None:
    snap = gpu_snapshot([gpu_node()], CHEAP, demand(0))
    assert decide(snap) == {"g1": ("mine(main)", "queue_empty")}
    economics = market_economics(snap)
    assert economics is not None
    assert option_economics(gpu_node(), Workload.mine("main"), economics).margin_usd_per_hour > 0


def test_an_empty_queue_and_expensive_power_keep_the_node_available() -> None:
    snap = gpu_snapshot([gpu_node()], SPIKE, demand(0))
    assert decide(snap) == {"g1": ("ai(train)", "mining_below_cost")}


def test_a_rate_below_the_mining_margin_mines_despite_pending_work() -> None:
    big_miner = gpu_node(hashrate_ths=5_000.0)  # ~8.9 USD/h of hash
    snap = gpu_snapshot([big_miner], CHEAP, demand(4, rate=0.5))
    assert decide(snap) == {"g1": ("mine(main)", "mining_above_ai_rate")}


def test_an_unpriced_queue_earns_nothing() -> None:
    snap = gpu_snapshot([gpu_node()], CHEAP, demand(4, rate=None))
    assert decide(snap) == {"g1": ("mine(main)", "queue_empty")}  # no paid work for it


def test_pending_gpus_are_counted_once_across_nodes() -> None:
    nodes = [gpu_node("g1"), gpu_node("g2"), gpu_node("g3")]
    snap = gpu_snapshot(nodes, CHEAP, demand(6), current=Workload.mine("main"))
    assert decide(snap) == {
        "g1": ("ai(train)", "ai_demand"),
        "g2": ("ai(train)", "ai_demand"),
        "g3": ("mine(main)", "queue_empty"),  # the 6 pending GPUs went to g1 and g2
    }


def test_a_running_job_keeps_its_node_when_it_pays_more() -> None:
    job = RunningJob("7", "train", 2, elapsed_seconds=600.0, remaining_seconds=1800.0)
    snap = gpu_snapshot([gpu_node()], CHEAP, demand(0), jobs={"g1": (job,)})
    assert decide(snap) == {"g1": ("ai(train)", "ai_job_running")}


def test_preemption_cost_holds_a_long_job_even_when_mining_pays_more() -> None:
    big_miner = gpu_node(hashrate_ths=5_000.0)
    long_job = RunningJob("7", "train", 4, elapsed_seconds=20 * 3600.0)  # 80 GPU-h at stake
    snap = gpu_snapshot(
        [big_miner], CHEAP, demand(0, rate=0.5, preemption=True), jobs={"g1": (long_job,)}
    )
    assert decide(snap) == {"g1": ("ai(train)", "preemption_cost")}
    economics = market_economics(snap)
    assert economics is not None
    assert switch_cost((long_job,), economics, 3600.0).lost_progress_usd == pytest.approx(40.0)


def test_a_young_preemptible_job_is_requeued_for_mining_that_pays_more() -> None:
    big_miner = gpu_node(hashrate_ths=5_000.0)
    young = RunningJob("7", "train", 4, elapsed_seconds=60.0)
    snap = gpu_snapshot(
        [big_miner], CHEAP, demand(0, rate=0.5, preemption=True), jobs={"g1": (young,)}
    )
    economics = market_economics(snap)
    assert economics is not None
    (assignment,) = plan_gpu_nodes(snap, economics)
    assert (str(assignment.workload), assignment.reason) == ("mine(main)", "queue_empty")
    assert assignment.switching_cost_usd == pytest.approx(4 * 60 / 3600 * 0.5)
    assert assignment.drain_seconds == 0.0


def test_without_preemption_the_switch_waits_for_the_job_and_loses_nothing() -> None:
    big_miner = gpu_node(hashrate_ths=5_000.0)
    job = RunningJob("7", "train", 4, elapsed_seconds=60.0, remaining_seconds=900.0)
    snap = gpu_snapshot([big_miner], CHEAP, demand(0, rate=0.5), jobs={"g1": (job,)})
    economics = market_economics(snap)
    assert economics is not None
    (assignment,) = plan_gpu_nodes(snap, economics)
    assert str(assignment.workload) == "mine(main)"
    assert assignment.switching_cost_usd == 0.0
    assert assignment.drain_seconds == 900.0
    mining = option_economics(big_miner, Workload.mine("main"), economics).margin_usd_per_hour
    running = ai_option_economics(big_miner, "train", economics, (job,), 0).margin_usd_per_hour
    assert assignment.expected_margin_usd_per_hour == pytest.approx(0.25 * running + 0.75 * mining)


def test_breakeven_plans_asics_and_gpu_nodes_together() -> None:
    asic = device("a", "S21")
    node = gpu_node()
    base = snapshot([asic, node], CHEAP, {"a": Workload.mine("main"), "g1": Workload.mine("main")})
    snap = dataclasses.replace(base, queues={"train": demand(4)})
    plan = BreakevenPolicy().plan(snap).by_device()
    assert (str(plan["a"].workload), plan["a"].reason) == ("mine(main)", "price_below_breakeven")
    assert (str(plan["g1"].workload), plan["g1"].reason) == ("ai(train)", "ai_demand")


@pytest.mark.parametrize("name", ["breakeven", "max-margin", "demand-response", "schedule"])
def test_every_builtin_policy_leaves_gpu_nodes_to_the_queue_decision(name: str) -> None:
    asic = device("a", "S21")
    node = gpu_node()
    base = snapshot([asic, node], CHEAP, {"a": Workload.mine("main"), "g1": Workload.mine("main")})
    snap = dataclasses.replace(base, queues={"train": demand(4)})
    plan = create_policy(PolicyConfig(name=name)).plan(snap).by_device()
    assert str(plan["a"].workload) == "mine(main)"
    assert (str(plan["g1"].workload), plan["g1"].reason) == ("ai(train)", "ai_demand")


def test_ai_is_no_option_for_an_asic() -> None:
    snap = gpu_snapshot([gpu_node()], CHEAP, demand(4))
    economics = market_economics(snap)
    assert economics is not None
    with pytest.raises(ValueError, match="only a GPU node"):
        ai_option_economics(device("a"), "train", economics)
    assert isinstance(snap.samples["g1"], Sample)
