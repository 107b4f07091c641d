"""OpenADR 2.0b VEN (``openleadr``): registration, events with opt-in/opt-out, telemetry reports.

The VEN registers with the VTN, polls it, answers each event with ``optIn``
or ``optOut`` and reports the site's metered power (``TELEMETRY_USAGE``,
``powerReal``, W).  Events become ``DispatchEvent``s handed to ``on_event``,
which returns whether the site takes part:

- a ``LOAD_DISPATCH`` signal of type ``setpoint`` gives the site target in kW
  (the signal payload) for each interval;
- a ``SIMPLE`` signal (levels 0-3) is mapped to kW by ``simple_levels_kw``
  (level 0 or an unmapped level: release);
- any other signal is declined (``optOut``).

Each event is identified by ``event_id:modification_number`` so a redelivery
acts once and a modification acts again.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from drivers.secrets import MaskedUrl

log = logging.getLogger(__name__)
MAX_INTERVALS = 1000


class OpenAdrOptions(BaseModel):
    """The ``[openadr]`` section: the VTN, this VEN and how signals map to a site target."""

    model_config = ConfigDict(extra="forbid")
    vtn_url: MaskedUrl = Field(pattern=r"^https?://", description="the VTN's OpenADR 2.0b base URL")
    ven_name: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    ven_id: str | None = Field(None, description="assigned by the VTN when absent")
    cert_file: Path | None = Field(None, description="PEM certificate: sign messages")
    key_file: Path | None = Field(None, description="PEM private key of cert_file")
    vtn_fingerprint: str | None = Field(None, description="the VTN certificate's fingerprint")
    ca_file: Path | None = Field(None, description="CA bundle for an HTTPS VTN")
    simple_levels_kw: dict[str, float] = Field(
        default_factory=dict, description='SIMPLE signal level -> site kW, e.g. {"1" = 800}'
    )
    report_seconds: float = Field(60.0, ge=1, le=3600, description="telemetry sampling")


@dataclass(frozen=True, slots=True)
class DispatchInterval:
    """One interval of an event: from ``start`` for ``duration``, the site at ``kw`` (None: release)."""

    start: datetime
    duration: timedelta
    kw: float | None


@dataclass(frozen=True, slots=True)
class DispatchEvent:
    """An OpenADR event as the site sees it."""

    id: str  # event_id:modification_number
    event_id: str
    status: str
    intervals: tuple[DispatchInterval, ...]


def parse_event(event: dict[str, Any], simple_levels_kw: dict[str, float]) -> DispatchEvent | None:
    """The event's dispatch intervals, or None when no signal can be followed (optOut)."""
    descriptor = event.get("event_descriptor") or {}
    event_id = str(descriptor.get("event_id", ""))[:128]
    if not event_id:
        return None
    modification = int(descriptor.get("modification_number") or 0)
    intervals: list[DispatchInterval] = []
    for signal in event.get("event_signals") or []:
        name = str(signal.get("signal_name", "")).upper()
        kind = str(signal.get("signal_type", "")).lower()
        for interval in (signal.get("intervals") or [])[:MAX_INTERVALS]:
            start, duration = interval.get("dtstart"), interval.get("duration")
            payload = interval.get("signal_payload")
            if not isinstance(start, datetime) or not isinstance(duration, timedelta):
                continue
            if not isinstance(payload, int | float) or isinstance(payload, bool):
                continue
            if name == "LOAD_DISPATCH" and kind == "setpoint":
                if not 0 <= payload <= 1e7:
                    return None
                intervals.append(DispatchInterval(start, duration, float(payload)))
            elif name == "SIMPLE":
                level = str(int(payload))
                kw = simple_levels_kw.get(level) if level != "0" else None
                if level != "0" and kw is None:
                    return None
                intervals.append(DispatchInterval(start, duration, kw))
    if not intervals:
        return None
    intervals.sort(key=lambda i: i.start)
    return DispatchEvent(
        f"{event_id}:{modification}",
        event_id,
        str(descriptor.get("event_status", "")),
        tuple(intervals),
    )


class OpenAdrVen:
    """The VEN: ``async with OpenAdrVen(...)`` registers and polls until closed."""

    def __init__(
        self,
        options: OpenAdrOptions,
        on_event: Callable[[DispatchEvent | None, dict[str, Any]], Awaitable[bool]],
        metered_w: Callable[[], float | None],
        *,
        poll_hint: timedelta | None = None,
    ) -> None:
        from openleadr import OpenADRClient  # imported here: a daemon without [openadr] skips it

        self.options = options
        self._on_event = on_event
        signed = options.cert_file is not None and options.key_file is not None
        self.client = OpenADRClient(
            ven_name=options.ven_name,
            vtn_url=options.vtn_url,
            cert=str(options.cert_file) if signed else None,
            key=str(options.key_file) if signed else None,
            vtn_fingerprint=options.vtn_fingerprint,
            ca_file=str(options.ca_file) if options.ca_file else None,
            ven_id=options.ven_id,
            disable_signature=not signed,
            show_fingerprint=False,
        )
        self.client.add_handler("on_event", self._event)
        self.client.add_handler("on_update_event", self._event)

        def reading() -> list[tuple[datetime, float]]:
            value = metered_w()  # no fresh reading: nothing to report this time
            return [] if value is None else [(datetime.now(UTC), value)]

        self.client.add_report(
            callback=reading,
            resource_id="site",
            measurement="power_real",
            sampling_rate=timedelta(seconds=options.report_seconds),
            report_duration=timedelta(hours=1),
            unit="W",
        )
        _ = poll_hint

    @property
    def registration_id(self) -> str | None:
        """Set once the VTN accepted the registration."""
        value = self.client.registration_id
        return None if value is None else str(value)

    async def _event(self, event: dict[str, Any]) -> str:
        parsed = parse_event(event, self.options.simple_levels_kw)
        try:
            take = await self._on_event(parsed, event)
        except Exception:  # a bug here must not take the VEN down: decline
            log.exception("OpenADR event handler failed")
            take = False
        return "optIn" if take else "optOut"

    async def __aenter__(self) -> OpenAdrVen:
        await self.client.run()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.client.stop()
