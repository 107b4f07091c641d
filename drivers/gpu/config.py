"""The [gpu] section: local NVML and dcgm-exporter endpoints to read GPU telemetry from."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class GpuTelemetryOptions(BaseModel):
    """Where GPU telemetry comes from; all optional."""

    model_config = ConfigDict(extra="forbid")

    nvml: bool = Field(False, description="read this host's GPUs through NVML")
    dcgm_urls: list[str] = Field(
        default_factory=list, description="dcgm-exporter /metrics URLs to scrape"
    )
    interval_seconds: float = Field(10.0, gt=0, le=3600, description="read every this often")
    timeout_seconds: float = Field(5.0, gt=0, le=60)
