"""Reference: the measured efficiency as one Python loop per sample (the code before the arrays).

Kept to check ``scheduler.policies.efficiency`` against, sample for sample.

Each device's own efficiency (J/TH), smoothed from its readings where they can be trusted.

Real fleets differ machine by machine: measured J/TH drifts with age, tuning
and boards.  ``MeasuredEfficiency.observe(snapshot)`` folds every trustworthy
sample into an exponentially weighted mean of the device's power and hash
rate (``alpha`` per new sample; a sample is used once, by its time).  A
sample is trustworthy when the device mines at stock power level, the power
is measured (not ``power_estimated``), both figures are positive, and their
ratio lies within ``[1 / PLAUSIBLE_FACTOR, PLAUSIBLE_FACTOR]`` of the model's
nominal J/TH.  ``j_per_th(device)`` is the smoothed measured J/TH once
``min_samples`` samples were folded in, the nominal figure otherwise.

Pure: no I/O, no clock; bounded by the number of devices it is shown.
"""

from __future__ import annotations

from collections.abc import Iterable

from scheduler.core.model import TERA, Device, Sample, Snapshot, WorkloadKind

PLAUSIBLE_FACTOR = 2.0
DEFAULT_ALPHA = 0.2
DEFAULT_MIN_SAMPLES = 3


class ReferenceEfficiency:
    """Smoothed measured power and hash rate per device, and the J/TH to rank by."""

    def __init__(
        self, alpha: float = DEFAULT_ALPHA, min_samples: int = DEFAULT_MIN_SAMPLES
    ) -> None:
        if not 0.0 < alpha <= 1.0 or min_samples < 1:
            raise ValueError("alpha in (0, 1] and min_samples >= 1 needed")
        self.alpha = alpha
        self.min_samples = min_samples
        # device id -> (power W, hash rate TH/s, samples, time of the last sample used)
        self._state: dict[str, tuple[float, float, int, float]] = {}
        # device id -> its ratios (see ratios()), kept as samples are folded in
        self._ratios: dict[str, tuple[float, float]] = {}

    @staticmethod
    def trustworthy(device: Device, sample: Sample) -> bool:
        """True when the sample measures the device's efficiency at stock power."""
        workload = sample.workload
        if workload.kind is not WorkloadKind.MINE or workload.power_level != 1.0:
            return False
        if sample.power_estimated or sample.power_w <= 0 or sample.hashrate_hs <= 0:
            return False
        measured = sample.power_w / (sample.hashrate_hs / TERA)
        nominal = device.efficiency_j_per_th
        return nominal / PLAUSIBLE_FACTOR <= measured <= nominal * PLAUSIBLE_FACTOR

    def observe(self, snapshot: Snapshot) -> None:
        """Fold the snapshot's new trustworthy samples in; forget devices that left the fleet."""
        devices = snapshot.devices
        state = self._state
        ratios = self._ratios
        if len(state) > len(devices):  # devices left: forget them (bounded by the fleet's size)
            for device_id in [d for d in state if d not in devices]:
                del state[device_id]
                ratios.pop(device_id, None)
        a, needed, trustworthy = self.alpha, self.min_samples, self.trustworthy
        for device_id, sample in snapshot.samples.items():
            known = state.get(device_id)
            if known is not None and sample.observed_at <= known[3]:
                continue  # the same reading again
            device = devices.get(device_id)
            if device is None or not trustworthy(device, sample):
                continue
            hashrate = sample.hashrate_hs / TERA
            if known is None:
                known = (sample.power_w, hashrate, 1, sample.observed_at)
            else:
                power, rate, count, _ = known
                known = (
                    power + a * (sample.power_w - power),
                    rate + a * (hashrate - rate),
                    count + 1,
                    sample.observed_at,
                )
            state[device_id] = known
            if known[2] >= needed:
                pair = (
                    round(known[0] / device.nominal_power_w, 2),
                    round(known[1] * TERA / device.nominal_hashrate_hs, 2),
                )
                if pair == (1.0, 1.0):  # as nominal: keeps its class whole
                    ratios.pop(device_id, None)
                else:
                    ratios[device_id] = pair

    def __bool__(self) -> bool:
        """True once any device measures other than its nominal figures (to 1 %)."""
        return bool(self._ratios)

    def ratios_of(self, device_id: str) -> tuple[float, float] | None:
        """(measured / nominal power, measured / nominal hash rate), 2 decimals; None: as nominal."""
        return self._ratios.get(device_id)

    def measured(self, device_id: str) -> float | None:
        """The smoothed measured J/TH once enough samples were seen, else None."""
        known = self._state.get(device_id)
        if known is None or known[2] < self.min_samples:
            return None
        return known[0] / known[1]

    def j_per_th(self, device: Device) -> float:
        """The J/TH to rank the device by: measured where trustworthy, nominal otherwise."""
        measured = self.measured(device.id)
        return device.efficiency_j_per_th if measured is None else measured

    def least_efficient_first(self, devices: Iterable[Device]) -> list[Device]:
        """Devices by falling J/TH (measured where trustworthy), ties by id."""
        return sorted(devices, key=lambda d: (-self.j_per_th(d), d.id))


def reference_split(
    model: ReferenceEfficiency, device_ids: tuple[str, ...]
) -> list[tuple[tuple[float, float] | None, tuple[str, ...]]]:
    """The class split of max-margin before the arrays: a dict of parts by ratios, in order."""
    parts: dict[tuple[float, float] | None, list[str]] = {}
    if model:
        for device_id in device_ids:
            parts.setdefault(model.ratios_of(device_id), []).append(device_id)
    if len(parts) <= 1:
        return [(next(iter(parts), None), device_ids)]
    return [(ratio, tuple(ids)) for ratio, ids in parts.items()]
