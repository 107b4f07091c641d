"""The backtester's replay settles each assignment in plan order, whatever objects a policy returns."""

from __future__ import annotations

from datetime import date

from scheduler.backtest.engine import SwitchingCosts, load_trace, simulate_policy
from scheduler.config.loading import load_config
from scheduler.core.model import Assignment, Plan, Snapshot, Workload
from scheduler.core.power import planned_power_w
from scheduler.policies.max_margin import MaxMarginPolicy
from tests.fakes import gpu_node
from tests.scheduler.test_backtest import BTC, FLEETS, PRICES

SLEEP = Workload.sleep()
MINE = Workload.mine("main")


class Flapping:
    """Names device 0 twice per plan (sleep, then mine): two switches every interval."""

    name = "flapping"

    def plan(self, snapshot: Snapshot) -> Plan:
        """Every device mines (new equal objects each call); device 0 first sleeps, then mines."""
        ids = sorted(snapshot.devices)
        assignments = [
            Assignment(ids[0], SLEEP, "test", 0.0),
            Assignment(ids[0], MINE, "test", 0.0),
        ]
        assignments += [Assignment(i, Workload.mine("main"), "test", 0.0) for i in ids[1:]]
        return Plan(created_at=snapshot.now, assignments=tuple(assignments))


class Alternating:
    """Every device sleeps on even intervals and mines on odd ones (the same objects)."""

    name = "alternating"

    def plan(self, snapshot: Snapshot) -> Plan:
        """All devices the same workload."""
        workload = SLEEP if int(snapshot.now // 900) % 2 == 0 else MINE
        return Plan(
            created_at=snapshot.now,
            assignments=tuple(Assignment(i, workload, "test", 0.0) for i in snapshot.devices),
        )


def _run(policy: object, devices: int = 3) -> tuple[int, float]:
    config = load_config(FLEETS / "s21.toml")
    config.device_ranges[0].count = devices
    trace = load_trace(PRICES, BTC, date(2024, 8, 19), date(2024, 8, 19))
    result, _ = simulate_policy(
        policy,  # type: ignore[arg-type]
        config.all_devices(),
        trace,
        info="realtime",
        costs=SwitchingCosts(),
        pool_fee=config.economics.pool_fee,
        power_cap_w=config.site.power_cap_kw * 1000.0,
    )
    return result.switches, result.energy_mwh


def test_a_device_named_twice_switches_twice_per_interval() -> None:
    switches, _ = _run(Flapping())
    assert switches == 2 * 96  # sleep then wake, each of the 96 intervals; the others never switch


def test_every_change_of_workload_is_counted() -> None:
    switches, energy_mwh = _run(Alternating())
    assert switches == 3 * 96  # 3 devices, every interval (the first one sleeps them)
    s21_kw, sleep_kw = 3.5, 0.015  # deploy/fleets/s21.toml's model facts (models table)
    expected_mwh = 3 * 48 * (s21_kw + sleep_kw) * 0.25 / 1000
    assert abs(energy_mwh - expected_mwh) < 1e-3 * expected_mwh


class AsTuple:
    """max-margin with its grouped plan turned into the tuple of the same assignments."""

    name = "max-margin-as-tuple"

    def __init__(self) -> None:
        self.inner = MaxMarginPolicy(power_levels=(0.8, 1.0))

    def plan(self, snapshot: Snapshot) -> Plan:
        """The inner plan, read out device by device."""
        plan = self.inner.plan(snapshot)
        return Plan(created_at=plan.created_at, assignments=tuple(plan.assignments))


def test_grouped_and_tuple_plans_settle_to_the_same_bits() -> None:
    """Settling group by group gives exactly the floats of settling the equal tuple."""
    config = load_config(FLEETS / "s21.toml")
    config.device_ranges[0].count = 40
    config.site.power_cap_kw = 40 * 3.5 * 0.7  # the cap binds: classes split between options
    trace = load_trace(PRICES, BTC, date(2024, 8, 1), date(2024, 8, 31))
    results = []
    for policy in (MaxMarginPolicy(power_levels=(0.8, 1.0)), AsTuple()):
        result, violations = simulate_policy(
            policy,  # type: ignore[arg-type]
            config.all_devices(),
            trace,
            info="lagged",
            costs=SwitchingCosts(switch_cost_usd=0.1),
            pool_fee=config.economics.pool_fee,
            power_cap_w=config.site.power_cap_kw * 1000.0,
        )
        results.append((result, violations))
    (grouped, grouped_violations), (flat, flat_violations) = results
    assert grouped.switches > 0  # the month has prices on both sides of break-even
    assert (grouped.as_dict(), grouped_violations) == (flat.as_dict(), flat_violations)
    assert grouped.margin_series_usd == flat.margin_series_usd
    assert grouped.power_series_kw == flat.power_series_kw


GPU_NODE = gpu_node()


class SleepThenAi:
    """The GPU node sleeps in the first interval and serves ai(train) from then on."""

    name = "sleep-then-ai"

    def plan(self, snapshot: Snapshot) -> Plan:
        """Sleep at t=0, AI after."""
        workload = SLEEP if snapshot.now == 0 else Workload.ai("train")
        return Plan(snapshot.now, (Assignment(GPU_NODE.id, workload, "test", 0.0),))


def test_an_ai_workload_draws_the_planned_power_of_the_guard() -> None:
    """AI work is settled at nominal power (as the Guard plans it), earning no mining revenue."""
    trace = load_trace(PRICES, BTC, date(2024, 8, 19), date(2024, 8, 19))
    result, _ = simulate_policy(
        SleepThenAi(),
        [GPU_NODE],
        trace,
        info="realtime",
        costs=SwitchingCosts(),
        pool_fee=0.0,
        power_cap_w=1e9,
    )
    ai_kw = planned_power_w(GPU_NODE, Workload.ai("train")) / 1000
    assert ai_kw == 6.0
    assert result.power_series_kw == [0.8] + [ai_kw] * 95
    assert result.switches == 2  # mine -> sleep -> ai
    assert result.revenue_usd == 0.0
