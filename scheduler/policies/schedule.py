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
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator

from scheduler.core.model import Assignment, Plan, Snapshot, Workload
from scheduler.core.reasons import Reason
from scheduler.policies import PolicyPlugin
from scheduler.policies.leases import lease_assignment, pinned_leases
from scheduler.policies.max_margin import MaxMarginOptions, MaxMarginPolicy


class ScheduleWindowConfig(BaseModel):
    """A recurring local-time window: sleep through it, or add a tariff charge to the power price."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="window name")
    start: str = Field(description="local start HH:MM")
    end: str = Field(description="local end HH:MM (before start: the window runs past midnight)")
    weekdays: list[int] = Field(
        default_factory=lambda: list(range(7)), description="0 = Monday ... 6 = Sunday"
    )
    months: list[int] = Field(default_factory=lambda: list(range(1, 13)), description="1..12")
    action: Literal["sleep", "adder"] = Field("sleep", description="sleep, or add a charge")
    adder_usd_per_mwh: float = Field(
        0.0, ge=-1000, le=10_000, description="added to the power price in the window (adder)"
    )

    @field_validator("start", "end")
    @classmethod
    def _clock_time(cls, value: str) -> str:
        try:
            datetime.strptime(value, "%H:%M")
        except ValueError:
            raise ValueError(f"expected HH:MM, got {value!r}") from None
        return value

    @field_validator("weekdays")
    @classmethod
    def _weekdays(cls, value: list[int]) -> list[int]:
        if not value or any(not 0 <= day <= 6 for day in value):
            raise ValueError(f"weekdays must be 0 (Monday) .. 6 (Sunday), got {value}")
        return value

    @field_validator("months")
    @classmethod
    def _months(cls, value: list[int]) -> list[int]:
        if not value or any(not 1 <= month <= 12 for month in value):
            raise ValueError(f"months must be 1..12, got {value}")
        return value


class ScheduleOptions(MaxMarginOptions):
    """Settings of ``schedule``: its windows, the 4CP preset, the zone, and max-margin's."""

    schedule: list[ScheduleWindowConfig] = Field(
        default_factory=list, description="schedule policy: time-of-use windows"
    )
    ercot_4cp: bool = Field(
        False, description="schedule policy: sleep in ERCOT 4CP windows (Jun-Sep weekdays)"
    )
    schedule_timezone: str | None = Field(
        None, description="zone of the schedule windows; default: [site] timezone"
    )

    @field_validator("schedule_timezone")
    @classmethod
    def _schedule_zone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError) as exc:
                raise ValueError(f"unknown IANA time zone {value!r}") from exc
        return value


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
    def from_config(cls, config: ScheduleOptions) -> SchedulePolicy:
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


PLUGINS = (
    PolicyPlugin(
        tag=SchedulePolicy.name, options=ScheduleOptions, factory=SchedulePolicy.from_config
    ),
)
