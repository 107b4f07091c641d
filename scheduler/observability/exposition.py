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
from dataclasses import dataclass
from typing import Final

from scheduler.core.hardware import lookup
from scheduler.core.model import Device, DeviceKind, Health, WorkloadKind
from scheduler.core.state import FleetState


@dataclass(frozen=True, slots=True)
class DeviceFamily:
    """One per-device gauge family: name and help text."""

    name: str
    help: str


# Exposition order.  The first three are constant per device state; the last four are
# sample values (power, hash rate, temperature, age), in the order render() writes them.
DEVICE_FAMILIES: Final[tuple[DeviceFamily, ...]] = (
    DeviceFamily("wattmux_device_info", "Always 1; labels give the device's model and kind."),
    DeviceFamily("wattmux_device_up", "1 if the device answered its last poll, else 0."),
    DeviceFamily(
        "wattmux_device_workload", "1 for the workload kind the device was last observed running."
    ),
    DeviceFamily("wattmux_device_power_watts", "Power drawn by the device."),
    DeviceFamily("wattmux_device_hashrate_hashes_per_second", "Hash rate reported by the device."),
    DeviceFamily("wattmux_device_temperature_celsius", "Temperature reported by the device."),
    DeviceFamily("wattmux_device_sample_age_seconds", "Seconds since the device's last sample."),
)
# Deep health, one series per device (never per board or chip); written where the firmware
# reports the value.  Chips missing need the model's chip count from the catalog.
HEALTH_FAMILIES: Final[tuple[DeviceFamily, ...]] = (
    DeviceFamily("wattmux_device_chip_temp_max_celsius", "Hottest chip of any hash board."),
    DeviceFamily("wattmux_device_board_temp_max_celsius", "Hottest hash board sensor."),
    DeviceFamily("wattmux_device_fan_rpm_min", "Speed of the slowest fan (RPM)."),
    DeviceFamily("wattmux_device_hashboards", "Hash boards the firmware reports."),
    DeviceFamily(
        "wattmux_device_chips_missing",
        "Chips the model's boards should have (catalog) that the firmware does not find.",
    ),
    DeviceFamily("wattmux_device_share_reject_ratio", "Rejected share of submitted work."),
    DeviceFamily("wattmux_device_uptime_seconds", "Seconds since the mining software started."),
    DeviceFamily("wattmux_device_error_codes", "Error codes the firmware reports now."),
)
UNCATALOGUED = DeviceFamily(
    "wattmux_devices_uncatalogued",
    "ASICs whose model the model catalog lacks (nominal figures from the config).",
)
DEVICE_FAMILY_NAMES: Final = tuple(
    family.name for family in (*DEVICE_FAMILIES, *HEALTH_FAMILIES, UNCATALOGUED)
)
_VALUE_FAMILIES: Final = DEVICE_FAMILIES[3:]
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
    health_prefixes: tuple[str, ...]  # the same for each health family
    chips_expected: int | None  # the model's chips (catalog), None when unknown
    catalogued: bool


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
    health_prefixes = tuple(f"{family.name}{{{label}}} " for family in HEALTH_FAMILIES)
    facts = lookup(device.model)
    return _DeviceLines(
        device,
        info,
        up,
        workload,
        prefixes,
        health_prefixes,
        None if facts is None else facts.chips_expected,
        facts is not None or device.kind is not DeviceKind.ASIC,
    )


def _health_values(health: Health, chips_expected: int | None) -> tuple[float | None, ...]:
    """The HEALTH_FAMILIES values of one device, in table order (None: not reported)."""
    boards, ratio, uptime, chip, board, fan, found = health.summary()
    missing = None if chips_expected is None or found is None else max(0, chips_expected - found)
    return (
        chip,
        board,
        fan,
        boards or None,
        missing,
        ratio,
        uptime,
        len(health.errors),
    )


class DeviceExposition:
    """Renders the per-device families of a FleetState as Prometheus text (format 0.0.4)."""

    def __init__(self, state: FleetState) -> None:
        self._state = state
        self._lines: dict[str, _DeviceLines] = {}
        self._order: list[_DeviceLines] = []
        self._order_keys: set[str] = set()

    def _lines_of(self, device: Device) -> _DeviceLines:
        cached = self._lines.get(device.id)
        if cached is None or cached.device is not device:
            cached = _device_lines(device)
            self._lines[device.id] = cached
        return cached

    def _ordered(self) -> list[_DeviceLines]:
        """The cached lines of every device, sorted by id; rebuilt when the device set changes."""
        devices = self._state.devices
        if self._order_keys != devices.keys() or any(
            lines.device is not devices[lines.device.id] for lines in self._order
        ):
            self._order_keys = set(devices)
            self._order = [self._lines_of(devices[device_id]) for device_id in sorted(devices)]
        return self._order

    def render(self, now: float) -> str:
        """Return the text of every per-device family at monotonic time ``now``."""
        return "".join(self.render_parts(now))

    def render_parts(self, now: float) -> list[str]:
        """The text of render() as a list of pieces (the caller joins them once)."""
        samples = self._state.samples
        status = self._state.status
        info: list[str] = []
        up: list[str] = []
        workload: list[str] = []
        power: list[str] = []
        hashrate: list[str] = []
        temperature: list[str] = []
        age: list[str] = []
        healths: list[list[str]] = [[] for _ in HEALTH_FAMILIES]
        uncatalogued = 0
        for lines in self._ordered():
            uncatalogued += not lines.catalogued
            device_id = lines.device.id
            info.append(lines.info)
            device_status = status.get(device_id)
            sample = samples.get(device_id)
            if sample is None or device_status is None or not device_status.reachable:
                up.append(lines.up[0])
                workload.append(lines.workload[None])
                continue
            up.append(lines.up[1])
            workload.append(lines.workload[sample.workload.kind])
            prefixes = lines.prefixes
            # x - x == 0 holds for every finite float: repr() is then the exposition format.
            value = sample.power_w
            power.append(prefixes[0] + (repr(value) if value - value == 0 else format_value(value)))
            value = sample.hashrate_hs
            hashrate.append(
                prefixes[1] + (repr(value) if value - value == 0 else format_value(value))
            )
            if sample.temperature_c is not None:
                value = sample.temperature_c
                temperature.append(
                    prefixes[2] + (repr(value) if value - value == 0 else format_value(value))
                )
            value = now - sample.observed_at
            age.append(prefixes[3] + (repr(value) if value > 0 else "0.0"))
            if sample.health is not None:
                values = _health_values(sample.health, lines.chips_expected)
                for body, prefix, found in zip(healths, lines.health_prefixes, values, strict=True):
                    if found is not None:
                        body.append(prefix + repr(float(found)))  # finite: from the header
        parts: list[str] = []
        for family, body in zip(DEVICE_FAMILIES[:3], (info, up, workload), strict=True):
            parts.append(_header(family))
            parts.extend(body)
        for family, body in zip(_VALUE_FAMILIES, (power, hashrate, temperature, age), strict=True):
            parts.append(_header(family))
            if body:
                parts.append("\n".join(body))
                parts.append("\n")
        for family, body in zip(HEALTH_FAMILIES, healths, strict=True):
            parts.append(_header(family))
            if body:
                parts.append("\n".join(body))
                parts.append("\n")
        parts.append(_header(UNCATALOGUED))
        parts.append(f"{UNCATALOGUED.name} {float(uncatalogued)!r}\n")
        return parts


def _header(family: DeviceFamily) -> str:
    return f"# HELP {family.name} {family.help}\n# TYPE {family.name} gauge\n"
