"""FleetState: the latest observation per device and per market input, with ages.

Inputs write into it; the loop takes an immutable Snapshot of it each tick.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from types import MappingProxyType

from scheduler.core.model import (
    MARKET_INPUTS,
    Device,
    DeviceStatus,
    Event,
    Lease,
    MarketState,
    QueueDemand,
    Reading,
    Sample,
    Snapshot,
    Workload,
)

_REACHABLE = DeviceStatus(reachable=True)  # immutable, shared by every reachable device


class FleetState:
    """Latest samples, reachability, market readings and events; snapshot() freezes a view."""

    def __init__(
        self, devices: Iterable[Device], pool_fee: float = 0.0, power_cap_w: float | None = None
    ) -> None:
        self.devices: dict[str, Device] = {d.id: d for d in devices}
        self.pool_fee = pool_fee
        self.power_cap_w = power_cap_w
        self.samples: dict[str, Sample] = {}
        self.status: dict[str, DeviceStatus] = {
            d: DeviceStatus(reachable=False, last_error="not polled yet") for d in self.devices
        }
        self.market = MarketState()
        self.events: tuple[Event, ...] = ()
        self.desired: dict[str, Workload] = {}
        self.drift: dict[str, Drift] = {}  # devices whose last command is not confirmed
        self.queues: dict[str, QueueDemand] = {}
        self.pools_up: dict[str, bool] = {}
        self.leases: tuple[Lease, ...] = ()

    def set_pool_up(self, pool: str, up: bool) -> None:
        """Record whether a mining pool is reachable (policies fail over from pools that are down)."""
        self.pools_up[pool] = up

    def observe(self, sample: Sample) -> None:
        """Record a fresh sample; the device is reachable."""
        if sample.device_id not in self.devices:
            raise KeyError(f"unknown device {sample.device_id!r}")
        self.samples[sample.device_id] = sample
        self.status[sample.device_id] = _REACHABLE

    def observe_many(self, samples: Iterable[Sample]) -> list[Sample]:
        """Record many fresh samples (an MQTT batch); return the ones of unknown devices."""
        reachable = DeviceStatus(reachable=True)
        devices, latest, status = self.devices, self.samples, self.status
        unknown = []
        for sample in samples:
            if sample.device_id in devices:
                latest[sample.device_id] = sample
                status[sample.device_id] = reachable
            else:
                unknown.append(sample)
        return unknown

    def mark_unreachable(self, device_id: str, error: str, at: float) -> None:
        """Record that a device could not be read; its last sample is kept but not trusted."""
        if device_id not in self.devices:  # removed by a reload while its poll ran
            return
        self.status[device_id] = DeviceStatus(reachable=False, last_error=error, last_error_at=at)

    def observe_market(self, readings: Mapping[str, Reading]) -> None:
        """Record market readings keyed by MarketState field name."""
        unknown = set(readings) - set(MARKET_INPUTS)
        if unknown:
            raise KeyError(f"unknown market inputs {sorted(unknown)}")
        self.market = dataclasses.replace(self.market, **readings)

    def observe_queues(self, demands: Mapping[str, QueueDemand]) -> None:
        """Record the latest demand of AI queues keyed by queue name."""
        self.queues.update(demands)

    def forget_queues(self, names: Iterable[str]) -> None:
        """Drop the demand of queues that could not be read: unknown demand earns nothing."""
        for name in names:
            self.queues.pop(name, None)

    def set_leases(self, leases: Iterable[Lease]) -> None:
        """Replace the AI leases of the GPU nodes (from the [[leases]] configuration)."""
        self.leases = tuple(leases)

    def set_events(self, events: Iterable[Event]) -> None:
        """Replace the set of known demand-response events."""
        self.events = tuple(events)

    def snapshot(self, now: float, wall: datetime | None = None) -> Snapshot:
        """An immutable view for the policy; only reachable devices' samples are included."""
        samples = {
            device_id: sample
            for device_id, sample in self.samples.items()
            if self.status[device_id].reachable
        }
        return Snapshot(
            now=now,
            wall=wall or datetime.now(UTC),
            devices=MappingProxyType(dict(self.devices)),
            samples=MappingProxyType(samples),
            status=MappingProxyType(dict(self.status)),
            market=self.market,
            pool_fee=self.pool_fee,
            events=self.events,
            current=MappingProxyType({d: s.workload for d, s in samples.items()}),
            power_cap_w=self.power_cap_w,
            queues=MappingProxyType(dict(self.queues)),
            pools_up=MappingProxyType(dict(self.pools_up)),
            leases=self.leases,
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Drift:
    """A device that did not confirm the workload it was commanded to (verify after write)."""

    requested: Workload
    observed: Workload | None
    attempts: int
    since: float
    detail: str
    retry_at: float | None = None  # monotonic time of the next try; None while one runs
