"""Reconciler over real TCP: verify after write, retries with backoff, drift and unavailability."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from drivers.asic.cgminer import CgminerDriver
from drivers.asic.config import CgminerOptions
from drivers.backoff import Backoff
from drivers.sim.miner import Fault
from drivers.sim.site import SimSite
from scheduler.control.reconciler import Reconciler
from scheduler.core.model import (
    Assignment,
    Device,
    Outcome,
    OutcomeStatus,
    Plan,
    Pool,
    Workload,
)
from scheduler.core.state import FleetState
from scheduler.observability.metrics import Metrics
from scheduler.store.journal import Store
from tests.fakes import asic

POOLS = {"main": Pool("main", "stratum+tcp://main.pool.invalid:3333", "site.w1")}
OPTIONS = CgminerOptions(
    timeout_seconds=0.3, confirm_timeout_seconds=0.3, confirm_interval_seconds=0.05
)
FLEET = 40


def make_device(index: int) -> Device:
    return asic(f"r-{index:03d}", address=f"127.31.{200 + index // 250}.{1 + index % 250}", port=0)


@pytest.fixture
async def site() -> AsyncIterator[SimSite]:
    async with SimSite([make_device(i) for i in range(FLEET)], list(POOLS.values()), port=0) as s:
        yield s


def metric(metrics: Metrics, name: str) -> float:
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            if sample.name == name and not sample.labels:
                return float(sample.value)
    raise AssertionError(f"{name} not exported")


async def poll(state: FleetState, driver: CgminerDriver, devices: list[Device]) -> None:
    for device in devices:
        state.observe(await driver.collect(device))


def sleep_plan(devices: list[Device]) -> Plan:
    return Plan(
        created_at=0.0,
        assignments=tuple(
            Assignment(d.id, Workload.sleep(), "price_above_breakeven", 0.0) for d in devices
        ),
    )


async def test_ten_percent_that_ignore_a_curtail_are_retried_and_reported_drifted(
    site: SimSite, tmp_path: Path
) -> None:
    devices = site.devices
    deaf = {d.id for d in devices[:: FLEET // 4]}  # every tenth device
    assert len(deaf) == FLEET // 10
    for device_id in deaf:
        miner = site.miners[device_id]
        miner.fault, miner.fault_commands = Fault.HANG, frozenset({"curtail"})
    state = FleetState(devices)
    metrics = Metrics(state)
    driver = CgminerDriver(POOLS, OPTIONS)
    await poll(state, driver, devices)
    waits: list[float] = []

    async def record_sleep(seconds: float) -> None:
        waits.append(seconds)

    backoff = Backoff(base_seconds=0.5, cap_seconds=4.0, rng=random.Random(7))
    with Store.open(tmp_path / "s.sqlite") as store:
        async with Reconciler(
            {d.id: driver for d in devices},
            store,
            metrics,
            concurrency=16,
            state=state,
            max_attempts=3,
            backoff=backoff,
            sleep=record_sleep,
        ) as reconciler:
            started = reconciler.reconcile(sleep_plan(devices), state.snapshot(0.0))
            assert len(started) == FLEET
            await reconciler.wait_idle()
            outcomes = reconciler.last_outcomes
            # Second tick right away: the drifted ones are backing off, nothing is re-sent.
            await poll(state, driver, devices)
            assert reconciler.reconcile(sleep_plan(devices), state.snapshot(0.0)) == []
        open_intents = store.open_intents()

    confirmed = {d for d, o in outcomes.items() if o.status is OutcomeStatus.CONFIRMED}
    assert confirmed == {d.id for d in devices} - deaf
    assert all(site.miners[d].asleep for d in confirmed)
    for device_id in deaf:
        assert outcomes[device_id].status is OutcomeStatus.UNCONFIRMED
        assert "no answer" in outcomes[device_id].detail
        assert not site.miners[device_id].asleep
        assert site.miners[device_id].command_counts["logon"] == 3  # tried three times
        drift = state.drift[device_id]
        assert drift.attempts == 3 and drift.requested == Workload.sleep()
        assert drift.observed == Workload.mine("main") and drift.retry_at is not None
        assert state.status[device_id].reachable  # it answers reads: drifted, not unavailable
    assert set(state.drift) == deaf
    assert len(waits) == 2 * len(deaf)
    assert all(0 <= w <= backoff.ceiling_seconds(2) for w in waits)
    assert metric(metrics, "wattmux_devices_drifted") == len(deaf)
    assert metric(metrics, "wattmux_command_retries_total") == 2 * len(deaf)
    assert not open_intents


async def test_a_device_that_stops_answering_is_marked_unavailable_not_obeyed(
    site: SimSite, tmp_path: Path
) -> None:
    devices = site.devices[:3]
    state = FleetState(devices)
    metrics = Metrics(state)
    driver = CgminerDriver(POOLS, OPTIONS)
    await poll(state, driver, devices)
    site.miners[devices[0].id].fault = Fault.CLOSE  # nothing answered any more
    with Store.open(tmp_path / "s.sqlite") as store:
        async with Reconciler(
            {d.id: driver for d in devices}, store, metrics, state=state, sleep=_no_sleep
        ) as reconciler:
            reconciler.reconcile(sleep_plan(devices), state.snapshot(0.0))
            await reconciler.wait_idle()
            outcome = reconciler.last_outcomes[devices[0].id]
            # Unreachable devices are not commanded again until a poll reads them.
            again = reconciler.reconcile(sleep_plan(devices), state.snapshot(1000.0))
            assert devices[0].id not in again
            await reconciler.wait_idle()
    assert outcome.status is OutcomeStatus.UNAVAILABLE
    assert not state.status[devices[0].id].reachable
    assert state.drift[devices[0].id].detail.startswith("unavailable")
    assert state.snapshot(0.0).current.get(devices[0].id) is None  # not assumed asleep
    assert [state.status[d.id].reachable for d in devices[1:]] == [True, True]
    assert metric(metrics, "wattmux_devices_drifted") == 1


async def test_drift_clears_when_a_retry_confirms(site: SimSite, tmp_path: Path) -> None:
    devices = site.devices[:1]
    miner = site.miners[devices[0].id]
    miner.fault, miner.fault_commands = Fault.HANG, frozenset({"curtail"})
    state = FleetState(devices)
    metrics = Metrics(state)
    driver = CgminerDriver(POOLS, OPTIONS)
    await poll(state, driver, devices)

    async def heal(_seconds: float) -> None:
        miner.fault = None  # the miner recovers while we back off

    with Store.open(tmp_path / "s.sqlite") as store:
        async with Reconciler(
            {d.id: driver for d in devices}, store, metrics, state=state, sleep=heal
        ) as reconciler:
            reconciler.reconcile(sleep_plan(devices), state.snapshot(0.0))
            await reconciler.wait_idle()
    assert reconciler.last_outcomes[devices[0].id].status is OutcomeStatus.CONFIRMED
    assert miner.asleep and miner.command_counts["logon"] == 2
    assert state.drift == {}
    assert metric(metrics, "wattmux_command_retries_total") == 1


async def _no_sleep(_seconds: float) -> None:
    return None


class RecordingDriver(CgminerDriver):
    """The real driver, with a log of when each device's send and read-back start."""

    def __init__(self) -> None:
        super().__init__(POOLS, OPTIONS)
        self.events: list[tuple[str, str]] = []

    async def send(self, device: Device, workload: Workload) -> Outcome | None:
        self.events.append(("send", device.id))
        return await super().send(device, workload)

    async def confirm(self, device: Device, workload: Workload) -> Outcome:
        self.events.append(("confirm", device.id))
        return await super().confirm(device, workload)


async def test_every_command_goes_out_before_the_read_backs(site: SimSite, tmp_path: Path) -> None:
    devices = site.devices
    state = FleetState(devices)
    driver = RecordingDriver()
    await poll(state, driver, devices)
    with Store.open(tmp_path / "s.sqlite") as store:
        async with Reconciler(
            {d.id: driver for d in devices}, store, Metrics(state), concurrency=4, state=state
        ) as reconciler:
            assert reconciler.last_acknowledged_at is None
            reconciler.reconcile(sleep_plan(devices), state.snapshot(0.0))
            await reconciler.wait_idle()
    kinds = [kind for kind, _ in driver.events]
    assert kinds.count("send") == kinds.count("confirm") == FLEET
    # With 4 slots for 40 devices, a read-back waits while any command is waiting.
    assert kinds.index("confirm") > max(i for i, kind in enumerate(kinds) if kind == "send")
    assert all(o.status is OutcomeStatus.CONFIRMED for o in reconciler.last_outcomes.values())
    assert all(site.miners[d.id].asleep for d in devices)
    assert reconciler.last_acknowledged_at is not None
