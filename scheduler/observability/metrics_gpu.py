"""Prometheus gauges of the AI queues and GPU nodes, read from FleetState at scrape time.

Families appear only on sites with queues or GPU nodes, so an ASIC-only
site's exposition stays as it was.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from scheduler.core.model import DeviceKind
from scheduler.core.state import FleetState


class GpuQueueCollector(Collector):
    """Queue demand and rate, and the GPUs busy with AI jobs per node."""

    def __init__(self, state: FleetState) -> None:
        self._state = state

    def collect(self) -> Iterable[Metric]:
        """Read FleetState now; nothing when the site has no queues and no GPU nodes."""
        state = self._state
        nodes = [d for d in state.devices.values() if d.kind is DeviceKind.GPU_NODE]
        if not state.queues and not nodes:
            return []
        pending_jobs = GaugeMetricFamily(
            "wattmux_queue_pending_jobs", "AI jobs waiting, per queue.", labels=["queue"]
        )
        pending_gpus = GaugeMetricFamily(
            "wattmux_queue_pending_gpus",
            "GPUs the waiting AI jobs ask for, per queue.",
            labels=["queue"],
        )
        rate = GaugeMetricFamily(
            "wattmux_queue_rate_usd_per_gpu_hour",
            "What a GPU-hour of the queue's work pays (contract or spot).",
            labels=["queue"],
        )
        for name, demand in sorted(state.queues.items()):
            pending_jobs.add_metric([name], demand.pending_jobs)
            pending_gpus.add_metric([name], demand.pending_gpus)
            if demand.rate_usd_per_gpu_hour is not None:
                rate.add_metric([name], demand.rate_usd_per_gpu_hour)
        busy = GaugeMetricFamily(
            "wattmux_gpu_node_ai_gpus_busy",
            "GPUs of a node running AI jobs (last trusted sample).",
            labels=["device"],
        )
        for node in sorted(nodes, key=lambda d: d.id):
            sample = state.samples.get(node.id)
            if sample is not None and state.status[node.id].reachable:
                busy.add_metric([node.id], sum(job.gpus for job in sample.jobs))
        return [pending_jobs, pending_gpus, rate, busy]
