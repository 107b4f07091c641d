"""How long the power price stays above (or below) a level: learned from the prices seen so far.

``ExcursionModel`` keeps the last ``capacity`` distinct price readings (a
reading is kept when its time moved on by at least ``min_step_seconds``), each
lasting until the next one.  ``mean_run_hours(level, above)`` is the mean
length of the runs of consecutive readings above ``level`` (or at or below
it), smoothed towards ``prior_hours`` by one pseudo-run:

    (hours above + prior_hours) / (runs above + 1)

``expected_hours_below(level, price)`` conditions the same figure on where the
price is now: the readings at or below ``level`` whose price was in the same
band of price / level as ``price`` (``BELOW_BANDS``: up to 0.5, 0.8, 0.9,
0.95 and 1 of the level), the hours they lasted and how many of them were
followed by a reading above the level (an exit):

    (hours in the band + prior_hours) / (exits from the band + 1)

the mean time the price stays at or below the level from such a price (for a
memoryless price it is the mean run length; a price just under the level
leaves it sooner than a low one).

Only readings before the newest count (the newest has no known length yet),
so a decision never uses a price it could not have seen.  A figure is
recomputed once ``refresh_every`` readings arrived since it was computed (it
may lag the newest readings by that many; still only past prices).  Pure: no I/O, no
clock; the times are the readings' own.
"""

from __future__ import annotations

import numpy as np

DEFAULT_CAPACITY = 2880  # 30 days of 15-minute prices
DEFAULT_PRIOR_HOURS = 0.25
DEFAULT_MIN_STEP_SECONDS = 60.0
DEFAULT_REFRESH_EVERY = 1
# Upper edges of the bands of price / level that expected_hours_below tells apart.
BELOW_BANDS = (0.5, 0.8, 0.9, 0.95, 1.0)


class ExcursionModel:
    """Price history and the mean length of runs above / below a level."""

    def __init__(
        self,
        capacity: int = DEFAULT_CAPACITY,
        prior_hours: float = DEFAULT_PRIOR_HOURS,
        min_step_seconds: float = DEFAULT_MIN_STEP_SECONDS,
        refresh_every: int = DEFAULT_REFRESH_EVERY,
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
        self.refresh_every = max(1, refresh_every)
        self._observed = 0  # readings kept so far
        self._cache: dict[tuple[float, bool, float], tuple[float, int]] = {}
        self._band_cache: dict[tuple[float, int, float], tuple[float, int]] = {}

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
        self._observed += 1
        if self.refresh_every == 1 or len(self._cache) > 4096:
            self._cache.clear()
        if self.refresh_every == 1 or len(self._band_cache) > 4096:
            self._band_cache.clear()
        return True

    def mean_run_hours(self, level: float, above: bool, prior_hours: float | None = None) -> float:
        """Mean length (hours) of past runs above ``level`` (``above``) or at or below it.

        Smoothed by one pseudo-run of ``prior_hours`` (default: the model's).
        """
        prior = self.prior_hours if prior_hours is None else prior_hours
        key = (level, above, prior)
        cached = self._cache.get(key)
        if cached is not None and self._observed - cached[1] < self.refresh_every:
            return cached[0]
        end = self._size - 1  # the newest reading's length is not known yet
        start = max(0, end - self.capacity + 1)
        prices = self._prices[start:end]
        inside = prices > level if above else prices <= level
        runs = int(inside[:1].sum()) + int(np.count_nonzero(inside[1:] & ~inside[:-1]))
        hours = float(self._hours[start:end][inside].sum())
        value = (hours + prior) / (runs + 1)
        self._cache[key] = (value, self._observed)
        return value

    def expected_hours_below(
        self, level: float, price: float, prior_hours: float | None = None
    ) -> float:
        """Mean hours the price stays at or below ``level`` from a price in ``price``'s band.

        ``price`` above ``level`` is taken as in the top band.  Smoothed by one
        pseudo-exit of ``prior_hours`` (default: the model's).
        """
        prior = self.prior_hours if prior_hours is None else prior_hours
        ratio = price / level if level > 0 else 1.0
        band = next(
            (i for i, edge in enumerate(BELOW_BANDS) if ratio <= edge), len(BELOW_BANDS) - 1
        )
        key = (level, band, prior)
        cached = self._band_cache.get(key)
        if cached is not None and self._observed - cached[1] < self.refresh_every:
            return cached[0]
        end = self._size - 1  # the newest reading's length is not known yet
        start = max(0, end - self.capacity + 1)
        prices = self._prices[start:end]
        upper = BELOW_BANDS[band] * level
        lower = BELOW_BANDS[band - 1] * level if band else -np.inf
        inside = (prices > lower) & (prices <= upper)
        following = self._prices[start + 1 : end + 1]  # each reading's successor (the newest too)
        exits = int(np.count_nonzero(inside & (following > level)))
        hours = float(self._hours[start:end][inside].sum())
        value = (hours + prior) / (exits + 1)
        self._band_cache[key] = (value, self._observed)
        return value
