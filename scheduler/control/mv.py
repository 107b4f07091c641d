"""Measurement and verification of site power events against the meter.

``MeterHistory`` keeps the site meter's readings (wall time, W) in memory,
bounded (``max_samples``; a reading at most every ``min_spacing_seconds``).
``measure`` settles one event -- a setpoint target or a demand-response
event, from ``start`` to ``end`` (or now) -- against a baseline:

- ``pre_event``: the metered mean over ``baseline_minutes`` before the start;
- ``days_of_history``: the mean over the same time of day on each of the last
  ``baseline_days`` days that have readings (a "high N of N"-style baseline
  without the selection: every day with data counts).

Per interval (``interval_seconds``): the metered mean, the target, the kW
delivered (baseline - metered) and whether the interval complied (metered
mean at or below target + ``tolerance_pct``).  The response time is the
first reading at or below the target's tolerance after the start.
Recent readings live in memory; ``older`` (scheduler.control.mvstore) gives
the stored per-minute means for any time before the first reading in memory,
so a restart, or readings dropped from memory, fall back to minute resolution.
"""

from __future__ import annotations

import bisect
import csv
import io
import math
import statistics
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

BaselineMethod = Literal["pre_event", "days_of_history"]


@dataclass
class MeterHistory:
    """The site meter's readings by wall time, bounded."""

    max_samples: int = 200_000
    min_spacing_seconds: float = 1.0
    samples: deque[tuple[datetime, float]] = field(default_factory=deque)
    # (start, end) -> stored (minute, mean W) with start <= minute < end, oldest first
    older: Callable[[datetime, datetime], list[tuple[datetime, float]]] | None = None

    def add(self, at: datetime, power_w: float) -> None:
        """Append a reading (one per ``min_spacing_seconds``, in time order; bounded)."""
        if self.samples and (
            (at - self.samples[-1][0]).total_seconds() < self.min_spacing_seconds
            or at < self.samples[-1][0]
        ):
            return
        self.samples.append((at, power_w))
        while len(self.samples) > self.max_samples:
            self.samples.popleft()

    def _older(self, start: datetime, end: datetime) -> list[tuple[datetime, float]]:
        """Stored minutes in [start, end) before the first reading in memory."""
        if self.older is None:
            return []
        if self.samples:
            end = min(end, self.samples[0][0])
        return self.older(start, end) if start < end else []

    def between(self, start: datetime, end: datetime) -> list[float]:
        """Readings with start <= at < end (stored minute means before the memory's first)."""
        times = [at for at, _ in self.samples]
        low, high = bisect.bisect_left(times, start), bisect.bisect_left(times, end)
        stored = [power for _, power in self._older(start, end)]
        return stored + [self.samples[i][1] for i in range(low, high)]

    def first_at_or_below(self, start: datetime, end: datetime, limit_w: float) -> datetime | None:
        """When the meter first read at most ``limit_w`` in [start, end)."""
        for at, power in self._older(start, end):
            if power <= limit_w:
                return at
        for at, power in self.samples:
            if start <= at < end and power <= limit_w:
                return at
        return None


@dataclass(frozen=True, slots=True)
class Interval:
    """One settlement interval of an event."""

    start: datetime
    metered_kw: float | None
    target_kw: float | None
    baseline_kw: float | None
    delivered_kw: float | None
    compliant: bool | None


@dataclass(frozen=True, slots=True)
class EventMv:
    """The M&V of one event."""

    event_id: str
    source: str
    start: datetime
    end: datetime
    baseline_method: str
    baseline_kw: float | None
    target_kw: float | None
    committed_kw: float | None  # baseline - target
    delivered_kw: float | None  # baseline - metered mean over the event
    performance_ratio: float | None  # delivered / committed
    response_seconds: float | None
    compliance_ratio: float | None  # compliant intervals / intervals with readings
    intervals: tuple[Interval, ...]
    response_limit_seconds: float | None = None  # an award deployment: the product's time
    responded_in_time: bool | None = None  # response_seconds <= response_limit_seconds

    def as_json(self) -> dict[str, object]:
        """A JSON-ready dict (datetimes as ISO 8601)."""
        data = asdict(self)
        data["start"] = self.start.isoformat()
        data["end"] = self.end.isoformat()
        data["intervals"] = [{**asdict(i), "start": i.start.isoformat()} for i in self.intervals]
        return data

    def as_csv(self) -> str:
        """One row per interval."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(
            [
                "interval_start",
                "metered_kw",
                "target_kw",
                "baseline_kw",
                "delivered_kw",
                "compliant",
            ]
        )
        for i in self.intervals:
            writer.writerow(
                [
                    i.start.isoformat(),
                    _fmt(i.metered_kw),
                    _fmt(i.target_kw),
                    _fmt(i.baseline_kw),
                    _fmt(i.delivered_kw),
                    "" if i.compliant is None else str(i.compliant).lower(),
                ]
            )
        return out.getvalue()


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def baseline_kw(
    history: MeterHistory,
    start: datetime,
    end: datetime,
    method: BaselineMethod,
    *,
    baseline_minutes: float = 30.0,
    baseline_days: int = 10,
) -> float | None:
    """The baseline in kW (None without readings)."""
    if method == "pre_event":
        values = history.between(start - timedelta(minutes=baseline_minutes), start)
        return statistics.fmean(values) / 1000.0 if values else None
    means = []
    for day in range(1, baseline_days + 1):
        values = history.between(start - timedelta(days=day), end - timedelta(days=day))
        if values:
            means.append(statistics.fmean(values))
    return statistics.fmean(means) / 1000.0 if means else None


def measure(
    history: MeterHistory,
    *,
    event_id: str,
    source: str,
    start: datetime,
    end: datetime,
    target_kw: float | None,
    reduction_kw: float | None = None,
    method: BaselineMethod = "pre_event",
    baseline_minutes: float = 30.0,
    baseline_days: int = 10,
    interval_seconds: float = 300.0,
    tolerance_pct: float = 2.0,
    response_limit_seconds: float | None = None,
) -> EventMv:
    """Settle one event against the meter (see the module docstring)."""
    base = baseline_kw(
        history,
        start,
        end,
        method,
        baseline_minutes=baseline_minutes,
        baseline_days=baseline_days,
    )
    target = target_kw
    if target is None and reduction_kw is not None and base is not None:
        target = max(0.0, base - reduction_kw)
    intervals = []
    at = start
    step = timedelta(seconds=interval_seconds)
    while at < end:
        stop = min(at + step, end)
        values = history.between(at, stop)
        metered = statistics.fmean(values) / 1000.0 if values else None
        delivered = None if metered is None or base is None else base - metered
        compliant = (
            None
            if metered is None or target is None
            else metered <= target * (1 + tolerance_pct / 100.0)
        )
        intervals.append(Interval(at, metered, target, base, delivered, compliant))
        at = stop
    readings = history.between(start, end)
    metered_mean = statistics.fmean(readings) / 1000.0 if readings else None
    delivered_total = None if metered_mean is None or base is None else base - metered_mean
    committed = None if base is None or target is None else base - target
    ratio = (
        delivered_total / committed
        if delivered_total is not None and committed is not None and committed > 0
        else None
    )
    response = None
    if target is not None:
        hit = history.first_at_or_below(start, end, target * 1000.0 * (1 + tolerance_pct / 100.0))
        response = None if hit is None else (hit - start).total_seconds()
    judged = [i.compliant for i in intervals if i.compliant is not None]
    return EventMv(
        event_id=event_id,
        source=source,
        start=start,
        end=end,
        baseline_method=method,
        baseline_kw=base,
        target_kw=target,
        committed_kw=committed,
        delivered_kw=delivered_total,
        performance_ratio=None if ratio is None or not math.isfinite(ratio) else ratio,
        response_seconds=response,
        compliance_ratio=sum(judged) / len(judged) if judged else None,
        intervals=tuple(intervals),
        response_limit_seconds=response_limit_seconds,
        responded_in_time=None
        if response_limit_seconds is None
        else response is not None and response <= response_limit_seconds,
    )


class ChartUnavailableError(RuntimeError):
    """matplotlib is not installed (``pip install 'wattmux[plot]'``)."""


def png(mv: EventMv) -> bytes:
    """A PNG of the event: baseline, target and metered kW per interval (needs matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ChartUnavailableError(
            "the chart needs matplotlib, which is not installed: pip install 'wattmux[plot]'"
        ) from exc
    figure = Figure(figsize=(9, 4))
    axes = figure.subplots()
    times: list[Any] = [i.start for i in mv.intervals]
    series = (
        ("baseline", [i.baseline_kw for i in mv.intervals], "--"),
        ("target", [i.target_kw for i in mv.intervals], ":"),
        ("metered", [i.metered_kw for i in mv.intervals], "-"),
    )
    for label, values, style in series:
        axes.step(
            times,
            [math.nan if v is None else v for v in values],
            where="post",
            linestyle=style,
            label=label,
        )
    axes.set_ylabel("kW")
    axes.set_title(f"event {mv.event_id} ({mv.source})")
    axes.legend(loc="best", fontsize=8)
    figure.autofmt_xdate()
    out = io.BytesIO()
    figure.savefig(out, format="png", dpi=80)
    return out.getvalue()
