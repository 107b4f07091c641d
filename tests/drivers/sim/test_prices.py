"""The ERCOT replay and BTC daily feeds, on the bundled 2024-08-19..21 record, with a fake clock."""

from __future__ import annotations

import itertools
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest

from drivers.base import MarketFeed
from drivers.errors import Fatal, Unavailable
from drivers.market.history import (
    ERCOT_ZONE,
    PriceInterval,
    bundled_btc_path,
    bundled_ercot_path,
    intervals_from,
    load_btc_daily_csv,
    load_ercot_csv,
)
from drivers.market.replay import BtcDailyFeed, ErcotReplayFeed
from scheduler.core.economics import MarketEconomics, market_economics
from scheduler.core.hardware import MODELS
from scheduler.core.model import TERA, Device, DeviceKind, MarketState, Snapshot
from tests.fakes import FakeClock

FIRST = datetime(2024, 8, 19, 0, 0, tzinfo=ERCOT_ZONE)
ERCOT_HEADER = (
    "interval_start_local,hb_south_rtm_spp_usd_per_mwh,hb_south_dam_spp_usd_per_mwh,suspect_filled"
)


@pytest.fixture(scope="module")
def intervals() -> list[PriceInterval]:
    return load_ercot_csv(bundled_ercot_path())


def market_offset_s(when: datetime, speed: float) -> float:
    """Clock seconds after the replay start at which the replay reaches `when` (no DST in Aug)."""
    return (when - FIRST).total_seconds() / speed


# --- loading ------------------------------------------------------------------------------


def test_bundled_ercot_slice(intervals: list[PriceInterval]) -> None:
    assert len(intervals) == 3 * 96
    assert intervals[0].start == FIRST
    assert intervals[0].start.tzinfo is ERCOT_ZONE
    assert intervals[0].start.utcoffset() == timedelta(hours=-5)  # CDT
    assert intervals[-1].start == datetime(2024, 8, 21, 23, 45, tzinfo=ERCOT_ZONE)
    assert all(b.start - a.start == timedelta(minutes=15) for a, b in itertools.pairwise(intervals))
    assert intervals[0].end == intervals[1].start
    assert max(i.rtm_usd_per_mwh for i in intervals) == 4857.82  # the 2024-08-20 record
    assert not any(i.suspect for i in intervals)


def test_bundled_btc_days() -> None:
    days = load_btc_daily_csv(bundled_btc_path())
    assert [d.date_utc for d in days] == [date(2024, 8, 19), date(2024, 8, 20), date(2024, 8, 21)]
    assert days[1].btc_close_usd == 59013.80
    assert days[1].difficulty == 86_871_474_313_762.0
    assert days[1].block_subsidy_btc == 3.125


def test_loader_reads_suspect_flag_and_day_ahead(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text(
        f"{ERCOT_HEADER}\n2024-11-03 01:00,20.0972,16.2225,1\n2024-11-03 01:15,-3.5,16.2,0\n"
    )
    first, second = load_ercot_csv(path)
    assert (first.rtm_usd_per_mwh, first.dam_usd_per_mwh, first.suspect) == (20.0972, 16.2225, True)
    assert (second.rtm_usd_per_mwh, second.suspect) == (-3.5, False)


@pytest.mark.parametrize(
    ("body", "line", "detail"),
    [
        (
            "2024-08-19 00:00,1.0,2.0,0\n2024-08-19 00:15,abc,2.0,0\n",
            3,
            "hb_south_rtm_spp_usd_per_mwh",
        ),
        ("2024-08-19 00:00,1.0,nan,0\n", 2, "hb_south_dam_spp_usd_per_mwh"),
        ("2024-08-19T00:00,1.0,2.0,0\n", 2, "interval_start_local"),
        ("2024-08-19 00:10,1.0,2.0,0\n", 2, "quarter hour"),
        (
            "2024-08-19 00:00,1.0,2.0,0\n2024-08-19 00:30,1.0,2.0,0\n2024-08-19 00:15,1.0,2.0,0\n",
            4,
            "follow",
        ),
        ("2024-08-19 00:00,1.0,2.0,0\n2024-08-19 00:00,1.0,2.0,0\n", 3, "follow"),
        ("2024-08-19 00:00,1.0,2.0,yes\n", 2, "suspect_filled"),
        ("2024-08-19 00:00,1.0,2.0\n", 2, "fields"),
        ("2024-08-19 00:00,1.0,2.0,0,9\n", 2, "fields"),
    ],
)
def test_malformed_ercot_row_names_file_and_line(
    tmp_path: Path, body: str, line: int, detail: str
) -> None:
    path = tmp_path / "broken.csv"
    path.write_text(f"{ERCOT_HEADER}\n{body}")
    with pytest.raises(Fatal) as caught:
        load_ercot_csv(path)
    assert caught.value.source == str(path)
    assert f"line {line}:" in str(caught.value)
    assert detail in str(caught.value)


def test_missing_column_and_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "cols.csv"
    path.write_text("interval_start_local,hb_south_rtm_spp_usd_per_mwh\n2024-08-19 00:00,1.0\n")
    with pytest.raises(Fatal, match=r"line 1: missing column\(s\) hb_south_dam_spp_usd_per_mwh"):
        load_ercot_csv(path)
    path.write_text(f"{ERCOT_HEADER}\n")
    with pytest.raises(Fatal, match="no intervals"):
        load_ercot_csv(path)


def test_unreadable_files_raise_fatal(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.csv"
    with pytest.raises(Fatal, match="cannot read") as caught:
        load_ercot_csv(missing)
    assert caught.value.source == str(missing)
    binary = tmp_path / "binary.csv"
    binary.write_bytes(f"{ERCOT_HEADER}\n2024-08-19 00:00,1.0,2.0,0\n".encode() + b"\xff\xfe\x00\n")
    with pytest.raises(Fatal, match="not CSV text"):
        load_ercot_csv(binary)


def test_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_text(f"\ufeff{ERCOT_HEADER}\n2024-08-19 00:00,1.0,2.0,0\n", encoding="utf-8")
    assert [i.rtm_usd_per_mwh for i in load_ercot_csv(path)] == [1.0]


def test_malformed_btc_rows(tmp_path: Path) -> None:
    path = tmp_path / "btc.csv"
    header = "date_utc,btc_close_usd,difficulty,block_subsidy_btc\n"
    path.write_text(header + "2024-08-19,1.0,2.0,3.125\n2024-8-20,1.0,2.0,3.125\n")
    with pytest.raises(Fatal, match="line 3: date_utc"):
        load_btc_daily_csv(path)
    path.write_text(header + "2024-08-19,1.0,0,3.125\n")
    with pytest.raises(Fatal, match="line 2: difficulty"):
        load_btc_daily_csv(path)
    path.write_text(header + "2024-08-19,1.0,2.0,3.125\n2024-08-19,1.0,2.0,3.125\n")
    with pytest.raises(Fatal, match="line 3: 2024-08-19 does not follow"):
        load_btc_daily_csv(path)


# --- the replay ---------------------------------------------------------------------------


def test_replay_is_a_market_feed(intervals: list[PriceInterval]) -> None:
    feed = ErcotReplayFeed(intervals, speed=1.0, clock=FakeClock())
    assert isinstance(feed, MarketFeed)
    assert feed.name == "ercot-replay"


async def test_replay_advances_one_interval_per_900_over_speed_seconds(
    intervals: list[PriceInterval],
) -> None:
    clock = FakeClock(1000.0)
    feed = ErcotReplayFeed(intervals, speed=60.0, clock=clock)  # an interval every 15 s
    for offset, index in [(0.0, 0), (14.99, 0), (15.0, 1), (29.0, 1), (30.0, 2), (15.0 * 100, 100)]:
        clock.now = 1000.0 + offset
        readings = await feed.fetch()
        assert set(readings) == {"power_price_usd_per_mwh"}
        reading = readings["power_price_usd_per_mwh"]
        assert reading.value == intervals[index].rtm_usd_per_mwh, offset
        assert reading.observed_at == clock.now
        assert reading.source == "ercot-replay"
        assert feed.current_interval() is intervals[index]


@pytest.mark.parametrize(
    ("speed", "elapsed_s", "expected"),
    [
        (1.0, 450.0, FIRST + timedelta(minutes=7, seconds=30)),
        (90.0, 10.0, FIRST + timedelta(minutes=15)),
        (900.0, 96.5, FIRST + timedelta(days=1, minutes=7, seconds=30)),
        (3600.0, 47.25, datetime(2024, 8, 20, 23, 15, tzinfo=ERCOT_ZONE)),
    ],
)
def test_replay_time_speed_math(
    intervals: list[PriceInterval], speed: float, elapsed_s: float, expected: datetime
) -> None:
    clock = FakeClock(50.0)
    feed = ErcotReplayFeed(intervals, speed=speed, clock=clock)
    assert feed.replay_time(50.0 + elapsed_s) == expected
    clock.now = 50.0 + elapsed_s
    assert feed.replay_time() == expected


async def test_record_spike_appears_at_its_replay_offset(intervals: list[PriceInterval]) -> None:
    speed = 1800.0  # a market day in 48 s
    clock = FakeClock(0.0)
    feed = ErcotReplayFeed(intervals, speed=speed, start_at=200.0, clock=clock)
    spike_start = datetime(2024, 8, 20, 19, 15, tzinfo=ERCOT_ZONE)
    prices: list[float] = []
    for step in range(-1, 6):  # 19:00 .. 20:30
        when = spike_start + timedelta(minutes=15 * step)
        clock.now = 200.0 + market_offset_s(when, speed) + 0.005  # 9 market seconds in
        assert (feed.replay_time() - when).total_seconds() == pytest.approx(9.0)
        prices.append((await feed.fetch())["power_price_usd_per_mwh"].value)
    before, spike, after = prices[0], prices[1:6], prices[6]
    assert min(spike) > 1000.0 > max(before, after)
    assert max(spike) == 4857.82


async def test_replay_holds_at_first_interval_before_start_at(
    intervals: list[PriceInterval],
) -> None:
    clock = FakeClock(10.0)
    feed = ErcotReplayFeed(intervals, speed=900.0, start_at=100.0, clock=clock)
    assert feed.replay_time() == FIRST
    assert (await feed.fetch())["power_price_usd_per_mwh"].value == intervals[0].rtm_usd_per_mwh


async def test_replay_ends_with_unavailable(intervals: list[PriceInterval]) -> None:
    clock = FakeClock(0.0)
    feed = ErcotReplayFeed(intervals, speed=900.0, clock=clock)  # one interval per second
    assert feed.duration_seconds() == len(intervals)
    clock.now = len(intervals) - 0.5
    assert feed.current_interval() is intervals[-1]
    assert not feed.ended()
    clock.now = float(len(intervals))
    assert feed.ended()
    with pytest.raises(Unavailable, match="replay ended") as caught:
        await feed.fetch()
    assert caught.value.source == "ercot-replay"
    with pytest.raises(Unavailable):
        feed.replay_time()


def test_replay_rejects_bad_arguments(intervals: list[PriceInterval]) -> None:
    with pytest.raises(ValueError, match="speed"):
        ErcotReplayFeed(intervals, speed=0.0)
    with pytest.raises(ValueError, match="speed"):
        ErcotReplayFeed(intervals, speed=float("inf"))
    with pytest.raises(ValueError, match="interval"):
        ErcotReplayFeed([], speed=1.0)


def test_intervals_from_a_local_start(intervals: list[PriceInterval]) -> None:
    tail = intervals_from(intervals, "2024-08-20 19:20")
    assert tail[0].start == datetime(2024, 8, 20, 19, 15, tzinfo=ERCOT_ZONE)
    assert tail[-1] is intervals[-1]
    with pytest.raises(ValueError, match="outside"):
        intervals_from(intervals, "2024-08-22 00:00")


# --- BTC daily feed -----------------------------------------------------------------------


async def test_btc_daily_feed_follows_the_replay_date(intervals: list[PriceInterval]) -> None:
    days = load_btc_daily_csv(bundled_btc_path())
    clock = FakeClock(0.0)
    replay = ErcotReplayFeed(intervals, speed=900.0, clock=clock)
    feed = BtcDailyFeed(replay, days)
    assert isinstance(feed, MarketFeed)
    for offset, day in [(0.0, days[0]), (95.9, days[0]), (96.0, days[1]), (287.5, days[2])]:
        clock.now = offset
        readings = await feed.fetch()
        assert readings["btc_price_usd"].value == day.btc_close_usd
        assert readings["difficulty"].value == day.difficulty
        assert readings["block_subsidy_btc"].value == day.block_subsidy_btc
        assert readings["fees_btc_per_block"].value == 0.0
        assert "fees-unknown" in readings["fees_btc_per_block"].source
        assert readings["btc_price_usd"].source == "btc-daily"
        assert all(r.observed_at == offset for r in readings.values())
    clock.now = 288.0
    with pytest.raises(Unavailable, match="replay ended") as caught:
        await feed.fetch()
    assert caught.value.source == "btc-daily"


async def test_btc_daily_feed_with_its_own_clock(intervals: list[PriceInterval]) -> None:
    days = load_btc_daily_csv(bundled_btc_path())
    replay_clock, btc_clock = FakeClock(0.0), FakeClock(96.0 * 2)
    feed = BtcDailyFeed(
        ErcotReplayFeed(intervals, speed=900.0, clock=replay_clock), days, clock=btc_clock
    )
    readings = await feed.fetch()
    assert readings["btc_price_usd"].value == days[2].btc_close_usd
    assert readings["btc_price_usd"].observed_at == 192.0
    assert feed.current_day() is days[2]
    assert feed.current_day(0.0) is days[0]


async def test_btc_daily_feed_without_the_day_is_unavailable(
    intervals: list[PriceInterval],
) -> None:
    days = load_btc_daily_csv(bundled_btc_path())
    feed = BtcDailyFeed(ErcotReplayFeed(intervals, speed=900.0, clock=FakeClock(0.0)), days[1:])
    with pytest.raises(Unavailable, match="no BTC row for 2024-08-19"):
        await feed.fetch()


async def test_replayed_market_prices_the_spike_above_s21_breakeven(
    intervals: list[PriceInterval],
) -> None:
    facts = MODELS["S21"]
    s21 = Device(
        id="s21",
        kind=DeviceKind.ASIC,
        model="S21",
        driver="cgminer",
        address="127.0.0.1",
        port=4028,
        nominal_hashrate_hs=facts.hashrate_ths * TERA,
        nominal_power_w=facts.power_w,
    )
    clock = FakeClock(0.0)
    replay = ErcotReplayFeed(intervals, speed=900.0, clock=clock)
    btc = BtcDailyFeed(replay, load_btc_daily_csv(bundled_btc_path()))

    async def economics_at(when: datetime) -> MarketEconomics:
        clock.now = market_offset_s(when, 900.0)
        readings = {**await replay.fetch(), **await btc.fetch()}
        market = MarketState(**readings)
        snapshot = Snapshot(
            now=clock.now, wall=when, devices={}, samples={}, status={}, market=market
        )
        economics = market_economics(snapshot)
        assert economics is not None
        return economics

    spike = await economics_at(datetime(2024, 8, 20, 19, 30, tzinfo=ERCOT_ZONE))
    night = await economics_at(datetime(2024, 8, 20, 3, 0, tzinfo=ERCOT_ZONE))
    assert round(spike.hashprice_usd_per_th_day, 4) == 0.0427  # the worked example's day
    assert round(spike.breakeven_usd_per_mwh(s21)) == 102
    assert spike.power_price_usd_per_mwh > spike.breakeven_usd_per_mwh(s21)
    assert night.power_price_usd_per_mwh < night.breakeven_usd_per_mwh(s21)
