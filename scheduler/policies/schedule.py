"""``schedule``: time-of-use windows and ERCOT 4CP peak windows, in the site's time zone.

Windows recur by local clock time, weekday and month.  A ``sleep`` window
puts every miner to sleep for its duration (reason ``schedule_window``, or
``4cp_window`` for the ERCOT 4CP preset: June to September, weekdays, 15:30 to
18:00 local, when the monthly system peaks that set a year of transmission
charges usually fall).  An ``adder`` window adds a tariff charge (USD/MWh) to
the market price; outside sleep windows the decision is ``max-margin``'s at
that effective price, under the cap and DR limits.  A GPU node under an
active AI lease stays on it through sleep windows (``ai_lease``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime, time
from zoneinfo import ZoneInfo

from scheduler.config.schema import PolicyConfig, ScheduleWindowConfig
from scheduler.core.model import Assignment, Plan, Snapshot, Workload
from scheduler.core.reasons import Reason
from scheduler.policies.leases import lease_assignment, pinned_leases
from scheduler.policies.max_margin import MaxMarginPolicy

ERCOT_4CP = ScheduleWindowConfig(
    name="ercot-4cp", start="15:30", end="18:00", weekdays=[0, 1, 2, 3, 4], months=[6, 7, 8, 9]
)


def _clock(text: str) -> time:
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


def window_active(window: ScheduleWindowConfig, local: datetime) -> bool:
    """True when the local time lies in the window (a window past midnight belongs to its start day)."""
    start, end, now = _clock(window.start), _clock(window.end), local.time()
    if start < end:
        inside, day = start <= now < end, local.date()
    elif now >= start:
        inside, day = True, local.date()
    else:
        inside, day = now < end, local.date().fromordinal(local.date().toordinal() - 1)
    return inside and day.weekday() in window.weekdays and day.month in window.months


class SchedulePolicy:
    """Sleep in scheduled windows; elsewhere max-margin at market price plus active tariff adders."""

    name = "schedule"

    def __init__(
        self,
        windows: Sequence[ScheduleWindowConfig],
        *,
        timezone: str = "UTC",
        ercot_4cp: bool = False,
        inner: MaxMarginPolicy | None = None,
    ) -> None:
        self.windows = tuple(windows)
        self.zone = ZoneInfo(timezone)
        self.ercot_4cp = ercot_4cp
        self.inner = inner or MaxMarginPolicy()

    @classmethod
    def from_config(cls, config: PolicyConfig) -> SchedulePolicy:
        """Build from the [policy] section (windows, 4CP flag, zone, max-margin knobs)."""
        return cls(
            config.schedule,
            timezone=config.schedule_timezone or "UTC",
            ercot_4cp=config.ercot_4cp,
            inner=MaxMarginPolicy.from_config(config),
        )

    def active(self, snapshot: Snapshot) -> list[tuple[ScheduleWindowConfig, Reason]]:
        """The windows in force at the snapshot's wall time, each with the reason it gives."""
        local = snapshot.wall.astimezone(self.zone)
        found = [(w, Reason.SCHEDULE_WINDOW) for w in self.windows if window_active(w, local)]
        if self.ercot_4cp and window_active(ERCOT_4CP, local):
            found.append((ERCOT_4CP, Reason.FOUR_CP_WINDOW))
        return found

    def plan(self, snapshot: Snapshot) -> Plan:
        """Everything asleep in a sleep window; otherwise max-margin at the effective price."""
        active = self.active(snapshot)
        sleeping = [reason for window, reason in active if window.action == "sleep"]
        if sleeping:
            reason = (
                Reason.FOUR_CP_WINDOW
                if Reason.FOUR_CP_WINDOW in sleeping
                else Reason.SCHEDULE_WINDOW
            )
            pinned = pinned_leases(snapshot)  # a lease outranks a schedule window
            price = snapshot.market.power_price_usd_per_mwh
            assignments = tuple(
                lease_assignment(d, pinned[d.id], price.value if price else 0.0)
                if d.id in pinned
                else Assignment(d.id, Workload.sleep(), reason, 0.0)
                for d in snapshot.devices.values()
                if d.pools or d.id in pinned
            )
            return Plan(created_at=snapshot.now, assignments=assignments)
        adder = sum(w.adder_usd_per_mwh for w, _ in active if w.action == "adder")
        price = snapshot.market.power_price_usd_per_mwh
        if adder and price is not None:
            market = dataclasses.replace(
                snapshot.market,
                power_price_usd_per_mwh=dataclasses.replace(price, value=price.value + adder),
            )
            snapshot = dataclasses.replace(snapshot, market=market)
        return self.inner.plan(snapshot)
