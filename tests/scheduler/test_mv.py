"""M&V: baselines, delivered kW per interval, response time, compliance, CSV."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from scheduler.control.mv import MeterHistory, baseline_kw, measure

T0 = datetime(2026, 7, 1, 18, 0, tzinfo=UTC)


def history_of(points: list[tuple[float, float]]) -> MeterHistory:
    """(minutes after T0, kW)."""
    history = MeterHistory(min_spacing_seconds=0.0)
    for minute, kw in sorted(points):
        history.add(T0 + timedelta(minutes=minute), kw * 1000.0)
    return history


def test_pre_event_baseline_delivered_response_and_compliance() -> None:
    # 1,000 kW for 30 minutes, then the event: 900 kW for 2 minutes, then 500 kW
    points = [(m, 1000.0) for m in range(-30, 0)]
    points += [(0, 900.0), (1, 900.0)] + [(m, 500.0) for m in range(2, 10)]
    mv = measure(
        history_of(points),
        event_id="e1",
        source="operator",
        start=T0,
        end=T0 + timedelta(minutes=10),
        target_kw=500.0,
        interval_seconds=300,
        response_limit_seconds=60.0,
    )
    assert mv.response_limit_seconds == 60.0 and mv.responded_in_time is False
    assert mv.baseline_kw == pytest.approx(1000.0)
    assert mv.response_seconds == 120.0
    assert [i.metered_kw for i in mv.intervals] == pytest.approx([660.0, 500.0])
    assert [i.compliant for i in mv.intervals] == [False, True]
    assert mv.compliance_ratio == 0.5
    assert mv.committed_kw == pytest.approx(500.0)
    assert mv.delivered_kw == pytest.approx(1000.0 - 580.0)
    csv = mv.as_csv().splitlines()
    assert csv[0].startswith("interval_start,metered_kw")
    assert csv[2].endswith("500.000,500.000,1000.000,500.000,true")


def test_days_of_history_baseline_and_a_reduction_target() -> None:
    day = 24 * 60
    points = [(-day + m, 800.0) for m in range(10)] + [(-2 * day + m, 1200.0) for m in range(10)]
    points += [(m, 700.0) for m in range(10)]
    history = history_of(points)
    end = T0 + timedelta(minutes=10)
    assert baseline_kw(history, T0, end, "days_of_history", baseline_days=3) == 1000.0
    assert baseline_kw(history, T0, end, "pre_event") is None  # nothing in the 30 min before
    mv = measure(
        history,
        event_id="dr",
        source="dr",
        start=T0,
        end=end,
        target_kw=None,
        reduction_kw=250.0,
        method="days_of_history",
    )
    assert mv.target_kw == 750.0
    assert mv.performance_ratio == pytest.approx(300.0 / 250.0)


def test_history_is_bounded_and_spaced() -> None:
    history = MeterHistory(max_samples=3, min_spacing_seconds=1.0)
    for second in (0.0, 0.5, 1.0, 2.0, 3.0, 4.0):
        history.add(T0 + timedelta(seconds=second), second)
    assert [w for _, w in history.samples] == [2.0, 3.0, 4.0]
