"""[[queues]] and [[gpu_nodes]]: what loads, and every error naming its field."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from drivers.queues.kubernetes import KubernetesQueue
from drivers.queues.slurm import SlurmQueue
from drivers.queues.webhook import WebhookQueue
from scheduler.config.loading import ConfigError, parse_config
from scheduler.control.queues import build_queues
from scheduler.core.model import DeviceKind, Workload

BASE: dict[str, Any] = {
    "site": {"name": "s", "power_cap_kw": 100.0},
    "pools": [{"name": "main", "url": "stratum+tcp://p.invalid:3333", "user": "w"}],
    "queues": [
        {
            "name": "train",
            "contract_rate_usd_per_gpu_hour": 2.1,
            "options": {"driver": "slurm", "partition": "gpu"},
        },
        {
            "name": "batch",
            "contract_rate_usd_per_gpu_hour": 1.2,
            "preemption_allowed": True,
            "options": {"driver": "slurm", "partition": "batch"},
        },
        {
            "name": "market",
            "pricing": "spot",
            "options": {"driver": "webhook", "url": "http://127.50.0.9:1"},
        },
        {
            "name": "k8s",
            "contract_rate_usd_per_gpu_hour": 1.5,
            "options": {"driver": "kubernetes", "api_url": "https://127.50.0.9:6443"},
        },
    ],
    "gpu_nodes": [
        {
            "id": "g1",
            "node": "gpunode1",
            "gpus": 8,
            "queues": ["train", "batch"],
            "pools": ["main"],
            "mining_hashrate_ths": 100,
            "nominal_power_w": 6000,
            "idle_power_w": 800,
        },
        {
            "id": "g2",
            "gpus": 4,
            "queues": ["market"],
            "mining_hashrate_ths": 50,
            "nominal_power_w": 3000,
            "idle_power_w": 400,
        },
        {
            "id": "g3",
            "gpus": 8,
            "queues": ["k8s"],
            "mining_hashrate_ths": 100,
            "nominal_power_w": 6000,
            "idle_power_w": 800,
        },
    ],
}


def problems(change: Any) -> list[str]:
    data = copy.deepcopy(BASE)
    change(data)
    with pytest.raises(ConfigError) as info:
        parse_config(data, "t.toml", environ={})
    return info.value.problems


def test_gpu_nodes_become_devices_with_their_queues_as_options() -> None:
    config = parse_config(copy.deepcopy(BASE), "t.toml", environ={})
    g1 = next(d for d in config.all_devices() if d.id == "g1")
    assert g1.kind is DeviceKind.GPU_NODE
    assert (g1.address, g1.gpus, g1.sleep_power_w) == ("gpunode1", 8, 800)
    assert g1.options() == (
        Workload.ai("train"),
        Workload.ai("batch"),
        Workload.mine("main"),
        Workload.sleep(),
    )
    queues = build_queues(config)
    assert isinstance(queues.per_node["g1"], SlurmQueue)
    assert isinstance(queues.per_node["g2"], WebhookQueue)
    assert isinstance(queues.per_node["g3"], KubernetesQueue)
    slurm = queues.per_node["g1"]
    assert isinstance(slurm, SlurmQueue)
    assert {n: (s.partition, s.preemption_allowed) for n, s in slurm.queues.items()} == {
        "train": ("gpu", False),
        "batch": ("batch", True),
    }
    assert [s.queue_names for s in queues.sources] == [("train", "batch"), ("market",), ("k8s",)]


def test_contract_pricing_needs_a_rate() -> None:
    found = problems(lambda d: d["queues"][0].pop("contract_rate_usd_per_gpu_hour"))
    assert any(p.startswith("queues[0]") and "contract_rate_usd_per_gpu_hour" in p for p in found)


def test_unknown_queue_pool_and_driver_are_named() -> None:
    assert (
        "gpu_nodes[1].queues: unknown queue 'nope'"
        in problems(lambda d: d["gpu_nodes"][1]["queues"].append("nope"))[0]
    )
    assert (
        "gpu_nodes[1].pools: unknown pool 'deep'"
        in problems(lambda d: d["gpu_nodes"][1].update(pools=["deep"]))[0]
    )
    found = problems(lambda d: d["queues"][0]["options"].update(driver="pbs"))
    assert found[0].startswith("queues[0].options")


def test_a_node_cannot_mix_queue_drivers() -> None:
    found = problems(lambda d: d["gpu_nodes"][0]["queues"].append("market"))
    assert "gpu_nodes[0].queues: all of a node's queues need one driver" in found[0]
