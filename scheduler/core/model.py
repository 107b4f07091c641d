"""The shared vocabulary of wattmux: devices, workloads, samples, market, plans.

Units follow docs/design.md: power in W, energy in J, hash rate in H/s, power
prices in USD/MWh, money in USD, temperatures in Celsius.  Monotonic times are
floats in seconds from the loop's clock; wall times are tz-aware UTC datetimes.
"""

from __future__ import annotations

import enum
import math
import operator
import struct
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
class BoardHealth:
    """One hash board as the firmware reports it; None where it reports nothing."""

    hashrate_hs: float | None = None
    chips: int | None = None  # chips the board answers with (found)
    board_temp_c: float | None = None  # hottest PCB sensor
    chip_temp_c: float | None = None  # hottest chip sensor


# Packed: a header (boards, fans: uint8; reject ratio: float64, NaN unknown; uptime: int64 s,
# -1 unknown; hottest chip and board, tenths of a degree: int16; slowest fan: uint16, 0xFFFF
# none; chips found: int32, -1 unknown: the figures a scrape reads without unpacking boards),
# then per board GH/s (float32, NaN unknown), chips (uint16, 0xFFFF unknown),
# board and chip temperature in tenths of a degree (int16, -32768 unknown), then per fan RPM
# (uint16).  One bytes object per device instead of a float, an int and two bytes objects.
_HEAD = struct.Struct("<BBdqhhHi")
_BOARD = struct.Struct("<fHhh")
_FAN = struct.Struct("<H")
_NO_CHIPS = 0xFFFF
_NO_TEMP = -32768
MAX_BOARDS = 16
MAX_FANS = 16
MAX_ERRORS = 8
MAX_ERROR_CHARS = 80
_EMPTY_HEAD = _HEAD.pack(0, 0, math.nan, -1, -32768, -32768, 0xFFFF, -1)
_FANS = tuple(struct.Struct(f"<{n}H") for n in range(MAX_FANS + 1))  # n fans at once


def _deci(value: float | None) -> int:
    """Tenths of a degree, clamped to int16; _NO_TEMP for None, NaN and infinities."""
    if value is None:
        return _NO_TEMP
    try:
        tenths = round(value * 10)
    except (ValueError, OverflowError):  # NaN, infinity
        return _NO_TEMP
    if -32767 <= tenths <= 32767:
        return tenths
    return 32767 if tenths > 0 else -32767


def _chips(chips: float) -> int:
    count = int(chips)
    return count if 0 <= count < _NO_CHIPS else (0 if count < 0 else _NO_CHIPS - 1)


@dataclass(frozen=True, slots=True)
class Health:
    """Deep health of a miner, packed small (one per device is kept; about 164 bytes).

    Build it with ``Health.of``; read it through the properties (``boards``,
    ``fans_rpm``, ``reject_ratio``, ``uptime_s`` ...).  Bounded: at most
    MAX_BOARDS boards, MAX_FANS fans and MAX_ERRORS error codes of
    MAX_ERROR_CHARS each.
    """

    packed: bytes = _EMPTY_HEAD
    firmware: str | None = None
    errors: tuple[str, ...] = ()

    @classmethod
    def of(
        cls,
        boards: Iterable[BoardHealth] = (),
        fans_rpm: Iterable[int] = (),
        *,
        reject_ratio: float | None = None,
        uptime_s: float | None = None,
        firmware: str | None = None,
        errors: Iterable[str] = (),
    ) -> Health:
        """Pack what a driver read (values out of range are clamped, extras dropped)."""
        raw = [
            (
                None if b.hashrate_hs is None else b.hashrate_hs / 1e9,
                b.chips,
                b.board_temp_c,
                b.chip_temp_c,
            )
            for b in boards
        ]
        return cls.of_raw(
            raw,
            fans_rpm,
            reject_ratio=reject_ratio,
            uptime_s=uptime_s,
            firmware=firmware,
            errors=errors,
        )

    @classmethod
    def of_raw(
        cls,
        boards: Sequence[tuple[float | None, float | None, float | None, float | None]],
        fans_rpm: Iterable[float] = (),
        *,
        reject_ratio: float | None = None,
        uptime_s: float | None = None,
        firmware: str | None = None,
        errors: Iterable[str] = (),
    ) -> Health:
        """``of`` for parsers: boards as (GH/s, chips, board C, chip C) tuples, None unknown."""
        kept_fans = [min(0xFFFF, int(r)) if r > 0 else 0 for r in list(fans_rpm)[:MAX_FANS]]
        ratio = math.nan
        if reject_ratio is not None and math.isfinite(reject_ratio):
            ratio = reject_ratio
        uptime = -1 if uptime_s is None else max(0, min(2**62, int(uptime_s)))
        parts = [b""]
        hottest_chip = hottest_board = _NO_TEMP
        found = -1
        for ghs, chips, board, chip in boards[:MAX_BOARDS]:
            chip_count = _NO_CHIPS if chips is None else _chips(chips)
            board_deci, chip_deci = _deci(board), _deci(chip)
            hottest_chip = max(hottest_chip, chip_deci)
            hottest_board = max(hottest_board, board_deci)
            if chip_count != _NO_CHIPS:
                found = max(found, 0) + chip_count
            parts.append(
                _BOARD.pack(math.nan if ghs is None else ghs, chip_count, board_deci, chip_deci)
            )
        parts[0] = _HEAD.pack(
            len(parts) - 1,
            len(kept_fans),
            ratio,
            uptime,
            hottest_chip,
            hottest_board,
            min(kept_fans) if kept_fans else 0xFFFF,
            found,
        )
        if kept_fans:
            parts.append(_FANS[len(kept_fans)].pack(*kept_fans))
        packed = b"".join(parts)
        kept_errors: tuple[str, ...] = ()
        if errors:
            kept_errors = tuple(str(e)[:MAX_ERROR_CHARS] for e in list(errors)[:MAX_ERRORS])
        return cls(packed=packed, firmware=firmware, errors=kept_errors)

    @property
    def board_count(self) -> int:
        """Hash boards reported."""
        return int(_HEAD.unpack_from(self.packed)[0])

    @property
    def reject_ratio(self) -> float | None:
        """Rejected / (accepted + rejected) shares (difficulty-weighted where reported)."""
        ratio = float(_HEAD.unpack_from(self.packed)[2])
        return None if math.isnan(ratio) else ratio

    @property
    def uptime_s(self) -> int | None:
        """Seconds since the mining software started, None when not reported."""
        uptime = int(_HEAD.unpack_from(self.packed)[3])
        return None if uptime < 0 else uptime

    @property
    def boards(self) -> tuple[BoardHealth, ...]:
        """The boards, in slot order."""
        count = self.board_count
        end = _HEAD.size + count * _BOARD.size
        return tuple(
            BoardHealth(
                hashrate_hs=None if math.isnan(ghs) else ghs * 1e9,
                chips=None if chips == _NO_CHIPS else chips,
                board_temp_c=None if board == _NO_TEMP else board / 10,
                chip_temp_c=None if chip == _NO_TEMP else chip / 10,
            )
            for ghs, chips, board, chip in _BOARD.iter_unpack(self.packed[_HEAD.size : end])
        )

    @property
    def fans_rpm(self) -> tuple[int, ...]:
        """Fan speeds in RPM, in fan order."""
        start = _HEAD.size + self.board_count * _BOARD.size
        return tuple(rpm for (rpm,) in _FAN.iter_unpack(self.packed[start:]))

    def summary(
        self,
    ) -> tuple[int, float | None, int | None, float | None, float | None, int | None, int | None]:
        """The header's figures, read without unpacking the boards (a scrape's needs).

        (boards, reject ratio, uptime s, hottest chip C, hottest board C, slowest fan RPM,
        chips found); None where not reported.
        """
        boards, _fans, ratio, uptime, chip, board, fan, found = _HEAD.unpack_from(self.packed)
        return (
            boards,
            None if ratio != ratio else ratio,
            None if uptime < 0 else uptime,
            None if chip == _NO_TEMP else chip / 10,
            None if board == _NO_TEMP else board / 10,
            None if fan == 0xFFFF else fan,
            None if found < 0 else found,
        )

    @property
    def chip_temp_max_c(self) -> float | None:
        """The hottest chip of any board, None when no board reports one."""
        return self.summary()[3]

    @property
    def board_temp_max_c(self) -> float | None:
        """The hottest board sensor, None when no board reports one."""
        return self.summary()[4]

    @property
    def fan_rpm_min(self) -> int | None:
        """The slowest fan, None without fans (immersion, hydro)."""
        return self.summary()[5]

    @property
    def chips_found(self) -> int | None:
        """Chips found on all boards, None when no board reports a count."""
        return self.summary()[6]


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
    health: Health | None = None  # boards, fans, rejects, uptime, firmware, errors (where read)

    @property
    def hottest_c(self) -> float | None:
        """The hottest temperature known: chips where reported, else what temperature_c says."""
        found = [self.temperature_c]
        if self.health is not None:
            found += [self.health.chip_temp_max_c, self.health.board_temp_max_c]
        return max((t for t in found if t is not None), default=None)


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
