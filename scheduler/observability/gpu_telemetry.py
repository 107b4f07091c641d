"""GPU telemetry in the daemon: the readings of every configured source as Prometheus gauges.

The sources are built through the GPU telemetry registry (``drivers.gpu.registry``)
from the ``[gpu_telemetry]`` section: ``nvml = true`` (this host's GPUs through
NVML), ``dcgm_urls = [...]`` (dcgm-exporter scrapes) and any number of
``[[gpu_telemetry.sources]]`` tables, each naming a registered source by its
``driver`` tag and validated by that entry's options model::

    [[gpu_telemetry.sources]]
    driver = "dcgm"
    url = "http://gpunode2:9400/metrics"

Every source is read every ``interval_seconds``; its GPUs' readings are the
``wattmux_gpu_*`` gauges ``{gpu, source}`` (``source``: the entry's tag).  A
source that cannot be opened on this host (no NVML library or GPU) is said once
at start and the daemon goes on without it (``wattmux_gpu_nvml_available`` 0:
an entry may name such a gauge); a source failing a read is
``wattmux_source_up{source=<its name>}`` 0 (``nvml``, ``dcgm:<url>``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Self

import httpx
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from drivers.errors import DriverError
from drivers.gpu.config import GpuTelemetryOptions
from drivers.gpu.registry import (
    GPU_TELEMETRY,
    GpuSourceContext,
    GpuTelemetrySource,
    GpuValues,
    build_gpu_sources,
)
from scheduler.observability.metrics import Metrics

log = logging.getLogger(__name__)

# (metric, help, field of a GPU's values)
GAUGES = (
    ("wattmux_gpu_power_watts", "GPU power draw.", "power_w"),
    ("wattmux_gpu_temperature_celsius", "GPU temperature.", "temperature_c"),
    ("wattmux_gpu_utilization_percent", "GPU utilisation.", "utilization_percent"),
)


class GpuTelemetry(Collector):
    """Reads GPUs every interval in its own task; the registry reads the latest at scrape time."""

    def __init__(
        self,
        options: GpuTelemetryOptions,
        metrics: Metrics,
        http: httpx.AsyncClient,
        sources: Sequence[tuple[str, GpuTelemetrySource]] | None = None,
    ) -> None:
        self.options = options
        self.metrics = metrics
        context = GpuSourceContext(http=http, timeout_seconds=options.timeout_seconds)
        # (tag, source) of every configured source, in read order
        self.sources = (
            list(sources) if sources is not None else build_gpu_sources(options.entries(), context)
        )
        self.opened: list[tuple[str, GpuTelemetrySource]] = []
        # the latest values of each GPU, by source tag and gpu label
        self.readings: dict[str, dict[str, GpuValues]] = {tag: {} for tag, _ in self.sources}
        self.available_gauges = {
            entry.tag: entry.available_gauge
            for entry in GPU_TELEMETRY.entries()
            if entry.available_gauge is not None
        }
        self._task: asyncio.Task[None] | None = None
        self._up: dict[str, bool] = {}
        metrics.registry.register(self)

    async def __aenter__(self) -> Self:
        """Open every source (saying plainly when one cannot be) and start reading."""
        for tag, source in self.sources:
            if any(source is other for _, other in self.opened):
                continue
            try:
                await source.open()
            except DriverError as exc:
                log.warning("%s; the daemon goes on without it", exc)
                continue
            self.opened.append((tag, source))
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="gpu-telemetry.read")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop reading and close the sources."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        opened, self.opened = self.opened, []
        for _, source in opened:
            await source.close()

    async def read_once(self) -> None:
        """Read every opened source once, in order."""
        for tag, source in self.opened:
            try:
                gpus = await source.read()
            except DriverError as exc:
                self._set_up(source.name, False, exc)
                continue
            self._set_up(source.name, True)
            self.readings[tag].update(gpus)

    def _set_up(self, source: str, up: bool, exc: DriverError | None = None) -> None:
        if self._up.get(source, True) != up:
            if up:
                log.info("GPU telemetry %s up again", source)
            else:
                log.warning("GPU telemetry %s down: %s", source, exc)
        self._up[source] = up
        self.metrics.source_up.labels(source=source).set(1 if up else 0)

    async def _run(self) -> None:
        while True:
            await self.read_once()
            await asyncio.sleep(self.options.interval_seconds)

    def describe(self) -> Iterable[Metric]:
        """Return the families without samples."""
        return list(self._families().values())

    def _families(self) -> dict[str, GaugeMetricFamily]:
        families = {
            name: GaugeMetricFamily(name, doc, labels=["gpu", "source"]) for name, doc, _ in GAUGES
        }
        for name, doc in self.available_gauges.values():
            families[name] = GaugeMetricFamily(name, doc)
        return families

    def collect(self) -> Iterable[Metric]:
        """The latest readings of every GPU."""
        families = self._families()
        for name, _, field in GAUGES:
            for tag, gpus in self.readings.items():
                for gpu, values in sorted(gpus.items()):
                    if field in values:
                        families[name].add_metric([gpu, tag], values[field])
        opened = {tag for tag, _ in self.opened}
        for tag, (name, _) in self.available_gauges.items():
            families[name].add_metric([], 1.0 if tag in opened else 0.0)
        return list(families.values())
