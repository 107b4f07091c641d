"""Hypothesis stateful test: the Guard's invariants hold under random prices, telemetry, DR events and overrides."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from scheduler.config.schema import GuardConfig
from scheduler.control.guard import Guard
from scheduler.core.limits import site_limit_w
from scheduler.core.model import (
    Assignment,
    Event,
    MarketState,
    Plan,
    Reading,
    Sample,
    Snapshot,
    Workload,
)
from scheduler.core.power import planned_power_w as _power_w
from scheduler.core.reasons import SAFETY_REASONS
from scheduler.policies.max_margin import MaxMarginPolicy
from tests.scheduler.helpers import BTC_USD, DIFFICULTY, device

DEVICES = [device(f"s21-{i}", "S21") for i in range(4)] + [
    device(f"s19-{i}", "S19j Pro") for i in range(4)
]
BY_ID = {d.id: d for d in DEVICES}
CAP_W = 20_000.0
DWELL_S = 120.0
RAMP_KW = 8.0
STALE_S = 600.0
START = datetime(2024, 8, 20, 18, 0, tzinfo=UTC)
WORKLOADS = [Workload.mine("main"), Workload.mine("main", 0.5), Workload.sleep()]


class GuardMachine(RuleBasedStateMachine):
    """Drives a Guard tick by tick; what it lets through becomes the fleet's state."""

    @initialize()
    def start(self) -> None:
        config = GuardConfig(
            min_dwell_seconds=DWELL_S, stale_price_seconds=STALE_S, ramp_kw_per_minute=RAMP_KW
        )
        self.guard = Guard(config, power_cap_w=CAP_W)
        self.policy = MaxMarginPolicy()
        self.now = 1000.0
        self.price: float | None = 30.0
        self.price_at = self.now
        self.temperatures: dict[str, float] = {}
        self.events: list[Event] = []
        self.overrides: dict[str, Workload] = {}
        self.current: dict[str, Workload] = {d.id: Workload.sleep() for d in DEVICES}
        self.switched_at: dict[str, float] = {}
        self.ramp_log: list[tuple[float, float]] = []
        self.last: tuple[Snapshot, Plan] | None = None

    @rule(price=st.one_of(st.none(), st.floats(-50, 5000, allow_nan=False)))
    def price_arrives(self, price: float | None) -> None:
        if price is not None:
            self.price, self.price_at = price, self.now

    @rule(device_id=st.sampled_from(sorted(BY_ID)), temperature=st.floats(40, 100))
    def telemetry(self, device_id: str, temperature: float) -> None:
        self.temperatures[device_id] = temperature

    @rule(
        start_s=st.integers(-600, 600),
        minutes=st.integers(1, 60),
        target_kw=st.one_of(st.none(), st.floats(0, 30)),
        reduction_kw=st.one_of(st.none(), st.floats(0, 30)),
    )
    def dr_event(
        self, start_s: int, minutes: int, target_kw: float | None, reduction_kw: float | None
    ) -> None:
        wall = START + timedelta(seconds=self.now)
        begin = wall + timedelta(seconds=start_s)
        self.events.append(
            Event(
                f"e{len(self.events)}",
                begin,
                begin + timedelta(minutes=minutes),
                target_kw,
                reduction_kw,
            )
        )

    @rule(
        device_id=st.sampled_from(sorted(BY_ID)),
        workload=st.one_of(st.none(), st.sampled_from(WORKLOADS)),
    )
    def override(self, device_id: str, workload: Workload | None) -> None:
        if workload is None:
            self.overrides.pop(device_id, None)
        else:
            self.overrides[device_id] = workload

    @rule(seconds=st.floats(1, 400))
    def tick(self, seconds: float) -> None:
        self.now += seconds
        market = MarketState(
            btc_price_usd=Reading(BTC_USD, 0.0, "t"),
            difficulty=Reading(DIFFICULTY, 0.0, "t"),
            block_subsidy_btc=Reading(3.125, 0.0, "t"),
            fees_btc_per_block=Reading(0.0, 0.0, "t"),
            power_price_usd_per_mwh=None
            if self.price is None
            else Reading(self.price, self.price_at, "t"),
        )
        snapshot = Snapshot(
            now=self.now,
            wall=START + timedelta(seconds=self.now),
            devices=BY_ID,
            samples={},
            status={},
            market=market,
            events=tuple(self.events),
            current=dict(self.current),
            power_cap_w=CAP_W,
        )
        samples = {
            d: Sample(d, self.now, self.current[d], 0.0, 0.0, temperature_c=t)
            for d, t in self.temperatures.items()
        }
        snapshot = Snapshot(
            **{
                **{f: getattr(snapshot, f) for f in snapshot.__dataclass_fields__},
                "samples": samples,
            }
        )
        proposed = self.policy.plan(snapshot).by_device()
        for device_id, workload in self.overrides.items():
            proposed[device_id] = Assignment(device_id, workload, "override", 0.0)
        plan = self.guard.apply(Plan(self.now, tuple(proposed.values())), snapshot)
        for assignment in plan.assignments:
            old = self.current[assignment.device_id]
            if assignment.workload == old:
                continue
            if assignment.reason not in SAFETY_REASONS:
                since = self.switched_at.get(assignment.device_id)
                assert since is None or self.now - since >= DWELL_S, (assignment, since, self.now)
                kw = (
                    abs(
                        _power_w(BY_ID[assignment.device_id], assignment.workload)
                        - _power_w(BY_ID[assignment.device_id], old)
                    )
                    / 1000
                )
                self.ramp_log.append((self.now, kw))
            self.switched_at[assignment.device_id] = self.now
            self.current[assignment.device_id] = assignment.workload
        self.last = (snapshot, plan)
        self.seen_temperatures = dict(self.temperatures)

    @invariant()
    def site_power_within_cap_and_dr(self) -> None:
        if self.last is None:
            return
        snapshot, _ = self.last
        limit_w, _ = site_limit_w(snapshot, CAP_W)
        assert limit_w is not None
        floor_w = sum(d.sleep_power_w for d in DEVICES)
        total_w = sum(_power_w(BY_ID[d], w) for d, w in self.current.items())
        assert total_w <= max(limit_w, floor_w) + 1e-6, (total_w, limit_w)

    @invariant()
    def hot_devices_do_not_run(self) -> None:
        if self.last is None:
            return
        for device_id, temperature in self.seen_temperatures.items():
            if temperature >= BY_ID[device_id].max_temperature_c:
                assert not self.current[device_id].is_running, (device_id, temperature)

    @invariant()
    def stale_price_means_asleep(self) -> None:
        if self.last is None:
            return
        snapshot, _ = self.last
        price = snapshot.market.power_price_usd_per_mwh
        if price is None or snapshot.now - price.observed_at > STALE_S:
            assert all(w == Workload.sleep() for w in self.current.values())

    @invariant()
    def ramp_limit_holds_in_every_minute(self) -> None:
        for at, _ in self.ramp_log:
            window = sum(kw for t, kw in self.ramp_log if at - 60.0 < t <= at)
            assert window <= RAMP_KW + 1e-9, (at, window)


GuardMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestGuardInvariants = GuardMachine.TestCase
