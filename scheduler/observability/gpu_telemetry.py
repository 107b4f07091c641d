"""GPU telemetry in the daemon: NVML and dcgm-exporter readings exported as Prometheus gauges.

A missing NVML library or GPU is said once at start (``wattmux_gpu_nvml_available`` 0)
and the daemon goes on; a failing dcgm-exporter is ``wattmux_source_up{source="dcgm:<url>"}`` 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from types import TracebackType
from typing import Self

import httpx
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from drivers.errors import DriverError, Fatal
from drivers.gpu.config import GpuTelemetryOptions
from drivers.gpu.dcgm import DcgmScraper
from drivers.gpu.nvml import GpuReading, NvmlReader
from scheduler.observability.metrics import Metrics

log = logging.getLogger(__name__)

# (metric, help, NVML attribute, dcgm field)
GAUGES = (
    ("wattmux_gpu_power_watts", "GPU power draw.", "power_w", "power_w"),
    ("wattmux_gpu_temperature_celsius", "GPU temperature.", "temperature_c", "temperature_c"),
    (
        "wattmux_gpu_utilization_percent",
        "GPU utilisation.",
        "utilization_percent",
        "utilization_percent",
    ),
)


class GpuTelemetry(Collector):
    """Reads GPUs every interval in its own task; the registry reads the latest at scrape time."""

    def __init__(
        self,
        options: GpuTelemetryOptions,
        metrics: Metrics,
        http: httpx.AsyncClient,
        nvml: NvmlReader | None = None,
    ) -> None:
        self.options = options
        self.metrics = metrics
        self.nvml = nvml if nvml is not None else (NvmlReader() if options.nvml else None)
        self.nvml_available = False
        self.scrapers = [
            DcgmScraper(url, http, options.timeout_seconds) for url in options.dcgm_urls
        ]
        self.nvml_readings: list[GpuReading] = []
        self.dcgm_readings: dict[str, dict[str, float]] = {}
        self._task: asyncio.Task[None] | None = None
        self._up: dict[str, bool] = {}
        metrics.registry.register(self)

    async def __aenter__(self) -> Self:
        """Open NVML (saying plainly when it cannot) and start reading."""
        if self.nvml is not None:
            try:
                self.nvml.open()
                self.nvml_available = True
            except Fatal as exc:
                log.warning("%s; the daemon goes on without it", exc)
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="gpu-telemetry.read")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop reading and close NVML."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.nvml is not None and self.nvml_available:
            self.nvml.close()

    async def read_once(self) -> None:
        """Read NVML (in a thread: it blocks) and scrape every dcgm-exporter once."""
        if self.nvml is not None and self.nvml_available:
            try:
                self.nvml_readings = await asyncio.to_thread(self.nvml.read)
                self._set_up("nvml", True)
            except DriverError as exc:
                self._set_up("nvml", False, exc)
        for scraper in self.scrapers:
            try:
                gpus = await scraper.scrape()
            except DriverError as exc:
                self._set_up(f"dcgm:{scraper.url}", False, exc)
                continue
            self._set_up(f"dcgm:{scraper.url}", True)
            self.dcgm_readings.update(gpus)

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
            name: GaugeMetricFamily(name, doc, labels=["gpu", "source"])
            for name, doc, _, _ in GAUGES
        }
        families["wattmux_gpu_nvml_available"] = GaugeMetricFamily(
            "wattmux_gpu_nvml_available", "1 if NVML was opened on this host, else 0."
        )
        return families

    def collect(self) -> Iterable[Metric]:
        """The latest readings of every GPU."""
        families = self._families()
        for name, _, attribute, field in GAUGES:
            for reading in self.nvml_readings:
                families[name].add_metric([reading.uuid, "nvml"], getattr(reading, attribute))
            for gpu, values in sorted(self.dcgm_readings.items()):
                if field in values:
                    families[name].add_metric([gpu, "dcgm"], values[field])
        families["wattmux_gpu_nvml_available"].add_metric([], 1.0 if self.nvml_available else 0.0)
        return list(families.values())
