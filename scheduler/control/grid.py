"""``GridControl``: the site meter, the setpoint controller and idempotent signal intake, together.

Every signal (operator, base point, webhook) carries an id; the same id
again is answered with the first result and acts once.  The ids of the last
``remembered`` signals are kept (bounded).  Each accepted or repeated signal
is audited through ``audit`` (the API's audit rows) and counted in
``wattmux_grid_signals_total{source,outcome}``.  The metrics of this module
are read at scrape time by ``GridCollector``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from drivers.dr.openadr import DispatchEvent, OpenAdrOptions, OpenAdrVen
from drivers.dr.openadr3 import OpenAdr3Options, OpenAdr3Ven
from drivers.errors import MalformedReply
from drivers.meter.http import parse_reading
from drivers.telemetry.basepoints import BasePoint, BasePointSubscriber
from drivers.telemetry.mqtt import MqttOptions
from scheduler.config.grid import MeterConfig, SetpointConfig
from scheduler.control.mv import MeterHistory
from scheduler.control.setpoint import SetpointController, Target, TargetState
from scheduler.control.sitemeter import (
    PushedMeter,
    SiteMeter,
    disagreement_ratio,
    meter_source,
    miners_reported_w,
)
from scheduler.core.state import FleetState
from scheduler.store.meterlog import StoredEvent
from scheduler.store.operator import ApiAuditEntry, ControlStore
from scheduler.store.sqlite import StoreError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Signal:
    """One dispatch instruction: follow ``kw`` (optionally for ``hold_seconds``) or release."""

    id: str
    source: str  # operator, basepoint, webhook, openadr, dr
    action: Literal["setpoint", "release", "deploy"]
    kw: float | None = None
    hold_seconds: float | None = None
    award: str | None = None  # deploy: the award whose load sheds


@dataclass(frozen=True, slots=True)
class SignalResult:
    """What a signal did: ``accepted`` once, ``duplicate`` for the same id again."""

    outcome: Literal["accepted", "duplicate"]
    target_id: str | None
    state: str


class GridControl:
    """The site meter task, the setpoint controller and the signal intake of one daemon."""

    def __init__(
        self,
        meter: MeterConfig | None,
        setpoint: SetpointConfig,
        state: FleetState,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        remembered: int = 10_000,
    ) -> None:
        self.state = state
        self.clock = clock
        self.meter = (
            SiteMeter(
                meter_source(meter, clock),
                poll_seconds=meter.poll_seconds,
                stale_seconds=meter.stale_seconds,
                clock=clock,
            )
            if meter is not None
            else None
        )
        self.setpoint = SetpointController(
            setpoint,
            metered_w=self.meter.power_w if self.meter is not None else (lambda: None),
            metered_at=self.meter.observed_at if self.meter is not None else (lambda: None),
            clock=clock,
            wall_clock=wall_clock,
        )
        self.history = MeterHistory()  # for M&V (scheduler.control.mv)
        self.wall_clock = wall_clock
        if self.meter is not None:
            self.meter.listeners.append(lambda r: self.history.add(wall_clock(), r.power_w))
        self.wake: asyncio.Event | None = None  # the loop's: a signal is acted on at once
        self.audit: Callable[[Signal, SignalResult], None] | None = None
        self.note: Callable[[str, str], None] | None = None  # (source, what): opt decisions
        self.openadr: OpenAdrVen | None = None
        self._openadr_seen: OrderedDict[str, bool] = OrderedDict()
        self._scheduled: list[asyncio.TimerHandle] = []
        self.openadr3: OpenAdr3Ven | None = None
        self._event_handles: dict[str, list[asyncio.TimerHandle]] = {}  # event id -> its timers
        self.remembered = remembered
        self._seen: OrderedDict[str, SignalResult] = OrderedDict()
        self.counts: dict[tuple[str, str], int] = {}
        self.signal_received_at: dict[str, float] = {}  # target id -> monotonic (latency bench)
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.basepoints: BasePointSubscriber | None = None
        # an event's stored M&V inputs (scheduler.control.mvstore), once the store is open
        self.stored_event: Callable[[str], StoredEvent | None] | None = None

    def subscribe_basepoints(self, options: MqttOptions, site: str) -> BasePointSubscriber:
        """Follow the MQTT base-point stream (``<prefix>/grid/basepoint``) from ``__aenter__`` on."""
        pushed = isinstance(self.meter.source, PushedMeter) if self.meter is not None else False
        self.basepoints = BasePointSubscriber(
            options,
            site,
            self.accept_basepoint,
            self._rejected,
            on_meter=self._meter_message if pushed else None,
        )
        return self.basepoints

    def _meter_message(self, payload: bytes) -> None:
        """A site meter reading pushed over MQTT (bad ones counted, never used)."""
        assert self.meter is not None
        try:
            reading = parse_reading("meter", payload, self.clock())
        except MalformedReply as exc:
            self.meter.reads["malformed"] = self.meter.reads.get("malformed", 0) + 1
            log.warning("site meter message refused: %s", exc.message)
            return
        self.meter.push(reading)

    def attach_openadr(self, options: OpenAdrOptions) -> OpenAdrVen:
        """Be an OpenADR 2.0b VEN from ``__aenter__`` on (events become setpoint signals)."""
        meter = self.meter
        self.openadr = OpenAdrVen(
            options, self.openadr_event, meter.power_w if meter is not None else (lambda: None)
        )
        return self.openadr

    def attach_openadr3(self, options: OpenAdr3Options) -> OpenAdr3Ven:
        """Be an OpenADR 3 VEN from ``__aenter__`` on (events become setpoint signals)."""
        meter = self.meter

        def refused(reason: str) -> None:
            self.count_invalid("openadr")
            if self.note is not None:
                self.note("openadr", f"3.0 reply refused: {reason}")

        self.openadr3 = OpenAdr3Ven(
            options,
            self.openadr_event,
            meter.power_w if meter is not None else (lambda: None),
            on_refused=refused,
        )
        return self.openadr3

    async def openadr_event(self, event: DispatchEvent | None, raw: dict[str, Any]) -> bool:
        """Opt in to an event the site can follow (its intervals scheduled once), else out."""
        descriptor = raw.get("event_descriptor") or {}
        label = f"{descriptor.get('event_id')}:{descriptor.get('modification_number')}"
        if event is None:
            self._count("openadr", "opt_out")
            if self.note is not None:
                self.note("openadr", f"{label}: optOut (no signal the site can follow)")
            return False
        if event.id in self._openadr_seen:
            self._count("openadr", "duplicate")
            return self._openadr_seen[event.id]
        self._openadr_seen[event.id] = True
        while len(self._openadr_seen) > self.remembered:
            self._openadr_seen.popitem(last=False)
        for handle in self._event_handles.pop(event.event_id, []):
            handle.cancel()  # a modified or cancelled event: its earlier intervals do not fire
        if event.status == "cancelled":
            target = self.setpoint.target
            if target is not None and target.id.startswith(f"openadr:{event.event_id}:"):
                self.accept(Signal(f"{event.id}#cancel", "openadr", "release"))
        else:
            loop = asyncio.get_running_loop()
            now = self.wall_clock()
            for index, interval in enumerate(event.intervals):
                if interval.start + interval.duration <= now:
                    continue
                signal = Signal(
                    f"{event.id}#{index}",
                    "openadr",
                    "setpoint" if interval.kw is not None else "release",
                    interval.kw,
                    interval.duration.total_seconds()
                    - max(0.0, (now - interval.start).total_seconds()),
                )
                delay = max(0.0, (interval.start - now).total_seconds())
                handle = loop.call_later(delay, self._accept_quietly, signal)
                self._scheduled.append(handle)
                self._event_handles.setdefault(event.event_id, []).append(handle)
        self._count("openadr", "opt_in")
        if self.note is not None:
            self.note("openadr", f"{label}: optIn ({len(event.intervals)} intervals)")
        return True

    def _accept_quietly(self, signal: Signal) -> None:
        try:
            self.accept(signal)
        except ValueError as exc:
            log.warning("OpenADR interval %s refused: %s", signal.id, exc)

    def accept_basepoint(self, point: BasePoint) -> None:
        """A base point from the stream: a setpoint signal of source ``basepoint``."""
        try:
            self.accept(Signal(point.id, "basepoint", "setpoint", point.kw, point.hold_seconds))
        except ValueError as exc:
            log.warning("base point %s refused: %s", point.id, exc)

    def _rejected(self, reason: str) -> None:
        self.count_invalid("basepoint")
        log.warning("base point message refused: %s", reason)

    def accept(self, signal: Signal, *, audited: bool = False) -> SignalResult:
        """Act on a signal once (ValueError for a target out of bounds: counted, not acted on).

        ``audited``: the caller (an API route) writes the audit row itself.
        """
        key = f"{signal.source}:{signal.id}"
        seen = self._seen.get(key)
        if seen is not None:
            self._count(signal.source, "duplicate")
            result = SignalResult("duplicate", seen.target_id, self._state_of(seen.target_id))
            if self.audit is not None and not audited:
                self.audit(signal, result)
            return result
        try:
            if signal.action == "release":
                ended = self.setpoint.clear()
                target_id = ended.id if ended else None
            elif signal.action == "deploy":
                target = self._deploy(signal, key)
                target_id = target.id
                self.signal_received_at[target.id] = self.clock()
            else:
                if signal.kw is None:
                    raise ValueError("a setpoint signal needs kw")
                target = self.setpoint.set_target(
                    signal.kw, signal.source, key, hold_seconds=signal.hold_seconds
                )
                target_id = target.id
                self.signal_received_at[target.id] = self.clock()
        except ValueError as exc:
            self._count(signal.source, "invalid")
            if self.note is not None and not audited:
                self.note(signal.source, f"{signal.id}: rejected: {exc}")
            raise
        result = SignalResult("accepted", target_id, self._state_of(target_id))
        self._seen[key] = result
        while len(self._seen) > self.remembered:
            self._seen.popitem(last=False)
        self._count(signal.source, "accepted")
        if self.audit is not None and not audited:
            self.audit(signal, result)
        if self.wake is not None:
            self.wake.set()
        return result

    def _deploy(self, signal: Signal, key: str) -> Target:
        """Shed an award's MW now: the target is the site's power less the award, no ramp."""
        wall = self.wall_clock()
        award = next(
            (
                a
                for a in self.setpoint.config.awards
                if a.name == signal.award and a.start <= wall < a.end
            ),
            None,
        )
        if award is None:
            raise ValueError(f"no award {signal.award!r} in force")
        now_w = self.meter.power_w() if self.meter is not None else None
        if now_w is None:
            now_w = self.setpoint.projected_w
        if now_w is None:
            raise ValueError("site power unknown: no meter reading and no tick yet")
        kw = max(0.0, now_w / 1000.0 - award.mw * 1000.0)
        hold = signal.hold_seconds or (award.end - wall).total_seconds()
        target = self.setpoint.set_target(kw, signal.source, key, hold_seconds=hold, immediate=True)
        target.response_limit_seconds = award.response_seconds
        return target

    def count_invalid(self, source: str) -> None:
        """A signal refused before it was parsed (bad signature, stale timestamp, bad body)."""
        self._count(source, "invalid")

    def _count(self, source: str, outcome: str) -> None:
        self.counts[(source, outcome)] = self.counts.get((source, outcome), 0) + 1

    def _state_of(self, target_id: str | None) -> str:
        if target_id is None:
            return TargetState.ENDED.value
        for target in reversed(self.setpoint.history):
            if target.id == target_id:
                return target.state.value
        return TargetState.ENDED.value

    def find(self, target_id: str) -> Target | None:
        """A recent target by id."""
        return next((t for t in reversed(self.setpoint.history) if t.id == target_id), None)

    async def __aenter__(self) -> GridControl:
        if self.openadr is not None:
            await self.openadr.__aenter__()
        if self.openadr3 is not None:
            await self.openadr3.__aenter__()
        if self.basepoints is not None:
            await self.basepoints.__aenter__()
        if self.meter is not None and not isinstance(self.meter.source, PushedMeter):
            self._stop.clear()
            self._task = asyncio.create_task(self.meter.run(self._stop), name="grid.meter")
        return self

    async def __aexit__(self, *_exc: object) -> None:
        for handle in self._scheduled:
            handle.cancel()
        if self.openadr is not None:
            await self.openadr.__aexit__()
        if self.openadr3 is not None:
            await self.openadr3.__aexit__()
        if self.basepoints is not None:
            await self.basepoints.__aexit__()
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def register(self, registry: CollectorRegistry) -> None:
        """Export this module's metrics on the daemon's registry."""
        registry.register(GridCollector(self))


class GridCollector(Collector):
    """Meter, setpoint and signal metrics, read at scrape time."""

    def __init__(self, grid: GridControl) -> None:
        self.grid = grid

    def describe(self) -> Iterable[Metric]:
        """No samples: lets the registry check names."""
        return []

    def collect(self) -> Iterable[Metric]:
        """The families."""
        grid = self.grid
        meter = grid.meter
        if meter is not None:
            metered = meter.power_w()
            up = GaugeMetricFamily(
                "wattmux_site_meter_up", "1 if the site meter's latest reading is fresh."
            )
            up.add_metric([], 0.0 if metered is None else 1.0)
            yield up
            reads = CounterMetricFamily(
                "wattmux_site_meter_reads", "Site meter reads, by outcome.", labels=["outcome"]
            )
            for outcome, count in sorted(meter.reads.items()):
                reads.add_metric([outcome], float(count))
            yield reads
            if metered is not None:
                power = GaugeMetricFamily(
                    "wattmux_site_meter_power_watts", "Site power as the meter reads it."
                )
                power.add_metric([], metered)
                yield power
                miners = miners_reported_w(grid.state)
                ratio = disagreement_ratio(metered, miners)
                if ratio is not None:
                    family = GaugeMetricFamily(
                        "wattmux_site_meter_disagreement_ratio",
                        "(meter - sum of the machines' own power reports) / meter.",
                    )
                    family.add_metric([], ratio)
                    yield family
        ctl = grid.setpoint
        states = GaugeMetricFamily(
            "wattmux_setpoint_state",
            "1 for the state of the target in force (none: no target).",
            labels=["state"],
        )
        current = ctl.target.state.value if ctl.target is not None else "none"
        for name in (*(s.value for s in TargetState if s is not TargetState.ENDED), "none"):
            states.add_metric([name], 1.0 if name == current else 0.0)
        yield states
        dr_states = GaugeMetricFamily(
            "wattmux_dr_event_targets",
            "Demand-response events tracked as targets, by state (ended: the last 100 kept).",
            labels=["state"],
        )
        by_state = {s.value: 0 for s in TargetState}
        for dr_target in ctl.dr_targets.values():
            by_state[dr_target.state.value] += 1
        for name, count in by_state.items():
            dr_states.add_metric([name], float(count))
        yield dr_states
        if ctl.target is not None:
            target = GaugeMetricFamily("wattmux_setpoint_target_watts", "The target in force.")
            target.add_metric([], ctl.target.kw * 1000.0)
            yield target
        if ctl.limit_w is not None:
            limit = GaugeMetricFamily(
                "wattmux_setpoint_effective_watts",
                "The limit followed now (ramped target, cap and DR limits).",
            )
            limit.add_metric([], ctl.limit_w)
            yield limit
        held = GaugeMetricFamily(
            "wattmux_setpoint_held_devices",
            "Machines held by site power control, by action.",
            labels=["action"],
        )
        for action, count in ctl.held_counts().items():
            held.add_metric([action], float(count))
        yield held
        stale = GaugeMetricFamily(
            "wattmux_setpoint_signal_stale", "1 while the base-point stream is stale."
        )
        stale.add_metric([], 1.0 if ctl.stale_signal else 0.0)
        yield stale
        signals = CounterMetricFamily(
            "wattmux_grid_signals",
            "Dispatch signals, by source and outcome.",
            labels=["source", "outcome"],
        )
        for (source, outcome), count in sorted(grid.counts.items()):
            signals.add_metric([source, outcome], float(count))
        yield signals
        if grid.openadr3 is not None:
            ven = CounterMetricFamily(
                "wattmux_openadr3_ven",
                "OpenADR 3 VEN tallies: poll, event, repeated, released, report, refused, failed.",
                labels=["outcome"],
            )
            for outcome, count in sorted(grid.openadr3.counts.items()):
                ven.add_metric([outcome], float(count))
            yield ven


def grid_audit(
    store: ControlStore, wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC)
) -> tuple[Callable[[Signal, SignalResult], None], Callable[[str, str], None]]:
    """Audit rows for signals that do not come over the API (base points, OpenADR)."""

    def row(source: str, before: str, after: str, result: str) -> None:
        entry = ApiAuditEntry(
            at=wall_clock(),
            principal=source,
            role="none",
            remote=source,
            method="SIGNAL",
            path=f"/grid/{source}",
            before=before,
            after=after,
            result=result[:512],
            status_code=200,
        )
        try:
            store.record_api_audit(entry)
        except StoreError as exc:
            log.error("cannot write the audit row of a %s signal: %s", source, exc)

    def audit(signal: Signal, result: SignalResult) -> None:
        after = json.dumps({"id": signal.id, "action": signal.action, "kw": signal.kw})
        row(signal.source, "null", after, f"{signal.source}: {result.outcome}")

    def note(source: str, what: str) -> None:
        row(source, "null", "null", f"{source}: {what}")

    return audit, note
