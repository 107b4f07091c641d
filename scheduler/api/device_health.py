"""The deep health of a device as the API shows it (``/v1/devices``, ``/v1/devices/{id}``).

Chips missing compare the chips the boards report with the catalog's boards x chips per
board of the model (``scheduler/core/catalog.toml``); a board that reports nothing counts
as all its chips missing.  Null where the firmware or the catalog does not say.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from scheduler.core.hardware import lookup
from scheduler.core.model import TERA, Device, Health


class HealthView(BaseModel):
    """Health at a glance (per device, never per chip)."""

    chip_temp_max_c: float | None = Field(description="hottest chip of any board")
    board_temp_max_c: float | None = Field(description="hottest board sensor")
    fan_rpm_min: int | None = Field(description="slowest fan; null without fans")
    boards: int = Field(description="hash boards reporting")
    chips_found: int | None
    chips_expected: int | None = Field(description="the model's stock chips (catalog)")
    chips_missing: int | None
    share_reject_ratio: float | None = Field(description="rejected / submitted shares")
    uptime_seconds: int | None
    firmware: str | None
    errors: int = Field(description="error codes the firmware reports")


class BoardView(BaseModel):
    """One hash board."""

    slot: int
    hashrate_ths: float | None
    chips: int | None
    board_temp_c: float | None
    chip_temp_c: float | None


class HealthDetailView(HealthView):
    """Everything the firmware reports: boards, fans and error codes."""

    board_list: list[BoardView]
    fans_rpm: list[int]
    error_codes: list[str]


def chips_missing(device: Device, health: Health) -> tuple[int | None, int | None]:
    """(expected, missing) chips of ``device``; None where the catalog or firmware lacks them."""
    facts = lookup(device.model)
    expected = None if facts is None else facts.chips_expected
    found = health.chips_found
    if expected is None or found is None:
        return expected, None
    return expected, max(0, expected - found)


def health_view(device: Device, health: Health) -> HealthView:
    """The at-a-glance health of one device."""
    expected, missing = chips_missing(device, health)
    return HealthView(
        chip_temp_max_c=health.chip_temp_max_c,
        board_temp_max_c=health.board_temp_max_c,
        fan_rpm_min=health.fan_rpm_min,
        boards=health.board_count,
        chips_found=health.chips_found,
        chips_expected=expected,
        chips_missing=missing,
        share_reject_ratio=health.reject_ratio,
        uptime_seconds=health.uptime_s,
        firmware=health.firmware,
        errors=len(health.errors),
    )


def health_detail(device: Device, health: Health) -> HealthDetailView:
    """Everything known of one device's health."""
    boards = [
        BoardView(
            slot=slot,
            hashrate_ths=None if b.hashrate_hs is None else round(b.hashrate_hs / TERA, 4),
            chips=b.chips,
            board_temp_c=b.board_temp_c,
            chip_temp_c=b.chip_temp_c,
        )
        for slot, b in enumerate(health.boards, start=1)
    ]
    return HealthDetailView(
        **health_view(device, health).model_dump(),
        board_list=boards,
        fans_rpm=list(health.fans_rpm),
        error_codes=list(health.errors),
    )
