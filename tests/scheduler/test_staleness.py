"""Staleness: per-input maximum ages drive the guard's safe action; push devices expire."""

from __future__ import annotations

import dataclasses

import pytest

from scheduler.config.loading import ConfigError, parse_config
from scheduler.config.schema import GuardConfig
from scheduler.control.guard import Guard
from scheduler.control.ingest import expire_pushed_sample
from scheduler.core.model import Reading, Sample, Workload
from scheduler.core.state import FleetState
from scheduler.policies.breakeven import BreakevenPolicy
from tests.scheduler.helpers import device, market, snapshot

DEVICES = [device("a"), device("b")]


def plan(
    ages: dict[str, float], now: float, btc_observed_at: float, action: str = "sleep"
) -> set[tuple[str, str]]:
    guard = Guard(
        GuardConfig.model_validate(
            {"min_dwell_seconds": 0, "max_input_age_seconds": ages, "stale_action": action}
        ),
        power_cap_w=1e9,
    )
    state = dataclasses.replace(
        market(20.0, observed_at=now),
        btc_price_usd=Reading(59_013.8, btc_observed_at, "test"),
    )
    snap = snapshot(DEVICES, 20.0, now=now, market_state=state)
    result = guard.apply(BreakevenPolicy().plan(snap), snap)
    return {(str(a.workload), a.reason) for a in result.assignments}


def test_a_stale_btc_price_triggers_the_safe_action() -> None:
    assert plan({"btc_price_usd": 600}, now=1000.0, btc_observed_at=500.0) == {
        ("mine(main)", "price_below_breakeven")
    }
    assert plan({"btc_price_usd": 600}, now=1000.0, btc_observed_at=300.0) == {
        ("sleep", "stale_input")
    }
    assert plan({"btc_price_usd": 600}, now=1000.0, btc_observed_at=300.0, action="hold") == {
        ("mine(main)", "stale_input")
    }
    assert plan({}, now=1000.0, btc_observed_at=-1e9) == {("mine(main)", "price_below_breakeven")}


def test_max_input_age_names_only_market_inputs() -> None:
    base = {
        "site": {"power_cap_kw": 10},
        "pools": [{"name": "p", "url": "stratum+tcp://p:1", "user": "u"}],
        "devices": [{"id": "a", "model": "S21", "address": "127.40.3.1", "pools": ["p"]}],
    }
    with pytest.raises(ConfigError, match=r"guard\.max_input_age_seconds"):
        parse_config({**base, "guard": {"max_input_age_seconds": {"weather": 5}}}, environ={})
    with pytest.raises(ConfigError, match=r"mqtt\.push_devices: unknown device ids \['zz'\]"):
        parse_config({**base, "mqtt": {"push_devices": ["zz"]}}, environ={})
    with pytest.raises(ConfigError, match=r"market\[0\]\.band_fraction"):
        parse_config({**base, "market": [{"driver": "btc-price", "band_fraction": 3}]}, environ={})
    with pytest.raises(ConfigError, match=r"market\[0\]\.periods\[0\]: .*not after start"):
        parse_config(
            {
                **base,
                "market": [
                    {
                        "driver": "tariff",
                        "default_usd_per_mwh": 40,
                        "periods": [{"start": "20:00", "end": "06:00", "usd_per_mwh": 10}],
                    }
                ],
            },
            environ={},
        )
    ok = parse_config({**base, "mqtt": {"push_devices": ["a"], "port": 1884}}, environ={})
    assert ok.mqtt is not None and ok.mqtt.port == 1884


def test_pushed_device_goes_unreachable_when_its_samples_stop() -> None:
    state = FleetState([device("a")])
    state.observe(Sample("a", 100.0, Workload.mine("main"), 3500.0, 2e14))
    expire_pushed_sample(state, "a", 60.0, 150.0)
    assert state.status["a"].reachable
    expire_pushed_sample(state, "a", 60.0, 161.0)
    assert not state.status["a"].reachable
    assert "a" not in state.snapshot(161.0).samples


def test_sink_merges_events_by_id_and_drops_ended_ones() -> None:
    import asyncio
    from datetime import UTC, datetime, timedelta

    from scheduler.control.ingest import FleetSink
    from scheduler.core.model import Event
    from scheduler.observability.metrics import Metrics

    now = datetime(2026, 8, 20, 20, 0, tzinfo=UTC)
    state = FleetState([device("a")])
    wake = asyncio.Event()
    sink = FleetSink(state, Metrics(state), wake=wake, wall_clock=lambda: now)
    hour = timedelta(hours=1)
    sink.on_event(Event("old", now - 2 * hour, now + hour, target_kw=1))
    sink.on_event(Event("new", now, now + hour, reduction_kw=5))
    sink.on_event(Event("old", now - 2 * hour, now - hour, target_kw=2))  # replaced, then over
    assert wake.is_set()
    later = FleetSink(state, Metrics(state), wall_clock=lambda: now + 2 * hour)
    later.on_event(Event("next", now + 3 * hour, now + 4 * hour, target_kw=9))
    assert [e.id for e in state.events] == ["next"]
    assert sink.on_sample(Sample("ghost", 1.0, Workload.sleep(), 1.0, 0.0)) is False
    sink.on_rejected("stale")
    assert b'wattmux_ingest_rejected_total{reason="stale"} 1.0' in sink.metrics.render()
