"""Metrics: values read from FleetState at scrape time, loop counters, and a golden /metrics file.

Golden file: tests/fixtures/golden/metrics.txt.  After an intended change to
the exposition, regenerate it with

    WATTMUX_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/scheduler/test_metrics.py

and review the diff.  ``*_created`` series carry the wall-clock time a counter
was created, so they are removed before comparing.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from drivers.errors import DriverError, MalformedReply, Timeout
from scheduler.core.model import (
    MARKET_INPUTS,
    TERA,
    Device,
    MarketState,
    Reading,
    Sample,
    Workload,
    WorkloadKind,
)
from scheduler.core.state import FleetState
from scheduler.observability.metrics import DEVICE_STATES, Metrics, hashprice_from_market
from tests.fakes import asic

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "golden" / "metrics.txt"
UPDATE_GOLDEN = os.environ.get("WATTMUX_UPDATE_GOLDEN") == "1"
NOW = 1000.0
POOL_FEE = 0.02

Labels = tuple[tuple[str, str], ...]


def device(device_id: str, address: str) -> Device:
    return asic(device_id, address=address)


def build_state() -> FleetState:
    """Four devices: mining, sleeping (no temperature), unreachable after a sample, never polled."""
    state = FleetState(
        [
            device("m1", "127.0.0.11"),
            device("m2", "127.0.0.12"),
            device("m3", "127.0.0.13"),
            device("m4", "127.0.0.14"),
        ],
        pool_fee=POOL_FEE,
    )
    state.observe(Sample("m1", NOW - 4.0, Workload.mine("main"), 3480.5, 201.5 * TERA, 71.25))
    state.observe(Sample("m2", NOW - 2.5, Workload.sleep(), 14.0, 0.0, None))
    state.observe(Sample("m3", NOW - 90.0, Workload.mine("main"), 3400.0, 199 * TERA, 80.0))
    state.mark_unreachable("m3", "timeout: no reply in 3 s", NOW - 10.0)
    state.observe_market(
        {
            "btc_price_usd": Reading(59_250.0, NOW - 30.0, "static"),
            "difficulty": Reading(88.1e12, NOW - 600.0, "static"),
            "block_subsidy_btc": Reading(3.125, NOW - 600.0, "static"),
            "fees_btc_per_block": Reading(0.11, NOW - 600.0, "static"),
            "power_price_usd_per_mwh": Reading(41.7, NOW - 12.0, "ercot-replay"),
        }
    )
    return state


def scrape(metrics: Metrics) -> dict[str, dict[Labels, float]]:
    """Parse the rendered text: sample name -> sorted labels -> value."""
    values: dict[str, dict[Labels, float]] = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            labels = tuple(sorted(sample.labels.items()))
            values.setdefault(sample.name, {})[labels] = sample.value
    return values


def expected_hashprice(price: float, difficulty: float, reward_btc: float, fee: float) -> float:
    """Hashprice by the textbook formula: a TH/s finds 86400e12 / (D * 2**32) blocks a day."""
    return 86_400 * 1e12 / (difficulty * 2**32) * reward_btc * price * (1 - fee)


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(build_state(), clock=lambda: NOW)


def test_device_gauges_come_from_reachable_samples(metrics: Metrics) -> None:
    values = scrape(metrics)
    power = values["wattmux_device_power_watts"]
    assert power == {(("device", "m1"),): 3480.5, (("device", "m2"),): 14.0}
    assert values["wattmux_device_hashrate_hashes_per_second"][(("device", "m1"),)] == 201.5e12
    # no temperature reported by m2; m3's stale sample is not exported
    assert values["wattmux_device_temperature_celsius"] == {(("device", "m1"),): 71.25}
    assert values["wattmux_device_sample_age_seconds"] == {
        (("device", "m1"),): 4.0,
        (("device", "m2"),): 2.5,
    }
    assert values["wattmux_site_power_watts"] == {(): 3480.5 + 14.0}


def test_device_up_and_workload_one_hot(metrics: Metrics) -> None:
    values = scrape(metrics)
    up = {labels[0][1]: value for labels, value in values["wattmux_device_up"].items()}
    assert up == {"m1": 1.0, "m2": 1.0, "m3": 0.0, "m4": 0.0}
    workload = values["wattmux_device_workload"]
    hot = {dict(labels)["device"]: dict(labels)["workload"] for labels, v in workload.items() if v}
    assert hot == {"m1": "mine", "m2": "sleep"}
    # closed label set: every device has exactly one series per workload kind
    assert len(workload) == 4 * len(WorkloadKind)
    assert {dict(labels)["workload"] for labels in workload} == {k.value for k in WorkloadKind}


def test_device_state_counts_cover_every_device(metrics: Metrics) -> None:
    counts = {dict(k)["state"]: v for k, v in scrape(metrics)["wattmux_devices"].items()}
    assert set(counts) == set(DEVICE_STATES)
    assert counts["mining"] == 1 and counts["sleeping"] == 1 and counts["unreachable"] == 2
    assert sum(counts.values()) == 4


def test_market_gauges_ages_and_hashprice(metrics: Metrics) -> None:
    values = scrape(metrics)
    assert values["wattmux_btc_price_usd"] == {(): 59_250.0}
    assert values["wattmux_network_difficulty"] == {(): 88.1e12}
    assert values["wattmux_power_price_usd_per_mwh"] == {(): 41.7}
    ages = {dict(k)["input"]: v for k, v in values["wattmux_market_input_age_seconds"].items()}
    assert ages == {
        "btc_price_usd": 30.0,
        "difficulty": 600.0,
        "block_subsidy_btc": 600.0,
        "fees_btc_per_block": 600.0,
        "power_price_usd_per_mwh": 12.0,
    }
    assert set(ages) == set(MARKET_INPUTS)
    [hashprice] = values["wattmux_hashprice_usd_per_th_day"].values()
    assert hashprice == pytest.approx(expected_hashprice(59_250.0, 88.1e12, 3.235, POOL_FEE))


def test_hashprice_absent_when_not_computable() -> None:
    state = build_state()
    state.market = MarketState(btc_price_usd=Reading(60_000.0, NOW, "static"))
    values = scrape(Metrics(state, clock=lambda: NOW))
    assert "wattmux_hashprice_usd_per_th_day" not in values
    assert "wattmux_network_difficulty" not in values
    assert list(values["wattmux_market_input_age_seconds"]) == [(("input", "btc_price_usd"),)]


@pytest.mark.parametrize(
    ("field", "value"),
    [("difficulty", 0.0), ("difficulty", float("nan")), ("btc_price_usd", -1.0)],
)
def test_hashprice_of_unusable_values_is_none(field: str, value: float) -> None:
    market = build_state().market
    assert hashprice_from_market(market, POOL_FEE) is not None
    broken = dataclasses.replace(market, **{field: Reading(value, NOW, "x")})
    assert hashprice_from_market(broken, POOL_FEE) is None


def test_hashprice_counts_missing_fees_as_zero() -> None:
    market = MarketState(
        btc_price_usd=Reading(60_000.0, NOW, "s"),
        difficulty=Reading(80e12, NOW, "s"),
        block_subsidy_btc=Reading(3.125, NOW, "s"),
    )
    assert hashprice_from_market(market, 0.0) == pytest.approx(
        expected_hashprice(60_000.0, 80e12, 3.125, 0.0)
    )


def test_scrape_reads_live_state_and_clock() -> None:
    state = build_state()
    now = [NOW]
    metrics = Metrics(state, clock=lambda: now[0])
    assert scrape(metrics)["wattmux_device_up"][(("device", "m4"),)] == 0.0
    state.observe(Sample("m4", NOW, Workload.mine("main"), 3500.0, 200 * TERA, 60.0))
    state.mark_unreachable("m1", "refused", NOW)
    now[0] = NOW + 7.0
    values = scrape(metrics)
    assert values["wattmux_device_up"][(("device", "m4"),)] == 1.0
    assert values["wattmux_device_up"][(("device", "m1"),)] == 0.0
    assert values["wattmux_device_sample_age_seconds"][(("device", "m4"),)] == 7.0
    assert values["wattmux_site_power_watts"] == {(): 3500.0 + 14.0}


def test_loop_counters_and_histogram(metrics: Metrics) -> None:
    metrics.decisions.labels(reason="price_above_breakeven").inc(3)
    metrics.commands.labels(outcome="confirmed").inc()
    metrics.poll_errors.labels(reason=Timeout("m1", "slow").reason).inc()
    metrics.source_up.labels(source="static").set(1)
    metrics.ticks.inc()
    metrics.tick_duration.observe(0.02)
    metrics.ingest_rejected.labels(reason="bad_json").inc()
    values = scrape(metrics)
    assert values["wattmux_decisions_total"] == {(("reason", "price_above_breakeven"),): 3.0}
    commands = {dict(k)["outcome"]: v for k, v in values["wattmux_commands_total"].items()}
    assert commands == {
        "confirmed": 1.0,
        "unconfirmed": 0.0,
        "rejected": 0.0,
        "unavailable": 0.0,
        "skipped": 0.0,
    }
    errors = {dict(k)["reason"]: v for k, v in values["wattmux_poll_errors_total"].items()}
    assert errors["timeout"] == 1.0
    assert errors[MalformedReply.reason] == 0.0 and errors[DriverError.reason] == 0.0
    assert values["wattmux_source_up"] == {(("source", "static"),): 1.0}
    assert values["wattmux_ticks_total"] == {(): 1.0}
    assert values["wattmux_tick_duration_seconds_count"] == {(): 1.0}
    assert values["wattmux_tick_duration_seconds_bucket"][(("le", "0.025"),)] == 1.0
    assert values["wattmux_tick_duration_seconds_bucket"][(("le", "0.01"),)] == 0.0
    assert values["wattmux_ingest_rejected_total"] == {(("reason", "bad_json"),): 1.0}


def test_each_metrics_owns_its_registry() -> None:
    first = Metrics(build_state(), clock=lambda: NOW)
    second = Metrics(build_state(), clock=lambda: NOW)  # would clash in a shared registry
    first.ticks.inc()
    assert scrape(first)["wattmux_ticks_total"] == {(): 1.0}
    assert scrape(second)["wattmux_ticks_total"] == {(): 0.0}
    assert not any(f.name.startswith("wattmux_") for f in REGISTRY.collect())


def test_names_follow_prometheus_conventions(metrics: Metrics) -> None:
    families = list(text_string_to_metric_families(metrics.render().decode()))
    for family in families:
        assert family.name.startswith("wattmux_"), family.name
        assert re.fullmatch(r"[a-z_]+", family.name), family.name
        if family.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples)
    names = {f.name for f in families}
    assert "wattmux_device_temperature_celsius" in names
    assert "wattmux_tick_duration_seconds" in names


# --- golden file ---------------------------------------------------------------------------


def normalised(text: str) -> str:
    """Drop the ``*_created`` families (wall-clock creation times) from an exposition."""
    kept = []
    for line in text.splitlines():
        name = line.split()[2] if line.startswith("# ") else re.split(r"[{ ]", line, maxsplit=1)[0]
        if not name.endswith("_created"):
            kept.append(line)
    return "\n".join(kept) + "\n"


def golden_metrics(state: FleetState | None = None) -> Metrics:
    """The state the golden file shows, with every loop instrument touched once."""
    metrics = Metrics(state or build_state(), clock=lambda: NOW)
    metrics.decisions.labels(reason="price_above_breakeven").inc()
    metrics.commands.labels(outcome="confirmed").inc()
    metrics.poll_errors.labels(reason="timeout").inc()
    metrics.source_up.labels(source="static").set(1)
    metrics.ticks.inc(2)
    metrics.tick_duration.observe(0.012)
    metrics.tick_duration.observe(0.3)
    metrics.ingest_rejected.labels(reason="bad_json").inc()
    return metrics


def test_golden_metrics_output() -> None:
    text = normalised(golden_metrics().render().decode())
    if UPDATE_GOLDEN:
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(text)
    assert GOLDEN.exists(), f"missing {GOLDEN}; run with WATTMUX_UPDATE_GOLDEN=1 to create it"
    assert text == GOLDEN.read_text()


def test_golden_comparison_catches_a_changed_value() -> None:
    golden = GOLDEN.read_text()
    state = build_state()
    state.observe(Sample("m1", NOW - 4.0, Workload.mine("main"), 3480.75, 201.5 * TERA, 71.25))
    changed = normalised(golden_metrics(state).render().decode())
    assert changed != golden
    diffs = [
        (old, new)
        for old, new in zip(golden.splitlines(), changed.splitlines(), strict=True)
        if old != new
    ]
    assert diffs == [
        ("wattmux_site_power_watts 3494.5", "wattmux_site_power_watts 3494.75"),
        (
            'wattmux_device_power_watts{device="m1"} 3480.5',
            'wattmux_device_power_watts{device="m1"} 3480.75',
        ),
    ]
