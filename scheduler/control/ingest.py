"""Where pushed inputs land: the MQTT sink writing into FleetState, and push-device expiry."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

from scheduler.core.model import Event, Reading, Sample
from scheduler.core.state import FleetState
from scheduler.observability.metrics import Metrics


class FleetSink:
    """Writes decoded MQTT messages into FleetState, counts rejects, wakes the loop on news."""

    def __init__(
        self,
        state: FleetState,
        metrics: Metrics,
        *,
        wake: asyncio.Event | None = None,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.state = state
        self.metrics = metrics
        self.wake = wake
        self._wall = wall_clock
        self.samples = 0
        self.prices = 0
        self.events = 0

    def on_sample(self, sample: Sample) -> bool:
        """Record a sample of a known device; False for an unknown one."""
        if sample.device_id not in self.state.devices:
            return False
        self.state.observe(sample)
        self.samples += 1
        return True

    def on_samples(self, samples: list[Sample]) -> list[Sample]:
        """Record a batch of samples; return those of unknown devices."""
        unknown = self.state.observe_many(samples)
        self.samples += len(samples) - len(unknown)
        return unknown

    def on_power_price(self, reading: Reading) -> None:
        """Record the power price and wake the loop so it decides on it now."""
        self.state.observe_market({"power_price_usd_per_mwh": reading})
        self.prices += 1
        if self.wake is not None:
            self.wake.set()

    def on_event(self, event: Event) -> None:
        """Add or replace a demand-response event by id; events already over are dropped."""
        now = self._wall()
        kept = {e.id: e for e in self.state.events if e.end > now}
        kept[event.id] = event
        self.state.set_events(sorted(kept.values(), key=lambda e: (e.start, e.id)))
        self.events += 1
        if self.wake is not None:
            self.wake.set()

    def on_rejected(self, reason: str) -> None:
        """Count one rejected message in wattmux_ingest_rejected_total{reason}."""
        self.metrics.ingest_rejected.labels(reason=reason).inc()


def expire_pushed_sample(
    state: FleetState, device_id: str, max_age_seconds: float, now: float
) -> None:
    """Mark a push-only device unreachable once its last sample is older than max_age_seconds."""
    sample = state.samples.get(device_id)
    status = state.status.get(device_id)
    if status is None or not status.reachable:
        return
    if sample is None or now - sample.observed_at > max_age_seconds:
        state.mark_unreachable(device_id, "no fresh MQTT sample", now)
