"""The backtester: replays recorded power prices and BTC days through a policy for a configured fleet.

Each 15-minute interval t the policy (the same object the daemon runs) gets a
Snapshot and returns a Plan; the fleet then runs that plan for the interval
and is settled at the interval's real-time price.  Information models:

- ``lagged``: the snapshot's power price is the real-time price of t-1 (the
  last one a site has seen when interval t starts; the day-ahead price of t
  for the very first interval);
- ``realtime``: it is the real-time price of t itself, acted on from t's start;
- ``sced5``: it is the real-time price of t, but the decision acts only from
  5 minutes into t (a live ERCOT site sees the 5-minute SCED price as it is
  published); the first 5 minutes of t run on the previous decision.  The
  15-minute record is taken as flat within each interval (one price for all
  three 5-minute parts).  The naive threshold and the hindsight optimum get
  the same model.

Switching costs: a miner woken from sleep spends ``wake_seconds`` at full
power without earning (warm-up), and every change of workload costs
``switch_cost_usd``.  Three baselines are settled the same way: always-on,
the naive threshold (mine while the last real-time price of the information
model is at or below break-even) and the hindsight optimum, an exact dynamic
programme over the whole trace per class of identical devices.  The optimum
is exact when the site cap does not bind; otherwise it ignores the cap and is
reported with ``optimum_exact: false``.

Revenue uses the BTC row of the interval's UTC date (an evening in Texas is
already the next UTC day), net of the configured pool fee; on the UTC day of a
halving the subsidy changes at the halving block's time
(``drivers.market.history.subsidy_over``), not at a date.  Transaction fees
per block come from the BTC file's ``fees_btc_per_block`` column when it has
one, else they are ``fee_fraction`` of the subsidy (default 0.02, about the
2024-25 mean after the halving; the shipped record has no fees column).  A device the policy puts on AI work draws its planned
power (``scheduler.core.power``: nominal, as the Guard counts it) and earns
nothing: the record holds no AI prices.  The Guard is not applied: at
15-minute steps its dwell rule does not bind, and plans that exceed the cap
are counted in ``cap_violations`` instead of being corrected.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date
from itertools import repeat
from operator import attrgetter, is_
from types import MappingProxyType
from typing import Any, Literal

from drivers.market.history import (
    INTERVAL,
    BtcDay,
    DataPath,
    PriceInterval,
    load_btc_daily_csv,
    load_ercot_csv,
    subsidy_over,
)
from scheduler.backtest import feasible
from scheduler.backtest.optimum import hindsight_decisions
from scheduler.config.schema import WattmuxConfig
from scheduler.core.economics import breakeven_usd_per_mwh, hashprice_usd_per_th_day
from scheduler.core.model import (
    TERA,
    Device,
    DeviceStatus,
    GroupedAssignments,
    MarketState,
    Plan,
    Reading,
    Snapshot,
    Workload,
    WorkloadKind,
)
from scheduler.core.power import planned_power_w
from scheduler.policies import Policy

INTERVAL_SECONDS = 900.0
INTERVAL_HOURS = 0.25
DEFAULT_FEE_FRACTION = 0.02  # transaction fees as a share of the subsidy, without a fees column
InfoModel = Literal["lagged", "realtime", "sced5"]
OptimumKind = Literal["exact", "upper_bound"]
INFO_MODELS: tuple[InfoModel, ...] = ("lagged", "realtime", "sced5")
SCED_DELAY_SECONDS = 300.0  # sced5: a decision acts this long into its interval
ProgressCallback = Callable[[int, int], None]


class BacktestError(ValueError):
    """The inputs of a backtest do not fit together (no intervals, a day without BTC data...)."""


@dataclass(frozen=True, slots=True)
class SwitchingCosts:
    """What a change of workload costs: warm-up seconds without revenue, and USD per switch."""

    wake_seconds: float = 300.0
    switch_cost_usd: float = 0.0

    def __post_init__(self) -> None:
        """Reject values outside one interval or below zero."""
        if not 0.0 <= self.wake_seconds <= INTERVAL_SECONDS:
            raise BacktestError(f"wake_seconds must be in [0, 900], got {self.wake_seconds}")
        if not (math.isfinite(self.switch_cost_usd) and self.switch_cost_usd >= 0):
            raise BacktestError(f"switch_cost_usd must be >= 0, got {self.switch_cost_usd}")


@dataclass(frozen=True, slots=True)
class Trace:
    """Price intervals and the hashprice inputs (BTC day) of each."""

    intervals: tuple[PriceInterval, ...]
    days: tuple[BtcDay, ...]  # one per interval (the interval's UTC date)
    fee_fraction: float = DEFAULT_FEE_FRACTION  # fees / subsidy where a day has no fees figure

    def reward(self, index: int) -> tuple[float, float]:
        """(block subsidy, transaction fees) in BTC per block during interval ``index``."""
        interval, day = self.intervals[index], self.days[index]
        subsidy = subsidy_over(day, interval.start, interval.start + INTERVAL)
        fees = day.fees_btc_per_block
        return subsidy, subsidy * self.fee_fraction if fees is None else fees

    @property
    def fees_source(self) -> str:
        """Where the transaction fees come from: the BTC file's column, or the fraction."""
        if all(day.fees_btc_per_block is not None for day in self.days):
            return "column"
        return f"{self.fee_fraction:g} x subsidy"


@dataclass(slots=True)
class StrategyResult:
    """Totals of one strategy over the trace, and per-interval series for the plot."""

    name: str
    revenue_usd: float = 0.0
    energy_cost_usd: float = 0.0
    switching_cost_usd: float = 0.0
    switches: int = 0
    energy_mwh: float = 0.0
    energy_curtailed_mwh: float = 0.0
    margin_series_usd: list[float] = field(default_factory=list)
    power_series_kw: list[float] = field(default_factory=list)

    @property
    def margin_usd(self) -> float:
        """Revenue minus energy cost minus switching cost."""
        return self.revenue_usd - self.energy_cost_usd - self.switching_cost_usd

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready totals."""
        return {
            "margin_usd": round(self.margin_usd, 4),
            "revenue_usd": round(self.revenue_usd, 4),
            "energy_cost_usd": round(self.energy_cost_usd, 4),
            "switching_cost_usd": round(self.switching_cost_usd, 4),
            "switches": self.switches,
            "energy_mwh": round(self.energy_mwh, 6),
            "energy_curtailed_mwh": round(self.energy_curtailed_mwh, 6),
        }


@dataclass(slots=True)
class BacktestReport:
    """Everything a backtest found: the policy and the three baselines."""

    policy_name: str
    info: InfoModel
    costs: SwitchingCosts
    trace: Trace
    devices: int
    models: dict[str, int]
    nominal_kw: float
    power_cap_kw: float
    policy: StrategyResult
    always_on: StrategyResult
    naive: StrategyResult
    optimum: StrategyResult
    cap_violations: int
    breakeven_series: dict[str, list[float]]
    optimum_kind: OptimumKind = "exact"

    @property
    def optimum_exact(self) -> bool:
        """True when the optimum is the site's exact optimum under its cap, not an upper bound."""
        return self.optimum_kind == "exact"

    def violations(self, result: StrategyResult) -> int:
        """Intervals in which a strategy drew more than the site cap.

        Under ``sced5`` the first 5 minutes of the first interval run on the
        state before the trace (every miner mining), which no strategy chose:
        that interval is not counted.
        """
        cap_kw = self.power_cap_kw + 1e-6
        series = result.power_series_kw[1:] if carry_fraction(self.info) else result.power_series_kw
        return sum(kw > cap_kw for kw in series)

    def captured(self, result: StrategyResult) -> float | None:
        """Share of the money switching can earn that a strategy earned; None if there is none."""
        room = self.optimum.margin_usd - self.always_on.margin_usd
        if room <= 0:
            return None
        return (result.margin_usd - self.always_on.margin_usd) / room

    def as_dict(self) -> dict[str, Any]:
        """The JSON document of ``wattmux backtest``."""
        first, last = self.trace.intervals[0], self.trace.intervals[-1]
        policy = self.policy.as_dict()
        captured = self.captured(self.policy)
        policy["curtailment_value_captured"] = None if captured is None else round(captured, 4)
        policy["cap_violations"] = self.cap_violations
        naive = self.naive.as_dict()
        naive_captured = self.captured(self.naive)
        naive["curtailment_value_captured"] = (
            None if naive_captured is None else round(naive_captured, 4)
        )
        naive["cap_violations"] = self.violations(self.naive)
        always_on = self.always_on.as_dict()
        always_on["cap_violations"] = self.violations(self.always_on)
        optimum = self.optimum.as_dict()
        # An upper bound may draw above the cap: it is a bound, not a schedule a site could run.
        optimum["cap_violations"] = self.violations(self.optimum)
        return {
            "policy": self.policy_name,
            "info": self.info,
            "trace": {
                "first_interval_local": f"{first.start:%Y-%m-%d %H:%M}",
                "last_interval_local": f"{last.start:%Y-%m-%d %H:%M}",
                "intervals": len(self.trace.intervals),
            },
            "fleet": {
                "devices": self.devices,
                "models": self.models,
                "nominal_kw": round(self.nominal_kw, 3),
                "power_cap_kw": self.power_cap_kw,
            },
            "switching": {
                "wake_seconds": self.costs.wake_seconds,
                "switch_cost_usd": self.costs.switch_cost_usd,
            },
            "btc": {"day": "UTC", "transaction_fees": self.trace.fees_source},
            "curtailment_value_captured": policy["curtailment_value_captured"],
            "optimum_exact": self.optimum_exact,
            "cap_violations": self.cap_violations,
            "optimum": self.optimum_kind,
            "strategies": {
                "policy": policy,
                "always_on": always_on,
                "naive_threshold": naive,
                "optimum": optimum,
            },
        }


def load_trace(
    prices: DataPath,
    btc: DataPath,
    start: date | None = None,
    end: date | None = None,
    *,
    fee_fraction: float = DEFAULT_FEE_FRACTION,
) -> Trace:
    """Load an ERCOT price CSV and a BTC daily CSV, keep local dates in [start, end].

    Each interval gets the BTC row of its UTC date.
    """
    if not (math.isfinite(fee_fraction) and 0.0 <= fee_fraction <= 10.0):
        raise BacktestError(f"fee_fraction must be in [0, 10], got {fee_fraction}")
    intervals = [
        interval
        for interval in load_ercot_csv(prices)
        if (start is None or interval.start.date() >= start)
        and (end is None or interval.start.date() <= end)
    ]
    if not intervals:
        raise BacktestError(
            f"no price intervals between {start or 'the start'} and {end or 'the end'}"
        )
    by_date = {day.date_utc: day for day in load_btc_daily_csv(btc)}
    days: list[BtcDay] = []
    for interval in intervals:
        utc_date = interval.start.astimezone(UTC).date()
        day = by_date.get(utc_date)
        if day is None:
            raise BacktestError(f"no BTC row for {utc_date} (UTC) in {btc}")
        days.append(day)
    return Trace(intervals=tuple(intervals), days=tuple(days), fee_fraction=fee_fraction)


def info_prices(trace: Trace, info: InfoModel) -> list[float]:
    """The power price a decision for each interval may see under the information model."""
    realtime = [interval.rtm_usd_per_mwh for interval in trace.intervals]
    if info in ("realtime", "sced5"):
        return realtime
    return [trace.intervals[0].dam_usd_per_mwh, *realtime[:-1]]


def carry_fraction(info: InfoModel) -> float:
    """Share of each interval still run on the previous decision under the information model."""
    return SCED_DELAY_SECONDS / INTERVAL_SECONDS if info == "sced5" else 0.0


def _hashprices(trace: Trace, pool_fee: float) -> list[float]:
    """USD per TH/s per day for each interval: subsidy and fees of its UTC day and time."""
    cache: dict[tuple[date, float, float], float] = {}
    out = []
    for index, day in enumerate(trace.days):
        subsidy, fees = trace.reward(index)
        key = (day.date_utc, subsidy, fees)
        value = cache.get(key)
        if value is None:
            value = cache[key] = hashprice_usd_per_th_day(
                day.difficulty, day.btc_close_usd, subsidy, fees, pool_fee
            )
        out.append(value)
    return out


def _market(trace: Trace, index: int, price: float, now: float) -> MarketState:
    day = trace.days[index]
    subsidy, fees = trace.reward(index)
    source = "backtest"
    return MarketState(
        btc_price_usd=Reading(day.btc_close_usd, now, source),
        difficulty=Reading(day.difficulty, now, source),
        block_subsidy_btc=Reading(subsidy, now, source),
        fees_btc_per_block=Reading(fees, now, source),
        power_price_usd_per_mwh=Reading(price, now, source),
    )


def _hashrate_ths(device: Device, workload: Workload) -> float:
    if workload.kind is WorkloadKind.MINE:
        return device.nominal_hashrate_hs / TERA * workload.power_level
    return 0.0


_workload_of = attrgetter("workload")
_device_id_of = attrgetter("device_id")


@dataclass(slots=True)
class _Replay:
    """The simulated fleet under a policy: each device's workload and the fleet's running totals.

    Totals are updated device by device, in plan order, with the same float
    operations whatever the shape of the plan (tuple or groups), so a grouped
    plan settles to the same bits as the equal tuple of assignments.
    """

    devices: Mapping[str, Device]
    current: dict[str, Workload]
    hashrate_ths: float
    power_w: float
    wake_seconds: float
    switches: int = 0
    lost_revenue: float = 0.0
    changed: bool = False

    def assign(self, device_id: str, new: Workload, revenue_per_th_hour: float) -> None:
        """Settle one assignment: a switch when the workload changes.

        An AI workload is run too: the device draws its planned power (nominal,
        ``scheduler.core.power``) and earns nothing, the trace holding no AI prices.
        """
        old = self.current.get(device_id)
        if new is old or old is None:
            return
        if new == old:
            # An equal object: keep the plan's, so the next identical plan is seen by identity.
            self.current[device_id] = new
            self.changed = True
            return
        device = self.devices.get(device_id)
        if device is None:
            return
        self.switches += 1
        self.hashrate_ths += _hashrate_ths(device, new) - _hashrate_ths(device, old)
        self.power_w += planned_power_w(device, new) - planned_power_w(device, old)
        if new.is_running and not old.is_running:
            self.lost_revenue += (
                _hashrate_ths(device, new) * revenue_per_th_hour * self.wake_seconds / 3600.0
            )
        self.current[device_id] = new
        self.changed = True

    def run(self, plan: Plan, revenue_per_th_hour: float) -> None:
        """Settle a plan in order; only devices whose workload object differs are looked at."""
        self.switches = 0
        self.lost_revenue = 0.0
        current_of = self.current.get
        assignments = plan.assignments
        if isinstance(assignments, GroupedAssignments):
            for group in assignments.groups:
                new, ids = group.workload, group.device_ids
                if all(map(is_, map(current_of, ids), repeat(new))):
                    continue  # every device of the group already runs this very object
                for device_id in ids:
                    self.assign(device_id, new, revenue_per_th_hour)
            return
        workloads = list(map(_workload_of, assignments))
        if all(map(is_, map(current_of, map(_device_id_of, assignments)), workloads)):
            return  # every device already runs this very object: nothing to settle
        for assignment, new in zip(assignments, workloads, strict=True):
            self.assign(assignment.device_id, new, revenue_per_th_hour)


def simulate_policy(
    policy: Policy,
    devices: Sequence[Device],
    trace: Trace,
    *,
    info: InfoModel,
    costs: SwitchingCosts,
    pool_fee: float,
    power_cap_w: float,
    progress: ProgressCallback | None = None,
) -> tuple[StrategyResult, int]:
    """Run the policy over the trace; return its result and the number of intervals over the cap."""
    device_map = MappingProxyType({d.id: d for d in devices})
    status = MappingProxyType({d.id: DeviceStatus(reachable=True) for d in devices})
    no_samples: MappingProxyType[str, Any] = MappingProxyType({})
    current: dict[str, Workload] = {d.id: Workload.mine(d.pools[0]) for d in devices if d.pools}
    replay = _Replay(
        devices=device_map,
        current=current,
        hashrate_ths=sum(_hashrate_ths(device_map[d], w) for d, w in current.items()),
        power_w=sum(planned_power_w(d, current[d.id]) if d.id in current else 0.0 for d in devices),
        wake_seconds=costs.wake_seconds,
    )
    nominal_w = sum(d.nominal_power_w for d in devices)
    prices = info_prices(trace, info)
    hashprices = _hashprices(trace, pool_fee)
    result = StrategyResult("policy")
    violations = 0
    cumulative = 0.0
    total = len(trace.intervals)
    step = max(1, total // 100)
    current_view = MappingProxyType(dict(current))  # the policy's copy, renewed when one changes
    carry = carry_fraction(info)
    for index, interval in enumerate(trace.intervals):
        now = index * INTERVAL_SECONDS
        snapshot = Snapshot(
            now=now,
            wall=interval.start.astimezone(UTC),
            devices=device_map,
            samples=no_samples,
            status=status,
            market=_market(trace, index, prices[index], now),
            pool_fee=pool_fee,
            current=current_view,
            power_cap_w=power_cap_w,
        )
        revenue_per_th_hour = hashprices[index] / 24.0
        replay.changed = False
        power_before_w, hashrate_before_ths = replay.power_w, replay.hashrate_ths
        replay.run(policy.plan(snapshot), revenue_per_th_hour)
        if replay.changed:
            current_view = MappingProxyType(dict(current))
        power_w, switches, hashrate_ths = replay.power_w, replay.switches, replay.hashrate_ths
        if power_w > power_cap_w + 1e-6:
            violations += 1
        if carry:  # sced5: the first part of the interval on the previous workloads
            power_w = carry * power_before_w + (1.0 - carry) * power_w
            hashrate_ths = carry * hashrate_before_ths + (1.0 - carry) * hashrate_ths
        revenue = hashrate_ths * revenue_per_th_hour * INTERVAL_HOURS - replay.lost_revenue
        energy_mwh = power_w / 1e6 * INTERVAL_HOURS
        energy_cost = energy_mwh * interval.rtm_usd_per_mwh
        switch_cost = switches * costs.switch_cost_usd
        result.revenue_usd += revenue
        result.energy_cost_usd += energy_cost
        result.switching_cost_usd += switch_cost
        result.switches += switches
        result.energy_mwh += energy_mwh
        result.energy_curtailed_mwh += (nominal_w - power_w) / 1e6 * INTERVAL_HOURS
        cumulative += revenue - energy_cost - switch_cost
        result.margin_series_usd.append(cumulative)
        result.power_series_kw.append(power_w / 1000.0)
        if progress is not None and (index % step == 0 or index == total - 1):
            progress(index + 1, total)
    return result, violations


@dataclass(frozen=True, slots=True)
class _DeviceClass:
    """Identical devices: settled once, multiplied by count."""

    hashrate_ths: float
    power_w: float
    sleep_power_w: float
    count: int


def _classes(devices: Sequence[Device]) -> list[_DeviceClass]:
    counts: dict[tuple[float, float, float], int] = {}
    for device in devices:
        if device.pools:
            key = (device.nominal_hashrate_hs / TERA, device.nominal_power_w, device.sleep_power_w)
            counts[key] = counts.get(key, 0) + 1
    return [_DeviceClass(h, p, s, n) for (h, p, s), n in counts.items()]


def _settle(
    name: str,
    classes: Sequence[tuple[_DeviceClass, Sequence[bool]]],
    trace: Trace,
    hashprices: Sequence[float],
    costs: SwitchingCosts,
    carry: float = 0.0,
) -> StrategyResult:
    """Settle per-class mine/sleep decision series (True = the whole class mines at stock power)."""
    return _settle_counts(
        name,
        [(cls, [cls.count if mine else 0 for mine in mining]) for cls, mining in classes],
        trace,
        hashprices,
        costs,
        carry,
    )


def _settle_counts(
    name: str,
    classes: Sequence[tuple[_DeviceClass, Sequence[int]]],
    trace: Trace,
    hashprices: Sequence[float],
    costs: SwitchingCosts,
    carry: float = 0.0,
) -> StrategyResult:
    """Settle per-class series of how many miners mine (the rest sleep); all mine before the start.

    ``carry``: share of each interval still run on the previous interval's counts (sced5).
    """
    result = StrategyResult(name)
    total = len(trace.intervals)
    margin = [0.0] * total
    power = [0.0] * total
    for cls, mining in classes:
        previous = cls.count
        for index, interval in enumerate(trace.intervals):
            decided = mining[index]
            on = carry * previous + (1.0 - carry) * decided if carry else decided
            off = cls.count - on
            revenue_per_hour = cls.hashrate_ths * hashprices[index] / 24.0
            watts = cls.power_w * on + cls.sleep_power_w * off
            revenue = revenue_per_hour * INTERVAL_HOURS * on
            change = decided - previous
            switch_cost = abs(change) * costs.switch_cost_usd
            result.switches += abs(change)
            if change > 0:
                revenue -= revenue_per_hour * costs.wake_seconds / 3600.0 * change
            previous = decided
            energy_mwh = watts / 1e6 * INTERVAL_HOURS
            cost = energy_mwh * interval.rtm_usd_per_mwh
            result.revenue_usd += revenue
            result.energy_cost_usd += cost
            result.switching_cost_usd += switch_cost
            result.energy_mwh += energy_mwh
            result.energy_curtailed_mwh += (
                (cls.power_w - cls.sleep_power_w) * off / 1e6 * INTERVAL_HOURS
            )
            margin[index] += revenue - cost - switch_cost
            power[index] += watts / 1000.0
    cumulative = 0.0
    for index in range(total):
        cumulative += margin[index]
        result.margin_series_usd.append(cumulative)
    result.power_series_kw = power
    return result


def optimum_decisions(
    cls: _DeviceClass,
    trace: Trace,
    hashprices: Sequence[float],
    costs: SwitchingCosts,
    allowed: Sequence[bool] | None = None,
    carry: float = 0.0,
) -> list[bool]:
    """Hindsight-optimal mine/sleep series of one device (exact DP, starts mining).

    With ``allowed``, the device may sleep only in the intervals where it is true;
    ``carry``: share of each interval run on the previous decision (sced5).
    """
    mine_gain, sleep_gain, wake_cost = _gains(cls, trace, hashprices, costs)
    return hindsight_decisions(
        mine_gain, sleep_gain, wake_cost, costs.switch_cost_usd, allowed, carry
    )


def _gains(
    cls: _DeviceClass, trace: Trace, hashprices: Sequence[float], costs: SwitchingCosts
) -> tuple[list[float], list[float], list[float]]:
    """Per interval, USD one miner of the class earns mining / asleep, and a wake's cost."""
    mine_gain: list[float] = []
    sleep_gain: list[float] = []
    wake_cost: list[float] = []
    for index, interval in enumerate(trace.intervals):
        revenue_per_hour = cls.hashrate_ths * hashprices[index] / 24.0
        price = interval.rtm_usd_per_mwh
        mine_gain.append(
            revenue_per_hour * INTERVAL_HOURS - cls.power_w / 1e6 * INTERVAL_HOURS * price
        )
        sleep_gain.append(-cls.sleep_power_w / 1e6 * INTERVAL_HOURS * price)
        wake_cost.append(revenue_per_hour * costs.wake_seconds / 3600.0 + costs.switch_cost_usd)
    return mine_gain, sleep_gain, wake_cost


def naive_decisions(
    cls: _DeviceClass, prices: Sequence[float], hashprices: Sequence[float]
) -> list[bool]:
    """Mine while the price the information model shows is at or below break-even."""
    efficiency = cls.power_w / cls.hashrate_ths
    return [
        price <= breakeven_usd_per_mwh(hashprice, efficiency)
        for price, hashprice in zip(prices, hashprices, strict=True)
    ]


def _baselines(
    classes: Sequence[_DeviceClass],
    trace: Trace,
    prices: Sequence[float],
    hashprices: Sequence[float],
    costs: SwitchingCosts,
    power_cap_w: float,
    carry: float = 0.0,
    known_optimum: tuple[StrategyResult, OptimumKind] | None = None,
    exact_optimum: bool = True,
) -> tuple[StrategyResult, StrategyResult, StrategyResult, OptimumKind]:
    """Always-on, the naive threshold and the optimum, all within the site cap where they can be.

    While the fleet's full power fits the cap every class decides alone (as
    before).  Otherwise always-on and naive mine in merit order under the cap
    and the optimum is the exact DP over class counts
    (``scheduler.backtest.feasible``); beyond its ``MAX_STATES`` it is the
    per-device optimum without the cap, reported as an upper bound.
    ``known_optimum``: an optimum already settled for the same fleet, trace,
    costs and carry (the hindsight optimum does not depend on what the
    decisions see), used as it is.
    """
    total = len(trace.intervals)
    full_w = sum(c.power_w * c.count for c in classes)
    naive_series = [naive_decisions(c, prices, hashprices) for c in classes]

    def uncapped_optimum() -> StrategyResult:
        """The hindsight optimum per class, the cap left out (exact where the cap cannot bind)."""
        return _settle(
            "optimum",
            [(c, optimum_decisions(c, trace, hashprices, costs, carry=carry)) for c in classes],
            trace,
            hashprices,
            costs,
            carry,
        )

    if full_w <= power_cap_w + 1e-6:
        always = [True] * total
        always_on = _settle(
            "always_on", [(c, always) for c in classes], trace, hashprices, costs, carry
        )
        naive = _settle(
            "naive_threshold",
            list(zip(classes, naive_series, strict=True)),
            trace,
            hashprices,
            costs,
            carry,
        )
        if known_optimum is not None:
            return always_on, naive, *known_optimum
        return always_on, naive, uncapped_optimum(), "exact"
    limit = [power_cap_w] * total
    always_on = _settle_counts(
        "always_on",
        list(
            zip(
                classes,
                feasible.merit_counts(classes, [[True] * total] * len(classes), limit),
                strict=True,
            )
        ),
        trace,
        hashprices,
        costs,
        carry,
    )
    naive = _settle_counts(
        "naive_threshold",
        list(zip(classes, feasible.merit_counts(classes, naive_series, limit), strict=True)),
        trace,
        hashprices,
        costs,
        carry,
    )
    if known_optimum is not None:
        return always_on, naive, *known_optimum
    if exact_optimum and feasible.states(classes) <= feasible.MAX_STATES:
        gains = [_gains(c, trace, hashprices, costs) for c in classes]
        counts, _ = feasible.optimum_counts(
            classes,
            [g[0] for g in gains],
            [g[1] for g in gains],
            [g[2] for g in gains],
            costs.switch_cost_usd,
            limit,
            carry,
        )
        optimum = _settle_counts(
            "optimum", list(zip(classes, counts, strict=True)), trace, hashprices, costs, carry
        )
        return always_on, naive, optimum, "exact"
    return always_on, naive, uncapped_optimum(), "upper_bound"


def run_backtest(
    config: WattmuxConfig,
    policy: Policy,
    trace: Trace,
    *,
    info: InfoModel = "lagged",
    costs: SwitchingCosts | None = None,
    progress: ProgressCallback | None = None,
    optimum_of: BacktestReport | None = None,
    exact_optimum: bool = True,
) -> BacktestReport:
    """Replay the trace through the policy and the three baselines for the configured fleet.

    ``optimum_of``: a report of the same fleet, trace and costs whose information
    model acts at the same time (lagged and realtime both act from the start of
    the interval): its optimum is reused instead of solved again.
    ``exact_optimum=False``: where the cap binds, report the optimum without the
    cap as an upper bound instead of solving the exact DP (cheaper).
    """
    if info not in INFO_MODELS:
        raise BacktestError(f"info must be one of {', '.join(INFO_MODELS)}, got {info!r}")
    costs = costs or SwitchingCosts()
    devices = config.all_devices()
    pool_fee = config.economics.pool_fee
    power_cap_w = config.site.power_cap_kw * 1000.0
    policy_result, violations = simulate_policy(
        policy,
        devices,
        trace,
        info=info,
        costs=costs,
        pool_fee=pool_fee,
        power_cap_w=power_cap_w,
        progress=progress,
    )
    hashprices = _hashprices(trace, pool_fee)
    prices = info_prices(trace, info)
    classes = _classes(devices)
    known = None
    if optimum_of is not None:
        if carry_fraction(optimum_of.info) != carry_fraction(info) or optimum_of.costs != costs:
            raise BacktestError("optimum_of must act at the same time and have the same costs")
        known = (optimum_of.optimum, optimum_of.optimum_kind)
    always_on, naive, optimum, optimum_kind = _baselines(
        classes,
        trace,
        prices,
        hashprices,
        costs,
        power_cap_w,
        carry_fraction(info),
        known,
        exact_optimum,
    )
    models: dict[str, int] = {}
    breakeven_series: dict[str, list[float]] = {}
    for device in devices:
        models[device.model] = models.get(device.model, 0) + 1
        if device.model not in breakeven_series:
            efficiency = device.efficiency_j_per_th
            breakeven_series[device.model] = [
                breakeven_usd_per_mwh(h, efficiency) for h in hashprices
            ]
    return BacktestReport(
        policy_name=getattr(policy, "name", type(policy).__name__),
        info=info,
        costs=costs,
        trace=trace,
        devices=len(devices),
        models=models,
        nominal_kw=sum(d.nominal_power_w for d in devices) / 1000.0,
        power_cap_kw=config.site.power_cap_kw,
        policy=policy_result,
        always_on=always_on,
        naive=naive,
        optimum=optimum,
        optimum_kind=optimum_kind,
        cap_violations=violations,
        breakeven_series=breakeven_series,
    )
