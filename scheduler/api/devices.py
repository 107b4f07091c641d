"""``GET /v1/devices/{device_id}``: one device with its deep health (boards, fans, error codes)."""

from __future__ import annotations

from fastapi import FastAPI, HTTPException, Path

from scheduler.api.views import NOT_FOUND, ApiView, DeviceDetailView, device_view


def add_device_routes(app: FastAPI, view: ApiView) -> None:
    """Register the per-device read route on ``app``."""
    example_device = min(view.state.devices, default="s21-001")

    @app.get(
        "/v1/devices/{device_id}",
        response_model=DeviceDetailView,
        tags=["fleet"],
        responses=NOT_FOUND,
    )
    async def device(
        device_id: str = Path(
            min_length=1, max_length=64, examples=[example_device], description="device id"
        ),
    ) -> DeviceDetailView:
        """One device: its observed and desired workload and all its health."""
        if device_id not in view.state.devices:
            raise HTTPException(404, f"no device {device_id!r}")
        found = device_view(view.state, device_id, view.clock(), detail=True)
        assert isinstance(found, DeviceDetailView)
        return found
