"""Operator routes of the API: summary, readiness, decisions, audit, overrides, mode, curtail, policy.

Bodies are the pydantic models of scheduler.api.views (``extra="forbid"``,
bounded fields); a change goes through ControlService, which commits it with
its audit row before the handler returns.  The security middleware in front
is added by scheduler.api.wiring.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import FastAPI, HTTPException, Path, Query, Request, Response
from fastapi.responses import JSONResponse

from scheduler.api.auth import Principal
from scheduler.api.security import PRINCIPAL
from scheduler.api.views import (
    ERRORS,
    NOT_FOUND,
    AuditEntryView,
    AuditPage,
    ControlView,
    CurtailRequest,
    CurtailView,
    DecisionsPage,
    ModeRequest,
    ModeView,
    OverrideRequest,
    OverrideView,
    PolicyRequest,
    PolicyView,
    Readiness,
    SummaryView,
    curtail_event_view,
    decision_view,
    override_view,
    plan_view,
)
from scheduler.control.service import Actor, ControlRejected, ControlService, Curtail
from scheduler.core.model import WorkloadKind
from scheduler.observability.metrics import hashprice_from_market
from scheduler.store.sqlite import StoreError

log = logging.getLogger(__name__)


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
            curtail=curtail_event_view(event),
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
            items=[decision_view(r) for r in records[:limit]],
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
        return [override_view(row) for row in control().overrides()]

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
        return override_view(row)

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
        return override_view(row)

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
            event=curtail_event_view(event),
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
