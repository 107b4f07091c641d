"""The GPU part of ``wattmux demo --gpus N``: simulated GPU nodes, a job queue with a daily rhythm, and its screen lines.

The nodes (8 GPUs each) and the queue live in ``drivers/sim/queue.py`` and are
reached through the real webhook driver over loopback HTTP.  Jobs arrive busily
in the market's daytime and rarely at night; the queue pays a spot rate per
GPU-hour.  The mining figure of a node (150 TH/s) is a demo number chosen so
that mining pays in cheap hours and not in expensive ones; real GPUs hash far
less SHA-256.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from drivers.sim.queue import SimQueue, SimQueueSpec
from scheduler.core.model import DeviceKind, Snapshot, WorkloadKind

GPUS_PER_NODE = 8
NODE_POWER_W = 6000.0
NODE_IDLE_POWER_W = 800.0
NODE_MINING_THS = 150.0
SPOT_RATE_USD_PER_GPU_HOUR = 1.8
QUEUE = "train"


def node_names(count: int) -> list[str]:
    """The simulated nodes' names."""
    return [f"gpu-{index + 1:02d}" for index in range(count)]


def gpu_config_entries(count: int, url: str, pools: list[str]) -> dict[str, Any]:
    """The ``queues`` and ``gpu_nodes`` sections of the demo config."""
    return {
        "queues": [
            {
                "name": QUEUE,
                "pricing": "spot",
                "preemption_allowed": False,
                "options": {
                    "driver": "webhook",
                    "url": url,
                    "confirm_timeout_seconds": 2.0,
                    "confirm_interval_seconds": 0.1,
                },
            }
        ],
        "gpu_nodes": [
            {
                "id": name,
                "gpus": GPUS_PER_NODE,
                "queues": [QUEUE],
                "pools": pools,
                "mining_hashrate_ths": NODE_MINING_THS,
                "nominal_power_w": NODE_POWER_W,
                "idle_power_w": NODE_IDLE_POWER_W,
            }
            for name in node_names(count)
        ],
    }


def sim_queue(
    count: int, speed: float, market_hour: Callable[[], int], clock: Callable[[], float]
) -> SimQueue:
    """The simulated queue: busy from 08:00 to 20:00 market time, quiet at night."""
    # About 3/4 of the GPUs wanted by day: 0.75 jobs per node-hour, 3.75 GPUs x 2 h per job.
    spec = SimQueueSpec(
        rate_usd_per_gpu_hour=SPOT_RATE_USD_PER_GPU_HOUR,
        jobs_per_hour=0.75 * count,
        gpus_per_job=(1, 2, 4, 8),
        mean_job_hours=2.0,
    )

    def profile(_sim_seconds: float) -> float:
        return 1.0 if 8 <= market_hour() < 20 else 0.05

    nodes = dict.fromkeys(node_names(count), GPUS_PER_NODE)
    return SimQueue(nodes, {QUEUE: spec}, speed=speed, seed=1, profile=profile, clock=clock)


def gpu_lines(snapshot: Snapshot) -> list[str]:
    """Screen lines: where the GPUs are, what the queue wants and pays."""
    nodes = [d for d in snapshot.devices.values() if d.kind is DeviceKind.GPU_NODE]
    if not nodes:
        return []
    counts = {"ai": 0, "mining": 0, "idle": 0, "unreachable": 0}
    busy = 0
    for node in nodes:
        workload = snapshot.current.get(node.id)
        sample = snapshot.samples.get(node.id)
        if workload is None or sample is None:
            counts["unreachable"] += 1
        elif workload.kind is WorkloadKind.MINE:
            counts["mining"] += 1
        elif workload.kind is WorkloadKind.AI and sample.jobs:
            counts["ai"] += 1
            busy += sum(job.gpus for job in sample.jobs)
        else:
            counts["idle"] += 1
    total = sum(node.gpus for node in nodes)
    power_kw = (
        sum(s.power_w for d, s in snapshot.samples.items() if d in {n.id for n in nodes}) / 1000
    )
    demand = snapshot.queues.get(QUEUE)
    queue_text = (
        f"{demand.pending_jobs} jobs / {demand.pending_gpus} GPUs pending, "
        f"spot {demand.rate_usd_per_gpu_hour or 0:.2f} USD/GPU-h"
        if demand
        else "queue not read yet"
    )
    return [
        f"gpu nodes    AI {counts['ai']} ({busy}/{total} GPUs busy)  mining {counts['mining']}  "
        f"idle {counts['idle']}  down {counts['unreachable']}  {power_kw:,.1f} kW",
        f"ai queue     {queue_text}",
    ]
