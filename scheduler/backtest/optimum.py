"""The hindsight optimum: an exact dynamic programme over a whole trace for one device.

Two states per interval, mining (at stock power) or asleep; the device
starts mining.  Staying in a state earns that state's gain of the interval;
going to sleep costs the switch cost, waking costs the interval's wake cost
(warm-up revenue lost plus the switch cost).  Sleeping may be limited to the
intervals where ``allowed`` is true (the lagged bounds).  With ``carry`` > 0
(``--info sced5``) a decision acts only after that share of its interval,
which runs on the previous state.  Pure: the gains are
computed by the caller (``scheduler.backtest.engine.optimum_decisions``), so the
backtest's optimum and the bounds share this one programme.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def hindsight_decisions(
    mine_gain: Sequence[float],
    sleep_gain: Sequence[float],
    wake_cost: Sequence[float],
    switch_cost_usd: float,
    allowed: Sequence[bool] | None = None,
    carry: float = 0.0,
) -> list[bool]:
    """The mine (True) / sleep (False) series of the largest total; sleep only where allowed.

    ``mine_gain[t]`` / ``sleep_gain[t]``: USD earned in interval t mining /
    asleep; ``wake_cost[t]``: USD a wake at t costs; ``switch_cost_usd``: USD
    a sleep costs.  Ties keep mining (and, going back, the earlier state).
    """
    total = len(mine_gain)
    mine_value, sleep_value = 0.0, -math.inf
    # came_from[t] = (best predecessor of mine at t is mine?, of sleep at t is mine?)
    came_from: list[tuple[bool, bool]] = []
    for index in range(total):
        gain, asleep = mine_gain[index], sleep_gain[index]
        stay_mining = mine_value + gain
        woken = sleep_value + carry * asleep + (1.0 - carry) * gain - wake_cost[index]
        if allowed is None or allowed[index]:
            stay_asleep = sleep_value + asleep
            slept = mine_value + carry * gain + (1.0 - carry) * asleep - switch_cost_usd
        else:
            stay_asleep = slept = -math.inf
        came_from.append((stay_mining >= woken, slept > stay_asleep))
        mine_value = max(stay_mining, woken)
        sleep_value = max(stay_asleep, slept)
    decisions = [True] * total
    state = mine_value >= sleep_value
    for index in range(total - 1, -1, -1):
        decisions[index] = state
        from_mine_if_mine, from_mine_if_sleep = came_from[index]
        state = from_mine_if_mine if state else from_mine_if_sleep
    return decisions
