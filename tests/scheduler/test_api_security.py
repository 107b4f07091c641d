"""API security: the whole route x role matrix, tokens, body bounds, validation, rate limit, audit."""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute

from drivers.asic.config import AntminerOptions, CgminerOptions, WhatsminerOptions
from scheduler.api import auth
from scheduler.api.auth import ROUTE_ROLES, Authenticator, RateLimiter, Role, hash_token, new_token
from scheduler.api.grid import GRID_RULES
from scheduler.control.accounting import Accountant
from scheduler.control.device_actions import Action, ActionRequest, MaintenanceRunner
from scheduler.control.maintenance import MaintenanceWindows
from scheduler.control.service import Actor
from scheduler.core.model import TERA, Sample, Workload
from scheduler.core.state import FleetState
from scheduler.observability.metrics import Metrics
from scheduler.reload import Reloader
from scheduler.store.operator import ControlStore
from tests.scheduler.api_fixtures import (
    NOW,
    ControlledView,
    Tokens,
    build_app,
    make_control,
    small_config,
    small_config_file,
)

TOKENS = Tokens()


def make_view(tmp_path: Path) -> ControlledView:
    config = small_config(tmp_path)
    state = FleetState(config.all_devices())
    for device_id in state.devices:
        state.observe(Sample(device_id, NOW, Workload.mine("main"), 3500.0, 234 * TERA, 60.0))
    store = ControlStore.open(config.store.path)
    view = ControlledView(
        state=state,
        metrics=Metrics(state, clock=lambda: NOW),
        config=config,
        control=make_control(store, state),
        maintenance=MaintenanceWindows(store, state.devices, config.locations),
        accounting=Accountant(state, store),
    )
    view.reloader = Reloader(
        view,
        small_config_file(tmp_path),
        drivers_for=lambda _config: {},
        telemetry={},
        controls={},
        rebuild_policy=lambda _config: None,
        store=store,
        replace_tokens=lambda _config: None,
    )
    return view


@pytest.fixture
def view(tmp_path: Path) -> ControlledView:
    return make_view(tmp_path)


def client_for(app: Any, headers: dict[str, str] | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=("127.70.0.9", 40000)),
        base_url="http://wattmux.test",
        headers=headers or {},
    )


@pytest.fixture
async def admin(view: ControlledView) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(build_app(view, TOKENS), TOKENS.header(Role.ADMIN)) as client:
        yield client


# --- the route x role matrix, over the routes the app really has -------------------------------

APP_ROUTES = sorted(
    (method, route.path)
    for route in build_app(
        make_view(Path(tempfile.mkdtemp(prefix="wattmux-matrix-"))), TOKENS
    ).routes
    if isinstance(route, APIRoute) or route.path == "/openapi.json"
    for method in (getattr(route, "methods", None) or {"GET"})
    if method != "HEAD"
)
CALLERS = ["none", "bad", "viewer", "operator", "admin"]
VALID_BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("PUT", "/v1/overrides/{device_id}"): {"workload": "sleep", "duration_seconds": 60},
    ("PUT", "/v1/mode"): {"mode": "manual"},
    ("PUT", "/v1/curtail"): {"target_kw": 50, "duration_seconds": 60},
    ("PUT", "/v1/policy"): {"name": "breakeven"},
    ("PUT", "/v1/maintenance/{target}"): {"duration_seconds": 60, "note": "fans"},
    ("POST", "/v1/device-actions"): {"action": "locate", "devices": ["m1"]},
}
ACCEPTED = {("POST", "/v1/device-actions")}  # answers 202: the job runs on

VALID_PARAMS: dict[tuple[str, str], dict[str, Any]] = {
    ("GET", "/v1/demand-response/preview"): {"reduction_kw": 5.0},
    ("GET", "/v1/reports"): {"from": "2026-03-01", "to": "2026-03-02"},
}


def concrete(path: str) -> str:
    return path.replace("{device_id}", "m1").replace("{target}", "m1").replace("{job_id}", "1")


def test_every_route_of_the_app_has_a_rule() -> None:
    assert APP_ROUTES, "no routes found"
    assert {r for r in APP_ROUTES} <= set(ROUTE_ROLES)
    console = {rule for rule in ROUTE_ROLES if rule[1].startswith("/console")}  # test_console_api
    grid = set(GRID_RULES)  # the site power extension: tests/scheduler/test_grid_api.py
    assert set(ROUTE_ROLES) - console - grid <= set(APP_ROUTES), (
        "a rule for a route the app does not have"
    )


def test_a_route_without_a_rule_refuses_to_build(
    view: ControlledView, monkeypatch: pytest.MonkeyPatch
) -> None:
    reduced = {k: v for k, v in ROUTE_ROLES.items() if k != ("PUT", "/v1/mode")}
    monkeypatch.setattr("scheduler.api.wiring.ROUTE_ROLES", reduced)
    with pytest.raises(RuntimeError, match=re.escape("PUT /v1/mode")):
        build_app(view, TOKENS)


@pytest.mark.slow
@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize(("method", "path"), APP_ROUTES)
async def test_route_role_matrix(view: ControlledView, method: str, path: str, caller: str) -> None:
    needed = ROUTE_ROLES[(method, path)]
    headers: dict[str, str] = {}
    if caller == "bad":
        headers = {"authorization": f"Bearer {new_token()}"}
    elif caller != "none":
        headers = TOKENS.header(Role.parse(caller))
    assert view.control is not None
    setup = Actor("setup", "admin", "test", "PUT", path)
    view.control.put_override("m1", "sleep", 60.0, "", setup)
    view.control.set_curtail(10.0, 60.0, setup)
    await view.maintenance.open("m1", 60.0, "", setup)
    runner = MaintenanceRunner(view.state.devices, {}, {})  # no driver: "unsupported" at once
    await runner.run(ActionRequest(Action.LOCATE, ("m1",)), "setup")  # job 1
    view.device_actions = runner  # type: ignore[attr-defined]
    app = build_app(view, TOKENS)
    async with client_for(app, headers) as client:
        body = VALID_BODIES.get((method, path))
        params = VALID_PARAMS.get((method, path))
        response = await client.request(method, concrete(path), json=body, params=params)
    if needed is None:
        assert response.status_code == 200
        return
    if caller in ("none", "bad"):
        assert response.status_code == 401, response.text
        assert response.headers["www-authenticate"].startswith("Bearer")
        return
    role = Role.parse(caller)
    if role < needed:
        assert response.status_code == 403, response.text
        assert needed.label in response.json()["detail"]
    else:
        expected = 202 if (method, path) in ACCEPTED else 200
        assert response.status_code == expected, response.text


async def test_no_token_gets_401_even_with_a_broken_body(view: ControlledView) -> None:
    async with client_for(build_app(view, TOKENS)) as client:
        response = await client.put(
            "/v1/mode", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert response.status_code == 401
        assert (await client.get("/nowhere")).status_code == 401
        assert (await client.get("/healthz")).status_code == 200


async def test_viewer_gets_403_on_every_mutation_and_nothing_changes(view: ControlledView) -> None:
    async with client_for(build_app(view, TOKENS), TOKENS.header(Role.VIEWER)) as client:
        for (method, path), body in VALID_BODIES.items():
            response = await client.request(method, concrete(path), json=body)
            assert response.status_code == 403
    assert view.control is not None
    assert view.control.mode == "auto" and view.control.overrides() == []
    assert view.control.curtail() is None


async def test_malformed_authorization_headers(view: ControlledView) -> None:
    async with client_for(build_app(view, TOKENS)) as client:
        token = TOKENS.by_role[Role.ADMIN]
        for header in (
            token,
            f"Basic {token}",
            "Bearer ",
            f"Bearer {token}x",
            "Bearer \u00e9".encode("latin-1"),
        ):
            response = await client.get("/v1/devices", headers={"authorization": header})
            assert response.status_code == 401, header


# --- tokens ---------------------------------------------------------------------------------


def test_tokens_carry_256_bits_and_are_stored_hashed() -> None:
    tokens = {new_token() for _ in range(50)}
    assert len(tokens) == 50
    for token in tokens:
        assert len(token) >= 43  # 32 bytes in URL-safe base64
        stored = hash_token(token)
        assert re.fullmatch(r"sha256:[0-9a-f]{64}", stored)
        assert token not in stored
    with pytest.raises(ValueError, match="sha256"):
        Authenticator([auth.TokenEntry("x", Role.ADMIN, "plaintext-token")])


# --- bodies -------------------------------------------------------------------------------


async def test_unknown_fields_are_rejected(admin: httpx.AsyncClient, view: ControlledView) -> None:
    response = await admin.put("/v1/mode", json={"mode": "manual", "force": True})
    assert response.status_code == 422
    assert "force" in response.text
    assert view.control is not None and view.control.mode == "auto"


async def test_oversized_body_gets_413(admin: httpx.AsyncClient) -> None:
    big = {"workload": "sleep", "duration_seconds": 60, "note": "x" * 10_000}
    response = await admin.put("/v1/overrides/m1", json=big)
    assert response.status_code == 413


async def test_oversized_chunked_body_gets_413(admin: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b" " * 1000

    response = await admin.put(
        "/v1/mode", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413


@pytest.mark.parametrize(
    "body",
    [
        {"workload": "mine(nowhere)", "duration_seconds": 60},
        {"workload": "ai(q)", "duration_seconds": 60},
        {"workload": "sleep", "duration_seconds": 0},
        {"workload": "sleep", "duration_seconds": 10 * 24 * 3600},
        {"workload": "explode", "duration_seconds": 60},
        {"workload": "sleep"},
    ],
)
async def test_invalid_overrides_are_422_and_change_nothing(
    admin: httpx.AsyncClient, view: ControlledView, body: dict[str, Any]
) -> None:
    response = await admin.put("/v1/overrides/m1", json=body)
    assert response.status_code == 422, response.text
    assert view.control is not None and view.control.overrides() == []


async def test_unknown_device_is_404(admin: httpx.AsyncClient) -> None:
    response = await admin.put(
        "/v1/overrides/nope", json={"workload": "sleep", "duration_seconds": 5}
    )
    assert response.status_code == 404
    assert (await admin.delete("/v1/overrides/m1")).status_code == 404


# --- rate limit ---------------------------------------------------------------------------


async def test_mutations_are_rate_limited_per_token(view: ControlledView) -> None:
    now = [0.0]
    app = build_app(view, TOKENS, per_minute=60.0, burst=3, clock=lambda: now[0])
    async with client_for(app, TOKENS.header(Role.OPERATOR)) as client:
        codes = [
            (await client.put("/v1/mode", json={"mode": "auto"})).status_code for _ in range(5)
        ]
        assert codes == [200, 200, 200, 429, 429]
        limited = await client.put("/v1/mode", json={"mode": "auto"})
        assert int(limited.headers["retry-after"]) >= 1
        # reads are not limited
        for _ in range(10):
            assert (await client.get("/v1/mode")).status_code == 200
        # another token has its own bucket
        other = await client.put(
            "/v1/mode", json={"mode": "auto"}, headers=TOKENS.header(Role.ADMIN)
        )
        assert other.status_code == 200
        now[0] += 1.0  # one more per second at 60/min
        assert (await client.put("/v1/mode", json={"mode": "auto"})).status_code == 200
        assert (await client.put("/v1/mode", json={"mode": "auto"})).status_code == 429


def test_rate_limiter_refills_to_burst() -> None:
    now = [0.0]
    limiter = RateLimiter(per_minute=6.0, burst=2, clock=lambda: now[0])
    assert [limiter.take("a") for _ in range(2)] == [0.0, 0.0]
    assert limiter.take("a") == pytest.approx(10.0)
    now[0] = 1000.0
    assert [limiter.take("a") == 0.0 for _ in range(3)] == [True, True, False]


# --- audit --------------------------------------------------------------------------------


async def test_every_mutation_is_audited_before_the_reply(
    admin: httpx.AsyncClient, view: ControlledView
) -> None:
    assert view.control is not None
    store = view.control.store
    response = await admin.put(
        "/v1/overrides/m2", json={"workload": "sleep", "duration_seconds": 3600, "note": "fan"}
    )
    assert response.status_code == 200
    # a second connection to the file sees the row: it was committed before the reply
    with ControlStore.open(view.config.store.path) as other:
        [row] = other.api_audit()
        [override] = other.overrides()
    assert row.principal == "admin-1" and row.role == "admin"
    assert row.remote == "127.70.0.9:40000"
    assert (row.method, row.path, row.result, row.status_code) == (
        "PUT",
        "/v1/overrides/m2",
        "ok",
        200,
    )
    assert row.before == "null"
    assert json.loads(row.after)["workload"] == "sleep"
    assert override.workload == Workload.sleep() and override.note == "fan"

    await admin.put("/v1/mode", json={"mode": "dry-run"})
    [mode_row, _] = store.api_audit()
    assert (json.loads(mode_row.before), json.loads(mode_row.after)) == ("auto", "dry-run")


async def test_refused_mutations_are_audited_too(view: ControlledView) -> None:
    assert view.control is not None
    app = build_app(view, TOKENS)
    async with client_for(app) as anonymous:
        await anonymous.put("/v1/mode", json={"mode": "paused"})
    async with client_for(app, TOKENS.header(Role.VIEWER)) as viewer:
        await viewer.put("/v1/mode", json={"mode": "paused"})
    async with client_for(app, TOKENS.header(Role.OPERATOR)) as operator:
        await operator.put("/v1/mode", json={"mode": "nonsense"})
        await operator.delete("/v1/curtail")
        await operator.get("/v1/mode")  # reads are not audited
    rows = list(reversed(view.control.store.api_audit()))
    assert [(r.principal, r.status_code) for r in rows] == [
        ("anonymous", 401),
        ("viewer-1", 403),
        ("operator-1", 422),
        ("operator-1", 404),
    ]
    assert all(r.result.startswith("rejected") for r in rows)
    audit = (await client_for(app, TOKENS.header(Role.VIEWER)).get("/v1/audit?limit=2")).json()
    assert [i["status_code"] for i in audit["items"]] == [404, 422]
    assert audit["next_offset"] == 2


# --- no route lifts a cap ------------------------------------------------------------------


async def test_curtail_never_lifts_the_site_cap(admin: httpx.AsyncClient) -> None:
    response = await admin.put("/v1/curtail", json={"target_kw": 5000, "duration_seconds": 60})
    assert response.status_code == 200
    body = response.json()
    assert body["site_power_cap_kw"] == 100.0 and body["effective_cap_kw"] == 100.0
    lowered = await admin.put("/v1/curtail", json={"target_kw": 40, "duration_seconds": 60})
    assert lowered.json()["effective_cap_kw"] == 40.0


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/curtail", {"target_kw": 50, "duration_seconds": 60, "power_cap_kw": 1e6}),
        (
            "/v1/overrides/m1",
            {"workload": "sleep", "duration_seconds": 60, "max_temperature_c": 200},
        ),
        ("/v1/mode", {"mode": "auto", "guard": {"thermal": False}}),
        ("/v1/policy", {"name": "breakeven", "power_cap_kw": 1e6}),
    ],
)
async def test_no_body_can_carry_a_cap_or_a_limit(
    admin: httpx.AsyncClient, path: str, body: dict[str, Any]
) -> None:
    assert (await admin.put(path, json=body)).status_code == 422
    config = (await admin.get("/v1/config")).json()
    assert config["site"]["power_cap_kw"] == 100.0


def test_no_route_takes_a_cap_or_a_limit_in_its_schema() -> None:
    app = build_app(make_view(Path(tempfile.mkdtemp(prefix="wattmux-matrix-"))), TOKENS)
    text = json.dumps(app.openapi()["components"]["schemas"])
    for name in ("OverrideRequest", "ModeRequest", "CurtailRequest", "PolicyRequest"):
        properties = app.openapi()["components"]["schemas"][name]["properties"]
        assert not {p for p in properties if "cap" in p or "temperature" in p or "thermal" in p}
    assert "guard" not in text.lower()


async def test_config_route_hides_secrets(view: ControlledView, tmp_path: Path) -> None:
    view.config = small_config(
        tmp_path, tokens=[{"name": "ops", "role": "operator", "sha256": hash_token("t")}]
    )
    async with client_for(build_app(view, TOKENS), TOKENS.header(Role.ADMIN)) as client:
        text = (await client.get("/v1/config")).text
    assert hash_token("t") not in text and '"ops"' in text
    assert '"password"' not in text


async def test_config_route_hides_device_passwords(view: ControlledView, tmp_path: Path) -> None:
    config = small_config(tmp_path)
    devices = [
        entry.model_copy(update={"options": options})
        for entry, options in zip(
            config.devices,
            (
                WhatsminerOptions(password="wm-secret"),
                AntminerOptions(web_password="web-secret"),
                CgminerOptions(),
            ),
            strict=True,
        )
    ]
    view.config = config.model_copy(update={"devices": devices})
    async with client_for(build_app(view, TOKENS), TOKENS.header(Role.ADMIN)) as client:
        text = (await client.get("/v1/config")).text
    assert "wm-secret" not in text and "web-secret" not in text and '"whatsminer"' in text


async def test_a_change_that_crashes_is_audited_as_an_error(
    view: ControlledView, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert view.control is not None

    def broken(*_args: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(view.control, "set_mode", broken)
    async with client_for(build_app(view, TOKENS), TOKENS.header(Role.ADMIN)) as client:
        with pytest.raises(RuntimeError):
            await client.put("/v1/mode", json={"mode": "paused"})
    [row] = view.control.store.api_audit()
    assert (row.status_code, row.result, row.principal) == (500, "error: RuntimeError", "admin-1")
