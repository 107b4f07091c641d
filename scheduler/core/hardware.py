"""Nominal facts per miner model (stock settings), used when a device entry omits them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ModelFacts:
    """Stock hash rate, power and limits of one miner model."""

    hashrate_ths: float
    power_w: float
    sleep_power_w: float
    max_temperature_c: float

    @property
    def efficiency_j_per_th(self) -> float:
        """Joules per terahash at stock settings."""
        return self.power_w / self.hashrate_ths


# Manufacturer stock figures (air-cooled models, stock firmware).
MODELS: dict[str, ModelFacts] = {
    "S19j Pro": ModelFacts(
        hashrate_ths=104.0, power_w=3068.0, sleep_power_w=20.0, max_temperature_c=85.0
    ),
    "S19 XP": ModelFacts(
        hashrate_ths=140.0, power_w=3010.0, sleep_power_w=20.0, max_temperature_c=85.0
    ),
    "S21": ModelFacts(
        hashrate_ths=200.0, power_w=3500.0, sleep_power_w=15.0, max_temperature_c=85.0
    ),
    "S21 Pro": ModelFacts(
        hashrate_ths=234.0, power_w=3510.0, sleep_power_w=15.0, max_temperature_c=85.0
    ),
    "S21 XP": ModelFacts(
        hashrate_ths=270.0, power_w=3645.0, sleep_power_w=15.0, max_temperature_c=85.0
    ),
    # MicroBT Whatsminer (driver = "whatsminer"); sleep power is the control board's.
    "M30S++": ModelFacts(
        hashrate_ths=112.0, power_w=3472.0, sleep_power_w=15.0, max_temperature_c=85.0
    ),
    "M50S": ModelFacts(
        hashrate_ths=126.0, power_w=3276.0, sleep_power_w=15.0, max_temperature_c=85.0
    ),
    "M60S": ModelFacts(
        hashrate_ths=186.0, power_w=3441.0, sleep_power_w=15.0, max_temperature_c=85.0
    ),
}
