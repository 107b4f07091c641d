"""The Guard: safety and anti-flap rules applied to every plan, whatever the policy said.

Order of rules (later ones see the result of earlier ones):
1. stale or missing power price -> the configured safe action (``stale_price``);
2. temperature at or above a device's limit -> sleep (``thermal``);
3. minimum dwell and minimum margin gain -> keep the current workload
   (``min_dwell`` / ``below_min_gain``) unless the change is for safety;
4. site power cap -> sleep the least efficient mining devices until the
   projected site power fits (``power_cap``).
Safety rules are never held back by dwell or gain rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from scheduler.config import GuardConfig
from scheduler.economics import market_economics, option_economics
from scheduler.model import Assignment, Device, Plan, Snapshot, Workload, WorkloadKind

SAFETY_REASONS = frozenset({"stale_price", "stale_input", "thermal", "power_cap", "dr_event"})


@dataclass
class Guard:
    """Applies the safety rules of the site; remembers when each device last switched."""

    config: GuardConfig
    power_cap_w: float
    last_switch_at: dict[str, float] = field(default_factory=dict)

    def apply(self, plan: Plan, snapshot: Snapshot) -> Plan:
        """Return the plan the site may actually run."""
        assigned = plan.by_device()
        self._stale_price(assigned, snapshot)
        self._thermal(assigned, snapshot)
        self._anti_flap(assigned, snapshot)
        self._power_cap(assigned, snapshot)
        for device_id, assignment in assigned.items():
            current = snapshot.current.get(device_id)
            if current is not None and assignment.workload != current:
                self.last_switch_at[device_id] = snapshot.now
        ordered = tuple(assigned[d] for d in snapshot.devices if d in assigned)
        return Plan(created_at=plan.created_at, assignments=ordered)

    def _stale_price(self, assigned: dict[str, Assignment], snapshot: Snapshot) -> None:
        age = snapshot.market_age("power_price_usd_per_mwh")
        reason = "stale_price"
        if age is not None and age <= self.config.stale_price_seconds:
            reason = "stale_input"
            if all(
                (a := snapshot.market_age(name)) is not None and a <= limit
                for name, limit in self.config.max_input_age_seconds.items()
            ):
                return
        for device_id, device in snapshot.devices.items():
            if self.config.stale_action == "sleep":
                workload: Workload | None = Workload.sleep()
            else:
                workload = snapshot.current.get(device_id)
            if workload is None:
                assigned.pop(device_id, None)
                continue
            # Without a trusted price the margin is unknown; 0.0 is reported, never used to decide.
            assigned[device_id] = Assignment(device.id, workload, reason, 0.0)

    def _thermal(self, assigned: dict[str, Assignment], snapshot: Snapshot) -> None:
        for device_id, sample in snapshot.samples.items():
            device = snapshot.devices[device_id]
            hot = (
                sample.temperature_c is not None
                and sample.temperature_c >= device.max_temperature_c
            )
            if hot:
                assigned[device_id] = Assignment(device_id, Workload.sleep(), "thermal", 0.0)

    def _anti_flap(self, assigned: dict[str, Assignment], snapshot: Snapshot) -> None:
        economics = market_economics(snapshot)
        for device_id, assignment in list(assigned.items()):
            current = snapshot.current.get(device_id)
            if current is None or assignment.workload == current:
                continue
            if assignment.reason in SAFETY_REASONS:
                continue
            device = snapshot.devices[device_id]
            now_margin = (
                option_economics(device, current, economics).margin_usd_per_hour
                if economics is not None and current.kind is not WorkloadKind.AI
                else 0.0
            )
            since = self.last_switch_at.get(device_id)
            if since is not None and snapshot.now - since < self.config.min_dwell_seconds:
                assigned[device_id] = Assignment(device_id, current, "min_dwell", now_margin)
                continue
            gain = assignment.expected_margin_usd_per_hour - now_margin
            if economics is not None and gain < self.config.min_margin_gain_usd_per_hour:
                assigned[device_id] = Assignment(device_id, current, "below_min_gain", now_margin)

    def _power_cap(self, assigned: dict[str, Assignment], snapshot: Snapshot) -> None:
        def planned_power_w(device: Device) -> float:
            assignment = assigned.get(device.id)
            workload = assignment.workload if assignment else snapshot.current.get(device.id)
            if workload is None:
                return device.nominal_power_w  # unknown: assume the worst
            if workload.kind is WorkloadKind.MINE:
                return device.nominal_power_w * workload.power_level
            if workload.kind is WorkloadKind.SLEEP:
                return device.sleep_power_w
            return 0.0 if workload.kind is WorkloadKind.OFF else device.nominal_power_w

        total_w = sum(planned_power_w(d) for d in snapshot.devices.values())
        if total_w <= self.power_cap_w:
            return
        running = [
            d
            for d in snapshot.devices.values()
            if (a := assigned.get(d.id)) is not None and a.workload.kind is WorkloadKind.MINE
        ]
        running.sort(key=lambda d: d.efficiency_j_per_th, reverse=True)
        for device in running:
            if total_w <= self.power_cap_w:
                break
            total_w -= planned_power_w(device) - device.sleep_power_w
            assigned[device.id] = Assignment(device.id, Workload.sleep(), "power_cap", 0.0)
