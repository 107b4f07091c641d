"""Benchmark: GPU nodes between AI and mining. The GPU-node policy on many nodes, and switches on a real Slurm.

Prints one JSON object per line: {"name", "value", "unit"}.
Usage: python bench/bench_gpu_queue.py [--nodes 100 1000] [--rounds 5] [--no-slurm]
The Slurm part starts a one-host cluster (munged, slurmctld, slurmd; needs root
and the Debian packages slurm-wlm and munge) in a temporary folder.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from drivers.queues.slurm import SlurmOptions, SlurmQueue, SlurmQueueSpec
from scheduler.core.economics import market_economics
from scheduler.core.model import (
    Device,
    DeviceKind,
    DeviceStatus,
    MarketState,
    OutcomeStatus,
    Pool,
    QueueDemand,
    Reading,
    RunningJob,
    Sample,
    Snapshot,
    Workload,
)
from scheduler.policies.gpu_queue import plan_gpu_nodes
from tests.slurm_cluster import NODE, ClusterUnavailable, SlurmCluster


def emit(name: str, value: float, unit: str) -> None:
    print(json.dumps({"name": name, "value": round(value, 3), "unit": unit}), flush=True)


def node(index: int) -> Device:
    return Device(
        id=f"g{index:05d}", kind=DeviceKind.GPU_NODE, model="8xGPU", driver="queue",
        address=f"g{index:05d}", port=0, nominal_hashrate_hs=150e12, nominal_power_w=6000.0,
        sleep_power_w=800.0, pools=("main",), gpus=8, queues=("train", "batch"),
    )  # fmt: skip


def policy(nodes: int, rounds: int) -> None:
    devices = {d.id: d for d in (node(i) for i in range(nodes))}
    samples = {
        d.id: Sample(
            d.id,
            100.0,
            Workload.ai("train"),
            6000.0,
            0.0,
            jobs=(RunningJob("j", "train", 4, 600.0, 1800.0),) if i % 2 else (),
        )
        for i, d in enumerate(devices.values())
    }
    reading = lambda v: Reading(v, 100.0, "bench")  # noqa: E731
    snapshot = Snapshot(
        now=100.0,
        wall=datetime(2024, 8, 20, tzinfo=UTC),
        devices=devices,
        samples=samples,
        status={d: DeviceStatus(True) for d in devices},
        market=MarketState(
            reading(59_013.8),
            reading(86_871_474_313_762.0),
            reading(3.125),
            reading(0.0),
            reading(20.0),
        ),
        current={d: s.workload for d, s in samples.items()},
        queues={
            "train": QueueDemand("train", 100.0, 50, nodes * 2, 2.0, False),
            "batch": QueueDemand("batch", 100.0, 10, nodes, 0.8, True),
        },
    )
    economics = market_economics(snapshot)
    assert economics is not None
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        plan_gpu_nodes(snapshot, economics)
        times.append(time.perf_counter() - started)
    emit(f"gpu_policy_plan_{nodes}_nodes_median", statistics.median(times) * 1000, "ms")


async def slurm_switches(cluster: SlurmCluster, rounds: int) -> None:
    options = SlurmOptions(
        partition="ai", slurm_conf=str(cluster.conf), mining_command="exec sleep 600",
        confirm_interval_seconds=0.05, cache_seconds=0.0,
    )  # fmt: skip
    queue = SlurmQueue(
        options,
        {"train": SlurmQueueSpec("ai")},
        {"main": Pool("main", "stratum+tcp://x.invalid:1", "w")},
    )
    device = Device(
        id="gpu-1", kind=DeviceKind.GPU_NODE, model="4xGPU", driver="slurm", address=NODE,
        port=0, nominal_hashrate_hs=1e12, nominal_power_w=3000.0, sleep_power_w=400.0,
        pools=("main",), gpus=4, queues=("train",),
    )  # fmt: skip
    to_mine, to_ai, collect = [], [], []
    for _ in range(rounds):
        for workload, bucket in (
            (Workload.mine("main"), to_mine),
            (Workload.ai("train"), to_ai),
        ):
            started = time.perf_counter()
            outcome = await queue.apply(device, workload)
            bucket.append(time.perf_counter() - started)
            assert outcome.status is OutcomeStatus.CONFIRMED, outcome.detail
        started = time.perf_counter()
        await queue.collect(device)
        collect.append(time.perf_counter() - started)
    emit("slurm_node_to_mining_confirmed_median", statistics.median(to_mine) * 1000, "ms")
    emit("slurm_node_back_to_ai_confirmed_median", statistics.median(to_ai) * 1000, "ms")
    emit("slurm_node_collect_median", statistics.median(collect) * 1000, "ms")


def with_slurm(rounds: int) -> None:
    directory = Path(tempfile.mkdtemp(prefix="wattmux-bench-slurm-"))
    directory.chmod(0o755)
    cluster = SlurmCluster(directory)
    try:
        cluster.start()
        asyncio.run(slurm_switches(cluster, rounds))
    except ClusterUnavailable as exc:
        print(f"slurm part skipped: {exc}", file=sys.stderr)
    finally:
        cluster.stop()
        shutil.rmtree(directory, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-slurm", action="store_true")
    args = parser.parse_args()
    for count in args.nodes:
        policy(count, args.rounds)
    if not args.no_slurm:
        with_slurm(args.rounds)


if __name__ == "__main__":
    main()
