"""deploy/grafana: the committed dashboards are exactly what generate.py writes; their shape."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"


@pytest.mark.system
def test_committed_dashboards_match_the_generator() -> None:
    result = subprocess.run(
        [sys.executable, str(GRAFANA / "generate.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_dashboards_have_unique_ids_in_the_grid_and_use_the_datasource_variable() -> None:
    titles = set()
    for path in sorted((GRAFANA / "dashboards").glob("*.json")):
        dashboard = json.loads(path.read_text())
        assert dashboard["uid"] == path.stem
        titles.add(dashboard["title"])
        ids = [panel["id"] for panel in dashboard["panels"]]
        assert len(ids) == len(set(ids))
        for panel in dashboard["panels"]:
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24
            assert panel["datasource"]["uid"] == "${datasource}"
            assert panel["targets"], panel["title"]
            for target in panel["targets"]:
                assert 'instance=~"$instance"' in target["expr"], target["expr"]
    assert titles == {
        "wattmux / Site overview",
        "wattmux / Devices",
        "wattmux / Decisions",
        "wattmux / Inputs",
    }


def test_provisioning_points_at_the_dashboards_and_prometheus() -> None:
    dashboards = (GRAFANA / "provisioning" / "dashboards" / "wattmux.yml").read_text()
    datasources = (GRAFANA / "provisioning" / "datasources" / "wattmux.yml").read_text()
    assert "type: file" in dashboards and "/var/lib/grafana/dashboards/wattmux" in dashboards
    assert "type: prometheus" in datasources and "url: http://127.0.0.1:9090" in datasources
