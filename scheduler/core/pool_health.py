"""Pool health from what the miners report: which configured pools are up, with a recovery dwell.

Rule: a configured pool is *seen alive* when at least one reachable device that
lists it (enabled) reports it "Alive", *seen dead* when every reachable device
that lists it reports it otherwise ("Dead"), and *unseen* when none lists it.
A pool seen dead is down at once; a pool that was down counts as up again only
after it has been seen alive for ``recovery_seconds`` without a break (a pool
that flaps does not pull the fleet back and forth).  An unseen pool keeps its
last state (none yet: up, the policies' default).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from operator import attrgetter

from scheduler.core.model import DeviceStatus, Sample

_POOLS_ALIVE = attrgetter("pools_alive")


def seen_alive(
    samples: Mapping[str, Sample], status: Mapping[str, DeviceStatus], pools: Iterable[str]
) -> dict[str, bool]:
    """Per configured pool that some reachable device lists: True when one of them sees it Alive."""
    wanted = set(pools)
    reports = {
        report
        for device_id, sample in samples.items()
        if (report := sample.pools_alive) and status[device_id].reachable
    }  # drivers share one tuple per distinct report: the set stays small
    seen: dict[str, bool] = {}
    for report in reports:
        for name, alive in report:
            if name in wanted:
                seen[name] = seen.get(name, False) or alive
    return seen


class PoolHealth:
    """The up/down state of each configured pool, updated from each poll's samples."""

    def __init__(self, pools: Iterable[str], recovery_seconds: float = 300.0) -> None:
        if recovery_seconds < 0:
            raise ValueError("recovery_seconds must be >= 0")
        self.pools = tuple(dict.fromkeys(pools))
        self.recovery_seconds = recovery_seconds
        self.up: dict[str, bool] = {}  # pool -> up (absent: never seen, counted up)
        self._alive_since: dict[str, float] = {}  # pool down but seen alive since then

    def update(
        self, samples: Mapping[str, Sample], status: Mapping[str, DeviceStatus], now: float
    ) -> dict[str, bool]:
        """Fold one poll's reports in; return the pools whose state changed (pool -> up)."""
        changed: dict[str, bool] = {}
        for pool, alive in seen_alive(samples, status, self.pools).items():
            was_up = self.up.get(pool, True)
            if not alive:
                self._alive_since.pop(pool, None)
                if was_up or pool not in self.up:
                    changed[pool] = False
                self.up[pool] = False
                continue
            if was_up:
                if pool not in self.up:
                    changed[pool] = True
                self.up[pool] = True
                continue
            since = self._alive_since.setdefault(pool, now)
            if now - since >= self.recovery_seconds:
                self._alive_since.pop(pool, None)
                self.up[pool] = True
                changed[pool] = True
        return changed

    def alive_since(self, pool: str) -> float | None:
        """When a pool still counted down was first seen alive again (None: not recovering)."""
        return self._alive_since.get(pool)
