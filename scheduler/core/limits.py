"""Site power limits in force: the cap lowered by active demand-response events (shared by policies and the Guard)."""

from __future__ import annotations

from collections.abc import Iterable

from scheduler.core.model import Event, Snapshot


def active_events(events: Iterable[Event], snapshot: Snapshot) -> list[Event]:
    """The demand-response events in force at the snapshot's wall time (start <= wall < end)."""
    return [e for e in events if e.start <= snapshot.wall < e.end]


def event_limit_w(event: Event, nominal_w: float) -> float | None:
    """The site power an event allows: target_kw, or nominal full power minus reduction_kw."""
    candidates: list[float] = []
    if event.target_kw is not None:
        candidates.append(event.target_kw * 1000.0)
    if event.reduction_kw is not None:
        candidates.append(max(0.0, nominal_w - event.reduction_kw * 1000.0))
    return min(candidates) if candidates else None


def site_limit_w(snapshot: Snapshot, cap_w: float | None = None) -> tuple[float | None, bool]:
    """The strictest limit in force (cap and active DR events) and whether a DR event sets it.

    ``cap_w`` defaults to the snapshot's ``power_cap_w``.  ``reduction_kw`` is
    taken off the site's nominal full power (every device mining at stock).
    """
    limit = snapshot.power_cap_w if cap_w is None else cap_w
    from_dr = False
    events = active_events(snapshot.events, snapshot)
    if not events:
        return limit, from_dr
    nominal_w = sum(d.nominal_power_w for d in snapshot.devices.values())
    for event in events:
        value = event_limit_w(event, nominal_w)
        if value is not None and (limit is None or value < limit):
            limit, from_dr = value, True
    return limit, from_dr
