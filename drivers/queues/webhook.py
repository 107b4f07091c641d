"""Webhook queue driver: a generic HTTP/JSON queue (marketplaces, in-house schedulers).

The protocol (docs/webhook-queue.md) has three calls, all JSON:

- ``GET  {url}/demand``: ``{"queues": {NAME: {"pending_jobs": int, "pending_gpus": int,
  "rate_usd_per_gpu_hour": float | null}}}``: demand in;
- ``GET  {url}/nodes/{node}``: ``{"workload": "ai(q)" | "mine(pool)" | "sleep", "jobs": [...]}``;
- ``PUT  {url}/nodes/{node}/assignment``: ``{"workload": ..., "pool": {...} | null,
  "preemption_allowed": bool}``: assignment out, answered 200 or 202.

Every assignment is read back with ``GET /nodes/{node}`` until the node reports it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from drivers.errors import Fatal, MalformedReply, Rejected, Timeout, Unavailable
from drivers.queues.confirm import confirm_by_reading_back
from drivers.queues.registry import QueueMember, QueueNodeDriver, QueuePlugin
from drivers.secrets import MaskedUrl, reveal
from scheduler.core.model import (
    Device,
    Outcome,
    Pool,
    QueueDemand,
    RunningJob,
    Sample,
    Workload,
)


class WebhookOptions(BaseModel):
    """Where the queue's HTTP endpoint is and how to authenticate."""

    model_config = ConfigDict(extra="forbid")

    driver: Literal["webhook"] = "webhook"
    url: MaskedUrl = Field(
        pattern=r"^https?://.+", description="base URL, e.g. http://10.0.0.5:8080/v1"
    )
    token: SecretStr | None = Field(None, description="sent as 'Authorization: Bearer <token>'")
    timeout_seconds: float = Field(5.0, gt=0, le=120)
    confirm_timeout_seconds: float = Field(20.0, gt=0, le=3600)
    confirm_interval_seconds: float = Field(0.5, gt=0, le=60)


class _QueueIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    pending_jobs: int = Field(ge=0)
    pending_gpus: int = Field(ge=0)
    rate_usd_per_gpu_hour: float | None = Field(None, ge=0)


class _DemandIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    queues: dict[str, _QueueIn]


class _JobIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str
    queue: str
    gpus: int = Field(ge=0)
    elapsed_seconds: float = Field(ge=0)
    remaining_seconds: float | None = Field(None, ge=0)


class _NodeIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    workload: str
    jobs: list[_JobIn] = Field(default_factory=list)


class WebhookQueue:
    """QueueControl and TelemetrySource over the webhook protocol, with an injected HTTP client."""

    def __init__(
        self,
        options: WebhookOptions,
        queues: Mapping[str, bool],  # queue name -> preemption allowed
        pools: Mapping[str, Pool],
        *,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.options = options
        self.queues = dict(queues)
        self.pools = pools
        token = reveal(options.token)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = client or httpx.AsyncClient(timeout=options.timeout_seconds, headers=headers)
        self._clock = clock
        self._sleep = sleep
        self._base = options.url.rstrip("/")

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        source = f"webhook {self._base}"
        try:
            response = await self.client.request(method, self._base + path, json=body)
        except httpx.TimeoutException as exc:
            raise Timeout(source, f"{method} {path}: no answer") from exc
        except httpx.HTTPError as exc:
            raise Unavailable(source, f"{method} {path}: {exc}") from exc
        if response.status_code in (401, 403):
            raise Fatal(source, f"{method} {path}: {response.status_code} (check the token)")
        if response.status_code >= 500:
            raise Unavailable(source, f"{method} {path}: {response.status_code}")
        if response.status_code >= 400:
            raise Rejected(source, f"{method} {path}: {response.status_code} {response.text[:200]}")
        try:
            return response.json()
        except ValueError as exc:
            raise MalformedReply(source, f"{method} {path}: not JSON") from exc

    async def demand(self) -> dict[str, QueueDemand]:
        """Demand of our queues as the endpoint reports it (its rate is the spot rate)."""
        try:
            document = _DemandIn.model_validate(await self._call("GET", "/demand"))
        except ValidationError as exc:
            raise MalformedReply(f"webhook {self._base}", f"/demand: {_first(exc)}") from exc
        now = self._clock()
        return {
            name: QueueDemand(
                name,
                now,
                q.pending_jobs,
                q.pending_gpus,
                q.rate_usd_per_gpu_hour,
                self.queues[name],
            )
            for name, q in document.queues.items()
            if name in self.queues
        }

    async def collect(self, device: Device) -> Sample:
        """The node as the endpoint reports it."""
        path = f"/nodes/{device.address}"
        try:
            node = _NodeIn.model_validate(await self._call("GET", path))
            workload = Workload.parse(node.workload)
        except (ValidationError, ValueError) as exc:
            detail = _first(exc) if isinstance(exc, ValidationError) else str(exc)
            raise MalformedReply(f"webhook {self._base}", f"{path}: {detail}") from exc
        jobs = tuple(
            RunningJob(j.id, j.queue, j.gpus, j.elapsed_seconds, j.remaining_seconds)
            for j in node.jobs
        )
        busy = min(device.gpus, sum(j.gpus for j in jobs)) if workload.kind.value == "ai" else 0
        mining = workload.kind.value == "mine"
        share = 1.0 if mining else (busy / device.gpus if device.gpus else 0.0)
        power_w = device.sleep_power_w + (device.nominal_power_w - device.sleep_power_w) * share
        return Sample(
            device_id=device.id,
            observed_at=self._clock(),
            workload=workload,
            power_w=power_w,
            hashrate_hs=device.nominal_hashrate_hs if mining else 0.0,
            jobs=jobs,
        )

    async def apply(self, device: Device, workload: Workload) -> Outcome:
        """PUT the assignment, then read the node back until it reports it or the deadline passes."""
        pool = self.pools.get(workload.pool or "")
        queue = workload.queue or (device.queues[0] if device.queues else "")
        body = {
            "workload": str(workload),
            "pool": None if pool is None else {"url": pool.url, "user": pool.user},
            "preemption_allowed": self.queues.get(queue, False),
        }
        await self._call("PUT", f"/nodes/{device.address}/assignment", body)
        return await confirm_by_reading_back(
            device,
            workload,
            collect=self.collect,
            clock=self._clock,
            sleep=self._sleep,
            timeout_seconds=self.options.confirm_timeout_seconds,
            interval_seconds=self.options.confirm_interval_seconds,
            describe_jobs=lambda sample: f"AI jobs still running: {len(sample.jobs)}",
        )

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self.client.aclose()


def _first(exc: ValidationError) -> str:
    error = exc.errors()[0]
    return f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}"


def _driver(
    options: WebhookOptions,
    queues: Mapping[str, QueueMember],
    pools: Mapping[str, Pool],
    *,
    clock: Callable[[], float],
) -> QueueNodeDriver:
    preemption = {name: member.preemption_allowed for name, member in queues.items()}
    return WebhookQueue(options, preemption, pools, clock=clock)


PLUGINS = (QueuePlugin(tag="webhook", options=WebhookOptions, factory=_driver),)
