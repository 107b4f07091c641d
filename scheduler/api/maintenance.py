"""``POST /v1/device-actions`` (operator) and ``GET /v1/device-actions/{job_id}`` (viewer).

A POST checks the request, writes its audit row (result ``started``), starts the
job and answers 202 with the job; the row's result becomes the job's summary
(``reboot: 3 confirmed, 1 unsupported``) when it ends.  The job runs in the
daemon (``scheduler.control.device_actions``): batches, a verify per batch, one
outcome per device.  503 while the daemon has no maintenance runner (no store yet).
"""

from __future__ import annotations

import contextlib
import json
from typing import Annotated, Any, Literal

from fastapi import FastAPI, HTTPException, Path, Request
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from scheduler.api.routes import _actor
from scheduler.api.views import ERRORS, NOT_FOUND, ControlView
from scheduler.control.device_actions import (
    MAX_DEVICES_PER_JOB,
    Action,
    ActionJob,
    ActionRequest,
    MaintenanceError,
    MaintenanceRunner,
    outcome_rows,
)
from scheduler.control.service import ControlRejected
from scheduler.store.operator import ApiAuditEntry
from scheduler.store.sqlite import StoreError

DeviceId = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class DeviceActionRequest(BaseModel):
    """One maintenance job: an action, its devices, and how to stagger it."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["reboot", "pool", "power-profile", "locate"]
    devices: list[DeviceId] = Field(min_length=1, max_length=MAX_DEVICES_PER_JOB)
    pool: str | None = Field(None, max_length=64, description="pool: a configured pool name")
    power_level: float | None = Field(
        None, gt=0, le=1, description="power-profile: share of nominal power"
    )
    locate: bool = Field(True, description="locate: LED on (true) or off")
    batch_size: int = Field(10, ge=1, le=1000, description="devices acted on at once")
    batch_interval_seconds: float = Field(0.0, ge=0, le=3600, description="pause between batches")
    verify_timeout_seconds: float = Field(
        120.0, gt=0, le=1800, description="how long each device's read-back may take"
    )
    stop_on_failure: bool = Field(
        True, description="skip the remaining batches once a batch has a device fail"
    )


class DeviceActionOutcomeView(BaseModel):
    """One device's outcome."""

    device: str
    status: str = Field(
        description="pending, confirmed, unconfirmed, failed, refused, unsupported, skipped"
    )
    detail: str
    batch: int


class DeviceActionJobView(BaseModel):
    """A maintenance job and where it stands."""

    id: int
    action: str
    by: str
    done: bool
    batches: int
    batches_done: int
    counts: dict[str, int]
    outcomes: list[DeviceActionOutcomeView]


def job_view(job: ActionJob) -> DeviceActionJobView:
    """The API form of a job."""
    return DeviceActionJobView(
        id=job.id,
        action=job.request.action.value,
        by=job.actor,
        done=job.done,
        batches=job.batches,
        batches_done=job.batches_done,
        counts=job.counts(),
        outcomes=[
            DeviceActionOutcomeView(
                device=o.device_id, status=o.status.value, detail=o.detail, batch=o.batch
            )
            for o in outcome_rows(job)
        ],
    )


def add_maintenance_routes(app: FastAPI, view: ControlView) -> None:
    """Register the maintenance routes; the runner is the view's ``device_actions`` attribute."""

    def runner() -> MaintenanceRunner:
        found: Any = getattr(view, "device_actions", None)
        if not isinstance(found, MaintenanceRunner):
            raise HTTPException(503, "maintenance actions are not available yet")
        return found

    @app.post(
        "/v1/device-actions",
        response_model=DeviceActionJobView,
        status_code=202,
        tags=["maintenance"],
        responses=ERRORS,
    )
    async def post_action(body: DeviceActionRequest, request: Request) -> DeviceActionJobView:
        """Start a maintenance job: reboot, pool, power-profile or locate, verified per batch."""
        maintenance = runner()
        control = view.control
        if control is None:
            raise HTTPException(503, "the store is not open yet")
        wanted = ActionRequest(
            action=Action(body.action),
            devices=tuple(body.devices),
            pool=body.pool,
            power_level=body.power_level,
            locate=body.locate,
            batch_size=body.batch_size,
            batch_interval_seconds=body.batch_interval_seconds,
            verify_timeout_seconds=body.verify_timeout_seconds,
            stop_on_failure=body.stop_on_failure,
        )
        try:
            maintenance.check(wanted)
        except MaintenanceError as exc:  # answered in FastAPI's validation shape
            raise ControlRejected(422, str(exc), exc.field) from None
        actor = _actor(request)
        entry = ApiAuditEntry(
            at=control.wall_clock(),
            principal=actor.principal,
            role=actor.role,
            remote=actor.remote,
            method=actor.method,
            path=actor.path,
            before="",
            after=json.dumps(body.model_dump(exclude_defaults=True), sort_keys=True)[:4000],
            result="started",
            status_code=202,
        )
        row = control.store.record_api_audit(entry)
        request.state.audited = True

        def ended(job: ActionJob) -> None:
            # the store may be closing with the daemon; the log has each outcome anyway
            with contextlib.suppress(StoreError):
                control.store.update_api_audit_result(row, job.summary())

        job = maintenance.start(wanted, actor.principal, on_done=ended)
        return job_view(job)

    @app.get(
        "/v1/device-actions/{job_id}",
        response_model=DeviceActionJobView,
        tags=["maintenance"],
        responses={**ERRORS, **NOT_FOUND},
    )
    async def get_action(
        job_id: int = Path(ge=1, le=2**31, description="the job id a POST answered"),
    ) -> DeviceActionJobView:
        """A maintenance job's progress and per-device outcomes (the last 32 jobs are kept)."""
        job = runner().job(job_id)
        if job is None:
            raise HTTPException(404, f"no maintenance job {job_id} (the last 32 are kept)")
        return job_view(job)
