"""Options models of the built-in ASIC firmwares (each firmware's entry names its model).

Which model validates a device's ``options`` is chosen by its ``driver`` tag
through the ASIC registry (``drivers.asic.registry.ASIC_DRIVERS``).
"""

from __future__ import annotations

from importlib.util import find_spec
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator


class CgminerFamilyOptions(BaseModel):
    """Settings shared by every driver on the cgminer API (TCP, one JSON command per connection)."""

    model_config = ConfigDict(extra="forbid")

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


class CgminerOptions(CgminerFamilyOptions):
    """A cgminer-API miner (bmminer, LuxOS without power targets, Whatsminer's cgminer port)."""

    driver: Literal["cgminer"] = "cgminer"


class LuxosOptions(CgminerFamilyOptions):
    """A LuxOS miner: cgminer API plus sessions, curtail and power profiles."""

    driver: Literal["luxos"] = "luxos"
    power_tolerance: float = Field(
        0.08,
        gt=0,
        lt=0.5,
        description="measured power within this share of the target confirms a power level",
    )


class AntminerOptions(CgminerFamilyOptions):
    """Stock Antminer firmware: cgminer API for telemetry, web CGI (digest auth) for sleep."""

    driver: Literal["antminer"] = "antminer"
    web_port: int = Field(80, ge=1, le=65535, description="port of the miner's web interface")
    web_username: str = Field("root", min_length=1, description="web interface user")
    web_password: SecretStr = Field(SecretStr("root"), description="web interface password")
    confirm_timeout_seconds: float = Field(
        60.0, gt=0, le=600, description="a work-mode change takes about 20 s to land"
    )


class BraiinsOptions(CgminerFamilyOptions):
    """Braiins OS: telemetry over its cgminer-compatible API, control over its gRPC API."""

    driver: Literal["braiins"] = "braiins"
    grpc_port: int = Field(50051, ge=1, le=65535, description="port of the public gRPC API")
    username: str = Field("root", min_length=1, description="gRPC API user")
    password: SecretStr = Field(
        SecretStr("root"), description="gRPC API password (the miner's web password)"
    )
    confirm_timeout_seconds: float = Field(
        60.0, gt=0, le=600, description="pause and resume ramp the hashboards before they show"
    )


class AsicRsOptions(BaseModel):
    """A miner driven through the optional pyasic-rs library (vendor default ports)."""

    model_config = ConfigDict(extra="forbid")

    driver: Literal["asic-rs"] = "asic-rs"
    username: str | None = Field(None, min_length=1, description="login, when not the default")
    password: SecretStr | None = Field(None, description="password, when not the default")
    timeout_seconds: float = Field(5.0, gt=0, le=60, description="per-call deadline")
    confirm_timeout_seconds: float = Field(
        60.0, gt=0, le=600, description="how long to read back before calling a command unconfirmed"
    )
    confirm_interval_seconds: float = Field(1.0, gt=0, le=60, description="read-back interval")

    @property
    def port(self) -> int:
        """The cgminer API port the library probes (not configurable there)."""
        return 4028

    @model_validator(mode="after")
    def _library_installed(self) -> AsicRsOptions:
        if find_spec("pyasic_rs") is None:
            raise ValueError(
                "driver asic-rs needs the optional extra: pip install 'wattmux[asic-rs]'"
            )
        return self


class WhatsminerOptions(CgminerFamilyOptions):
    """MicroBT Whatsminer: API v2 (port 4028, encrypted writes) or API v3 (port 4433, framed)."""

    driver: Literal["whatsminer"] = "whatsminer"
    api_version: Literal[2, 3] = Field(
        2, description="2: cgminer-style API on 4028; 3: length-prefixed JSON on 4433"
    )
    password: SecretStr = Field(
        SecretStr("admin"),
        min_length=1,
        description="admin password (v2) or the v3 account's password; writes need a non-default one",
    )
    account: str = Field("super", min_length=1, description="API v3 account for write commands")
    token_reuse_seconds: float = Field(
        1500.0, ge=0, le=1800, description="reuse a v2 token this long (the miner keeps it 30 min)"
    )
    power_tolerance: float = Field(
        0.08,
        gt=0,
        lt=0.5,
        description="measured power within this share of the target confirms a power level",
    )
    confirm_timeout_seconds: float = Field(
        120.0, gt=0, le=600, description="power_on takes a minute or more to show hash rate"
    )
    confirm_interval_seconds: float = Field(2.0, gt=0, le=60, description="read-back interval")

    @model_validator(mode="before")
    @classmethod
    def _v3_port(cls, value: Any) -> Any:
        """API v3 listens on 4433: the default port follows api_version."""
        if isinstance(value, dict) and value.get("api_version") == 3 and "port" not in value:
            return {**value, "port": 4433}
        return value
