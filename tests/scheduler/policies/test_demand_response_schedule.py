"""demand-response (least efficient first, preview) and schedule (TOU windows, ERCOT 4CP, site zone)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from scheduler.config.loading import parse_config
from scheduler.config.schema import PolicyConfig
from scheduler.core.model import Event, Snapshot, Workload
from scheduler.policies import create_policy
from scheduler.policies.demand_response import DemandResponsePolicy
from scheduler.policies.schedule import SchedulePolicy, ScheduleWindowConfig, window_active
from tests.scheduler.helpers import device, snapshot

FLEET = [
    device("xp", "S21 XP"),
    device("s21", "S21"),
    device("s19", "S19j Pro"),
    device("s19b", "S19j Pro"),
]


def at(snap: Snapshot, wall: datetime, **changes: object) -> Snapshot:
    return Snapshot(
        **{**{f: getattr(snap, f) for f in snap.__dataclass_fields__}, "wall": wall, **changes}
    )


def running(plan_snapshot: Snapshot, policy: object) -> list[str]:
    plan = policy.plan(plan_snapshot)  # type: ignore[attr-defined]
    return sorted(a.device_id for a in plan.assignments if a.workload.is_running)


def test_dr_sheds_least_efficient_first_and_previews_before_the_start() -> None:
    policy = create_policy(PolicyConfig(name="demand-response"))
    assert isinstance(policy, DemandResponsePolicy)
    base = snapshot(FLEET, 20.0)
    event = Event(
        "peak",
        base.wall + timedelta(hours=1),
        base.wall + timedelta(hours=2),
        reduction_kw=4.0,
        priority=2,
    )
    before = at(base, base.wall, events=(event,))
    assert running(before, policy) == ["s19", "s19b", "s21", "xp"]  # not started yet
    preview = policy.preview(before, event)
    assert preview.shed == ("s19", "s19b")  # least efficient first (29.5 J/TH), 2 x 3,048 W needed
    assert preview.feasible and preview.site_kw_after <= preview.limit_kw
    during = at(base, base.wall + timedelta(hours=1, minutes=5), events=(event,))
    plan = policy.plan(during).by_device()
    assert sorted(d for d, a in plan.items() if a.reason == "dr_event") == ["s19", "s19b"]
    assert plan["xp"].workload == Workload.mine("main")
    capped = Event(
        "cap", during.wall - timedelta(minutes=1), during.wall + timedelta(hours=1), target_kw=3.7
    )
    assert running(at(during, during.wall, events=(event, capped)), policy) == ["xp"]


def test_window_in_site_zone_wraps_midnight_and_respects_days() -> None:
    night = ScheduleWindowConfig(
        name="night", start="22:00", end="06:00", weekdays=[4]
    )  # Friday night
    zone = "America/Chicago"
    from zoneinfo import ZoneInfo

    local = ZoneInfo(zone)
    assert window_active(night, datetime(2024, 8, 23, 23, 0, tzinfo=local))  # Fri 23:00
    assert window_active(
        night, datetime(2024, 8, 24, 5, 59, tzinfo=local)
    )  # Sat 05:59 belongs to Fri
    assert not window_active(night, datetime(2024, 8, 24, 23, 0, tzinfo=local))  # Sat night
    assert not window_active(night, datetime(2024, 8, 23, 21, 59, tzinfo=local))


def test_4cp_window_sleeps_fleet_on_summer_weekday_afternoons_local_time() -> None:
    policy = SchedulePolicy([], timezone="America/Chicago", ercot_4cp=True)
    base = snapshot(FLEET, 20.0)
    # 2024-08-20 is a Tuesday; 16:00 CDT = 21:00 UTC.
    in_window = at(base, datetime(2024, 8, 20, 21, 0, tzinfo=UTC))
    plan = policy.plan(in_window)
    assert {(str(a.workload), a.reason) for a in plan.assignments} == {("sleep", "4cp_window")}
    # 16:00 UTC is 11:00 local: outside; a Saturday and an October day are outside too.
    for wall in (
        datetime(2024, 8, 20, 16, 0, tzinfo=UTC),
        datetime(2024, 8, 24, 21, 0, tzinfo=UTC),
        datetime(2024, 10, 15, 21, 0, tzinfo=UTC),
    ):
        assert running(at(base, wall), policy) == ["s19", "s19b", "s21", "xp"]


def test_tou_adder_raises_the_effective_price() -> None:
    adder = ScheduleWindowConfig(
        name="on-peak", start="07:00", end="22:00", action="adder", adder_usd_per_mwh=30.0
    )
    policy = SchedulePolicy([adder], timezone="UTC")
    base = snapshot(FLEET, 40.0)  # S19j Pro break-even ~60 USD/MWh: mines at 40, not at 70
    assert "s19" in running(at(base, datetime(2024, 8, 20, 23, 0, tzinfo=UTC)), policy)
    assert "s19" not in running(at(base, datetime(2024, 8, 20, 12, 0, tzinfo=UTC)), policy)
    assert "s21" in running(at(base, datetime(2024, 8, 20, 12, 0, tzinfo=UTC)), policy)


def test_schedule_config_takes_the_site_zone_and_names_bad_fields() -> None:
    data = {
        "site": {"power_cap_kw": 100, "timezone": "America/Chicago"},
        "policy": {
            "name": "schedule",
            "schedule": [{"name": "x", "start": "25:00", "end": "06:00"}],
        },
        "pools": [{"name": "main", "url": "stratum+tcp://p:3333", "user": "u"}],
        "devices": [{"id": "a", "model": "S21", "pools": ["main"], "address": "127.60.0.1"}],
    }
    from scheduler.config.loading import ConfigError

    with pytest.raises(ConfigError, match=r"policy.schedule\[0\].start: expected HH:MM"):
        parse_config(data, environ={})
    data["policy"]["schedule"][0]["start"] = "22:00"  # type: ignore[index]
    config = parse_config(data, environ={})
    assert config.policy.schedule_timezone == "America/Chicago"
    assert isinstance(create_policy(config.policy), SchedulePolicy)
