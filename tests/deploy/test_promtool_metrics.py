"""/metrics of a daemon running over the simulated site passes ``promtool check metrics``.

promtool (Debian package ``prometheus``, installed by ``make test``) lints
names, units, help texts and types.  The test scrapes the real daemon after a
few ticks (with an unreachable miner and a failing feed, so the trouble series
exist too) and requires zero findings.  It also checks that every label value
is a machine-readable token, never free text.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.deploy.sim_daemon import sim_daemon, wait_ticks

PROMTOOL = shutil.which("promtool")
TOKEN = re.compile(r"[A-Za-z0-9_.:+ -]{1,64}")  # ids, model names, enum values, le buckets

pytestmark = pytest.mark.skipif(PROMTOOL is None, reason="promtool missing: make test installs it")


def promtool_check_metrics(text: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )


@pytest.mark.system
def test_promtool_reports_a_bad_exposition() -> None:
    """The check can fail: a counter without _total and a family without help are findings."""
    bad = "# TYPE wattmux_things counter\nwattmux_things 1\n"
    result = promtool_check_metrics(bad)
    assert result.returncode != 0
    assert "wattmux_things" in result.stdout + result.stderr


@pytest.mark.system
async def test_live_daemon_metrics_have_no_promtool_findings(tmp_path: Path) -> None:
    async with (
        sim_daemon(tmp_path, subnet=1) as sim,
        httpx.AsyncClient(base_url=sim.base_url, headers=sim.headers) as http,
    ):
        await wait_ticks(sim, 4)
        text = (await http.get("/metrics")).text
    result = await asyncio.to_thread(promtool_check_metrics, text)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == ""

    families = list(text_string_to_metric_families(text))
    names = [family.name for family in families]
    assert len(names) == len(set(names)), "a family is exposed twice"
    samples = [sample for family in families for sample in family.samples]
    assert len(samples) > 150
    for sample in samples:
        for label, value in sample.labels.items():
            assert TOKEN.fullmatch(value), f"{sample.name}{{{label}={value!r}}} is not a token"
    exposed = {sample.name for sample in samples}
    for needed in (
        "wattmux_device_up",
        "wattmux_device_info",
        "wattmux_source_up",
        "wattmux_site_power_cap_watts",
        "wattmux_breakeven_power_price_usd_per_mwh",
        "wattmux_plan_margin_usd_per_hour",
        "wattmux_devices_not_at_desired",
    ):
        assert needed in exposed, needed
    up = {s.labels["device"]: s.value for s in samples if s.name == "wattmux_device_up"}
    assert list(up.values()).count(0.0) == 1  # the faulty miner
    source_up = {s.labels["source"]: s.value for s in samples if s.name == "wattmux_source_up"}
    assert source_up["broken-feed"] == 0.0 and source_up["ercot-replay"] == 1.0
