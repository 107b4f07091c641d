"""The fast per-device exposition says exactly what prometheus_client would say."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from scheduler.core.model import (
    TERA,
    BoardHealth,
    Device,
    Health,
    Sample,
    Workload,
    WorkloadKind,
)
from scheduler.core.state import FleetState
from scheduler.observability.exposition import (
    DEVICE_FAMILIES,
    HEALTH_FAMILIES,
    UNCATALOGUED,
    DeviceExposition,
    escape_label_value,
    format_value,
)
from tests.fakes import asic

NOW = 500.0
ODD_IDS = ("plain", 'quo"te', "back\\slash", "new\nline", "ünïcode-ø")


def device(device_id: str, model: str = "S21") -> Device:
    return asic(device_id, model, hashrate_hs=200 * TERA, power_w=3500.0, sleep_power_w=15.0)


def build_state() -> FleetState:
    state = FleetState(
        [device(i) for i in ODD_IDS] + [device("z-never-polled"), device("z-odd", "S9 Odd")]
    )
    values = (3480.5, math.inf, -0.0, 1e-300, 12345678901234.5)
    for index, device_id in enumerate(ODD_IDS):
        workload = Workload.sleep() if index % 2 else Workload.mine("main")
        temperature = None if index == 2 else 60.0 + index
        state.observe(Sample(device_id, NOW - index, workload, values[index], 2e14, temperature))
    state.mark_unreachable(ODD_IDS[3], "timeout", NOW)
    sample = state.samples[ODD_IDS[0]]
    board = BoardHealth(hashrate_hs=66e12, chips=108, board_temp_c=61.5, chip_temp_c=77.0)
    health = Health.of(
        [board, board, BoardHealth(chips=100, chip_temp_c=80.5)],
        [5400, 5460, 0, 5520],
        reject_ratio=0.0025,
        uptime_s=3600,
        firmware="BMMiner 1.0",
        errors=("board 3: 8 chips missing",),
    )
    state.observe(Sample(ODD_IDS[0], NOW, sample.workload, 3480.5, 2e14, 80.5, health=health))
    state.observe(Sample(ODD_IDS[4], NOW, Workload.mine("main"), 1.0, 2e14, None, health=Health()))
    return state


class ReferenceCollector(Collector):
    """The same families, built the slow way with prometheus_client objects."""

    def __init__(self, state: FleetState) -> None:
        self.state = state

    def collect(self) -> list[GaugeMetricFamily]:
        f = {
            fam.name: GaugeMetricFamily(fam.name, fam.help, labels=["device"])
            for fam in (*DEVICE_FAMILIES, *HEALTH_FAMILIES)
        }
        f["wattmux_device_info"] = GaugeMetricFamily(
            "wattmux_device_info", DEVICE_FAMILIES[0].help, labels=["device", "model", "kind"]
        )
        f["wattmux_device_workload"] = GaugeMetricFamily(
            "wattmux_device_workload", DEVICE_FAMILIES[2].help, labels=["device", "workload"]
        )
        for device_id in sorted(self.state.devices):
            d = self.state.devices[device_id]
            f["wattmux_device_info"].add_metric([device_id, d.model, d.kind.value], 1.0)
            sample = self.state.samples.get(device_id)
            reachable = self.state.status[device_id].reachable and sample is not None
            f["wattmux_device_up"].add_metric([device_id], 1.0 if reachable else 0.0)
            observed = sample.workload.kind if reachable and sample else None
            for kind in WorkloadKind:
                f["wattmux_device_workload"].add_metric(
                    [device_id, kind.value], 1.0 if kind is observed else 0.0
                )
            if not reachable or sample is None:
                continue
            f["wattmux_device_power_watts"].add_metric([device_id], sample.power_w)
            f["wattmux_device_hashrate_hashes_per_second"].add_metric(
                [device_id], sample.hashrate_hs
            )
            if sample.temperature_c is not None:
                f["wattmux_device_temperature_celsius"].add_metric(
                    [device_id], sample.temperature_c
                )
            f["wattmux_device_sample_age_seconds"].add_metric([device_id], NOW - sample.observed_at)
            health = sample.health
            if health is not None:
                chips = [b.chips for b in health.boards if b.chips is not None]
                chip_temps = [b.chip_temp_c for b in health.boards if b.chip_temp_c is not None]
                board_temps = [b.board_temp_c for b in health.boards if b.board_temp_c]
                values = {
                    "wattmux_device_chip_temp_max_celsius": max(chip_temps, default=None),
                    "wattmux_device_board_temp_max_celsius": max(board_temps, default=None),
                    "wattmux_device_fan_rpm_min": min(health.fans_rpm, default=None),
                    "wattmux_device_hashboards": len(health.boards) or None,
                    "wattmux_device_chips_missing": 3 * 108 - sum(chips) if chips else None,
                    "wattmux_device_share_reject_ratio": health.reject_ratio,
                    "wattmux_device_uptime_seconds": health.uptime_s,
                    "wattmux_device_error_codes": len(health.errors),
                }
                for name, value in values.items():
                    if value is not None:
                        f[name].add_metric([device_id], float(value))
        uncatalogued = GaugeMetricFamily(UNCATALOGUED.name, UNCATALOGUED.help)
        uncatalogued.add_metric([], 1.0)
        return [f[fam.name] for fam in (*DEVICE_FAMILIES, *HEALTH_FAMILIES)] + [uncatalogued]


def parsed(
    text: str,
) -> list[tuple[str, str, str, list[tuple[str, tuple[tuple[str, str], ...], float]]]]:
    out = []
    for family in text_string_to_metric_families(text):
        samples = [(s.name, tuple(sorted(s.labels.items())), s.value) for s in family.samples]
        out.append((family.name, family.type, family.documentation, samples))
    return out


def test_fast_path_parses_to_the_reference_exposition() -> None:
    state = build_state()
    registry = CollectorRegistry()
    registry.register(ReferenceCollector(state))
    reference = parsed(generate_latest(registry).decode())
    fast = parsed(DeviceExposition(state).render(NOW))
    assert fast == reference
    assert len(fast) == len(DEVICE_FAMILIES) + len(HEALTH_FAMILIES) + 1
    text = DeviceExposition(state).render(NOW)
    assert 'wattmux_device_chips_missing{device="plain"} 8.0' in text
    assert 'wattmux_device_fan_rpm_min{device="plain"} 0.0' in text
    assert 'wattmux_device_chip_temp_max_celsius{device="plain"} 80.5' in text
    assert "wattmux_devices_uncatalogued 1.0" in text


def test_fast_path_follows_changes_of_state() -> None:
    state = build_state()
    exposition = DeviceExposition(state)
    before = exposition.render(NOW)
    state.observe(Sample("z-never-polled", NOW, Workload.mine("main"), 100.0, 1e12, 50.0))
    after = exposition.render(NOW)
    assert 'wattmux_device_up{device="z-never-polled"} 1.0' in after
    assert 'wattmux_device_up{device="z-never-polled"} 0.0' in before
    assert 'wattmux_device_workload{device="z-never-polled",workload="mine"} 1.0' in after


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1.0, "1.0"),
        (math.inf, "+Inf"),
        (-math.inf, "-Inf"),
        (math.nan, "NaN"),
        (2.5e14, "250000000000000.0"),
    ],
)
def test_format_value(value: float, text: str) -> None:
    assert format_value(value) == text


def test_escape_label_value() -> None:
    assert escape_label_value('a"b\\c\nd') == 'a\\"b\\\\c\\nd'


def test_fast_path_follows_a_changed_device_set() -> None:
    state = build_state()
    exposition = DeviceExposition(state)
    exposition.render(NOW)
    state.devices["a-new"] = device("a-new", model="S19j Pro")
    state.status["a-new"] = state.status["z-never-polled"]
    state.devices["plain"] = device("plain", model="S21 XP")  # replaced in place
    text = exposition.render(NOW)
    assert 'wattmux_device_info{device="a-new",model="S19j Pro",kind="asic"} 1.0' in text
    assert 'wattmux_device_info{device="plain",model="S21 XP",kind="asic"} 1.0' in text
    assert text.count('wattmux_device_info{device="plain"') == 1
    del state.devices["a-new"]
    assert "a-new" not in exposition.render(NOW)
