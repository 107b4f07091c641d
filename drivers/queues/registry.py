"""The queue backend seam: which driver serves which ``driver`` tag of a ``[[queues]]`` entry.

Each backend module declares its entry (``PLUGINS = (QueuePlugin(...),)``): the
tag, its options model (``driver: Literal[tag]``), the factory of the driver that
serves every queue sharing one configuration (one cluster, one endpoint) and
the option fields that may differ between those queues (Slurm: ``partition``).
Built-ins are the modules of ``drivers.queues``; installed packages add backends
through the entry point group ``wattmux.queue_backends``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from drivers.base import MinerControl, QueueControl, TelemetrySource
from drivers.registry import Plugin, Registry
from drivers.secrets import settings_key
from scheduler.core.model import Pool


class QueueSettings(Protocol):
    """What every backend's options model provides."""

    @property
    def driver(self) -> str:
        """The tag of the backend entry."""
        ...

    def model_dump_json(self, *, exclude: set[str] | None = None) -> str:
        """The settings as JSON (pydantic), the per-queue fields left out to group queues."""
        ...


class QueueNodeDriver(QueueControl, TelemetrySource, MinerControl, Protocol):
    """A queue driver that also reads and moves the GPU nodes serving its queues."""


@runtime_checkable
class Closable(Protocol):
    """A driver holding a resource (an HTTP client) to close when the daemon stops."""

    async def aclose(self) -> None:
        """Release it."""
        ...


@dataclass(frozen=True, slots=True)
class QueueMember:
    """One configured queue a driver serves: its own options and whether jobs may be requeued."""

    options: Any
    preemption_allowed: bool = False


class QueueFactory(Protocol):
    """Builds the driver of the queues that share one configuration (first member's options)."""

    def __call__(
        self,
        options: Any,
        queues: Mapping[str, QueueMember],
        pools: Mapping[str, Pool],
        *,
        clock: Callable[[], float],
    ) -> QueueNodeDriver:
        """The driver serving ``queues``."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class QueuePlugin(Plugin[QueueFactory]):
    """One queue backend: tag, options model, driver factory, per-queue option fields."""

    per_queue_fields: frozenset[str] = frozenset()
    """Option fields that differ between queues one driver serves (left out when grouping)."""


QUEUE_BACKENDS: Registry[QueuePlugin] = Registry(
    "queue driver", "wattmux.queue_backends", QueuePlugin, ("drivers.queues",)
)


def driver_key(options: QueueSettings) -> str:
    """Queues whose options give the same key share one driver (one cluster, one endpoint)."""
    entry = QUEUE_BACKENDS.get(options.driver)
    return settings_key(options, exclude=set(entry.per_queue_fields))
