"""deploy/prometheus: the scrape config and alert rules pass promtool; the rule unit tests pass.

``promtool test rules`` runs deploy/prometheus/tests/wattmux.test.yml, which
feeds synthetic series through every alert and checks when each fires.  A
second test breaks one rule in a copy and checks that the unit tests catch it.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

PROMTOOL = shutil.which("promtool")
DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
RULES = DEPLOY / "rules" / "wattmux.rules.yml"
RULE_TESTS = DEPLOY / "tests" / "wattmux.test.yml"
ALERTS = {
    "WattmuxDaemonDown",
    "WattmuxControlLoopStalled",
    "WattmuxInputSourceDown",
    "WattmuxPowerPriceStale",
    "WattmuxPowerPriceMissing",
    "WattmuxDevicesUnavailable",
    "WattmuxCurtailNotConfirmed",
    "WattmuxSiteOverPowerCap",
    "WattmuxPoolDown",
    "WattmuxHashRateDrop",
    "WattmuxMachineHot",
    "WattmuxFanFailed",
    "WattmuxDevicesDrifted",
    "WattmuxMeterDisagrees",
}

pytestmark = pytest.mark.skipif(PROMTOOL is None, reason="promtool missing: make test installs it")


def promtool(*args: str, cwd: Path = DEPLOY) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.system
def test_rules_pass_promtool_check_rules() -> None:
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout


@pytest.mark.system
def test_scrape_config_passes_promtool_check_config(tmp_path: Path) -> None:
    # The shipped config points at the token file of a site controller; check it in a copy of
    # the folder laid out as on such a host, with a token file where the config expects one.
    shutil.copytree(DEPLOY, tmp_path / "prometheus")
    config = tmp_path / "prometheus" / "prometheus.yml"
    text = config.read_text()
    assert "credentials_file: /etc/prometheus/wattmux.token" in text
    (tmp_path / "wattmux.token").write_text("token\n")
    config.write_text(
        text.replace("/etc/prometheus/wattmux.token", str(tmp_path / "wattmux.token"))
    )
    result = promtool("check", "config", "prometheus.yml", cwd=tmp_path / "prometheus")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_unit_test_and_a_runbook() -> None:
    tests = RULE_TESTS.read_text()
    rules = RULES.read_text()
    operations = (DEPLOY.parents[1] / "docs" / "operations.md").read_text().lower()
    for alert in ALERTS:
        assert f"alert: {alert}\n" in rules
        assert f"alertname: {alert}\n" in tests, f"no unit test for {alert}"
    for anchor in {
        line.split("#")[1].strip('" ') for line in rules.splitlines() if "runbook_url" in line
    }:
        assert f"### {anchor}" in operations, f"operations.md has no section for {anchor}"


@pytest.mark.system
def test_rule_unit_tests_pass() -> None:
    result = promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.system
def test_rule_unit_tests_catch_a_weakened_rule(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "tests").mkdir()
    weakened = RULES.read_text().replace(
        "wattmux_site_power_watts > on (job, instance) wattmux_site_power_cap_watts",
        "wattmux_site_power_watts > on (job, instance) (2 * wattmux_site_power_cap_watts)",
    )
    assert weakened != RULES.read_text()
    (tmp_path / "rules" / RULES.name).write_text(weakened)
    shutil.copy(RULE_TESTS, tmp_path / "tests" / RULE_TESTS.name)
    result = promtool("test", "rules", str(tmp_path / "tests" / RULE_TESTS.name), cwd=tmp_path)
    assert result.returncode != 0
    assert "WattmuxSiteOverPowerCap" in result.stdout + result.stderr
