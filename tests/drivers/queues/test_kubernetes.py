"""The Kubernetes queue driver's request sequence, against API responses served over local HTTP.

No API server can run here (no container engine): a scripted server answers
each request with a JSON document from tests/fixtures/kubernetes/ (written in
the shape of the v1 API, see the README there) and fails the test when the
driver asks for anything else, in another order, or sends a wrong body.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from drivers.errors import Fatal
from drivers.queues.kubernetes import KubernetesOptions, KubernetesQueue, pod_gpus
from scheduler.core.model import OutcomeStatus, Pool, Workload
from tests.fakes import FakeClock, gpu_node

FIXTURES = Path(__file__).parents[2] / "fixtures" / "kubernetes"
HOST = "127.50.3.1"
NODE_PATH = "/api/v1/nodes/gpu-node-1"
ON_NODE = "/api/v1/pods?fieldSelector=spec.nodeName=gpu-node-1,status.phase=Running"
MINER = "/api/v1/namespaces/wattmux/pods/wattmux-miner-gpu-node-1"
POOLS = {"main": Pool("main", "stratum+tcp://main.pool.invalid:3333", "w")}


@dataclass
class Step:
    method: str
    path: str
    status: int
    fixture: str
    check: Callable[[Any], None] | None = None


@dataclass
class ScriptedApi:
    """Serves one fixture per expected request, in order; records every deviation."""

    steps: list[Step] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    port: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            method, target, _ = head[0].split(" ", 2)
            length = next(
                (int(h.split(":", 1)[1]) for h in head if h.lower().startswith("content-length")), 0
            )
            body = json.loads(await reader.readexactly(length)) if length else None
            status, payload = 500, {"message": "unexpected request"}
            if not self.steps:
                self.errors.append(f"unexpected {method} {unquote(target)}")
            else:
                step = self.steps.pop(0)
                if (method, unquote(target)) != (step.method, step.path):
                    self.errors.append(
                        f"expected {step.method} {step.path}, got {method} {unquote(target)}"
                    )
                else:
                    try:
                        if step.check is not None:
                            step.check(body)
                        status, payload = (
                            step.status,
                            json.loads((FIXTURES / step.fixture).read_text()),
                        )
                    except AssertionError as exc:
                        self.errors.append(f"{method} {target}: bad body {body}: {exc}")
            data = json.dumps(payload).encode()
            writer.write(
                f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n"
                "Connection: close\r\n\r\n".encode()
                + data
            )
            await writer.drain()
        writer.close()


@pytest.fixture
async def api() -> AsyncIterator[ScriptedApi]:
    scripted = ScriptedApi()
    server = await asyncio.start_server(scripted.handle, HOST, 0)
    scripted.port = server.sockets[0].getsockname()[1]
    async with server:
        yield scripted
    assert not scripted.errors, scripted.errors
    assert not scripted.steps, (
        f"requests never made: {[(s.method, s.path) for s in scripted.steps]}"
    )


def driver(api: ScriptedApi, preemption: bool = False) -> KubernetesQueue:
    options = KubernetesOptions(
        api_url=f"http://{HOST}:{api.port}",
        confirm_timeout_seconds=1.0,
        confirm_interval_seconds=1.0,
    )
    clock = FakeClock(0.0)
    return KubernetesQueue(
        options,
        {"train": preemption},
        POOLS,
        clock=clock,
        wall_clock=lambda: 1724093100.0,
        sleep=clock.sleep,
    )


NODE = gpu_node(model="8xGPU", driver="queue", address="gpu-node-1")


def has_mining_taint(body: Any) -> None:
    assert body == {
        "spec": {"taints": [{"key": "wattmux.io/mining", "value": "true", "effect": "NoSchedule"}]}
    }


def is_mining_pod(body: Any) -> None:
    spec = body["spec"]
    assert spec["priorityClassName"] == "wattmux-mining"
    assert spec["nodeSelector"] == {"kubernetes.io/hostname": "gpu-node-1"}
    assert spec["tolerations"][0]["key"] == "wattmux.io/mining"
    assert spec["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": 8}
    assert body["metadata"]["labels"]["wattmux.io/pool"] == "main"


def is_low_priority_class(body: Any) -> None:
    assert (body["value"], body["preemptionPolicy"]) == (-1000, "Never")


def mining_setup(on_node: str) -> list[Step]:
    return [
        Step("GET", NODE_PATH, 200, "node.json"),
        Step(
            "GET",
            "/apis/scheduling.k8s.io/v1/priorityclasses/wattmux-mining",
            404,
            "status-404-priorityclass.json",
        ),
        Step(
            "POST",
            "/apis/scheduling.k8s.io/v1/priorityclasses",
            201,
            "priorityclass.json",
            is_low_priority_class,
        ),
        Step("PATCH", NODE_PATH, 200, "node-tainted.json", has_mining_taint),
        Step("GET", ON_NODE, 200, on_node),
    ]


@pytest.mark.system
async def test_demand_counts_pending_pods_and_their_gpus_per_queue(api: ScriptedApi) -> None:
    api.steps = [
        Step("GET", "/api/v1/pods?fieldSelector=status.phase=Pending", 200, "pods-pending.json")
    ]
    queue = driver(api)
    demand = (await queue.demand())["train"]
    assert (demand.pending_jobs, demand.pending_gpus) == (2, 6)
    await queue.aclose()


@pytest.mark.system
async def test_mining_never_evicts_a_running_ai_pod_without_preemption(api: ScriptedApi) -> None:
    api.steps = [
        *mining_setup("pods-on-node-ai.json"),
        Step(
            "GET",
            "/api/v1/pods?fieldSelector=metadata.name=wattmux-miner-gpu-node-1,metadata.namespace=wattmux",
            200,
            "pods-empty.json",
        ),
        Step("POST", "/api/v1/namespaces/wattmux/pods", 201, "pod-created.json", is_mining_pod),
        # read back twice (the AI pod still runs), then the deadline passes
        Step("GET", NODE_PATH, 200, "node-tainted.json"),
        Step("GET", ON_NODE, 200, "pods-on-node-ai.json"),
        Step("GET", NODE_PATH, 200, "node-tainted.json"),
        Step("GET", ON_NODE, 200, "pods-on-node-ai.json"),
    ]
    queue = driver(api)
    outcome = await queue.apply(NODE, Workload.mine("main"))
    assert outcome.status is OutcomeStatus.UNCONFIRMED
    assert outcome.detail == "node reports ai(train); AI pods still running: train-llm-7b-1"
    await queue.aclose()


@pytest.mark.system
async def test_preemption_evicts_the_ai_pod_and_the_miner_runs(api: ScriptedApi) -> None:
    def eviction(body: Any) -> None:
        assert body["kind"] == "Eviction" and body["metadata"]["name"] == "train-llm-7b-1"

    api.steps = [
        *mining_setup("pods-on-node-ai.json"),
        Step(
            "POST",
            "/api/v1/namespaces/research/pods/train-llm-7b-1/eviction",
            201,
            "eviction-created.json",
            eviction,
        ),
        Step(
            "GET",
            "/api/v1/pods?fieldSelector=metadata.name=wattmux-miner-gpu-node-1,metadata.namespace=wattmux",
            200,
            "pods-empty.json",
        ),
        Step("POST", "/api/v1/namespaces/wattmux/pods", 201, "pod-created.json", is_mining_pod),
        Step("GET", NODE_PATH, 200, "node-tainted.json"),
        Step("GET", ON_NODE, 200, "pods-on-node-miner.json"),
    ]
    queue = driver(api, preemption=True)
    outcome = await queue.apply(NODE, Workload.mine("main"))
    assert outcome.status is OutcomeStatus.CONFIRMED
    await queue.aclose()


@pytest.mark.system
async def test_back_to_ai_deletes_the_miner_and_lifts_taint_and_our_cordon(
    api: ScriptedApi,
) -> None:
    def lifted(body: Any) -> None:
        assert body == {
            "spec": {
                "taints": [
                    {
                        "key": "node.kubernetes.io/unschedulable",
                        "effect": "NoSchedule",
                        "timeAdded": "2024-08-19T19:45:02Z",
                    }
                ],
                "unschedulable": None,
            },
            "metadata": {"annotations": {"wattmux.io/cordoned": None}},
        }

    api.steps = [
        Step("GET", NODE_PATH, 200, "node-cordoned-by-wattmux.json"),
        Step("DELETE", MINER, 200, "pod-created.json"),
        Step("PATCH", NODE_PATH, 200, "node.json", lifted),
        Step("GET", NODE_PATH, 200, "node.json"),
        Step("GET", ON_NODE, 200, "pods-on-node-ai.json"),
    ]
    queue = driver(api)
    outcome = await queue.apply(NODE, Workload.ai("train"))
    assert outcome.status is OutcomeStatus.CONFIRMED
    await queue.aclose()


@pytest.mark.system
async def test_collect_reads_jobs_and_estimates_power(api: ScriptedApi) -> None:
    api.steps = [
        Step("GET", NODE_PATH, 200, "node.json"),
        Step("GET", ON_NODE, 200, "pods-on-node-ai.json"),
    ]
    queue = driver(api)
    sample = await queue.collect(NODE)
    assert sample.workload == Workload.ai("train")
    assert [(j.job_id, j.gpus, j.elapsed_seconds) for j in sample.jobs] == [
        ("train-llm-7b-1", 8, 2700.0)  # 18:00 to 18:45 UTC
    ]
    assert sample.power_w == 6000.0
    await queue.aclose()


@pytest.mark.system
async def test_forbidden_is_fatal(api: ScriptedApi) -> None:
    api.steps = [
        Step("GET", "/api/v1/pods?fieldSelector=status.phase=Pending", 403, "status-403.json")
    ]
    queue = driver(api)
    with pytest.raises(Fatal, match="403"):
        await queue.demand()
    await queue.aclose()


def test_pod_gpus_sums_requests_or_limits_over_containers() -> None:
    pods = json.loads((FIXTURES / "pods-pending.json").read_text())["items"]
    assert [pod_gpus(p) for p in pods] == [4, 2, 0]
