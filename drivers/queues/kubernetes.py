"""Kubernetes queue driver: GPU nodes between AI pods and a low-priority mining pod, over the API server's REST API.

A pod belongs to queue Q when its label ``queue_label`` (default
``wattmux.io/queue``) is Q; demand is the Pending pods of a queue and the
``nvidia.com/gpu`` they request.  How a node changes hands:

- ``mine(pool)``: the node gets the taint ``wattmux.io/mining=true:NoSchedule``
  (new AI pods stay off; running ones are not evicted), AI pods on it are
  evicted through the Eviction API only when the queue allows preemption, and
  a mining pod that tolerates the taint runs there with the PriorityClass
  ``wattmux-mining`` (negative priority, ``preemptionPolicy: Never``), which
  any AI pod outranks and so evicts;
- ``ai(queue)``: the mining pod is deleted, the taint removed, and the node
  uncordoned if wattmux had cordoned it;
- ``sleep``: the node is cordoned (marked by annotation, so an operator's
  cordon is never undone) and mining ends.

Requests are plain REST through an injected ``httpx.AsyncClient``: the request
sequence stays explicit and testable, and no client library is needed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr

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
    WorkloadKind,
)

GPU = "nvidia.com/gpu"
TAINT_KEY = "wattmux.io/mining"
CORDON_MARK = "wattmux.io/cordoned"
MINER_LABEL = "wattmux.io/miner"
POOL_LABEL = "wattmux.io/pool"
MERGE = {"Content-Type": "application/merge-patch+json"}


class KubernetesOptions(BaseModel):
    """API server, credentials and the mining pod's shape."""

    model_config = ConfigDict(extra="forbid")

    driver: Literal["kubernetes"] = "kubernetes"
    api_url: MaskedUrl = Field(
        pattern=r"^https?://.+", description="API server, e.g. https://10.0.0.1:6443"
    )
    token: SecretStr | None = Field(None, description="bearer token of wattmux's service account")
    ca_file: str | None = Field(None, description="CA bundle of the API server")
    queue_label: str = Field("wattmux.io/queue", description="pod label naming its queue")
    mining_namespace: str = Field("wattmux")
    mining_image: str = Field("registry.invalid/miner:latest", description="miner container image")
    mining_priority: int = Field(
        -1000, le=0, description="value of the wattmux-mining PriorityClass"
    )
    timeout_seconds: float = Field(5.0, gt=0, le=120)
    confirm_timeout_seconds: float = Field(30.0, gt=0, le=3600)
    confirm_interval_seconds: float = Field(1.0, gt=0, le=60)


def pod_gpus(pod: Mapping[str, Any]) -> int:
    """GPUs a pod asks for: the sum over its containers of the nvidia.com/gpu request (or limit)."""
    total = 0
    for container in pod.get("spec", {}).get("containers", []):
        resources = container.get("resources", {})
        value = resources.get("requests", {}).get(GPU) or resources.get("limits", {}).get(GPU)
        total += int(value or 0)
    return total


class KubernetesQueue:
    """QueueControl and TelemetrySource for the GPU nodes of one Kubernetes cluster."""

    def __init__(
        self,
        options: KubernetesOptions,
        queues: Mapping[str, bool],  # queue name (label value) -> preemption allowed
        pools: Mapping[str, Pool],
        *,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.options = options
        self.queues = dict(queues)
        self.pools = pools
        token = reveal(options.token)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        verify: str | bool = options.ca_file or True
        self.client = client or httpx.AsyncClient(
            timeout=options.timeout_seconds, headers=headers, verify=verify
        )
        self._base = options.api_url.rstrip("/")
        self._clock, self._wall_clock, self._sleep = clock, wall_clock, sleep

    async def _call(
        self, method: str, path: str, body: Any = None, headers: Mapping[str, str] | None = None
    ) -> Any:
        source = f"kubernetes {self._base}"
        try:
            response = await self.client.request(
                method, self._base + path, json=body, headers=headers
            )
        except httpx.TimeoutException as exc:
            raise Timeout(source, f"{method} {path}: no answer") from exc
        except httpx.HTTPError as exc:
            raise Unavailable(source, f"{method} {path}: {exc}") from exc
        if response.status_code in (401, 403):
            raise Fatal(source, f"{method} {path}: {response.status_code} (check RBAC and token)")
        if response.status_code == 429 or response.status_code >= 500:
            raise Unavailable(source, f"{method} {path}: {response.status_code}")
        if response.status_code >= 400:
            raise Rejected(source, f"{method} {path}: {response.status_code} {response.text[:200]}")
        try:
            return response.json()
        except ValueError as exc:
            raise MalformedReply(source, f"{method} {path}: not JSON") from exc

    async def _pods(self, field_selector: str) -> list[dict[str, Any]]:
        document = await self._call("GET", f"/api/v1/pods?fieldSelector={field_selector}")
        items = document.get("items") if isinstance(document, dict) else None
        if not isinstance(items, list):
            raise MalformedReply(f"kubernetes {self._base}", "pod list without items")
        return items

    def _queue_of(self, pod: Mapping[str, Any]) -> str | None:
        queue = pod.get("metadata", {}).get("labels", {}).get(self.options.queue_label)
        return queue if queue in self.queues else None

    async def demand(self) -> dict[str, QueueDemand]:
        """Pending pods and the GPUs they request, per queue label."""
        pending = await self._pods("status.phase=Pending")
        now = self._clock()
        out = {}
        for name, preemption in self.queues.items():
            mine = [p for p in pending if self._queue_of(p) == name]
            out[name] = QueueDemand(
                name, now, len(mine), sum(pod_gpus(p) for p in mine), None, preemption
            )
        return out

    async def collect(self, device: Device) -> Sample:
        """The node: mining pod running, cordoned by wattmux (sleep), or serving its queue."""
        node = await self._call("GET", f"/api/v1/nodes/{device.address}")
        pods = await self._pods(f"spec.nodeName={device.address},status.phase=Running")
        jobs = []
        for pod in pods:
            queue = self._queue_of(pod)
            if queue is None:
                continue
            started = _epoch(pod.get("status", {}).get("startTime"))
            elapsed = max(0.0, self._wall_clock() - started) if started else 0.0
            jobs.append(RunningJob(pod["metadata"]["name"], queue, pod_gpus(pod), elapsed))
        miners = [p for p in pods if p.get("metadata", {}).get("labels", {}).get(MINER_LABEL)]
        annotations = node.get("metadata", {}).get("annotations") or {}
        if miners:
            pool = miners[0]["metadata"]["labels"].get(POOL_LABEL) or device.pools[0]
            workload = Workload.mine(pool)
        elif not jobs and annotations.get(CORDON_MARK) == "true":
            workload = Workload.sleep()
        else:
            default = next((q for q in device.queues if q in self.queues), None)
            if default is None:
                raise Rejected(device.id, f"none of the node's queues {device.queues} is here")
            workload = Workload.ai(jobs[0].queue if jobs else default)
        busy = device.gpus if miners else min(device.gpus, sum(j.gpus for j in jobs))
        share = busy / device.gpus if device.gpus else 0.0
        return Sample(
            device_id=device.id,
            observed_at=self._clock(),
            workload=workload,
            power_w=device.sleep_power_w + (device.nominal_power_w - device.sleep_power_w) * share,
            hashrate_hs=device.nominal_hashrate_hs if miners else 0.0,
            jobs=tuple(jobs),
        )

    async def apply(self, device: Device, workload: Workload) -> Outcome:
        """Move the node, then read it back until it is confirmed or the deadline passes."""
        name = device.address
        node = await self._call("GET", f"/api/v1/nodes/{name}")
        taints = [t for t in node.get("spec", {}).get("taints") or [] if t.get("key") != TAINT_KEY]
        if workload.kind is WorkloadKind.MINE:
            await self._ensure_priority_class()
            taint = {"key": TAINT_KEY, "value": "true", "effect": "NoSchedule"}
            await self._patch_node(name, {"spec": {"taints": [*taints, taint]}})
            for pod in await self._pods(f"spec.nodeName={name},status.phase=Running"):
                queue = self._queue_of(pod)
                if queue is not None and self.queues[queue]:
                    await self._evict(pod)
            await self._start_miner(device, str(workload.pool))
        elif workload.kind is WorkloadKind.AI:
            if workload.queue not in self.queues:
                raise Rejected(device.id, f"queue {workload.queue!r} is not on this cluster")
            await self._stop_miner(name)
            patch: dict[str, Any] = {"spec": {"taints": taints or None}}
            if (node.get("metadata", {}).get("annotations") or {}).get(CORDON_MARK) == "true":
                patch["spec"]["unschedulable"] = None
                patch["metadata"] = {"annotations": {CORDON_MARK: None}}
            await self._patch_node(name, patch)
        elif workload.kind is WorkloadKind.SLEEP:
            if not node.get("spec", {}).get("unschedulable"):
                await self._patch_node(
                    name,
                    {
                        "spec": {"unschedulable": True},
                        "metadata": {"annotations": {CORDON_MARK: "true"}},
                    },
                )
            await self._stop_miner(name)
        else:
            raise Rejected(device.id, "a Kubernetes node cannot be powered off by the queue driver")
        return await self._confirm(device, workload)

    async def _patch_node(self, name: str, patch: dict[str, Any]) -> None:
        await self._call("PATCH", f"/api/v1/nodes/{name}", patch, MERGE)

    async def _ensure_priority_class(self) -> None:
        path = "/apis/scheduling.k8s.io/v1/priorityclasses"
        try:
            await self._call("GET", f"{path}/wattmux-mining")
        except Rejected:
            body = {
                "apiVersion": "scheduling.k8s.io/v1",
                "kind": "PriorityClass",
                "metadata": {"name": "wattmux-mining"},
                "value": self.options.mining_priority,
                "preemptionPolicy": "Never",
                "globalDefault": False,
                "description": "wattmux mining: any AI pod outranks and evicts it",
            }
            await self._call("POST", path, body)

    async def _evict(self, pod: Mapping[str, Any]) -> None:
        meta = pod["metadata"]
        body = {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
        }
        path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/eviction"
        await self._call("POST", path, body)

    def _miner_name(self, node: str) -> str:
        return f"wattmux-miner-{node}"[:63]

    async def _start_miner(self, device: Device, pool_name: str) -> None:
        pool = self.pools[pool_name]
        namespace, name = self.options.mining_namespace, self._miner_name(device.address)
        existing = await self._pods(f"metadata.name={name},metadata.namespace={namespace}")
        if any(p["metadata"].get("labels", {}).get(POOL_LABEL) == pool_name for p in existing):
            return
        if existing:
            await self._stop_miner(device.address)
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {MINER_LABEL: "true", POOL_LABEL: pool_name},
            },
            "spec": {
                "nodeSelector": {"kubernetes.io/hostname": device.address},
                "priorityClassName": "wattmux-mining",
                "tolerations": [{"key": TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}],
                "restartPolicy": "Always",
                "containers": [
                    {
                        "name": "miner",
                        "image": self.options.mining_image,
                        "args": ["--url", pool.url, "--user", pool.user],
                        "resources": {"limits": {GPU: device.gpus}},
                    }
                ],
            },
        }
        await self._call("POST", f"/api/v1/namespaces/{namespace}/pods", body)

    async def _stop_miner(self, node: str) -> None:
        path = f"/api/v1/namespaces/{self.options.mining_namespace}/pods/{self._miner_name(node)}"
        try:
            await self._call("DELETE", path)
        except Rejected as exc:
            if "404" not in exc.message:
                raise

    async def _confirm(self, device: Device, workload: Workload) -> Outcome:
        return await confirm_by_reading_back(
            device,
            workload,
            collect=self.collect,
            clock=self._clock,
            sleep=self._sleep,
            timeout_seconds=self.options.confirm_timeout_seconds,
            interval_seconds=self.options.confirm_interval_seconds,
            describe_jobs=lambda sample: (
                "AI pods still running: " + ", ".join(j.job_id for j in sample.jobs)
            ),
        )

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self.client.aclose()


def _epoch(text: object) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _driver(
    options: KubernetesOptions,
    queues: Mapping[str, QueueMember],
    pools: Mapping[str, Pool],
    *,
    clock: Callable[[], float],
) -> QueueNodeDriver:
    preemption = {name: member.preemption_allowed for name, member in queues.items()}
    return KubernetesQueue(options, preemption, pools, clock=clock)


PLUGINS = (QueuePlugin(tag="kubernetes", options=KubernetesOptions, factory=_driver),)
