"""Refused requests under a flood: limited per client address, their audit rows aggregated."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
import pytest

from scheduler.api.app import bound_port, create_app, serve
from scheduler.api.auth import SHARED_KEY, RateLimiter, Role
from scheduler.api.security import RefusalAudit
from scheduler.api.wiring import ApiSecurity, security_from_config
from scheduler.store.operator import ControlStore
from tests.scheduler.api_fixtures import ControlledView, Tokens, small_config
from tests.scheduler.test_api_security import make_view

TOKENS = Tokens()
FLOOD = 5000
COUNT = re.compile(r"^rejected: (\d+) refused as too many from (\S+) ")


def refused_total(rows: list[object]) -> int:
    """Refusals the rows record: one each, or the count of an aggregated row."""
    total = 0
    for row in rows:
        match = COUNT.match(row.result)  # type: ignore[attr-defined]
        total += int(match.group(1)) if match else 1
    return total


def secured(view: ControlledView, burst: int = 20) -> ApiSecurity:
    frozen = lambda: 0.0  # noqa: E731  (no refill while the test runs)
    return ApiSecurity(
        TOKENS.authenticator(),
        RateLimiter(per_minute=600.0, burst=100, clock=frozen),
        4096,
        refusal_limiter=RateLimiter(per_minute=60.0, burst=burst, clock=frozen, max_keys=16),
    )


async def flood(port: int, total: int, headers: dict[str, str], connections: int = 8) -> list[int]:
    """PUT /v1/mode total times over raw pipelined HTTP/1.1 connections; the status codes."""
    extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    body = b'{"mode": "paused"}'
    request = (
        f"PUT /v1/mode HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n{extra}"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode() + body

    async def worker(n: int) -> list[int]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request * n)
        await writer.drain()
        codes = []
        while len(codes) < n:
            status = await reader.readuntil(b"\r\n")
            codes.append(int(status.split()[1]))
            length = 0
            while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
        writer.close()
        return codes

    share = total // connections
    parts = await asyncio.gather(*(worker(share) for _ in range(connections)))
    return [code for part in parts for code in part]


@pytest.mark.system
async def test_a_flood_of_refused_puts_writes_a_bounded_number_of_audit_rows(
    tmp_path: Path,
) -> None:
    view = make_view(tmp_path)
    assert view.control is not None
    app = create_app(view, secured(view))
    async with serve(app, "127.0.0.1", 0) as server:
        codes = await flood(bound_port(server), FLOOD, {})
        # every refusal after the first 20 is 429 from the address's budget
        assert codes.count(401) == 20 and codes.count(429) == FLOOD - 20
        async with httpx.AsyncClient(trust_env=False, headers=TOKENS.header(Role.VIEWER)) as ok:
            mode = await ok.get(f"http://127.0.0.1:{bound_port(server)}/v1/mode")
        assert mode.json()["mode"] == "auto"  # a client with a token is still served
    for middleware in app.user_middleware:
        middleware.kwargs["refusal_audit"].flush()
    with ControlStore.open(view.config.store.path) as store:
        rows = store.api_audit(limit=10_000)
    assert len(rows) == 21  # one row per refusal within the budget, one for all the others
    assert refused_total(rows) == FLOOD
    [aggregated] = [row for row in rows if COUNT.match(row.result)]
    assert aggregated.remote == "127.0.0.1" and aggregated.status_code == 429
    assert aggregated.principal == "anonymous" and aggregated.path == "/v1/mode"


@pytest.mark.system
async def test_a_wrong_token_is_refused_the_same_way_and_a_valid_one_is_not(
    tmp_path: Path,
) -> None:
    view = make_view(tmp_path)
    app = create_app(view, secured(view, burst=3))
    async with serve(app, "127.0.0.1", 0) as server:
        port = bound_port(server)
        wrong = await flood(port, 16, {"authorization": "Bearer nope"})
        assert wrong.count(401) == 3 and wrong.count(429) == 13
        viewer = await flood(port, 8, TOKENS.header(Role.VIEWER))  # 403 is a refusal too
        assert set(viewer) == {429}
        operator = await flood(port, 8, TOKENS.header(Role.OPERATOR))
        assert set(operator) == {200}


def test_aggregated_rows_roll_over_per_window_and_count_exactly(tmp_path: Path) -> None:
    now = [0.0]
    store = ControlStore.open(tmp_path / "a.sqlite")
    audit = RefusalAudit(lambda: store, window_seconds=60.0, max_clients=2, clock=lambda: now[0])
    for _ in range(100):
        audit.count("10.0.0.1", "PUT", "/v1/mode")
    now[0] = 61.0
    for _ in range(50):
        audit.count("10.0.0.1", "PUT", "/v1/mode")
    for address in ("10.0.0.2", "10.0.0.3", "10.0.0.4"):  # past max_clients they share a row
        audit.count(address, "PUT", "/v1/curtail")
    audit.flush()
    rows = store.api_audit()
    counts = {}
    for row in rows:
        match = COUNT.match(row.result)
        assert match is not None
        counts.setdefault(row.remote, []).append(int(match.group(1)))
    assert counts == {"10.0.0.1": [50, 100], "10.0.0.2": [1], "*": [2]}
    store.close()


def test_the_refusal_limiter_stays_bounded_however_many_addresses() -> None:
    now = [0.0]
    limiter = RateLimiter(per_minute=60.0, burst=2, clock=lambda: now[0], max_keys=100)
    for i in range(10_000):
        limiter.take(f"fd00::{i:x}")
        limiter.take(f"fd00::{i:x}")
    assert len(limiter._buckets) <= 101 and SHARED_KEY in limiter._buckets
    now[0] = 10.0  # buckets refilled: forgotten when room is needed
    assert limiter.take("10.9.9.9") == 0.0
    assert "10.9.9.9" in limiter._buckets


def test_the_config_sets_the_refusal_budget(tmp_path: Path) -> None:
    config = small_config(tmp_path, refused_per_minute=6, refused_burst=2)
    security = security_from_config(config)
    assert security.refusal_limiter is not None
    assert (security.refusal_limiter.per_minute, security.refusal_limiter.burst) == (6.0, 2)
