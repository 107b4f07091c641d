"""GPU nodes between AI queues and mining: each node goes where it earns most over the switch horizon.

Pure, like every policy.  Per node, in a fixed order (nodes already serving AI
first, then by id), each option is valued over ``horizon_seconds``:

- ``ai(queue)``: the jobs running on the node, plus as much of the queue's
  pending work as fits on its free GPUs (pending GPUs are handed out node by
  node, so two nodes never count the same job);
- ``mine(pool)``: the mining margin, minus the AI progress lost when running
  jobs may be preempted; jobs that may not be preempted run to their end
  first, during which the node earns what they pay (the drain);
- ``sleep``: idle power (a drained node), after the same drain.

The best value wins; a tie keeps the current workload.  A node under an
active AI lease skips all this: it stays on ``ai(lease queue)`` (reason
``ai_lease``, see scheduler/policies/leases.py) and takes no queue demand.  Each assignment
carries its reason, the expected margin (value per hour over the horizon) and
the switching cost, so the guard, the API and the audit log see them.
"""

from __future__ import annotations

from scheduler.core.economics import (
    SECONDS_PER_HOUR,
    MarketEconomics,
    ai_option_economics,
    option_economics,
    queue_rate_usd_per_gpu_hour,
    switch_cost,
)
from scheduler.core.model import (
    Assignment,
    Device,
    DeviceKind,
    RunningJob,
    Snapshot,
    Workload,
    WorkloadKind,
)
from scheduler.core.reasons import Reason
from scheduler.policies.leases import lease_assignment, pinned_leases

SWITCH_HORIZON_SECONDS = 3600.0


def plan_gpu_nodes(
    snapshot: Snapshot,
    economics: MarketEconomics,
    horizon_seconds: float = SWITCH_HORIZON_SECONDS,
) -> list[Assignment]:
    """One assignment per GPU node of the snapshot."""
    remaining = {
        name: demand.pending_gpus
        for name, demand in economics.queues.items()
        if demand.rate_usd_per_gpu_hour is not None
    }
    nodes = [d for d in snapshot.devices.values() if d.kind is DeviceKind.GPU_NODE]

    def order(device: Device) -> tuple[bool, str]:
        current = snapshot.current.get(device.id)
        return (current is None or current.kind is not WorkloadKind.AI, device.id)

    pinned = pinned_leases(snapshot)
    assignments = []
    for device in sorted(nodes, key=order):
        lease = pinned.get(device.id)
        if lease is not None:
            price = economics.power_price_usd_per_mwh
            assignments.append(lease_assignment(device, lease, price))
            continue
        sample = snapshot.samples.get(device.id)
        jobs = sample.jobs if sample is not None else ()
        assignment = _decide(
            device, snapshot.current.get(device.id), jobs, remaining, economics, horizon_seconds
        )
        if assignment.workload.kind is WorkloadKind.AI:
            queue = str(assignment.workload.queue)
            taken = _new_gpus(device, jobs, queue, remaining)
            remaining[queue] = remaining.get(queue, 0) - taken
        assignments.append(assignment)
    return assignments


def _new_gpus(
    device: Device, jobs: tuple[RunningJob, ...], queue: str, remaining: dict[str, int]
) -> int:
    free = device.gpus - sum(job.gpus for job in jobs)
    return max(0, min(free, remaining.get(queue, 0)))


def _decide(
    device: Device,
    current: Workload | None,
    jobs: tuple[RunningJob, ...],
    remaining: dict[str, int],
    economics: MarketEconomics,
    horizon_seconds: float,
) -> Assignment:
    horizon_h = horizon_seconds / SECONDS_PER_HOUR
    cost = switch_cost(jobs, economics, horizon_seconds)
    running_margin = ai_option_economics(
        device, device.queues[0] if device.queues else "", economics, jobs, 0
    ).margin_usd_per_hour
    drain_share = cost.drain_seconds / horizon_seconds if horizon_seconds > 0 else 0.0
    # (workload, value per hour over the horizon, switching cost, drain seconds, new AI GPUs,
    #  margin once switched): equal values go to the better margin once switched, then to current.
    options: list[tuple[Workload, float, float, float, int, float]] = []
    for queue in device.queues:
        new = _new_gpus(device, jobs, queue, remaining)
        if queue_rate_usd_per_gpu_hour(economics, queue) is None:
            new = 0
        margin = ai_option_economics(device, queue, economics, jobs, new).margin_usd_per_hour
        options.append((Workload.ai(queue), margin, 0.0, 0.0, new, margin))
    for workload in (*(Workload.mine(pool) for pool in device.pools), Workload.sleep()):
        steady = option_economics(device, workload, economics).margin_usd_per_hour
        if jobs:
            value = drain_share * running_margin + (1 - drain_share) * steady
            value -= cost.lost_progress_usd / horizon_h if horizon_h > 0 else 0.0
            options.append((workload, value, cost.lost_progress_usd, cost.drain_seconds, 0, steady))
        else:
            options.append((workload, steady, 0.0, 0.0, 0, steady))
    best = max(options, key=lambda o: (round(o[1], 9), round(o[5], 9), o[0] == current))
    workload, value, lost_usd, drain_s, new, _ = best
    if workload.kind is WorkloadKind.AI and new == 0 and jobs:
        # Would leaving have won but for the progress a preemption loses?
        unpenalised = max(options, key=lambda o: o[1] + (o[2] / horizon_h if horizon_h else 0.0))
        reason = (
            Reason.PREEMPTION_COST
            if unpenalised[0].kind is not WorkloadKind.AI
            else Reason.AI_JOB_RUNNING
        )
    else:
        waiting = any(remaining.get(queue, 0) > 0 for queue in device.queues)
        reason = _reason(workload, new, waiting)
    return Assignment(device.id, workload, reason, value, lost_usd, drain_s)


def _reason(workload: Workload, new_ai_gpus: int, waiting: bool) -> Reason:
    if workload.kind is WorkloadKind.AI:
        return Reason.AI_DEMAND if new_ai_gpus > 0 else Reason.MINING_BELOW_COST
    if workload.kind is WorkloadKind.MINE:
        return Reason.MINING_ABOVE_AI_RATE if waiting else Reason.QUEUE_EMPTY
    return Reason.MINING_BELOW_COST
