"""GET /v1/demand-response/preview: which machines an event would put to sleep, before it starts.

The event is either one the daemon knows (``event=ID``, from MQTT) or a
hypothetical one given by ``target_kw`` and/or ``reduction_kw`` (with an
optional ``start`` and ``priority``).  The preview runs the
``demand-response`` shedding on the fleet as it is now (the workloads of the
daemon's current plan, with overrides, curtail and minimum dwell applied, or the
observed workloads before the first plan; current prices), at the event's start
time: least efficient machines first,
GPU nodes under an AI lease the event does not outrank kept.  It changes
nothing (a GET: no audit row, no rate limit).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Query
from pydantic import AwareDatetime, BaseModel, Field

from scheduler.api.views import ControlView
from scheduler.core.economics import market_economics, option_economics
from scheduler.core.model import Assignment, Event, Snapshot, Workload
from scheduler.core.power import planned_power_w
from scheduler.policies.demand_response import DemandResponsePolicy

PREVIEW_ID = "preview"
MAX_KW = 1e7


class ShedMachineView(BaseModel):
    """One machine the event would put to sleep, in shedding order."""

    order: int = Field(description="1 = first to go")
    device: str
    model: str
    efficiency_j_per_th: float
    workload_before: str = Field(description="what it would run without the event")
    shed_kw: float = Field(description="its planned power minus its sleep power")
    margin_lost_usd_per_hour: float | None = Field(
        description="its planned margin minus its sleep margin; null without a complete market"
    )


class DrPreviewView(BaseModel):
    """The effect of a demand-response event on the fleet as it is now."""

    event_id: str
    start: datetime
    priority: int
    limit_kw: float = Field(description="the site power the event allows")
    site_kw_before: float = Field(description="planned site power without the event")
    site_kw_after: float = Field(description="planned site power once the machines below sleep")
    shed_kw: float
    margin_lost_usd_per_hour: float | None
    feasible: bool = Field(description="false when sleeping every sheddable machine is not enough")
    machines: list[ShedMachineView]


def preview_event(
    snapshot: Snapshot,
    event: Event,
    hysteresis_usd_per_mwh: float,
    before: Mapping[str, Assignment] | None = None,
) -> DrPreviewView:
    """Run the demand-response shedding for ``event`` on ``snapshot`` (taken at the event's start).

    ``before``: what each device runs now (the current plan); devices it leaves out run their
    observed workload.  None: a fresh plan (what the policy would pick without the event).
    """
    policy = DemandResponsePolicy(hysteresis_usd_per_mwh=hysteresis_usd_per_mwh)
    preview, assigned = policy.preview_plan(snapshot, event, before)
    economics = market_economics(snapshot)
    machines = []
    for order, device_id in enumerate(preview.shed, start=1):
        device = snapshot.devices[device_id]
        assignment: Assignment | None = assigned.get(device_id)
        workload = assignment.workload if assignment else snapshot.current.get(device_id)
        shed_w = planned_power_w(device, workload) - device.sleep_power_w
        lost: float | None = None
        if economics is not None and workload is not None:
            running = option_economics(device, workload, economics)
            sleeping = option_economics(device, Workload.sleep(), economics)
            lost = running.margin_usd_per_hour - sleeping.margin_usd_per_hour
        machines.append(
            ShedMachineView(
                order=order,
                device=device_id,
                model=device.model,
                efficiency_j_per_th=device.efficiency_j_per_th,
                workload_before="unknown" if workload is None else str(workload),
                shed_kw=shed_w / 1000.0,
                margin_lost_usd_per_hour=lost,
            )
        )
    losses = [m.margin_lost_usd_per_hour for m in machines]
    return DrPreviewView(
        event_id=event.id,
        start=event.start,
        priority=event.priority,
        limit_kw=preview.limit_kw,
        site_kw_before=preview.site_kw_before,
        site_kw_after=preview.site_kw_after,
        shed_kw=sum(m.shed_kw for m in machines),
        margin_lost_usd_per_hour=None
        if None in losses
        else sum(x for x in losses if x is not None),
        feasible=preview.feasible,
        machines=machines,
    )


Kw = Annotated[float | None, Query(ge=0, le=MAX_KW, allow_inf_nan=False)]


def add_dr_routes(app: FastAPI, view: ControlView) -> None:
    """Add GET /v1/demand-response/preview."""
    errors: dict[int | str, dict[str, Any]] = {
        404: {"description": "no known event has that id"},
        422: {"description": "no event given, or both a known one and a hypothetical one"},
    }

    @app.get(
        "/v1/demand-response/preview",
        response_model=DrPreviewView,
        tags=["demand-response"],
        operation_id="demand_response_preview",
        responses=errors,
    )
    async def dr_preview(
        event: Annotated[
            str | None, Query(min_length=1, max_length=128, description="a known event's id")
        ] = None,
        target_kw: Kw = None,
        reduction_kw: Kw = None,
        start: Annotated[
            AwareDatetime | None, Query(description="hypothetical event start (default: now)")
        ] = None,
        priority: Annotated[int, Query(ge=0, le=1000)] = 0,
    ) -> DrPreviewView:
        """Which machines an event would put to sleep, in order, the kW shed and the margin lost."""
        hypothetical = target_kw is not None or reduction_kw is not None
        if (event is None) == (not hypothetical):
            raise HTTPException(422, "give event=ID, or target_kw and/or reduction_kw")
        if event is not None:
            if start is not None:
                raise HTTPException(422, "start applies to a hypothetical event only")
            found = next((e for e in view.state.events if e.id == event), None)
            if found is None:
                raise HTTPException(404, f"no known demand-response event {event!r}")
            chosen = found
        else:
            begin = (start or datetime.now(UTC)).astimezone(UTC)
            chosen = Event(
                PREVIEW_ID, begin, begin + timedelta(hours=1), target_kw, reduction_kw, priority
            )
        snapshot = view.state.snapshot(view.clock(), chosen.start)
        plan = view.current_plan()
        before = {} if plan is None else plan.by_device()
        return preview_event(snapshot, chosen, view.config.policy.hysteresis_usd_per_mwh, before)
