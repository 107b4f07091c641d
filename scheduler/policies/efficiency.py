"""Each device's own efficiency (J/TH), smoothed from its readings where they can be trusted.

Real fleets differ machine by machine: measured J/TH drifts with age, tuning
and boards.  ``MeasuredEfficiency.observe(snapshot)`` folds every trustworthy
sample into an exponentially weighted mean of the device's power and hash
rate (``alpha`` per new sample; a sample is used once, by its time).  A
sample is trustworthy when the device mines at stock power level, the power
is measured (not ``power_estimated``), both figures are positive, and their
ratio lies within ``[1 / PLAUSIBLE_FACTOR, PLAUSIBLE_FACTOR]`` of the model's
nominal J/TH.  ``j_per_th(device)`` is the smoothed measured J/TH once
``min_samples`` samples were folded in, the nominal figure otherwise.

The state is kept in numpy arrays, one slot per device id, and a snapshot's
samples are read column by column (one list comprehension per attribute),
so 100,000 devices cost a few tight loops and array operations per tick, not
a Python loop with branches and tuples per sample.  The arithmetic is the same IEEE double arithmetic as a loop per
sample would do, and the ratios are rounded to 2 decimals as Python's
``round`` does (numpy's ``round`` differs only next to a half-way point:
those few are rounded by ``round``).  ``split(device_ids)`` parts a class of
identical devices by their ratios, in the order of first appearance.

Pure: no I/O, no clock; bounded by the number of devices it is shown.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from itertools import repeat
from operator import is_

import numpy as np
import numpy.typing as npt

from scheduler.core.model import TERA, Device, Sample, Snapshot, WorkloadKind

PLAUSIBLE_FACTOR = 2.0
DEFAULT_ALPHA = 0.2
DEFAULT_MIN_SAMPLES = 3
_SPLIT_CACHE_LIMIT = 4096
_SMALL_CLASS = 64  # classes up to this size are parted in a Python loop

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]

_MINE = WorkloadKind.MINE


def round2(values: Floats) -> Floats:
    """``round(value, 2)`` of each value, as Python rounds (correctly, from the exact binary value).

    numpy rounds ``value * 100`` (itself rounded) half to even: next to a half-way point
    the two can differ, so those values (and non-finite ones) are rounded by ``round``.
    """
    with np.errstate(invalid="ignore", over="ignore"):
        rounded = np.round(values, 2)
        scaled = values * 100.0
        edge = ~np.isfinite(scaled) | (np.abs(scaled - np.floor(scaled) - 0.5) < 1e-6)
    for index in np.flatnonzero(edge).tolist():
        rounded[index] = round(float(values[index]), 2)
    return rounded


class MeasuredEfficiency:
    """Smoothed measured power and hash rate per device, and the J/TH to rank by."""

    def __init__(
        self, alpha: float = DEFAULT_ALPHA, min_samples: int = DEFAULT_MIN_SAMPLES
    ) -> None:
        if not 0.0 < alpha <= 1.0 or min_samples < 1:
            raise ValueError("alpha in (0, 1] and min_samples >= 1 needed")
        self.alpha = alpha
        self.min_samples = min_samples
        self._slot: dict[str, int] = {}  # device id -> its slot in the arrays
        self._ids: list[str] = []  # slot -> device id
        self._power: Floats = np.zeros(0)  # smoothed power W
        self._rate: Floats = np.zeros(0)  # smoothed hash rate TH/s
        self._count: Ints = np.zeros(0, dtype=np.int64)  # samples folded in (0: no state)
        self._last: Floats = np.zeros(0)  # time of the last sample used
        # (measured / nominal power, measured / nominal hash rate), 2 decimals, kept as samples
        # are folded in; has_ratio False: as nominal (or not enough samples)
        self._power_ratio: Floats = np.ones(0)
        self._hash_ratio: Floats = np.ones(0)
        self._has_ratio: Bools = np.zeros(0, dtype=np.bool_)
        self._known = 0  # slots with state
        self._ratios = 0  # slots with a ratio
        # The last snapshot's sample ids with their slots, and the devices of those ids with
        # their nominal figures: reused while equal (list comparisons in C, identity first).
        self._keys: list[str] = []
        self._key_slots: Ints = np.zeros(0, dtype=np.int64)
        self._devices: list[Device | None] = []
        self._nominal: tuple[Bools, Floats, Floats, Floats] | None = None
        self._split_devices = 0  # device ids held by the cached splits
        # id(device ids tuple) -> (the tuple, its ids as objects, slots, ratio keys, parts)
        self._splits: dict[
            int,
            tuple[
                tuple[str, ...],
                npt.NDArray[np.object_],
                Ints,
                npt.NDArray[np.complex128],
                list[tuple[tuple[float, float] | None, tuple[str, ...]]],
            ],
        ] = {}

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

    def _grow(self, size: int) -> None:
        """Room for ``size`` slots (doubling)."""
        have = len(self._count)
        if size <= have:
            return
        new = max(size, 2 * have, 64)
        extra = new - have
        self._power = np.concatenate([self._power, np.zeros(extra)])
        self._rate = np.concatenate([self._rate, np.zeros(extra)])
        self._count = np.concatenate([self._count, np.zeros(extra, dtype=np.int64)])
        self._last = np.concatenate([self._last, np.zeros(extra)])
        self._power_ratio = np.concatenate([self._power_ratio, np.ones(extra)])
        self._hash_ratio = np.concatenate([self._hash_ratio, np.ones(extra)])
        self._has_ratio = np.concatenate([self._has_ratio, np.zeros(extra, dtype=np.bool_)])

    def _slots_of(self, keys: list[str]) -> Ints:
        """Slots of these device ids, new ones given a slot."""
        slot = self._slot
        slots = np.fromiter(map(slot.get, keys, repeat(-1)), dtype=np.int64, count=len(keys))
        missing = np.flatnonzero(slots < 0)
        if len(missing):
            self._splits.clear()  # ids without a slot in a cached split may have one now
            self._split_devices = 0
            ids = self._ids
            for index in missing.tolist():
                key = keys[index]
                found = slot.get(key)
                if found is None:  # (the same id twice cannot happen in a mapping)
                    found = slot[key] = len(ids)
                    ids.append(key)
                slots[index] = found
            self._grow(len(ids))
        return slots

    def _compact(self, devices: int) -> None:
        """Drop slots without state once they outnumber the fleet (ids that came and went)."""
        if len(self._ids) <= 2 * devices + 1024:
            return
        keep = np.flatnonzero(self._count[: len(self._ids)] > 0)
        self._ids = [self._ids[i] for i in keep.tolist()]
        self._slot = {device_id: i for i, device_id in enumerate(self._ids)}
        self._power = self._power[keep]
        self._rate = self._rate[keep]
        self._count = self._count[keep]
        self._last = self._last[keep]
        self._power_ratio = self._power_ratio[keep]
        self._hash_ratio = self._hash_ratio[keep]
        self._has_ratio = self._has_ratio[keep]
        self._keys, self._key_slots = [], np.zeros(0, dtype=np.int64)
        self._splits.clear()
        self._split_devices = 0

    def _forget(self, slots: Ints) -> None:
        """No state for these slots (devices that left the fleet)."""
        if not len(slots):
            return
        self._known -= int(np.count_nonzero(self._count[slots] > 0))
        self._ratios -= int(np.count_nonzero(self._has_ratio[slots]))
        self._count[slots] = 0
        self._has_ratio[slots] = False
        self._power_ratio[slots] = 1.0
        self._hash_ratio[slots] = 1.0

    def _nominal_of(
        self, keys: list[str], devices: Mapping[str, Device]
    ) -> tuple[Bools, Floats, Floats, Floats]:
        """(present, nominal power W, nominal hash rate H/s, nominal J/TH) of each sample's device."""
        if list(devices) == keys:
            listed: list[Device | None] = list(devices.values())
        else:
            listed = list(map(devices.get, keys))
        if self._nominal is not None and listed == self._devices:
            return self._nominal
        count = len(listed)
        present = np.fromiter(map(is_, listed, repeat(None)), dtype=np.bool_, count=count)
        present = ~present
        power = np.fromiter(
            (d.nominal_power_w if d is not None else np.nan for d in listed), np.float64, count
        )
        rate = np.fromiter(
            (d.nominal_hashrate_hs if d is not None else np.nan for d in listed), np.float64, count
        )
        with np.errstate(divide="ignore", invalid="ignore"):
            efficiency = power / (rate / TERA)
        self._devices, self._nominal = listed, (present, power, rate, efficiency)
        return self._nominal

    def observe(self, snapshot: Snapshot) -> None:
        """Fold the snapshot's new trustworthy samples in; forget devices that left the fleet."""
        devices = snapshot.devices
        if self._known > len(devices):  # devices left: forget them (bounded by the fleet's size)
            ids = self._ids
            known = np.flatnonzero(self._count[: len(ids)] > 0).tolist()
            self._forget(np.array([s for s in known if ids[s] not in devices], dtype=np.int64))
        self._compact(len(devices))
        samples = snapshot.samples
        if not samples:
            return
        keys = list(samples)
        if keys == self._keys:
            slots = self._key_slots
        else:
            slots = self._slots_of(keys)
            self._keys, self._key_slots = keys, slots
        values = list(samples.values())
        # Column by column: a list comprehension of one attribute is the cheapest read.
        observed = np.array([v.observed_at for v in values], dtype=np.float64)
        count = self._count[slots]
        fresh = (count == 0) | ~(observed <= self._last[slots])
        present, nominal_power, nominal_rate, nominal = self._nominal_of(keys, devices)
        stock = np.array(
            [(w := v.workload).kind is _MINE and w.power_level == 1.0 for v in values],
            dtype=np.bool_,
        )
        estimated = np.array([bool(v.power_estimated) for v in values], dtype=np.bool_)
        trust = fresh & present & stock & ~estimated
        power = np.array([v.power_w for v in values], dtype=np.float64)
        hashrate_hs = np.array([v.hashrate_hs for v in values], dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            trust &= (power > 0) & (hashrate_hs > 0)
            measured = power / (hashrate_hs / TERA)
            trust &= (nominal / PLAUSIBLE_FACTOR <= measured) & (
                measured <= nominal * PLAUSIBLE_FACTOR
            )
            trust &= nominal_rate > 0  # (a device without a hash rate measures no J/TH)
        used = np.flatnonzero(trust)
        if not len(used):
            return
        at = slots[used]
        before = count[used]
        first = before == 0
        a = self.alpha
        power = power[used]
        rate = hashrate_hs[used] / TERA
        old_power, old_rate = self._power[at], self._rate[at]
        power = np.where(first, power, old_power + a * (power - old_power))
        rate = np.where(first, rate, old_rate + a * (rate - old_rate))
        self._power[at] = power
        self._rate[at] = rate
        self._count[at] = before + 1
        self._last[at] = observed[used]
        self._known += int(np.count_nonzero(first))
        ready = np.flatnonzero(before + 1 >= self.min_samples)
        if not len(ready):
            return
        at = at[ready]
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            power_ratio = round2(power[ready] / nominal_power[used[ready]])
            hash_ratio = round2(rate[ready] * TERA / nominal_rate[used[ready]])
        has = ~((power_ratio == 1.0) & (hash_ratio == 1.0))  # as nominal: keeps its class whole
        self._ratios += int(np.count_nonzero(has)) - int(np.count_nonzero(self._has_ratio[at]))
        self._has_ratio[at] = has
        self._power_ratio[at] = np.where(has, power_ratio, 1.0)
        self._hash_ratio[at] = np.where(has, hash_ratio, 1.0)

    def __bool__(self) -> bool:
        """True once any device measures other than its nominal figures (to 1 %)."""
        return self._ratios > 0

    def ratios_of(self, device_id: str) -> tuple[float, float] | None:
        """(measured / nominal power, measured / nominal hash rate), 2 decimals; None: as nominal."""
        slot = self._slot.get(device_id)
        if slot is None or not self._has_ratio[slot]:
            return None
        return float(self._power_ratio[slot]), float(self._hash_ratio[slot])

    def samples_of(self, device_id: str) -> int:
        """How many samples of the device were folded in."""
        slot = self._slot.get(device_id)
        return 0 if slot is None else int(self._count[slot])

    def measured(self, device_id: str) -> float | None:
        """The smoothed measured J/TH once enough samples were seen, else None."""
        slot = self._slot.get(device_id)
        if slot is None or self._count[slot] < self.min_samples:
            return None
        return float(self._power[slot]) / float(self._rate[slot])

    def j_per_th(self, device: Device) -> float:
        """The J/TH to rank the device by: measured where trustworthy, nominal otherwise."""
        measured = self.measured(device.id)
        return device.efficiency_j_per_th if measured is None else measured

    def least_efficient_first(self, devices: Iterable[Device]) -> list[Device]:
        """Devices by falling J/TH (measured where trustworthy), ties by id."""
        return sorted(devices, key=lambda d: (-self.j_per_th(d), d.id))

    def split(
        self, device_ids: tuple[str, ...]
    ) -> Sequence[tuple[tuple[float, float] | None, tuple[str, ...]]]:
        """The devices parted by their ratios (``ratios_of``), parts in order of first appearance.

        Each part: (ratios, None when as nominal; its device ids in the given order).  One part
        holds the given tuple itself.  Kept per tuple (by identity) while the ratios are equal.
        """
        if not self._ratios:
            return [(None, device_ids)]
        if len(device_ids) <= _SMALL_CLASS:  # array calls cost more than they save here
            ratios = self.ratios_of
            if len(device_ids) == 1:
                return [(ratios(device_ids[0]), device_ids)]
            found: dict[tuple[float, float] | None, list[str]] = {}
            for device_id in device_ids:
                found.setdefault(ratios(device_id), []).append(device_id)
            if len(found) == 1:
                return [(next(iter(found)), device_ids)]
            return [(ratio, tuple(ids)) for ratio, ids in found.items()]
        cached = self._splits.get(id(device_ids))
        if cached is not None and cached[0] is device_ids:
            _, objects, slots, last_keys, parts = cached
        else:
            objects = np.array(device_ids, dtype=object)
            slots = np.fromiter(
                map(self._slot.get, device_ids, repeat(-1)), np.int64, len(device_ids)
            )
            last_keys, parts = np.zeros(0, dtype=np.complex128), []
        has = slots >= 0
        keys = np.ones(len(slots), dtype=np.complex128)
        keys.real[has] = self._power_ratio[slots[has]]
        keys.imag[has] = self._hash_ratio[slots[has]]
        if parts and np.array_equal(keys, last_keys):
            return parts
        unique, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        order = np.argsort(first, kind="stable")  # parts by first appearance
        rank = np.empty(len(order), dtype=np.int64)
        rank[order] = np.arange(len(order))
        labels = rank[inverse.reshape(-1)]
        if len(unique) == 1:
            parts = [(self._ratio_key(unique[0]), device_ids)]
        else:
            ids = objects[np.argsort(labels, kind="stable")].tolist()
            sizes = np.bincount(labels, minlength=len(unique)).tolist()
            parts, start = [], 0
            for part, size in zip(order.tolist(), sizes, strict=True):
                parts.append((self._ratio_key(unique[part]), tuple(ids[start : start + size])))
                start += size
        # Bounded: the parts of about two groupings of the fleet (old classes drop out).
        if (
            len(self._splits) >= _SPLIT_CACHE_LIMIT
            or self._split_devices + len(device_ids) > 2 * len(self._ids) + 1024
        ):
            self._splits.clear()
            self._split_devices = 0
        if id(device_ids) not in self._splits:
            self._split_devices += len(device_ids)
        self._splits[id(device_ids)] = (device_ids, objects, slots, keys, parts)
        return parts

    @staticmethod
    def _ratio_key(key: np.complex128) -> tuple[float, float] | None:
        power, rate = float(key.real), float(key.imag)
        return None if (power, rate) == (1.0, 1.0) else (power, rate)
