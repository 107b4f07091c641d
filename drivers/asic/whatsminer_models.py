"""Whatsminer families: the lowest power level the drivers send, and power levels read back.

Shared by the API v2 driver (``drivers.asic.whatsminer``) and the API v3 driver
(``drivers.asic.whatsminer_v3``).
"""

from __future__ import annotations

from dataclasses import dataclass

from scheduler.core.model import Device, Workload, WorkloadKind


@dataclass(frozen=True, slots=True)
class WhatsminerModel:
    """What the driver needs to know per Whatsminer family."""

    family: str
    min_power_level: float  # lowest set_power_pct share this driver will send


# The API accepts 0..100 %; the floors are this project's conservative choice, not vendor figures.
MODELS: tuple[WhatsminerModel, ...] = (
    WhatsminerModel("M30S", 0.5),
    WhatsminerModel("M50", 0.5),
    WhatsminerModel("M60", 0.4),
)
OTHER_MODEL = WhatsminerModel("other", 0.6)


def model_facts(model: str) -> WhatsminerModel:
    """The facts of the longest family prefix of ``model`` ("M30S++" -> M30S)."""
    name = model.upper().removeprefix("WHATSMINER").strip()
    matches = [m for m in MODELS if name.startswith(m.family)]
    return max(matches, key=lambda m: len(m.family), default=OTHER_MODEL)


class PowerLevels:
    """Power levels read as measured power over nominal, snapped to the last target."""

    def __init__(self, tolerance: float) -> None:
        self.tolerance = tolerance
        self._targets: dict[str, float] = {}

    def level(self, device: Device, power_w: float) -> float:
        """The level a measured power shows (the target when within tolerance)."""
        measured = power_w / device.nominal_power_w
        target = self._targets.get(device.id, 1.0)
        if abs(measured - target) <= self.tolerance:
            return target
        return min(1.0, max(0.01, round(measured, 2)))

    def remember(self, device: Device, level: float) -> None:
        """Record the level last set on ``device``."""
        self._targets[device.id] = level

    def range_refusal(self, device: Device, workload: Workload) -> str | None:
        """Why ``workload``'s power level is outside what the model can do, or None."""
        if workload.kind is not WorkloadKind.MINE:
            return None
        floor = model_facts(device.model).min_power_level
        if not floor <= workload.power_level <= 1.0:
            return f"Whatsminer {device.model} power levels run {floor:g}..1.0"
        return None
