"""SimQueue: simulated GPU nodes and an AI job queue with random arrivals, served over the webhook protocol.

Time inside the simulation runs ``speed`` times faster than the injected
clock, so a demo can replay a day of job arrivals in a minute.  Jobs arrive
per queue as a Poisson process whose rate follows an optional profile (busy
days, quiet nights), ask for a few GPUs for a few hours, and start first come
first served on nodes assigned to their queue.  A node sent to mining or
sleep first lets its running jobs finish, unless preemption is allowed, in
which case they go back to the head of the queue and lose their progress.

It listens on a loopback address and speaks the protocol of
``drivers/queues/webhook.py`` (``GET /demand``, ``GET /nodes/N``,
``PUT /nodes/N/assignment``), so the demo and the tests drive it through the
real webhook driver over real HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from scheduler.core.model import Workload, WorkloadKind


@dataclass(frozen=True, slots=True)
class SimQueueSpec:
    """One simulated queue: what it pays and how work arrives (sim hours)."""

    rate_usd_per_gpu_hour: float
    jobs_per_hour: float
    gpus_per_job: tuple[int, ...] = (1, 2, 4, 8)
    mean_job_hours: float = 2.0


@dataclass(slots=True)
class SimJob:
    """One job: how many GPUs for how long (sim seconds), where and since when it runs."""

    id: str
    queue: str
    gpus: int
    duration_s: float
    started_at: float | None = None
    node: str | None = None


@dataclass(slots=True)
class SimNode:
    """One GPU node: its assignment and the jobs on it."""

    name: str
    gpus: int
    assigned: Workload
    jobs: list[SimJob] = field(default_factory=list)

    def free_gpus(self) -> int:
        """GPUs not used by a running job."""
        return self.gpus - sum(job.gpus for job in self.jobs)

    def workload(self) -> Workload:
        """What the node does now: its assignment, or its queue while jobs drain."""
        if self.assigned.kind is not WorkloadKind.AI and self.jobs:
            return Workload.ai(self.jobs[0].queue)
        return self.assigned


class SimQueue:
    """The simulated queue system; ``async with`` serves it on ``host:port``."""

    def __init__(
        self,
        nodes: Mapping[str, int],  # node name -> GPUs
        queues: Mapping[str, SimQueueSpec],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        speed: float = 1.0,
        seed: int = 0,
        profile: Callable[[float], float] = lambda _sim_s: 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        first = next(iter(queues))
        self.nodes = {name: SimNode(name, gpus, Workload.ai(first)) for name, gpus in nodes.items()}
        self.queues = dict(queues)
        self.pending: list[SimJob] = []
        self.host, self.port = host, port
        self.speed, self.profile, self._clock = speed, profile, clock
        self._rng = random.Random(seed)
        self._ids = itertools.count(1)
        self._t0 = clock()
        self._now = 0.0
        self._next_arrival = {name: self._draw_gap(name, 0.0) for name in self.queues}
        self._server: asyncio.Server | None = None
        self.requests = 0

    def sim_seconds(self) -> float:
        """Simulated seconds since the start."""
        return (self._clock() - self._t0) * self.speed

    def _draw_gap(self, queue: str, at: float) -> float:
        per_s = self.queues[queue].jobs_per_hour * max(0.0, self.profile(at)) / 3600
        return at + (self._rng.expovariate(per_s) if per_s > 0 else 3600.0)

    def submit(self, queue: str, gpus: int, hours: float) -> SimJob:
        """Add one job by hand (tests); it starts at the next step if a node has room."""
        job = SimJob(f"j{next(self._ids)}", queue, gpus, hours * 3600)
        self.pending.append(job)
        return job

    def step(self) -> None:
        """Advance to now: finish jobs, admit arrivals, start what fits."""
        now = self.sim_seconds()
        self._now = now
        for node in self.nodes.values():
            node.jobs = [j for j in node.jobs if (j.started_at or 0) + j.duration_s > now]
        for name, spec in self.queues.items():
            while self._next_arrival[name] <= now:
                at = self._next_arrival[name]
                hours = self._rng.expovariate(1 / spec.mean_job_hours)
                gpus = self._rng.choice(spec.gpus_per_job)
                self.pending.append(
                    SimJob(f"j{next(self._ids)}", name, gpus, max(600, hours * 3600))
                )
                self._next_arrival[name] = self._draw_gap(name, at)
        for job in list(self.pending):
            for node in self.nodes.values():
                if node.assigned == Workload.ai(job.queue) and node.free_gpus() >= job.gpus:
                    job.started_at, job.node = now, node.name
                    node.jobs.append(job)
                    self.pending.remove(job)
                    break

    def assign(self, name: str, workload: Workload, preemption_allowed: bool) -> None:
        """Move a node; running jobs drain, or are requeued when preemption is allowed."""
        node = self.nodes[name]
        if workload.kind is WorkloadKind.AI and workload.queue not in self.queues:
            raise KeyError(f"unknown queue {workload.queue}")
        node.assigned = workload
        if workload.kind is not WorkloadKind.AI and preemption_allowed:
            for job in node.jobs:
                job.started_at, job.node = None, None
            self.pending[:0] = node.jobs
            node.jobs = []
        self.step()

    def demand_document(self) -> dict[str, Any]:
        """The ``GET /demand`` answer."""
        self.step()
        return {
            "queues": {
                name: {
                    "pending_jobs": sum(1 for j in self.pending if j.queue == name),
                    "pending_gpus": sum(j.gpus for j in self.pending if j.queue == name),
                    "rate_usd_per_gpu_hour": spec.rate_usd_per_gpu_hour,
                }
                for name, spec in self.queues.items()
            }
        }

    def node_document(self, name: str) -> dict[str, Any]:
        """The ``GET /nodes/{name}`` answer."""
        self.step()
        node = self.nodes[name]
        return {
            "workload": str(node.workload()),
            "jobs": [
                {
                    "id": j.id,
                    "queue": j.queue,
                    "gpus": j.gpus,
                    "elapsed_seconds": self._now - (j.started_at or self._now),
                    "remaining_seconds": max(0.0, (j.started_at or 0) + j.duration_s - self._now),
                }
                for j in node.jobs
            ],
        }

    def _route(self, method: str, path: str, body: bytes) -> tuple[int, Any]:
        parts = [p for p in path.split("?")[0].split("/") if p]
        if method == "GET" and parts == ["demand"]:
            return 200, self.demand_document()
        if len(parts) >= 2 and parts[0] == "nodes" and parts[1] not in self.nodes:
            return 404, {"error": f"unknown node {parts[1]}"}
        if method == "GET" and len(parts) == 2 and parts[0] == "nodes":
            return 200, self.node_document(parts[1])
        if method == "PUT" and len(parts) == 3 and parts[0] == "nodes" and parts[2] == "assignment":
            try:
                request = json.loads(body)
                workload = Workload.parse(request["workload"])
                self.assign(parts[1], workload, bool(request.get("preemption_allowed", False)))
            except (ValueError, KeyError, TypeError) as exc:
                return 400, {"error": str(exc)}
            return 202, {"accepted": str(workload)}
        return 404, {"error": f"no route {method} {path}"}

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, ValueError):
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            length = 0
            for line in lines[1:]:
                key, _, value = line.partition(":")
                if key.strip().lower() == "content-length":
                    length = int(value)
            body = await reader.readexactly(length) if length else b""
            self.requests += 1
            status, document = self._route(method, path, body)
            payload = json.dumps(document).encode()
            writer.write(
                f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
        writer.close()

    @property
    def url(self) -> str:
        """Base URL of the webhook endpoint."""
        return f"http://{self.host}:{self.port}"

    async def __aenter__(self) -> SimQueue:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
