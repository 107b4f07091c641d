"""What decisions on lagged information can capture at best: hindsight bounds and an online onset test.

For each class of identical miners, as a share of the room the optimum has
over always-on (the same ``curtailment_value_captured`` scale, same settlement
and switching costs as the backtest):

- ``optimum_started_late``: the optimum's schedule with every sleep started
  one interval later.  What a policy could keep if it knew the whole future
  except that a spike has begun: the value of each spike's first interval is
  ``1 - optimum_started_late``;
- ``optimum_one_interval_late``: the optimum's schedule delayed by one
  interval (sleeps and wakes), what a perfect follower of the last price gets;
- ``hindsight_last_rt_above``: the exact optimum when sleeping is allowed
  only where the last real-time price (the one ``lagged`` shows) is above
  break-even: an upper bound for every policy that never sleeps below that
  (max-margin with any sleep band, the naive threshold), even one that knows
  when each spike ends;
- ``hindsight_last_rt_or_dam_above``: the same, allowed also where the
  day-ahead price of the interval is above break-even;
- ``onset``: an online expected-value test of sleeping at a spike's onset.
  At every interval where the last price is at or below break-even, the
  value of sleeping now (the interval's saving minus the warm-up it costs
  when the next price does not stay above break-even) is estimated as the
  mean over past intervals with the same visible features (last price / and
  day-ahead price / break-even, binned; hour of day), shrunk towards
  "no value".  ``sleeps`` counts the intervals where it was positive and
  ``realised_captured`` adds what sleeping there would have earned, on the
  same scale: positive would mean onsets are predictable from what
  ``lagged`` sees.  ``best_bin_hit_rate``: in hindsight, the largest share
  of intervals of one such bin (of at least 10) whose price paid for a
  one-interval sleep's warm-up (above break-even x (1 + wake_seconds / 900)).
- ``walk_forward``: a causal expected-value learner for both decisions, the
  sleep and the wake, beside the naive threshold on the same settlement.
  At each interval it estimates, from past intervals only, the mean outcome
  of the interval about to be decided (price / break-even, capped at 3) in
  the bin of what ``lagged`` shows (last price / break-even; whether the
  price before it was above break-even; optionally whether the day-ahead
  price of the interval is), shrunk by ``k`` pseudo-intervals towards "the
  last price persists" (the naive rule's assumption).  A running miner
  sleeps when the expected saving beats the warm-up it costs should the
  price be back at or under break-even; a sleeping one wakes on the mirror
  test.  ``k`` 2, 8 and 32, with and without the day-ahead feature: if one
  of them beat ``naive`` clearly, the last prices would carry information
  the naive threshold leaves unused.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from scheduler.backtest.engine import (
    INTERVAL_HOURS,
    INTERVAL_SECONDS,
    SwitchingCosts,
    Trace,
    _DeviceClass,
    _hashprices,
    _settle,
    optimum_decisions,
)
from scheduler.config.schema import WattmuxConfig
from scheduler.core.economics import breakeven_usd_per_mwh
from scheduler.core.model import TERA

_LAST_EDGES = (0.5, 0.7, 0.8, 0.9, 1.0)  # last real-time price / break-even (only <= 1 is asked)
_DAM_EDGES = (0.6, 0.8, 1.0, 1.2, 1.5, 2.0, 3.0)  # day-ahead price / break-even
_PRIOR_COUNT = 5.0  # pseudo-observations of "no value" each bin starts with
_LEARNER_EDGES = (0.5, 0.8, 0.9, 1.0, 1.1, 1.3, 1.6, 2.0, 3.0, 6.0)
_LEARNER_PRIORS = (2.0, 8.0, 32.0)
_LEARNER_CAP = 3.0  # outcomes (price / break-even) are capped here: one spike must not rule a bin
_MIN_BIN_INTERVALS = 10


def restricted_optimum_decisions(
    cls: _DeviceClass,
    trace: Trace,
    hashprices: Sequence[float],
    costs: SwitchingCosts,
    allowed: Sequence[bool],
) -> list[bool]:
    """Hindsight-optimal mine/sleep series of one device that may sleep only where allowed."""
    return optimum_decisions(cls, trace, hashprices, costs, allowed)


def _bin(value: float, edges: Sequence[float]) -> int:
    for index, edge in enumerate(edges):
        if value < edge:
            return index
    return len(edges)


def _onset(
    cls: _DeviceClass,
    trace: Trace,
    hashprices: Sequence[float],
    breakeven: Sequence[float],
    costs: SwitchingCosts,
) -> dict[str, Any]:
    """The online onset test described in the module docstring, for one device (USD)."""
    intervals = trace.intervals
    swing_mw = (cls.power_w - cls.sleep_power_w) / 1e6
    sums: dict[tuple[int, int, int], float] = {}
    counts: dict[tuple[int, int, int], int] = {}
    keys: list[tuple[int, int, int] | None] = []
    sleeps, realised = 0, 0.0
    for index, interval in enumerate(intervals):
        if index >= 2:  # the outcome of index-1 is known now: learn from it
            key_seen = keys[index - 1]
            if key_seen is not None:
                value = _onset_value(index - 1, cls, trace, hashprices, breakeven, costs, swing_mw)
                sums[key_seen] = sums.get(key_seen, 0.0) + value
                counts[key_seen] = counts.get(key_seen, 0) + 1
        if index == 0 or index + 1 >= len(intervals):
            keys.append(None)
            continue
        last = intervals[index - 1].rtm_usd_per_mwh
        if last > breakeven[index]:
            keys.append(None)  # not an onset: the last price already shows the spike
            continue
        key = (
            _bin(last / breakeven[index], _LAST_EDGES),
            _bin(interval.dam_usd_per_mwh / breakeven[index], _DAM_EDGES),
            interval.start.hour,
        )
        keys.append(key)
        estimate = sums.get(key, 0.0) / (counts.get(key, 0) + _PRIOR_COUNT)
        if estimate > 0:
            sleeps += 1
            realised += _onset_value(index, cls, trace, hashprices, breakeven, costs, swing_mw)
    # In-sample: the bin (with enough intervals) where the price most often paid for a warm-up.
    pays = 1.0 + costs.wake_seconds / INTERVAL_SECONDS
    seen: dict[tuple[int, int, int], list[int]] = {}
    for index, onset_key in enumerate(keys):
        if onset_key is not None:
            tally = seen.setdefault(onset_key, [0, 0])
            tally[0] += 1
            tally[1] += intervals[index].rtm_usd_per_mwh > breakeven[index] * pays
    rates = [(hits / n, n) for n, hits in seen.values() if n >= _MIN_BIN_INTERVALS]
    best_rate, best_n = max(rates, default=(0.0, 0))
    return {
        "sleeps": sleeps,
        "realised_usd": realised,
        "best_bin_hit_rate": round(best_rate, 4),
        "best_bin_intervals": best_n,
    }


def _onset_value(
    index: int,
    cls: _DeviceClass,
    trace: Trace,
    hashprices: Sequence[float],
    breakeven: Sequence[float],
    costs: SwitchingCosts,
    swing_mw: float,
) -> float:
    """USD a device earns by sleeping at index rather than mining; a warm-up if the spike stops."""
    price = trace.intervals[index].rtm_usd_per_mwh
    revenue = cls.hashrate_ths * hashprices[index] / 24.0 * INTERVAL_HOURS
    value = swing_mw * INTERVAL_HOURS * price - revenue - costs.switch_cost_usd
    if price <= breakeven[index]:  # a follower of the last price mines next: it pays a warm-up
        wake_revenue = cls.hashrate_ths * hashprices[index + 1] / 24.0
        value -= wake_revenue * costs.wake_seconds / 3600.0 + costs.switch_cost_usd
    return value


def lagged_bounds(
    config: WattmuxConfig, trace: Trace, costs: SwitchingCosts | None = None
) -> dict[str, dict[str, Any]]:
    """The bounds and the onset test of the module docstring, per device model of the fleet."""
    costs = costs or SwitchingCosts()
    hashprices = _hashprices(trace, config.economics.pool_fee)
    out: dict[str, dict[str, Any]] = {}
    for device in config.all_devices():
        if device.model in out or not device.pools:
            continue
        cls = _DeviceClass(
            device.nominal_hashrate_hs / TERA, device.nominal_power_w, device.sleep_power_w, 1
        )
        out[device.model] = _class_bounds(cls, trace, hashprices, costs)
    return out


def _class_bounds(
    cls: _DeviceClass, trace: Trace, hashprices: Sequence[float], costs: SwitchingCosts
) -> dict[str, Any]:
    """The bounds and the onset test for one device of a class."""
    total = len(trace.intervals)
    efficiency = cls.power_w / cls.hashrate_ths
    breakeven = [breakeven_usd_per_mwh(h, efficiency) for h in hashprices]
    optimum = optimum_decisions(cls, trace, hashprices, costs)

    def margin(decisions: Sequence[bool]) -> float:
        return _settle("bound", [(cls, decisions)], trace, hashprices, costs).margin_usd

    always_on = margin([True] * total)
    room = margin(optimum) - always_on
    if room <= 0:
        return {"room_usd_per_device": round(room, 4)}

    def captured(decisions: Sequence[bool]) -> float:
        return round((margin(decisions) - always_on) / room, 4)

    last = [trace.intervals[0].dam_usd_per_mwh] + [i.rtm_usd_per_mwh for i in trace.intervals[:-1]]
    above_last = [p > b for p, b in zip(last, breakeven, strict=True)]
    above_dam = [
        a or i.dam_usd_per_mwh > b
        for a, i, b in zip(above_last, trace.intervals, breakeven, strict=True)
    ]
    started_late = [m or (t > 0 and optimum[t - 1]) for t, m in enumerate(optimum)]
    walk_forward = {"naive": captured([not a for a in above_last])}
    for use_dam in (False, True):
        for prior in _LEARNER_PRIORS:
            name = f"k={prior:g}" + (", day-ahead" if use_dam else "")
            walk_forward[name] = captured(
                _learner(cls, trace, hashprices, breakeven, costs, prior, use_dam)
            )
    onset = _onset(cls, trace, hashprices, breakeven, costs)
    realised = onset.pop("realised_usd")
    return {
        "room_usd_per_device": round(room, 4),
        "optimum_started_late": captured(started_late),
        "optimum_one_interval_late": captured([True, *optimum[:-1]]),
        "hindsight_last_rt_above": captured(
            restricted_optimum_decisions(cls, trace, hashprices, costs, above_last)
        ),
        "hindsight_last_rt_or_dam_above": captured(
            restricted_optimum_decisions(cls, trace, hashprices, costs, above_dam)
        ),
        "onset": {**onset, "realised_captured": round(realised / room, 4)},
        "walk_forward": walk_forward,
    }


def _learner(
    cls: _DeviceClass,
    trace: Trace,
    hashprices: Sequence[float],
    breakeven: Sequence[float],
    costs: SwitchingCosts,
    prior: float,
    use_dam: bool,
) -> list[bool]:
    """The walk-forward expected-value learner of the module docstring: mine/sleep per interval."""
    intervals = trace.intervals
    # Per bin: intervals seen, sum of (outcome - 1), intervals whose outcome was <= 1.
    seen: dict[tuple[int, bool, bool], list[float]] = {}
    decisions: list[bool] = []
    mining = True
    previous_key: tuple[int, bool, bool] | None = None
    for index, interval in enumerate(intervals):
        level = breakeven[index]
        last = intervals[index - 1].rtm_usd_per_mwh if index else interval.dam_usd_per_mwh
        before = intervals[index - 2].rtm_usd_per_mwh if index >= 2 else last
        if previous_key is not None:  # the last interval's outcome is what lagged shows now
            outcome = min(last / breakeven[index - 1], _LEARNER_CAP)
            tally = seen.setdefault(previous_key, [0.0, 0.0, 0.0])
            tally[0] += 1
            tally[1] += outcome - 1.0
            tally[2] += outcome <= 1.0
        ratio = last / level
        key = (
            _bin(ratio, _LEARNER_EDGES),
            before > level,
            use_dam and interval.dam_usd_per_mwh > level,
        )
        previous_key = key
        revenue = cls.hashrate_ths * hashprices[index] / 24.0 * INTERVAL_HOURS
        # A false alarm (or a wake into a spike) costs the warm-up and two switches, in
        # units of the interval's revenue (what the outcome's excess is measured in).
        false_alarm = (
            costs.wake_seconds / INTERVAL_SECONDS + 2 * costs.switch_cost_usd / revenue
            if revenue > 0
            else math.inf
        )
        n, excess, at_or_below = seen.get(key, (0.0, 0.0, 0.0))
        guess = min(ratio, _LEARNER_CAP)
        if mining:
            value = excess - false_alarm * at_or_below
            value += prior * ((guess - 1.0) - false_alarm * (guess <= 1.0))
            mining = value <= 0
        else:
            value = -excess - false_alarm * (n - at_or_below)
            value += prior * ((1.0 - guess) - false_alarm * (guess > 1.0))
            mining = value > 0
        decisions.append(mining)
    return decisions
