"""The GPU telemetry seam: which source serves which ``driver`` tag of a ``[gpu_telemetry]`` entry.

Each source module declares its entry (``PLUGINS = (GpuTelemetryPlugin(...),)``):
the tag, its options model (``driver: Literal[tag]``) and a factory that turns
one validated entry into the sources it reads (``GpuTelemetrySource``).  The tag
is the ``source`` label of the ``wattmux_gpu_*`` gauges; an entry may also name
a gauge saying whether its sources could be opened on this host
(``wattmux_gpu_nvml_available``).  Built-ins are the modules of ``drivers.gpu``
(``nvml``, ``dcgm``); installed packages add sources through the entry point
group ``wattmux.gpu_telemetry``.  A secret among the options is a ``SecretStr``
(``/v1/config`` shows the effective configuration).

A new source needs one module: its options model, its source class and
``PLUGINS``; ``nvml = true`` and ``dcgm_urls`` in ``drivers.gpu.config`` are
short for entries of the built-ins, every other source is a
``[[gpu_telemetry.sources]]`` table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from drivers.registry import Plugin, Registry

GpuValues = Mapping[str, float]
"""One GPU's values by field: ``power_w``, ``temperature_c``, ``utilization_percent``...

Those three are exported as gauges; a source leaves out a field it cannot read.
"""


class GpuSourceSettings(Protocol):
    """What every source's options model provides."""

    @property
    def driver(self) -> str:
        """The tag of the source entry."""
        ...


class GpuTelemetrySource(Protocol):
    """One place GPU readings come from (this host's NVML, one dcgm-exporter...)."""

    @property
    def name(self) -> str:
        """The ``source`` label of ``wattmux_source_up`` (``nvml``, ``dcgm:<url>``)."""
        ...

    async def open(self) -> None:
        """Get ready; a DriverError (``Fatal``) says it cannot be read on this host at all."""
        ...

    async def read(self) -> Mapping[str, GpuValues]:
        """The values of each GPU by its ``gpu`` label; a DriverError when it cannot now."""
        ...

    async def close(self) -> None:
        """Release what open() took (called only after a successful open())."""
        ...


@dataclass(frozen=True, slots=True)
class GpuSourceContext:
    """What a source factory may use besides its options."""

    http: httpx.AsyncClient
    """The shared HTTP client (owned and closed by the caller)."""
    timeout_seconds: float = 5.0
    """``[gpu_telemetry] timeout_seconds``: the deadline of one read."""


class GpuSourceFactory(Protocol):
    """Builds the sources of one ``[gpu_telemetry]`` entry."""

    def __call__(self, options: Any, context: GpuSourceContext) -> Sequence[GpuTelemetrySource]:
        """The sources ``options`` asks for."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class GpuTelemetryPlugin(Plugin[GpuSourceFactory]):
    """One GPU telemetry source: tag, options model, factory, optional availability gauge."""

    available_gauge: tuple[str, str] | None = None
    """(name, help) of a gauge exported always: 1 once a source of this tag opened, else 0."""


GPU_TELEMETRY: Registry[GpuTelemetryPlugin] = Registry(
    "GPU telemetry driver", "wattmux.gpu_telemetry", GpuTelemetryPlugin, ("drivers.gpu",)
)


def build_gpu_sources(
    entries: Sequence[GpuSourceSettings], context: GpuSourceContext
) -> list[tuple[str, GpuTelemetrySource]]:
    """(tag, source) of every entry, in order."""
    sources: list[tuple[str, GpuTelemetrySource]] = []
    for entry in entries:
        plugin = GPU_TELEMETRY.get(entry.driver)
        sources.extend((plugin.tag, source) for source in plugin.factory(entry, context))
    return sources
