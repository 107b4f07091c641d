"""NVML telemetry through nvidia-ml-py: power, temperature, utilisation, memory, power limit.

``NvmlReader.open()`` raises ``Fatal`` with a clear message when the NVML
library or a GPU is missing, so the daemon can log it once and go on without
GPU telemetry.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from drivers.errors import Fatal, Unavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class GpuReading:
    """One GPU's state."""

    index: int
    uuid: str
    power_w: float
    power_limit_w: float
    temperature_c: float
    utilization_percent: float
    memory_used_bytes: int
    memory_total_bytes: int


class NvmlReader:
    """Reads every GPU of this node through NVML; open() first, close() at the end."""

    def __init__(self, nvml: Any | None = None) -> None:
        self._nvml = nvml
        self.count = 0

    def open(self) -> None:
        """Load and initialise NVML; Fatal (with the reason) when there is no NVML or no GPU."""
        try:
            if self._nvml is None:
                import pynvml

                self._nvml = pynvml
            self._nvml.nvmlInit()
            self.count = int(self._nvml.nvmlDeviceGetCount())
        except ImportError as exc:
            raise Fatal("nvml", "nvidia-ml-py is not installed: no GPU telemetry") from exc
        except Exception as exc:  # pynvml raises NVMLError subclasses built at run time
            if type(exc).__name__.startswith("NVMLError"):
                raise Fatal("nvml", f"NVML unavailable ({exc}): no GPU telemetry") from exc
            raise
        if self.count == 0:
            raise Fatal("nvml", "NVML found no GPU: no GPU telemetry")
        log.info("NVML: %d GPU(s)", self.count)

    def read(self) -> list[GpuReading]:
        """One reading per GPU; Unavailable when NVML fails mid-way."""
        nvml = self._nvml
        if nvml is None:
            raise Unavailable("nvml", "not opened")
        out = []
        try:
            for index in range(self.count):
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                out.append(
                    GpuReading(
                        index=index,
                        uuid=str(nvml.nvmlDeviceGetUUID(handle)),
                        power_w=nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0,
                        power_limit_w=nvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000.0,
                        temperature_c=float(
                            nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)
                        ),
                        utilization_percent=float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu),
                        memory_used_bytes=int(memory.used),
                        memory_total_bytes=int(memory.total),
                    )
                )
        except Exception as exc:
            if type(exc).__name__.startswith("NVMLError"):
                raise Unavailable("nvml", str(exc)) from exc
            raise
        return out

    def close(self) -> None:
        """Shut NVML down (idempotent)."""
        if self._nvml is not None and self.count:
            self._nvml.nvmlShutdown()
            self.count = 0
