"""``max-margin``: the site's workloads and power levels that earn the most under its power limit.

A multiple-choice knapsack: every device picks one option (sleep, or mine at
one of the configured power levels); the sum of their power must fit the site
limit, which is the site power cap lowered by any active demand-response event.
Solved greedily by marginal margin per kW on each device's upper concave hull
of (power, margin): start every device at its lowest-power option, then take
upgrades in decreasing USD per kWh until the limit is reached, skipping those
that no longer fit.  Identical devices (same facts, pool and current workload)
form one class and are decided together, so 100,000 devices cost little more
than their number of classes.

Switching is not free (a woken miner spends minutes warming up), so a change
away from the current workload must beat it by a band: a mining device sleeps
only above break-even + ``sleep_band``; a sleeping one wakes only below
break-even - ``wake_band``.  Each band is a fixed USD/MWh plus a fraction of
the device's break-even (a warm-up costs lost revenue, which scales with
break-even); defaults 14% to sleep, 6% to wake, chosen on the 2024-06..2025-03
ERCOT trace with the current price known (``--info realtime``).  The bands
enter the knapsack as a penalty on the options that differ from the current
workload.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import compress, repeat
from operator import attrgetter

from pydantic import BaseModel, ConfigDict, Field, field_validator

from scheduler.core.economics import MarketEconomics, market_economics
from scheduler.core.limits import site_limit_w
from scheduler.core.model import (
    TERA,
    AssignmentGroup,
    Device,
    DeviceKind,
    Plan,
    Snapshot,
    Workload,
    WorkloadKind,
)
from scheduler.policies import PolicyPlugin
from scheduler.policies.gpu_queue import plan_gpu_nodes

REASON_BELOW = "price_below_breakeven"
REASON_ABOVE = "price_above_breakeven"
REASON_BAND = "within_hysteresis"
REASON_CAP = "power_cap"
REASON_DR = "dr_event"
REASON_POOL_DOWN = "pool_down"
REASON_POOLS_DOWN = "pools_down"
REASON_POOL_FEE = "lower_pool_fee"
HOURS_PER_DAY = 24.0
# Sites this small get an exact knapsack (DP over power in EXACT_UNIT_W steps, rounded up).
EXACT_MAX_DEVICES = 24
EXACT_UNIT_W = 100.0


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
    pool_reason: str | None = None  # why mining options use another pool than the current one


@dataclass(frozen=True, slots=True)
class _Grouping:
    """How one call grouped its devices: reused while devices and current workloads stay equal."""

    devices: list[Device]
    current_ids: list[str]  # snapshot.current's keys and values, in its order
    currents: list[Workload]
    groups: list[tuple[tuple[str, ...], Device, Workload | None]]  # ids, first device, its current
    has_gpu_nodes: bool


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
    ) -> None:
        bands = (
            sleep_band_usd_per_mwh,
            wake_band_usd_per_mwh,
            sleep_band_fraction,
            wake_band_fraction,
        )
        if min(bands) < 0:
            raise ValueError("bands must be >= 0")
        self.pool_fees = dict(pool_fees or {})
        self.sleep_band_fraction = sleep_band_fraction
        self.wake_band_fraction = wake_band_fraction
        if not power_levels or any(not 0.0 < level <= 1.5 for level in power_levels):
            raise ValueError(f"power levels must be in (0, 1.5], got {list(power_levels)}")
        self.sleep_band_usd_per_mwh = sleep_band_usd_per_mwh
        self.wake_band_usd_per_mwh = wake_band_usd_per_mwh
        self.power_levels = tuple(sorted(set(power_levels)))
        # Memo of id(device) -> index of its facts (-1: no pools).  _alive holds every device
        # it has seen, so an id in it can never be reused by another object.
        self._facts_of: dict[int, int] = {}
        self._facts_index: dict[tuple[object, ...], int] = {}
        self._alive: list[Device] = []
        self._workloads: dict[tuple[str | None, float], Workload] = {}
        self._grouping: _Grouping | None = None

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
        )

    def plan(self, snapshot: Snapshot) -> Plan:
        """One assignment per device with pools; empty when market inputs are missing."""
        economics = market_economics(snapshot)
        if economics is None:
            return Plan(created_at=snapshot.now, assignments=())
        classes = self._classes(snapshot, economics)
        limit_w, from_dr = site_limit_w(snapshot)
        choice = self._solve(classes, limit_w)
        limited_reason = REASON_DR if from_dr else REASON_CAP
        groups: list[AssignmentGroup] = []
        for cls, counts in zip(classes, choice, strict=True):
            best_free = max(range(len(cls.options)), key=lambda i: _rank(cls.options[i]))
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
                    )
                )
                start += count
        grouping = self._grouping
        if grouping is None or grouping.has_gpu_nodes:
            groups.extend(map(AssignmentGroup.of, plan_gpu_nodes(snapshot, economics)))
        return Plan.grouped(snapshot.now, groups)

    def _classes(self, snapshot: Snapshot, economics: MarketEconomics) -> list[_Class]:
        """Classes of the snapshot's devices, with their options under these economics."""
        classes = []
        for device_ids, device, current in self._group(snapshot):
            pool, fee_factor, pool_reason = self._pool_choice(device, current, snapshot)
            options = self._options(device, current, pool, fee_factor, economics)
            classes.append(_Class(device_ids, options, pool_reason))
        return classes

    def _group(self, snapshot: Snapshot) -> list[tuple[tuple[str, ...], Device, Workload | None]]:
        """Devices grouped by facts, pools and current workload; the last grouping while it holds.

        It holds while the devices (same objects or equal ones, in the same order) and the
        current workloads (same device ids in the same order, equal values) are those of the
        last call: list comparisons in C, identity first, instead of a dictionary walk per device.
        """
        devices = list(snapshot.devices.values())
        current_ids = list(snapshot.current)
        currents = list(snapshot.current.values())
        last = self._grouping
        if (
            last is not None
            and last.devices == devices
            and last.current_ids == current_ids
            and last.currents == currents
        ):
            return last.groups
        groups = self._regroup(snapshot, devices)
        has_gpu_nodes = any(d.kind is DeviceKind.GPU_NODE for d in devices)
        self._grouping = _Grouping(devices, current_ids, currents, groups, has_gpu_nodes)
        return groups

    def _regroup(
        self, snapshot: Snapshot, devices: list[Device]
    ) -> list[tuple[tuple[str, ...], Device, Workload | None]]:
        """Group devices with the same facts, pools and current workload.

        Column by column with C loops (map, zip, dict.fromkeys), in the devices' order: a
        device's key is (index of its facts, kind value, pool, power level, queue of its current
        workload; None for each without one).  Devices without pools (index -1) are left out.
        """
        facts_of = self._facts_of
        if len(facts_of) > 2 * len(devices) + 1024:
            self._forget()  # the fleet changed: drop entries of devices that are gone
        facts = list(map(facts_of.get, map(id, devices)))
        if None in facts:
            for position, device in enumerate(devices):
                if facts[position] is None:
                    facts[position] = self._remember(device)
        ids = list(map(_ID_OF, devices))
        currents = list(map(snapshot.current.get, ids))
        nones = repeat(None)
        kinds = map(
            getattr, map(getattr, currents, repeat("kind"), nones), repeat("_value_"), nones
        )
        keys = list(
            zip(
                facts,
                kinds,  # the enum's value: hashed in C, unlike the member
                map(getattr, currents, repeat("pool"), nones),
                map(getattr, currents, repeat("power_level"), nones),
                map(getattr, currents, repeat("queue"), nones),
                strict=True,
            )
        )
        order = list(dict.fromkeys(keys))
        first = dict(zip(reversed(keys), range(len(keys) - 1, -1, -1), strict=True))
        members: list[tuple[str, ...]]
        if len(order) == 1:
            members = [tuple(ids)]
        else:
            code_of = {key: code for code, key in enumerate(order)}
            codes = list(map(code_of.__getitem__, keys))
            if len(order) <= 16:  # one C pass per class
                members = [
                    tuple(compress(ids, map(code.__eq__, codes))) for code in range(len(order))
                ]
            else:
                lists: list[list[str]] = [[] for _ in order]
                appends = [member.append for member in lists]
                for code, device_id in zip(codes, ids, strict=True):
                    appends[code](device_id)
                members = list(map(tuple, lists))
        return [
            (member, devices[first[key]], currents[first[key]])
            for key, member in zip(order, members, strict=True)
            if key[0] is not None and key[0] >= 0  # no pools: nothing to decide
        ]

    def _remember(self, device: Device) -> int:
        """Index of the device's facts (power, hash rate, sleep power, pools); -1 without pools."""
        facts = (
            device.nominal_power_w,
            device.nominal_hashrate_hs,
            device.sleep_power_w,
            device.pools,
        )
        # GPU nodes are planned by gpu_queue (AI queues against mining), not by the knapsack.
        plannable = bool(device.pools) and device.kind is DeviceKind.ASIC
        index = self._facts_index.setdefault(facts, len(self._facts_index)) if plannable else -1
        self._facts_of[id(device)] = index
        self._alive.append(device)
        return index

    def _forget(self) -> None:
        self._facts_of.clear()
        self._facts_index.clear()
        self._alive.clear()

    def _pool_choice(
        self, device: Device, current: Workload | None, snapshot: Snapshot
    ) -> tuple[str | None, float, str | None]:
        """(pool, revenue factor of its fee, reason for a change): lowest fee among pools that are up.

        Ties keep the current pool, then the configured order.  None when every pool is down.
        """
        current_pool = (
            current.pool if current is not None and current.kind is WorkloadKind.MINE else None
        )
        up = [p for p in device.pools if snapshot.pools_up.get(p, True)]
        if not up:
            return None, 1.0, REASON_POOLS_DOWN
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
            return pool, factor, REASON_POOL_DOWN
        return pool, factor, REASON_POOL_FEE

    def _options(
        self,
        device: Device,
        current: Workload | None,
        pool: str | None,
        fee_factor: float,
        economics: MarketEconomics,
    ) -> list[_Option]:
        """Sleep first, then mining levels by rising power (none without a pool); scores carry the bands."""
        price = economics.power_price_usd_per_mwh
        revenue_per_level = (
            device.nominal_hashrate_hs
            / TERA
            * economics.hashprice_usd_per_th_day
            / HOURS_PER_DAY
            * fee_factor
        )
        running = current is not None and current.is_running
        sleep_margin = -device.sleep_power_w / 1e6 * price
        options = [
            _Option(self._workload(None, 0.0), device.sleep_power_w, sleep_margin, sleep_margin)
        ]
        for level in self.power_levels if pool is not None else ():
            power_w = device.nominal_power_w * level
            margin = revenue_per_level * level - power_w / 1e6 * price
            options.append(_Option(self._workload(pool, level), power_w, margin, margin))
        if current is None:
            return options
        breakeven = revenue_per_level / device.nominal_power_w * 1e6
        if running:
            band = self.sleep_band_usd_per_mwh + self.sleep_band_fraction * breakeven
        else:
            band = self.wake_band_usd_per_mwh + self.wake_band_fraction * breakeven
        for option in options:
            if option.workload.is_running == running:
                continue  # no warm-up between power levels, none between sleep and off
            swing_w = (
                abs(option.power_w - device.sleep_power_w)
                if not running
                else (device.nominal_power_w - device.sleep_power_w)
            )
            option.score_usd_per_hour -= band * swing_w / 1e6
        return options

    def _workload(self, pool: str | None, level: float) -> Workload:
        """The same immutable Workload object each call (sleep when pool is None): cheap to compare."""
        key = (pool, level)
        workload = self._workloads.get(key)
        if workload is None:
            workload = Workload.sleep() if pool is None else Workload.mine(pool, level)
            if len(self._workloads) < 4096:
                self._workloads[key] = workload
        return workload

    @staticmethod
    def _solve(classes: list[_Class], limit_w: float | None) -> list[list[int]]:
        """Devices per option for each class: free best, or the greedy knapsack under limit_w."""
        free = []
        total_w = 0.0
        for cls in classes:
            best = max(range(len(cls.options)), key=lambda i: _rank(cls.options[i]))
            counts = [0] * len(cls.options)
            counts[best] = len(cls.device_ids)
            free.append(counts)
            total_w += cls.options[best].power_w * len(cls.device_ids)
        if limit_w is None or total_w <= limit_w:
            return free
        if sum(len(c.device_ids) for c in classes) <= EXACT_MAX_DEVICES:
            return _exact(classes, limit_w)
        return _greedy(classes, limit_w)

    def _reason(self, cls: _Class, index: int, best_free: int, limited_reason: str) -> str:
        option = cls.options[index]
        if index != best_free and cls.options[best_free].power_w > option.power_w:
            return limited_reason
        best_real = max(range(len(cls.options)), key=lambda i: cls.options[i].margin_usd_per_hour)
        if cls.pool_reason == REASON_POOLS_DOWN:
            return REASON_POOLS_DOWN
        if index != best_real:
            return REASON_BAND
        if option.workload.kind is WorkloadKind.SLEEP:
            return REASON_ABOVE
        return cls.pool_reason or REASON_BELOW


_ID_OF = attrgetter("id")


def _rank(option: _Option) -> tuple[float, float]:
    """Higher score first; on a tie the lower power."""
    return (option.score_usd_per_hour, -option.power_w)


def _greedy(classes: list[_Class], limit_w: float) -> list[list[int]]:
    """Greedy multiple-choice knapsack by marginal score per W over each class's concave hull."""
    counts_all: list[list[int]] = []
    budget_w = limit_w
    steps: list[tuple[float, int, int, int, float]] = []  # (-slope, class, from, to, delta_w)
    for class_index, cls in enumerate(classes):
        n = len(cls.device_ids)
        order = sorted(
            range(len(cls.options)),
            key=lambda i: (cls.options[i].power_w, -cls.options[i].score_usd_per_hour),
        )
        base = order[0]
        counts = [0] * len(cls.options)
        counts[base] = n
        counts_all.append(counts)
        budget_w -= cls.options[base].power_w * n
        hull = [base]
        for index in order[1:]:
            option = cls.options[index]
            if option.score_usd_per_hour <= cls.options[hull[-1]].score_usd_per_hour:
                continue
            while len(hull) >= 2 and _below(
                _slope(cls, hull[-2], hull[-1]), _slope(cls, hull[-1], index)
            ):
                hull.pop()
            hull.append(index)
        for a, b in itertools.pairwise(hull):
            slope = _slope(cls, a, b)
            if slope > 0:
                slope = float(f"{slope:.9g}")  # collinear steps sort by class, then in order
                steps.append(
                    (-slope, class_index, a, b, cls.options[b].power_w - cls.options[a].power_w)
                )
    if budget_w < 0:
        return counts_all  # even the lowest-power options do not fit: all at their lowest
    steps.sort()
    for _, class_index, a, b, delta_w in steps:
        counts = counts_all[class_index]
        movable = counts[a]
        if movable == 0 or delta_w > budget_w:
            continue
        take = movable if delta_w <= 0 else min(movable, int(budget_w // delta_w))
        counts[a] -= take
        counts[b] += take
        budget_w -= take * delta_w
    _fill(classes, counts_all, budget_w)
    return counts_all


def _fill(classes: list[_Class], counts_all: list[list[int]], budget_w: float) -> None:
    """Spend what the greedy left: repeatedly the single upgrade that gains most and still fits."""
    for _ in range(64):
        best: tuple[float, int, int, int, int] | None = None  # gain, class, from, to, count
        for class_index, cls in enumerate(classes):
            counts = counts_all[class_index]
            for a, count in enumerate(counts):
                if not count:
                    continue
                for b, option in enumerate(cls.options):
                    delta_w = option.power_w - cls.options[a].power_w
                    gain = option.score_usd_per_hour - cls.options[a].score_usd_per_hour
                    if gain <= 0 or delta_w > budget_w:
                        continue
                    take = count if delta_w <= 0 else min(count, int(budget_w // delta_w))
                    if best is None or gain * take > best[0]:
                        best = (gain * take, class_index, a, b, take)
        if best is None:
            return
        _, class_index, a, b, take = best
        counts_all[class_index][a] -= take
        counts_all[class_index][b] += take
        budget_w -= take * (
            classes[class_index].options[b].power_w - classes[class_index].options[a].power_w
        )


def _exact(classes: list[_Class], limit_w: float) -> list[list[int]]:
    """Exact multiple-choice knapsack by DP; powers rounded up to EXACT_UNIT_W (never over the limit)."""
    capacity = int(limit_w // EXACT_UNIT_W)
    items = [(ci, cls) for ci, cls in enumerate(classes) for _ in cls.device_ids]
    weights = [[math.ceil(o.power_w / EXACT_UNIT_W - 1e-9) for o in cls.options] for cls in classes]
    minus_inf = -math.inf
    best = [0.0] + [minus_inf] * capacity
    picks: list[list[int]] = []
    for class_index, cls in items:
        new = [minus_inf] * (capacity + 1)
        pick = [-1] * (capacity + 1)
        for used, value in enumerate(best):
            if value == minus_inf:
                continue
            for option_index, option in enumerate(cls.options):
                total = used + weights[class_index][option_index]
                if total <= capacity and value + option.score_usd_per_hour > new[total]:
                    new[total] = value + option.score_usd_per_hour
                    pick[total] = option_index
        best = new
        picks.append(pick)
    counts_all = [[0] * len(cls.options) for cls in classes]
    if max(best) == minus_inf:  # nothing fits: everyone at the lowest power
        for class_index, cls in enumerate(classes):
            lowest = min(range(len(cls.options)), key=lambda i: cls.options[i].power_w)
            counts_all[class_index][lowest] = len(cls.device_ids)
        return counts_all
    used = max(range(capacity + 1), key=lambda w: best[w])
    for (class_index, _), pick in zip(reversed(items), reversed(picks), strict=True):
        option_index = pick[used]
        counts_all[class_index][option_index] += 1
        used -= weights[class_index][option_index]
    return counts_all


def _below(first: float, second: float) -> bool:
    """True when first < second beyond float noise (collinear hull points are kept as steps)."""
    return first < second - 1e-12 * max(abs(first), abs(second))


def _slope(cls: _Class, a: int, b: int) -> float:
    """Score gained per W going from option a to option b."""
    delta_w = cls.options[b].power_w - cls.options[a].power_w
    gain = cls.options[b].score_usd_per_hour - cls.options[a].score_usd_per_hour
    return gain / delta_w if delta_w > 0 else float("inf")


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
