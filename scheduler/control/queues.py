"""AI queues in the daemon: one queue driver per cluster, demand priced by contract or spot rate.

``build_queues(config)`` groups the ``[[queues]]`` that share a driver
configuration (one Slurm cluster, one webhook endpoint...) into one driver, built
by the queue backend its ``driver`` tag names (``drivers.queues.registry``),
which then controls and reads the ``[[gpu_nodes]]`` that serve them.  The
``PricedQueue`` in front of each driver applies the configured pricing, so a
``QueueDemand`` in the snapshot always carries the rate the economics use.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from drivers.base import QueueControl
from drivers.queues.registry import (
    QUEUE_BACKENDS,
    Closable,
    QueueMember,
    QueueNodeDriver,
    driver_key,
)
from scheduler.config.devices import pools_of
from scheduler.config.schema import QueueConfig, WattmuxConfig
from scheduler.core.model import QueueDemand


@runtime_checkable
class QueueSource(Protocol):
    """What the control loop polls each tick: the demand of one or more named queues."""

    name: str
    queue_names: tuple[str, ...]

    async def demand(self) -> dict[str, QueueDemand]:
        """Demand per queue name, priced; raise DriverError when the queue cannot be read."""
        ...


class PricedQueue:
    """A queue driver's demand with each queue's configured pricing applied."""

    def __init__(self, name: str, driver: QueueControl, queues: Mapping[str, QueueConfig]) -> None:
        self.name = name
        self.driver = driver
        self.configs = dict(queues)
        self.queue_names = tuple(queues)

    async def demand(self) -> dict[str, QueueDemand]:
        """The driver's demand for our queues, with the contract rate where pricing is contract."""
        raw = await self.driver.demand()
        out = {}
        for name, demand in raw.items():
            config = self.configs.get(name)
            if config is None:
                continue
            rate = (
                config.contract_rate_usd_per_gpu_hour
                if config.pricing == "contract"
                else demand.rate_usd_per_gpu_hour
            )
            out[name] = dataclasses.replace(
                demand,
                rate_usd_per_gpu_hour=rate,
                preemption_allowed=config.preemption_allowed,
            )
        return out


@dataclass
class Queues:
    """The queue drivers of a site: per GPU node its driver, and the sources the loop polls."""

    per_node: dict[str, QueueNodeDriver] = field(default_factory=dict)
    sources: list[PricedQueue] = field(default_factory=list)

    async def aclose(self) -> None:
        """Close the drivers that hold an HTTP client (webhook, Kubernetes)."""
        for source in self.sources:
            if isinstance(source.driver, Closable):
                await source.driver.aclose()


def build_queues(config: WattmuxConfig, clock: Callable[[], float] = time.monotonic) -> Queues:
    """One driver per distinct queue-driver configuration; each GPU node gets its queues' driver."""
    pools = pools_of(config)
    groups: dict[str, list[QueueConfig]] = {}
    for queue in config.queues:
        groups.setdefault(driver_key(queue.options), []).append(queue)
    result = Queues()
    by_queue: dict[str, QueueNodeDriver] = {}
    for members in groups.values():
        first = members[0].options
        driver = QUEUE_BACKENDS.get(first.driver).factory(
            first,
            {q.name: QueueMember(q.options, q.preemption_allowed) for q in members},
            pools,
            clock=clock,
        )
        name = ",".join(q.name for q in members)
        result.sources.append(PricedQueue(name, driver, {q.name: q for q in members}))
        for queue in members:
            by_queue[queue.name] = driver
    for node in config.gpu_nodes:
        result.per_node[node.id] = by_queue[node.queues[0]]
    return result
