"""AI leases: a GPU node under contract stays on AI while its lease is active.

Only safety takes it off: the Guard's thermal rule (any device), and an
active demand-response event of a higher priority than the lease's, which
lifts the pin (the node is then planned as any other GPU node, and the
``demand-response`` policy may shed it).  The lease's price counts as the
node's revenue: expected margin = price - nominal power x power price.
"""

from __future__ import annotations

from collections.abc import Iterable

from scheduler.core.limits import active_events
from scheduler.core.model import Assignment, Device, Event, Lease, Snapshot, Workload
from scheduler.core.reasons import Reason


def pinned_leases(snapshot: Snapshot, events: Iterable[Event] | None = None) -> dict[str, Lease]:
    """Active leases by node that no event of a higher priority outranks (default: active events).

    With overlapping leases on one node the highest priority wins (then the earliest start).
    """
    if not snapshot.leases:
        return {}
    in_force = active_events(snapshot.events, snapshot) if events is None else list(events)
    top = max((e.priority for e in in_force), default=None)
    pinned: dict[str, Lease] = {}
    for lease in snapshot.leases:
        if not lease.active(snapshot.wall) or lease.node not in snapshot.devices:
            continue
        if top is not None and top > lease.priority:
            continue
        held = pinned.get(lease.node)
        if held is None or (lease.priority, held.start) > (held.priority, lease.start):
            pinned[lease.node] = lease
    return pinned


def lease_assignment(device: Device, lease: Lease, power_price_usd_per_mwh: float) -> Assignment:
    """ai(lease queue), reason ``ai_lease``, margin = lease price - the node's power cost."""
    cost = device.nominal_power_w / 1e6 * power_price_usd_per_mwh
    return Assignment(
        device.id, Workload.ai(lease.queue), Reason.AI_LEASE, lease.price_usd_per_hour - cost
    )
