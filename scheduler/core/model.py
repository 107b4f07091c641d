"""The shared vocabulary of wattmux: devices, workloads, samples, market, plans.

Units follow docs/design.md: power in W, energy in J, hash rate in H/s, power
prices in USD/MWh, money in USD, temperatures in Celsius.  Monotonic times are
floats in seconds from the loop's clock; wall times are tz-aware UTC datetimes.
"""

from __future__ import annotations

import enum
import operator
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from itertools import accumulate, repeat
from typing import overload

from scheduler.core.reasons import Reason

TERA = 1e12


class WorkloadKind(enum.StrEnum):
    """What a device can be told to do."""

    MINE = "mine"
    AI = "ai"
    SLEEP = "sleep"
    OFF = "off"


@dataclass(frozen=True, slots=True)
class Workload:
    """One option for a device: mine(pool, power_level), ai(queue), sleep or off."""

    kind: WorkloadKind
    pool: str | None = None
    power_level: float = 1.0
    queue: str | None = None

    def __post_init__(self) -> None:
        """Reject combinations that mean nothing."""
        if self.kind is WorkloadKind.MINE and not self.pool:
            raise ValueError("mine() needs a pool")
        if self.kind is WorkloadKind.AI and not self.queue:
            raise ValueError("ai() needs a queue")
        if not 0.0 < self.power_level <= 1.5:
            raise ValueError(f"power_level {self.power_level} outside (0, 1.5]")

    @classmethod
    def mine(cls, pool: str, power_level: float = 1.0) -> Workload:
        """Mine on the named pool at a relative power level (1.0 = stock)."""
        return cls(WorkloadKind.MINE, pool=pool, power_level=power_level)

    @classmethod
    def ai(cls, queue: str) -> Workload:
        """Serve the named AI job queue."""
        return cls(WorkloadKind.AI, queue=queue)

    @classmethod
    def sleep(cls) -> Workload:
        """Low-power sleep: hashboards off, controller up, wakes by command."""
        return cls(WorkloadKind.SLEEP)

    @classmethod
    def off(cls) -> Workload:
        """Powered off (needs a PDU or a queue driver to come back)."""
        return cls(WorkloadKind.OFF)

    @classmethod
    def parse(cls, text: str) -> Workload:
        """Parse the form printed by ``str()``: ``mine(pool)``, ``mine(pool,0.8)``, ``ai(q)``, ``sleep``, ``off``."""
        text = text.strip()
        if text in ("sleep", "off"):
            return cls(WorkloadKind(text))
        for kind in (WorkloadKind.MINE, WorkloadKind.AI):
            prefix = f"{kind.value}("
            if text.startswith(prefix) and text.endswith(")"):
                args = [a.strip() for a in text[len(prefix) : -1].split(",")]
                if kind is WorkloadKind.AI and len(args) == 1:
                    return cls.ai(args[0])
                if kind is WorkloadKind.MINE and len(args) in (1, 2):
                    level = float(args[1]) if len(args) == 2 else 1.0
                    return cls.mine(args[0], level)
        raise ValueError(
            f"not a workload: {text!r} (expected mine(POOL[,LEVEL]), ai(QUEUE), sleep or off)"
        )

    @property
    def is_running(self) -> bool:
        """True when the device does revenue work (mining or AI)."""
        return self.kind in (WorkloadKind.MINE, WorkloadKind.AI)

    def __str__(self) -> str:
        """Short stable text form, used in logs, the API and the audit log."""
        if self.kind is WorkloadKind.MINE:
            if self.power_level == 1.0:
                return f"mine({self.pool})"
            return f"mine({self.pool},{self.power_level:g})"
        if self.kind is WorkloadKind.AI:
            return f"ai({self.queue})"
        return self.kind.value


@dataclass(frozen=True, slots=True)
class Pool:
    """A mining pool endpoint that ``mine(pool)`` refers to by name."""

    name: str
    url: str
    user: str
    password: str = "x"


class DeviceKind(enum.StrEnum):
    """Classes of hardware with different workload options."""

    ASIC = "asic"
    GPU_NODE = "gpu_node"


@dataclass(frozen=True, slots=True)
class Device:
    """A machine wattmux schedules, with the nominal facts economics needs."""

    id: str
    kind: DeviceKind
    model: str
    driver: str
    address: str
    port: int
    nominal_hashrate_hs: float
    nominal_power_w: float
    sleep_power_w: float = 15.0
    max_temperature_c: float = 85.0
    pools: tuple[str, ...] = ()
    gpus: int = 0
    queues: tuple[str, ...] = ()

    @property
    def efficiency_j_per_th(self) -> float:
        """Joules per terahash at stock settings."""
        return self.nominal_power_w / (self.nominal_hashrate_hs / TERA)

    def options(self) -> tuple[Workload, ...]:
        """Workloads this device can be given (an ASIC cannot serve AI; a GPU node serves its queues)."""
        mines = tuple(Workload.mine(pool) for pool in self.pools)
        if self.kind is DeviceKind.GPU_NODE:
            # A GPU node mines only through its queue driver, as a preemptible job.
            return (*(Workload.ai(queue) for queue in self.queues), *mines, Workload.sleep())
        return (*mines, Workload.sleep())


@dataclass(frozen=True, slots=True)
class RunningJob:
    """An AI job running on a GPU node: a lease wattmux never breaks unless preemption is allowed."""

    job_id: str
    queue: str
    gpus: int
    elapsed_seconds: float
    remaining_seconds: float | None = None  # from the job's time limit; None when unlimited


@dataclass(frozen=True, slots=True)
class QueueDemand:
    """Work waiting in one AI queue, and what a GPU-hour of it pays."""

    queue: str
    observed_at: float
    pending_jobs: int
    pending_gpus: int
    rate_usd_per_gpu_hour: float | None = None  # spot rate from the driver, or the contract rate
    preemption_allowed: bool = False  # running jobs may be requeued to free a node


@dataclass(frozen=True, slots=True)
class Sample:
    """One reading of a device as observed by a driver (never a guess)."""

    device_id: str
    observed_at: float
    workload: Workload
    power_w: float
    hashrate_hs: float
    temperature_c: float | None = None
    pool_url: str | None = None
    # True when the firmware reports no power (stock Antminer) and power_w is the
    # nominal power scaled by the measured hash rate (sleep power when asleep).
    power_estimated: bool = False
    jobs: tuple[RunningJob, ...] = ()  # AI jobs running on a GPU node
    # (pool name, alive) for each enabled pool the miner lists (its URL when no configured
    # pool matches): what the device sees of its pools; () when the driver does not report it.
    pools_alive: tuple[tuple[str, bool], ...] = ()


@dataclass(frozen=True, slots=True)
class Reading:
    """A market value with the monotonic time it was observed and its source."""

    value: float
    observed_at: float
    source: str


@dataclass(frozen=True, slots=True)
class MarketState:
    """The latest good market inputs; None where no good value has arrived yet."""

    btc_price_usd: Reading | None = None
    difficulty: Reading | None = None
    block_subsidy_btc: Reading | None = None
    fees_btc_per_block: Reading | None = None
    power_price_usd_per_mwh: Reading | None = None

    def age(self, name: str, now: float) -> float | None:
        """Seconds since the named input was observed, None if never."""
        reading: Reading | None = getattr(self, name)
        if reading is None:
            return None
        return max(0.0, now - reading.observed_at)


MARKET_INPUTS: tuple[str, ...] = (
    "btc_price_usd",
    "difficulty",
    "block_subsidy_btc",
    "fees_btc_per_block",
    "power_price_usd_per_mwh",
)


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    """What the loop knows about reaching a device."""

    reachable: bool
    last_error: str | None = None
    last_error_at: float | None = None


@dataclass(frozen=True, slots=True)
class Event:
    """A demand-response event: cap the site at target_kw or shed reduction_kw."""

    id: str
    start: datetime
    end: datetime
    target_kw: float | None = None
    reduction_kw: float | None = None
    priority: int = 0


@dataclass(frozen=True, slots=True)
class Lease:
    """A GPU node under contract to a customer from start to end, at a price: kept on AI meanwhile."""

    id: str
    node: str  # the GPU node's device id
    queue: str  # the queue its customer's jobs come through: the node runs ai(queue)
    start: datetime
    end: datetime
    price_usd_per_hour: float  # what the customer pays for the node
    priority: int = 0  # only a demand-response event of a higher priority outranks it

    def active(self, wall: datetime) -> bool:
        """True from start (inclusive) to end (exclusive)."""
        return self.start <= wall < self.end


@dataclass(frozen=True, slots=True)
class Snapshot:
    """An immutable view of everything the policy may look at, taken at ``now``."""

    now: float
    wall: datetime
    devices: Mapping[str, Device]
    samples: Mapping[str, Sample]
    status: Mapping[str, DeviceStatus]
    market: MarketState
    pool_fee: float = 0.0
    events: tuple[Event, ...] = ()
    current: Mapping[str, Workload] = field(default_factory=dict)
    power_cap_w: float | None = None
    queues: Mapping[str, QueueDemand] = field(default_factory=dict)
    pools_up: Mapping[str, bool] = field(default_factory=dict)  # pool name -> reachable; absent: up
    leases: tuple[Lease, ...] = ()  # AI leases of GPU nodes (active or not)

    def market_age(self, name: str) -> float | None:
        """Age in seconds of one market input (see MARKET_INPUTS)."""
        return self.market.age(name, self.now)


@dataclass(frozen=True, slots=True)
class Assignment:
    """The workload a device should run, why, and what it is expected to earn."""

    device_id: str
    workload: Workload
    reason: Reason | str  # a Reason; a third-party policy may give its own string
    expected_margin_usd_per_hour: float
    switching_cost_usd: float = 0.0  # AI progress lost by preempting jobs to make this switch
    drain_seconds: float = 0.0  # expected wait for running AI jobs before the switch completes
    detail: str = ""  # the policy's figures behind the reason (e.g. max-margin's switching band)


@dataclass(frozen=True, slots=True)
class AssignmentGroup:
    """One decision shared by several devices: the same workload, reason and expected margin each."""

    device_ids: tuple[str, ...]
    workload: Workload
    reason: Reason | str  # a Reason; a third-party policy may give its own string
    expected_margin_usd_per_hour: float
    switching_cost_usd: float = 0.0
    drain_seconds: float = 0.0
    detail: str = ""

    @classmethod
    def of(cls, assignment: Assignment) -> AssignmentGroup:
        """The group of one device holding exactly that assignment."""
        return cls(
            (assignment.device_id,),
            assignment.workload,
            assignment.reason,
            assignment.expected_margin_usd_per_hour,
            assignment.switching_cost_usd,
            assignment.drain_seconds,
            assignment.detail,
        )

    def assignments(self) -> list[Assignment]:
        """One Assignment per device id, in order."""
        return build_assignments(
            self.device_ids,
            self.workload,
            self.reason,
            self.expected_margin_usd_per_hour,
            self.switching_cost_usd,
            self.drain_seconds,
            self.detail,
        )


@dataclass(frozen=True, slots=True)
class Plan:
    """A policy's answer for one snapshot: one assignment per device it decided on.

    ``assignments`` is any sequence of Assignment: a tuple, or GroupedAssignments
    (see Plan.grouped), which holds one entry per class of devices and builds the
    per-device Assignment objects only when a reader walks it.
    """

    created_at: float
    assignments: Sequence[Assignment]

    @classmethod
    def grouped(cls, created_at: float, groups: Iterable[AssignmentGroup]) -> Plan:
        """A plan that holds one entry per group of devices (cheap for large fleets)."""
        return cls(created_at=created_at, assignments=GroupedAssignments(groups))

    def by_device(self) -> dict[str, Assignment]:
        """Assignments keyed by device id."""
        return {a.device_id: a for a in self.assignments}

    def groups(self) -> tuple[AssignmentGroup, ...]:
        """The plan as groups, in plan order: its own for a grouped plan, else one per assignment."""
        if isinstance(self.assignments, GroupedAssignments):
            return self.assignments.groups
        return tuple(map(AssignmentGroup.of, self.assignments))


class GroupedAssignments(Sequence[Assignment]):
    """An immutable sequence of Assignment stored as AssignmentGroups (one object per group).

    Reading it builds the Assignment objects of the devices read; they are
    equal to those a tuple would hold, in the same order.  Equal to any
    sequence with the same assignments.
    """

    __slots__ = ("_ends", "groups")

    def __init__(self, groups: Iterable[AssignmentGroup]) -> None:
        self.groups: tuple[AssignmentGroup, ...] = tuple(groups)
        self._ends = list(accumulate(len(g.device_ids) for g in self.groups))

    def __len__(self) -> int:
        """Number of device assignments (the sum of the groups' sizes)."""
        return self._ends[-1] if self._ends else 0

    @overload
    def __getitem__(self, index: int) -> Assignment: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[Assignment, ...]: ...

    def __getitem__(self, index: int | slice) -> Assignment | tuple[Assignment, ...]:
        """The assignment at a position (or a tuple for a slice)."""
        if isinstance(index, slice):
            return tuple(self)[index]
        size = len(self)
        position = index + size if index < 0 else index
        if not 0 <= position < size:
            raise IndexError("plan assignment index out of range")
        group_index = bisect_right(self._ends, position)
        group = self.groups[group_index]
        start = self._ends[group_index] - len(group.device_ids)
        return build_assignments(
            (group.device_ids[position - start],),
            group.workload,
            group.reason,
            group.expected_margin_usd_per_hour,
            group.switching_cost_usd,
            group.drain_seconds,
            group.detail,
        )[0]

    def __iter__(self) -> Iterator[Assignment]:
        """Assignments in plan order, built one group at a time."""
        for group in self.groups:
            yield from group.assignments()

    def __eq__(self, other: object) -> bool:
        """Equal to any sequence holding equal assignments in the same order."""
        if isinstance(other, GroupedAssignments) and other.groups == self.groups:
            return True
        if not isinstance(other, Sequence) or isinstance(other, str):
            return NotImplemented
        return len(other) == len(self) and all(map(operator.eq, self, other))

    def __hash__(self) -> int:
        """The hash of the tuple of the same assignments."""
        return hash(tuple(self))

    def __repr__(self) -> str:
        """Groups, not one line per device."""
        return f"GroupedAssignments({list(self.groups)!r})"


_ASSIGNMENT_FIELDS = (
    "device_id",
    "workload",
    "reason",
    "expected_margin_usd_per_hour",
    "switching_cost_usd",
    "drain_seconds",
    "detail",
)
# Assignment's slot setters, in field order (no __post_init__, no default factories to honour).
_ASSIGNMENT_SETTERS: tuple[Callable[[Assignment, object], None], ...] | None = (
    tuple(getattr(Assignment, name).__set__ for name in _ASSIGNMENT_FIELDS)
    if tuple(f.name for f in fields(Assignment)) == _ASSIGNMENT_FIELDS
    and not hasattr(Assignment, "__post_init__")
    else None
)


def build_assignments(
    device_ids: Sequence[str],
    workload: Workload,
    reason: Reason | str,
    margin: float,
    switching_cost_usd: float = 0.0,
    drain_seconds: float = 0.0,
    detail: str = "",
) -> list[Assignment]:
    """Assignment(device_id, workload, reason, margin, ...) for each id, built fast.

    Equal to calling the frozen dataclass's __init__, which sets each field
    through object.__setattr__ in Python; here each slot is filled for all ids
    by a loop in C (about twice as fast).
    """
    values = (workload, reason, margin, switching_cost_usd, drain_seconds, detail)
    if _ASSIGNMENT_SETTERS is None:  # Assignment changed shape: build each one the slow way
        named = dict(zip(_ASSIGNMENT_FIELDS[1:], values, strict=True))
        return [Assignment(device_id=d, **named) for d in device_ids]  # type: ignore[arg-type]
    count = len(device_ids)
    built = list(map(object.__new__, repeat(Assignment, count)))
    columns = (device_ids, *(repeat(v, count) for v in values))
    for setter, column in zip(_ASSIGNMENT_SETTERS, columns, strict=True):
        deque(map(setter, built, column), maxlen=0)  # one pass in C per field
    return built


class OutcomeStatus(enum.StrEnum):
    """How a command ended."""

    CONFIRMED = "confirmed"
    UNCONFIRMED = "unconfirmed"
    REJECTED = "rejected"
    UNAVAILABLE = "unavailable"
    SKIPPED = "skipped"


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of applying a workload, as read back from the device."""

    device_id: str
    requested: Workload
    status: OutcomeStatus
    observed: Workload | None = None
    detail: str = ""
