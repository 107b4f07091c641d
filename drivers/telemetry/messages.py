"""Decoding and validation of the MQTT payloads (msgspec; see the README for why).

Every rejection raises ``MessageRejected`` with a machine-readable reason:
``oversized``, ``malformed`` (not JSON or wrong types), ``out_of_range``,
``stale`` (older than allowed), ``future`` (timestamp ahead of our clock; a
price interval that starts, or a DR event that starts, further ahead than
allowed), ``unknown_workload``.  Nothing here does I/O; the clocks are passed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import msgspec

from drivers.bounds import json_problem
from drivers.errors import DriverError
from scheduler.core.model import Event, Reading, Sample, Workload

REJECT_REASONS = (
    "oversized",
    "malformed",
    "out_of_range",
    "stale",
    "future",
    "unknown_workload",
    "unknown_device",
    "unknown_topic",
    "expired",
    "too_many_events",
)


class MessageRejected(DriverError):
    """A message was refused; ``reason`` is one of REJECT_REASONS."""

    def __init__(self, source: str, reason: str, message: str) -> None:
        super().__init__(source, message)
        self.reason = reason


class SampleMessage(msgspec.Struct, frozen=True):
    """One device sample as published: wall time ``ts`` in Unix seconds."""

    ts: float
    power_w: float
    workload: str
    hashrate_hs: float = 0.0
    temperature_c: float | None = None
    pool_url: str | None = None
    device_id: str | None = None


class PriceMessage(msgspec.Struct, frozen=True):
    """A power price for one settlement interval."""

    usd_per_mwh: float
    interval_start: datetime
    interval_end: datetime
    source: str = "mqtt"


class EventMessage(msgspec.Struct, frozen=True):
    """A demand-response event: cap the site at target_kw or shed reduction_kw."""

    id: str
    start: datetime
    end: datetime
    target_kw: float | None = None
    reduction_kw: float | None = None
    priority: int = 0


@dataclass(frozen=True, slots=True)
class Limits:
    """What a plausible message looks like."""

    max_payload_bytes: int = 1 << 20
    max_sample_age_seconds: float = 60.0
    max_clock_skew_seconds: float = 5.0
    max_power_w: float = 100_000.0
    max_hashrate_hs: float = 1e16
    min_temperature_c: float = -40.0
    max_temperature_c: float = 150.0
    price_floor_usd_per_mwh: float = -251.0
    price_cap_usd_per_mwh: float = 5000.0
    max_event_kw: float = 10_000_000.0
    max_price_lead_seconds: float = 300.0  # a price interval may start at most this far ahead
    max_event_lead_seconds: float = 7 * 86_400.0  # a DR event may start at most this far ahead


_SAMPLE = msgspec.json.Decoder(SampleMessage)
_BATCH = msgspec.json.Decoder(list[SampleMessage])
_PRICE = msgspec.json.Decoder(PriceMessage)
_EVENT = msgspec.json.Decoder(EventMessage)


class Decoder:
    """Turns payloads into Samples, Readings and Events, or raises MessageRejected."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._workloads: dict[str, Workload] = {}

    def _check_size(self, source: str, payload: bytes) -> None:
        if len(payload) > self.limits.max_payload_bytes:
            raise MessageRejected(
                source,
                "oversized",
                f"{len(payload)} bytes > limit {self.limits.max_payload_bytes}",
            )
        problem = json_problem(payload)  # before msgspec: no depth or digit it cannot take
        if problem is not None:
            raise MessageRejected(source, "malformed", f"payload {problem}")

    def _workload(self, source: str, text: str) -> Workload:
        workload = self._workloads.get(text)
        if workload is None:
            try:
                workload = Workload.parse(text)
            except ValueError as exc:
                raise MessageRejected(source, "unknown_workload", str(exc)) from None
            if len(self._workloads) < 4096:
                self._workloads[text] = workload
        return workload

    def _sample(self, msg: SampleMessage, device_id: str, wall: float, mono: float) -> Sample:
        limits = self.limits
        temperature = msg.temperature_c
        if not (
            0.0 <= msg.power_w <= limits.max_power_w
            and 0.0 <= msg.hashrate_hs <= limits.max_hashrate_hs
            and (
                temperature is None
                or limits.min_temperature_c <= temperature <= limits.max_temperature_c
            )
        ):
            raise MessageRejected(device_id, "out_of_range", f"implausible sample {msg!r}")
        age = wall - msg.ts  # NaN and infinities cannot arrive: the JSON decoder refuses them
        if age > limits.max_sample_age_seconds:
            raise MessageRejected(device_id, "stale", f"sample {age:.0f} s old")
        if age < -limits.max_clock_skew_seconds:
            raise MessageRejected(device_id, "future", f"sample {-age:.1f} s in the future")
        workload = self._workloads.get(msg.workload) or self._workload(device_id, msg.workload)
        return Sample(
            device_id,
            mono - age if age > 0.0 else mono,
            workload,
            msg.power_w,
            msg.hashrate_hs,
            temperature,
            msg.pool_url,
        )

    def sample(self, device_id: str, payload: bytes, wall: float, mono: float) -> Sample:
        """One sample from ``<prefix>/telemetry/<device_id>``."""
        self._check_size(device_id, payload)
        try:
            msg = _SAMPLE.decode(payload)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise MessageRejected(device_id, "malformed", str(exc)) from None
        if msg.device_id is not None and msg.device_id != device_id:
            raise MessageRejected(
                device_id, "malformed", f"device_id {msg.device_id!r} differs from the topic"
            )
        return self._sample(msg, device_id, wall, mono)

    def batch(
        self, source: str, payload: bytes, wall: float, mono: float
    ) -> tuple[list[Sample], list[MessageRejected]]:
        """Samples of ``<prefix>/telemetry/batch/<source>``; bad entries are returned, not raised."""
        self._check_size(source, payload)
        try:
            messages = _BATCH.decode(payload)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise MessageRejected(source, "malformed", str(exc)) from None
        samples: list[Sample] = []
        rejected: list[MessageRejected] = []
        for msg in messages:
            if msg.device_id is None:
                rejected.append(
                    MessageRejected(source, "malformed", "batch entry without device_id")
                )
                continue
            try:
                samples.append(self._sample(msg, msg.device_id, wall, mono))
            except MessageRejected as exc:
                rejected.append(exc)
        return samples, rejected

    def price(self, payload: bytes, wall: datetime, mono: float) -> tuple[Reading, PriceMessage]:
        """A power price from ``<prefix>/price/power``; its interval must not be over."""
        self._check_size("price", payload)
        try:
            msg = _PRICE.decode(payload)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise MessageRejected("price", "malformed", str(exc)) from None
        limits = self.limits
        if msg.interval_start.tzinfo is None or msg.interval_end.tzinfo is None:
            raise MessageRejected("price", "malformed", "interval times need a UTC offset")
        if not limits.price_floor_usd_per_mwh <= msg.usd_per_mwh <= limits.price_cap_usd_per_mwh:
            raise MessageRejected(
                "price",
                "out_of_range",
                f"{msg.usd_per_mwh} USD/MWh outside [{limits.price_floor_usd_per_mwh}, "
                f"{limits.price_cap_usd_per_mwh}]",
            )
        if msg.interval_end <= msg.interval_start:
            raise MessageRejected("price", "malformed", "interval_end is not after interval_start")
        if msg.interval_end <= wall:
            raise MessageRejected("price", "stale", f"interval ended at {msg.interval_end}")
        lead = (msg.interval_start - wall).total_seconds()
        if lead > limits.max_price_lead_seconds:
            raise MessageRejected(
                "price",
                "future",
                f"interval starts {lead:.0f} s ahead (at {msg.interval_start}); "
                f"at most {limits.max_price_lead_seconds:.0f} s allowed",
            )
        source = f"mqtt:{msg.source}"[:64]
        return Reading(msg.usd_per_mwh, mono, source), msg

    def event(self, payload: bytes, wall: datetime) -> Event:
        """A demand-response event from ``<prefix>/events/dr``; one already over is stale."""
        self._check_size("event", payload)
        try:
            msg = _EVENT.decode(payload)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise MessageRejected("event", "malformed", str(exc)) from None
        if msg.start.tzinfo is None or msg.end.tzinfo is None:
            raise MessageRejected(msg.id, "malformed", "start and end need a UTC offset")
        if msg.end <= msg.start:
            raise MessageRejected(msg.id, "malformed", "end is not after start")
        if (msg.target_kw is None) == (msg.reduction_kw is None):
            raise MessageRejected(
                msg.id, "malformed", "give exactly one of target_kw, reduction_kw"
            )
        kw = msg.target_kw if msg.target_kw is not None else msg.reduction_kw
        assert kw is not None
        if not 0.0 <= kw <= self.limits.max_event_kw:
            raise MessageRejected(msg.id, "out_of_range", f"{kw} kW is implausible")
        if msg.end <= wall:
            raise MessageRejected(msg.id, "stale", f"event ended at {msg.end}")
        lead = (msg.start - wall).total_seconds()
        if lead > self.limits.max_event_lead_seconds:
            raise MessageRejected(
                msg.id,
                "future",
                f"event starts {lead:.0f} s ahead (at {msg.start}); "
                f"at most {self.limits.max_event_lead_seconds:.0f} s allowed",
            )
        return Event(
            id=msg.id,
            start=msg.start,
            end=msg.end,
            target_kw=msg.target_kw,
            reduction_kw=msg.reduction_kw,
            priority=msg.priority,
        )
