"""Prometheus gauges of the operator's controls, read at scrape time: mode, curtail, cap, overrides.

Registered by the daemon once its store is open (the dashboards' mode,
curtail, override and maintenance panels, and the effective cap beside the
configured one).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


@dataclass(frozen=True, slots=True)
class ControlReading:
    """The controls at one scrape."""

    mode: str
    curtail: bool
    effective_cap_kw: float
    overrides: int
    in_maintenance: int


class ControlCollector(Collector):
    """Mode, curtail in force, the effective power cap, overrides and machines in maintenance."""

    def __init__(self, read: Callable[[], ControlReading], modes: Sequence[str]) -> None:
        self._read = read
        self._modes = tuple(modes)

    def describe(self) -> Iterable[Metric]:
        """The families without samples (the registry checks name clashes with them)."""
        return self._families().values()

    @staticmethod
    def _families() -> dict[str, GaugeMetricFamily]:
        return {
            "mode": GaugeMetricFamily(
                "wattmux_mode", "1 for the daemon's mode, 0 for the others.", labels=["mode"]
            ),
            "curtail": GaugeMetricFamily(
                "wattmux_curtail_active", "1 while an operator curtail event is in force, else 0."
            ),
            "cap": GaugeMetricFamily(
                "wattmux_effective_power_cap_watts",
                "The site power cap in force: the configured cap, or a curtail's lower target.",
            ),
            "overrides": GaugeMetricFamily(
                "wattmux_overrides_active", "Device overrides in force."
            ),
            "maintenance": GaugeMetricFamily(
                "wattmux_maintenance_devices", "Devices in a maintenance window now."
            ),
        }

    def collect(self) -> Iterable[Metric]:
        """Read the controls now."""
        now = self._read()
        families = self._families()
        for mode in self._modes:
            families["mode"].add_metric([mode], 1.0 if now.mode == mode else 0.0)
        families["curtail"].add_metric([], 1.0 if now.curtail else 0.0)
        families["cap"].add_metric([], now.effective_cap_kw * 1000.0)
        families["overrides"].add_metric([], float(now.overrides))
        families["maintenance"].add_metric([], float(now.in_maintenance))
        return families.values()
