"""dcgm-exporter scrape: GPU power, temperature, utilisation, memory and Xid from Prometheus text.

``DcgmSource`` is the ``dcgm`` entry of the GPU telemetry registry (each URL of
``[gpu_telemetry] dcgm_urls``, or ``[[gpu_telemetry.sources]] driver = "dcgm"``
with its ``url``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Literal

import httpx
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel, ConfigDict, Field

from drivers.errors import MalformedReply, Timeout, Unavailable
from drivers.gpu.registry import GpuSourceContext, GpuTelemetryPlugin, GpuValues
from drivers.secrets import MaskedUrl

# dcgm-exporter metric -> field of the per-GPU dict
FIELDS: Mapping[str, str] = MappingProxyType(
    {
        "DCGM_FI_DEV_POWER_USAGE": "power_w",
        "DCGM_FI_DEV_GPU_TEMP": "temperature_c",
        "DCGM_FI_DEV_GPU_UTIL": "utilization_percent",
        "DCGM_FI_DEV_FB_USED": "memory_used_mib",
        "DCGM_FI_DEV_FB_FREE": "memory_free_mib",
        "DCGM_FI_DEV_XID_ERRORS": "last_xid",
        "DCGM_FI_DEV_POWER_MGMT_LIMIT": "power_limit_w",
    }
)


def parse_dcgm(text: str, source: str = "dcgm") -> dict[str, dict[str, float]]:
    """Per-GPU values keyed by ``<Hostname>/<UUID>`` from dcgm-exporter's /metrics text."""
    gpus: dict[str, dict[str, float]] = {}
    try:
        for family in text_string_to_metric_families(text):
            field = FIELDS.get(family.name)
            if field is None:
                continue
            for sample in family.samples:
                key = f"{sample.labels.get('Hostname', '')}/{sample.labels.get('UUID', sample.labels.get('gpu', '?'))}"
                gpus.setdefault(key, {})[field] = float(sample.value)
    except ValueError as exc:
        raise MalformedReply(source, f"not Prometheus text: {exc}") from exc
    if not gpus:
        raise MalformedReply(source, "no DCGM_FI_DEV_* metrics in the scrape")
    return gpus


class DcgmScraper:
    """Scrapes one dcgm-exporter endpoint with an injected httpx.AsyncClient."""

    def __init__(self, url: str, client: httpx.AsyncClient, timeout_seconds: float = 5.0) -> None:
        self.url = url
        self.client = client
        self.timeout_seconds = timeout_seconds

    async def scrape(self) -> dict[str, dict[str, float]]:
        """Per-GPU values, or a DriverError."""
        try:
            response = await self.client.get(self.url, timeout=self.timeout_seconds)
        except httpx.TimeoutException as exc:
            raise Timeout(self.url, "dcgm-exporter did not answer in time") from exc
        except httpx.HTTPError as exc:
            raise Unavailable(self.url, str(exc)) from exc
        if response.status_code != 200:
            raise Unavailable(self.url, f"HTTP {response.status_code}")
        return parse_dcgm(response.text, self.url)


class DcgmSourceOptions(BaseModel):
    """One dcgm-exporter to scrape."""

    model_config = ConfigDict(extra="forbid")

    driver: Literal["dcgm"] = "dcgm"
    url: MaskedUrl = Field(description="the dcgm-exporter /metrics URL")


class DcgmSource:
    """The GPU telemetry source of one dcgm-exporter; GPUs keyed ``<Hostname>/<UUID>``."""

    def __init__(self, scraper: DcgmScraper) -> None:
        self.scraper = scraper
        self.name = f"dcgm:{scraper.url}"

    async def open(self) -> None:
        """Nothing to open: each read is one HTTP request."""

    async def read(self) -> Mapping[str, GpuValues]:
        """One scrape."""
        return await self.scraper.scrape()

    async def close(self) -> None:
        """Nothing to close: the HTTP client is the caller's."""


def dcgm_sources(options: DcgmSourceOptions, context: GpuSourceContext) -> Sequence[DcgmSource]:
    """The source of one dcgm-exporter URL."""
    return [DcgmSource(DcgmScraper(options.url, context.http, context.timeout_seconds))]


PLUGINS = (GpuTelemetryPlugin(tag="dcgm", options=DcgmSourceOptions, factory=dcgm_sources),)
