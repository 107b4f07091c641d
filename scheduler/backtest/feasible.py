"""Baselines that respect the site's power limit: merit order, and the optimum over device classes.

A class is a set of identical miners (``engine._DeviceClass``); a decision
series gives, per interval, how many of the class's miners mine (the rest
sleep).  Power is ``mining x power_w + sleeping x sleep_power_w``.

- ``merit_counts``: the miners that want to mine (always-on: all of them; the
  naive threshold: the classes below break-even on the price it sees) mine in
  merit order, most efficient (lowest J/TH) first, as many as fit the limit.
- ``optimum_counts``: the hindsight optimum of the whole site under the
  limit, an exact dynamic programme over the vector of mining counts per
  class (``prod(count + 1)`` states).  Waking ``d`` miners costs ``d`` x
  (warm-up revenue + switch cost), sleeping ``d`` costs ``d`` x switch cost:
  the cost is separable and linear per class, so the best predecessor of
  every state is found class by class with two running maxima (numpy), and
  the series is recovered from value checkpoints (memory bounded).  Beyond
  ``MAX_STATES`` states it is not tractable and the caller reports the
  per-device optimum without the limit as an upper bound instead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

MAX_STATES = 300_000  # states of the exact optimum (product of count + 1 over classes)
CHECKPOINT_BYTES = 32 * 1024 * 1024  # memory for the value arrays kept while recovering the series

FloatArray = npt.NDArray[np.float64]


class MinerClass(Protocol):
    """Identical miners: hash rate, power mining and asleep, how many."""

    @property
    def hashrate_ths(self) -> float:
        """TH/s of one miner at stock power."""
        ...

    @property
    def power_w(self) -> float:
        """W of one miner mining."""
        ...

    @property
    def sleep_power_w(self) -> float:
        """W of one miner asleep."""
        ...

    @property
    def count(self) -> int:
        """Miners in the class."""
        ...


def merit_order(classes: Sequence[MinerClass]) -> list[int]:
    """Class indexes, most efficient (lowest J/TH) first; ties by position."""
    return sorted(
        range(len(classes)), key=lambda k: (classes[k].power_w / classes[k].hashrate_ths, k)
    )


def merit_counts(
    classes: Sequence[MinerClass], wants: Sequence[Sequence[bool]], limit_w: Sequence[float]
) -> list[list[int]]:
    """Per class and interval, the miners mining: those that want to, in merit order, under the limit."""
    order = merit_order(classes)
    asleep_w = sum(c.sleep_power_w * c.count for c in classes)
    out = [[0] * len(limit_w) for _ in classes]
    for index, limit in enumerate(limit_w):
        room = limit - asleep_w
        for k in order:
            cls = classes[k]
            if not wants[k][index]:
                continue
            extra = cls.power_w - cls.sleep_power_w
            fit = (
                cls.count if extra <= 0 else min(cls.count, max(0, math.floor(room / extra + 1e-9)))
            )
            out[k][index] = fit
            room -= fit * extra
    return out


def states(classes: Sequence[MinerClass]) -> int:
    """Number of states of the exact optimum over these classes."""
    return math.prod(c.count + 1 for c in classes)


def optimum_counts(
    classes: Sequence[MinerClass],
    mine_gain: Sequence[Sequence[float]],
    sleep_gain: Sequence[Sequence[float]],
    wake_cost: Sequence[Sequence[float]],
    switch_cost_usd: float,
    limit_w: Sequence[float],
    carry: float = 0.0,
) -> tuple[list[list[int]], float]:
    """Hindsight-optimal mining counts per class and interval under the limit, and their total.

    ``mine_gain[k][t]`` / ``sleep_gain[k][t]``: USD one miner of class k earns
    in interval t mining / asleep; ``wake_cost[k][t]``: USD a wake at t costs
    one miner of class k (warm-up revenue lost plus the switch cost);
    ``switch_cost_usd``: USD one sleep costs.  Every miner mines before the
    first interval.  ``carry``: share of each interval still run on the previous
    state (``--info sced5``).  Raises ValueError beyond ``MAX_STATES`` states or when no
    state fits the limit.
    """
    shape = tuple(c.count + 1 for c in classes)
    size = math.prod(shape)
    if size > MAX_STATES:
        raise ValueError(f"{size} states: more than {MAX_STATES}")
    total = len(limit_w)
    dims = len(classes)
    axes = [
        np.arange(n, dtype=np.float64).reshape([n if a == k else 1 for a in range(dims)])
        for k, n in enumerate(shape)
    ]
    extra_w = sum(axes[k] * (c.power_w - c.sleep_power_w) for k, c in enumerate(classes)) + sum(
        c.sleep_power_w * c.count for c in classes
    )
    power_w = np.broadcast_to(extra_w, shape)
    full = tuple(c.count for c in classes)
    masks: dict[float, npt.NDArray[np.bool_]] = {}

    def fits(limit: float) -> npt.NDArray[np.bool_]:
        mask = masks.get(limit)
        if mask is None:
            mask = masks[limit] = power_w <= limit + 1e-6
            if not mask.any():
                raise ValueError(f"no state fits {limit} W")
        return mask

    def gain(t: int) -> FloatArray:
        return np.where(fits(limit_w[t]), raw_gain(t), -np.inf)

    def raw_gain(t: int) -> FloatArray:
        out = np.zeros(shape)
        for k, cls in enumerate(classes):
            out = (
                out + axes[k] * (mine_gain[k][t] - sleep_gain[k][t]) + cls.count * sleep_gain[k][t]
            )
        return out

    def best_before(value: FloatArray, t: int) -> FloatArray:
        """The best over predecessors s' of value(s') - cost(s' -> s), class by class.

        Per class a pass upwards (woken from fewer) then downwards (slept from
        more): a path up then down never beats the direct one, costs being >= 0.
        """
        value = value.copy()
        for k in range(dims):
            wake = wake_cost[k][t]
            view = np.moveaxis(value, k, 0)
            for j in range(1, shape[k]):
                np.maximum(view[j : j + 1], view[j - 1 : j] - wake, out=view[j : j + 1])
            for j in range(shape[k] - 2, -1, -1):
                np.maximum(
                    view[j : j + 1], view[j + 1 : j + 2] - switch_cost_usd, out=view[j : j + 1]
                )
        return value

    start = np.full(shape, -np.inf)
    start[full] = 0.0

    def step(value: FloatArray, t: int) -> FloatArray:
        if not carry:
            return best_before(value, t) + gain(t)
        # The carried part runs on the predecessor, which fit when it was chosen (the start state
        # need not: the fleet starts at full power).
        raw = raw_gain(t)
        here = np.where(fits(limit_w[t]), raw, -np.inf)
        return best_before(value + carry * raw, t) + (1.0 - carry) * here

    every = max(1, CHECKPOINT_BYTES // (size * 8))
    checkpoints: list[FloatArray] = []  # value before interval t for t = 0, every, 2 every...
    value = start
    for t in range(total):
        if t % every == 0:
            checkpoints.append(value)
        value = step(value, t)
    best = float(value.max())
    state = tuple(int(i) for i in np.unravel_index(int(np.argmax(value)), shape))
    series = [[0] * total for _ in classes]
    for segment in range(len(checkpoints) - 1, -1, -1):
        first = segment * every
        last = min(total, first + every)
        before = [checkpoints[segment]]
        for t in range(first, last - 1):
            before.append(step(before[-1], t))
        for t in range(last - 1, first - 1, -1):
            for k in range(dims):
                series[k][t] = state[k]
            previous = before[t - first]
            candidates = previous + carry * raw_gain(t) if carry else previous
            for k in range(dims):
                d = state[k] - axes[k]  # > 0: woken, < 0: slept
                candidates = candidates - np.where(d > 0, d * wake_cost[k][t], -d * switch_cost_usd)
            if candidates[state] >= candidates.max():
                continue  # staying is (one of) the best
            state = tuple(int(i) for i in np.unravel_index(int(np.argmax(candidates)), shape))
    return series, best
