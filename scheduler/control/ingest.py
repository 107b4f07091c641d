"""Where pushed inputs land: the MQTT sink writing into FleetState, and push-device expiry."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from drivers.telemetry.messages import MessageRejected
from scheduler.core.model import Event, Reading, Sample
from scheduler.core.state import FleetState
from scheduler.observability.metrics import Metrics
from scheduler.store.prices import PushedPrice

log = logging.getLogger(__name__)

POWER_PRICE = "power_price_usd_per_mwh"


class FleetSink:
    """Writes decoded MQTT messages into FleetState, counts rejects, wakes the loop on news.

    ``persist`` (set by the daemon once its store is open) keeps each accepted
    power price with its interval, so that ``restore`` brings it back after a
    restart while it is still valid.  At most ``max_events`` DR events (active or
    future) are kept; a new one beyond that is refused (``too_many_events``).
    """

    def __init__(
        self,
        state: FleetState,
        metrics: Metrics,
        *,
        wake: asyncio.Event | None = None,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        persist: Callable[[PushedPrice], None] | None = None,
        max_events: int = 1000,
    ) -> None:
        self.state = state
        self.metrics = metrics
        self.wake = wake
        self._wall = wall_clock
        self.persist = persist
        self.max_events = max_events
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

    def on_power_price(self, reading: Reading, valid_from: datetime, valid_until: datetime) -> None:
        """Record the power price, keep it in the store, and wake the loop to decide on it now."""
        self.state.observe_market({POWER_PRICE: reading})
        self.prices += 1
        if self.persist is not None:
            price = PushedPrice(
                POWER_PRICE, reading.value, reading.source, valid_from, valid_until, self._wall()
            )
            try:
                self.persist(price)
            except Exception:  # the price is in force; only its survival of a restart is lost
                log.exception("the power price could not be kept in the store")
        if self.wake is not None:
            self.wake.set()

    def restore(self, price: PushedPrice, now: float) -> bool:
        """Bring back a stored power price while its interval has not ended; True if used.

        Its age is the time since it arrived (wall clock), so the Guard's
        ``stale_price_seconds`` counts as if the daemon had never stopped.
        """
        wall = self._wall()
        if price.input != POWER_PRICE or price.interval_end <= wall:
            return False
        age = max(0.0, (wall - price.received_at).total_seconds())
        self.state.observe_market({POWER_PRICE: Reading(price.value, now - age, price.source)})
        log.info(
            "power price %.2f USD/MWh (%s) restored from the store: valid until %s,"
            " received %.0f s ago",
            price.value,
            price.source,
            price.interval_end.isoformat(),
            age,
        )
        return True

    def on_event(self, event: Event) -> None:
        """Add or replace a demand-response event by id; events already over are dropped.

        Raises MessageRejected (``too_many_events``) when ``max_events`` events are kept
        and this is a new one.
        """
        now = self._wall()
        kept = {e.id: e for e in self.state.events if e.end > now}
        if event.id not in kept and len(kept) >= self.max_events:
            raise MessageRejected(
                "events",
                "too_many_events",
                f"{len(kept)} DR events are kept (active or future), the limit"
                f" (mqtt.max_events); event {event.id!r} refused",
            )
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
