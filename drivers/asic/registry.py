"""The ASIC firmware seam: which driver serves which ``driver`` tag of a device's options.

Each firmware declares its entry in its own module (``PLUGINS = (AsicPlugin(...),)``):
the tag, its options model (a pydantic model with ``driver: Literal[tag]``), the
factory of its driver, the VERSION keys ``wattmux discover`` recognises it by and,
where one exists, its simulator (``"module:attribute"``, a ``SimulatorFactory``
that ``drivers.sim.site.SimSite`` imports).  Built-ins are the modules of
``drivers.asic``; installed packages add firmwares through the entry point group
``wattmux.asic_drivers``.  A device whose options leave ``driver`` out is a cgminer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from drivers.base import MinerControl, TelemetrySource
from drivers.registry import Plugin, Registry
from scheduler.core.model import Pool

DEFAULT_DRIVER = "cgminer"


class AsicSettings(Protocol):
    """What every firmware's options model provides."""

    @property
    def driver(self) -> str:
        """The tag of the firmware entry."""
        ...

    @property
    def port(self) -> int:
        """The API port a device listens on (the config's address:port uniqueness)."""
        ...

    def model_dump_json(self) -> str:
        """The settings as JSON (pydantic): devices with equal settings share one driver."""
        ...


class AsicDriver(TelemetrySource, MinerControl, Protocol):
    """What a firmware factory returns: collect() and apply()."""


class AsicFactory(Protocol):
    """Builds the driver of one options block (one instance serves every device sharing it)."""

    def __call__(
        self,
        pools: Mapping[str, Pool],
        options: Any,
        *,
        concurrency: int,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
    ) -> AsicDriver:
        """The driver for ``options``."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class AsicPlugin(Plugin[AsicFactory]):
    """One ASIC firmware: tag, options model, driver factory, discovery keys, simulator."""

    version_keys: tuple[str, ...] = ()
    """VERSION row keys that name this firmware (``LUXminer``); first match wins in discovery."""


ASIC_DRIVERS: Registry[AsicPlugin] = Registry(
    "ASIC driver", "wattmux.asic_drivers", AsicPlugin, ("drivers.asic",)
)


def create_asic_driver(
    pools: Mapping[str, Pool],
    options: AsicSettings,
    *,
    concurrency: int,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> AsicDriver:
    """The driver for one options block (one instance serves every device that shares it)."""
    factory = ASIC_DRIVERS.get(options.driver).factory
    return factory(pools, options, concurrency=concurrency, clock=clock, sleep=sleep)
