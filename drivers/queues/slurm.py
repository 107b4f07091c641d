"""Slurm queue driver: demand per partition, GPU nodes moved between AI partitions and a mining job.

How a node changes hands (the node's Slurm name is ``device.address``):

- ``mine(pool)``: a reservation ``wattmux-<node>`` (``flags=ignore_jobs``) keeps
  new AI work off the node while running AI jobs finish: the node is drained
  for AI work only.  Running AI jobs are requeued only when the queue allows
  preemption.  The miner runs as a job in the low-priority, preemptible mining
  partition inside that reservation; it starts when the GPUs are free.
- ``ai(queue)``: the mining job is cancelled, the reservation deleted and the
  node resumed if wattmux had drained it; pending AI jobs start.
- ``sleep``: the node is drained (running AI jobs finish, nothing new starts)
  and mining ends.
- ``off`` needs a power driver: rejected.

Each command is read back (squeue, scontrol) until the node is where it was
sent or the confirmation deadline passes.
"""

from __future__ import annotations

import asyncio
import getpass
import shlex
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from drivers.errors import Rejected
from drivers.queues.confirm import confirm_by_reading_back
from drivers.queues.registry import QueueMember, QueueNodeDriver, QueuePlugin
from drivers.queues.slurm_cli import SlurmCli, SlurmJob
from scheduler.core.model import (
    Device,
    Outcome,
    Pool,
    QueueDemand,
    RunningJob,
    Sample,
    Workload,
    WorkloadKind,
)

ACTIVE = frozenset({"RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED"})
WAITING = frozenset({"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED"})
MINING_TAG = "wattmux-mine-"


class SlurmOptions(BaseModel):
    """How wattmux reaches one Slurm cluster and runs the miner there."""

    model_config = ConfigDict(extra="forbid")

    driver: Literal["slurm"] = "slurm"
    partition: str = Field(
        pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="AI partition of this queue"
    )
    slurm_conf: str | None = Field(
        None, description="SLURM_CONF for the clients; default: Slurm's own"
    )
    mining_partition: str = Field("mining", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    mining_command: str = Field(
        "exec sleep infinity",
        description="shell command of the mining job; {url} {user} {password} {gpus} are filled in",
    )
    mining_user: str | None = Field(None, description="user the reservation admits; default: ours")
    command_timeout_seconds: float = Field(10.0, gt=0, le=120)
    confirm_timeout_seconds: float = Field(20.0, gt=0, le=3600)
    confirm_interval_seconds: float = Field(0.5, gt=0, le=60)
    cache_seconds: float = Field(1.0, ge=0, le=60, description="reuse one squeue answer this long")


@dataclass(frozen=True, slots=True)
class SlurmQueueSpec:
    """One wattmux queue on this cluster: its partition and whether its jobs may be requeued."""

    partition: str
    preemption_allowed: bool = False


class SlurmQueue:
    """QueueControl and TelemetrySource for the GPU nodes of one Slurm cluster."""

    def __init__(
        self,
        options: SlurmOptions,
        queues: Mapping[str, SlurmQueueSpec],
        pools: Mapping[str, Pool],
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.options = options
        self.queues = dict(queues)
        self.pools = pools
        self.cli = SlurmCli("slurm", options.slurm_conf, options.command_timeout_seconds)
        self._clock = clock
        self._wall_clock = wall_clock
        self._sleep = sleep
        self._jobs: tuple[float, list[SlurmJob]] | None = None
        self._queue_of_partition = {spec.partition: name for name, spec in self.queues.items()}

    async def jobs(self, fresh: bool = False) -> list[SlurmJob]:
        """Every job, reusing one squeue answer for ``cache_seconds`` unless fresh."""
        now = self._clock()
        if fresh or self._jobs is None or now - self._jobs[0] > self.options.cache_seconds:
            self._jobs = (now, await self.cli.jobs())
        return self._jobs[1]

    async def demand(self) -> dict[str, QueueDemand]:
        """Pending jobs and the GPUs they ask for, per queue (its partition)."""
        jobs = await self.jobs()
        observed_at = self._clock()
        out = {}
        for name, spec in self.queues.items():
            pending = [j for j in jobs if j.partition == spec.partition and j.state in WAITING]
            out[name] = QueueDemand(
                queue=name,
                observed_at=observed_at,
                pending_jobs=len(pending),
                pending_gpus=sum(j.gpus for j in pending),
                preemption_allowed=spec.preemption_allowed,
            )
        return out

    def _mining_jobs(self, jobs: list[SlurmJob], node: str) -> list[SlurmJob]:
        return [j for j in jobs if j.name == MINING_TAG + node and j.state in ACTIVE | WAITING]

    def _ai_jobs(self, jobs: list[SlurmJob], node: str) -> list[SlurmJob]:
        return [
            j
            for j in jobs
            if j.partition in self._queue_of_partition and j.state in ACTIVE and j.nodes == node
        ]

    async def collect(self, device: Device) -> Sample:
        """The node's workload: mining job running, drained by wattmux (sleep), or serving AI."""
        node = device.address
        jobs = await self.jobs()
        record = await self.cli.node(node)
        now_wall = self._wall_clock()
        running = []
        for job in self._ai_jobs(jobs, node):
            elapsed = max(0.0, now_wall - job.start_time) if job.start_time else 0.0
            remaining = None
            if job.time_limit_seconds is not None:
                remaining = max(0.0, job.time_limit_seconds - elapsed)
            queue = self._queue_of_partition[job.partition]
            running.append(RunningJob(job.job_id, queue, job.gpus, elapsed, remaining))
        mining = [j for j in self._mining_jobs(jobs, node) if j.state in ACTIVE - {"COMPLETING"}]
        state = record.get("State", "")
        if mining:
            workload = Workload.mine(_pool_of(mining[0]) or device.pools[0])
        elif not running and ("DRAIN" in state or await self._reserved(node)):
            workload = Workload.sleep()
        else:
            queue = running[0].queue if running else self._default_queue(device)
            workload = Workload.ai(queue)
        busy_gpus = sum(j.gpus for j in running) + (device.gpus if mining else 0)
        share = min(1.0, busy_gpus / device.gpus) if device.gpus else 0.0
        # Slurm meters no power: estimated from the GPUs in use between idle and nominal.
        power_w = device.sleep_power_w + (device.nominal_power_w - device.sleep_power_w) * share
        return Sample(
            device_id=device.id,
            observed_at=self._clock(),
            workload=workload,
            power_w=power_w,
            hashrate_hs=device.nominal_hashrate_hs if mining else 0.0,
            jobs=tuple(running),
        )

    def _default_queue(self, device: Device) -> str:
        for queue in device.queues:
            if queue in self.queues:
                return queue
        raise Rejected(device.id, f"none of the node's queues {device.queues} is on this cluster")

    async def _reserved(self, node: str) -> bool:
        return f"wattmux-{node}" in await self.cli.reservations()

    async def apply(self, device: Device, workload: Workload) -> Outcome:
        """Move the node, then read back until confirmed or the deadline passes."""
        node = device.address
        if workload.kind is WorkloadKind.MINE:
            await self._to_mining(device, workload)
        elif workload.kind is WorkloadKind.AI:
            if workload.queue not in self.queues:
                raise Rejected(device.id, f"queue {workload.queue!r} is not on this cluster")
            await self._end_mining(node)
            await self._unreserve(node)
            await self._resume_if_ours(node)
        elif workload.kind is WorkloadKind.SLEEP:
            await self.cli.run(
                "scontrol", "update", f"nodename={node}", "state=drain", "reason=wattmux:sleep"
            )
            await self._end_mining(node)
            await self._unreserve(node)
        else:
            raise Rejected(device.id, "a Slurm node cannot be powered off by the queue driver")
        return await self._confirm(device, workload)

    async def _to_mining(self, device: Device, workload: Workload) -> None:
        node = device.address
        reservation = f"wattmux-{node}"
        if not await self._reserved(node):
            await self.cli.run(
                "scontrol", "create", "reservation", f"reservationname={reservation}",
                f"nodes={node}", "starttime=now", "duration=infinite",
                f"users={self.options.mining_user or getpass.getuser()}", "flags=ignore_jobs",
            )  # fmt: skip
        await self._resume_if_ours(node)
        jobs = await self.jobs(fresh=True)
        for job in self._ai_jobs(jobs, node):
            queue = self._queue_of_partition[job.partition]
            if self.queues[queue].preemption_allowed:
                await self.cli.run("scontrol", "requeue", job.job_id)
        mining = self._mining_jobs(jobs, node)
        stale = [j.job_id for j in mining if _pool_of(j) != workload.pool]
        if stale:
            await self.cli.run("scancel", *stale)
        if len(stale) == len(mining):
            pool = self.pools[str(workload.pool)]
            command = self.options.mining_command.format(
                url=shlex.quote(pool.url), user=shlex.quote(pool.user),
                password=shlex.quote(pool.password), gpus=device.gpus,
            )  # fmt: skip
            await self.cli.run(
                "sbatch", "--parsable", f"--partition={self.options.mining_partition}",
                f"--reservation={reservation}", f"--nodelist={node}", f"--gres=gpu:{device.gpus}",
                f"--job-name={MINING_TAG}{node}", f"--comment=wattmux pool={pool.name}",
                "--requeue", "--output=/dev/null", f"--wrap={command}",
            )  # fmt: skip

    async def _end_mining(self, node: str) -> None:
        mining = self._mining_jobs(await self.jobs(fresh=True), node)
        if mining:
            await self.cli.run("scancel", *(j.job_id for j in mining))

    async def _unreserve(self, node: str) -> None:
        if await self._reserved(node):
            await self.cli.run("scontrol", "delete", f"reservationname=wattmux-{node}")

    async def _resume_if_ours(self, node: str) -> None:
        record = await self.cli.node(node)
        if "DRAIN" in record.get("State", "") and record.get("Reason", "").startswith("wattmux"):
            await self.cli.run("scontrol", "update", f"nodename={node}", "state=resume")

    async def _confirm(self, device: Device, workload: Workload) -> Outcome:
        async def fresh_collect(node: Device) -> Sample:
            self._jobs = None  # read the queue again, not this tick's cached job list
            return await self.collect(node)

        return await confirm_by_reading_back(
            device,
            workload,
            collect=fresh_collect,
            clock=self._clock,
            sleep=self._sleep,
            timeout_seconds=self.options.confirm_timeout_seconds,
            interval_seconds=self.options.confirm_interval_seconds,
            describe_jobs=lambda sample: (
                "AI jobs still running: "
                + ", ".join(f"{j.job_id} ({j.gpus} GPUs)" for j in sample.jobs)
            ),
            tolerate_read_errors=False,
        )


def _pool_of(job: SlurmJob) -> str | None:
    prefix = "wattmux pool="
    return job.comment[len(prefix) :] if job.comment.startswith(prefix) else None


def _driver(
    options: SlurmOptions,
    queues: Mapping[str, QueueMember],
    pools: Mapping[str, Pool],
    *,
    clock: Callable[[], float],
) -> QueueNodeDriver:
    specs = {
        name: SlurmQueueSpec(member.options.partition, member.preemption_allowed)
        for name, member in queues.items()
    }
    return SlurmQueue(options, specs, pools, clock=clock)


PLUGINS = (
    QueuePlugin(
        tag="slurm",
        options=SlurmOptions,
        factory=_driver,
        per_queue_fields=frozenset({"partition"}),
    ),
)
