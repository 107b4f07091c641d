"""The array-based measured efficiency gives what one Python loop per sample gives, exactly.

Random heterogeneous fleets (seeded): three models, each device its own measured power and
hash rate, mixed workloads (mining at stock or another level, asleep), estimated and
implausible readings, repeated reading times, devices leaving and coming back.  Compared after
every snapshot: each device's ratios, measured J/TH and sample count, the class split, and
max-margin's whole plan (options, margins and groups in order).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence

import numpy as np
import pytest

from scheduler.core.model import Sample, Snapshot, Workload
from scheduler.policies import efficiency
from scheduler.policies.efficiency import MeasuredEfficiency, round2
from scheduler.policies.max_margin import MaxMarginPolicy
from tests.scheduler.helpers import device, snapshot
from tests.scheduler.policies.reference_efficiency import ReferenceEfficiency, reference_split

MODELS = ("S19j Pro", "S21", "S21 XP")
MINE, LOW, SLEEP = Workload.mine("main"), Workload.mine("main", 0.9), Workload.sleep()


class _ReferencePolicy(MaxMarginPolicy):
    """max-margin with the per-sample reference and the dict split."""

    def __init__(self) -> None:
        super().__init__()
        self.reference = ReferenceEfficiency()
        self.efficiency.split = self._split  # type: ignore[method-assign]
        self.efficiency.observe = self.reference.observe  # type: ignore[method-assign]

    def _split(
        self, device_ids: tuple[str, ...]
    ) -> Sequence[tuple[tuple[float, float] | None, tuple[str, ...]]]:
        return reference_split(self.reference, device_ids)


def _snapshots(seed: int, size: int, ticks: int) -> list[Snapshot]:
    rng = random.Random(seed)
    fleet = [device(f"d{i}", MODELS[rng.randrange(3)]) for i in range(size)]
    # Each device its own drift: power 0.8-1.25 x nominal, hash rate 0.9-1.05 x (some exactly 1).
    drift = {
        d.id: (
            rng.choice((1.0, rng.uniform(0.8, 1.25))),
            rng.choice((1.0, 1.0, rng.uniform(0.9, 1.05))),
        )
        for d in fleet
    }
    result = []
    for tick in range(ticks):
        present = [d for d in fleet if rng.random() > 0.05 or tick < 2]
        if tick % 5 == 4:  # a nominal figure changes (a re-rated machine)
            index = rng.randrange(len(fleet))
            fleet[index] = dataclasses.replace(
                fleet[index], nominal_power_w=fleet[index].nominal_power_w * 1.1
            )
        current = {d.id: rng.choice((MINE, MINE, MINE, LOW, SLEEP)) for d in present}
        base = snapshot(present, 45.0 + tick, current, now=100.0 + tick)
        samples = {}
        for d in present:
            power_factor, hash_factor = drift[d.id]
            noise = rng.choice((1.0, 1.0, rng.uniform(0.98, 1.02), 2.5, 0.3))
            work = current[d.id]
            at = 100.0 + tick - rng.choice((0.0, 0.0, 0.0, 1.0))  # sometimes the last reading
            samples[d.id] = Sample(
                d.id,
                at,
                work,
                power_w=(
                    d.nominal_power_w * power_factor * noise if work.is_running else d.sleep_power_w
                ),
                hashrate_hs=d.nominal_hashrate_hs * hash_factor if work.is_running else 0.0,
                power_estimated=rng.random() < 0.1,
            )
        if tick % 7 == 6:
            samples["stranger"] = Sample("stranger", float(tick), MINE, 3500.0, 200e12)
        fields = {f: getattr(base, f) for f in base.__dataclass_fields__}
        result.append(Snapshot(**{**fields, "samples": samples}))
    return result


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_arrays_match_the_per_sample_loop_on_random_heterogeneous_fleets(seed: int) -> None:
    fast, reference = MeasuredEfficiency(), ReferenceEfficiency()
    for snap in _snapshots(seed, 300, 14):
        fast.observe(snap)
        reference.observe(snap)
        assert bool(fast) == bool(reference)
        for device_id in snap.devices:
            assert fast.ratios_of(device_id) == reference.ratios_of(device_id)
            assert fast.measured(device_id) == reference.measured(device_id)
            known = reference._state.get(device_id)
            assert fast.samples_of(device_id) == (0 if known is None else known[2])
        ids = tuple(snap.devices)
        assert list(fast.split(ids)) == reference_split(reference, ids)
        assert list(fast.split(ids)) == reference_split(reference, ids)  # kept split
    assert bool(fast)  # the fleets do differ from nominal


@pytest.mark.parametrize("small_class", [0, 64])  # parted by arrays / by the loop for few
@pytest.mark.parametrize("seed", [5, 6])
def test_max_margin_plans_match_the_reference(
    seed: int, small_class: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(efficiency, "_SMALL_CLASS", small_class)
    fast, slow = MaxMarginPolicy(), _ReferencePolicy()
    for snap in _snapshots(seed, 400, 10):
        for cap in (None, 0.5):
            limited = snap
            if cap is not None:
                limited = dataclasses.replace(
                    snap, power_cap_w=cap * sum(d.nominal_power_w for d in snap.devices.values())
                )
            a, b = fast.plan(limited), slow.plan(limited)
            assert a.groups() == b.groups()  # devices, workloads, reasons, margins, details
            assert list(a.assignments) == list(b.assignments)
            assert len(a.groups()) > 6  # the classes are parted by measurement


def test_round2_is_pythons_round_even_next_to_half_way_points() -> None:
    rng = np.random.default_rng(7)
    values = np.concatenate(
        [
            rng.uniform(0.0, 3.0, 20_000),
            np.arange(0, 300) / 100 + 0.005,  # half-way points as decimals
            np.array([1.005, 0.285, 0.145, 2.675, np.inf, -np.inf, np.nan]),
        ]
    )
    expected = [round(float(v), 2) for v in values]
    got = round2(values).tolist()
    assert all(g == e or (g != g and e != e) for g, e in zip(got, expected, strict=True))


def test_kept_splits_stay_bounded_when_the_classes_change_every_call() -> None:
    model = MeasuredEfficiency(min_samples=1)
    fleet = [device(f"d{i}", "S21") for i in range(500)]
    base = snapshot(fleet, 45.0)
    samples = {
        d.id: Sample(d.id, 100.0, MINE, d.nominal_power_w * (0.9 + (i % 3) / 10), 200e12)
        for i, d in enumerate(fleet)
    }
    fields = {f: getattr(base, f) for f in base.__dataclass_fields__}
    model.observe(Snapshot(**{**fields, "samples": samples}))
    for tick in range(50):  # a new tuple of the whole fleet every call (a regrouping)
        parts = model.split(tuple(d.id for d in fleet[tick % 7 :]))
        assert len(parts) == 3
        assert model._split_devices <= 2 * 500 + 1024
        assert len(model._splits) <= 4
