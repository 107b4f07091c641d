"""OpenADR 2.0b against openleadr's own VTN server on a free loopback port: registration, an
event opted in and followed as a site target (once, however often delivered), an event the
site cannot follow opted out, telemetry reports of the metered power, and the audit rows."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from openleadr import OpenADRServer

from drivers.dr.openadr import OpenAdrOptions, parse_event
from drivers.meter.base import MeterReading
from scheduler.config.grid import MeterConfig, SetpointConfig
from scheduler.control.grid import GridControl, grid_audit
from scheduler.core.state import FleetState
from scheduler.store.operator import ControlStore
from tests.conftest import free_port
from tests.scheduler.helpers import device


async def until(predicate: Callable[[], bool], timeout_s: float = 15.0) -> None:
    for _ in range(int(timeout_s / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached in time")


def test_signals_the_site_cannot_follow_are_declined() -> None:
    now = datetime.now(UTC)
    interval = {"dtstart": now, "duration": timedelta(minutes=5), "signal_payload": 2.0}
    event: dict[str, Any] = {
        "event_descriptor": {"event_id": "e", "modification_number": 1},
        "event_signals": [
            {"signal_name": "SIMPLE", "signal_type": "level", "intervals": [interval]}
        ],
    }
    assert parse_event(event, {}) is None  # an unmapped SIMPLE level
    parsed = parse_event(event, {"2": 300.0})
    assert parsed is not None and parsed.id == "e:1" and parsed.intervals[0].kw == 300.0
    event["event_signals"][0]["signal_name"] = "ELECTRICITY_PRICE"
    assert parse_event(event, {"2": 300.0}) is None


@pytest.mark.system
async def test_a_ven_registers_follows_an_event_opts_out_of_another_and_reports(
    tmp_path: Path,
) -> None:
    port = free_port()
    responses: list[tuple[str, str, str]] = []
    reports: list[Any] = []
    server = OpenADRServer(
        vtn_id="vtn",
        http_port=port,
        http_host="127.0.0.1",
        requested_poll_freq=timedelta(seconds=1),
        verify_message_signatures=False,
        show_fingerprint=False,
    )

    async def register(info: dict[str, Any]) -> tuple[str, str]:
        return "ven-site", "reg-1"

    async def on_report(data: Any) -> None:
        reports.append(data)

    async def register_report(
        ven_id: str,
        resource_id: str,
        measurement: str,
        unit: str,
        scale: str,
        min_sampling_interval: timedelta,
        max_sampling_interval: timedelta,
    ) -> tuple[Any, timedelta]:
        return on_report, min_sampling_interval

    server.add_handler("on_create_party_registration", register)
    server.add_handler("on_register_report", register_report)
    await server.run()
    store = ControlStore.open(tmp_path / "w.sqlite")
    meter = MeterConfig(
        source="http", url="http://127.0.0.1:9/", poll_seconds=300, stale_seconds=3600
    )
    grid = GridControl(meter, SetpointConfig(), FleetState([device("m1")]))
    assert grid.meter is not None
    grid.meter.latest = MeterReading(612_000.0, grid.clock())  # what the VEN reports
    grid.audit, grid.note = grid_audit(store)
    options = OpenAdrOptions(
        vtn_url=f"http://127.0.0.1:{port}/OpenADR2/Simple/2.0b", ven_name="site", report_seconds=1
    )
    ven = grid.attach_openadr(options)
    try:
        async with grid:
            await until(lambda: ven.registration_id is not None)
            now = datetime.now(UTC)

            def respond(ven_id: str, event_id: str, opt_type: str) -> None:
                responses.append((ven_id, event_id, opt_type))

            dispatch = server.add_event(
                ven_id="ven-site",
                signal_name="LOAD_DISPATCH",
                signal_type="setpoint",
                intervals=[
                    {"dtstart": now, "duration": timedelta(minutes=10), "signal_payload": 450.0}
                ],
                callback=respond,
            )
            price = server.add_event(
                ven_id="ven-site",
                signal_name="ELECTRICITY_PRICE",
                signal_type="price",
                intervals=[
                    {"dtstart": now, "duration": timedelta(minutes=10), "signal_payload": 90.0}
                ],
                callback=respond,
            )
            await until(lambda: len(responses) >= 2 and bool(reports))
            await asyncio.sleep(2.5)  # more polls: the VTN redelivers, the site acts once
    finally:
        await server.stop()
    assert sorted((e, o) for _, e, o in responses) == sorted(
        [(dispatch, "optIn"), (price, "optOut")]
    )
    target = grid.setpoint.target
    assert target is not None and target.kw == 450.0 and target.source == "openadr"
    assert target.id.startswith(f"openadr:{dispatch}:0#")
    assert [t.source for t in grid.setpoint.history] == ["openadr"]  # acted once
    assert target.until is not None  # held for the interval's duration
    assert grid.counts[("openadr", "opt_in")] == 1 and grid.counts[("openadr", "opt_out")] >= 1
    results = [row.result for row in store.api_audit(limit=50)]
    assert any(r.startswith(f"openadr: {dispatch}:0: optIn") for r in results)
    assert any(r.startswith(f"openadr: {price}:0: optOut") for r in results)
    assert "openadr: accepted" in results
    values = [value for report in reports for _, value in report]
    assert values and set(values) == {612_000.0}
    store.close()
