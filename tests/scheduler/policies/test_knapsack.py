"""The multiple-choice knapsack of max-margin, on its own: fits, exact on small sites, greedy on large."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field

from scheduler.policies import knapsack


@dataclass(frozen=True)
class Opt:
    power_w: float
    score_usd_per_hour: float


@dataclass
class Cls:
    device_ids: tuple[str, ...]
    options: list[Opt] = field(default_factory=list)


SLEEP = Opt(15.0, -0.01)


def fleet(counts: list[int], rng: random.Random) -> list[Cls]:
    return [
        Cls(
            tuple(f"c{c}-{i}" for i in range(n)),
            [SLEEP, Opt(rng.uniform(2000, 4000), rng.uniform(-1, 3))],
        )
        for c, n in enumerate(counts)
    ]


def used_w(classes: list[Cls], counts: list[list[int]]) -> float:
    return sum(
        o.power_w * k
        for cls, cs in zip(classes, counts, strict=True)
        for o, k in zip(cls.options, cs, strict=True)
    )


def score(classes: list[Cls], counts: list[list[int]]) -> float:
    return sum(
        o.score_usd_per_hour * k
        for cls, cs in zip(classes, counts, strict=True)
        for o, k in zip(cls.options, cs, strict=True)
    )


def test_everything_fits_each_class_takes_its_best() -> None:
    classes = [Cls(("a", "b"), [SLEEP, Opt(3000.0, 2.0)]), Cls(("c",), [SLEEP, Opt(3000.0, -1)])]
    assert knapsack.solve(classes, None) == [[0, 2], [1, 0]]
    assert knapsack.solve(classes, 1e9) == [[0, 2], [1, 0]]


def test_a_tie_goes_to_the_lower_power() -> None:
    classes = [Cls(("a",), [Opt(3000.0, 1.0), Opt(2000.0, 1.0)])]
    assert knapsack.solve(classes, None) == [[0, 1]]


def test_small_sites_are_solved_exactly() -> None:
    rng = random.Random(3)
    unit = knapsack.EXACT_UNIT_W  # exact on powers in whole units (others are rounded up)
    for _ in range(20):
        classes = [
            Cls(
                tuple(f"c{c}-{i}" for i in range(rng.randint(1, 3))),
                [Opt(unit, -0.01), Opt(unit * rng.randint(20, 40), rng.uniform(-1, 3))],
            )
            for c in range(3)
        ]
        limit_w = unit * rng.randint(30, 120)
        counts = knapsack.solve(classes, limit_w)
        assert used_w(classes, counts) <= limit_w
        items = [cls for cls in classes for _ in cls.device_ids]
        best = max(
            sum(o.score_usd_per_hour for o in pick)
            for pick in itertools.product(*(cls.options for cls in items))
            if sum(o.power_w for o in pick) <= limit_w
        )
        assert abs(score(classes, counts) - best) < 1e-9


def test_large_sites_fit_the_limit_and_fill_it() -> None:
    rng = random.Random(5)
    classes = fleet([40, 30, 20], rng)
    assert sum(len(c.device_ids) for c in classes) > knapsack.EXACT_MAX_DEVICES
    limit_w = 100_000.0
    counts = knapsack.solve(classes, limit_w)
    assert [sum(c) for c in counts] == [40, 30, 20]
    assert used_w(classes, counts) <= limit_w
    # No single paying upgrade left that still fits.
    room = limit_w - used_w(classes, counts)
    for cls, cs in zip(classes, counts, strict=True):
        gain = cls.options[1].score_usd_per_hour - SLEEP.score_usd_per_hour
        upgrade_w = cls.options[1].power_w - SLEEP.power_w
        assert not (cs[0] and gain > 0 and upgrade_w <= room)


def test_nothing_fits_everyone_at_the_lowest_power() -> None:
    classes = [Cls(("a", "b"), [SLEEP, Opt(3000.0, 2.0)])]
    assert knapsack.solve(classes, 10.0) == [[2, 0]]
    big = [Cls(tuple(str(i) for i in range(30)), [SLEEP, Opt(3000.0, 2.0)])]
    assert knapsack.solve(big, 10.0) == [[30, 0]]
