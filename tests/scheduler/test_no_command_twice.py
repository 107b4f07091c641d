"""No command twice: not on a reading older than the device's last acknowledged command.

Also the control loop's poll deadline: a hung device's poll does not hold the
tick, it is left out of the snapshot, and it has at most one outstanding poll.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from scheduler.config.schema import GuardConfig
from scheduler.control.guard import Guard
from scheduler.control.loop import ControlLoop
from scheduler.control.reconciler import Reconciler
from scheduler.core.model import (
    Assignment,
    Device,
    DeviceStatus,
    Outcome,
    OutcomeStatus,
    Plan,
    Sample,
    Snapshot,
    Workload,
)
from scheduler.core.state import FleetState
from scheduler.observability.metrics import Metrics
from scheduler.store.journal import Store
from tests.scheduler.helpers import device

MINE = Workload.mine("main")
SLEEP = Workload.sleep()


class Obeys:
    """A one-step control that accepts every command (the device does not change here)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Workload]] = []

    async def apply(self, device: Device, workload: Workload) -> Outcome:
        self.sent.append((device.id, workload))
        return Outcome(device.id, workload, OutcomeStatus.CONFIRMED, workload, "")


def sample(device_id: str, observed_at: float, workload: Workload = MINE) -> Sample:
    return Sample(device_id, observed_at, workload, 3500.0, 200e12)


def sleep_plan(*device_ids: str) -> Plan:
    return Plan(0.0, tuple(Assignment(d, SLEEP, "price_above_breakeven", 0.0) for d in device_ids))


def snapshot_of(state: FleetState) -> Snapshot:
    return state.snapshot(0.0)


async def test_a_reading_older_than_the_last_acknowledged_command_is_not_acted_on(
    tmp_path: Path,
) -> None:
    devices = [device("a"), device("b")]
    state = FleetState(devices)
    now = [10.0]
    control = Obeys()
    with Store.open(tmp_path / "s.sqlite") as store:
        async with Reconciler(
            {d.id: control for d in devices},
            store,
            Metrics(state),
            state=state,
            clock=lambda: now[0],
        ) as reconciler:
            for d in devices:
                state.observe(sample(d.id, observed_at=5.0))
            assert reconciler.reconcile(sleep_plan("a", "b"), snapshot_of(state)) == ["a", "b"]
            await reconciler.wait_idle()
            assert reconciler.acknowledged == {"a": 10.0, "b": 10.0}
            # A poll that read "a" before the command landed (observed at 9.0 < 10.0) still
            # shows it mining: not sent again.  "b" read afterwards (11.0) still mining: sent.
            state.observe(sample("a", observed_at=9.0))
            state.observe(sample("b", observed_at=11.0))
            now[0] = 12.0
            assert reconciler.reconcile(sleep_plan("a", "b"), snapshot_of(state)) == ["b"]
            await reconciler.wait_idle()
            # The same old reading again, a tick later: still nothing for "a".
            assert reconciler.reconcile(sleep_plan("a"), snapshot_of(state)) == []
            state.observe(sample("a", observed_at=13.0))
            assert reconciler.reconcile(sleep_plan("a"), snapshot_of(state)) == ["a"]
            await reconciler.wait_idle()
    assert control.sent == [("a", SLEEP), ("b", SLEEP), ("b", SLEEP), ("a", SLEEP)]


class Gated:
    """Telemetry whose collect for one device waits until the test opens the gate."""

    def __init__(self, slow: str, clock: list[float]) -> None:
        self.slow = slow
        self.clock = clock
        self.gate = asyncio.Event()
        self.started: dict[str, int] = {}

    async def collect(self, device: Device) -> Sample:
        self.started[device.id] = self.started.get(device.id, 0) + 1
        if device.id == self.slow:
            await self.gate.wait()
        return sample(device.id, observed_at=self.clock[0])


class NoPolicy:
    def plan(self, snapshot: Snapshot) -> Plan:
        return sleep_plan(*snapshot.devices)


def make_loop(
    state: FleetState,
    telemetry: Gated,
    reconciler: Reconciler,
    store: Store,
    deadline: float | None,
    now: list[float],
) -> ControlLoop:
    return ControlLoop(
        state=state,
        telemetry={d: telemetry for d in state.devices},
        feeds=[],
        policy=NoPolicy(),
        guard=Guard(GuardConfig(), power_cap_w=1e9),
        reconciler=reconciler,
        store=store,
        metrics=Metrics(state),
        clock=lambda: now[0],
        poll_deadline_seconds=deadline,
    )


async def test_a_poll_that_straddles_an_acknowledged_command_is_stamped_with_its_start(
    tmp_path: Path,
) -> None:
    devices = [device("a")]
    state = FleetState(devices)
    now = [10.0]
    telemetry = Gated("a", now)
    with Store.open(tmp_path / "s.sqlite") as store:
        async with Reconciler(
            {"a": Obeys()}, store, Metrics(state), state=state, clock=lambda: now[0]
        ) as reconciler:
            loop = make_loop(state, telemetry, reconciler, store, None, now)
            polling = asyncio.create_task(loop.poll_devices())
            await asyncio.sleep(0.01)  # the poll of "a" started at 10.0 and waits
            now[0] = 11.0
            reconciler.acknowledged["a"] = 11.0  # a command was accepted meanwhile
            now[0] = 12.0
            telemetry.gate.set()  # the reading returns at 12.0: it may predate the command
            await polling
            assert state.samples["a"].observed_at == 10.0
            assert reconciler.reconcile(sleep_plan("a"), state.snapshot(12.0)) == []


async def test_a_hung_poll_does_not_hold_the_tick_and_is_left_out(tmp_path: Path) -> None:
    devices = [device("a"), device("hung")]
    state = FleetState(devices)
    now = [10.0]
    telemetry = Gated("hung", now)
    control = Obeys()
    with Store.open(tmp_path / "s.sqlite") as store:
        async with Reconciler(
            {d.id: control for d in devices}, store, Metrics(state), state=state
        ) as reconciler:
            loop = make_loop(state, telemetry, reconciler, store, 0.05, now)
            started = time.monotonic()
            await loop.poll_devices()
            assert time.monotonic() - started < 1.0
            assert "a" in state.samples and "hung" not in state.samples
            snapshot = loop._snapshot()
            assert snapshot.status["hung"] == DeviceStatus(False, "poll still running")
            assert "hung" not in snapshot.samples and snapshot.status["a"].reachable
            # The next poll round does not start a second poll of the hung device.
            await loop.poll_devices()
            assert telemetry.started == {"a": 2, "hung": 1}
            telemetry.gate.set()  # its poll ends: the result lands for a later tick
            await asyncio.sleep(0.01)
            assert "hung" in state.samples
            assert loop._snapshot().status["hung"].reachable
            await loop.aclose()
