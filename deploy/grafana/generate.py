#!/usr/bin/env python3
"""Generate the wattmux Grafana dashboards (JSON) from the panel tables below.

Usage: python deploy/grafana/generate.py [--check]
Writes deploy/grafana/dashboards/<uid>.json; with --check, exits 1 if a file
differs from what this script generates (run by the tests).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
SEL = 'instance=~"$instance"'  # every query is restricted to the chosen daemons


USD_MWH = "suffix: USD/MWh"
GREEN, ORANGE, RED = "green", "orange", "red"
UP_DOWN = [  # value mappings of 0/1 gauges
    {"type": "value", "options": {"0": {"text": "down", "color": RED, "index": 0}}},
    {"type": "value", "options": {"1": {"text": "up", "color": GREEN, "index": 1}}},
]


@dataclass(frozen=True)
class Target:
    """One PromQL query of a panel; ``unit`` overrides the panel's for this query's series."""

    expr: str
    legend: str = ""
    instant: bool = False
    unit: str | None = None


@dataclass(frozen=True)
class Panel:
    """One panel: type, title, unit, size, its queries, thresholds and value mappings."""

    title: str
    kind: str  # timeseries, stat, table, state-timeline, bargauge
    targets: tuple[Target, ...]
    unit: str = "short"
    width: int = 12
    height: int = 8
    description: str = ""
    stack: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    thresholds: tuple[tuple[float, str], ...] = ()  # (from value, color) above the base green
    mappings: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class Dashboard:
    """One dashboard: uid, title and its panels in reading order."""

    uid: str
    title: str
    description: str
    panels: tuple[Panel, ...]


# The devices table: one row per device, a named column per query (merge, then organize).
# A (info: model, kind) and B (workload: its label) give labels only; their values are hidden.
DEVICE_COLUMNS = {
    "Value #C": "up",
    "Value #D": "power",
    "Value #E": "hash rate",
    "Value #F": "temperature",
    "Value #G": "sample age",
    "instance": "daemon",
}

DASHBOARDS = (
    Dashboard(
        "wattmux-site",
        "wattmux / Site overview",
        "Power price against break-even, site power against its cap, hash rate, workloads, "
        "margin, and the operator's controls (mode, curtail, overrides, maintenance).",
        (
            Panel(
                "Mode",
                "stat",
                (Target(f"wattmux_mode{{{SEL}}} == 1", "{{mode}}", instant=True),),
                width=6,
                height=4,
                description="auto, manual (hold), dry-run (log, send nothing) or paused.",
                options={"options": {"textMode": "name", "colorMode": "background"}},
            ),
            Panel(
                "Curtail",
                "stat",
                (Target(f"wattmux_curtail_active{{{SEL}}}", "curtail", instant=True),),
                width=6,
                height=4,
                mappings=(
                    {"type": "value", "options": {"0": {"text": "none", "color": GREEN}}},
                    {"type": "value", "options": {"1": {"text": "curtailing", "color": ORANGE}}},
                ),
            ),
            Panel(
                "Overrides in force",
                "stat",
                (Target(f"wattmux_overrides_active{{{SEL}}}", "overrides", instant=True),),
                width=6,
                height=4,
                thresholds=((1, ORANGE),),
            ),
            Panel(
                "Machines in maintenance",
                "stat",
                (Target(f"wattmux_maintenance_devices{{{SEL}}}", "maintenance", instant=True),),
                width=6,
                height=4,
                thresholds=((1, ORANGE),),
            ),
            Panel(
                "Power price and break-even per model",
                "timeseries",
                (
                    Target(f"wattmux_power_price_usd_per_mwh{{{SEL}}}", "power price"),
                    Target(
                        f"wattmux_breakeven_power_price_usd_per_mwh{{{SEL}}}",
                        "break-even {{model}}",
                    ),
                ),
                unit=USD_MWH,
                width=24,
                description="USD/MWh. Above a model's break-even line its mining loses money.",
            ),
            Panel(
                "Site power, cap and cap in force",
                "timeseries",
                (
                    Target(f"wattmux_site_power_watts{{{SEL}}}", "site power"),
                    Target(f"wattmux_site_power_cap_watts{{{SEL}}}", "configured cap"),
                    Target(f"wattmux_effective_power_cap_watts{{{SEL}}}", "cap in force"),
                ),
                unit="watt",
                description="The cap in force is lower than the configured one during a curtail.",
            ),
            Panel(
                "Site hash rate",
                "timeseries",
                (
                    Target(
                        f"sum by (instance) (wattmux_device_hashrate_hashes_per_second{{{SEL}}})",
                        "{{instance}}",
                    ),
                ),
                unit="Hs",
                description="Sum of the hash rate every machine reports.",
            ),
            Panel(
                "Devices per state",
                "timeseries",
                (Target(f"wattmux_devices{{{SEL}}}", "{{state}}"),),
                stack=True,
            ),
            Panel(
                "Devices per observed workload",
                "timeseries",
                (Target(f"sum by (workload) (wattmux_device_workload{{{SEL}}})", "{{workload}}"),),
                stack=True,
            ),
            Panel(
                "Expected margin of the plan",
                "timeseries",
                (Target(f"wattmux_plan_margin_usd_per_hour{{{SEL}}}", "margin"),),
                unit="suffix: USD/h",
                description="USD per hour, summed over every device's assignment.",
                thresholds=((0, GREEN),),
                options={"fieldConfigThresholdBase": RED},
            ),
            Panel(
                "Pools",
                "state-timeline",
                (Target(f"wattmux_pool_up{{{SEL}}}", "{{pool}}"),),
                description="A pool is up while some miner that lists it sees it alive.",
                mappings=tuple(UP_DOWN),
            ),
            Panel(
                "Hashprice",
                "stat",
                (Target(f"wattmux_hashprice_usd_per_th_day{{{SEL}}}", "USD/TH/day"),),
                unit="suffix: USD/TH/day",
                width=6,
            ),
            Panel(
                "BTC price",
                "stat",
                (Target(f"wattmux_btc_price_usd{{{SEL}}}", "BTC"),),
                unit="currencyUSD",
                width=6,
            ),
        ),
    ),
    Dashboard(
        "wattmux-devices",
        "wattmux / Devices",
        "Every device: reachability, workload, power, hash rate, temperature, fans; "
        "unavailable and drifted devices; GPU nodes and AI queues.",
        (
            Panel(
                "Devices",
                "table",
                (
                    Target(f"wattmux_device_info{{{SEL}}}", "info", instant=True),
                    Target(f"wattmux_device_workload{{{SEL}}} == 1", "workload", instant=True),
                    Target(f"wattmux_device_up{{{SEL}}}", "up", instant=True),
                    Target(
                        f"wattmux_device_power_watts{{{SEL}}}", "power", instant=True, unit="watt"
                    ),
                    Target(
                        f"wattmux_device_hashrate_hashes_per_second{{{SEL}}}",
                        "hash rate",
                        instant=True,
                        unit="Hs",
                    ),
                    Target(
                        f"wattmux_device_temperature_celsius{{{SEL}}}",
                        "temperature",
                        instant=True,
                        unit="celsius",
                    ),
                    Target(
                        f"wattmux_device_sample_age_seconds{{{SEL}}}", "age", instant=True, unit="s"
                    ),
                ),
                width=24,
                height=10,
                options={
                    "transformations": [
                        {"id": "merge", "options": {}},
                        {
                            "id": "organize",
                            "options": {
                                "excludeByName": {
                                    "Time": True,
                                    "__name__": True,
                                    "job": True,
                                    "Value #A": True,
                                    "Value #B": True,
                                },
                                "renameByName": DEVICE_COLUMNS,
                            },
                        },
                    ]
                },
            ),
            Panel(
                "Temperatures",
                "timeseries",
                (Target(f"wattmux_device_temperature_celsius{{{SEL}}}", "{{device}}"),),
                unit="celsius",
                thresholds=((75, ORANGE), (85, RED)),
            ),
            Panel(
                "Hottest chip per machine",
                "timeseries",
                (Target(f"wattmux_device_chip_temp_max_celsius{{{SEL}}}", "{{device}}"),),
                unit="celsius",
                thresholds=((85, ORANGE), (95, RED)),
                description="Alert WattmuxMachineHot above 95 °C.",
            ),
            Panel(
                "Slowest fan per machine",
                "timeseries",
                (Target(f"wattmux_device_fan_rpm_min{{{SEL}}}", "{{device}}"),),
                unit="rotrpm",
                thresholds=((0, RED), (500, GREEN)),
                description="Alert WattmuxFanFailed under 500 rpm.",
            ),
            Panel(
                "Unavailable devices",
                "timeseries",
                (Target(f"sum by (instance) (1 - wattmux_device_up{{{SEL}}})", "unavailable"),),
                thresholds=((1, ORANGE),),
            ),
            Panel(
                "Devices not confirming their last command",
                "timeseries",
                (Target(f"wattmux_devices_drifted{{{SEL}}}", "drifted"),),
                thresholds=((1, ORANGE),),
                description="Alert WattmuxDevicesDrifted after 10 minutes above 0.",
            ),
            Panel(
                "Devices not answering now",
                "table",
                (Target(f"wattmux_device_up{{{SEL}}} == 0", "down", instant=True),),
                width=24,
            ),
            Panel(
                "GPUs busy with AI jobs per node",
                "timeseries",
                (Target(f"wattmux_gpu_node_ai_gpus_busy{{{SEL}}}", "{{device}}"),),
                stack=True,
            ),
            Panel(
                "AI queues: pending GPUs and rate",
                "timeseries",
                (
                    Target(f"wattmux_queue_pending_gpus{{{SEL}}}", "{{queue}} pending GPUs"),
                    Target(
                        f"wattmux_queue_rate_usd_per_gpu_hour{{{SEL}}}",
                        "{{queue}} USD/GPU-h",
                        unit="suffix: USD/GPU-h",
                    ),
                ),
            ),
        ),
    ),
    Dashboard(
        "wattmux-decisions",
        "wattmux / Decisions",
        "Why wattmux switched machines, what the devices answered, what is still pending.",
        (
            Panel(
                "Assignment changes per reason",
                "timeseries",
                (
                    Target(
                        f"sum by (reason) (increase(wattmux_decisions_total{{{SEL}}}[$__rate_interval]))",
                        "{{reason}}",
                    ),
                ),
                stack=True,
            ),
            Panel(
                "Commands per outcome",
                "timeseries",
                (
                    Target(
                        f"sum by (outcome) (increase(wattmux_commands_total{{{SEL}}}[$__rate_interval]))",
                        "{{outcome}}",
                    ),
                ),
                stack=True,
            ),
            Panel(
                "Devices not yet at their desired workload",
                "timeseries",
                (Target(f"wattmux_devices_not_at_desired{{{SEL}}}", "wants {{desired}}"),),
            ),
            Panel(
                "Changes per reason over the range",
                "bargauge",
                (
                    Target(
                        f"sum by (reason) (increase(wattmux_decisions_total{{{SEL}}}[$__range]))",
                        "{{reason}}",
                        instant=True,
                    ),
                ),
            ),
        ),
    ),
    Dashboard(
        "wattmux-inputs",
        "wattmux / Inputs",
        "Market input ages, feeds up or down, poll errors and the control loop's pace.",
        (
            Panel(
                "Market input age",
                "timeseries",
                (
                    Target(f"wattmux_market_input_age_seconds{{{SEL}}}", "{{input}}"),
                    Target(f"wattmux_stale_price_threshold_seconds{{{SEL}}}", "stale threshold"),
                ),
                unit="s",
            ),
            Panel(
                "Feeds up",
                "state-timeline",
                (Target(f"wattmux_source_up{{{SEL}}}", "{{source}}"),),
                mappings=tuple(UP_DOWN),
            ),
            Panel(
                "Poll errors per reason",
                "timeseries",
                (
                    Target(
                        f"sum by (reason) (rate(wattmux_poll_errors_total{{{SEL}}}[$__rate_interval]))",
                        "{{reason}}",
                    ),
                ),
                unit="reqps",
            ),
            Panel(
                "Control tick duration (p95)",
                "timeseries",
                (
                    Target(
                        "histogram_quantile(0.95, sum by (le) "
                        f"(rate(wattmux_tick_duration_seconds_bucket{{{SEL}}}[$__rate_interval])))",
                        "p95 tick",
                    ),
                ),
                unit="s",
                width=6,
            ),
            Panel(
                "Ticks per second",
                "timeseries",
                (Target(f"rate(wattmux_ticks_total{{{SEL}}}[$__rate_interval])", "ticks"),),
                unit="ops",
                width=6,
                thresholds=((0, RED), (0.01, GREEN)),
            ),
            Panel(
                "Network difficulty",
                "stat",
                (Target(f"wattmux_network_difficulty{{{SEL}}}", "difficulty"),),
                width=6,
            ),
            Panel(
                "Block subsidy and fees",
                "stat",
                (
                    Target(f"wattmux_block_subsidy_btc{{{SEL}}}", "subsidy BTC"),
                    Target(f"wattmux_fees_btc_per_block{{{SEL}}}", "fees BTC/block"),
                ),
                width=6,
            ),
        ),
    ),
)


def panel_json(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    """The Grafana JSON of one panel at grid position (x, y)."""
    refs = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    body: dict[str, Any] = {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"x": x, "y": y, "w": panel.width, "h": panel.height},
        "fieldConfig": {
            "defaults": {
                "unit": panel.unit,
                "thresholds": {
                    "mode": "absolute",
                    "steps": [
                        {
                            "color": panel.options.get("fieldConfigThresholdBase", GREEN),
                            "value": None,
                        },
                        *({"color": color, "value": value} for value, color in panel.thresholds),
                    ],
                },
                "mappings": list(panel.mappings),
            },
            "overrides": [
                {
                    "matcher": {"id": "byFrameRefID", "options": refs[index]},
                    "properties": [{"id": "unit", "value": target.unit}],
                }
                for index, target in enumerate(panel.targets)
                if target.unit is not None
            ],
        },
        "options": {},
        "targets": [
            {
                "refId": refs[index],
                "datasource": DATASOURCE,
                "expr": target.expr,
                "legendFormat": target.legend,
                "instant": target.instant,
                "range": not target.instant,
                "format": "table" if panel.kind == "table" else "time_series",
            }
            for index, target in enumerate(panel.targets)
        ],
    }
    if panel.stack:
        body["fieldConfig"]["defaults"]["custom"] = {
            "stacking": {"mode": "normal"},
            "fillOpacity": 30,
        }
    if panel.thresholds:
        body["fieldConfig"]["defaults"].setdefault("custom", {})["thresholdsStyle"] = {
            "mode": "line"
        }
    body.update({k: v for k, v in panel.options.items() if k != "fieldConfigThresholdBase"})
    return body


def dashboard_json(dashboard: Dashboard) -> dict[str, Any]:
    """The Grafana JSON model of one dashboard (panels flow left to right, 24 columns)."""
    panels = []
    x = y = row_height = 0
    for panel_id, panel in enumerate(dashboard.panels, start=1):
        if x + panel.width > 24:
            x, y, row_height = 0, y + row_height, 0
        panels.append(panel_json(panel, panel_id, x, y))
        x += panel.width
        row_height = max(row_height, panel.height)
    return {
        "uid": dashboard.uid,
        "title": dashboard.title,
        "description": dashboard.description,
        "tags": ["wattmux"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "links": [
            {"type": "dashboards", "tags": ["wattmux"], "asDropdown": True, "title": "wattmux"}
        ],
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                },
                {
                    "name": "instance",
                    "label": "daemon",
                    "type": "query",
                    "datasource": DATASOURCE,
                    "query": {
                        "query": "label_values(wattmux_ticks_total, instance)",
                        "refId": "instance",
                    },
                    "definition": "label_values(wattmux_ticks_total, instance)",
                    "refresh": 2,
                    "includeAll": True,
                    "multi": True,
                    "allValue": ".+",
                    "current": {},
                    "hide": 0,
                },
            ]
        },
        "panels": panels,
    }


def rendered() -> dict[Path, str]:
    """Every dashboard file and its text."""
    return {
        OUT / f"{d.uid}.json": json.dumps(dashboard_json(d), indent=2, sort_keys=True) + "\n"
        for d in DASHBOARDS
    }


def main() -> int:
    """Write the dashboards, or with --check report the ones that are out of date."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    stale = []
    for path, text in rendered().items():
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(path.name)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        print(
            f"out of date: {', '.join(stale)}; run python deploy/grafana/generate.py",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
