"""``demand-response``: mine what pays; during an event shed the least efficient machines first.

Outside events each device mines while its margin at the current price is
positive (with the ``hysteresis_usd_per_mwh`` band of the breakeven policy).
While one or more events are active (``start <= wall < end``) the site must
fit the strictest of them: ``target_kw`` caps the site, ``reduction_kw`` is
taken off the fleet's nominal full power.  Machines are put to sleep from the
least efficient (highest J/TH: each machine's own smoothed measured J/TH
where its readings can be trusted, the model's nominal figure otherwise,
``scheduler.policies.efficiency``) up, reason ``dr_event``; a GPU node under an
AI lease is shed only when an event of a higher priority than the lease's is
in force.  ``preview(snapshot,
event)`` tells an operator, before an event starts, which machines would go.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

from scheduler.core.limits import active_events, event_limit_w
from scheduler.core.model import Assignment, Device, Event, Plan, Snapshot, Workload
from scheduler.core.power import planned_power_w
from scheduler.core.reasons import Reason
from scheduler.policies import PolicyPlugin
from scheduler.policies.breakeven import BreakevenOptions, BreakevenPolicy
from scheduler.policies.efficiency import MeasuredEfficiency
from scheduler.policies.leases import pinned_leases


@dataclass(frozen=True, slots=True)
class DrPreview:
    """Which machines an event would put to sleep, and the site power left after it."""

    event_id: str
    limit_kw: float
    shed: tuple[str, ...]
    site_kw_before: float
    site_kw_after: float
    feasible: bool


class DemandResponsePolicy:
    """Breakeven economics, then least-efficient-first shedding to fit active DR events."""

    name = "demand-response"

    def __init__(self, hysteresis_usd_per_mwh: float = 5.0) -> None:
        self.base = BreakevenPolicy(hysteresis_usd_per_mwh=hysteresis_usd_per_mwh)
        self.efficiency = MeasuredEfficiency()

    @classmethod
    def from_config(cls, config: BreakevenOptions) -> DemandResponsePolicy:
        """Build from the [policy] section."""
        return cls(hysteresis_usd_per_mwh=config.hysteresis_usd_per_mwh)

    def plan(self, snapshot: Snapshot) -> Plan:
        """The breakeven plan, cut down to the strictest active event's limit."""
        plan = self.base.plan(snapshot)
        self.efficiency.observe(snapshot)
        events = active_events(snapshot.events, snapshot)
        if not events or not plan.assignments:
            return plan
        nominal_w = sum(d.nominal_power_w for d in snapshot.devices.values())
        limits = [w for e in events if (w := event_limit_w(e, nominal_w)) is not None]
        if not limits:
            return plan
        assigned = plan.by_device()
        kept = set(pinned_leases(snapshot))
        shed, _, _ = self._shed(snapshot, assigned, min(limits), kept, self.efficiency)
        for device_id in shed:
            assigned[device_id] = Assignment(device_id, Workload.sleep(), Reason.DR_EVENT, 0.0)
        ordered = tuple(assigned[d] for d in snapshot.devices if d in assigned)
        return Plan(created_at=plan.created_at, assignments=ordered)

    def preview(self, snapshot: Snapshot, event: Event) -> DrPreview:
        """The machines this event would put to sleep if it started at the snapshot's time."""
        return self.preview_plan(snapshot, event)[0]

    def preview_plan(
        self, snapshot: Snapshot, event: Event, before: Mapping[str, Assignment] | None = None
    ) -> tuple[DrPreview, dict[str, Assignment]]:
        """preview(), and the plan before the event that it sheds from (device -> assignment).

        ``before`` is what the devices run now (the daemon's guarded plan: overrides, curtail
        and dwell applied); a device it leaves out runs its observed workload.  Without it the
        plan before is a fresh plan of this policy's economics.
        """
        nominal_w = sum(d.nominal_power_w for d in snapshot.devices.values())
        limit_w = event_limit_w(event, nominal_w)
        assigned = dict(before) if before is not None else self.base.plan(snapshot).by_device()
        if limit_w is None:
            limit_w = float("inf")
        in_force = [*active_events(snapshot.events, snapshot), event]
        kept = set(pinned_leases(snapshot, in_force))
        self.efficiency.observe(snapshot)
        shed, before_w, after_w = self._shed(snapshot, assigned, limit_w, kept, self.efficiency)
        preview = DrPreview(
            event_id=event.id,
            limit_kw=limit_w / 1000.0,
            shed=tuple(shed),
            site_kw_before=before_w / 1000.0,
            site_kw_after=after_w / 1000.0,
            feasible=after_w <= limit_w,
        )
        return preview, assigned

    @staticmethod
    def _shed(
        snapshot: Snapshot,
        assigned: dict[str, Assignment],
        limit_w: float,
        kept: AbstractSet[str] = frozenset(),
        efficiency: MeasuredEfficiency | None = None,
    ) -> tuple[list[str], float, float]:
        """Least efficient running devices to sleep until the site fits; (shed, before W, after W).

        Devices in ``kept`` (GPU nodes under a lease no event outranks) are never shed.
        """

        def workload_of(device: Device) -> Workload | None:
            assignment = assigned.get(device.id)
            return assignment.workload if assignment else snapshot.current.get(device.id)

        devices = list(snapshot.devices.values())
        total_w = sum(planned_power_w(d, workload_of(d)) for d in devices)
        before_w = total_w
        running = [
            d
            for d in devices
            if (w := workload_of(d)) is not None and w.is_running and d.id not in kept
        ]
        if efficiency is None:
            running.sort(key=lambda d: (-d.efficiency_j_per_th, d.id))
        else:
            running = efficiency.least_efficient_first(running)
        shed: list[str] = []
        for device in running:
            if total_w <= limit_w:
                break
            total_w -= planned_power_w(device, workload_of(device)) - device.sleep_power_w
            shed.append(device.id)
        return shed, before_w, total_w


PLUGINS = (
    PolicyPlugin(
        tag=DemandResponsePolicy.name,
        options=BreakevenOptions,
        factory=DemandResponsePolicy.from_config,
    ),
)
