"""Report accounting: uptime without curtailment and maintenance, energy, money, gain, DR, days."""

from __future__ import annotations

import struct
import sys
import zlib
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from scheduler.cli.report_png import HEIGHT, WIDTH, plain_chart_png, write_gain_png
from scheduler.control.accounting import Accountant, report_csv, report_rows, site_days
from scheduler.core.model import TERA, Event, Sample, Workload
from scheduler.core.state import FleetState
from scheduler.observability.metrics import hashprice_from_market
from scheduler.store.operator import ControlStore
from tests.scheduler.helpers import device, market

PRICE = 50.0  # USD/MWh
T0 = datetime(2026, 3, 1, 23, 59, 0, tzinfo=UTC)


class Clocks:
    def __init__(self) -> None:
        self.mono = 1000.0
        self.wall = T0

    def step(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += timedelta(seconds=seconds)


@pytest.fixture
def site(tmp_path: Path) -> tuple[FleetState, ControlStore, Clocks, Accountant, set[str]]:
    state = FleetState([device("a"), device("b"), device("c"), device("d")], pool_fee=0.02)
    state.market = market(PRICE)
    state.observe(Sample("a", 0.0, Workload.mine("main"), 3500.0, 200 * TERA))  # mining
    state.observe(Sample("b", 0.0, Workload.sleep(), 15.0, 0.0))  # asleep by decision
    state.observe(Sample("d", 0.0, Workload.mine("main"), 3000.0, 180 * TERA))  # in maintenance
    state.mark_unreachable("c", "timeout", 0.0)  # down
    store = ControlStore.open(tmp_path / "w.sqlite")
    clocks = Clocks()
    held: set[str] = {"d"}
    accountant = Accountant(
        state,
        store,
        clock=lambda: clocks.mono,
        wall_clock=lambda: clocks.wall,
        maintenance=lambda _wall: frozenset(held),
        flush_seconds=1e9,
        interval_seconds=0.0,
    )
    return state, store, clocks, accountant, held


def test_sums_per_machine_and_day(
    site: tuple[FleetState, ControlStore, Clocks, Accountant, set[str]],
) -> None:
    state, _store, clocks, accountant, _held = site
    accountant(0)  # the first tick only starts the clock
    clocks.step(30)
    accountant(1)  # 30 s on 2026-03-01
    clocks.step(60)
    accountant(2)  # 60 s on 2026-03-02 (a new day: the first day's sums were written)
    rows = {
        (r["day"], r["device"]): r
        for r in report_rows(accountant, date(2026, 3, 1), date(2026, 3, 2))
    }
    assert len(rows) == 8
    a1, b1, c1, d1 = (rows[("2026-03-01", d)] for d in "abcd")
    a2 = rows[("2026-03-02", "a")]
    assert a1["up_hours"] == round(30 / 3600, 4) and a2["up_hours"] == round(60 / 3600, 4)
    assert a1["uptime"] == 1.0
    assert b1["uptime"] is None and b1["curtailed_hours"] == round(30 / 3600, 4)  # not downtime
    assert c1["uptime"] == 0.0 and c1["energy_kwh"] == 0.0
    assert d1["uptime"] is None and d1["maintenance_hours"] == round(30 / 3600, 4)
    hashprice = hashprice_from_market(state.market, 0.02)
    assert hashprice is not None
    revenue = 200 * hashprice * 60 / 86400
    cost = 3500 / 1e6 * PRICE * 60 / 3600
    assert a2["energy_kwh"] == round(3.5 * 60 / 3600, 4)
    assert a2["revenue_usd"] == pytest.approx(revenue, abs=1e-4)
    assert a2["energy_cost_usd"] == pytest.approx(cost, abs=1e-4)
    assert a2["margin_usd"] == pytest.approx(revenue - cost, abs=1e-4)
    nominal = device("a")
    always_on = (
        nominal.nominal_hashrate_hs / TERA * hashprice * 60 / 86400
        - nominal.nominal_power_w / 1e6 * PRICE * 60 / 3600
    )
    assert a2["always_on_margin_usd"] == pytest.approx(always_on, abs=1e-4)
    assert a2["gain_over_always_on_usd"] == pytest.approx(revenue - cost - always_on, abs=1e-4)
    b2 = rows[("2026-03-02", "b")]  # asleep: its always-on margin is what it gave up
    assert b2["gain_over_always_on_usd"] == pytest.approx(
        b2["margin_usd"] - b2["always_on_margin_usd"], abs=1e-4
    )
    d2 = rows[("2026-03-02", "d")]  # in maintenance: no gain or loss against always-on
    assert d2["gain_over_always_on_usd"] == pytest.approx(0.0, abs=1e-4)
    days = site_days(accountant, date(2026, 3, 1), date(2026, 3, 2))
    assert [d["day"] for d in days] == ["2026-03-01", "2026-03-02"]
    assert days[1]["cumulative_gain_usd"] == pytest.approx(
        sum(r["gain_over_always_on_usd"] for r in rows.values()), abs=1e-3
    )
    assert days[0]["uptime"] == 0.5  # a up, c down; b curtailed and d in maintenance left out
    assert days[0]["machines"] == 4
    page = report_rows(accountant, date(2026, 3, 1), date(2026, 3, 2), limit=3, offset=6)
    assert [(r["day"], r["device"]) for r in page] == [("2026-03-02", "c"), ("2026-03-02", "d")]
    csv = report_csv(list(rows.values()))
    assert csv.splitlines()[0].startswith("day,device,uptime,")
    assert len(csv.splitlines()) == 9


def test_dr_delivered_during_an_event_and_sums_survive_a_restart(
    site: tuple[FleetState, ControlStore, Clocks, Accountant, set[str]], tmp_path: Path
) -> None:
    state, store, clocks, accountant, held = site
    held.clear()
    state.set_events([Event("dr-1", T0, T0 + timedelta(hours=1), reduction_kw=10.0)])
    accountant(0)
    clocks.step(36)
    accountant(1)
    accountant.flush()
    again = Accountant(state, store, clock=lambda: clocks.mono, wall_clock=lambda: clocks.wall)
    rows = {r["device"]: r for r in report_rows(again, date(2026, 3, 1), date(2026, 3, 1))}
    nominal_kw = device("b").nominal_power_w / 1000
    assert rows["b"]["dr_delivered_kwh"] == round((nominal_kw - 0.015) * 36 / 3600, 4)
    assert rows["c"]["dr_delivered_kwh"] == 0.0  # not read: nothing claimed
    assert report_rows(again, date(2026, 3, 1), date(2026, 3, 1), "a")[0]["device"] == "a"


def test_plain_chart_is_a_valid_png_with_the_line() -> None:
    png = plain_chart_png([0.0, -2.0, 5.0, 12.0])
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    length, kind = struct.unpack(">I4s", png[8:16])
    width, height = struct.unpack(">II", png[16:24])
    assert (kind, width, height) == (b"IHDR", WIDTH, HEIGHT)
    offset = 8 + 12 + length
    size, kind = struct.unpack(">I4s", png[offset : offset + 8])
    assert kind == b"IDAT"
    raw = zlib.decompress(png[offset + 8 : offset + 8 + size])
    assert len(raw) == HEIGHT * (1 + 3 * WIDTH)
    assert bytes((30, 140, 60)) in raw and bytes((200, 40, 40)) in raw  # above and below zero


def test_without_matplotlib_the_plain_chart_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails as if not installed
    path = tmp_path / "gain.png"
    assert write_gain_png(["2026-03-01", "2026-03-02"], [1.0, 3.0], path) is False
    assert path.read_bytes() == plain_chart_png([1.0, 3.0])
