"""OpenADR 3.0.1 VEN against a VTN double built from the 3.0.1 OpenAPI document
(tests/scheduler/vtn3_double.py), on free loopback ports: client-credentials
auth and registration, a subscription whose notifications and the polls both
deliver an event (acted on once), a modified event re-applied, a deleted event
released, reports of the metered power received by the VTN, and hostile replies
(oversized, malformed, too deep, a broken event) refused and counted while the
VEN goes on."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from drivers.dr.openadr import DispatchEvent, DispatchInterval
from drivers.dr.openadr3 import OpenAdr3Options, OpenAdr3Ven, Vtn3Error, legacy_raw, parse_event3
from drivers.meter.base import MeterReading
from scheduler.api.app import create_app
from scheduler.api.auth import RateLimiter
from scheduler.api.grid import grid_routes
from scheduler.api.wiring import ApiSecurity
from scheduler.config.grid import MeterConfig, SetpointConfig
from scheduler.control.grid import GridControl, grid_audit
from scheduler.core.state import FleetState
from scheduler.observability.metrics import Metrics
from scheduler.store.operator import ControlStore
from tests.scheduler.api_fixtures import ControlledView, Tokens, make_control, small_config
from tests.scheduler.helpers import device
from tests.scheduler.vtn3_double import Vtn3Double, serve


async def until(predicate: Callable[[], bool], timeout_s: float = 15.0) -> None:
    for _ in range(int(timeout_s / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached in time")


def stamp(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def capacity_event(program_id: str, kw: float, *, units: str = "KW") -> dict[str, Any]:
    start = datetime.now(UTC) - timedelta(seconds=1)
    return {
        "programID": program_id,
        "eventName": "curtail",
        "payloadDescriptors": [
            {
                "objectType": "EVENT_PAYLOAD_DESCRIPTOR",
                "payloadType": "IMPORT_CAPACITY_LIMIT",
                "units": units,
            }
        ],
        "intervalPeriod": {"start": stamp(start), "duration": "PT10M"},
        "intervals": [{"id": 0, "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [kw]}]}],
    }


def test_event_payloads_become_site_targets_or_are_refused() -> None:
    event: dict[str, Any] = {
        "id": "e1",
        "modificationDateTime": "2026-01-01T00:00:00Z",
        **capacity_event("p1", 1.5, units="MW"),
    }
    parsed = parse_event3(event, {})
    assert parsed.dispatch is not None and parsed.dispatch.intervals[0].kw == 1500.0
    assert parsed.dispatch.id == "e1:2026-01-01T00:00:00+00:00"
    event["intervals"][0]["payloads"] = [{"type": "SIMPLE", "values": [2]}]
    assert parse_event3(event, {}).dispatch is None  # an unmapped SIMPLE level
    simple = parse_event3(event, {"2": 300.0}).dispatch
    assert simple is not None and simple.intervals[0].kw == 300.0
    event["intervals"][0]["payloads"] = [{"type": "PRICE", "values": [0.17]}]
    assert parse_event3(event, {}).dispatch is None  # not a signal the site follows
    # intervals without their own period follow one another from the event's
    event["intervals"] = [
        {"id": i, "payloads": [{"type": "DISPATCH_SETPOINT", "values": [100.0 * (i + 1)]}]}
        for i in range(3)
    ]
    three = parse_event3(event, {}).dispatch
    assert three is not None
    assert [i.start - three.intervals[0].start for i in three.intervals] == [
        timedelta(0),
        timedelta(minutes=10),
        timedelta(minutes=20),
    ]
    for broken in (
        {**event, "id": "../x"},
        {**event, "intervals": "no"},
        {**event, "intervalPeriod": {"start": "yesterday"}},
        {
            **event,
            "intervals": [{"id": 0, "payloads": [{"type": "DISPATCH_SETPOINT", "values": ["x"]}]}],
        },
        [],
    ):
        with pytest.raises(Vtn3Error):
            parse_event3(broken, {})
    with pytest.raises(Vtn3Error, match="more than 2 intervals"):
        parse_event3(event, {}, max_intervals=2)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
FIELDS = (
    "id",
    "programID",
    "modificationDateTime",
    "payloadDescriptors",
    "intervalPeriod",
    "intervals",
)


@settings(max_examples=300, deadline=None)
@given(
    field=st.sampled_from(FIELDS),
    value=JSON,
    where=st.sampled_from(["event", "interval", "payload"]),
)
def test_any_value_anywhere_is_parsed_or_refused_with_a_vtn3_error(
    field: str, value: Any, where: str
) -> None:
    event: dict[str, Any] = {"id": "e1", **capacity_event("p1", 100.0)}
    if where == "event":
        event[field] = value
    elif where == "interval":
        event["intervals"][0][field if field != "id" else "intervalPeriod"] = value
    else:
        event["intervals"][0]["payloads"][0]["values"] = [value]
    try:
        parse_event3(event, {"1": 10.0})
    except Vtn3Error as exc:
        assert "\n" not in exc.message


def test_options_take_one_kind_of_credentials() -> None:
    base = {"vtn_url": "https://vtn.example/openadr3/3.0.1", "ven_name": "site", "programs": ["p"]}
    with pytest.raises(ValidationError, match="go together"):
        OpenAdr3Options.model_validate({**base, "client_id": "c"})
    with pytest.raises(ValidationError, match="needs a callback_token"):
        OpenAdr3Options.model_validate({**base, "callback_url": "https://site/cb"})
    with pytest.raises(ValidationError, match="16 or more"):
        OpenAdr3Options.model_validate({**base, "callback_token": "short"})
    with pytest.raises(ValidationError, match="not both"):
        OpenAdr3Options.model_validate(
            {**base, "client_id": "c", "client_secret": "s", "bearer_token": "t"}
        )
    shown = OpenAdr3Options.model_validate(
        {**base, "vtn_url": "https://u:pw@vtn.example/", "client_id": "c", "client_secret": "s"}
    ).model_dump_json()
    assert "pw" not in shown and '"s"' not in shown


def make_grid(tmp_path: Path) -> tuple[GridControl, ControlStore]:
    store = ControlStore.open(tmp_path / "w.sqlite")
    meter = MeterConfig(
        source="http", url="http://127.0.0.1:9/", poll_seconds=300, stale_seconds=3600
    )
    grid = GridControl(meter, SetpointConfig(), FleetState([device("m1")]))
    assert grid.meter is not None
    grid.meter.latest = MeterReading(612_000.0, grid.clock())  # what the VEN reports
    grid.audit, grid.note = grid_audit(store)
    return grid, store


def api_of(tmp_path: Path, grid: GridControl, store: ControlStore) -> Any:
    """The daemon's API app with the site power routes (the notification route among them)."""
    config = small_config(tmp_path)
    view = ControlledView(grid.state, Metrics(grid.state), config, make_control(store, grid.state))
    security = ApiSecurity(Tokens().authenticator(), RateLimiter(per_minute=600, burst=100), 65536)
    return create_app(view, security, [grid_routes(grid, view, None)])


@pytest.mark.system
async def test_a_ven_registers_follows_an_event_once_reapplies_a_change_and_releases(
    tmp_path: Path,
) -> None:
    grid, store = make_grid(tmp_path)
    async with Vtn3Double() as vtn:
        program = vtn.add_program("ercot-lr")
        vtn.add_program("other")
        api_url, api, api_task = await serve(api_of(tmp_path, grid, store))
        callback_url = f"{api_url}/v1/signals/openadr3"
        options = OpenAdr3Options(
            vtn_url=vtn.url,
            ven_name="site-1",
            programs=["ercot-lr"],
            client_id="ven-client",
            client_secret="ven-secret",
            callback_url=callback_url,
            callback_token="callback-secret-123",
            poll_seconds=1,
            report_seconds=1,
        )
        ven = grid.attach_openadr3(options)
        try:
            async with grid:
                await until(lambda: bool(vtn.subscriptions) and ven.counts.get("poll", 0) >= 1)
                assert [v["venName"] for v in vtn.vens] == ["site-1"] and ven.ven_id
                assert ven.program_ids == {"ercot-lr": program}
                assert vtn.token_requests == 1
                sub = vtn.subscriptions[0]
                assert sub["programID"] == program and sub["clientName"] == "site-1"
                assert sub["objectOperations"][0]["callbackUrl"] == callback_url

                # a token the VTN no longer honours: a fresh one, and the VEN goes on
                vtn.tokens.clear()
                await until(lambda: vtn.token_requests == 2)
                polls = ven.counts["poll"]
                await until(lambda: ven.counts["poll"] > polls)
                assert vtn.token_requests == 2 and ven.counts.get("failed", 0) == 0

                # delivered by the notification and again by every poll: acted on once
                good = "Bearer callback-secret-123"
                event = await vtn.put_event(capacity_event(program, 450.0))
                assert vtn.notified == [204]  # through the daemon's API, at once
                await until(lambda: grid.setpoint.target is not None)
                polls = ven.counts["poll"]  # polls the VEN has finished
                await until(lambda: ven.counts["poll"] >= polls + 2)
                target = grid.setpoint.target
                assert target is not None and target.kw == 450.0 and target.source == "openadr"
                assert target.id.startswith(f"openadr:{event['id']}:")
                assert [t.kw for t in grid.setpoint.history] == [450.0]
                assert ven.counts["repeated"] >= 2

                await until(lambda: bool(vtn.reports))
                report = vtn.reports[0]
                assert report["eventID"] == event["id"] and report["programID"] == program
                payloads = report["resources"][0]["intervals"][0]["payloads"]
                assert {"type": "DEMAND", "values": [612.0]} in payloads
                assert {p["type"] for p in payloads} == {"DEMAND", "USAGE"}

                # a modification (new modificationDateTime) acts again
                await asyncio.sleep(0.01)
                await vtn.put_event({**event, **capacity_event(program, 300.0)})
                await until(
                    lambda: grid.setpoint.target is not None and grid.setpoint.target.kw == 300.0
                )
                assert [t.kw for t in grid.setpoint.history] == [450.0, 300.0]

                # deleted: the target is released
                await vtn.delete_event(event["id"])
                await until(lambda: grid.setpoint.target is None)
                assert ven.counts["released"] == 1
                polls = ven.counts["poll"]  # polls the VEN has finished
                await until(lambda: ven.counts["poll"] >= polls + 2)
                assert grid.setpoint.target is None and ven.followed == {}

                # a notification without the callback's bearer token is refused
                async with httpx.AsyncClient() as http:
                    wrong = {"authorization": "Bearer wrong"}
                    reply = await http.post(callback_url, json={}, headers=wrong)
                    assert reply.status_code == 401
                    reply = await http.post(
                        callback_url, content=b"[" * 100, headers={"authorization": good}
                    )
                    assert reply.status_code == 422 and "nested" in reply.json()["detail"]
                with pytest.raises(Vtn3Error, match="bearer token"):
                    await ven.notification(b"{}", "Bearer wrong")
        finally:
            api.should_exit = True
            await api_task
    assert grid.counts[("openadr", "opt_in")] == 3  # 450, 300, the release
    assert grid.counts[("openadr", "invalid")] == 3  # two without the token, one too deep
    results = [row.result for row in store.api_audit(limit=100)]
    assert any(r.startswith(f"openadr: {event['id']}:") and "optIn" in r for r in results)
    assert "openadr: accepted" in results
    store.close()


@pytest.mark.system
async def test_hostile_replies_are_refused_and_counted_and_the_ven_goes_on(
    tmp_path: Path,
) -> None:
    grid, store = make_grid(tmp_path)
    async with Vtn3Double() as vtn:
        vtn.tokens.add("fixed-token")  # a bearer token provisioned out of band
        options = OpenAdr3Options(
            vtn_url=vtn.url,
            ven_name="site-2",
            programs=["ercot-lr"],
            bearer_token="fixed-token",
            poll_seconds=1,
            max_reply_bytes=64 * 1024,
        )
        ven = grid.attach_openadr3(options)
        async with grid:
            # the program is not there yet: a failure, retried, not an invalid signal
            await until(lambda: ven.counts.get("failed", 0) >= 1)
            assert ven.last_error == "GET /programs: no program named ercot-lr"
            program = vtn.add_program("ercot-lr")
            await until(lambda: ven.counts.get("poll", 0) >= 1)
            assert vtn.token_requests == 0 and ("openadr", "invalid") not in grid.counts
            for hostile, reason in (
                ("oversized", "more than 65536"),
                ("chunked", "larger than 65536"),
                ("malformed", "not JSON"),
                ("deep", "nested more than"),
            ):
                vtn.hostile = hostile
                await until(lambda r=reason: r in (ven.last_error or ""))
                assert ven.last_error is not None and "\n" not in ven.last_error
            # a VTN in trouble is a failure, retried: not an invalid signal
            vtn.hostile = "error"
            await until(lambda: "HTTP 500" in (ven.last_error or ""))
            invalid = grid.counts[("openadr", "invalid")]
            failed = ven.counts["failed"]
            await until(lambda: ven.counts["failed"] > failed)
            assert ven.last_error == (
                f"GET /events?programID={program}: HTTP 500 Internal Server Error"
            )
            assert grid.counts[("openadr", "invalid")] == invalid
            vtn.hostile = None
            broken = {"id": "event-broken", "programID": program, "intervals": "none"}
            vtn.events["event-broken"] = broken
            await vtn.put_event(capacity_event(program, 500.0))
            await until(lambda: grid.setpoint.target is not None)
            target = grid.setpoint.target
            assert target is not None and target.kw == 500.0  # the daemon went on
            assert "event-broken: intervals is not a list" in (ven.last_error or "")
    assert grid.counts[("openadr", "invalid")] >= 4
    assert [t.kw for t in grid.setpoint.history] == [500.0]
    registry = CollectorRegistry()
    grid.register(registry)
    assert (
        registry.get_sample_value("wattmux_openadr3_ven_total", {"outcome": "failed"}) or 0
    ) >= 1
    assert (
        registry.get_sample_value("wattmux_openadr3_ven_total", {"outcome": "refused"}) or 0
    ) >= 4
    results = [row.result for row in store.api_audit(limit=100)]
    assert any("3.0 reply refused" in r and "not JSON" in r for r in results)
    store.close()


async def test_a_modified_event_drops_the_intervals_of_its_earlier_version() -> None:
    grid = GridControl(None, SetpointConfig(), FleetState([device("m1")]))
    now = datetime.now(UTC)
    later = DispatchInterval(now + timedelta(seconds=0.3), timedelta(minutes=5), 450.0)
    first = DispatchEvent("e:1", "e", "active", (later,))
    assert await grid.openadr_event(first, legacy_raw("e", "1"))
    at_once = DispatchInterval(now - timedelta(seconds=1), timedelta(minutes=5), 300.0)
    second = DispatchEvent("e:2", "e", "active", (at_once,))
    assert await grid.openadr_event(second, legacy_raw("e", "2"))
    await asyncio.sleep(0.6)  # past the first version's start
    assert [t.kw for t in grid.setpoint.history] == [300.0]


async def test_the_notification_route_needs_a_ven_and_its_bearer_token(tmp_path: Path) -> None:
    grid, store = make_grid(tmp_path)
    app = api_of(tmp_path, grid, store)
    transport = httpx.ASGITransport(app=app, client=("127.70.0.9", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://wattmux.test") as http:
        assert (await http.post("/v1/signals/openadr3", json={})).status_code == 404
        grid.attach_openadr3(
            OpenAdr3Options(
                vtn_url="http://127.0.0.1:9/openadr3/3.0.1",
                ven_name="site",
                programs=["p"],
                bearer_token="t",
                callback_token="right-and-long-enough",
            )
        )
        assert (await http.post("/v1/signals/openadr3", json={})).status_code == 401
        reply = await http.post(
            "/v1/signals/openadr3",
            json={"objectType": "PROGRAM"},
            headers={"authorization": "Bearer right-and-long-enough"},
        )
        assert reply.status_code == 422 and "not an EVENT notification" in reply.json()["detail"]
    assert grid.counts[("openadr", "invalid")] == 3
    rows = [row.result for row in store.api_audit(limit=10)]
    assert "rejected: no [openadr3]" in rows and "rejected: bearer token" in rows
    assert grid.openadr3 is not None
    await grid.openadr3.__aexit__()
    store.close()


async def test_a_listing_older_than_a_deletion_does_not_bring_the_event_back() -> None:
    calls: list[str] = []

    async def on_event(dispatch: DispatchEvent | None, raw: dict[str, Any]) -> bool:
        calls.append(dispatch.status if dispatch is not None else "none")
        return True

    options = OpenAdr3Options(
        vtn_url="http://127.0.0.1:9/", ven_name="site", programs=["p"], bearer_token="t"
    )
    ven = OpenAdr3Ven(options, on_event, lambda: None)
    event = parse_event3({"id": "e1", **capacity_event("p1", 100.0)}, {})
    await ven._handle(event)  # polled
    await ven._release("e1")  # a DELETE notification
    await ven._handle(event)  # a poll that listed the event before it was deleted
    assert calls == ["active", "cancelled"] and ven.followed == {}
    await ven.__aexit__()
