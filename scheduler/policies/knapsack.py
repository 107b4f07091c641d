"""A multiple-choice knapsack over classes of identical items: the solver of ``max-margin``.

Each class holds ``len(device_ids)`` identical items; every item picks one
option (a power in W and a score in USD/h) and the sum of their power must
fit a limit.  ``solve`` gives each class's best option when everything fits;
otherwise an exact DP for small instances (``EXACT_MAX_DEVICES`` items or
fewer, powers rounded up to ``EXACT_UNIT_W``), else a greedy pass by marginal
score per W over each class's upper concave hull of (power, score), finished
by single upgrades that still fit (``fill``).  The answer is, per class, the
number of its items on each option.

Pure and deterministic: no I/O, no clock; classes and options are read only.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Protocol

# Sites this small get an exact knapsack (DP over power in EXACT_UNIT_W steps, rounded up).
EXACT_MAX_DEVICES = 24
EXACT_UNIT_W = 100.0


class Option(Protocol):
    """One choice of a class: the power it draws and the score it earns."""

    @property
    def power_w(self) -> float:
        """W drawn by one item on this option."""
        ...

    @property
    def score_usd_per_hour(self) -> float:
        """What one item on this option is worth, USD/h (higher is better)."""
        ...


class OptionClass(Protocol):
    """Identical items (one per device id) sharing the same options."""

    @property
    def device_ids(self) -> Sequence[str]:
        """One id per item of the class."""
        ...

    @property
    def options(self) -> Sequence[Option]:
        """The options every item of the class chooses from."""
        ...


def solve(classes: Sequence[OptionClass], limit_w: float | None) -> list[list[int]]:
    """Items per option for each class: each class's best option, or the knapsack under limit_w."""
    free = []
    total_w = 0.0
    for cls in classes:
        best = max(range(len(cls.options)), key=lambda i: rank(cls.options[i]))
        counts = [0] * len(cls.options)
        counts[best] = len(cls.device_ids)
        free.append(counts)
        total_w += cls.options[best].power_w * len(cls.device_ids)
    if limit_w is None or total_w <= limit_w:
        return free
    if sum(len(c.device_ids) for c in classes) <= EXACT_MAX_DEVICES:
        return exact(classes, limit_w)
    return greedy(classes, limit_w)


def rank(option: Option) -> tuple[float, float]:
    """Higher score first; on a tie the lower power."""
    return (option.score_usd_per_hour, -option.power_w)


def greedy(classes: Sequence[OptionClass], limit_w: float) -> list[list[int]]:
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
            while len(hull) >= 2 and below(
                slope(cls, hull[-2], hull[-1]), slope(cls, hull[-1], index)
            ):
                hull.pop()
            hull.append(index)
        for a, b in itertools.pairwise(hull):
            per_w = slope(cls, a, b)
            if per_w > 0:
                per_w = float(f"{per_w:.9g}")  # collinear steps sort by class, then in order
                steps.append(
                    (-per_w, class_index, a, b, cls.options[b].power_w - cls.options[a].power_w)
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
    fill(classes, counts_all, budget_w)
    return counts_all


def fill(classes: Sequence[OptionClass], counts_all: list[list[int]], budget_w: float) -> None:
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


def exact(classes: Sequence[OptionClass], limit_w: float) -> list[list[int]]:
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


def below(first: float, second: float) -> bool:
    """True when first < second beyond float noise (collinear hull points are kept as steps)."""
    return first < second - 1e-12 * max(abs(first), abs(second))


def slope(cls: OptionClass, a: int, b: int) -> float:
    """Score gained per W going from option a to option b."""
    delta_w = cls.options[b].power_w - cls.options[a].power_w
    gain = cls.options[b].score_usd_per_hour - cls.options[a].score_usd_per_hour
    return gain / delta_w if delta_w > 0 else float("inf")
