"""The [gpu_telemetry] section: where GPU telemetry comes from, and how often it is read.

``nvml = true`` and ``dcgm_urls = [...]`` are short for entries of the built-in
sources; ``[[gpu_telemetry.sources]]`` tables name any registered source by its
``driver`` tag and are validated by that entry's options model
(``drivers.gpu.registry``)::

    [gpu_telemetry]
    nvml = true                                      # = { driver = "nvml" }
    dcgm_urls = ["http://gpunode1:9400/metrics"]     # = { driver = "dcgm", url = "..." } each

    [[gpu_telemetry.sources]]
    driver = "dcgm"
    url = "http://gpunode2:9400/metrics"
"""

from __future__ import annotations

from typing import Annotated, cast

from pydantic import BaseModel, ConfigDict, Field

from drivers.gpu.registry import GPU_TELEMETRY, GpuSourceSettings
from drivers.secrets import MaskedUrl

GpuSourceOptions = Annotated[GpuSourceSettings, GPU_TELEMETRY.validator()]
"""One ``[[gpu_telemetry.sources]]`` table, validated by the entry its ``driver`` names."""


class GpuTelemetryOptions(BaseModel):
    """Where GPU telemetry comes from; all optional."""

    model_config = ConfigDict(extra="forbid")

    nvml: bool = Field(False, description="read this host's GPUs through NVML")
    dcgm_urls: list[MaskedUrl] = Field(
        default_factory=list, description="dcgm-exporter /metrics URLs to scrape"
    )
    sources: list[GpuSourceOptions] = Field(
        default_factory=list,
        description="more sources, each a table naming its registered driver tag",
    )
    interval_seconds: float = Field(10.0, gt=0, le=3600, description="read every this often")
    timeout_seconds: float = Field(5.0, gt=0, le=60)

    def entries(self) -> list[GpuSourceSettings]:
        """Every source entry in read order: ``nvml``, then ``dcgm_urls``, then ``sources``."""
        shorthand: list[dict[str, object]] = [{"driver": "nvml"}] if self.nvml else []
        shorthand += [{"driver": "dcgm", "url": url} for url in self.dcgm_urls]
        return [
            *(cast(GpuSourceSettings, GPU_TELEMETRY.validate_options(e)) for e in shorthand),
            *self.sources,
        ]
