"""Operator routes: readiness, summary, decisions paged and filtered, overrides, policy, TLS."""

from __future__ import annotations

import sqlite3
import ssl
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import trustme

from scheduler.api.app import bound_port, serve
from scheduler.api.auth import Role
from scheduler.core.model import Workload
from scheduler.policies import available_policies
from scheduler.store.journal import DecisionRecord
from tests.scheduler.api_fixtures import WALL, ControlledView, Tokens, build_app
from tests.scheduler.test_api_security import make_view

TOKENS = Tokens()


@pytest.fixture
def view(tmp_path: Path) -> ControlledView:
    return make_view(tmp_path)


@pytest.fixture
async def client(view: ControlledView) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=build_app(view, TOKENS)),
        base_url="http://wattmux.test",
        headers=TOKENS.header(Role.OPERATOR),
    ) as client:
        yield client


async def test_readyz_names_what_is_missing(
    client: httpx.AsyncClient, view: ControlledView
) -> None:
    view.ready["reconciled"] = False
    response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {
        "ready": False,
        "checks": {"config": True, "store": True, "inputs": True, "reconciled": False},
    }
    view.ready["reconciled"] = True
    assert (await client.get("/readyz")).json()["ready"] is True


async def test_summary(client: httpx.AsyncClient) -> None:
    await client.put("/v1/overrides/m1", json={"workload": "sleep", "duration_seconds": 60})
    await client.put("/v1/curtail", json={"target_kw": None, "duration_seconds": 60})
    body = (await client.get("/v1/summary")).json()
    assert body["devices"] == 3 and body["mining"] == 3 and body["unreachable"] == 0
    assert body["site_power_kw"] == pytest.approx(10.5)
    assert body["overrides"] == 1
    assert body["curtail"]["target_kw"] is None and body["effective_cap_kw"] == 0.0
    assert body["mode"] == "auto" and body["policy"] == "breakeven"


def seed_log(view: ControlledView) -> None:
    assert view.control is not None
    store = view.control.store
    for minute in range(10):
        device = f"m{minute % 3 + 1}"
        reason = "price_above_breakeven" if minute % 2 else "price_below_breakeven"
        workload = Workload.sleep() if minute % 2 else Workload.mine("main")
        store.record_decisions(
            WALL + timedelta(minutes=minute),
            [DecisionRecord(device, workload, reason, float(minute), None)],
        )
    intent = store.begin_intent(
        at=WALL + timedelta(minutes=20),
        device_id="m1",
        workload=Workload.sleep(),
        reason="override",
    )
    store.finish_intent(intent, at=WALL + timedelta(minutes=20), status="confirmed", detail="")


async def test_decisions_paged_and_filtered(
    client: httpx.AsyncClient, view: ControlledView
) -> None:
    seed_log(view)
    first = (await client.get("/v1/decisions", params={"limit": 4})).json()
    assert [i["kind"] for i in first["items"]] == ["command", "decision", "decision", "decision"]
    assert first["items"][0]["outcome"] == "confirmed" and first["next_offset"] == 4
    rest = (await client.get("/v1/decisions", params={"limit": 100, "offset": 4})).json()
    assert len(rest["items"]) == 7 and rest["next_offset"] is None
    ids = [(i["kind"], i["id"]) for i in first["items"] + rest["items"]]
    assert len(set(ids)) == 11

    m2 = (await client.get("/v1/decisions", params={"device": "m2"})).json()["items"]
    assert {i["device"] for i in m2} == {"m2"} and len(m2) == 3
    above = (await client.get("/v1/decisions", params={"reason": "price_above_breakeven"})).json()
    assert len(above["items"]) == 5
    window = {
        "since": (WALL + timedelta(minutes=2)).isoformat(),
        "until": (WALL + timedelta(minutes=5)).isoformat(),
        "kind": "decision",
    }
    times = [
        i["expected_margin_usd_per_hour"]
        for i in (await client.get("/v1/decisions", params=window)).json()["items"]
    ]
    assert times == [4.0, 3.0, 2.0]
    naive = {"since": "2024-08-20T19:38:00"}  # read as UTC
    assert len((await client.get("/v1/decisions", params=naive)).json()["items"]) == 3


async def test_overrides_listed_and_removed(client: httpx.AsyncClient) -> None:
    put = await client.put(
        "/v1/overrides/m3", json={"workload": "mine(main)", "duration_seconds": 90, "note": "test"}
    )
    assert put.status_code == 200
    [listed] = (await client.get("/v1/overrides")).json()
    assert (
        listed["device"] == "m3"
        and listed["workload"] == "mine(main)"
        and listed["by"] == "operator-1"
    )
    removed = await client.delete("/v1/overrides/m3")
    assert removed.status_code == 200 and removed.json()["workload"] == "mine(main)"
    assert (await client.get("/v1/overrides")).json() == []


async def test_policy_selection_is_admin_only_and_checked(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v1/policy")).json() == {
        "name": "breakeven",
        "available": sorted(available_policies()),
    }
    assert "breakeven" in available_policies()
    assert (await client.put("/v1/policy", json={"name": "breakeven"})).status_code == 403
    admin = TOKENS.header(Role.ADMIN)
    unknown = await client.put("/v1/policy", json={"name": "yolo"}, headers=admin)
    assert unknown.status_code == 422
    [error] = unknown.json()["detail"]
    assert error["loc"] == ["body", "name"] and "installed: breakeven" in error["msg"]
    assert (
        await client.put("/v1/policy", json={"name": "breakeven"}, headers=admin)
    ).status_code == 200


@pytest.mark.system
async def test_tls(view: ControlledView, tmp_path: Path) -> None:
    authority = trustme.CA()
    certificate = authority.issue_cert("127.70.7.1")
    cert_file, key_file, ca_file = tmp_path / "c.pem", tmp_path / "k.pem", tmp_path / "ca.pem"
    certificate.cert_chain_pems[0].write_to_path(cert_file)
    certificate.private_key_pem.write_to_path(key_file)
    authority.cert_pem.write_to_path(ca_file)
    app = build_app(view, TOKENS)
    async with serve(
        app, "127.70.7.1", 0, tls_cert_file=str(cert_file), tls_key_file=str(key_file)
    ) as server:
        port = bound_port(server)
        context = ssl.create_default_context(cafile=str(ca_file))
        async with httpx.AsyncClient(verify=context, trust_env=False) as https:
            response = await https.get(
                f"https://127.70.7.1:{port}/v1/mode", headers=TOKENS.header(Role.VIEWER)
            )
            assert response.status_code == 200 and response.json() == {"mode": "auto"}
        async with httpx.AsyncClient(trust_env=False) as plain:
            with pytest.raises(httpx.HTTPError):
                await plain.get(f"http://127.70.7.1:{port}/healthz")
        async with httpx.AsyncClient(
            trust_env=False
        ) as unverified:  # the system CAs do not know it
            with pytest.raises(httpx.ConnectError):
                await unverified.get(f"https://127.70.7.1:{port}/healthz")


async def test_a_change_the_store_cannot_commit_is_503_and_changes_nothing(
    client: httpx.AsyncClient, view: ControlledView
) -> None:
    """Another writer holds the database past busy_timeout: 503 with Retry-After, no change."""
    assert view.control is not None
    store = view.control.store
    store._db.execute("PRAGMA busy_timeout=50")  # fail fast instead of waiting 5 s
    blocker = sqlite3.connect(store.path, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")  # holds the write lock
        response = await client.put(
            "/v1/overrides/m1", json={"workload": "sleep", "duration_seconds": 60}
        )
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert "nothing was changed" in response.json()["detail"]
        assert "locked" in response.json()["detail"]
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert (await client.get("/v1/overrides")).json() == []
    assert store.overrides() == []
    # once the lock is gone the same request goes through
    response = await client.put(
        "/v1/overrides/m1", json={"workload": "sleep", "duration_seconds": 60}
    )
    assert response.status_code == 200
