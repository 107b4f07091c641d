"""The console's server side over ASGI: sessions, CSRF, login/logout, the table, events, locations."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from scheduler.api.app import create_app
from scheduler.api.auth import ROUTE_ROLES, Principal, RateLimiter, Role
from scheduler.api.sessions import SESSION_COOKIE, SessionStore
from scheduler.api.wiring import ApiSecurity
from scheduler.config.loading import parse_config
from scheduler.console.hub import ConsoleHub
from scheduler.console.locations import load_locations, parse_locations_csv
from scheduler.console.web import console_routes
from scheduler.core.model import TERA, Sample, Workload
from tests.scheduler.api_fixtures import NOW, ControlledView, Tokens
from tests.scheduler.test_api_security import make_view

TOKENS = Tokens()


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def console_app(view: ControlledView, sessions: SessionStore) -> tuple[Any, ConsoleHub]:
    security = ApiSecurity(
        TOKENS.authenticator(), RateLimiter(per_minute=600.0, burst=100), 4096, sessions=sessions
    )
    hub = ConsoleHub(view, locations={"m1": ("A", 1), "m2": ("A", 2)})
    return create_app(view, security, [console_routes(hub, security)]), hub


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def view(tmp_path: Path) -> ControlledView:
    return make_view(tmp_path)


@pytest.fixture
async def setup(
    view: ControlledView, clock: Clock
) -> AsyncIterator[tuple[httpx.AsyncClient, ConsoleHub]]:
    app, hub = console_app(view, SessionStore(60.0, clock=clock))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=("127.70.0.9", 40000)),
        base_url="http://wattmux.test",
    ) as client:
        yield client, hub


async def log_in(client: httpx.AsyncClient, role: Role) -> dict[str, Any]:
    response = await client.post("/console/login", json={"token": TOKENS.by_role[role]})
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_every_console_route_has_a_rule(view: ControlledView) -> None:
    app, _ = console_app(view, SessionStore())
    routes = {
        (method, route.path)
        for route in app.routes
        if route.path.startswith("/console")
        for method in getattr(route, "methods", None) or ()
        if method != "HEAD"
    }
    assert routes == {rule for rule in ROUTE_ROLES if rule[1].startswith("/console")}
    assert ROUTE_ROLES[("GET", "/console/api/fleet")] is Role.VIEWER
    assert ROUTE_ROLES[("POST", "/console/logout")] is Role.VIEWER


def test_session_store_expires_revokes_and_stays_bounded() -> None:
    clock = Clock()
    store = SessionStore(10.0, max_sessions=2, clock=clock)
    who = Principal("op", Role.OPERATOR)
    first, session = store.create(who)
    assert store.get(first) is session
    assert store.csrf_ok(session, session.csrf) and not store.csrf_ok(session, "x")
    assert not store.csrf_ok(session, "")
    clock.now += 10.0
    assert store.get(first) is None  # expired
    second, _ = store.create(who)
    third, _ = store.create(who)
    fourth, _ = store.create(who)  # the oldest goes
    assert store.get(second) is None and store.get(third) and store.get(fourth)
    assert store.revoke(third) and store.get(third) is None and not store.revoke(third)
    assert store.get("x" * 500) is None


async def test_login_sets_a_strict_http_only_cookie_that_stands_for_the_token(
    setup: tuple[httpx.AsyncClient, ConsoleHub], view: ControlledView
) -> None:
    client, _ = setup
    response = await client.post("/console/login", json={"token": TOKENS.by_role[Role.OPERATOR]})
    assert response.status_code == 200
    cookie = response.headers["set-cookie"]
    assert f"{SESSION_COOKIE}=" in cookie
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # plain HTTP here; see the TLS test below
    assert TOKENS.by_role[Role.OPERATOR] not in cookie
    me = (await client.get("/console/api/me")).json()
    assert me["name"] == "operator-1" and me["role"] == "operator" and me["csrf"]
    assert (await client.get("/v1/summary")).status_code == 200
    assert view.control is not None
    rows = view.control.store.api_audit(limit=5, offset=0)
    assert rows[0].path == "/console/login" and rows[0].result == "console login"


async def test_a_change_with_the_cookie_needs_the_csrf_token(
    setup: tuple[httpx.AsyncClient, ConsoleHub], view: ControlledView
) -> None:
    client, _ = setup
    me = await log_in(client, Role.OPERATOR)
    refused = await client.put("/v1/mode", json={"mode": "manual"})
    assert refused.status_code == 403
    assert refused.json()["detail"] == "missing or wrong CSRF token"
    wrong = await client.put("/v1/mode", json={"mode": "manual"}, headers={"x-csrf-token": "no"})
    assert wrong.status_code == 403
    done = await client.put(
        "/v1/mode", json={"mode": "manual"}, headers={"x-csrf-token": me["csrf"]}
    )
    assert done.status_code == 200 and done.json() == {"mode": "manual"}
    assert view.control is not None
    rows = view.control.store.api_audit(limit=5, offset=0)
    assert rows[0].principal == "operator-1" and rows[0].status_code == 200
    assert rows[1].status_code == 403 and "CSRF" in rows[1].result


async def test_a_viewer_session_cannot_change_anything(
    setup: tuple[httpx.AsyncClient, ConsoleHub],
) -> None:
    client, _ = setup
    me = await log_in(client, Role.VIEWER)
    response = await client.put(
        "/v1/curtail",
        json={"target_kw": 0, "duration_seconds": 60},
        headers={"x-csrf-token": me["csrf"]},
    )
    assert response.status_code == 403
    assert "viewer" in response.json()["detail"]


async def test_wrong_token_gets_401_and_is_audited_then_rate_limited(
    setup: tuple[httpx.AsyncClient, ConsoleHub], view: ControlledView
) -> None:
    client, _ = setup
    statuses = [
        (await client.post("/console/login", json={"token": "wrong"})).status_code
        for _ in range(12)
    ]
    assert statuses[:10] == [401] * 10 and statuses[-1] == 429
    assert SESSION_COOKIE not in client.cookies
    assert (await client.get("/console/api/me")).status_code == 401
    assert view.control is not None
    row = view.control.store.api_audit(limit=1, offset=0)[0]
    assert row.principal == "anonymous" and row.path == "/console/login"


async def test_logout_and_expiry_end_the_session(
    setup: tuple[httpx.AsyncClient, ConsoleHub], clock: Clock
) -> None:
    client, _ = setup
    me = await log_in(client, Role.OPERATOR)
    assert (await client.post("/console/logout")).status_code == 403  # CSRF here too
    out = await client.post("/console/logout", headers={"x-csrf-token": me["csrf"]})
    assert out.status_code == 200
    assert (await client.get("/console/api/me")).status_code == 401
    await log_in(client, Role.OPERATOR)
    assert (await client.get("/console/api/me")).status_code == 200
    clock.now += 61.0
    expired = await client.get("/console/api/me")
    assert expired.status_code == 401 and "expired" in expired.json()["detail"]


async def test_bearer_tokens_keep_working_beside_sessions(
    setup: tuple[httpx.AsyncClient, ConsoleHub],
) -> None:
    client, _ = setup
    response = await client.put(
        "/v1/mode", json={"mode": "paused"}, headers=TOKENS.header(Role.OPERATOR)
    )
    assert response.status_code == 200  # no CSRF needed without a cookie
    assert (await client.get("/console/api/fleet")).status_code == 401  # nor a session


async def test_cookie_is_secure_under_tls(view: ControlledView) -> None:
    app, _ = console_app(view, SessionStore())
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="https://wattmux.test"
    ) as client:
        response = await client.post("/console/login", json={"token": TOKENS.by_role[Role.ADMIN]})
    assert "Secure" in response.headers["set-cookie"]


async def test_page_and_assets_are_compressed_and_locked_down(
    setup: tuple[httpx.AsyncClient, ConsoleHub],
) -> None:
    client, _ = setup
    page = await client.get("/console", headers={"accept-encoding": "gzip"})
    assert page.status_code == 200 and page.headers["content-encoding"] == "gzip"
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert b"/console/static/app.js" in page.content
    script = await client.get("/console/static/app.js")
    again = await client.get(
        "/console/static/app.js", headers={"if-none-match": script.headers["etag"]}
    )
    assert again.status_code == 304
    assert (await client.get("/console/static/nothing.js")).status_code == 404
    outside = await client.get("/console/static/..%2fweb.py")
    assert outside.status_code in (401, 404) and b"import" not in outside.content
    assert (
        "https://" not in script.text and "http://" not in script.text
    )  # nothing fetched from elsewhere


async def test_fleet_table_and_events_carry_changed_rows_only(
    setup: tuple[httpx.AsyncClient, ConsoleHub], view: ControlledView
) -> None:
    client, hub = setup
    await log_in(client, Role.VIEWER)
    response = await client.get("/console/api/fleet", headers={"accept-encoding": "gzip"})
    table = response.json()
    assert len(table["static"]) == 3 and table["static"][0][:2] == ["m1", "S21 Pro"]
    assert table["static"][0][4:6] == ["A", 1] and table["static"][2][4] is None
    state = table["live_columns"].index("state")
    assert [row[state] for row in table["rows"]] == ["mining"] * 3
    assert table["summary"]["counts"]["mining"] == 3
    assert len(gzip.compress(response.content)) < 10_000

    queue = hub.subscribe()
    assert queue is not None
    hub.step(NOW)
    first = json.loads((await queue.get()).split(b"data: ", 1)[1])
    assert "rows" not in first  # nothing changed since the table was read
    view.state.observe(Sample("m2", NOW + 1, Workload.sleep(), 15.0, 0.0, 40.0))
    hub.step(NOW + 1)
    event = json.loads((await queue.get()).split(b"data: ", 1)[1])
    assert [row[0] for row in event["rows"]] == [1]
    assert event["rows"][0][1 + state] == "asleep"
    assert event["summary"]["counts"] == {
        "mining": 2,
        "asleep": 1,
        "ai": 0,
        "off": 0,
        "unreachable": 0,
    }
    hub.step(NOW + 1.5)
    assert queue.empty()  # nothing new: no event
    hub.unsubscribe(queue)


async def test_a_console_that_does_not_keep_up_is_dropped(view: ControlledView) -> None:
    hub = ConsoleHub(view)
    queue = hub.subscribe()
    assert queue is not None
    for step in range(200):
        view.state.observe(
            Sample("m1", NOW + step, Workload.mine("main"), 3000.0 + step, 200 * TERA, 60.0)
        )
        hub.step(NOW + step)
    assert hub.subscribers == 0 and hub.dropped == 1
    events = []
    while not queue.empty():
        events.append(queue.get_nowait())
    assert events[-1] == b""  # the stream's end marker


async def test_event_stream_ends_when_the_hub_stops(
    setup: tuple[httpx.AsyncClient, ConsoleHub],
) -> None:
    client, hub = setup
    await log_in(client, Role.VIEWER)
    stop = asyncio.Event()
    runner = asyncio.create_task(hub.run(stop))
    chunks: list[bytes] = []

    async def read() -> None:
        async with client.stream("GET", "/console/api/events") as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            async for chunk in response.aiter_bytes():
                chunks.append(chunk)

    reader = asyncio.create_task(read())
    for _ in range(100):
        if chunks:
            break
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(asyncio.gather(runner, reader), 5)
    assert b"event: hello" in b"".join(chunks)


def test_locations_from_config_and_csv_with_bad_lines_counted(tmp_path: Path) -> None:
    config = parse_config(
        {
            "site": {"power_cap_kw": 10.0},
            "pools": [{"name": "main", "url": "stratum+tcp://p.invalid:3333", "user": "w"}],
            "devices": [
                {
                    "id": "one",
                    "model": "S21",
                    "address": "127.77.44.90",
                    "pools": ["main"],
                    "location": {"rack": "X1", "position": 4},
                }
            ],
            "device_ranges": [
                {
                    "id_prefix": "r",
                    "model": "S21",
                    "first_address": "127.77.44.100",
                    "count": 5,
                    "pools": ["main"],
                    "location": {"rack": "B", "per_rack": 2},
                }
            ],
        },
        "<t>",
        environ={},
    )
    placed = config.locations()
    assert placed["one"] == ("X1", 4)
    assert [placed[f"r-00{i}"] for i in range(1, 6)] == [
        ("B-01", 1),
        ("B-01", 2),
        ("B-02", 1),
        ("B-02", 2),
        ("B-03", 1),
    ]
    devices = {d.id: d for d in config.all_devices()}
    text = (
        "address,rack,position\n"
        "127.77.44.100,Z9,7\n"
        "127.77.44.101,Z9\n"
        "10.9.9.9,Z9,1\n"
        "127.77.44.102,<script>,1\n"
        "127.77.44.103,Z9,zero\n"
        "\n"
        "127.77.44.104, Z9 , 9\n"
    )
    from_csv, problems = parse_locations_csv(text, devices)
    assert from_csv == {"r-001": ("Z9", 7), "r-005": ("Z9", 9)}
    assert [p.split(":")[0] for p in problems] == ["line 3", "line 4", "line 5", "line 6"]
    path = tmp_path / "racks.csv"
    path.write_text(text)
    merged, named = load_locations(placed, path, devices)
    assert merged["r-001"] == ("Z9", 7) and merged["r-002"] == ("B-01", 2)
    assert len(named) == 4 and named[0].startswith("racks.csv: line 3")
    missing, why = load_locations(placed, tmp_path / "none.csv", devices)
    assert missing == placed and "cannot read" in why[0]


def test_summary_shows_curtail_dr_events_and_overrides_with_who_and_until(
    view: ControlledView,
) -> None:
    from datetime import UTC, datetime, timedelta

    from scheduler.control.service import Actor
    from scheduler.core.model import Event

    now = datetime.now(UTC)
    view.state.set_events(
        [Event("dr-1", now - timedelta(minutes=5), now + timedelta(hours=1), reduction_kw=4.0)]
    )
    assert view.control is not None
    actor = Actor("operator-1", "operator", "127.0.0.1:1", "PUT", "/v1/curtail")
    view.control.set_curtail(8.0, 600, actor)
    view.control.put_override("m3", "sleep", 600, "fan", actor)
    summary = ConsoleHub(view).summary
    # cap 100 kW, curtail 8 kW, DR: nominal full power (3 S21 Pro) less 4 kW: the lowest wins.
    nominal_kw = sum(d.nominal_power_w for d in view.state.devices.values()) / 1000
    assert nominal_kw - 4.0 < 8.0
    assert summary["effective_cap_kw"] == pytest.approx(nominal_kw - 4.0, abs=0.01)
    assert summary["curtail"]["target_kw"] == 8.0 and summary["curtail"]["by"] == "operator-1"
    assert summary["dr_events"][0]["id"] == "dr-1" and summary["dr_events"][0]["active"]
    assert (
        summary["overrides"][0]["device"] == "m3" and summary["overrides"][0]["by"] == "operator-1"
    )
    assert summary["override_count"] == 1


async def test_event_streams_are_bounded_and_refused_once_the_hub_stopped(
    view: ControlledView,
) -> None:
    sessions = SessionStore()
    security = ApiSecurity(
        TOKENS.authenticator(), RateLimiter(per_minute=600.0, burst=100), sessions=sessions
    )
    hub = ConsoleHub(view, max_subscribers=1)
    app = create_app(view, security, [console_routes(hub, security)])
    held = hub.subscribe()
    assert held is not None and hub.subscribe() is None
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://wattmux.test"
    ) as client:
        await log_in(client, Role.VIEWER)
        busy = await client.get("/console/api/events")
        assert busy.status_code == 503 and "too many" in busy.json()["detail"]
        hub.unsubscribe(held)
        hub.close()
        assert (await client.get("/console/api/events")).status_code == 503


def test_history_keeps_one_point_a_step_in_a_bounded_ring(view: ControlledView) -> None:
    hub = ConsoleHub(view, history_step_seconds=60.0, history_seconds=180.0)
    for now in (0.0, 1.0, 59.0, 60.0, 130.0, 200.0, 260.0):
        hub.step(now)  # no console open: the hub still wakes for its history
    body = json.loads(hub.history_body())
    assert body["columns"][:3] == ["t", "site_kw", "cap_kw"]
    assert len(body["points"]) == 3  # 180 s of 60 s steps; the oldest fell out
    assert all(point[1] == pytest.approx(10.5) for point in body["points"])  # 3 x 3.5 kW
