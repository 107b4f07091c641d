"""``max-margin``: the site's workloads and power levels that earn the most under its power limit.

A multiple-choice knapsack: every device picks one option (sleep, or mine at
one of the configured power levels); the sum of their power must fit the site
limit, which is the site power cap lowered by any active demand-response event.
Solved greedily by marginal margin per kW on each device's upper concave hull
of (power, margin): start every device at its lowest-power option, then take
upgrades in decreasing USD per kWh until the limit is reached, skipping those
that no longer fit (``scheduler.policies.knapsack``; exact for small sites).
Identical devices (same facts, pool and current workload) form one class and
are decided together (``scheduler.policies.grouping``), so 100,000 devices
cost little more than their number of classes.  Each device's own measured
efficiency counts where its readings can be trusted
(``scheduler.policies.efficiency``: smoothed measured power and hash rate, not
estimated power): a class is split by the measured / nominal power and hash
rate ratios (2 decimals) and each part's options use its measured figures, so
the knapsack ranks machines by their own J/TH; devices without trustworthy
readings keep the model's nominal figures.  Against the power limit a device
counts its nominal power or its smoothed measured power where that is
higher, as the Guard counts it (the Guard by the latest measured sample): a
machine measured below its nominal figure is not planned into room the Guard
does not see, and one that draws more is not planned past the cap.

Switching is not free (a woken miner spends ``wake_seconds`` at full power
without revenue, and every change may cost ``switch_cost_usd``), so a change
away from the current workload must beat it by a band: a mining device sleeps
only above break-even + the sleep band; a sleeping one wakes only below
break-even - the wake band.  With ``switching = "cost-aware"`` (the default)
the bands are derived from the costs: a sleep (or a wake) pays when the
saving at the current price over the expected length of the excursion
exceeds what the round trip costs,

    band x swing MW x expected hours > wake loss + 2 x switch cost,

with the wake loss = ``wake_seconds`` of the device's revenue, and the expected
hours = the mean length of past runs of the price above break-even (to sleep),
or the mean time it stayed at or below break-even from a price like the
current one (to wake: a price just under break-even after a spike often
climbs back soon), learned only from the prices the policy has seen
(``scheduler.policies.excursions``, the last 2,880 readings), at most
``max_sleep_excursion_hours`` (0.6) / ``max_wake_excursion_hours`` (24): a
switch must pay back within that time.  At the default 300 s warm-up and no
switch cost the sleep cap gives the former fixed sleep band (14 % of
break-even) wherever past runs above break-even are longer; shorter runs
widen the band, a cheaper warm-up narrows it, a switch cost widens it.  The
wake side is not capped short: a sleeping miner that waits for a calm run to
pay back a large switch cost within an hour would never wake.  With ``switching = "bands"`` each band is
a fixed USD/MWh plus a fraction of the device's break-even (defaults 14 % to
sleep, 6 % to wake).  Either way the band enters the knapsack as a penalty on
the options that differ from the current workload, and each assignment's
``detail`` says the band in force.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from scheduler.core.economics import MarketEconomics, market_economics
from scheduler.core.limits import site_limit_w
from scheduler.core.model import (
    TERA,
    AssignmentGroup,
    Device,
    Plan,
    Snapshot,
    Workload,
    WorkloadKind,
)
from scheduler.core.power import planned_power_w
from scheduler.core.reasons import Reason
from scheduler.policies import PolicyPlugin, knapsack
from scheduler.policies.efficiency import MeasuredEfficiency
from scheduler.policies.excursions import ExcursionModel
from scheduler.policies.gpu_queue import plan_gpu_nodes
from scheduler.policies.grouping import DeviceGrouper

Switching = Literal["cost-aware", "bands"]
# Before any price history the expected runs are these (one pseudo-run each, see ExcursionModel):
# at a 300 s warm-up and no switch cost they give the former fixed bands, 14 % / 6 % of break-even.
SLEEP_PRIOR_HOURS = 0.6
WAKE_PRIOR_HOURS = 1.4

HOURS_PER_DAY = 24.0


@dataclass(slots=True)
class _Option:
    """One choice of one device class: workload, real margin, band-adjusted margin, power."""

    workload: Workload
    power_w: float
    margin_usd_per_hour: float
    score_usd_per_hour: float


@dataclass(slots=True)
class _Class:
    """Identical devices in the same state; decided together."""

    device_ids: tuple[str, ...] = ()
    options: list[_Option] = field(default_factory=list)
    pool_reason: Reason | None = None  # why mining options use another pool than the current one
    detail: str = ""  # the switching band in force


class MaxMarginPolicy:
    """Maximise the site's margin under its power cap and active demand-response limits."""

    name = "max-margin"

    def __init__(
        self,
        *,
        sleep_band_usd_per_mwh: float = 0.0,
        wake_band_usd_per_mwh: float = 0.0,
        power_levels: Sequence[float] = (1.0,),
        sleep_band_fraction: float = 0.14,
        wake_band_fraction: float = 0.06,
        pool_fees: Mapping[str, float] | None = None,
        switching: Switching = "cost-aware",
        wake_seconds: float = 300.0,
        switch_cost_usd: float = 0.0,
        max_sleep_excursion_hours: float = 0.6,
        max_wake_excursion_hours: float = 24.0,
    ) -> None:
        bands = (
            sleep_band_usd_per_mwh,
            wake_band_usd_per_mwh,
            sleep_band_fraction,
            wake_band_fraction,
        )
        if min(bands) < 0:
            raise ValueError("bands must be >= 0")
        if switching not in ("cost-aware", "bands"):
            raise ValueError(f"switching must be cost-aware or bands, got {switching!r}")
        if not 0 <= wake_seconds <= 3600 or not 0 <= switch_cost_usd <= 1000:
            raise ValueError("wake_seconds must be in [0, 3600] and switch_cost_usd in [0, 1000]")
        self.switching: Switching = switching
        self.wake_seconds = wake_seconds
        self.switch_cost_usd = switch_cost_usd
        if min(max_sleep_excursion_hours, max_wake_excursion_hours) <= 0:
            raise ValueError("excursion caps must be > 0")
        self.excursions = ExcursionModel()
        self.efficiency = MeasuredEfficiency()
        self.max_sleep_excursion_hours = max_sleep_excursion_hours
        self.max_wake_excursion_hours = max_wake_excursion_hours
        self.pool_fees = dict(pool_fees or {})
        self.sleep_band_fraction = sleep_band_fraction
        self.wake_band_fraction = wake_band_fraction
        if not power_levels or any(not 0.0 < level <= 1.5 for level in power_levels):
            raise ValueError(f"power levels must be in (0, 1.5], got {list(power_levels)}")
        self.sleep_band_usd_per_mwh = sleep_band_usd_per_mwh
        self.wake_band_usd_per_mwh = wake_band_usd_per_mwh
        self.power_levels = tuple(sorted(set(power_levels)))
        self._workloads: dict[tuple[str | None, float], Workload] = {}
        self._grouper = DeviceGrouper()

    @classmethod
    def from_config(cls, config: MaxMarginOptions) -> MaxMarginPolicy:
        """Build from its settings (the [policy] section's)."""
        return cls(
            sleep_band_usd_per_mwh=config.sleep_band_usd_per_mwh,
            wake_band_usd_per_mwh=config.wake_band_usd_per_mwh,
            power_levels=config.power_levels,
            sleep_band_fraction=config.sleep_band_fraction,
            wake_band_fraction=config.wake_band_fraction,
            pool_fees=config.pool_fees,
            switching=config.switching,
            wake_seconds=config.wake_seconds,
            switch_cost_usd=config.switch_cost_usd,
            max_sleep_excursion_hours=config.max_sleep_excursion_hours,
            max_wake_excursion_hours=config.max_wake_excursion_hours,
        )

    def plan(self, snapshot: Snapshot) -> Plan:
        """One assignment per device with pools; empty when market inputs are missing."""
        economics = market_economics(snapshot)
        if economics is None:
            return Plan(created_at=snapshot.now, assignments=())
        price = snapshot.market.power_price_usd_per_mwh
        if price is not None:
            self.excursions.observe(price.observed_at, price.value)
        if snapshot.samples:
            self.efficiency.observe(snapshot)
        classes = self._classes(snapshot, economics)
        limit_w, from_dr = site_limit_w(snapshot)
        choice = knapsack.solve(classes, limit_w)
        limited_reason = Reason.DR_EVENT if from_dr else Reason.POWER_CAP
        groups: list[AssignmentGroup] = []
        for cls, counts in zip(classes, choice, strict=True):
            best_free = max(range(len(cls.options)), key=lambda i: knapsack.rank(cls.options[i]))
            start = 0
            for option_index in range(len(cls.options) - 1, -1, -1):
                count = counts[option_index]
                if not count:
                    continue
                option = cls.options[option_index]
                reason = self._reason(cls, option_index, best_free, limited_reason)
                # One entry for the devices of the class on this option (the class's own tuple
                # when all of them are: no copy); the plan builds per-device objects on reading.
                groups.append(
                    AssignmentGroup(
                        cls.device_ids[start : start + count],
                        option.workload,
                        reason,
                        option.margin_usd_per_hour,
                        detail=cls.detail,
                    )
                )
                start += count
        grouping = self._grouper.last
        if grouping is None or grouping.has_gpu_nodes:
            groups.extend(map(AssignmentGroup.of, plan_gpu_nodes(snapshot, economics)))
        return Plan.grouped(snapshot.now, groups)

    def _classes(self, snapshot: Snapshot, economics: MarketEconomics) -> list[_Class]:
        """Classes of the snapshot's devices, with their options under these economics."""
        classes = []
        split = self.efficiency.split
        for device_ids, device, current in self._grouper.group(snapshot):
            pool, fee_factor, pool_reason = self._pool_choice(device, current, snapshot)
            # Parted by measured / nominal ratios (2 decimals), in order of first appearance.
            for ratio, ids in split(device_ids):
                options, detail = self._options(device, current, pool, fee_factor, economics, ratio)
                classes.append(_Class(ids, options, pool_reason, detail))
        return classes

    def _pool_choice(
        self, device: Device, current: Workload | None, snapshot: Snapshot
    ) -> tuple[str | None, float, Reason | None]:
        """(pool, revenue factor of its fee, reason for a change): lowest fee among pools that are up.

        Ties keep the current pool, then the configured order.  None when every pool is down.
        """
        current_pool = (
            current.pool if current is not None and current.kind is WorkloadKind.MINE else None
        )
        up = [p for p in device.pools if snapshot.pools_up.get(p, True)]
        if not up:
            return None, 1.0, Reason.POOLS_DOWN
        default_fee = snapshot.pool_fee

        def rank(pool: str) -> tuple[float, int, int]:
            return (
                self.pool_fees.get(pool, default_fee),
                pool != current_pool,
                device.pools.index(pool),
            )

        pool = min(up, key=rank)
        fee = self.pool_fees.get(pool, default_fee)
        factor = (1.0 - fee) / (1.0 - default_fee)
        if current_pool is None or pool == current_pool:
            return pool, factor, None
        if current_pool not in up:
            return pool, factor, Reason.POOL_DOWN
        return pool, factor, Reason.LOWER_POOL_FEE

    def _options(
        self,
        device: Device,
        current: Workload | None,
        pool: str | None,
        fee_factor: float,
        economics: MarketEconomics,
        measured: tuple[float, float] | None = None,
    ) -> tuple[list[_Option], str]:
        """Sleep first, then mining levels by rising power (none without a pool); scores carry the bands.

        Also the band in force, in words.  ``measured``: (power, hash rate) as
        ratios of the nominal figures, from the device's trustworthy readings.
        """
        power_ratio, hash_ratio = measured or (1.0, 1.0)
        price = economics.power_price_usd_per_mwh
        revenue_per_level = (
            device.nominal_hashrate_hs
            / TERA
            * economics.hashprice_usd_per_th_day
            / HOURS_PER_DAY
            * fee_factor
            * hash_ratio
        )
        running = current is not None and current.is_running
        sleep = self._workload(None, 0.0)
        sleep_w = planned_power_w(device, sleep)
        sleep_margin = -sleep_w / 1e6 * price
        options = [_Option(sleep, sleep_w, sleep_margin, sleep_margin)]
        for level in self.power_levels if pool is not None else ():
            workload = self._workload(pool, level)
            planned_w = planned_power_w(device, workload)
            power_w = planned_w * power_ratio
            margin = revenue_per_level * level - power_w / 1e6 * price
            # Against the limit a device counts its nominal power, or more where it measurably
            # draws more, as the Guard counts it.
            options.append(_Option(workload, max(power_w, planned_w), margin, margin))
        if current is None:
            return options, ""
        breakeven = revenue_per_level / (device.nominal_power_w * power_ratio) * 1e6
        payback_note = ""
        if self.switching == "bands":
            if running:
                band = self.sleep_band_usd_per_mwh + self.sleep_band_fraction * breakeven
            else:
                band = self.wake_band_usd_per_mwh + self.wake_band_fraction * breakeven
            expected_hours = None
        else:
            # Round trip: the wake's lost revenue plus two switches; saving over the expected run.
            round_trip_usd = (
                revenue_per_level * self.wake_seconds / 3600.0 + 2 * self.switch_cost_usd
            )
            swing_mw = max(device.nominal_power_w - device.sleep_power_w, 1.0) / 1e6
            # A running miner below break-even sleeps only for the site limit (a lasting
            # swap, priced like a wake); above it, for the price excursion.
            excursion = running and price > breakeven
            band, expected_hours = self._derived_band(
                breakeven, excursion, round_trip_usd / swing_mw, None if running else price
            )
            # The shortest excursion a switch at this price pays for (its payback time): the
            # switch is made when the expected excursion is longer.
            gap = price - breakeven if running else breakeven - price
            if gap > 0:
                payback = (round_trip_usd / swing_mw) / gap
                action = "sleep" if running else "wake"
                payback_note = f"; a {action} at {price:.2f} pays back in {payback:.2f} h"
        detail = (
            f"break-even {breakeven:.2f} USD/MWh, "
            + (
                f"sleeps above {breakeven + band:.2f}"
                if running
                else f"wakes below {breakeven - band:.2f}"
            )
            + (
                ""
                if expected_hours is None
                else f" (expected excursion {expected_hours:.2f} h{payback_note})"
            )
        )
        for option in options:
            if option.workload.is_running == running:
                continue  # no warm-up between power levels, none between sleep and off
            swing_w = (
                abs(option.power_w - device.sleep_power_w)
                if not running
                else (device.nominal_power_w - device.sleep_power_w)
            )
            option.score_usd_per_hour -= band * swing_w / 1e6
        return options, detail

    def _derived_band(
        self,
        breakeven: float,
        running: bool,
        cost_usd_per_mw: float,
        wake_price: float | None = None,
    ) -> tuple[float, float]:
        """(band USD/MWh, expected hours): where a switch pays for its round trip.

        band x swing MW x expected hours = round trip, the expected hours being the
        mean length of past runs of the price above break-even (``running``: a
        sleep for a price excursion) or at or below it (a swap under the site
        limit) in the model's window (``ExcursionModel``), at most the
        configured cap (a switch must pay back within it).  For a wake
        (``wake_price``: the price now) they are the mean time the price stayed
        at or below break-even from a price in the same band of price /
        break-even (``ExcursionModel.expected_hours_below``): just under
        break-even after a spike the price often climbs back within the hour,
        far under it it rarely does.
        """
        prior = SLEEP_PRIOR_HOURS if running else WAKE_PRIOR_HOURS
        level = round(breakeven, 1)
        if wake_price is not None:
            hours = self.excursions.expected_hours_below(level, wake_price, prior_hours=prior)
        else:
            hours = self.excursions.mean_run_hours(level, above=running, prior_hours=prior)
        cap = self.max_sleep_excursion_hours if running else self.max_wake_excursion_hours
        hours = min(hours, cap)
        return cost_usd_per_mw / hours, hours

    def _workload(self, pool: str | None, level: float) -> Workload:
        """The same immutable Workload object each call (sleep when pool is None): cheap to compare."""
        key = (pool, level)
        workload = self._workloads.get(key)
        if workload is None:
            workload = Workload.sleep() if pool is None else Workload.mine(pool, level)
            if len(self._workloads) < 4096:
                self._workloads[key] = workload
        return workload

    def _reason(self, cls: _Class, index: int, best_free: int, limited_reason: Reason) -> Reason:
        option = cls.options[index]
        if index != best_free and cls.options[best_free].power_w > option.power_w:
            return limited_reason
        best_real = max(range(len(cls.options)), key=lambda i: cls.options[i].margin_usd_per_hour)
        if cls.pool_reason == Reason.POOLS_DOWN:
            return Reason.POOLS_DOWN
        if index != best_real:
            return Reason.WITHIN_HYSTERESIS
        if option.workload.kind is WorkloadKind.SLEEP:
            return Reason.PRICE_ABOVE_BREAKEVEN
        return cls.pool_reason or Reason.PRICE_BELOW_BREAKEVEN


class MaxMarginOptions(BaseModel):
    """Settings of ``max-margin``: price bands, power levels, pool fees."""

    model_config = ConfigDict(extra="forbid")

    sleep_band_usd_per_mwh: float = Field(
        0.0, ge=0, description="max-margin: a mining device sleeps above break-even + this"
    )
    wake_band_usd_per_mwh: float = Field(
        0.0, ge=0, description="max-margin: a sleeping device wakes below break-even - this"
    )
    sleep_band_fraction: float = Field(
        0.14, ge=0, le=10, description="max-margin: plus this fraction of break-even"
    )
    wake_band_fraction: float = Field(
        0.06, ge=0, le=10, description="max-margin: plus this fraction of break-even"
    )
    switching: Switching = Field(
        "cost-aware",
        description="max-margin: cost-aware (bands from wake_seconds, switch_cost_usd and the "
        "learned length of price excursions) or bands (the fixed *_band_* settings)",
    )
    wake_seconds: float = Field(
        300.0, ge=0, le=3600, description="max-margin: warm-up of a woken miner, without revenue"
    )
    switch_cost_usd: float = Field(
        0.0, ge=0, le=1000, description="max-margin: cost of each workload change, USD"
    )
    max_sleep_excursion_hours: float = Field(
        0.6, gt=0, le=24, description="max-margin: a sleep must pay back within this many hours"
    )
    max_wake_excursion_hours: float = Field(
        24.0, gt=0, le=24, description="max-margin: a wake must pay back within this many hours"
    )
    power_levels: list[float] = Field(
        default_factory=lambda: [1.0],
        min_length=1,
        description="max-margin: relative mining power levels a device may be set to",
    )

    pool_fees: dict[str, float] = Field(
        default_factory=dict,
        description="max-margin: fee per pool name (fraction); others pay [economics] pool_fee",
    )

    @field_validator("pool_fees")
    @classmethod
    def _fees_in_range(cls, value: dict[str, float]) -> dict[str, float]:
        bad = {name: fee for name, fee in value.items() if not 0.0 <= fee < 1.0}
        if bad:
            raise ValueError(f"pool fees must be in [0, 1), got {bad}")
        return value

    @field_validator("power_levels")
    @classmethod
    def _levels_in_range(cls, value: list[float]) -> list[float]:
        bad = [level for level in value if not 0.0 < level <= 1.5]
        if bad:
            raise ValueError(f"power levels must be in (0, 1.5], got {bad}")
        return sorted(set(value))


PLUGINS = (
    PolicyPlugin(
        tag=MaxMarginPolicy.name, options=MaxMarginOptions, factory=MaxMarginPolicy.from_config
    ),
)
