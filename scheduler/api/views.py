"""What the API reads from the daemon, and the bodies it takes and answers with.

``ApiView`` and ``ControlView`` are what the routes need of the daemon; the
pydantic models are the request and response bodies (request bodies reject
unknown fields and bound every field); the functions turn the daemon's state,
plan and store rows into those bodies.  Nothing here adds a route: the app
(scheduler.api.app) and the route modules import this, never the other way.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from scheduler.api.device_health import HealthDetailView, HealthView, health_detail, health_view
from scheduler.config.schema import WattmuxConfig
from scheduler.control.service import MAX_DURATION_SECONDS, ControlService, Curtail, Mode
from scheduler.core.hardware import lookup
from scheduler.core.model import MARKET_INPUTS, TERA, DeviceKind, Plan, Reading
from scheduler.core.state import FleetState
from scheduler.observability.metrics import Metrics, hashprice_from_market
from scheduler.store.journal import AuditRecord
from scheduler.store.operator import OverrideRow


class ApiView(Protocol):
    """What the API reads from the daemon."""

    state: FleetState
    metrics: Metrics

    def current_plan(self) -> Plan | None:
        """Return the latest plan, or None before the first one."""
        ...

    def clock(self) -> float:
        """Return the loop's monotonic time in seconds (the clock sample ages are measured on)."""
        ...


class Health(BaseModel):
    """Liveness answer."""

    status: Literal["ok"] = "ok"


class DeviceView(BaseModel):
    """One device as the loop sees it; sample fields are null unless the device is reachable."""

    id: str
    kind: str
    model: str
    address: str
    port: int
    reachable: bool
    last_error: str | None = Field(description="why the last poll failed, if it did")
    workload: str | None = Field(description="observed workload, e.g. mine(main) or sleep")
    power_w: float | None
    hashrate_ths: float | None
    temperature_c: float | None
    sample_age_seconds: float | None
    desired_workload: str | None = Field(description="workload the scheduler wants")
    model_catalogued: bool = Field(
        True, description="false: the model catalog lacks the model; nominal figures from config"
    )
    health: HealthView | None = Field(
        None, description="deep health at a glance, where the firmware reports it"
    )


class DeviceDetailView(DeviceView):
    """One device with all its health: boards, fans, error codes."""

    health: HealthDetailView | None = Field(
        None, description="deep health, where the firmware reports it"
    )


class ReadingView(BaseModel):
    """One market input with its age and where it came from."""

    value: float
    age_seconds: float
    source: str


class MarketView(BaseModel):
    """The latest market inputs (null until a good value has arrived) and the hashprice."""

    btc_price_usd: ReadingView | None
    difficulty: ReadingView | None
    block_subsidy_btc: ReadingView | None
    fees_btc_per_block: ReadingView | None
    power_price_usd_per_mwh: ReadingView | None
    hashprice_usd_per_th_day: float | None = Field(
        description="USD per TH/s per day net of pool fee; null if not computable"
    )
    pools_up: dict[str, bool] = Field(
        default_factory=dict,
        description="pool -> up, from the miners' pool reports (absent: not reported yet, up)",
    )


class AssignmentView(BaseModel):
    """One device's assignment in the current plan."""

    device: str
    workload: str
    reason: str
    expected_margin_usd_per_hour: float
    detail: str = ""  # the policy's figures behind the reason (max-margin: its switching band)


def _reading_view(reading: Reading | None, now: float) -> ReadingView | None:
    """Convert a Reading to its API form (None stays None)."""
    if reading is None:
        return None
    return ReadingView(
        value=reading.value,
        age_seconds=max(0.0, now - reading.observed_at),
        source=reading.source,
    )


def device_views(state: FleetState, now: float) -> list[DeviceView]:
    """Return every device of the state, sorted by id, as API views."""
    return [device_view(state, device_id, now) for device_id in sorted(state.devices)]


def device_view(
    state: FleetState, device_id: str, now: float, *, detail: bool = False
) -> DeviceView:
    """One device of the state (KeyError when unknown); ``detail``: boards, fans, codes too."""
    device = state.devices[device_id]
    status = state.status.get(device_id)
    sample = state.samples.get(device_id)
    reachable = status is not None and status.reachable
    trusted = sample if reachable else None
    desired = state.desired.get(device_id)
    health = None if trusted is None else trusted.health
    kind = DeviceDetailView if detail else DeviceView
    return kind(
        id=device.id,
        kind=device.kind.value,
        model=device.model,
        address=device.address,
        port=device.port,
        reachable=reachable,
        last_error=None if status is None else status.last_error,
        workload=None if trusted is None else str(trusted.workload),
        power_w=None if trusted is None else trusted.power_w,
        hashrate_ths=None if trusted is None else trusted.hashrate_hs / TERA,
        temperature_c=None if trusted is None else trusted.temperature_c,
        sample_age_seconds=(None if trusted is None else max(0.0, now - trusted.observed_at)),
        desired_workload=None if desired is None else str(desired),
        model_catalogued=device.kind is not DeviceKind.ASIC or lookup(device.model) is not None,
        health=None
        if health is None
        else (health_detail if detail else health_view)(device, health),
    )


def market_view(state: FleetState, now: float) -> MarketView:
    """Return the market inputs with ages, and the hashprice when it can be computed."""
    readings = {name: _reading_view(getattr(state.market, name), now) for name in MARKET_INPUTS}
    return MarketView(
        **readings,
        hashprice_usd_per_th_day=hashprice_from_market(state.market, state.pool_fee),
        pools_up=dict(sorted(state.pools_up.items())),
    )


def plan_view(plan: Plan | None) -> list[AssignmentView]:
    """Return the plan's assignments in plan order (empty before the first plan)."""
    if plan is None:
        return []
    return [
        AssignmentView(
            device=a.device_id,
            workload=str(a.workload),
            reason=a.reason,
            expected_margin_usd_per_hour=a.expected_margin_usd_per_hour,
            detail=a.detail,
        )
        for a in plan.assignments
    ]


class ControlView(ApiView, Protocol):
    """What the API reads and changes in the daemon."""

    config: WattmuxConfig

    @property
    def control(self) -> ControlService | None:
        """The operator control (None until the store is open)."""
        ...

    def readiness(self) -> dict[str, bool]:
        """Each readiness condition and whether it holds."""
        ...


class Problem(BaseModel):
    """An error answer."""

    detail: Any


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "body is not JSON"},
    401: {"model": Problem, "description": "missing or invalid bearer token"},
    403: {"model": Problem, "description": "the token's role may not do this"},
    413: {"model": Problem, "description": "request body too large"},
    429: {"model": Problem, "description": "too many changes from this token"},
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": Problem, "description": "not found"}}


class _Body(BaseModel):
    """Base of request bodies: unknown fields are rejected."""

    model_config = ConfigDict(extra="forbid")


Duration = Annotated[
    float, Field(gt=0, le=MAX_DURATION_SECONDS, allow_inf_nan=False, description="seconds")
]


class OverrideRequest(_Body):
    """Pin a device to a workload for a while."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"workload": "sleep", "duration_seconds": 7200, "note": "fan noise"}]
        },
    )

    workload: str = Field(min_length=1, max_length=100, description="e.g. sleep or mine(main)")
    duration_seconds: Duration
    note: str = Field("", max_length=200, description="why (kept in the audit log)")


class ModeRequest(_Body):
    """Switch the daemon's mode."""

    mode: Mode


class CurtailRequest(_Body):
    """Hold the site at target_kw (null: everything asleep) for duration_seconds."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"target_kw": 500, "duration_seconds": 1800}]},
    )

    target_kw: float | None = Field(ge=0, le=1e7, allow_inf_nan=False)
    duration_seconds: Duration


class PolicyRequest(_Body):
    """Select an installed policy."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"name": "breakeven"}]}
    )

    name: str = Field(min_length=1, max_length=64)


class OverrideView(BaseModel):
    """An active override."""

    device: str
    workload: str
    until: datetime
    note: str
    by: str
    created_at: datetime


class ModeView(BaseModel):
    """The daemon's mode."""

    mode: Mode


class CurtailEventView(BaseModel):
    """A curtail event in force."""

    target_kw: float | None = Field(description="null: the whole site asleep")
    until: datetime
    by: str


class CurtailView(BaseModel):
    """The curtail event in force (if any) and the caps that result."""

    event: CurtailEventView | None
    site_power_cap_kw: float
    effective_cap_kw: float = Field(description="min(site cap, curtail target); never above cap")


class PolicyView(BaseModel):
    """The selected policy and the installed ones."""

    name: str
    available: list[str]


class SummaryView(BaseModel):
    """The fleet at a glance."""

    site: str
    mode: Mode
    policy: str
    devices: int
    reachable: int
    mining: int
    sleeping: int
    unreachable: int
    site_power_kw: float = Field(description="sum of the power the reachable devices report")
    site_power_cap_kw: float
    effective_cap_kw: float
    curtail: CurtailEventView | None
    overrides: int
    power_price_usd_per_mwh: float | None
    hashprice_usd_per_th_day: float | None
    expected_margin_usd_per_hour: float = Field(description="sum over the current plan")
    pools_down: list[str] = Field(
        default_factory=list, description="pools no miner that lists them sees alive"
    )


class Readiness(BaseModel):
    """Whether the daemon is ready, and each condition."""

    ready: bool
    checks: dict[str, bool]


class DecisionView(BaseModel):
    """A decision (changed assignment) or a command with its outcome."""

    kind: Literal["decision", "command"]
    id: int
    at: datetime
    device: str
    workload: str
    reason: str
    outcome: str | None
    detail: str
    previous: str | None
    expected_margin_usd_per_hour: float | None
    finished_at: datetime | None


class DecisionsPage(BaseModel):
    """One page of the decision log, newest first."""

    items: list[DecisionView]
    limit: int
    offset: int
    next_offset: int | None = Field(description="offset of the next page; null on the last")


class AuditEntryView(BaseModel):
    """One mutating API request."""

    id: int
    at: datetime
    principal: str
    role: str
    remote: str
    method: str
    path: str
    before: str
    after: str
    result: str
    status_code: int


class AuditPage(BaseModel):
    """One page of the API audit log, newest first."""

    items: list[AuditEntryView]
    limit: int
    offset: int
    next_offset: int | None


def override_view(row: OverrideRow) -> OverrideView:
    """An override row as the API shows it."""
    return OverrideView(
        device=row.device_id,
        workload=str(row.workload),
        until=row.until,
        note=row.note,
        by=row.by,
        created_at=row.at,
    )


def curtail_event_view(event: Curtail | None) -> CurtailEventView | None:
    """A curtail event as the API shows it (None stays None)."""
    if event is None:
        return None
    return CurtailEventView(target_kw=event.target_kw, until=event.until, by=event.by)


def decision_view(record: AuditRecord) -> DecisionView:
    """A decision or command row as the API shows it."""
    return DecisionView(
        kind=record.kind.value,
        id=record.id,
        at=record.at,
        device=record.device_id,
        workload=str(record.workload),
        reason=record.reason,
        outcome=record.outcome,
        detail=record.detail,
        previous=None if record.previous is None else str(record.previous),
        expected_margin_usd_per_hour=record.expected_margin_usd_per_hour,
        finished_at=record.finished_at,
    )
