"""deploy/*.service: hardening scored by ``systemd-analyze security --offline=true``; the unit's contract.

``systemd-analyze`` (Debian package ``systemd``; ``make test`` installs it
when missing) scores a unit file offline, without a running systemd, so this
works in a container.  Both units must score an overall exposure <= 2.0; a
copy of the daemon unit without its hardening must score worse, which shows
the check can fail.  ``systemd-analyze verify`` (also offline) must find
nothing to say about either unit, with ExecStart pointed at this checkout's
virtualenv so the binary exists.  No systemd manager runs in the test
environment, so the units are not started here; sd_notify is tested over a
real socket in tests/scheduler/test_systemd.py.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
UNIT = DEPLOY / "wattmux.service"
FAILSAFE = DEPLOY / "wattmux-failsafe.service"
ANALYZE = shutil.which("systemd-analyze")
MAX_EXPOSURE = 2.0

needs_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze missing: make test installs it"
)


def exposure(unit: Path) -> float:
    assert ANALYZE is not None
    result = subprocess.run(
        [ANALYZE, "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    match = re.search(
        rf"Overall exposure level for {re.escape(unit.name)}: (\d+\.\d)", result.stdout
    )
    assert match, result.stdout + result.stderr
    return float(match.group(1))


def directives(unit: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


@pytest.mark.system
@needs_analyze
@pytest.mark.parametrize("unit", [UNIT, FAILSAFE], ids=lambda p: p.name)
def test_units_are_hardened(unit: Path) -> None:
    assert exposure(unit) <= MAX_EXPOSURE


@pytest.mark.system
@needs_analyze
def test_the_score_catches_a_unit_without_hardening(tmp_path: Path) -> None:
    text = UNIT.read_text().split("# Hardening\n")[0] + "\n[Install]\nWantedBy=multi-user.target\n"
    weak = tmp_path / "wattmux.service"
    weak.write_text(text)
    assert exposure(weak) > MAX_EXPOSURE


def test_daemon_unit_contract() -> None:
    unit = directives(UNIT)
    assert unit["Type"] == ["notify"]
    assert unit["NotifyAccess"] == ["main"]
    assert int(unit["WatchdogSec"][0]) >= 30
    assert unit["Restart"] == ["on-failure"]
    assert unit["OnFailure"] == [FAILSAFE.name]
    assert unit["User"] == ["wattmux"] and unit["StateDirectory"] == ["wattmux"]
    assert unit["ExecStart"] == [
        "/opt/wattmux/venv/bin/wattmux run --config /etc/wattmux/wattmux.toml"
    ]


def test_failsafe_unit_runs_the_failsafe_command() -> None:
    unit = directives(FAILSAFE)
    assert unit["Type"] == ["oneshot"]
    assert unit["ExecStart"] == [
        "/opt/wattmux/venv/bin/wattmux failsafe --config /etc/wattmux/wattmux.toml"
    ]
    assert "OnFailure" not in unit  # the dead-man path must not chain into itself


def verify(directory: Path, *units: Path) -> subprocess.CompletedProcess[str]:
    """``systemd-analyze verify`` on copies whose ExecStart points at this checkout's wattmux."""
    assert ANALYZE is not None
    copies = []
    for unit in units:
        copy = directory / unit.name
        copy.write_text(unit.read_text().replace("/opt/wattmux/venv", sys.prefix))
        copies.append(str(copy))
    return subprocess.run(
        [ANALYZE, "verify", "--man=no", *copies],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.system
@needs_analyze
def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    assert (Path(sys.prefix) / "bin" / "wattmux").exists()
    result = verify(tmp_path, UNIT, FAILSAFE)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == "", (
        result.stdout + result.stderr
    )


@pytest.mark.system
@needs_analyze
def test_verify_reports_a_misspelled_directive(tmp_path: Path) -> None:
    broken = tmp_path / "src"
    broken.mkdir()
    (broken / UNIT.name).write_text(UNIT.read_text().replace("WatchdogSec=", "WatchdogSecs="))
    result = verify(tmp_path, broken / UNIT.name, FAILSAFE)
    assert "WatchdogSecs" in result.stdout + result.stderr
