"""The fast per-device exposition says exactly what prometheus_client would say."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from scheduler.core.model import TERA, Device, Sample, Workload, WorkloadKind
from scheduler.core.state import FleetState
from scheduler.observability.exposition import (
    DEVICE_FAMILIES,
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
    state = FleetState([device(i) for i in ODD_IDS] + [device("z-never-polled")])
    values = (3480.5, math.inf, -0.0, 1e-300, 12345678901234.5)
    for index, device_id in enumerate(ODD_IDS):
        workload = Workload.sleep() if index % 2 else Workload.mine("main")
        temperature = None if index == 2 else 60.0 + index
        state.observe(Sample(device_id, NOW - index, workload, values[index], 2e14, temperature))
    state.mark_unreachable(ODD_IDS[3], "timeout", NOW)
    return state


class ReferenceCollector(Collector):
    """The same families, built the slow way with prometheus_client objects."""

    def __init__(self, state: FleetState) -> None:
        self.state = state

    def collect(self) -> list[GaugeMetricFamily]:
        f = {
            fam.name: GaugeMetricFamily(fam.name, fam.help, labels=["device"])
            for fam in DEVICE_FAMILIES
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
        return [f[fam.name] for fam in DEVICE_FAMILIES]


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
    assert len(fast) == len(DEVICE_FAMILIES)


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
