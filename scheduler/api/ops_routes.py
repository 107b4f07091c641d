"""Operations routes: live reload (admin), maintenance windows (operator) and reports (viewer).

The daemon answers them through attributes it may lack in a test view:
``reload()`` (scheduler.reload), ``maintenance`` (scheduler.control.maintenance)
and ``accounting`` (scheduler.control.accounting); without one, the route answers 503.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Annotated, Any, Literal

from fastapi import FastAPI, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from scheduler.api.routes import _actor
from scheduler.api.views import ERRORS, NOT_FOUND, ControlView
from scheduler.control.accounting import Accountant, report_csv, report_rows, site_days
from scheduler.control.maintenance import MAX_NOTE, MAX_WINDOW_SECONDS, MaintenanceWindows, Window
from scheduler.reload import ReloadRefused

MAX_REPORT_DAYS = 366
MAX_REPORT_ROWS = 50_000  # machine-day rows per page


class MaintenanceRequest(BaseModel):
    """Open a maintenance window on a device or ``rack:NAME``."""

    model_config = ConfigDict(extra="forbid")
    duration_seconds: float = Field(gt=0, le=MAX_WINDOW_SECONDS)
    note: str = Field("", max_length=MAX_NOTE)


class MaintenanceView(BaseModel):
    """A maintenance window."""

    target: str
    devices: list[str]
    start: str
    until: str
    note: str
    by: str
    silence_id: str | None = None
    silence_error: str | None = None


def _window_view(window: Window, silence_error: str | None = None) -> MaintenanceView:
    return MaintenanceView(**window.to_json(), silence_error=silence_error)


def add_ops_routes(app: FastAPI, view: ControlView) -> None:
    """Add /v1/reload, /v1/maintenance and /v1/reports."""

    def windows() -> MaintenanceWindows:
        found = getattr(view, "maintenance", None)
        if not isinstance(found, MaintenanceWindows):
            raise HTTPException(503, "maintenance windows are not available yet")
        return found

    @app.post("/v1/reload", tags=["admin"], responses={**ERRORS, 422: {"description": "refused"}})
    async def reload(request: Request) -> JSONResponse:
        """Re-read the config file: inventory, tokens, policy settings (admin); audited."""
        reloader = getattr(view, "reloader", None)
        if reloader is None:
            raise HTTPException(503, "this daemon has no config file to reload from")
        actor = _actor(request)
        try:
            result = reloader.reload(actor.principal, actor.role, actor.remote, actor.method)
        except ReloadRefused as exc:
            request.state.audited = True
            return JSONResponse(
                {"detail": f"reload refused, running config kept: {exc.message}"}, 422
            )
        request.state.audited = True
        return JSONResponse(result.to_json())

    @app.get(
        "/v1/maintenance", response_model=list[MaintenanceView], tags=["control"], responses=ERRORS
    )
    async def get_maintenance() -> list[MaintenanceView]:
        """Maintenance windows in force."""
        return [_window_view(w) for w in windows().windows()]

    def target_path() -> Any:
        return Path(
            min_length=1, max_length=80, description="a device id, or rack:NAME for a whole rack"
        )

    @app.put(
        "/v1/maintenance/{target}",
        response_model=MaintenanceView,
        tags=["control"],
        responses={**ERRORS, **NOT_FOUND},
    )
    async def put_maintenance(
        body: MaintenanceRequest, request: Request, target: str = target_path()
    ) -> MaintenanceView:
        """Leave a device or rack alone for a while; its alerts are silenced (operator)."""
        window, error = await windows().open(
            target, body.duration_seconds, body.note, _actor(request)
        )
        request.state.audited = True
        return _window_view(window, error)

    @app.delete(
        "/v1/maintenance/{target}",
        response_model=MaintenanceView,
        tags=["control"],
        responses={**ERRORS, **NOT_FOUND},
    )
    async def delete_maintenance(request: Request, target: str = target_path()) -> MaintenanceView:
        """End a maintenance window early; its silence is expired (operator)."""
        window = await windows().end(target, _actor(request))
        request.state.audited = True
        return _window_view(window)

    @app.get(
        "/v1/reports",
        tags=["reports"],
        responses={
            **ERRORS,
            200: {"content": {"application/json": {}, "text/csv": {}}},
            422: {"description": "bad dates"},
        },
    )
    async def reports(
        start: Annotated[date, Query(alias="from", description="first day (YYYY-MM-DD)")],
        end: Annotated[date, Query(alias="to", description="last day, inclusive")],
        device: Annotated[str | None, Query(max_length=64)] = None,
        format: Literal["json", "csv"] = "json",
        limit: Annotated[int, Query(ge=1, le=MAX_REPORT_ROWS)] = 10_000,
        offset: Annotated[int, Query(ge=0, le=100_000_000)] = 0,
    ) -> Response:
        """Per day and machine: uptime, energy, revenue, cost, margin, gain over always-on, DR."""
        accounting = getattr(view, "accounting", None)
        if not isinstance(accounting, Accountant):
            raise HTTPException(503, "accounting is not running yet")
        if end < start:
            raise HTTPException(422, "'to' is before 'from'")
        if end - start > timedelta(days=MAX_REPORT_DAYS):
            raise HTTPException(422, f"at most {MAX_REPORT_DAYS} days per report")
        rows = report_rows(accounting, start, end, device, limit=limit + 1, offset=offset)
        more = len(rows) > limit
        rows = rows[:limit]
        if format == "csv":  # paged like the JSON: X-Next-Offset names the next page
            headers = {"x-next-offset": str(offset + limit)} if more else {}
            return Response(report_csv(rows), media_type="text/csv", headers=headers)
        return JSONResponse(
            {
                "from": start.isoformat(),
                "to": end.isoformat(),
                "days": site_days(accounting, start, end, device),
                "rows": rows,
                "limit": limit,
                "offset": offset,
                "next_offset": offset + limit if more else None,
            }
        )
