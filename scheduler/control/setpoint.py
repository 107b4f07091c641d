"""Closed-loop site power control: follow a kW target against the site meter.

A target comes from the operator (API/CLI), a demand-response program, a
webhook signal or a stream of dispatch base points (MQTT or HTTP).  The
strictest of the target, the site cap and the active DR events is the limit;
without a target but with a meter, the cap and DR limits are enforced on the
metered power.  Each tick, after the Guard:

1. the reductions this controller holds are applied again over the plan
   (unless the policy now wants the machine asleep, or a safety rule,
   override or curtail decided it);
2. the projected site power is ``bias + planned power`` where ``bias`` is the
   smoothed difference between the meter and the power the machines report
   (base load, the reports' error; a machine without a reading counts at its
   planned power);
3. above ``limit + deadband``: shed -- power targets first on firmwares that
   take them (down to ``min_power_level``, least efficient first), then sleep,
   least efficient first; below ``limit - deadband`` with reductions held:
   restore, most efficient first, at most ``restore_batch`` machines every
   ``restore_stagger_seconds``, never past the deadband above the limit (so a
   restore never triggers a shed).  The bias is updated only while the fleet
   is settled (every machine reports the workload it is assigned) and from a
   meter reading no older than the newest machine report: during a
   transition the meter and the reports are read at different moments.

A new target is reached by ramp-and-hold: the effective target moves from
the previous one at ``ramp_down_kw_per_minute`` / ``ramp_up_kw_per_minute``
and holds.  A base-point stream silent for ``signal_stale_seconds`` takes the
configured ``stale_action``.  Each target's state: ``pending`` (received),
``dispatched`` (acted on), ``confirmed`` (metered within ``tolerance_pct`` for
``confirm_seconds``), ``drifted`` (a confirmed target missed for ``drift_seconds``).

Demand-response events (MQTT ``events/dr``) get the same states in
``dr_targets``: ``pending`` before their start, ``dispatched`` once in force,
``confirmed`` when metered at or below their limit (within ``tolerance_pct``)
for ``confirm_seconds``, ``drifted`` when above it again for ``drift_seconds``,
``ended`` at their end or when withdrawn.
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from scheduler.config.grid import SetpointConfig
from scheduler.core.limits import event_limit_w, site_limit_w
from scheduler.core.model import Assignment, Device, Snapshot, Workload, WorkloadKind
from scheduler.core.power import planned_power_w
from scheduler.core.reasons import SAFETY_REASONS, Reason

# Decisions of other rules a held reduction yields to.
_YIELD_TO = SAFETY_REASONS - {Reason.SETPOINT} | {Reason.OVERRIDE, Reason.CURTAIL}
MAX_TARGET_HISTORY = 100


class TargetState(enum.StrEnum):
    """Where a target stands."""

    PENDING = "pending"
    DISPATCHED = "dispatched"
    CONFIRMED = "confirmed"
    DRIFTED = "drifted"
    ENDED = "ended"


SOURCES = ("operator", "dr", "basepoint", "webhook", "openadr")


@dataclass
class Target:
    """A site power target and its state."""

    id: str
    source: str
    kw: float
    received_at: float  # monotonic
    until: float | None = None  # monotonic end; None: until replaced or cleared
    state: TargetState = TargetState.PENDING
    dispatched_at: float | None = None
    confirmed_at: float | None = None
    in_band_since: float | None = None
    out_band_since: float | None = None
    immediate: bool = False  # an award deployment: no ramp toward it
    response_limit_seconds: float | None = None  # an award deployment: the product's time
    started_wall: datetime | None = None  # for M&V
    ended_wall: datetime | None = None


@dataclass
class _Held:
    base: Workload  # what the machine ran before this controller reduced it
    reduced: Workload


@dataclass
class SetpointController:
    """Holds the target and the reductions; ``apply`` runs after the Guard each tick."""

    config: SetpointConfig
    metered_w: Callable[[], float | None] = lambda: None
    metered_at: Callable[[], float | None] = lambda: None  # when that reading was taken
    clock: Callable[[], float] = time.monotonic
    wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    target: Target | None = None
    history: list[Target] = field(default_factory=list)
    held: dict[str, _Held] = field(default_factory=dict)
    bias_w: float = 0.0
    effective_w: float | None = None
    limit_w: float | None = None
    projected_w: float | None = None
    last_apply: float | None = None
    last_restore: float | None = None
    stale_signal: bool = False
    listeners: list[Callable[[Target], None]] = field(default_factory=list)
    dr_targets: dict[str, Target] = field(default_factory=dict)  # DR events by id (bounded)

    # -- targets ---------------------------------------------------------------------------

    def set_target(
        self,
        kw: float,
        source: str,
        target_id: str,
        *,
        hold_seconds: float | None = None,
        immediate: bool = False,
    ) -> Target:
        """A new target replaces the one in force (which ends)."""
        if not (math.isfinite(kw) and 0 <= kw <= self.config.max_kw):
            raise ValueError(f"target {kw!r} kW outside 0..{self.config.max_kw:g}")
        now = self.clock()
        self._end()
        self.target = Target(
            target_id,
            source,
            kw,
            now,
            until=None if hold_seconds is None else now + hold_seconds,
            started_wall=self.wall_clock(),
            immediate=immediate,
        )
        self.stale_signal = False
        self.history.append(self.target)
        del self.history[:-MAX_TARGET_HISTORY]
        for listener in self.listeners:
            listener(self.target)
        return self.target

    def clear(self) -> Target | None:
        """End the target in force; reductions are restored (staggered)."""
        ended = self.target
        self._end()
        return ended

    def _end(self) -> None:
        if self.target is not None:
            self.target.state = TargetState.ENDED
            self.target.ended_wall = self.wall_clock()
            self.target = None

    def _target_w(self, now: float) -> float | None:
        """The target in force (expiry and the stale-stream watchdog applied), in W."""
        target = self.target
        if target is None:
            return None
        if target.until is not None and now >= target.until:
            self._end()
            return None
        if target.source == "basepoint" and now - target.received_at > (
            self.config.signal_stale_seconds
        ):
            self.stale_signal = True
            if self.config.stale_action == "release":
                self._end()
                return None
            if self.config.stale_action == "safe":
                return self.config.safe_kw * 1000.0
        return target.kw * 1000.0

    def _ramped(self, goal_w: float | None, now: float, fallback_w: float) -> float | None:
        """Ramp-and-hold: move the effective target toward the goal at the configured rates."""
        if goal_w is None:
            self.effective_w = None
            return None
        previous = self.effective_w if self.effective_w is not None else fallback_w
        elapsed = 0.0 if self.last_apply is None else max(0.0, now - self.last_apply)
        down, up = self.config.ramp_down_kw_per_minute, self.config.ramp_up_kw_per_minute
        if self.target is not None and self.target.immediate:
            down = up = None
        if goal_w < previous and down is not None:
            goal_w = max(goal_w, previous - down * 1000.0 * elapsed / 60.0)
        elif goal_w > previous and up is not None:
            goal_w = min(goal_w, previous + up * 1000.0 * elapsed / 60.0)
        self.effective_w = goal_w
        return goal_w

    # -- the control step ------------------------------------------------------------------

    def apply(
        self,
        assigned: dict[str, Assignment],
        snapshot: Snapshot,
        policy_plan: Mapping[str, Assignment],
    ) -> None:
        """Bring the projected metered site power to the limit (see the module docstring)."""
        now = snapshot.now
        devices = snapshot.devices

        def workload_of(device_id: str) -> Workload | None:
            assignment = assigned.get(device_id)
            return assignment.workload if assignment else snapshot.current.get(device_id)

        # 1. reductions held, unless the policy wants sleep or another rule decided
        for device_id in list(self.held):
            wanted = policy_plan.get(device_id)
            decided = assigned.get(device_id)
            if (
                device_id not in devices
                or (wanted is not None and wanted.workload.kind is not WorkloadKind.MINE)
                or (decided is not None and decided.reason in _YIELD_TO)
            ):
                del self.held[device_id]
                continue
            held = self.held[device_id]
            if wanted is not None and wanted.workload.pool != held.base.pool:
                held.base = wanted.workload
                if held.reduced.kind is WorkloadKind.MINE:
                    held.reduced = Workload.mine(
                        wanted.workload.pool or "", held.reduced.power_level
                    )
            assigned[device_id] = Assignment(device_id, held.reduced, Reason.SETPOINT, 0.0)

        # 1b. ancillary awards in force: keep that much curtailable load running
        self._reserve(assigned, snapshot, workload_of)

        # 2. the limit and the projection
        # What the machines draw now by their own reports (planned power where there is none):
        # machines still ramping toward a new workload count at what they draw, so the bias is
        # the base load and the reports' error, not the transient.
        samples = snapshot.samples
        planned_now = math.fsum(
            samples[d.id].power_w
            if d.id in samples
            else planned_power_w(d, snapshot.current.get(d.id))
            for d in devices.values()
        )
        metered = self.metered_w()
        metered_at = self.metered_at()
        newest = max((s.observed_at for s in samples.values()), default=None)
        current = snapshot.current
        settled = all(
            (now_running := current.get(d)) is None or now_running == a.workload
            for d, a in assigned.items()
        )
        if (
            metered is not None
            and settled
            and not (metered_at is not None and newest is not None and metered_at < newest)
        ):  # only a settled fleet, and a reading no older than the reports, says what the bias is
            sample_bias = metered - planned_now
            alpha = self.config.bias_smoothing
            self.bias_w = (
                sample_bias
                if self.last_apply is None
                else (1 - alpha) * self.bias_w + alpha * sample_bias
            )
        planned_w = math.fsum(planned_power_w(d, workload_of(d.id)) for d in devices.values())
        projected = self.bias_w + planned_w
        goal = self._target_w(now)
        # an award's reserve stays running under a target, not under a deployment or a cap/DR
        keep_w = 0.0
        if goal is not None and self.target is not None and not self.target.immediate:
            keep_w = self.reserve_w(snapshot.wall)
        if metered is not None:  # the meter enforces the cap and DR limits too
            cap, _ = site_limit_w(snapshot)
            if cap is not None and (goal is None or cap < goal):
                goal, keep_w = cap, 0.0
        limit = self._ramped(goal, now, metered if metered is not None else projected)
        self.limit_w = limit
        self.last_apply = now
        band = self.config.deadband_kw * 1000.0
        if limit is None:
            limit = math.inf
        else:
            band = max(band, limit * self.config.deadband_pct / 100.0)
        if projected > limit + band:
            projected -= self._shed(projected - limit, assigned, devices, workload_of, keep_w)
        elif projected < limit - band and self.held:
            projected += self._restore(limit - projected, band, assigned, devices, now)
        self.projected_w = projected
        self._update_state(metered, now)
        self._track_dr(snapshot, metered, now)

    def _track_dr(self, snapshot: Snapshot, metered: float | None, now: float) -> None:
        """The states of the demand-response events (see the module docstring)."""
        if not snapshot.events and not self.dr_targets:
            return
        wall = snapshot.wall
        known = {e.id: e for e in snapshot.events}
        nominal_w = (
            math.fsum(d.nominal_power_w for d in snapshot.devices.values()) if known else 0.0
        )
        for event in snapshot.events:
            target = self.dr_targets.get(event.id)
            if target is None:
                if event.end <= wall:
                    continue
                target = Target(event.id, "dr", 0.0, now)
                self.dr_targets[event.id] = target
            limit = event_limit_w(event, nominal_w)
            target.kw = 0.0 if limit is None else limit / 1000.0
            target.started_wall, target.ended_wall = event.start, event.end
        for event_id, target in self.dr_targets.items():
            if target.state is TargetState.ENDED:
                continue
            current = known.get(event_id)
            if current is None or wall >= current.end:
                target.state = TargetState.ENDED
                if current is None:
                    target.ended_wall = min(wall, target.ended_wall or wall)
                continue
            if wall < current.start:
                continue
            if target.state is TargetState.PENDING:
                target.state = TargetState.DISPATCHED
                target.dispatched_at = now
            if metered is not None:
                limit_w = target.kw * 1000.0
                tolerance = max(limit_w * self.config.tolerance_pct / 100.0, 1.0)
                self._settle(target, metered <= limit_w + tolerance, now, notify=False)
        ended = [i for i, t in self.dr_targets.items() if t.state is TargetState.ENDED]
        for event_id in ended[: max(0, len(self.dr_targets) - MAX_TARGET_HISTORY)]:
            del self.dr_targets[event_id]

    def reserve_w(self, wall: datetime) -> float:
        """The curtailable load the awards in force at ``wall`` need running, in W."""
        return sum(a.mw * 1e6 for a in self.config.awards if a.start <= wall < a.end)

    def _reserve(
        self,
        assigned: dict[str, Assignment],
        snapshot: Snapshot,
        workload_of: Callable[[str], Workload | None],
    ) -> None:
        """Wake machines the policy put to sleep, most efficient first, until the reserve runs."""
        need = self.reserve_w(snapshot.wall)
        if need <= 0:
            return
        running = 0.0
        asleep: list[Device] = []
        for device in snapshot.devices.values():
            workload = workload_of(device.id)
            if workload is not None and workload.kind is WorkloadKind.MINE:
                running += planned_power_w(device, workload)
            elif (
                workload is not None
                and workload.kind is WorkloadKind.SLEEP
                and device.id not in self.held
                and device.pools
                and (a := assigned.get(device.id)) is not None
                and a.reason not in _YIELD_TO
                and snapshot.status.get(device.id) is not None
                and snapshot.status[device.id].reachable
            ):
                asleep.append(device)
        asleep.sort(key=lambda d: d.efficiency_j_per_th)
        for device in asleep:
            if running >= need:
                break
            workload = Workload.mine(device.pools[0])
            running += planned_power_w(device, workload)
            assigned[device.id] = Assignment(device.id, workload, Reason.AWARD_RESERVE, 0.0)

    def _shed(
        self,
        excess_w: float,
        assigned: dict[str, Assignment],
        devices: Mapping[str, Device],
        workload_of: Callable[[str], Workload | None],
        keep_w: float = 0.0,
    ) -> float:
        """Reduce by ``excess_w``: power targets first, then sleep; least efficient first.

        ``keep_w``: mining load that stays running (an award's reserve under a target).
        """
        shed = 0.0
        running = [
            d
            for d in devices.values()
            if (w := workload_of(d.id)) is not None and w.kind is WorkloadKind.MINE
        ]
        mining_w = math.fsum(planned_power_w(d, workload_of(d.id)) for d in running)
        running.sort(key=lambda d: d.efficiency_j_per_th, reverse=True)
        floor = self.config.min_power_level
        step = self.config.power_level_step
        capable = set(self.config.power_target_drivers)
        for device in running:
            if shed >= excess_w:
                return shed
            workload = workload_of(device.id)
            assert workload is not None and workload.pool is not None
            if device.driver not in capable or workload.power_level <= floor:
                continue
            need = excess_w - shed
            level = workload.power_level - need / device.nominal_power_w
            level = max(floor, math.floor(level / step + 1e-9) * step)
            if level >= workload.power_level:
                continue
            cut = device.nominal_power_w * (workload.power_level - level)
            if mining_w - cut < keep_w:
                continue
            mining_w -= cut
            shed += cut
            self._hold(device.id, workload, Workload.mine(workload.pool, round(level, 6)), assigned)
        for device in running:
            if shed >= excess_w:
                return shed
            workload = workload_of(device.id)
            assert workload is not None
            if workload.kind is not WorkloadKind.MINE:
                continue  # already asleep (held above)
            if mining_w - planned_power_w(device, workload) < keep_w:
                continue
            mining_w -= planned_power_w(device, workload)
            shed += planned_power_w(device, workload) - device.sleep_power_w
            self._hold(device.id, workload, Workload.sleep(), assigned)
        return shed

    def _hold(
        self, device_id: str, workload: Workload, reduced: Workload, assigned: dict[str, Assignment]
    ) -> None:
        held = self.held.get(device_id)
        base = held.base if held is not None else workload
        self.held[device_id] = _Held(base, reduced)
        assigned[device_id] = Assignment(device_id, reduced, Reason.SETPOINT, 0.0)

    def _restore(
        self,
        room_w: float,
        band_w: float,
        assigned: dict[str, Assignment],
        devices: Mapping[str, Device],
        now: float,
    ) -> float:
        """Give back up to ``room_w``: most efficient first, staggered, never past the limit."""
        stagger = self.config.restore_stagger_seconds
        if self.last_restore is not None and now - self.last_restore < stagger:
            return 0.0
        batch = self.config.restore_batch or len(self.held)
        order = sorted(self.held, key=lambda d: devices[d].efficiency_j_per_th)
        added, woken = 0.0, 0
        floor = self.config.min_power_level
        step = self.config.power_level_step
        for device_id in order:
            if woken >= batch or added >= room_w:
                break
            device, held = devices[device_id], self.held[device_id]
            now_w = planned_power_w(device, held.reduced)
            full_w = planned_power_w(device, held.base)
            left = room_w - added
            if full_w - now_w <= left + band_w:  # ending inside the deadband: no shed follows
                added += full_w - now_w
                del self.held[device_id]
                assigned[device_id] = Assignment(device_id, held.base, Reason.SETPOINT_RESTORE, 0.0)
                woken += 1
                continue
            if device.driver not in self.config.power_target_drivers or held.base.pool is None:
                continue
            level = (now_w + left) / device.nominal_power_w
            level = math.floor(level / step + 1e-9) * step
            if level < floor or level <= (
                held.reduced.power_level if held.reduced.kind is WorkloadKind.MINE else 0.0
            ):
                continue
            reduced = Workload.mine(held.base.pool, round(min(level, held.base.power_level), 6))
            added += planned_power_w(device, reduced) - now_w
            held.reduced = reduced
            assigned[device_id] = Assignment(device_id, reduced, Reason.SETPOINT, 0.0)
            woken += 1
        if woken:
            self.last_restore = now
        return added

    def _update_state(self, metered: float | None, now: float) -> None:
        target = self.target
        if target is None:
            return
        if target.state is TargetState.PENDING:
            target.state = TargetState.DISPATCHED
            target.dispatched_at = now
            for listener in self.listeners:
                listener(target)
        if metered is None or self.effective_w is None:
            return
        goal = self.effective_w
        tolerance = max(goal * self.config.tolerance_pct / 100.0, 1.0)
        self._settle(target, abs(metered - goal) <= tolerance, now)

    def _settle(self, target: Target, in_band: bool, now: float, *, notify: bool = True) -> None:
        """Confirm a target metered in band for ``confirm_seconds``; drift one out for longer."""
        if in_band:
            target.out_band_since = None
            if target.in_band_since is None:
                target.in_band_since = now
            settled = now - target.in_band_since >= self.config.confirm_seconds
            if target.state in (TargetState.DISPATCHED, TargetState.DRIFTED) and settled:
                target.state = TargetState.CONFIRMED
                target.confirmed_at = now
                for listener in self.listeners if notify else ():
                    listener(target)
        else:
            target.in_band_since = None
            if target.out_band_since is None:
                target.out_band_since = now
            if (
                target.state is TargetState.CONFIRMED
                and now - target.out_band_since >= self.config.drift_seconds
            ):
                target.state = TargetState.DRIFTED
                for listener in self.listeners if notify else ():
                    listener(target)

    def held_counts(self) -> dict[str, int]:
        """Machines held by this controller: at a power target, asleep."""
        sleeping = sum(1 for h in self.held.values() if h.reduced.kind is WorkloadKind.SLEEP)
        return {"power_target": len(self.held) - sleeping, "sleep": sleeping}
