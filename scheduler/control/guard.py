"""The Guard: safety and anti-flap rules applied to every plan, whatever the policy said.

Order of rules (later ones see the result of earlier ones):
1. stale or missing power price -> the configured safe action (``stale_price``);
2. temperature at or above a device's limit -> sleep (``thermal``);
3. minimum dwell and minimum margin gain -> keep the current workload
   (``min_dwell`` / ``below_min_gain``) unless the change is for safety;
4. ramp limit -> at most ``ramp_kw_per_minute`` kW switched in any 60 s
   window by non-safety changes; the largest gains go first, the rest keep
   their workload (``ramp_limit``);
5. site power cap and active demand-response events -> sleep the least
   efficient mining devices until the projected site power fits the
   strictest limit (``power_cap`` / ``dr_event``).  A device counts its
   planned power (``scheduler.core.power``), or its measured power where a
   measured (not estimated) sample on the same workload shows more.
Safety rules (stale price, thermal, cap, DR) are never held back by dwell,
gain or ramp rules; nor is a move off a pool that is down (``pool_down``) or
onto an AI lease that starts (``ai_lease``).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from scheduler.config.schema import GuardConfig
from scheduler.core.economics import market_economics, option_economics
from scheduler.core.limits import site_limit_w
from scheduler.core.model import Assignment, Device, Plan, Snapshot, Workload, WorkloadKind
from scheduler.core.power import planned_power_w
from scheduler.core.reasons import SAFETY_REASONS, UNHELD_REASONS, Reason

RAMP_WINDOW_SECONDS = 60.0


@dataclass
class Guard:
    """Applies the safety rules of the site; remembers when each device last switched."""

    config: GuardConfig
    power_cap_w: float
    last_switch_at: dict[str, float] = field(default_factory=dict)
    recent_switches: deque[tuple[float, float]] = field(default_factory=deque)  # (at, kW)

    def apply(self, plan: Plan, snapshot: Snapshot) -> Plan:
        """Return the plan the site may actually run."""
        assigned = plan.by_device()
        self._stale_price(assigned, snapshot)
        self._thermal(assigned, snapshot)
        self._anti_flap(assigned, snapshot)
        self._ramp(assigned, snapshot)
        self._power_cap(assigned, snapshot)
        for device_id, assignment in assigned.items():
            current = snapshot.current.get(device_id)
            if current is not None and assignment.workload != current:
                self.last_switch_at[device_id] = snapshot.now
                if assignment.reason not in SAFETY_REASONS:
                    device = snapshot.devices[device_id]
                    swing_kw = abs(
                        planned_power_w(device, assignment.workload)
                        - planned_power_w(device, current)
                    )
                    self.recent_switches.append((snapshot.now, swing_kw / 1000.0))
        ordered = tuple(assigned[d] for d in snapshot.devices if d in assigned)
        return Plan(created_at=plan.created_at, assignments=ordered)

    def _stale_price(self, assigned: dict[str, Assignment], snapshot: Snapshot) -> None:
        age = snapshot.market_age("power_price_usd_per_mwh")
        reason = Reason.STALE_PRICE
        if age is not None and age <= self.config.stale_price_seconds:
            reason = Reason.STALE_INPUT
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
            hottest = sample.hottest_c  # the hottest chip where the firmware reports chips
            hot = hottest is not None and hottest >= device.max_temperature_c
            if hot:
                assigned[device_id] = Assignment(device_id, Workload.sleep(), Reason.THERMAL, 0.0)

    def _anti_flap(self, assigned: dict[str, Assignment], snapshot: Snapshot) -> None:
        economics = market_economics(snapshot)
        for device_id, assignment in list(assigned.items()):
            current = snapshot.current.get(device_id)
            if current is None or assignment.workload == current:
                continue
            if assignment.reason in UNHELD_REASONS:
                continue
            device = snapshot.devices[device_id]
            now_margin = (
                option_economics(device, current, economics).margin_usd_per_hour
                if economics is not None and current.kind is not WorkloadKind.AI
                else 0.0
            )
            since = self.last_switch_at.get(device_id)
            if since is not None and snapshot.now - since < self.config.min_dwell_seconds:
                assigned[device_id] = Assignment(device_id, current, Reason.MIN_DWELL, now_margin)
                continue
            gain = assignment.expected_margin_usd_per_hour - now_margin
            if economics is not None and gain < self.config.min_margin_gain_usd_per_hour:
                assigned[device_id] = Assignment(
                    device_id, current, Reason.BELOW_MIN_GAIN, now_margin
                )

    def ramp_used_kw(self, now: float) -> float:
        """The kW switched by non-safety changes in the 60 s up to now."""
        while self.recent_switches and self.recent_switches[0][0] <= now - RAMP_WINDOW_SECONDS:
            self.recent_switches.popleft()
        return sum(kw for _, kw in self.recent_switches)

    def _ramp(self, assigned: dict[str, Assignment], snapshot: Snapshot) -> None:
        limit_kw = self.config.ramp_kw_per_minute
        if limit_kw is None:
            return
        budget_kw = limit_kw - self.ramp_used_kw(snapshot.now)
        changes: list[tuple[float, str, float]] = []  # (-gain, device, kW)
        for device_id, assignment in assigned.items():
            current = snapshot.current.get(device_id)
            if current is None or assignment.workload == current:
                continue
            if assignment.reason in UNHELD_REASONS:
                continue
            device = snapshot.devices[device_id]
            swing_kw = (
                abs(planned_power_w(device, assignment.workload) - planned_power_w(device, current))
                / 1000
            )
            changes.append((-assignment.expected_margin_usd_per_hour, device_id, swing_kw))
        changes.sort()
        for _, device_id, swing_kw in changes:
            if swing_kw <= budget_kw:
                budget_kw -= swing_kw
                continue
            current = snapshot.current[device_id]
            assigned[device_id] = Assignment(device_id, current, Reason.RAMP_LIMIT, 0.0)

    def _power_cap(self, assigned: dict[str, Assignment], snapshot: Snapshot) -> None:
        samples = snapshot.samples

        def device_power_w(device: Device) -> float:
            assignment = assigned.get(device.id)
            workload = assignment.workload if assignment else snapshot.current.get(device.id)
            planned = planned_power_w(device, workload)  # unknown: the worst case
            # A machine measured drawing more than that on the same workload counts as measured.
            sample = samples.get(device.id)
            if (
                sample is not None
                and not sample.power_estimated
                and sample.power_w > planned
                and sample.workload == workload
            ):
                return sample.power_w
            return planned

        limit_w, from_dr = site_limit_w(snapshot, self.power_cap_w)
        limit_w = self.power_cap_w if limit_w is None else min(limit_w, self.power_cap_w)
        reason = Reason.DR_EVENT if from_dr else Reason.POWER_CAP
        total_w = sum(device_power_w(d) for d in snapshot.devices.values())
        if total_w <= limit_w:
            return

        def planned(device: Device) -> Workload | None:
            assignment = assigned.get(device.id)
            return assignment.workload if assignment else snapshot.current.get(device.id)

        running = [
            d
            for d in snapshot.devices.values()
            if (w := planned(d)) is not None and w.kind is WorkloadKind.MINE
        ]
        running.sort(key=lambda d: d.efficiency_j_per_th, reverse=True)
        for device in running:
            if total_w <= limit_w:
                break
            total_w -= device_power_w(device) - device.sleep_power_w
            assigned[device.id] = Assignment(device.id, Workload.sleep(), reason, 0.0)
