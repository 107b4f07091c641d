"""Physics of one simulated ASIC: power and hash rate ramps, hashes done, chip temperature.

Computed lazily from the injected clock: power and hash rate ramp linearly over
ramp_seconds towards the target (sleep power, or nominal scaled by the power
level); chip temperature follows a first-order lag (thermal_tau_seconds)
towards ambient plus a rise proportional to the hash rate.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

CHIP_RISE_C = 45.0  # chip temperature above ambient at full hash rate
IDLE_RISE_C = 3.0  # above ambient with hashboards asleep (controller and PSU still on)
PCB_SHARE = 0.7  # PCB rise as a share of the chip rise
# Four sensors per board, below the hottest by a share of the rise.
SENSOR_SPREAD = (0.30, 0.33, 0.02, 0.0)


@dataclass(frozen=True, slots=True)
class Segment:
    """A linear ramp from the values at ``start`` to the targets, then flat."""

    start: float
    hashrate_from_hs: float
    hashrate_to_hs: float
    power_from_w: float
    power_to_w: float
    temperature_from_c: float
    hashes_before: float


class MinerPhysics:
    """Piecewise-linear power and hash rate with a lagging chip temperature."""

    def __init__(
        self,
        *,
        mining_hashrate_hs: float,
        mining_power_w: float,
        sleep_power_w: float,
        board_offsets_c: Sequence[float],
        ramp_seconds: float,
        thermal_tau_seconds: float,
        ambient_c: float,
        clock: Callable[[], float],
    ) -> None:
        self.mining_hashrate_hs = mining_hashrate_hs
        self.mining_power_w = mining_power_w
        self.sleep_power_w = sleep_power_w
        self.board_offsets_c = list(board_offsets_c)
        self.ramp_seconds = ramp_seconds
        self.thermal_tau_seconds = thermal_tau_seconds
        self.ambient_c = ambient_c
        self._clock = clock
        self.started_at = clock()
        self.segment = Segment(
            start=self.started_at,
            hashrate_from_hs=mining_hashrate_hs,
            hashrate_to_hs=mining_hashrate_hs,
            power_from_w=mining_power_w,
            power_to_w=mining_power_w,
            temperature_from_c=self.temperature_target_c(mining_hashrate_hs),
            hashes_before=0.0,
        )

    def now(self, at: float | None) -> float:
        """``at``, or the clock's now when None."""
        return self._clock() if at is None else at

    def _progress(self, now: float) -> float:
        """Fraction of the current ramp done at ``now`` (1.0 once finished)."""
        elapsed = max(0.0, now - self.segment.start)
        if self.ramp_seconds <= 0:
            return 1.0
        return min(1.0, elapsed / self.ramp_seconds)

    def hashrate_hs(self, at: float | None = None) -> float:
        """Hash rate in H/s at ``at`` (default: now)."""
        seg, share = self.segment, self._progress(self.now(at))
        return seg.hashrate_from_hs + (seg.hashrate_to_hs - seg.hashrate_from_hs) * share

    def power_w(self, at: float | None = None) -> float:
        """Input power in W at ``at`` (default: now)."""
        seg, share = self.segment, self._progress(self.now(at))
        return seg.power_from_w + (seg.power_to_w - seg.power_from_w) * share

    def hashes(self, now: float) -> float:
        """Hashes done since start: the integral of the piecewise-linear hash rate."""
        seg = self.segment
        elapsed = max(0.0, now - seg.start)
        ramp = self.ramp_seconds
        h0, h1 = seg.hashrate_from_hs, seg.hashrate_to_hs
        if ramp <= 0:
            return seg.hashes_before + h1 * elapsed
        if elapsed <= ramp:
            return seg.hashes_before + h0 * elapsed + (h1 - h0) * elapsed**2 / (2 * ramp)
        return seg.hashes_before + (h0 + h1) * ramp / 2 + h1 * (elapsed - ramp)

    def temperature_target_c(self, hashrate_hs: float) -> float:
        """Steady-state chip temperature at a hash rate."""
        load = hashrate_hs / self.mining_hashrate_hs if self.mining_hashrate_hs > 0 else 0.0
        return self.ambient_c + IDLE_RISE_C + (CHIP_RISE_C - IDLE_RISE_C) * load

    def chip_temperature_c(self, at: float | None = None) -> float:
        """Average chip temperature (before per-board offsets), a first-order lag of the load."""
        now = self.now(at)
        seg, tau, ramp = self.segment, self.thermal_tau_seconds, self.ramp_seconds
        if tau <= 0:
            return self.temperature_target_c(self.hashrate_hs(now))
        elapsed = max(0.0, now - seg.start)
        start_c = seg.temperature_from_c
        end_target_c = self.temperature_target_c(seg.hashrate_to_hs)
        if ramp > 0:
            # Exact response of y' = (a + b t - y) / tau to the linear target during the ramp.
            a = self.temperature_target_c(seg.hashrate_from_hs)
            b = (end_target_c - a) / ramp
            span = min(elapsed, ramp)
            start_c = a + b * (span - tau) + (start_c - a + b * tau) * math.exp(-span / tau)
            elapsed -= span
        return end_target_c + (start_c - end_target_c) * math.exp(-elapsed / tau)

    def board_temperatures_c(self, now: float) -> list[tuple[list[int], list[int]]]:
        """Per board: (chip sensors, PCB sensors) in whole degrees, as firmware reports them."""
        chip_c = self.chip_temperature_c(now)
        boards = []
        for offset in self.board_offsets_c:
            hottest_chip = chip_c + offset
            hottest_pcb = self.ambient_c + PCB_SHARE * (chip_c - self.ambient_c) + offset
            chips = [
                round(hottest_chip - s * (hottest_chip - self.ambient_c)) for s in SENSOR_SPREAD
            ]
            pcbs = [round(hottest_pcb - s * (hottest_pcb - self.ambient_c)) for s in SENSOR_SPREAD]
            boards.append((chips, pcbs))
        return boards

    def retarget(self, power_level: float) -> None:
        """Start a ramp from the present values towards a power level (0 = asleep, 1 = stock)."""
        now = self._clock()
        asleep = power_level <= 0
        self.segment = Segment(
            start=now,
            hashrate_from_hs=self.hashrate_hs(now),
            hashrate_to_hs=0.0 if asleep else self.mining_hashrate_hs * power_level,
            power_from_w=self.power_w(now),
            power_to_w=self.sleep_power_w if asleep else self.mining_power_w * power_level,
            temperature_from_c=self.chip_temperature_c(now),
            hashes_before=self.hashes(now),
        )
