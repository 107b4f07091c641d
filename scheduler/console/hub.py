"""What the console shows, computed once per interval and shared by every open console.

``ConsoleHub`` keeps one table of the fleet (static columns once, live columns
per device) and the site summary.  Each ``interval_seconds`` it rebuilds the
live columns of the devices whose state objects changed (identity checks, so a
quiet fleet costs little), and sends one server-sent event with the changed rows
and the summary to every subscriber: the event is encoded once, whatever the
number of consoles.  A subscriber whose queue is full is dropped (its page
reconnects and reloads the table).  Every ``history_step_seconds`` a point of
the site's series goes into a bounded ring (24 h by default) for the charts.
With no console open the hub only wakes for the history and for a table asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from scheduler.api.views import ControlView
from scheduler.core.economics import market_economics
from scheduler.core.limits import event_limit_w
from scheduler.core.model import TERA, WorkloadKind
from scheduler.core.state import FleetState

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_SECONDS = 0.5
HISTORY_SECONDS = 24 * 3600.0
HISTORY_STEP_SECONDS = 60.0
MAX_SUBSCRIBERS = 64
QUEUE_EVENTS = 64
HEARTBEAT_SECONDS = 15.0
MAX_OVERRIDES_SHOWN = 200

STATIC_COLUMNS = (
    "id",
    "model",
    "address",
    "pools",
    "rack",
    "position",
    "max_temp_c",
    "nominal_w",
    "nominal_ths",
)
LIVE_COLUMNS = (
    "state",
    "workload",
    "desired",
    "power_w",
    "hashrate_ths",
    "temp_c",
    "reason",
    "override",
    "health",
    "error",
)
HISTORY_COLUMNS = ("t", "site_kw", "cap_kw", "price", "hashrate_ths", "margin", "mining", "asleep")


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.astimezone(UTC).isoformat(timespec="seconds")


@dataclass
class _Cached:
    """The state objects a row was built from, and the row."""

    keys: tuple[object, ...]
    row: tuple[Any, ...]


class ConsoleHub:
    """The console's shared view of the site: table, summary, history, subscribers."""

    def __init__(
        self,
        view: ControlView,
        *,
        locations: Mapping[str, tuple[str, int]] | None = None,
        interval_seconds: float = DEFAULT_INTERVAL_SECONDS,
        history_step_seconds: float = HISTORY_STEP_SECONDS,
        history_seconds: float = HISTORY_SECONDS,
        max_subscribers: int = MAX_SUBSCRIBERS,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        location_problems: list[str] | None = None,
    ) -> None:
        self.view = view
        self.interval_seconds = interval_seconds
        self.history_step_seconds = history_step_seconds
        self.max_subscribers = max_subscribers
        self.wall_clock = wall_clock
        self.location_problems = list(location_problems or [])[:50]
        state = view.state
        self.ids = sorted(state.devices)
        self.index = {device_id: i for i, device_id in enumerate(self.ids)}
        places = locations or {}
        self.static = []
        for device_id in self.ids:
            device = state.devices[device_id]
            rack, position = places.get(device_id, (None, None))
            self.static.append(
                (
                    device_id,
                    device.model,
                    device.address,
                    ",".join(device.pools or device.queues),
                    rack,
                    position,
                    device.max_temperature_c,
                    round(device.nominal_power_w),
                    round(device.nominal_hashrate_hs / TERA, 1),
                )
            )
        self.nominal_w = sum(d.nominal_power_w for d in state.devices.values())
        self.version = 0
        self._cache: list[_Cached | None] = [None] * len(self.ids)
        self.rows: list[tuple[Any, ...]] = [()] * len(self.ids)
        self.summary: dict[str, Any] = {}
        self.history: deque[tuple[float | None, ...]] = deque(
            maxlen=max(1, int(history_seconds / history_step_seconds))
        )
        self._last_history = -float("inf")
        self._subscribers: set[asyncio.Queue[bytes]] = set()
        self._fleet_body: tuple[int, bytes, bytes] | None = None
        self._mode_seen: str | None = None
        self._mode_by: dict[str, str | None] = {"by": None, "at": None}
        self.dropped = 0
        self.closed = False
        self._breakeven: tuple[object, dict[str, float]] = (None, {})
        self.refresh()

    # --- building -----------------------------------------------------------------------

    def _reasons(self) -> dict[str, str]:
        plan = self.view.current_plan()
        if plan is None:
            return {}
        return {a.device_id: str(a.reason) for a in plan.assignments}

    def refresh(self) -> list[int]:
        """Rebuild what changed; return the indices of the rows that changed."""
        state = self.view.state
        reasons = self._reasons()
        control = self.view.control
        overrides = {}
        if control is not None:
            with contextlib.suppress(Exception):
                overrides = {row.device_id: row for row in control.overrides()}
        changed: list[int] = []
        status_of, sample_of = state.status.get, state.samples.get
        desired_of, drift_of = state.desired.get, state.drift.get
        override_of, reason_of = overrides.get, reasons.get
        cache = self._cache
        for i, device_id in enumerate(self.ids):
            status = status_of(device_id)
            sample = sample_of(device_id)
            desired = desired_of(device_id)
            drift = drift_of(device_id)
            override = override_of(device_id)
            reason = reason_of(device_id, "")
            cached = cache[i]
            if (
                cached is not None
                and cached.keys[0] is status
                and cached.keys[1] is sample
                and cached.keys[2] is desired
                and cached.keys[3] is drift
                and cached.keys[4] == override
                and cached.keys[5] == reason
            ):
                continue
            row = self._row(state, device_id, status, sample, desired, drift, override, reason)
            cache[i] = _Cached((status, sample, desired, drift, override, reason), row)
            if row != self.rows[i]:
                self.rows[i] = row
                changed.append(i)
        if changed:
            self.version += 1
        self.summary = self._summary(state, overrides)
        return changed

    def _row(
        self,
        state: FleetState,
        device_id: str,
        status: Any,
        sample: Any,
        desired: Any,
        drift: Any,
        override: Any,
        reason: str,
    ) -> tuple[Any, ...]:
        device = state.devices[device_id]
        reachable = status is not None and status.reachable
        trusted = sample if reachable else None
        if trusted is None:
            kind = "unreachable"
        else:
            kind = {
                WorkloadKind.MINE: "mining",
                WorkloadKind.AI: "ai",
                WorkloadKind.SLEEP: "asleep",
                WorkloadKind.OFF: "off",
            }[trusted.workload.kind]
        temp = None if trusted is None or trusted.temperature_c is None else trusted.temperature_c
        if not reachable:
            health = "down"
        elif drift is not None:
            health = "drift"
        elif temp is not None and temp >= device.max_temperature_c - 5:
            health = "hot"
        else:
            health = "ok"
        return (
            kind,
            "" if trusted is None else str(trusted.workload),
            "" if desired is None else str(desired),
            None if trusted is None else round(trusted.power_w),
            None if trusted is None else round(trusted.hashrate_hs / TERA, 1),
            None if temp is None else round(temp, 1),
            reason,
            None
            if override is None
            else [str(override.workload), _iso(override.until), override.by, override.note],
            health,
            "" if status is None or status.last_error is None else status.last_error[:200],
        )

    def _summary(self, state: FleetState, overrides: Mapping[str, Any]) -> dict[str, Any]:
        view = self.view
        config = view.config
        counts = {"mining": 0, "asleep": 0, "ai": 0, "off": 0, "unreachable": 0}
        site_w = 0.0
        hashrate = 0.0
        for row in self.rows:
            if not row:
                continue
            counts[row[0]] += 1
            site_w += row[3] or 0.0
            hashrate += row[4] or 0.0
        drifted = sum(1 for row in self.rows if row and row[8] == "drift")
        cap = config.site.power_cap_kw
        control = view.control
        curtail = None if control is None else control.curtail()
        effective = cap if curtail is None else min(cap, curtail.target_kw or 0.0)
        now_wall = self.wall_clock()
        events = []
        for event in state.events:
            active = event.start <= now_wall < event.end
            allowed_w = event_limit_w(event, self.nominal_w) if active else None
            if allowed_w is not None:  # as the policies and the Guard read it (core.limits)
                effective = min(effective, allowed_w / 1000.0)
            if event.end > now_wall:
                events.append(
                    {
                        "id": event.id,
                        "start": _iso(event.start),
                        "end": _iso(event.end),
                        "target_kw": event.target_kw,
                        "reduction_kw": event.reduction_kw,
                        "active": active,
                    }
                )
        mode = None if control is None else str(control.mode)
        if mode is not None and mode != self._mode_seen:
            self._mode_seen = mode
            self._mode_by = self._who_set_mode()
        plan = view.current_plan()
        margin = sum(a.expected_margin_usd_per_hour for a in plan.assignments) if plan else 0.0
        price = state.market.power_price_usd_per_mwh
        if self._breakeven[0] is not state.market:  # the market changed: compute again
            breakeven: dict[str, float] = {}
            economics = market_economics(state.snapshot(view.clock()))
            if economics is not None:
                for device in state.devices.values():
                    if device.model not in breakeven and device.kind.value == "asic":
                        breakeven[device.model] = round(economics.breakeven_usd_per_mwh(device), 2)
            self._breakeven = (state.market, breakeven)
        breakeven = self._breakeven[1]
        shown = sorted(overrides.values(), key=lambda r: r.until)[:MAX_OVERRIDES_SHOWN]
        return {
            "site": config.site.name,
            "at": _iso(now_wall),
            "devices": len(self.ids),
            "counts": counts,
            "drifted": drifted,
            "site_kw": round(site_w / 1000.0, 2),
            "cap_kw": cap,
            "effective_cap_kw": round(effective, 2),
            "hashrate_ths": round(hashrate, 1),
            "price_usd_mwh": None if price is None else round(price.value, 2),
            "breakeven_usd_mwh": breakeven,
            "margin_usd_h": round(margin, 2),
            "mode": mode,
            "mode_by": self._mode_by,
            "policy": None if control is None else control.policy_name,
            "policies": [] if control is None else list(control.policies),
            "curtail": None
            if curtail is None
            else {"target_kw": curtail.target_kw, "until": _iso(curtail.until), "by": curtail.by},
            "dr_events": events,
            "overrides": [
                {
                    "device": r.device_id,
                    "workload": str(r.workload),
                    "until": _iso(r.until),
                    "by": r.by,
                    "note": r.note,
                }
                for r in shown
            ],
            "override_count": len(overrides),
            "pools_down": sorted(p for p, up in state.pools_up.items() if not up),
            "location_problems": self.location_problems,
        }

    def _who_set_mode(self) -> dict[str, str | None]:
        control = self.view.control
        if control is None:
            return {"by": None, "at": None}
        with contextlib.suppress(Exception):
            for row in control.store.api_audit(limit=200, offset=0):
                if row.method == "PUT" and row.path == "/v1/mode" and row.status_code == 200:
                    return {"by": row.principal, "at": _iso(row.at)}
        return {"by": None, "at": None}

    def _history_point(self, now: float) -> tuple[float | None, ...] | None:
        if now - self._last_history < self.history_step_seconds:
            return None
        self._last_history = now
        s = self.summary
        price = s["price_usd_mwh"]
        point = (
            round(self.wall_clock().timestamp(), 1),
            s["site_kw"],
            s["effective_cap_kw"],
            price,
            s["hashrate_ths"],
            s["margin_usd_h"],
            s["counts"]["mining"],
            s["counts"]["asleep"],
        )
        self.history.append(point)
        return point

    # --- answers ------------------------------------------------------------------------

    def fleet_body(self) -> tuple[bytes, bytes]:
        """The whole table as JSON (plain, gzip), cached until a row changes."""
        if not self._subscribers:
            self.refresh()  # nobody is sent the changed rows: nothing is lost by refreshing here
        cached = self._fleet_body
        if cached is not None and cached[0] == self.version:
            return cached[1], cached[2]
        body = _dumps(
            {
                "v": self.version,
                "static_columns": STATIC_COLUMNS,
                "live_columns": LIVE_COLUMNS,
                "static": self.static,
                "rows": self.rows,
                "summary": self.summary,
            }
        )
        packed = gzip.compress(body, compresslevel=5)
        self._fleet_body = (self.version, body, packed)
        return body, packed

    def history_body(self) -> bytes:
        """The site's series of the last 24 h (columns, then points)."""
        return _dumps({"columns": HISTORY_COLUMNS, "points": list(self.history)})

    # --- subscribers --------------------------------------------------------------------

    def subscribe(self) -> asyncio.Queue[bytes] | None:
        """A queue of events for a new console (None when too many are open)."""
        if self.closed or len(self._subscribers) >= self.max_subscribers:
            return None
        queue: asyncio.Queue[bytes] = asyncio.Queue(QUEUE_EVENTS)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[bytes]) -> None:
        """Forget a console's queue."""
        self._subscribers.discard(queue)

    @property
    def subscribers(self) -> int:
        """Consoles listening now."""
        return len(self._subscribers)

    def step(self, now: float) -> None:
        """One interval: refresh, record history, send one event to every console."""
        if not self._subscribers and now - self._last_history < self.history_step_seconds:
            return  # no console open: work only for the history (answers refresh on demand)
        before = self.summary
        changed = self.refresh()
        point = self._history_point(now)
        if not self._subscribers:
            return
        same = {**before, "at": None} == {**self.summary, "at": None}
        if not changed and point is None and same:
            return  # nothing new: no event (the stream sends its own keep-alive)
        payload: dict[str, Any] = {"v": self.version, "summary": self.summary}
        if changed:
            payload["rows"] = [[i, *self.rows[i]] for i in changed]
        if point is not None:
            payload["point"] = point
        event = b"event: update\ndata: " + _dumps(payload) + b"\n\n"
        for queue in list(self._subscribers):
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                self._subscribers.discard(queue)
                self.dropped += 1
                queue.get_nowait()  # room for the end marker: the stream ends, the page reloads
                queue.put_nowait(b"")
                log.info("console dropped: it did not keep up with the updates")

    async def run(self, stop: asyncio.Event) -> None:
        """Step every interval until stop is set; then end every console's stream."""
        try:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    self.step(started)
                except Exception:
                    log.exception("console update failed")
                spent = time.monotonic() - started
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), max(0.05, self.interval_seconds - spent))
        finally:
            self.close()

    def close(self) -> None:
        """End every console's stream; no new one starts."""
        self.closed = True
        for queue in list(self._subscribers):
            while True:
                try:
                    queue.put_nowait(b"")
                    break
                except asyncio.QueueFull:
                    queue.get_nowait()
        self._subscribers.clear()


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()
