"""Payload decoding and validation, without a broker."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from drivers.telemetry.messages import Decoder, Limits, MessageRejected

WALL = 1_800_000_000.0
NOW = datetime.fromtimestamp(WALL, UTC)


def body(**fields: object) -> bytes:
    base: dict[str, object] = {"ts": WALL - 2, "power_w": 3200, "workload": "mine(main,0.8)"}
    base.update(fields)
    return json.dumps(base).encode()


def reason(call: object) -> str:
    with pytest.raises(MessageRejected) as caught:
        call()  # type: ignore[operator]
    return caught.value.reason


def test_sample_ages_are_carried_to_the_monotonic_clock() -> None:
    sample = Decoder(Limits()).sample("a1", body(temperature_c=70), WALL, 500.0)
    assert sample.observed_at == 498.0
    assert str(sample.workload) == "mine(main,0.8)" and sample.temperature_c == 70


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"", "malformed"),
        (b"[1, 2]", "malformed"),
        (b'{"ts": 1, "power_w": Infinity, "workload": "sleep"}', "malformed"),
        (body(power_w=True), "malformed"),
        (body(device_id="other"), "malformed"),
        (body(power_w=1e6), "out_of_range"),
        (body(hashrate_hs=-1), "out_of_range"),
        (body(temperature_c=-80), "out_of_range"),
        (body(ts=WALL - 61), "stale"),
        (body(ts=WALL + 6), "future"),
        (body(workload="ai()"), "unknown_workload"),
        (b"{" + b" " * 2000 + b"}", "oversized"),
    ],
)
def test_bad_samples(payload: bytes, expected: str) -> None:
    decoder = Decoder(Limits(max_payload_bytes=1024))
    assert reason(lambda: decoder.sample("a1", payload, WALL, 0.0)) == expected


def test_batch_keeps_the_good_and_reports_the_bad() -> None:
    entries = [
        json.loads(body(device_id="a1")),
        json.loads(body(device_id="a2", power_w=-1)),
        json.loads(body()),  # no device_id
    ]
    samples, rejected = Decoder(Limits()).batch("rack", json.dumps(entries).encode(), WALL, 0.0)
    assert [s.device_id for s in samples] == ["a1"]
    assert sorted(r.reason for r in rejected) == ["malformed", "out_of_range"]


def test_prices_and_events() -> None:
    decoder = Decoder(Limits())

    def price(usd: object, start: datetime, minutes: int = 15) -> bytes:
        end = start + timedelta(minutes=minutes)
        return json.dumps(
            {
                "usd_per_mwh": usd,
                "interval_start": start.isoformat(),
                "interval_end": end.isoformat(),
            }
        ).encode()

    reading, _ = decoder.price(price(-251, NOW), NOW, 7.0)
    assert reading.value == -251 and reading.observed_at == 7.0
    assert reason(lambda: decoder.price(price(5000.01, NOW), NOW, 0)) == "out_of_range"
    assert reason(lambda: decoder.price(price(30, NOW - timedelta(hours=1)), NOW, 0)) == "stale"
    naive = price(30, NOW.replace(tzinfo=None))
    assert reason(lambda: decoder.price(naive, NOW, 0)) == "malformed"
    assert reason(lambda: decoder.price(price("30", NOW), NOW, 0)) == "malformed"

    def event(**fields: object) -> bytes:
        base: dict[str, object] = {
            "id": "e1",
            "start": NOW.isoformat(),
            "end": (NOW + timedelta(hours=2)).isoformat(),
        }
        base.update(fields)
        return json.dumps(base).encode()

    assert decoder.event(event(reduction_kw=250.0), NOW).reduction_kw == 250.0
    assert reason(lambda: decoder.event(event(), NOW)) == "malformed"
    assert reason(lambda: decoder.event(event(target_kw=1, reduction_kw=1), NOW)) == "malformed"
    assert reason(lambda: decoder.event(event(target_kw=-5), NOW)) == "out_of_range"
    assert reason(lambda: decoder.event(event(target_kw=5), NOW + timedelta(hours=3))) == "stale"


def test_prices_and_events_dated_too_far_ahead_are_future() -> None:
    decoder = Decoder(Limits(max_price_lead_seconds=300.0, max_event_lead_seconds=86_400.0))

    def price(start: datetime) -> bytes:
        end = start + timedelta(minutes=15)
        return json.dumps(
            {
                "usd_per_mwh": 4999,
                "interval_start": start.isoformat(),
                "interval_end": end.isoformat(),
            }
        ).encode()

    year_2999 = datetime(2999, 1, 1, tzinfo=UTC)
    assert reason(lambda: decoder.price(price(year_2999), NOW, 0)) == "future"
    assert reason(lambda: decoder.price(price(NOW + timedelta(seconds=301)), NOW, 0)) == "future"
    reading, _ = decoder.price(price(NOW + timedelta(seconds=299)), NOW, 0)  # within tolerance
    assert reading.value == 4999

    def event(start: datetime) -> bytes:
        end = start + timedelta(hours=1)
        return json.dumps(
            {"id": "e1", "start": start.isoformat(), "end": end.isoformat(), "target_kw": 1}
        ).encode()

    assert reason(lambda: decoder.event(event(year_2999), NOW)) == "future"
    assert reason(lambda: decoder.event(event(NOW + timedelta(days=1, seconds=1)), NOW)) == "future"
    ahead = decoder.event(event(NOW + timedelta(hours=23)), NOW)  # announced a day ahead: kept
    assert ahead.start == NOW + timedelta(hours=23)
