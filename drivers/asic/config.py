"""Configuration of a device driven over the cgminer-family API."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class CgminerOptions(BaseModel):
    """Connection settings for the cgminer API (TCP, one JSON command per connection)."""

    model_config = ConfigDict(extra="forbid")

    driver: Literal["cgminer"] = "cgminer"
    port: int = Field(4028, ge=1, le=65535, description="API port on the miner")
    timeout_seconds: float = Field(3.0, gt=0, le=60, description="per-command deadline")
    confirm_timeout_seconds: float = Field(
        30.0, gt=0, le=600, description="how long to read back before calling a command unconfirmed"
    )
    confirm_interval_seconds: float = Field(1.0, gt=0, le=60, description="read-back interval")
    session_reuse_seconds: float = Field(
        0.0,
        ge=0,
        le=3600,
        description=(
            "keep a LuxOS session this long for the next command instead of logging off "
            "(0: log off after each command); keep it below the firmware's idle timeout"
        ),
    )
