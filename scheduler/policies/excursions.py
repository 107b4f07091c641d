"""How long the power price stays above (or below) a level: learned from the prices seen so far.

``ExcursionModel`` keeps the last ``capacity`` distinct price readings (a
reading is kept when its time moved on by at least ``min_step_seconds``), each
lasting until the next one.  ``mean_run_hours(level, above)`` is the mean
length of the runs of consecutive readings above ``level`` (or at or below
it), smoothed towards ``prior_hours`` by one pseudo-run:

    (hours above + prior_hours) / (runs above + 1)

Only readings before the newest count (the newest has no known length yet),
so a decision never uses a price it could not have seen.  Pure: no I/O, no
clock; the times are the readings' own.
"""

from __future__ import annotations

import numpy as np

DEFAULT_CAPACITY = 2880  # 30 days of 15-minute prices
DEFAULT_PRIOR_HOURS = 0.25
DEFAULT_MIN_STEP_SECONDS = 60.0
PRIOR_END_CHANCE = 0.5


class ExcursionModel:
    """Price history and the mean length of runs above / below a level."""

    def __init__(
        self,
        capacity: int = DEFAULT_CAPACITY,
        prior_hours: float = DEFAULT_PRIOR_HOURS,
        min_step_seconds: float = DEFAULT_MIN_STEP_SECONDS,
    ) -> None:
        if capacity < 2 or prior_hours <= 0 or min_step_seconds < 0:
            raise ValueError("capacity >= 2, prior_hours > 0 and min_step_seconds >= 0 needed")
        self.capacity = capacity
        self.prior_hours = prior_hours
        self.min_step_seconds = min_step_seconds
        self._prices = np.zeros(2 * capacity)
        self._hours = np.zeros(2 * capacity)  # length of each reading (the last one: 0 for now)
        self._size = 0
        self._last_at: float | None = None
        self._cache: dict[tuple[float, bool, float], float] = {}
        self._hazards: dict[tuple[float, bool, float], tuple[float, int]] = {}

    def __len__(self) -> int:
        """Readings kept (the newest included)."""
        return self._size

    def observe(self, at: float, price: float) -> bool:
        """Add a reading taken at ``at`` (seconds); False when it is not newer by min_step_seconds."""
        last = self._last_at
        if last is not None and at < last + max(self.min_step_seconds, 1e-9):
            return False
        if self._size == 2 * self.capacity:  # keep the newest capacity - 1, then append
            keep = self.capacity - 1
            self._prices[:keep] = self._prices[self._size - keep : self._size]
            self._hours[:keep] = self._hours[self._size - keep : self._size]
            self._size = keep
        if last is not None and self._size:
            self._hours[self._size - 1] = (at - last) / 3600.0
        self._prices[self._size] = price
        self._hours[self._size] = 0.0
        self._size += 1
        self._last_at = at
        self._cache.clear()
        self._hazards.clear()
        return True

    def mean_run_hours(self, level: float, above: bool, prior_hours: float | None = None) -> float:
        """Mean length (hours) of past runs above ``level`` (``above``) or at or below it.

        Smoothed by one pseudo-run of ``prior_hours`` (default: the model's).
        """
        prior = self.prior_hours if prior_hours is None else prior_hours
        key = (level, above, prior)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        end = self._size - 1  # the newest reading's length is not known yet
        start = max(0, end - self.capacity + 1)
        prices = self._prices[start:end]
        inside = prices > level if above else prices <= level
        runs = int(inside[:1].sum()) + int(np.count_nonzero(inside[1:] & ~inside[:-1]))
        hours = float(self._hours[start:end][inside].sum())
        value = self._cache[key] = (hours + prior) / (runs + 1)
        return value

    def step_hours(self) -> float:
        """Median length of a reading (hours); prior_hours before two readings."""
        if self._size < 2:
            return self.prior_hours
        return float(
            np.median(self._hours[max(0, self._size - 1 - self.capacity) : self._size - 1])
        )

    def end_chance(self, level: float, above: bool) -> tuple[float, int]:
        """(chance that the current run beyond ``level`` ends after the newest reading, its age).

        The age is the number of newest readings beyond the level (0: the newest
        is not).  The chance is the share of past runs, of at least that many
        readings, that had exactly that many, smoothed by one pseudo-run ending
        there with chance ``PRIOR_END_CHANCE``.  Past runs only: the run still
        going at the newest reading is not counted.
        """
        key = (level, not above, 0.0)
        cached = self._hazards.get(key)
        if cached is not None:
            return cached
        end = self._size
        start = max(0, end - self.capacity)
        prices = self._prices[start:end]
        inside = prices > level if above else prices <= level
        if not inside.size or not inside[-1]:
            value = (1.0, 0)
        else:
            outside = np.flatnonzero(~inside)
            age = int(inside.size - (outside[-1] + 1 if outside.size else 0))
            past = inside[: inside.size - age]  # up to the end of the last run before this one
            edges = np.diff(np.concatenate(([0], past.view(np.int8), [0])))
            lengths = np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)
            if outside.size and past.size and past[0]:
                lengths = lengths[1:]  # the oldest run may be cut by the window: not counted
            at_least = int(np.count_nonzero(lengths >= age))
            exactly = int(np.count_nonzero(lengths == age))
            value = ((exactly + PRIOR_END_CHANCE) / (at_least + 1), age)
        self._hazards[key] = value
        return value
