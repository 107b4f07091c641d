"""Maintenance windows: a machine or a rack the policies leave alone for a while.

A window names a device (``s21-001``) or a rack (``rack:R1``, racks from the
config's ``location`` fields) and lasts at most MAX_WINDOW_SECONDS.  While it
lasts the control loop sends its devices nothing (they are left out of every
plan; the Guard's safety rules still apply), reports count its time apart from
uptime, and, with ``[alertmanager]`` configured, an Alertmanager silence
matching its devices holds their alerts back (created through Alertmanager's
API, expired when the window is ended early).

Windows are stored in the store's settings (key ``maintenance``, JSON) and each
change is committed with its API audit row.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from scheduler.control.service import Actor, ControlRejected
from scheduler.store.operator import ApiAuditEntry, ControlStore

log = logging.getLogger(__name__)

SETTING_KEY = "maintenance"
MAX_WINDOWS = 256
MAX_WINDOW_SECONDS = 14 * 24 * 3600.0
MAX_NOTE = 256
RACK_PREFIX = "rack:"
SILENCE_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class Window:
    """One maintenance window; ``devices`` are the ids it covers when it was opened."""

    target: str
    devices: tuple[str, ...]
    start: datetime
    until: datetime
    note: str
    by: str
    silence_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The stored and answered form."""
        data = asdict(self)
        data["devices"] = list(self.devices)
        data["start"] = self.start.isoformat()
        data["until"] = self.until.isoformat()
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Window:
        """Parse the stored form."""
        return cls(
            target=str(data["target"]),
            devices=tuple(str(d) for d in data["devices"]),
            start=datetime.fromisoformat(data["start"]),
            until=datetime.fromisoformat(data["until"]),
            note=str(data.get("note", "")),
            by=str(data.get("by", "")),
            silence_id=data.get("silence_id"),
        )


class AlertSilencer:
    """Creates and expires silences through Alertmanager's API v2."""

    def __init__(self, url: str, *, timeout_seconds: float = SILENCE_TIMEOUT_SECONDS) -> None:
        self.url = url.rstrip("/")
        self.timeout_seconds = timeout_seconds

    async def silence(self, window: Window) -> str:
        """Create a silence for the window's devices; return its id."""
        pattern = "|".join(re.escape(d) for d in window.devices)
        body = {
            "matchers": [
                {"name": "device", "value": pattern, "isRegex": True, "isEqual": True},
            ],
            "startsAt": window.start.isoformat(),
            "endsAt": window.until.isoformat(),
            "createdBy": f"wattmux:{window.by}",
            "comment": f"maintenance of {window.target}: {window.note}"[: MAX_NOTE + 64],
        }
        async with httpx.AsyncClient(timeout=self.timeout_seconds, trust_env=False) as client:
            response = await client.post(f"{self.url}/api/v2/silences", json=body)
            response.raise_for_status()
            return str(response.json()["silenceID"])

    async def expire(self, silence_id: str) -> None:
        """Expire a silence (the window ended early)."""
        async with httpx.AsyncClient(timeout=self.timeout_seconds, trust_env=False) as client:
            response = await client.delete(f"{self.url}/api/v2/silence/{silence_id}")
            response.raise_for_status()


class MaintenanceWindows:
    """The windows in force: read by the policy each tick, changed through the API."""

    def __init__(
        self,
        store: ControlStore,
        devices: Mapping[str, Any],
        racks: Callable[[], Mapping[str, tuple[str, int]]],
        *,
        silencer: AlertSilencer | None = None,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.devices = devices
        self.racks = racks  # device id -> (rack, position)
        self.silencer = silencer
        self.wall_clock = wall_clock
        stored = store.settings().get(SETTING_KEY)
        self._windows: dict[str, Window] = {}
        if stored:
            for item in json.loads(stored):
                window = Window.from_json(item)
                self._windows[window.target] = window
        self._cache: tuple[datetime, frozenset[str]] | None = None

    def windows(self, now: datetime | None = None) -> list[Window]:
        """Windows not yet ended at now."""
        at = now or self.wall_clock()
        return sorted(
            (w for w in self._windows.values() if w.until > at), key=lambda w: (w.until, w.target)
        )

    def devices_in_maintenance(self, now: datetime | None = None) -> frozenset[str]:
        """Every device id in a window at now (what the policy leaves alone)."""
        at = now or self.wall_clock()
        if self._cache is not None and self._cache[0] == at:
            return self._cache[1]
        found = frozenset(d for w in self._windows.values() if w.until > at for d in w.devices)
        self._cache = (at, found)
        return found

    def _resolve(self, target: str) -> tuple[str, ...]:
        if target.startswith(RACK_PREFIX):
            rack = target[len(RACK_PREFIX) :]
            members = tuple(sorted(d for d, (r, _) in self.racks().items() if r == rack))
            if not members:
                raise ControlRejected(404, f"no device is placed in rack {rack!r}")
            return members
        if target not in self.devices:
            raise ControlRejected(404, f"unknown device {target!r} (a rack is rack:NAME)")
        return (target,)

    def _save(self, actor: Actor, before: Any, after: Any, at: datetime) -> None:
        live = [w.to_json() for w in self.windows(at)]
        audit = ApiAuditEntry(
            at=at,
            principal=actor.principal,
            role=actor.role,
            remote=actor.remote,
            method=actor.method,
            path=actor.path,
            before=json.dumps(before, sort_keys=True),
            after=json.dumps(after, sort_keys=True),
            result="ok",
            status_code=200,
        )
        self.store.put_setting(SETTING_KEY, json.dumps(live, sort_keys=True), at, audit)
        self._cache = None

    async def open(
        self, target: str, duration_seconds: float, note: str, actor: Actor
    ) -> tuple[Window, str | None]:
        """Open (or replace) a window; return it and the silence error, if the silence failed."""
        if not 0 < duration_seconds <= MAX_WINDOW_SECONDS:
            raise ControlRejected(
                422,
                f"duration must be in (0, {MAX_WINDOW_SECONDS:.0f}] seconds",
                "duration_seconds",
            )
        now = self.wall_clock()
        live = {w.target for w in self.windows(now)}
        if target not in live and len(live) >= MAX_WINDOWS:
            raise ControlRejected(409, f"{MAX_WINDOWS} maintenance windows are open; end one first")
        devices = self._resolve(target)
        before = self._windows.get(target)
        window = Window(
            target=target,
            devices=devices,
            start=now,
            until=now + timedelta(seconds=duration_seconds),
            note=note[:MAX_NOTE],
            by=actor.principal,
        )
        silence_error = None
        if self.silencer is not None:
            if before is not None and before.silence_id and before.until > now:
                await self._expire(before)
            try:
                silence_id = await self.silencer.silence(window)
                window = dataclasses.replace(window, silence_id=silence_id)
            except (httpx.HTTPError, KeyError, ValueError) as exc:
                silence_error = f"alert silence not created: {type(exc).__name__}: {exc}"[:300]
                log.warning("maintenance of %s: %s", target, silence_error)
        self._windows = {t: w for t, w in self._windows.items() if w.until > now}
        self._windows[target] = window
        self._save(actor, None if before is None else before.to_json(), window.to_json(), now)
        log.info(
            "maintenance of %s (%d device(s)) until %s by %s",
            target,
            len(devices),
            window.until.isoformat(),
            actor.principal,
        )
        return window, silence_error

    async def end(self, target: str, actor: Actor) -> Window:
        """End a window early; its silence is expired."""
        now = self.wall_clock()
        window = self._windows.get(target)
        if window is None or window.until <= now:
            raise ControlRejected(404, f"no maintenance window for {target!r}")
        del self._windows[target]
        self._save(actor, window.to_json(), None, now)
        await self._expire(window)
        log.info("maintenance of %s ended by %s", target, actor.principal)
        return window

    async def _expire(self, window: Window) -> None:
        if self.silencer is None or not window.silence_id:
            return
        try:
            await self.silencer.expire(window.silence_id)
        except httpx.HTTPError as exc:
            log.warning("alert silence %s not expired: %s", window.silence_id, exc)
