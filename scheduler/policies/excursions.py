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
so a decision never uses a price it could not have seen.  The window is the
``capacity - 1`` readings before the newest.

The figures of a level are computed once over the window (numpy), then kept
up to date reading by reading (the reading that joins the window and the one
that leaves it): a query costs a few additions, however long the window.  Up
to ``MAX_LEVELS`` levels are followed, and a level nobody asked for while
``FORGET_AFTER_READINGS`` readings arrived is dropped: break-evens move with
the hash price, so yesterday's levels are not followed for nothing.  Past
``MAX_LEVELS`` (a fleet whose machines all differ) a figure is computed over
the window when asked.
Pure: no I/O, no clock; the times are the readings' own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

DEFAULT_CAPACITY = 2880  # 30 days of 15-minute prices
DEFAULT_PRIOR_HOURS = 0.25
DEFAULT_MIN_STEP_SECONDS = 60.0
MAX_LEVELS = 256
FORGET_AFTER_READINGS = 4  # a level not asked for while this many readings arrived is dropped
# Upper edges of the bands of price / level that expected_hours_below tells apart.
BELOW_BANDS = (0.5, 0.8, 0.9, 0.95, 1.0)


@dataclass(slots=True)
class _Level:
    """The window's figures for one level, kept up to date reading by reading."""

    level: float
    edges: tuple[float, ...]  # BELOW_BANDS x level
    hours: list[float] = field(default_factory=lambda: [0.0, 0.0])  # [at or below, above]
    starts: list[int] = field(default_factory=lambda: [0, 0])  # runs begun inside the window
    band_hours: list[float] = field(default_factory=lambda: [0.0] * len(BELOW_BANDS))
    band_exits: list[int] = field(default_factory=lambda: [0] * len(BELOW_BANDS))
    asked: int = 0  # readings observed when it was last asked for

    def band(self, price: float) -> int:
        """The band of a price at or below the level (-1 above it)."""
        for index, edge in enumerate(self.edges):
            if price <= edge:
                return index
        return -1


class ExcursionModel:
    """Price history and the mean length of runs above / below a level."""

    def __init__(
        self,
        capacity: int = DEFAULT_CAPACITY,
        prior_hours: float = DEFAULT_PRIOR_HOURS,
        min_step_seconds: float = DEFAULT_MIN_STEP_SECONDS,
        max_levels: int = MAX_LEVELS,
    ) -> None:
        if capacity < 2 or prior_hours <= 0 or min_step_seconds < 0:
            raise ValueError("capacity >= 2, prior_hours > 0 and min_step_seconds >= 0 needed")
        self.capacity = capacity
        self.prior_hours = prior_hours
        self.min_step_seconds = min_step_seconds
        self.max_levels = max_levels
        self._prices = np.zeros(2 * capacity)
        self._hours = np.zeros(2 * capacity)  # length of each reading (the last one: 0 for now)
        self._size = 0
        self._last_at: float | None = None
        self._levels: dict[float, _Level] = {}  # in order of last use
        self._observed = 0  # readings kept so far
        # Figures of levels not followed, computed since the newest reading: (kind, level, side).
        self._asked: dict[tuple[str, float, int, float], float] = {}

    def __len__(self) -> int:
        """Readings kept (the newest included)."""
        return self._size

    def _window(self) -> tuple[int, int]:
        """Positions [start, end) of the readings that count: before the newest, capacity - 1."""
        end = max(self._size - 1, 0)
        return max(0, end - self.capacity + 1), end

    def observe(self, at: float, price: float) -> bool:
        """Add a reading taken at ``at`` (seconds); False when it is not newer by min_step_seconds."""
        last = self._last_at
        if last is not None and at < last + max(self.min_step_seconds, 1e-9):
            return False
        self._observed += 1
        self._asked.clear()
        if self._levels:  # levels not asked for lately are dropped, not followed
            oldest = self._observed - FORGET_AFTER_READINGS
            for level in [k for k, v in self._levels.items() if v.asked < oldest]:
                del self._levels[level]
        start, end = self._window()
        if self._size:  # the newest reading joins the window; the oldest may leave it
            leaving = range(start, min(max(0, end + 2 - self.capacity), end))
            for stats in self._levels.values():
                self._leave(stats, leaving, end)
        if self._size == 2 * self.capacity:  # keep the newest capacity - 1, then append
            keep = self.capacity - 1
            self._prices[:keep] = self._prices[self._size - keep : self._size]
            self._hours[:keep] = self._hours[self._size - keep : self._size]
            end -= self._size - keep
            self._size = keep
        if last is not None and self._size:
            self._hours[self._size - 1] = (at - last) / 3600.0
        self._prices[self._size] = price
        self._hours[self._size] = 0.0
        self._size += 1
        self._last_at = at
        new_start, new_end = self._window()
        joining = range(max(end, new_start), new_end)
        for stats in self._levels.values():
            self._join(stats, joining, new_start)
        return True

    def _leave(self, stats: _Level, positions: range, end: int) -> None:
        """Take readings out of a level's figures (``end``: the window's end before the move)."""
        prices, hours, level = self._prices, self._hours, stats.level
        for position in positions:
            price = float(prices[position])
            above = price > level
            stats.hours[above] -= float(hours[position])
            following = float(prices[position + 1]) > level
            if position + 1 < end and following != above:
                stats.starts[following] -= 1  # the next reading's run no longer begins inside
            if not above:
                band = stats.band(price)
                stats.band_hours[band] -= float(hours[position])
                stats.band_exits[band] -= following

    def _join(self, stats: _Level, positions: range, start: int) -> None:
        """Add readings to a level's figures (``start``: the window's start after the move)."""
        prices, hours, level = self._prices, self._hours, stats.level
        for position in positions:
            price = float(prices[position])
            above = price > level
            stats.hours[above] += float(hours[position])
            if position > start and (float(prices[position - 1]) > level) != above:
                stats.starts[above] += 1
            if not above:
                band = stats.band(price)
                stats.band_hours[band] += float(hours[position])
                stats.band_exits[band] += float(prices[position + 1]) > level

    def _stats(self, level: float) -> _Level | None:
        """A followed level's figures; a new level is followed while there is room (else None)."""
        stats = self._levels.get(level)
        if stats is None:
            if len(self._levels) >= self.max_levels:
                return None  # more levels in use than followed: computed per question
            stats = self._levels[level] = self._compute(level)
        stats.asked = self._observed
        return stats

    def _compute(self, level: float) -> _Level:
        stats = _Level(level, tuple(edge * level for edge in BELOW_BANDS))
        start, end = self._window()
        prices = self._prices[start:end]
        hours = self._hours[start:end]
        above = prices > level
        stats.hours = [float(hours[~above].sum()), float(hours[above].sum())]
        changed = above[1:] != above[:-1]
        stats.starts = [
            int(np.count_nonzero(changed & ~above[1:])),
            int(np.count_nonzero(changed & above[1:])),
        ]
        following = self._prices[start + 1 : end + 1] > level  # each reading's successor
        lower = -np.inf
        for index, upper in enumerate(stats.edges):
            inside = (prices > lower) & (prices <= upper)
            stats.band_hours[index] = float(hours[inside].sum())
            stats.band_exits[index] = int(np.count_nonzero(inside & following))
            lower = upper
        return stats

    def mean_run_hours(self, level: float, above: bool, prior_hours: float | None = None) -> float:
        """Mean length (hours) of past runs above ``level`` (``above``) or at or below it.

        Smoothed by one pseudo-run of ``prior_hours`` (default: the model's).
        """
        prior = self.prior_hours if prior_hours is None else prior_hours
        stats = self._stats(level)
        start, end = self._window()
        if stats is None:
            key = ("run", level, int(above), prior)
            value = self._asked.get(key)
            if value is None:
                inside = self._prices[start:end] > level
                if not above:
                    inside = ~inside
                runs = int(inside[:1].sum()) + int(np.count_nonzero(inside[1:] & ~inside[:-1]))
                hours = float(self._hours[start:end][inside].sum())
                value = self._asked[key] = (hours + prior) / (runs + 1)
            return value
        first = end > start and (float(self._prices[start]) > level) == above
        runs = stats.starts[above] + int(first)
        return (max(stats.hours[above], 0.0) + prior) / (runs + 1)

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
        stats = self._stats(level)
        if stats is None:
            key = ("band", level, band, prior)
            value = self._asked.get(key)
            if value is None:
                start, end = self._window()
                prices = self._prices[start:end]
                lower = BELOW_BANDS[band - 1] * level if band else -np.inf
                inside = (prices > lower) & (prices <= BELOW_BANDS[band] * level)
                following = self._prices[start + 1 : end + 1] > level
                exits = int(np.count_nonzero(inside & following))
                hours = float(self._hours[start:end][inside].sum())
                value = self._asked[key] = (hours + prior) / (exits + 1)
            return value
        return (max(stats.band_hours[band], 0.0) + prior) / (stats.band_exits[band] + 1)
