"""deploy/prometheus/rules/grid.rules.yml: passes promtool, and its unit tests pass (and can fail)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

PROMTOOL = shutil.which("promtool")
DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"

pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(PROMTOOL is None, reason="promtool missing: make test installs it"),
]


def promtool(*args: str, cwd: Path = DEPLOY) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def test_grid_rules_pass_check_and_their_unit_tests() -> None:
    checked = promtool("check", "rules", "rules/grid.rules.yml")
    assert checked.returncode == 0 and "SUCCESS: 3 rules found" in checked.stdout, checked.stdout
    tested = promtool("test", "rules", "tests/grid.test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "rules/grid.rules.yml" in (DEPLOY / "prometheus.yml").read_text()


def test_the_unit_tests_catch_a_broken_threshold(tmp_path: Path) -> None:
    copy = tmp_path / "prometheus"
    shutil.copytree(DEPLOY, copy)
    rules = copy / "rules" / "grid.rules.yml"
    rules.write_text(rules.read_text().replace("> 0.1", "> 0.5"))
    assert promtool("test", "rules", "tests/grid.test.yml", cwd=copy).returncode != 0
