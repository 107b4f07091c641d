"""Site power routes: the meter, the setpoint (operator and base points) and signed webhook signals.

- ``GET /v1/meter``: the latest site meter reading and its disagreement with the machines;
- ``GET /v1/setpoint``: the target in force, its state, the limit followed, recent targets;
- ``PUT /v1/setpoint`` (operator): a target in kW (``source`` operator or basepoint, an
  ``id`` makes it idempotent); ``DELETE /v1/setpoint``: release;
- ``POST /v1/signals/webhook`` (no bearer token: an HMAC-SHA256 signature over
  ``TIMESTAMP.BODY`` with the ``[webhook] secret``, timestamp within the replay
  window; idempotent by signal id).  docs/grid.md has examples.
- ``POST /v1/signals/openadr3`` (no wattmux token: the OpenADR 3 VTN's notification
  to the subscription's ``callbackUrl``, with the ``[openadr3] callback_token`` as
  its bearer token); acted on by the VEN exactly as a polled event.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import FastAPI, HTTPException, Path, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from drivers.dr.openadr3 import Vtn3Error
from scheduler.api.auth import Principal, RateLimiter
from scheduler.api.security import PRINCIPAL
from scheduler.api.views import ERRORS, ControlView
from scheduler.config.grid import WebhookConfig
from scheduler.control.grid import GridControl, Signal, SignalResult
from scheduler.control.mv import BaselineMethod, ChartUnavailableError, EventMv, png
from scheduler.control.mvstore import event_mv
from scheduler.control.setpoint import Target
from scheduler.control.sitemeter import disagreement_ratio, miners_reported_w
from scheduler.store.operator import ApiAuditEntry
from scheduler.store.sqlite import StoreError

TIMESTAMP_HEADER = "x-wattmux-timestamp"
SIGNATURE_HEADER = "x-wattmux-signature"
log = logging.getLogger(__name__)
GRID_RULES = (
    ("GET", "/v1/meter"),
    ("GET", "/v1/setpoint"),
    ("PUT", "/v1/setpoint"),
    ("DELETE", "/v1/setpoint"),
    ("POST", "/v1/signals/webhook"),
    ("GET", "/v1/events/{event_id}/mv"),
    ("POST", "/v1/signals/openadr3"),
)
"""The routes this extension adds (each with its rule in ``ROUTE_ROLES``)."""
SignalId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:@-]+$")]


class MeterView(BaseModel):
    """The site meter as the daemon last read it."""

    configured: bool
    power_kw: float | None = Field(description="null when no fresh reading")
    age_seconds: float | None
    energy_import_kwh: float | None
    machines_reported_kw: float
    disagreement_ratio: float | None = Field(description="(meter - machines) / meter")
    reads: dict[str, int]


class TargetView(BaseModel):
    """A site power target."""

    id: str
    source: str
    kw: float
    state: str
    age_seconds: float


class SetpointView(BaseModel):
    """Site power control now."""

    target: TargetView | None
    effective_kw: float | None = Field(description="the limit followed: ramped target, cap, DR")
    projected_kw: float | None
    metered_kw: float | None
    held: dict[str, int]
    signal_stale: bool
    recent: list[TargetView]
    dr_events: list[TargetView] = Field(
        default_factory=list,
        description="demand-response events (MQTT) as targets: kw is the limit, newest first",
    )


class SetpointRequest(BaseModel):
    """Follow a site power target."""

    model_config = ConfigDict(extra="forbid")
    kw: float = Field(ge=0, le=1e7, allow_inf_nan=False)
    hold_seconds: float | None = Field(None, gt=0, le=7 * 86400, allow_inf_nan=False)
    source: Literal["operator", "basepoint"] = "operator"
    id: SignalId | None = Field(None, description="idempotency key (default: a new one)")


class WebhookSignal(BaseModel):
    """An aggregator's dispatch signal."""

    model_config = ConfigDict(extra="forbid")
    id: SignalId
    action: Literal["setpoint", "release", "deploy"] = "setpoint"
    kw: float | None = Field(None, ge=0, le=1e7, allow_inf_nan=False)
    hold_seconds: float | None = Field(None, gt=0, le=7 * 86400, allow_inf_nan=False)
    award: str | None = Field(None, max_length=64, description="deploy: the award's name")


class SignalAnswer(BaseModel):
    """What a signal did."""

    outcome: Literal["accepted", "duplicate"]
    target_id: str | None
    state: str


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """The ``X-Wattmux-Signature`` value: ``sha256=`` + hex HMAC-SHA256 of ``TIMESTAMP.BODY``."""
    return (
        "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    )


def grid_routes(
    grid: GridControl,
    view: ControlView,
    webhook: WebhookConfig | None,
    *,
    wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    unix_clock: Callable[[], float] = time.time,
) -> Callable[[FastAPI], None]:
    """The extension adding the site power routes to the API app."""
    refused_rows = RateLimiter(per_minute=30.0, burst=30, max_keys=1024)  # audit rows of refusals

    def target_view(target: Target) -> TargetView:
        return TargetView(
            id=target.id,
            source=target.source,
            kw=target.kw,
            state=target.state.value,
            age_seconds=max(0.0, grid.clock() - target.received_at),
        )

    def audit(
        request: Request,
        principal: str,
        role: str,
        status: int,
        before: Any,
        after: Any,
        result: str,
    ) -> None:
        request.state.audited = True
        control = view.control
        if control is None:
            return
        client = request.client
        entry = ApiAuditEntry(
            at=wall_clock(),
            principal=principal,
            role=role,
            remote=f"{client.host}:{client.port}" if client else "unknown",
            method=request.method,
            path=request.url.path[:512],
            before=json.dumps(before),
            after=json.dumps(after),
            result=result[:512],
            status_code=status,
        )
        try:
            control.store.record_api_audit(entry)
        except StoreError:  # the change is made; the log line says the row is missing
            log.error("cannot write the audit row of %s", entry.path)

    def who(request: Request) -> tuple[str, str]:
        principal: Principal | None = getattr(request.state, PRINCIPAL, None)
        return (principal.name, principal.role.label) if principal else ("anonymous", "none")

    def answer(result: SignalResult) -> SignalAnswer:
        return SignalAnswer(outcome=result.outcome, target_id=result.target_id, state=result.state)

    def add(app: FastAPI) -> None:
        @app.get("/v1/meter", response_model=MeterView, tags=["grid"])
        async def get_meter() -> MeterView:
            """The latest site meter reading and the machines' own sum."""
            meter = grid.meter
            miners = miners_reported_w(view.state)
            metered = meter.power_w() if meter else None
            latest = meter.latest if meter else None
            return MeterView(
                configured=meter is not None,
                power_kw=None if metered is None else metered / 1000.0,
                age_seconds=meter.age_seconds() if meter else None,
                energy_import_kwh=latest.energy_import_kwh if latest else None,
                machines_reported_kw=miners / 1000.0,
                disagreement_ratio=disagreement_ratio(metered, miners),
                reads=dict(meter.reads) if meter else {},
            )

        @app.get("/v1/setpoint", response_model=SetpointView, tags=["grid"])
        async def get_setpoint() -> SetpointView:
            """The target in force, its state and the limit followed."""
            ctl = grid.setpoint
            metered = grid.meter.power_w() if grid.meter else None
            return SetpointView(
                target=target_view(ctl.target) if ctl.target else None,
                effective_kw=None if ctl.limit_w is None else ctl.limit_w / 1000.0,
                projected_kw=None if ctl.projected_w is None else ctl.projected_w / 1000.0,
                metered_kw=None if metered is None else metered / 1000.0,
                held=ctl.held_counts(),
                signal_stale=ctl.stale_signal,
                recent=[target_view(t) for t in reversed(ctl.history[-20:])],
                dr_events=[target_view(t) for t in list(reversed(ctl.dr_targets.values()))[:20]],
            )

        @app.put("/v1/setpoint", response_model=SignalAnswer, tags=["grid"], responses=ERRORS)
        async def put_setpoint(body: SetpointRequest, request: Request) -> SignalAnswer:
            """Follow a site power target (ramp-and-hold, deadband, staggered restore)."""
            signal = Signal(
                id=body.id or uuid.uuid4().hex,
                source=body.source,
                action="setpoint",
                kw=body.kw,
                hold_seconds=body.hold_seconds,
            )
            return answer(accept(request, signal, *who(request)))

        @app.delete("/v1/setpoint", response_model=SignalAnswer, tags=["grid"], responses=ERRORS)
        async def delete_setpoint(request: Request) -> SignalAnswer:
            """Release the target: held machines come back, staggered."""
            signal = Signal(id=uuid.uuid4().hex, source="operator", action="release")
            return answer(accept(request, signal, *who(request)))

        @app.post(
            "/v1/signals/webhook",
            response_model=SignalAnswer,
            tags=["grid"],
            responses={
                401: {"description": "bad signature or timestamp outside the replay window"},
                404: {"description": "no [webhook] configured"},
                422: {"description": "not a signal"},
            },
        )
        async def post_webhook(request: Request) -> SignalAnswer:
            """An aggregator's signed dispatch signal (HMAC over timestamp and body)."""
            body = await request.body()
            stamp = request.headers.get(TIMESTAMP_HEADER, "")
            given = request.headers.get(SIGNATURE_HEADER, "")

            def refuse(status: int, reason: str) -> HTTPException:
                grid.count_invalid("webhook")
                client = request.client.host if request.client else "unknown"
                if refused_rows.take(client) == 0:  # a flood is counted, not a row each
                    audit(request, "webhook", "none", status, None, None, f"rejected: {reason}")
                else:
                    request.state.audited = True
                return HTTPException(status, reason)

            if webhook is None:
                raise refuse(404, "no [webhook] configured")
            if not stamp.isdigit() or len(stamp) > 12:
                raise refuse(401, f"missing or malformed {TIMESTAMP_HEADER}")
            if abs(unix_clock() - int(stamp)) > webhook.replay_window_seconds:
                raise refuse(401, "timestamp outside the replay window")
            secret = webhook.secret.get_secret_value().encode()
            if not hmac.compare_digest(signature(secret, stamp, body), given):
                raise refuse(401, "bad signature")
            try:
                parsed = WebhookSignal.model_validate_json(body)
            except ValidationError as exc:
                raise refuse(422, f"not a signal: {exc.errors()[0]['msg']}") from None
            signal = Signal(
                id=parsed.id,
                source="webhook",
                action=parsed.action,
                kw=parsed.kw,
                hold_seconds=parsed.hold_seconds,
                award=parsed.award,
            )
            return answer(accept(request, signal, "webhook", "none"))

        @app.post(
            "/v1/signals/openadr3",
            status_code=204,
            tags=["grid"],
            responses={
                401: {"description": "not the subscription's bearer token"},
                404: {"description": "no [openadr3] configured"},
                422: {"description": "not an OpenADR 3 event notification"},
            },
        )
        async def post_openadr3(request: Request) -> Response:
            """An OpenADR 3 VTN's notification of an event created, changed or deleted."""
            ven = grid.openadr3
            client = request.client.host if request.client else "unknown"
            if ven is None:
                grid.count_invalid("openadr")
                if refused_rows.take(client) == 0:
                    audit(request, "openadr", "none", 404, None, None, "rejected: no [openadr3]")
                else:
                    request.state.audited = True
                raise HTTPException(404, "no [openadr3] configured")
            expected = ven.options.callback_token
            given = request.headers.get("authorization", "")
            if expected is None or not hmac.compare_digest(
                given.encode(), f"Bearer {expected.get_secret_value()}".encode()
            ):
                grid.count_invalid("openadr")  # a flood is counted, not a row each
                if refused_rows.take(client) == 0:
                    audit(request, "openadr", "none", 401, None, None, "rejected: bearer token")
                else:
                    request.state.audited = True
                raise HTTPException(401, "not the subscription's bearer token")
            try:
                await ven.notification(await request.body(), given or None)
            except Vtn3Error as exc:  # counted and audited by the VEN's refusal
                request.state.audited = True
                status = 401 if "bearer token" in exc.message else 422
                raise HTTPException(status, exc.message) from None
            request.state.audited = True  # the VEN's own rows (optIn, signals) record it
            return Response(status_code=204)

    def accept(request: Request, signal: Signal, principal: str, role: str) -> SignalResult:
        before = grid.setpoint.target.id if grid.setpoint.target else None
        try:
            result = grid.accept(signal, audited=True)
        except ValueError as exc:
            audit(request, principal, role, 422, before, None, f"rejected: {exc}")
            raise HTTPException(422, str(exc)) from None
        after = {"id": signal.id, "action": signal.action, "kw": signal.kw}
        audit(request, principal, role, 200, before, after, f"{signal.source}: {result.outcome}")
        return result

    def mv_of(event_id: str, method: BaselineMethod | None) -> EventMv:
        mv = event_mv(grid, view.state.events, event_id, method, wall_clock())
        if mv is None:
            raise HTTPException(404, f"no known event or target {event_id!r}")
        return mv

    def add_mv(app: FastAPI) -> None:
        @app.get(
            "/v1/events/{event_id}/mv",
            tags=["grid"],
            responses={
                200: {
                    "content": {"text/csv": {}, "image/png": {}},
                    "description": "JSON, CSV with format=csv, a chart with format=png",
                },
                501: {"description": "format=png without matplotlib"},
                404: {"description": "no known event or target"},
            },
        )
        async def get_mv(
            event_id: Annotated[str, Path(min_length=1, max_length=140)],
            format: Literal["json", "csv", "png"] = "json",
            baseline: BaselineMethod | None = None,
        ) -> Response:
            """M&V of an event or target: baseline, delivered kW per interval, response, compliance."""
            mv = mv_of(event_id, baseline)
            if format == "csv":
                return Response(mv.as_csv(), media_type="text/csv")
            if format == "png":
                try:
                    return Response(png(mv), media_type="image/png")
                except ChartUnavailableError as exc:
                    raise HTTPException(501, str(exc)) from None
            return JSONResponse(mv.as_json())

    def add_all(app: FastAPI) -> None:
        add(app)
        add_mv(app)

    return add_all
