"""NVML telemetry through nvidia-ml-py: power, temperature, utilisation, memory, power limit, Xid.

``NvmlReader.open()`` raises ``Fatal`` with a clear message when the NVML
library or a GPU is missing, so the daemon can log it once and go on without
GPU telemetry.  Xid errors arrive as NVML events (critical Xid event type);
each ``read()`` drains the pending ones and counts them per GPU.

``NvmlSource`` is the ``nvml`` entry of the GPU telemetry registry
(``[gpu_telemetry] nvml = true``, or ``[[gpu_telemetry.sources]] driver = "nvml"``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from drivers.errors import Fatal, Unavailable
from drivers.gpu.registry import GpuSourceContext, GpuTelemetryPlugin, GpuValues

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class GpuReading:
    """One GPU's state; ``xid_errors`` counts critical Xid events since open()."""

    index: int
    uuid: str
    power_w: float
    power_limit_w: float
    temperature_c: float
    utilization_percent: float
    memory_used_bytes: int
    memory_total_bytes: int
    xid_errors: int
    last_xid: int | None


def _load() -> Any:
    """Import pynvml (nvidia-ml-py); Fatal when it is not installed."""
    try:
        import pynvml
    except ImportError as exc:
        raise Fatal("nvml", "nvidia-ml-py is not installed: no GPU telemetry") from exc
    return pynvml


class NvmlReader:
    """Reads every GPU of this node through NVML; open() first, close() at the end."""

    def __init__(self, nvml: Any | None = None) -> None:
        self._nvml = nvml
        self.count = 0
        self._handles: list[Any] = []
        self._events: Any | None = None
        self.xid_errors: dict[int, int] = {}
        self.last_xid: dict[int, int] = {}

    def open(self) -> None:
        """Initialise NVML; Fatal (with the reason) when there is no NVML library or no GPU."""
        nvml = self._nvml = self._nvml or _load()
        try:
            nvml.nvmlInit()
            self.count = int(nvml.nvmlDeviceGetCount())
        except nvml.NVMLError as exc:
            raise Fatal("nvml", f"NVML unavailable ({exc}): no GPU telemetry") from exc
        if self.count == 0:
            nvml.nvmlShutdown()
            raise Fatal("nvml", "NVML found no GPU: no GPU telemetry")
        self._handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(self.count)]
        try:
            self._events = nvml.nvmlEventSetCreate()
        except nvml.NVMLError as exc:
            log.warning("NVML events unavailable (%s): Xid errors not counted", exc)
        for index, handle in enumerate(self._handles):
            self.xid_errors[index] = 0
            if self._events is None:
                continue
            try:
                nvml.nvmlDeviceRegisterEvents(
                    handle, nvml.nvmlEventTypeXidCriticalError, self._events
                )
            except nvml.NVMLError as exc:
                log.warning("GPU %d: Xid events not supported (%s)", index, exc)
        log.info("NVML: %d GPU(s)", self.count)

    def _drain_xid(self) -> None:
        nvml = self._nvml
        if self._events is None or nvml is None:
            return
        while True:
            try:
                event = nvml.nvmlEventSetWait_v2(self._events, 0)
            except nvml.NVMLError_Timeout:
                return
            index = int(nvml.nvmlDeviceGetIndex(event.device))
            self.xid_errors[index] = self.xid_errors.get(index, 0) + 1
            self.last_xid[index] = int(event.eventData)
            log.warning("GPU %d: Xid %d", index, event.eventData)

    def read(self) -> list[GpuReading]:
        """One reading per GPU; Unavailable when NVML fails mid-way."""
        nvml = self._nvml
        if nvml is None or not self.count:
            raise Unavailable("nvml", "not opened")
        out = []
        try:
            self._drain_xid()
            for index, handle in enumerate(self._handles):
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                temperature = nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)
                out.append(
                    GpuReading(
                        index=index,
                        uuid=str(nvml.nvmlDeviceGetUUID(handle)),
                        power_w=nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0,
                        power_limit_w=nvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000.0,
                        temperature_c=float(temperature),
                        utilization_percent=float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu),
                        memory_used_bytes=int(memory.used),
                        memory_total_bytes=int(memory.total),
                        xid_errors=self.xid_errors.get(index, 0),
                        last_xid=self.last_xid.get(index),
                    )
                )
        except nvml.NVMLError as exc:
            raise Unavailable("nvml", str(exc)) from exc
        return out

    def close(self) -> None:
        """Free the event set and shut NVML down (idempotent)."""
        nvml = self._nvml
        if nvml is None or not self.count:
            return
        if self._events is not None:
            nvml.nvmlEventSetFree(self._events)
            self._events = None
        nvml.nvmlShutdown()
        self.count = 0


class NvmlSourceOptions(BaseModel):
    """The GPUs of this host, read through NVML; nothing to set."""

    model_config = ConfigDict(extra="forbid")

    driver: Literal["nvml"] = "nvml"


def values_of(reading: GpuReading) -> GpuValues:
    """The fields of one reading (``last_xid`` only once there was one)."""
    values = {
        "power_w": reading.power_w,
        "power_limit_w": reading.power_limit_w,
        "temperature_c": reading.temperature_c,
        "utilization_percent": reading.utilization_percent,
        "memory_used_bytes": float(reading.memory_used_bytes),
        "memory_total_bytes": float(reading.memory_total_bytes),
        "xid_errors": float(reading.xid_errors),
    }
    if reading.last_xid is not None:
        values["last_xid"] = float(reading.last_xid)
    return values


class NvmlSource:
    """The GPU telemetry source of this host's GPUs: an NvmlReader, read in a thread."""

    name = "nvml"

    def __init__(self, reader: NvmlReader | None = None) -> None:
        self.reader = reader if reader is not None else NvmlReader()

    async def open(self) -> None:
        """Open NVML; Fatal when there is no NVML library or no GPU."""
        self.reader.open()

    async def read(self) -> Mapping[str, GpuValues]:
        """Each GPU's values by UUID (NVML blocks: read in a thread)."""
        readings = await asyncio.to_thread(self.reader.read)
        return {reading.uuid: values_of(reading) for reading in readings}

    async def close(self) -> None:
        """Shut NVML down."""
        self.reader.close()


def nvml_sources(options: NvmlSourceOptions, context: GpuSourceContext) -> Sequence[NvmlSource]:
    """The one NVML source of this host."""
    return [NvmlSource()]


PLUGINS = (
    GpuTelemetryPlugin(
        tag="nvml",
        options=NvmlSourceOptions,
        factory=nvml_sources,
        available_gauge=(
            "wattmux_gpu_nvml_available",
            "1 if NVML was opened on this host, else 0.",
        ),
    ),
)
