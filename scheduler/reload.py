"""Live reload: re-read the config file and apply inventory, tokens and policy settings.

SIGHUP, ``POST /v1/reload`` (admin) and ``wattmux reload`` come here.  The new
file is read and validated in full first; a file that does not load leaves the
running config in place and the reason is one line (logged, answered, audited).

What a reload applies while the daemon runs:

- the inventory (``[[devices]]`` and ``[[device_ranges]]``): devices added are
  polled from the next tick, devices removed are no longer polled nor planned
  (their in-flight command still finishes), devices whose entry changed get the
  new model and options;
- the API tokens (``[api] tokens``): a removed token is refused at its next request;
- the policy settings (``[policy]``): the policy is rebuilt with them at the next tick.

Any other section that changed is named in the answer as needing a restart and
is not applied (pools, market feeds, MQTT, the store, listen address, ...).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from drivers.secrets import settings_key
from scheduler.config.loading import ConfigError, load_config
from scheduler.config.schema import WattmuxConfig
from scheduler.core.model import Device, DeviceStatus
from scheduler.core.state import FleetState
from scheduler.store.operator import ApiAuditEntry, ControlStore

log = logging.getLogger(__name__)

RELOADED_SECTIONS = ("devices", "device_ranges", "policy", "api.tokens")
MAX_PROBLEMS_SHOWN = 3


class ReloadRefused(Exception):
    """The new config was not applied; ``message`` is one line saying why."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class ReloadResult:
    """What one reload changed."""

    path: str
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    tokens: int = 0
    tokens_changed: bool = False
    policy_changed: bool = False
    restart_needed: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for the log and the CLI."""
        parts = [
            f"devices +{len(self.added)} -{len(self.removed)} ~{len(self.changed)}",
            f"tokens {self.tokens}{' (changed)' if self.tokens_changed else ''}",
            f"policy {'changed' if self.policy_changed else 'unchanged'}",
        ]
        if self.restart_needed:
            parts.append(f"needs a restart to apply: {', '.join(self.restart_needed)}")
        return f"config reloaded from {self.path}: " + "; ".join(parts)

    def to_json(self) -> dict[str, Any]:
        """The API's answer."""
        return {
            "path": self.path,
            "added": self.added,
            "removed": self.removed,
            "changed": self.changed,
            "tokens": self.tokens,
            "tokens_changed": self.tokens_changed,
            "policy_changed": self.policy_changed,
            "restart_needed": self.restart_needed,
            "summary": self.summary(),
        }


class Reloadable(Protocol):
    """The parts of the running daemon a reload changes."""

    config: WattmuxConfig
    state: FleetState


def _dump(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str, sort_keys=True))


def _section(config: WattmuxConfig, name: str) -> Any:
    data = config.model_dump(mode="json")
    if name == "api":
        data["api"].pop("tokens", None)
    return _dump(data.get(name))


def restart_sections(running: WattmuxConfig, new: WattmuxConfig) -> list[str]:
    """The sections that differ but are not applied by a reload."""
    names = [
        n for n in WattmuxConfig.model_fields if n not in ("devices", "device_ranges", "policy")
    ]
    return [n for n in names if _section(running, n) != _section(new, n)]


def _asic_devices(config: WattmuxConfig) -> dict[str, tuple[Device, str]]:
    """Device id -> (device, its entry's options as JSON) of [[devices]] and [[device_ranges]]."""
    out: dict[str, tuple[Device, str]] = {}
    for entry in (*config.devices, *config.device_ranges):
        options = settings_key(entry.options)
        for device in entry.devices():
            out[device.id] = (device, options)
    return out


class Reloader:
    """Re-reads the config file and applies it to a running daemon.

    ``drivers_for``: builds the drivers of a config, keyed by device id;
    ``telemetry`` and ``controls``: the loop's and the reconciler's driver maps
    (changed in place); ``replace_tokens``: checks the new config's tokens and swaps
    them into the API (ValueError when one is malformed, before anything changed);
    ``rebuild_policy``: given the new [policy], makes the next tick use it.
    """

    def __init__(
        self,
        daemon: Reloadable,
        path: str | Path,
        *,
        drivers_for: Callable[[WattmuxConfig], dict[str, Any]],
        telemetry: MutableMapping[str, Any],
        controls: MutableMapping[str, Any],
        rebuild_policy: Callable[[WattmuxConfig], None],
        store: ControlStore | None,
        replace_tokens: Callable[[WattmuxConfig], None],
        pushed: frozenset[str] = frozenset(),
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.daemon = daemon
        self.path = str(path)
        self.drivers_for = drivers_for
        self.telemetry = telemetry
        self.controls = controls
        self.rebuild_policy = rebuild_policy
        self.store = store
        self.replace_tokens = replace_tokens
        self.pushed = pushed
        self.wall_clock = wall_clock
        self.reloads = 0
        self.failures = 0

    def _audit(
        self, principal: str, role: str, remote: str, method: str, before: Any, after: Any, ok: bool
    ) -> None:
        if self.store is None:
            return
        self.store.record_api_audit(
            ApiAuditEntry(
                at=self.wall_clock(),
                principal=principal,
                role=role,
                remote=remote,
                method=method,
                path="/v1/reload",
                before=json.dumps(before, sort_keys=True)[:4096],
                after=json.dumps(after, sort_keys=True)[:4096],
                result="ok" if ok else "refused",
                status_code=200 if ok else 422,
            )
        )

    def _state_of(self, config: WattmuxConfig) -> dict[str, Any]:
        return {
            "devices": len(_asic_devices(config)),
            "tokens": sorted(t.name for t in config.api.tokens),
            "policy": _dump(config.policy.model_dump(mode="json")),
        }

    def reload(
        self,
        principal: str = "SIGHUP",
        role: str = "admin",
        remote: str = "local",
        method: str = "SIGHUP",
    ) -> ReloadResult:
        """Read, validate and apply the file; raise ReloadRefused leaving everything as it was."""
        running = self.daemon.config
        before = self._state_of(running)
        try:
            new = self._load()
        except ReloadRefused as exc:
            self.failures += 1
            log.error("config reload refused, running config kept: %s", exc.message)
            self._audit(principal, role, remote, method, before, {"error": exc.message}, False)
            raise
        try:
            result = self._apply(running, new)
        except ReloadRefused as exc:
            self.failures += 1
            log.error("config reload refused, running config kept: %s", exc.message)
            self._audit(principal, role, remote, method, before, {"error": exc.message}, False)
            raise
        self.reloads += 1
        log.info("%s", result.summary())
        self._audit(principal, role, remote, method, before, self._state_of(new), True)
        return result

    def _load(self) -> WattmuxConfig:
        try:
            new = load_config(self.path)
        except ConfigError as exc:
            shown = "; ".join(exc.problems[:MAX_PROBLEMS_SHOWN])
            more = len(exc.problems) - MAX_PROBLEMS_SHOWN
            extra = f" (and {more} more: wattmux check-config {exc.source})" if more > 0 else ""
            raise ReloadRefused(f"{exc.source}: {shown}{extra}") from exc
        return new

    def _apply(self, running: WattmuxConfig, new: WattmuxConfig) -> ReloadResult:
        old_devices, new_devices = _asic_devices(running), _asic_devices(new)
        added = sorted(set(new_devices) - set(old_devices))
        removed = sorted(set(old_devices) - set(new_devices))
        changed = sorted(
            d for d in set(old_devices) & set(new_devices) if old_devices[d] != new_devices[d]
        )
        restart = restart_sections(running, new)
        tokens_changed = _dump([t.model_dump(mode="json") for t in running.api.tokens]) != _dump(
            [t.model_dump(mode="json") for t in new.api.tokens]
        )
        gpu_ids = {d.id for n in running.gpu_nodes for d in n.devices()}
        clash = sorted(set(added) & gpu_ids)
        if clash:
            raise ReloadRefused(f"{self.path}: device ids already used by GPU nodes: {clash[:5]}")
        merged = running.model_copy(
            update={
                "devices": new.devices,
                "device_ranges": new.device_ranges,
                "policy": new.policy,
                "api": running.api.model_copy(update={"tokens": new.api.tokens}),
            }
        )
        if tokens_changed:
            try:  # first: a malformed token refuses the reload before anything changed
                self.replace_tokens(new)
            except ValueError as exc:
                raise ReloadRefused(f"{self.path}: api.tokens: {exc}") from exc
        drivers = self.drivers_for(merged) if added or changed else {}
        state = self.daemon.state
        for device_id in removed:
            state.devices.pop(device_id, None)
            state.samples.pop(device_id, None)
            state.status.pop(device_id, None)
            state.desired.pop(device_id, None)
            state.drift.pop(device_id, None)
            self.telemetry.pop(device_id, None)
            # the reconciler keeps its driver: a command in flight finishes
        for device_id in (*added, *changed):
            device = new_devices[device_id][0]
            state.devices[device_id] = device
            if device_id in added:
                state.status[device_id] = DeviceStatus(reachable=False, last_error="not polled yet")
            driver = drivers[device_id]
            self.controls[device_id] = driver
            if device_id not in self.pushed:
                self.telemetry[device_id] = driver
        policy_changed = _dump(running.policy.model_dump(mode="json")) != _dump(
            new.policy.model_dump(mode="json")
        )
        if policy_changed:
            self.rebuild_policy(merged)
        self.daemon.config = merged
        return ReloadResult(
            path=self.path,
            added=added,
            removed=removed,
            changed=changed,
            tokens=len(new.api.tokens),
            tokens_changed=tokens_changed,
            policy_changed=policy_changed,
            restart_needed=restart,
        )
