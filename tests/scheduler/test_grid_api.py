"""Site power routes: signed webhook intake (signature, replay window, idempotency, audit) and the setpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from scheduler.api.app import create_app
from scheduler.api.auth import ROUTE_ROLES, RateLimiter, Role
from scheduler.api.grid import GRID_RULES, grid_routes, signature
from scheduler.api.wiring import ApiSecurity
from scheduler.config.grid import SetpointConfig, WebhookConfig
from scheduler.control.grid import GridControl
from scheduler.core.state import FleetState
from scheduler.observability.metrics import Metrics
from scheduler.store.operator import ControlStore
from tests.scheduler.api_fixtures import ControlledView, Tokens, make_control, small_config

SECRET = "s" * 40
TOKENS = Tokens()
UNIX_NOW = 1_800_000_000.0


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Any, GridControl, ControlledView]:
    config = small_config(tmp_path)
    state = FleetState(config.all_devices())
    store = ControlStore.open(tmp_path / "w.sqlite")
    view = ControlledView(state, Metrics(state), config, make_control(store, state))
    grid = GridControl(None, SetpointConfig(), state)
    grid.register(view.metrics.registry)
    security = ApiSecurity(TOKENS.authenticator(), RateLimiter(per_minute=600, burst=100), 4096)
    webhook = WebhookConfig(secret=SECRET)  # type: ignore[arg-type]
    extension = grid_routes(grid, view, webhook, unix_clock=lambda: UNIX_NOW)
    return create_app(view, security, [extension]), grid, view


def client(app: Any, headers: dict[str, str] | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=("127.70.0.9", 40000)),
        base_url="http://wattmux.test",
        headers=headers or {},
    )


def signed(body: dict[str, Any], stamp: float = UNIX_NOW, secret: str = SECRET) -> dict[str, Any]:
    raw = json.dumps(body).encode()
    ts = str(int(stamp))
    return {
        "content": raw,
        "headers": {
            "content-type": "application/json",
            "x-wattmux-timestamp": ts,
            "x-wattmux-signature": signature(secret.encode(), ts, raw),
        },
    }


def test_every_grid_route_has_a_rule() -> None:
    assert set(GRID_RULES) <= set(ROUTE_ROLES)
    assert ROUTE_ROLES[("POST", "/v1/signals/webhook")] is None  # the signature is the check


async def test_a_signed_signal_acts_once_and_every_delivery_is_audited(setup: Any) -> None:
    app, grid, view = setup
    async with client(app) as http:
        first = await http.post("/v1/signals/webhook", **signed({"id": "ev-1", "kw": 150.0}))
        again = await http.post("/v1/signals/webhook", **signed({"id": "ev-1", "kw": 150.0}))
    assert first.status_code == 200, first.text
    assert first.json()["outcome"] == "accepted"
    assert again.json()["outcome"] == "duplicate"
    assert again.json()["target_id"] == first.json()["target_id"]
    assert len(grid.setpoint.history) == 1  # acted once
    assert grid.setpoint.target is not None and grid.setpoint.target.kw == 150.0
    rows = view.control.store.api_audit()
    assert [r.result for r in rows[:2]] == ["webhook: duplicate", "webhook: accepted"]
    assert grid.counts[("webhook", "accepted")] == 1


@pytest.mark.parametrize(
    ("kwargs", "status"),
    [
        ({"secret": "x" * 40}, 401),  # wrong key
        ({"stamp": UNIX_NOW - 301}, 401),  # outside the replay window
        ({"stamp": UNIX_NOW + 301}, 401),
    ],
)
async def test_bad_signature_or_stale_timestamp_is_refused_and_not_acted_on(
    setup: Any, kwargs: dict[str, Any], status: int
) -> None:
    app, grid, view = setup
    async with client(app) as http:
        reply = await http.post(
            "/v1/signals/webhook", **signed({"id": "ev-2", "kw": 1.0}, **kwargs)
        )
    assert reply.status_code == status
    assert grid.setpoint.target is None
    assert grid.counts[("webhook", "invalid")] == 1
    assert view.control.store.api_audit()[0].status_code == status


async def test_a_tampered_body_or_a_body_that_is_not_a_signal_is_refused(setup: Any) -> None:
    app, grid, _ = setup
    good = signed({"id": "ev-3", "kw": 10.0})
    tampered = {**good, "content": good["content"].replace(b"10.0", b"99.0")}
    not_a_signal = signed({"id": "ev-4", "kw": 10.0, "extra": 1})
    async with client(app) as http:
        assert (await http.post("/v1/signals/webhook", **tampered)).status_code == 401
        assert (await http.post("/v1/signals/webhook", **not_a_signal)).status_code == 422
    assert grid.setpoint.target is None


async def test_operator_setpoint_put_get_delete_with_roles(setup: Any) -> None:
    app, _grid, _ = setup
    async with client(app, TOKENS.header(Role.VIEWER)) as viewer:
        assert (await viewer.put("/v1/setpoint", json={"kw": 50})).status_code == 403
        assert (await viewer.get("/v1/meter")).json()["configured"] is False
    async with client(app, TOKENS.header(Role.OPERATOR)) as operator:
        put = await operator.put("/v1/setpoint", json={"kw": 50, "id": "op-1"})
        assert put.status_code == 200, put.text
        got = (await operator.get("/v1/setpoint")).json()
        assert got["target"]["kw"] == 50 and got["target"]["state"] == "pending"
        assert (await operator.put("/v1/setpoint", json={"kw": -1})).status_code == 422
        assert (await operator.delete("/v1/setpoint")).status_code == 200
        assert (await operator.get("/v1/setpoint")).json()["target"] is None
        metrics = (await operator.get("/metrics")).text
    assert 'wattmux_grid_signals_total{outcome="accepted",source="operator"} 2.0' in metrics
    assert 'wattmux_setpoint_state{state="none"} 1.0' in metrics


async def test_a_flood_of_bad_signatures_is_counted_with_bounded_audit_rows(setup: Any) -> None:
    app, grid, view = setup
    async with client(app) as http:
        for index in range(40):
            body = signed({"id": f"x-{index}", "kw": 1.0}, secret="y" * 40)
            assert (await http.post("/v1/signals/webhook", **body)).status_code == 401
    assert grid.counts[("webhook", "invalid")] == 40
    assert len(view.control.store.api_audit(limit=100)) == 30


async def test_without_a_webhook_section_the_route_is_404(setup: Any, tmp_path: Path) -> None:
    _, grid, view = setup
    security = ApiSecurity(TOKENS.authenticator(), RateLimiter(per_minute=600, burst=100), 4096)
    app = create_app(view, security, [grid_routes(grid, view, None)])
    async with client(app) as http:
        reply = await http.post("/v1/signals/webhook", **signed({"id": "w", "kw": 1.0}))
    assert reply.status_code == 404
    assert grid.setpoint.target is None and grid.counts[("webhook", "invalid")] == 1
