"""Operator control: mode, overrides, curtail events and policy choice, durable in the store.

``ControlService`` holds what operators changed through the API; every change
is committed with its audit row before the API answers.  Three small hooks
bring it into the loop without changing the loop itself:

- ``ControlledPolicy`` wraps the configured policy: in ``manual`` and
  ``paused`` mode devices hold their workload; active overrides replace the
  policy's assignment (reason ``override``).
- ``ControlledGuard`` is the Guard plus the curtail event (reason ``curtail``),
  applied after the site power cap; overrides skip only the anti-flap rules,
  never the safety rules (stale price, thermal, power cap, curtail).
- ``ControlledReconciler`` gates commands by mode (``dry-run`` logs intents
  as skipped, ``paused`` sends only safety changes) and, after a restart,
  closes the intents a crash left open by reading the devices back, never by
  resending them.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any

from scheduler.config.schema import PolicyConfig
from scheduler.control.guard import Guard
from scheduler.control.reconciler import Reconciler
from scheduler.control.setpoint import SetpointController
from scheduler.core.economics import market_economics, option_economics
from scheduler.core.model import Assignment, Device, Plan, Snapshot, Workload, WorkloadKind
from scheduler.core.power import planned_power_w
from scheduler.core.reasons import ALWAYS_SENT_REASONS, Reason
from scheduler.policies import Policy, PolicyFactory
from scheduler.store.journal import Intent
from scheduler.store.operator import ApiAuditEntry, ControlStore, OverrideRow
from scheduler.store.sqlite import StoreError

log = logging.getLogger(__name__)

MAX_DURATION_SECONDS = 7 * 24 * 3600.0
MAX_OVERRIDES = 1000  # active overrides at once; one more is refused (409)
CLOCK_STEP_SECONDS = 2.0  # the wall clock moving this much against the monotonic one is a step


class Mode(enum.StrEnum):
    """How the daemon acts on its plans."""

    AUTO = "auto"
    MANUAL = "manual"
    DRY_RUN = "dry-run"
    PAUSED = "paused"


class ControlRejected(Exception):
    """A control change that cannot be made; ``status_code`` is the HTTP answer."""

    def __init__(self, status_code: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.field = field


@dataclass(frozen=True, slots=True)
class Curtail:
    """A site-wide curtail event: hold the site at target_kw (None = everything asleep) until."""

    target_kw: float | None
    until: datetime
    by: str

    def to_json(self) -> str:
        """Stable JSON form for the store and the audit log."""
        return json.dumps(
            {"target_kw": self.target_kw, "until": self.until.isoformat(), "by": self.by},
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> Curtail:
        """Parse the form written by to_json."""
        data = json.loads(text)
        return cls(data["target_kw"], datetime.fromisoformat(data["until"]), data["by"])


@dataclass(frozen=True, slots=True)
class Actor:
    """Who asks for a change and how: for the audit row."""

    principal: str
    role: str
    remote: str
    method: str
    path: str


def _override_json(row: OverrideRow | None) -> str:
    if row is None:
        return "null"
    return json.dumps(
        {
            "device": row.device_id,
            "workload": str(row.workload),
            "until": row.until.isoformat(),
            "note": row.note,
            "by": row.by,
        },
        sort_keys=True,
    )


class ControlService:
    """Mode, overrides, curtail and policy: read by the loop, changed through the API."""

    def __init__(
        self,
        store: ControlStore,
        devices: Mapping[str, Device],
        *,
        default_policy: str,
        policies: Sequence[str],
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        clock: Callable[[], float] | None = None,
        max_overrides: int = MAX_OVERRIDES,
    ) -> None:
        self.store = store
        self.devices = devices
        self.policies = tuple(sorted(policies))
        self.wall_clock = wall_clock
        self.max_overrides = max_overrides
        # With a monotonic clock, durations (curtail, overrides) follow it: a step of the
        # wall clock moves their wall-time ends by the same step (logged), so they still
        # last the time they were given.
        self._clock = clock
        self._wall_offset = self._offset() if clock is not None else 0.0
        settings = store.settings()
        self.mode = Mode(settings.get("mode", Mode.AUTO.value))
        self.policy_name = settings.get("policy", default_policy)
        if self.policy_name not in self.policies:
            log.warning(
                "stored policy %r is not installed; using %s", self.policy_name, default_policy
            )
            self.policy_name = default_policy
        curtail = settings.get("curtail")
        self._curtail = Curtail.from_json(curtail) if curtail else None
        self._overrides = {row.device_id: row for row in store.overrides()}

    def _audit(self, actor: Actor, before: str, after: str) -> ApiAuditEntry:
        return ApiAuditEntry(
            at=self.wall_clock(),
            principal=actor.principal,
            role=actor.role,
            remote=actor.remote,
            method=actor.method,
            path=actor.path,
            before=before,
            after=after,
            result="ok",
            status_code=200,
        )

    # ---- wall clock steps -------------------------------------------------------------------

    def _offset(self) -> float:
        assert self._clock is not None
        return self.wall_clock().timestamp() - self._clock()

    def track_clock(self) -> float:
        """Re-anchor curtail and overrides when the wall clock stepped; return the step (s).

        Called by every read, so each tick notices a step before it decides.
        """
        if self._clock is None:
            return 0.0
        offset = self._offset()
        step, self._wall_offset = offset - self._wall_offset, offset
        if abs(step) < CLOCK_STEP_SECONDS:
            return 0.0
        shift = timedelta(seconds=step)
        moved: list[OverrideRow] = []
        for device_id, row in list(self._overrides.items()):
            self._overrides[device_id] = dataclasses.replace(row, until=row.until + shift)
            moved.append(self._overrides[device_id])
        if self._curtail is not None:
            self._curtail = dataclasses.replace(self._curtail, until=self._curtail.until + shift)
        moved_text = [f"{len(moved)} override(s)"]
        if self._curtail is not None:
            moved_text.insert(0, f"curtail now until {self._curtail.until.isoformat()}")
        log.warning(
            "wall clock stepped by %+.1f s against the monotonic clock; re-anchored so they"
            " last the time they were given: %s",
            step,
            ", ".join(moved_text),
        )
        try:  # so that a restart reads the re-anchored ends
            if moved:
                self.store.set_override_ends([(row.device_id, row.until) for row in moved])
            if self._curtail is not None:
                self.store.put_setting("curtail", self._curtail.to_json(), self.wall_clock(), None)
        except StoreError as exc:
            log.error("re-anchored ends could not be stored: %s", exc)
        return step

    # ---- reads ----------------------------------------------------------------------------

    def overrides(self, now: datetime | None = None) -> list[OverrideRow]:
        """Overrides not yet expired at now (default: the wall clock)."""
        self.track_clock()
        at = now or self.wall_clock()
        return [row for row in self._overrides.values() if row.until > at]

    def curtail(self, now: datetime | None = None) -> Curtail | None:
        """The curtail event in force at now, if any."""
        self.track_clock()
        at = now or self.wall_clock()
        if self._curtail is None or self._curtail.until <= at:
            return None
        return self._curtail

    # ---- changes (each one committed with its audit row) ------------------------------------

    def set_mode(self, mode: Mode, actor: Actor) -> tuple[Mode, Mode]:
        """Switch mode; return (before, after)."""
        before = self.mode
        audit = self._audit(actor, json.dumps(before.value), json.dumps(mode.value))
        self.store.put_setting("mode", mode.value, audit.at, audit)
        self.mode = mode
        log.info("mode %s -> %s by %s", before, mode, actor.principal)
        return before, mode

    def set_policy(self, name: str, actor: Actor) -> tuple[str, str]:
        """Select an installed policy by name; return (before, after)."""
        if name not in self.policies:
            raise ControlRejected(
                422, f"unknown policy {name!r}; installed: {', '.join(self.policies)}", "name"
            )
        before = self.policy_name
        audit = self._audit(actor, json.dumps(before), json.dumps(name))
        self.store.put_setting("policy", name, audit.at, audit)
        self.policy_name = name
        log.info("policy %s -> %s by %s", before, name, actor.principal)
        return before, name

    def put_override(
        self, device_id: str, workload_text: str, duration_seconds: float, note: str, actor: Actor
    ) -> OverrideRow:
        """Pin a device to a workload it supports for duration_seconds."""
        device = self.devices.get(device_id)
        if device is None:
            raise ControlRejected(404, f"unknown device {device_id!r}")
        try:
            workload = Workload.parse(workload_text)
        except ValueError as exc:
            raise ControlRejected(422, str(exc), "workload") from None
        if workload not in device.options():
            options = ", ".join(str(w) for w in device.options())
            message = f"{device_id} cannot run {workload}; its options: {options}"
            raise ControlRejected(422, message, "workload")
        self.track_clock()
        now = self.wall_clock()
        for ended in [d for d, r in self._overrides.items() if r.until <= now]:
            del self._overrides[ended]  # over: forget (the store row is replaced when reused)
        if device_id not in self._overrides and len(self._overrides) >= self.max_overrides:
            raise ControlRejected(
                409,
                f"{len(self._overrides)} overrides are active, the limit"
                f" ({self.max_overrides}); end one"
                f" (DELETE /v1/overrides/<device>) or wait until one expires",
            )
        row = OverrideRow(
            device_id=device_id,
            workload=workload,
            until=now + timedelta(seconds=duration_seconds),
            note=note,
            by=actor.principal,
            at=now,
        )
        before = _override_json(self._active(device_id, now))
        self.store.put_override(row, self._audit(actor, before, _override_json(row)))
        self._overrides[device_id] = row
        log.info(
            "override %s -> %s until %s by %s", device_id, workload, row.until, actor.principal
        )
        return row

    def _active(self, device_id: str, now: datetime) -> OverrideRow | None:
        row = self._overrides.get(device_id)
        return row if row is not None and row.until > now else None

    def delete_override(self, device_id: str, actor: Actor) -> OverrideRow:
        """Remove a device's active override; 404 when it has none."""
        if device_id not in self.devices:
            raise ControlRejected(404, f"unknown device {device_id!r}")
        row = self._active(device_id, self.wall_clock())
        if row is None:
            raise ControlRejected(404, f"{device_id} has no active override")
        self.store.delete_override(device_id, self._audit(actor, _override_json(row), "null"))
        self._overrides.pop(device_id, None)
        return row

    def set_curtail(
        self, target_kw: float | None, duration_seconds: float, actor: Actor
    ) -> Curtail:
        """Start (or replace) a curtail event; it can only lower the site's power."""
        self.track_clock()
        now = self.wall_clock()
        event = Curtail(target_kw, now + timedelta(seconds=duration_seconds), actor.principal)
        before = self.curtail(now)
        audit = self._audit(actor, before.to_json() if before else "null", event.to_json())
        self.store.put_setting("curtail", event.to_json(), now, audit)
        self._curtail = event
        log.info(
            "curtail to %s until %s by %s",
            "a full stop (every device asleep)" if target_kw is None else f"{target_kw:g} kW",
            event.until.isoformat(timespec="seconds"),
            actor.principal,
        )
        return event

    def clear_curtail(self, actor: Actor) -> Curtail:
        """End the curtail event in force; 404 when there is none."""
        now = self.wall_clock()
        before = self.curtail(now)
        if before is None:
            raise ControlRejected(404, "no curtail event in force")
        self.store.put_setting("curtail", None, now, self._audit(actor, before.to_json(), "null"))
        self._curtail = None
        return before


def _margin(device: Device, workload: Workload, snapshot: Snapshot) -> float:
    """Expected margin of a workload in USD/h, 0.0 when the market does not allow pricing it."""
    economics = market_economics(snapshot)
    if economics is None or workload.kind is WorkloadKind.AI:
        return 0.0
    return option_economics(device, workload, economics).margin_usd_per_hour


class ControlledPolicy:
    """The selected policy, or holding in manual / paused mode, with overrides on top."""

    name = "controlled"

    def __init__(
        self,
        control: ControlService,
        factories: Mapping[str, PolicyFactory],
        config: PolicyConfig,
    ) -> None:
        self.control = control
        self._factories = factories
        self._config = config
        self._built: dict[str, Policy] = {}
        self.in_maintenance: Callable[[datetime], frozenset[str]] | None = None

    def _policy(self) -> Policy:
        name = self.control.policy_name
        if name not in self._built:
            self._built[name] = self._factories[name](
                self._config.model_copy(update={"name": name})
            )
        return self._built[name]

    def reconfigure(self, config: PolicyConfig) -> None:
        """Use new [policy] settings from the next plan on (live reload)."""
        self._config = config
        self._built.clear()

    def plan(self, snapshot: Snapshot) -> Plan:
        """The inner plan (or a hold plan), then the active overrides."""
        mode = self.control.mode
        if mode in (Mode.MANUAL, Mode.PAUSED):
            assigned = {
                device_id: Assignment(
                    device_id,
                    workload,
                    Reason(mode.value),
                    _margin(snapshot.devices[device_id], workload, snapshot),
                )
                for device_id, workload in snapshot.current.items()
            }
            created_at = snapshot.now
        else:
            inner = self._policy().plan(snapshot)
            assigned = inner.by_device()
            created_at = inner.created_at
        if mode is not Mode.PAUSED:
            for row in self.control.overrides(snapshot.wall):
                device = snapshot.devices.get(row.device_id)
                if device is not None:
                    assigned[row.device_id] = Assignment(
                        row.device_id,
                        row.workload,
                        Reason.OVERRIDE,
                        _margin(device, row.workload, snapshot),
                    )
        held = self.in_maintenance(snapshot.wall) if self.in_maintenance else frozenset()
        ordered = tuple(
            assigned[d] for d in snapshot.devices if d in assigned and d not in held
        )  # a device in maintenance is sent nothing (scheduler.control.maintenance)
        return Plan(created_at=created_at, assignments=ordered)


class ControlledGuard(Guard):
    """The Guard, with overrides exempt from anti-flap only, and the curtail event last."""

    control: ControlService | None = None
    setpoint: SetpointController | None = None  # site power control after the cap (meter)
    _policy_plan: Mapping[str, Assignment] = MappingProxyType({})

    def apply(self, plan: Plan, snapshot: Snapshot) -> Plan:
        """The Guard's plan; the setpoint controller sees what the policy asked for."""
        if self.setpoint is not None:
            self._policy_plan = plan.by_device()
        return super().apply(plan, snapshot)

    def _anti_flap(self, assigned: dict[str, Assignment], snapshot: Snapshot) -> None:
        pinned = {d: a for d, a in assigned.items() if a.reason == Reason.OVERRIDE}
        rest = {d: a for d, a in assigned.items() if a.reason != Reason.OVERRIDE}
        super()._anti_flap(rest, snapshot)
        assigned.clear()
        assigned.update(rest)
        assigned.update(pinned)

    def _power_cap(self, assigned: dict[str, Assignment], snapshot: Snapshot) -> None:
        super()._power_cap(assigned, snapshot)
        event = self.control.curtail(snapshot.wall) if self.control else None
        if event is not None:
            target_w = 0.0 if event.target_kw is None else event.target_kw * 1000.0
            apply_curtail(assigned, snapshot, target_w)
        if self.setpoint is not None:
            self.setpoint.apply(assigned, snapshot, self._policy_plan)


def apply_curtail(assigned: dict[str, Assignment], snapshot: Snapshot, target_w: float) -> None:
    """Sleep running devices, least efficient first, until the planned site power <= target_w."""

    def workload_of(device: Device) -> Workload | None:
        assignment = assigned.get(device.id)
        return assignment.workload if assignment else snapshot.current.get(device.id)

    total_w = sum(planned_power_w(d, workload_of(d)) for d in snapshot.devices.values())
    running = [
        d for d in snapshot.devices.values() if (w := workload_of(d)) is not None and w.is_running
    ]
    running.sort(key=lambda d: d.efficiency_j_per_th, reverse=True)
    for device in running:
        if total_w <= target_w:
            break
        total_w -= planned_power_w(device, workload_of(device)) - device.sleep_power_w
        assigned[device.id] = Assignment(device.id, Workload.sleep(), Reason.CURTAIL, 0.0)


class ControlledReconciler(Reconciler):
    """The Reconciler gated by mode, closing a crash's open intents by reading back."""

    def __init__(self, *args: Any, control: ControlService, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.control = control
        self._orphans: dict[str, list[Intent]] | None = None
        self._dry_logged: dict[str, Workload] = {}
        self.recovered: list[tuple[Intent, str]] = []

    def _recover(self, snapshot: Snapshot) -> None:
        """Finish intents open since before this process, from what the device now reports."""
        if self._orphans is None:
            self._orphans = {}
            for intent in self.store.open_intents():
                self._orphans.setdefault(intent.device_id, []).append(intent)
            if self._orphans:
                log.warning(
                    "%d command intent(s) left open by the last run; reading devices back",
                    sum(len(v) for v in self._orphans.values()),
                )
        for device_id in list(self._orphans):
            observed = snapshot.current.get(device_id)
            status = snapshot.status.get(device_id)
            if device_id in snapshot.devices and (status is None or not status.reachable):
                continue  # not read yet: decide when it is
            for intent in self._orphans.pop(device_id):
                done = observed == intent.workload
                outcome = "confirmed" if done else "unconfirmed"
                self.store.finish_intent(
                    intent.id,
                    at=self.wall_clock(),
                    status=outcome,
                    detail=f"recovered after restart: device reports {observed}; not resent",
                )
                self.recovered.append((intent, outcome))

    def reconcile(self, plan: Plan, snapshot: Snapshot) -> list[str]:
        """Recover, then send what the mode allows (dry-run: log the rest as skipped)."""
        self._recover(snapshot)
        mode = self.control.mode
        if mode in (Mode.AUTO, Mode.MANUAL):
            self._dry_logged.clear()
            return super().reconcile(plan, snapshot)
        safety = tuple(a for a in plan.assignments if a.reason in ALWAYS_SENT_REASONS)
        started = super().reconcile(Plan(plan.created_at, safety), snapshot)
        if mode is Mode.DRY_RUN:
            self._log_dry_run(plan, snapshot)
        return started

    def _log_dry_run(self, plan: Plan, snapshot: Snapshot) -> None:
        """Record each would-be command once as an intent finished ``skipped``."""
        for assignment in plan.assignments:
            device_id = assignment.device_id
            if assignment.reason in ALWAYS_SENT_REASONS or device_id in self.in_flight:
                continue
            observed = snapshot.current.get(device_id)
            if observed is None or observed == assignment.workload:
                self._dry_logged.pop(device_id, None)
                continue
            if self._dry_logged.get(device_id) == assignment.workload:
                continue
            at = self.wall_clock()
            intent_id = self.store.begin_intent(
                at=at, device_id=device_id, workload=assignment.workload, reason=assignment.reason
            )
            self.store.finish_intent(intent_id, at=at, status="skipped", detail="dry-run: not sent")
            self.metrics.commands.labels(outcome="skipped").inc()
            self._dry_logged[device_id] = assignment.workload
