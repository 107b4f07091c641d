"""A real Prometheus scrapes the daemon; every dashboard query and alert expression returns data.

Method:

1. The daemon runs in-process over a simulated site of 12 ASICs (ERCOT
   replay prices), with one miner that closes every connection and one
   market feed that always fails, so "trouble" series exist as they would on a
   real site with a dead miner and a dead feed.
2. Prometheus from Debian's package starts on a free loopback port with a
   temporary config: the ``wattmux`` job scraping the daemon every second and
   the rule file of deploy/prometheus evaluated every second.
3. After enough scrapes for ``rate()`` windows, every ``expr`` of every panel
   of every dashboard in deploy/grafana/dashboards is sent to the HTTP API
   (``/api/v1/query``) with the dashboard variables replaced
   (``$instance`` -> ``.+``, ``$__rate_interval`` -> ``1m``, ``$__range`` ->
   ``5m``); each must return at least one series.
4. Alert rules are read back from Prometheus itself (``/api/v1/rules``): each
   must have loaded with health ``ok``.  An alert expression returns series
   only while its trouble lasts, so each is also evaluated as its *signal*:
   the top-level comparison made a ``bool`` comparison (``a > b`` becomes
   ``a > bool b``, which returns a 0/1 series wherever both sides exist and
   match, proving metric names, labels and vector matching are right), and
   for ``a unless b`` both ``a`` and ``b``.  Each signal must return data.
   The alerts this site provokes (a dead miner: WattmuxDevicesUnavailable; a
   dead feed: WattmuxInputSourceDown) must return data as written.  When each
   alert *fires* is tested by ``promtool test rules`` (test_prometheus_rules.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from scheduler.control.service import Actor
from tests.deploy.sim_daemon import SCRAPE_TOKEN, sim_daemon, wait_ticks

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
RULES = ROOT / "deploy" / "prometheus" / "rules" / "wattmux.rules.yml"
PROMETHEUS = shutil.which("prometheus")
ADDRESS = "127.80.3.250"
VARIABLES = {"$__rate_interval": "1m", "$__range": "5m", "$__interval": "1s", "$instance": ".+"}
PROVOKED = {"WattmuxDevicesUnavailable", "WattmuxInputSourceDown"}
# Optional inputs: metrics the rules and dashboards use that this site does not export.
# A query on one of them may return nothing; every other must.
OPTIONAL_METRICS = {
    # exported only on a site with a meter ([meter]); this one has none
    "wattmux_site_meter_disagreement_ratio",
    # exported by the daemon only on a site with GPU nodes or AI queues (this one has neither)
    "wattmux_gpu_node_ai_gpus_busy",
    "wattmux_queue_pending_gpus",
    "wattmux_queue_rate_usd_per_gpu_hour",
}
# The Grafana unit a query's series must be shown in, by the unit suffix of its metric's name.
SUFFIX_UNITS = (
    ("_usd_per_mwh", "suffix: USD/MWh"),
    ("_usd_per_hour", "suffix: USD/h"),
    ("_usd_per_th_day", "suffix: USD/TH/day"),
    ("_usd_per_gpu_hour", "suffix: USD/GPU-h"),
    ("_usd", "currencyUSD"),
    ("_watts", "watt"),
    ("_hashes_per_second", "Hs"),
    ("_celsius", "celsius"),
    ("_seconds", "s"),
    ("_seconds_bucket", "s"),
    ("_rpm_min", "rotrpm"),
    ("_ratio", "percentunit"),
)


def expected_unit(expr: str) -> str:
    """The unit a panel must show expr in: rates per second, counts, or the metric's own unit."""
    if "histogram_quantile" not in expr and re.search(r"\brate\(", expr):
        return "per second"
    if "increase(" in expr or re.search(r"\b1 - ", expr):
        return "short"
    metric = re.search(r"\bwattmux_\w+", expr)
    assert metric is not None, expr
    for suffix, unit in SUFFIX_UNITS:
        if metric.group(0).endswith(suffix):
            return unit
    return "short"


def panel_units(panel: dict[str, Any]) -> dict[str, str]:
    """refId -> the unit its series are shown in (the panel's, or an override by refId)."""
    units = {t["refId"]: panel["fieldConfig"]["defaults"]["unit"] for t in panel["targets"]}
    for override in panel["fieldConfig"]["overrides"]:
        if override["matcher"]["id"] == "byFrameRefID":
            for prop in override["properties"]:
                if prop["id"] == "unit":
                    units[override["matcher"]["options"]] = prop["value"]
    return units


def unit_matches(unit: str, expected: str) -> bool:
    if expected == "per second":
        return unit in ("ops", "reqps", "hertz")
    return unit == expected


def optional(expr: str) -> bool:
    """True when expr reads a metric of OPTIONAL_METRICS."""
    return any(re.search(rf"\b{name}\b", expr) for name in OPTIONAL_METRICS)


pytestmark = pytest.mark.skipif(
    PROMETHEUS is None, reason="prometheus missing: make test installs it"
)


def free_port(address: str) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


def panel_queries() -> list[tuple[str, str, str]]:
    """(dashboard, panel, expr) of every target, variables replaced."""
    return [(d, p["title"], expr) for d, p, _target, expr in panel_targets()]


def panel_targets() -> list[tuple[str, dict[str, Any], dict[str, Any], str]]:
    """(dashboard, panel, target, expr with variables replaced) of every target."""
    found = []
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                expr = target["expr"]
                for name, value in VARIABLES.items():
                    expr = expr.replace(name, value)
                assert "$" not in expr, f"unreplaced variable in {expr}"
                found.append((dashboard["title"], panel, target, expr))
    return found


def test_every_panel_shows_its_series_in_the_unit_of_its_metric() -> None:
    wrong = []
    for dashboard, panel, target, expr in panel_targets():
        unit = panel_units(panel)[target["refId"]]
        if not unit_matches(unit, expected_unit(expr)):
            wrong.append(f"{dashboard} / {panel['title']}: {expr} in {unit!r}")
    assert wrong == [], "\n".join(wrong)
    assert expected_unit("rate(wattmux_ticks_total[1m])") == "per second"
    assert expected_unit("wattmux_power_price_usd_per_mwh") == "suffix: USD/MWh"
    assert not unit_matches("currencyUSD", expected_unit("wattmux_power_price_usd_per_mwh"))


def test_table_columns_are_named() -> None:
    for _dashboard, panel, _target, _expr in panel_targets():
        if panel["type"] == "table" and len(panel["targets"]) > 1:
            organize = [t for t in panel["transformations"] if t["id"] == "organize"]
            assert organize, panel["title"]
            options = organize[0]["options"]
            for target in panel["targets"]:
                column = f"Value #{target['refId']}"
                assert column in options["renameByName"] or options["excludeByName"].get(column)


def signals(expr: str) -> list[str]:
    """The queries that show an alert expression's inputs exist (see the module docstring)."""
    depth = 0
    quote = ""
    index = 0
    while index < len(expr):
        char = expr[index]
        if quote:
            quote = "" if char == quote and expr[index - 1] != "\\" else quote
        elif char in "\"'":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif depth == 0:
            word = re.match(r"\s(unless|and|or)\s", expr[index:])
            if word:
                right = expr[index + len(word.group(0)) :].strip()
                right = re.sub(r"^(on|ignoring)\s*\([^)]*\)\s*", "", right)  # matching modifier
                return [*signals(expr[:index].strip()), *signals(right)]
            op = re.match(r"(==|!=|>=|<=|>|<)", expr[index:])
            if op:
                end = index + len(op.group(0))
                return [f"{expr[:end]} bool{expr[end:]}"]
        index += 1
    return [expr]


def test_signals_of_alert_expressions() -> None:
    assert signals('up{job="w"} == 0') == ['up{job="w"} == bool 0']
    assert signals('a{x=~"1|2"} > on (job) b') == ['a{x=~"1|2"} > bool on (job) b']
    assert signals('sum without (d) (m{d=~"s|o"}) > 0') == [
        'sum without (d) (m{d=~"s|o"}) > bool 0'
    ]
    assert signals("a unless on (job, instance) b") == ["a", "b"]
    assert signals("rate(x[2m]) == 0") == ["rate(x[2m]) == bool 0"]


@contextlib.asynccontextmanager
async def prometheus(tmp_path: Path, target: str) -> AsyncIterator[httpx.AsyncClient]:
    """Start Prometheus scraping target every second with the wattmux rules; yield an API client."""
    assert PROMETHEUS is not None
    rules = tmp_path / "wattmux.rules.yml"
    shutil.copy(RULES, rules)
    token_file = tmp_path / "wattmux.token"
    token_file.write_text(SCRAPE_TOKEN + "\n")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        f"rule_files:\n  - {rules}\n"
        "scrape_configs:\n  - job_name: wattmux\n    scrape_timeout: 1s\n"
        f"    authorization:\n      type: Bearer\n      credentials_file: {token_file}\n"
        f"    static_configs:\n      - targets: ['{target}']\n"
    )
    port = free_port(ADDRESS)
    process = await asyncio.create_subprocess_exec(
        PROMETHEUS,
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address={ADDRESS}:{port}",
        "--log.level=warn",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=(tmp_path / "prometheus.log").open("wb"),
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://{ADDRESS}:{port}", timeout=5) as client:
            for _ in range(200):
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get("/-/ready")).status_code == 200:
                        break
                if process.returncode is not None:
                    raise AssertionError((tmp_path / "prometheus.log").read_text())
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("prometheus not ready in 20 s")
            yield client
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 15)


async def query(client: httpx.AsyncClient, expr: str) -> list[dict[str, Any]]:
    response = await client.get("/api/v1/query", params={"query": expr})
    body = response.json()
    assert body["status"] == "success", f"{expr}: {body}"
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


async def wait_for_scrapes(client: httpx.AsyncClient, scrapes: int, timeout_s: float = 30) -> None:
    for _ in range(int(timeout_s / 0.25)):
        result = await query(client, 'count_over_time(up{job="wattmux"}[5m])')
        up = await query(client, 'up{job="wattmux"}')
        if result and float(result[0]["value"][1]) >= scrapes and up and up[0]["value"][1] == "1":
            return
        await asyncio.sleep(0.25)
    raise AssertionError("prometheus did not scrape the daemon")


@pytest.mark.system
async def test_every_panel_and_alert_expression_returns_data(tmp_path: Path) -> None:
    assert len(DASHBOARDS) == 4
    async with sim_daemon(tmp_path, subnet=3) as sim:
        await wait_ticks(sim, 2)
        async with prometheus(tmp_path, sim.config.api.listen) as client:
            await wait_for_scrapes(client, 6)

            assert await query(client, "wattmux_no_such_metric") == []  # an empty answer is seen
            empty, unlabelled = [], []
            for dashboard, panel, target, expr in panel_targets():
                series = await query(client, expr)
                where = f"{dashboard} / {panel['title']}: {expr}"
                if not series:
                    if not optional(expr):
                        empty.append(where)
                    continue
                # the labels the legend names, and the device a merged table joins on
                wanted = set(re.findall(r"\{\{(\w+)\}\}", target["legendFormat"]))
                if panel["type"] == "table" and panel.get("transformations"):
                    wanted.add("device")
                for one in series:
                    if not wanted <= set(one["metric"]):
                        unlabelled.append(f"{where}: {sorted(wanted - set(one['metric']))}")
                        break
            assert empty == [], "panels without data:\n" + "\n".join(empty)
            assert unlabelled == [], "series without the labels the panel shows:\n" + "\n".join(
                unlabelled
            )

            # the effective cap follows a curtail; the configured cap does not
            assert sim.daemon.control is not None
            actor = Actor("test", "operator", "test", "PUT", "/v1/curtail")
            sim.daemon.control.set_curtail(12.5, 600, actor)
            for _ in range(40):
                cap = await query(client, "wattmux_effective_power_cap_watts")
                if cap and float(cap[0]["value"][1]) == 12_500.0:
                    break
                await asyncio.sleep(0.25)
            else:
                raise AssertionError(f"effective cap not 12.5 kW: {cap}")
            configured = await query(client, "wattmux_site_power_cap_watts")
            assert float(configured[0]["value"][1]) == 60_000.0
            assert float((await query(client, "wattmux_curtail_active"))[0]["value"][1]) == 1.0

            groups = (await client.get("/api/v1/rules")).json()["data"]["groups"]
            alerts = [
                rule for group in groups for rule in group["rules"] if rule["type"] == "alerting"
            ]
            assert len(alerts) == 14
            missing = []
            for rule in alerts:
                assert rule["health"] == "ok", rule
                for signal in signals(rule["query"]):
                    if not optional(signal) and not await query(client, signal):
                        missing.append(f"{rule['name']}: {signal}")
                if rule["name"] in PROVOKED and not await query(client, rule["query"]):
                    missing.append(f"{rule['name']} (provoked): {rule['query']}")
            assert missing == [], "alert expressions without data:\n" + "\n".join(missing)
