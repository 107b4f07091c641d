"""Fast text exposition of the per-device metric families (one series or more per device).

prometheus_client builds a Python object per sample and formats it generically;
for 10,000 devices (about 90,000 series) that costs most of a second per
scrape.  ``DeviceExposition`` writes the same text format directly: for each
device it caches the constant part of every line (name and escaped labels),
and the four-line one-hot workload block and the ``up`` line for each possible
state, so a scrape is one dictionary lookup per device plus one float
formatting per measured value.  The families and their help texts live in the
table ``DEVICE_FAMILIES``; the rest of the exposition stays with
prometheus_client.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from scheduler.model import Device, Sample, WorkloadKind
from scheduler.state import FleetState


@dataclass(frozen=True, slots=True)
class DeviceFamily:
    """One per-device gauge family: name, help text and the sample field it shows."""

    name: str
    help: str
    value: Callable[[Sample, float], float | None] | None  # None: rendered by a special case


# Exposition order; ``value`` gets the sample and the scrape's monotonic time.
DEVICE_FAMILIES: Final[tuple[DeviceFamily, ...]] = (
    DeviceFamily(
        "wattmux_device_info",
        "Always 1; labels give the device's model and kind.",
        None,
    ),
    DeviceFamily("wattmux_device_up", "1 if the device answered its last poll, else 0.", None),
    DeviceFamily(
        "wattmux_device_workload",
        "1 for the workload kind the device was last observed running.",
        None,
    ),
    DeviceFamily(
        "wattmux_device_power_watts", "Power drawn by the device.", lambda s, _now: s.power_w
    ),
    DeviceFamily(
        "wattmux_device_hashrate_hashes_per_second",
        "Hash rate reported by the device.",
        lambda s, _now: s.hashrate_hs,
    ),
    DeviceFamily(
        "wattmux_device_temperature_celsius",
        "Temperature reported by the device.",
        lambda s, _now: s.temperature_c,
    ),
    DeviceFamily(
        "wattmux_device_sample_age_seconds",
        "Seconds since the device's last sample.",
        lambda s, now: max(0.0, now - s.observed_at),
    ),
)
DEVICE_FAMILY_NAMES: Final = tuple(family.name for family in DEVICE_FAMILIES)
_VALUE_FAMILIES: Final = tuple(f for f in DEVICE_FAMILIES if f.value is not None)
_NON_FINITE: Final = {math.inf: "+Inf", -math.inf: "-Inf"}


def escape_label_value(value: str) -> str:
    """Escape a label value for the text format (backslash, double quote, newline)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def format_value(value: float) -> str:
    """Format a sample value as the text format expects (``+Inf``, ``-Inf``, ``NaN``)."""
    if value != value:
        return "NaN"
    text = _NON_FINITE.get(value)
    return text if text is not None else repr(float(value))


@dataclass(frozen=True, slots=True)
class _DeviceLines:
    """The constant text of one device's lines, built once per Device object."""

    device: Device
    info: str
    up: tuple[str, str]  # (down line, up line)
    workload: dict[WorkloadKind | None, str]  # observed kind (None: unknown) -> 4 lines
    prefixes: tuple[str, ...]  # "name{device=...} " for each value family


def _device_lines(device: Device) -> _DeviceLines:
    label = f'device="{escape_label_value(device.id)}"'
    info = (
        f'wattmux_device_info{{{label},model="{escape_label_value(device.model)}",'
        f'kind="{device.kind.value}"}} 1.0\n'
    )
    up = (f"wattmux_device_up{{{label}}} 0.0\n", f"wattmux_device_up{{{label}}} 1.0\n")
    workload: dict[WorkloadKind | None, str] = {}
    for observed in (*WorkloadKind, None):
        workload[observed] = "".join(
            f'wattmux_device_workload{{{label},workload="{kind.value}"}} '
            f"{'1.0' if kind is observed else '0.0'}\n"
            for kind in WorkloadKind
        )
    prefixes = tuple(f"{family.name}{{{label}}} " for family in _VALUE_FAMILIES)
    return _DeviceLines(device, info, up, workload, prefixes)


class DeviceExposition:
    """Renders the per-device families of a FleetState as Prometheus text (format 0.0.4)."""

    def __init__(self, state: FleetState) -> None:
        self._state = state
        self._lines: dict[str, _DeviceLines] = {}

    def _lines_of(self, device: Device) -> _DeviceLines:
        cached = self._lines.get(device.id)
        if cached is None or cached.device is not device:
            cached = _device_lines(device)
            self._lines[device.id] = cached
        return cached

    def render(self, now: float) -> str:
        """Return the text of every per-device family at monotonic time ``now``."""
        state = self._state
        samples = state.samples
        status = state.status
        info: list[str] = []
        up: list[str] = []
        workload: list[str] = []
        values: list[list[str]] = [[] for _ in _VALUE_FAMILIES]
        getters = [family.value for family in _VALUE_FAMILIES]
        for device_id in sorted(state.devices):
            lines = self._lines_of(state.devices[device_id])
            info.append(lines.info)
            device_status = status.get(device_id)
            sample = samples.get(device_id)
            if sample is None or device_status is None or not device_status.reachable:
                up.append(lines.up[0])
                workload.append(lines.workload[None])
                continue
            up.append(lines.up[1])
            workload.append(lines.workload[sample.workload.kind])
            for out, prefix, getter in zip(values, lines.prefixes, getters, strict=True):
                assert getter is not None
                value = getter(sample, now)
                if value is not None:
                    out.append(f"{prefix}{format_value(value)}\n")
        bodies = [info, up, workload, *values]
        parts: list[str] = []
        for family, body in zip(DEVICE_FAMILIES, bodies, strict=True):
            parts.append(f"# HELP {family.name} {family.help}\n# TYPE {family.name} gauge\n")
            parts.extend(body)
        return "".join(parts)
