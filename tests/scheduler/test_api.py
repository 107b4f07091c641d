"""HTTP API: routes over ASGI, a golden JSON of device and market output, and real HTTP via serve().

Golden file: tests/fixtures/golden/api.json.  After an intended change to
the API output, regenerate it with

    WATTMUX_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/scheduler/test_api.py

and review the diff.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import tomllib
from collections.abc import AsyncIterator
from importlib.metadata import PackageNotFoundError
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from scheduler.api.app import bound_port, serve
from scheduler.api.auth import Role
from scheduler.core.model import (
    TERA,
    Assignment,
    Device,
    MarketState,
    Plan,
    Reading,
    Sample,
    Workload,
)
from scheduler.core.state import FleetState
from scheduler.observability.metrics import Metrics
from scheduler.store.operator import ControlStore
from scheduler.store.sqlite import MEMORY
from scheduler.version import wattmux_version
from tests.fakes import asic
from tests.scheduler.api_fixtures import (
    ControlledView,
    Tokens,
    build_app,
    make_control,
    small_config,
)

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "golden" / "api.json"
UPDATE_GOLDEN = os.environ.get("WATTMUX_UPDATE_GOLDEN") == "1"
PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
PYPROJECT_VERSION = tomllib.loads(PYPROJECT.read_text())["project"]["version"]
NOW = 5000.0
POOL_FEE = 0.02


def device(device_id: str, address: str, model: str = "S21 Pro") -> Device:
    return asic(device_id, model, address=address)


def build_state() -> FleetState:
    state = FleetState(
        [device("m1", "127.0.0.21"), device("m2", "127.0.0.22"), device("m3", "127.0.0.23")],
        pool_fee=POOL_FEE,
    )
    state.observe(Sample("m1", NOW - 3.0, Workload.mine("main"), 3502.0, 233.5 * TERA, 68.5))
    state.observe(Sample("m2", NOW - 40.0, Workload.mine("main", 0.8), 2800.0, 187 * TERA, 66.0))
    state.mark_unreachable("m2", "timeout: no reply in 3 s", NOW - 1.0)
    state.desired["m1"] = Workload.mine("main")
    state.desired["m2"] = Workload.sleep()
    state.observe_market(
        {
            "btc_price_usd": Reading(61_000.0, NOW - 20.0, "static"),
            "difficulty": Reading(90e12, NOW - 300.0, "static"),
            "block_subsidy_btc": Reading(3.125, NOW - 300.0, "static"),
            "power_price_usd_per_mwh": Reading(-3.5, NOW - 7.5, "ercot-replay"),
        }
    )
    return state


FakeView = ControlledView


def make_view() -> FakeView:
    state = build_state()
    store = ControlStore.open(MEMORY)
    return FakeView(
        state=state,
        metrics=Metrics(state, clock=lambda: NOW),
        config=small_config(Path("/nonexistent")),
        control=make_control(store, state),
    )


TOKENS = Tokens()
ADMIN = TOKENS.header(Role.ADMIN)


def sample_plan() -> Plan:
    return Plan(
        created_at=NOW,
        assignments=(
            Assignment("m1", Workload.mine("main"), "price_below_breakeven", 1.234),
            Assignment("m2", Workload.sleep(), "unreachable", 0.0),
        ),
    )


@pytest.fixture
def view() -> FakeView:
    return make_view()


@pytest.fixture
async def client(view: FakeView) -> AsyncIterator[httpx.AsyncClient]:
    app = build_app(view, TOKENS)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://wattmux.test", headers=ADMIN
    ) as client:
        yield client


async def test_healthz(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_devices(client: httpx.AsyncClient, view: FakeView) -> None:
    response = await client.get("/v1/devices")
    assert response.status_code == 200
    by_id = {d["id"]: d for d in response.json()}
    assert list(by_id) == ["m1", "m2", "m3"]
    m1 = by_id["m1"]
    assert m1["reachable"] is True and m1["last_error"] is None
    assert m1["model"] == "S21 Pro" and m1["address"] == "127.0.0.21" and m1["port"] == 4028
    assert m1["workload"] == "mine(main)"
    assert m1["power_w"] == 3502.0
    assert m1["hashrate_ths"] == pytest.approx(233.5)
    assert m1["temperature_c"] == 68.5
    assert m1["sample_age_seconds"] == 3.0
    assert m1["desired_workload"] == "mine(main)"
    # unreachable: its old sample is not presented as current
    m2 = by_id["m2"]
    assert m2["reachable"] is False
    assert m2["last_error"] == "timeout: no reply in 3 s"
    assert m2["workload"] is None and m2["power_w"] is None and m2["sample_age_seconds"] is None
    assert m2["desired_workload"] == "sleep"
    m3 = by_id["m3"]
    assert m3["last_error"] == "not polled yet" and m3["desired_workload"] is None

    view.now[0] = NOW + 10.0
    later = {d["id"]: d for d in (await client.get("/v1/devices")).json()}
    assert later["m1"]["sample_age_seconds"] == 13.0


async def test_market(client: httpx.AsyncClient, view: FakeView) -> None:
    body = (await client.get("/v1/market")).json()
    assert body["btc_price_usd"] == {"value": 61_000.0, "age_seconds": 20.0, "source": "static"}
    assert body["power_price_usd_per_mwh"] == {
        "value": -3.5,
        "age_seconds": 7.5,
        "source": "ercot-replay",
    }
    assert body["fees_btc_per_block"] is None
    expected = 86_400e12 / (90e12 * 2**32) * 3.125 * 61_000.0 * (1 - POOL_FEE)
    assert body["hashprice_usd_per_th_day"] == pytest.approx(expected)

    view.state.market = MarketState(btc_price_usd=Reading(61_000.0, NOW, "static"))
    body = (await client.get("/v1/market")).json()
    assert body["hashprice_usd_per_th_day"] is None
    assert body["difficulty"] is None
    assert body["btc_price_usd"]["age_seconds"] == 0.0


async def test_plan_empty_then_current(client: httpx.AsyncClient, view: FakeView) -> None:
    assert (await client.get("/v1/plan")).json() == []
    view.plan = sample_plan()
    assert (await client.get("/v1/plan")).json() == [
        {
            "device": "m1",
            "workload": "mine(main)",
            "reason": "price_below_breakeven",
            "expected_margin_usd_per_hour": 1.234,
            "detail": "",
        },
        {
            "device": "m2",
            "workload": "sleep",
            "reason": "unreachable",
            "expected_margin_usd_per_hour": 0.0,
            "detail": "",
        },
    ]


async def test_metrics_endpoint(client: httpx.AsyncClient, view: FakeView) -> None:
    view.metrics.ticks.inc(4)
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    [ticks] = families["wattmux_ticks"].samples
    assert ticks.value == 4.0
    up = {s.labels["device"]: s.value for s in families["wattmux_device_up"].samples}
    assert up == {"m1": 1.0, "m2": 0.0, "m3": 0.0}


async def test_openapi_documents_response_models(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    assert {"/healthz", "/v1/devices", "/v1/market", "/v1/plan", "/metrics"} <= set(schema["paths"])
    components = schema["components"]["schemas"]
    assert {"DeviceView", "MarketView", "ReadingView", "AssignmentView", "Health"} <= set(
        components
    )
    assert "sample_age_seconds" in components["DeviceView"]["properties"]
    assert "hashprice_usd_per_th_day" in components["MarketView"]["properties"]
    ok = schema["paths"]["/v1/plan"]["get"]["responses"]["200"]["content"]["application/json"]
    assert ok["schema"]["items"]["$ref"].endswith("/AssignmentView")


async def test_api_version_is_pyprojects(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    assert schema["info"]["version"] == PYPROJECT_VERSION == wattmux_version()


def test_api_version_comes_from_the_package_metadata(
    view: FakeView, monkeypatch: pytest.MonkeyPatch
) -> None:
    def metadata_version(name: str) -> str:
        assert name == "wattmux"
        return "9.8.7"

    monkeypatch.setattr("scheduler.version.metadata_version", metadata_version)
    assert build_app(view, TOKENS).openapi()["info"]["version"] == "9.8.7"


def test_version_without_metadata_is_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> str:
        raise PackageNotFoundError(name)

    monkeypatch.setattr("scheduler.version.metadata_version", missing)
    assert wattmux_version() == "unknown"


# --- golden file ---------------------------------------------------------------------------


async def api_output(client: httpx.AsyncClient) -> dict[str, Any]:
    return {
        path: (await client.get(path)).json() for path in ("/v1/devices", "/v1/market", "/v1/plan")
    }


async def test_golden_api_output(client: httpx.AsyncClient, view: FakeView) -> None:
    view.plan = sample_plan()
    text = json.dumps(await api_output(client), indent=2, sort_keys=True) + "\n"
    if UPDATE_GOLDEN:
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(text)
    assert GOLDEN.exists(), f"missing {GOLDEN}; run with WATTMUX_UPDATE_GOLDEN=1 to create it"
    assert json.loads(text) == json.loads(GOLDEN.read_text())
    assert text == GOLDEN.read_text()


async def test_golden_comparison_catches_a_changed_value(
    client: httpx.AsyncClient, view: FakeView
) -> None:
    golden = json.loads(GOLDEN.read_text())
    view.plan = sample_plan()
    view.state.observe(Sample("m1", NOW - 3.0, Workload.mine("main"), 3502.0, 233.5 * TERA, 68.75))
    changed = await api_output(client)
    assert changed != golden
    assert changed["/v1/devices"][0]["temperature_c"] == 68.75
    changed["/v1/devices"][0]["temperature_c"] = 68.5
    assert changed == golden


# --- real HTTP on loopback --------------------------------------------------------------------


def http_client() -> httpx.AsyncClient:
    # trust_env=False: never route loopback requests through a proxy from the environment
    return httpx.AsyncClient(trust_env=False, timeout=5.0, headers=ADMIN)


@pytest.mark.system
async def test_serve_over_real_http_and_stop_cleanly(view: FakeView) -> None:
    app: FastAPI = build_app(view, TOKENS)
    handlers_before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    async with serve(app, "127.0.0.1", 0) as server:
        port = bound_port(server)
        assert port > 0 and server.started
        # the daemon owns signals: serve() installed none
        assert {sig: signal.getsignal(sig) for sig in handlers_before} == handlers_before
        async with http_client() as client:
            health = await client.get(f"http://127.0.0.1:{port}/healthz")
            assert health.status_code == 200 and health.json() == {"status": "ok"}
            metrics = await client.get(f"http://127.0.0.1:{port}/metrics")
            assert metrics.status_code == 200
            names = {f.name for f in text_string_to_metric_families(metrics.text)}
            assert "wattmux_site_power_watts" in names
    assert server.should_exit
    with socket.socket() as probe, pytest.raises(ConnectionRefusedError):
        probe.connect(("127.0.0.1", port))


@pytest.mark.system
async def test_serve_stops_when_the_body_raises(view: FakeView) -> None:
    with pytest.raises(LookupError):
        async with serve(build_app(view, TOKENS), "127.0.0.1", 0) as server:
            port = bound_port(server)
            raise LookupError("boom")
    with socket.socket() as probe, pytest.raises(ConnectionRefusedError):
        probe.connect(("127.0.0.1", port))


@pytest.mark.system
async def test_serve_on_busy_port_raises_oserror(view: FakeView) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=re.escape(f"127.0.0.1:{port}")):
            async with serve(build_app(view, TOKENS), "127.0.0.1", port):
                pytest.fail("serve() started on a port that was in use")
