"""Operator routes of the API: summary, readiness, decisions, audit, overrides, mode, curtail, policy.

Bodies are pydantic models with ``extra="forbid"`` and bounded fields; a
change goes through ControlService, which commits it with its audit row
before the handler returns.  ``secure`` puts SecurityMiddleware in front and
refuses to build an app with a route that has no rule in ROUTE_ROLES.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Protocol

from fastapi import FastAPI, HTTPException, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field

from scheduler.api.app import ApiView, plan_view
from scheduler.api.auth import ROUTE_ROLES, Authenticator, Principal, RateLimiter
from scheduler.api.security import PRINCIPAL, SecurityMiddleware
from scheduler.config.schema import WattmuxConfig
from scheduler.control.service import (
    MAX_DURATION_SECONDS,
    Actor,
    ControlRejected,
    ControlService,
    Curtail,
    Mode,
)
from scheduler.core.model import WorkloadKind
from scheduler.observability.metrics import hashprice_from_market
from scheduler.store.journal import AuditRecord, OverrideRow, StoreError

log = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class ApiSecurity:
    """Tokens, rate limit and body bound the API enforces."""

    authenticator: Authenticator
    limiter: RateLimiter
    max_body_bytes: int = 16384


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


def _override_view(row: OverrideRow) -> OverrideView:
    return OverrideView(
        device=row.device_id,
        workload=str(row.workload),
        until=row.until,
        note=row.note,
        by=row.by,
        created_at=row.at,
    )


def _curtail_event(event: Curtail | None) -> CurtailEventView | None:
    if event is None:
        return None
    return CurtailEventView(target_kw=event.target_kw, until=event.until, by=event.by)


def _decision_view(record: AuditRecord) -> DecisionView:
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


def _utc(at: datetime | None) -> datetime | None:
    """Naive query times are read as UTC."""
    if at is None:
        return None
    return at.replace(tzinfo=UTC) if at.tzinfo is None or at.utcoffset() is None else at


def _actor(request: Request) -> Actor:
    principal: Principal | None = getattr(request.state, PRINCIPAL, None)
    client = request.client
    return Actor(
        principal=principal.name if principal else "anonymous",
        role=principal.role.label if principal else "none",
        remote=f"{client.host}:{client.port}" if client else "unknown",
        method=request.method,
        path=request.url.path[:512],
    )


def add_control_routes(app: FastAPI, view: ControlView) -> None:
    """Add readiness, summary, decisions, audit and the operator control routes."""

    def control() -> ControlService:
        service = view.control
        if service is None:
            raise HTTPException(503, "the store is not open yet")
        return service

    example_device = min(view.state.devices, default="s21-001")

    def device_path() -> Any:
        return Path(min_length=1, max_length=64, examples=[example_device], description="device id")

    def effective_cap_kw(event: Curtail | None) -> float:
        cap = view.config.site.power_cap_kw
        if event is None:
            return cap
        return min(cap, event.target_kw or 0.0)

    @app.get(
        "/readyz",
        response_model=Readiness,
        tags=["health"],
        responses={**ERRORS, 503: {"model": Readiness, "description": "not ready"}},
    )
    async def readyz(response: Response) -> Readiness:
        """Ready once config, store and inputs are in and one reconcile has run."""
        checks = view.readiness()
        ready = all(checks.values())
        if not ready:
            response.status_code = 503
        return Readiness(ready=ready, checks=checks)

    @app.get("/v1/summary", response_model=SummaryView, tags=["fleet"], responses=ERRORS)
    async def summary() -> SummaryView:
        """Counts, site power, caps, mode, policy, curtail, prices and the plan's margin."""
        service = control()
        snapshot = view.state.snapshot(view.clock())
        mining = sum(1 for w in snapshot.current.values() if w.kind is WorkloadKind.MINE)
        event = service.curtail()
        price = view.state.market.power_price_usd_per_mwh
        plan = view.current_plan()
        return SummaryView(
            site=view.config.site.name,
            mode=service.mode,
            policy=service.policy_name,
            devices=len(snapshot.devices),
            reachable=len(snapshot.current),
            mining=mining,
            sleeping=len(snapshot.current) - mining,
            unreachable=len(snapshot.devices) - len(snapshot.current),
            site_power_kw=sum(s.power_w for s in snapshot.samples.values()) / 1000.0,
            site_power_cap_kw=view.config.site.power_cap_kw,
            effective_cap_kw=effective_cap_kw(event),
            curtail=_curtail_event(event),
            overrides=len(service.overrides()),
            power_price_usd_per_mwh=None if price is None else price.value,
            hashprice_usd_per_th_day=hashprice_from_market(view.state.market, view.state.pool_fee),
            expected_margin_usd_per_hour=sum(
                a.expected_margin_usd_per_hour for a in plan_view(plan)
            ),
            pools_down=sorted(p for p, up in snapshot.pools_up.items() if not up),
        )

    @app.get(
        "/v1/decisions",
        response_model=DecisionsPage,
        tags=["audit"],
        operation_id="decisions",
        responses=ERRORS,
    )
    async def decisions(
        device: Annotated[str | None, Query(max_length=64)] = None,
        reason: Annotated[str | None, Query(max_length=64)] = None,
        kind: Literal["decision", "command"] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    ) -> DecisionsPage:
        """Decisions and commands, newest first; filter by device, reason, kind and time."""
        records = control().store.audit(
            limit=limit + 1,
            offset=offset,
            device_id=device,
            kind=kind,
            reason=reason,
            since=_utc(since),
            until=_utc(until),
        )
        more = len(records) > limit
        return DecisionsPage(
            items=[_decision_view(r) for r in records[:limit]],
            limit=limit,
            offset=offset,
            next_offset=offset + limit if more else None,
        )

    @app.get("/v1/audit", response_model=AuditPage, tags=["audit"], responses=ERRORS)
    async def audit(
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    ) -> AuditPage:
        """Every mutating API request (who, from where, before -> after, result), newest first."""
        rows = control().store.api_audit(limit=limit + 1, offset=offset)
        more = len(rows) > limit
        return AuditPage(
            items=[
                AuditEntryView(
                    id=r.id,
                    at=r.at,
                    principal=r.principal,
                    role=r.role,
                    remote=r.remote,
                    method=r.method,
                    path=r.path,
                    before=r.before,
                    after=r.after,
                    result=r.result,
                    status_code=r.status_code,
                )
                for r in rows[:limit]
            ],
            limit=limit,
            offset=offset,
            next_offset=offset + limit if more else None,
        )

    @app.get("/v1/overrides", response_model=list[OverrideView], tags=["control"], responses=ERRORS)
    async def overrides() -> list[OverrideView]:
        """Overrides in force."""
        return [_override_view(row) for row in control().overrides()]

    # OpenAPI links: what a client (and the stateful fuzzer) can do next with an answer.
    override_links = {
        "links": {
            "EndOverride": {
                "operationId": "delete_override",
                "parameters": {"device_id": "$response.body#/device"},
            },
            "DecisionsOfDevice": {
                "operationId": "decisions",
                "parameters": {"device": "$response.body#/device"},
            },
        }
    }

    @app.put(
        "/v1/overrides/{device_id}",
        response_model=OverrideView,
        tags=["control"],
        operation_id="put_override",
        responses={**ERRORS, **NOT_FOUND, 200: override_links},
    )
    async def put_override(
        body: OverrideRequest, request: Request, device_id: str = device_path()
    ) -> OverrideView:
        """Pin a device to a workload until the duration ends (safety rules still apply)."""
        row = control().put_override(
            device_id, body.workload, body.duration_seconds, body.note, _actor(request)
        )
        request.state.audited = True
        return _override_view(row)

    @app.delete(
        "/v1/overrides/{device_id}",
        response_model=OverrideView,
        tags=["control"],
        operation_id="delete_override",
        responses={**ERRORS, **NOT_FOUND},
    )
    async def delete_override(request: Request, device_id: str = device_path()) -> OverrideView:
        """End a device's override; the policy decides again."""
        row = control().delete_override(device_id, _actor(request))
        request.state.audited = True
        return _override_view(row)

    @app.get("/v1/mode", response_model=ModeView, tags=["control"], responses=ERRORS)
    async def get_mode() -> ModeView:
        """The daemon's mode."""
        return ModeView(mode=control().mode)

    @app.put("/v1/mode", response_model=ModeView, tags=["control"], responses=ERRORS)
    async def put_mode(body: ModeRequest, request: Request) -> ModeView:
        """auto, manual (hold, overrides only), dry-run (log, do not send) or paused."""
        _, after = control().set_mode(body.mode, _actor(request))
        request.state.audited = True
        return ModeView(mode=after)

    def curtail_view(event: Curtail | None) -> CurtailView:
        return CurtailView(
            event=_curtail_event(event),
            site_power_cap_kw=view.config.site.power_cap_kw,
            effective_cap_kw=effective_cap_kw(event),
        )

    @app.get("/v1/curtail", response_model=CurtailView, tags=["control"], responses=ERRORS)
    async def get_curtail() -> CurtailView:
        """The curtail event in force, if any."""
        return curtail_view(control().curtail())

    curtail_links = {"links": {"EndCurtail": {"operationId": "delete_curtail"}}}

    @app.put(
        "/v1/curtail",
        response_model=CurtailView,
        tags=["control"],
        operation_id="put_curtail",
        responses={**ERRORS, 200: curtail_links},
    )
    async def put_curtail(body: CurtailRequest, request: Request) -> CurtailView:
        """Hold the site at or below target_kw (never lifts the site cap) for a while."""
        event = control().set_curtail(body.target_kw, body.duration_seconds, _actor(request))
        request.state.audited = True
        return curtail_view(event)

    @app.delete(
        "/v1/curtail",
        response_model=CurtailView,
        tags=["control"],
        operation_id="delete_curtail",
        responses={**ERRORS, **NOT_FOUND},
    )
    async def delete_curtail(request: Request) -> CurtailView:
        """End the curtail event in force."""
        control().clear_curtail(_actor(request))
        request.state.audited = True
        return curtail_view(None)

    @app.get("/v1/policy", response_model=PolicyView, tags=["control"], responses=ERRORS)
    async def get_policy() -> PolicyView:
        """The selected policy and the installed ones."""
        service = control()
        return PolicyView(name=service.policy_name, available=list(service.policies))

    @app.put(
        "/v1/policy",
        response_model=PolicyView,
        tags=["control"],
        responses=ERRORS,
    )
    async def put_policy(body: PolicyRequest, request: Request) -> PolicyView:
        """Select an installed policy (admin)."""
        service = control()
        service.set_policy(body.name, _actor(request))
        request.state.audited = True
        return PolicyView(name=service.policy_name, available=list(service.policies))

    @app.get("/v1/config", tags=["admin"], responses=ERRORS)
    async def config() -> dict[str, Any]:
        """The effective configuration, passwords and token hashes left out (admin)."""
        device_secrets = {"__all__": {"options": {"password", "web_password"}}}
        return view.config.model_dump(
            mode="json",
            exclude={
                "pools": {"__all__": {"password"}},
                "devices": device_secrets,
                "device_ranges": device_secrets,
                "api": {"tokens": {"__all__": {"sha256"}}},
            },
        )

    @app.exception_handler(StoreError)
    async def store_failed(_request: Request, exc: StoreError) -> JSONResponse:
        # The change and its audit row are one transaction: when it cannot commit (the
        # database locked past busy_timeout, a full disk), nothing changed.  Say so and
        # let the client retry, rather than answer 500.
        log.error("store error answering a request: %s", exc)
        detail = f"the store could not commit: {exc.message}; nothing was changed, retry"
        return JSONResponse({"detail": detail}, status_code=503, headers={"retry-after": "1"})

    @app.exception_handler(ControlRejected)
    async def rejected(_request: Request, exc: ControlRejected) -> JSONResponse:
        if exc.status_code == 422:  # the shape of FastAPI's own validation errors
            error = {"loc": ["body", exc.field or ""], "msg": exc.message, "type": "value_error"}
            return JSONResponse({"detail": [error]}, status_code=422)
        return JSONResponse({"detail": exc.message}, status_code=exc.status_code)


def secure(app: FastAPI, view: ControlView, security: ApiSecurity) -> None:
    """Add /openapi.json, check every route has a rule, and put the middleware in front."""

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    missing = [
        f"{method} {route.path}"
        for route in app.routes
        if isinstance(route, APIRoute)
        for method in sorted(route.methods or ())
        if (method, route.path) not in ROUTE_ROLES
    ]
    if missing:
        raise RuntimeError(f"routes without a rule in ROUTE_ROLES: {', '.join(missing)}")

    def audit_store() -> Any:
        service = view.control
        return None if service is None else service.store

    def count(status: str) -> None:
        view.metrics.api_rejected.labels(status=status).inc()

    app.add_middleware(
        SecurityMiddleware,
        router_app=app,
        authenticator=security.authenticator,
        limiter=security.limiter,
        max_body_bytes=security.max_body_bytes,
        audit_store=audit_store,
        on_reject=count,
    )


def security_from_config(config: WattmuxConfig) -> ApiSecurity:
    """The API security the config asks for: its tokens, rate limit and body bound."""
    from scheduler.api.auth import Role, TokenEntry

    return ApiSecurity(
        authenticator=Authenticator(
            TokenEntry(t.name, Role.parse(t.role), t.sha256) for t in config.api.tokens
        ),
        limiter=RateLimiter(
            per_minute=config.api.mutations_per_minute, burst=config.api.mutation_burst
        ),
        max_body_bytes=config.api.max_body_bytes,
    )
