"""Bodies Python's JSON parser reads but JSON does not allow: 422, never 500, over real HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi.routing import APIRoute

from scheduler.api.app import bound_port, serve
from scheduler.api.auth import Role
from scheduler.control.service import Mode
from tests.scheduler.api_fixtures import ControlledView, Tokens, build_app
from tests.scheduler.test_api_security import make_view

pytestmark = pytest.mark.system

TOKENS = Tokens()
BAD_BODIES = [
    b'{"x": NaN}',
    b'{"x": Infinity}',
    b'{"x": -Infinity}',
    b'{"target_kw": NaN, "duration_seconds": 60}',
    b'{"workload": "sleep", "duration_seconds": NaN}',
    b'{"target_kw": 1e999, "duration_seconds": 60}',
    b'{"duration_seconds": ' + b"9" * 5000 + b"}",
    b"[" * 8000 + b"]" * 8000,
]


def body_routes(app: object) -> list[tuple[str, str]]:
    """Every (method, path) of the app whose handler takes a request body."""
    return sorted(
        (method, route.path.replace("{device_id}", "m1"))
        for route in app.routes  # type: ignore[attr-defined]
        if isinstance(route, APIRoute) and route.body_field is not None
        for method in route.methods
    )


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[ControlledView, str, object]]:
    view = make_view(tmp_path)
    app = build_app(view, TOKENS, max_body_bytes=65536)
    async with serve(app, "127.0.0.1", 0) as server:
        yield view, f"http://127.0.0.1:{bound_port(server)}", app


async def test_every_body_route_answers_422_to_nan_and_infinity(
    served: tuple[ControlledView, str, object],
) -> None:
    view, base, app = served
    routes = body_routes(app)
    assert {path for _, path in routes} >= {"/v1/mode", "/v1/curtail", "/v1/policy"}
    async with httpx.AsyncClient(
        base_url=base, trust_env=False, timeout=5.0, headers=TOKENS.header(Role.ADMIN)
    ) as client:
        for method, path in routes:
            for body in BAD_BODIES:
                for content_type in ("application/json", None):
                    headers = {"content-type": content_type} if content_type else {}
                    response = await client.request(method, path, content=body, headers=headers)
                    assert response.status_code == 422, (method, path, body[:40], response.text)
                    [error] = response.json()["detail"]
                    assert error["type"] == "json_invalid" and error["loc"] == ["body"]
        # nothing changed, and a valid body still works
        assert view.control is not None and view.control.mode is Mode.AUTO
        ok = await client.put("/v1/mode", json={"mode": "paused"})
        assert ok.status_code == 200, ok.text


async def test_nan_refusals_are_audited(served: tuple[ControlledView, str, object]) -> None:
    view, base, _ = served
    async with httpx.AsyncClient(
        base_url=base, trust_env=False, headers=TOKENS.header(Role.OPERATOR)
    ) as client:
        await client.put("/v1/curtail", content=b'{"target_kw": NaN, "duration_seconds": 60}')
    assert view.control is not None
    [row] = view.control.store.api_audit()
    assert row.status_code == 422 and "NaN" in row.result and row.principal == "operator-1"
