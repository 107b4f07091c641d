"""``[meter]``, ``[setpoint]`` and ``[webhook]``: the site meter, closed-loop power control, signed signals."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from drivers.meter.maps import MapError, load_map
from drivers.secrets import MaskedUrl


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MeterConfig(_Strict):
    """The site meter: when configured, the truth for site power, the cap and setpoint control."""

    source: Literal["modbus", "http", "mqtt"] = Field(
        description="modbus (TCP), http (JSON GET) or mqtt (pushed on <prefix>/grid/meter)"
    )
    host: str | None = Field(None, description="modbus: the meter's (or gateway's) address")
    port: int = Field(502, ge=1, le=65535, description="modbus: TCP port")
    unit_id: int = Field(1, ge=0, le=255, description="modbus: unit (slave) id")
    map: str = Field(
        "sunspec-203",
        description="register map: sunspec-203, sunspec-201, eastron-sdm630, "
        "carlo-gavazzi-em340, or a .json file",
    )
    url: MaskedUrl | None = Field(
        None, pattern=r"^https?://", description='http: URL answering {"power_w": W}'
    )
    poll_seconds: float = Field(1.0, ge=0.1, le=300, description="time between readings")
    timeout_seconds: float = Field(1.0, gt=0, le=30, description="deadline of one reading")
    stale_seconds: float = Field(
        10.0, gt=0, le=3600, description="a reading older than this is not used"
    )

    @model_validator(mode="after")
    def _check(self) -> MeterConfig:
        if self.source == "modbus":
            if not self.host:
                raise ValueError("meter.host is required for source = modbus")
            try:
                load_map(self.map)
            except MapError as exc:
                raise ValueError(f"meter.map: {exc}") from None
        if self.source == "http" and not self.url:
            raise ValueError("meter.url is required for source = http")
        return self


class AwardConfig(_Strict):
    """An ancillary-service award: hold ``mw`` of curtailable load running from start to end."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    product: str = Field(
        pattern=r"^[A-Za-z0-9_-]{1,32}$", description="ECRS, NSRS, RRS, ... (for the record)"
    )
    mw: float = Field(gt=0, le=10_000)
    start: AwareDatetime
    end: AwareDatetime
    response_seconds: float = Field(
        600.0, gt=0, le=3600, description="the product's time to shed on deployment"
    )


class SetpointConfig(_Strict):
    """Following a site power target (operator, DR program, base points) against the meter."""

    deadband_pct: float = Field(
        1.0, ge=0, le=50, description="no correction while within this % of the target"
    )
    deadband_kw: float = Field(1.0, ge=0, description="and never a band narrower than this")
    tolerance_pct: float = Field(
        2.0, gt=0, le=50, description="metered within this % of the target counts as met"
    )
    confirm_seconds: float = Field(
        10.0, ge=0, description="met this long: the target is confirmed by the meter"
    )
    drift_seconds: float = Field(
        30.0, ge=0, description="a confirmed target missed this long: drifted"
    )
    min_power_level: float = Field(
        0.5, gt=0, le=1, description="lowest power target sent before sleeping a machine"
    )
    power_level_step: float = Field(0.01, gt=0, le=0.5, description="power targets are multiples")
    power_target_drivers: list[str] = Field(
        default_factory=lambda: ["luxos", "braiins", "whatsminer", "vnish"],
        description="firmwares that take power targets (partial curtailment before sleep)",
    )
    ramp_down_kw_per_minute: float | None = Field(
        None, gt=0, description="how fast the target may fall (ramp-and-hold); none: a step"
    )
    ramp_up_kw_per_minute: float | None = Field(
        None, gt=0, description="how fast the target may rise; none: a step"
    )
    restore_batch: int = Field(
        0, ge=0, le=100_000, description="most machines woken per restore step (0: no limit)"
    )
    restore_stagger_seconds: float = Field(
        0.0, ge=0, le=3600, description="time between restore steps"
    )
    bias_smoothing: float = Field(
        0.5, gt=0, le=1, description="weight of a new meter-minus-planned reading (EMA)"
    )
    signal_stale_seconds: float = Field(
        900.0, gt=0, description="a base-point stream silent this long is stale"
    )
    stale_action: Literal["hold", "release", "safe"] = Field(
        "safe", description="on a stale stream: keep the last point, drop it, or go to safe_kw"
    )
    safe_kw: float = Field(0.0, ge=0, description="the site power for stale_action = safe")
    max_kw: float = Field(1e7, gt=0, description="targets above this are refused")
    mv_baseline: Literal["pre_event", "days_of_history"] = Field(
        "pre_event", description="M&V baseline: metered mean before the event, or past days"
    )
    mv_baseline_minutes: float = Field(30.0, gt=0, le=1440, description="pre_event window")
    mv_baseline_days: int = Field(10, ge=1, le=60, description="days_of_history: days averaged")
    mv_interval_seconds: float = Field(300.0, ge=10, le=3600, description="M&V interval")
    awards: list[AwardConfig] = Field(
        default_factory=list, max_length=100, description="ancillary-service awards"
    )


class WebhookConfig(_Strict):
    """Signed dispatch signals from an aggregator (POST /v1/signals/webhook)."""

    secret: SecretStr = Field(description="HMAC-SHA256 key shared with the sender (32+ chars)")
    replay_window_seconds: float = Field(
        300.0, gt=0, le=3600, description="a timestamp further than this from now is refused"
    )
    remembered_signals: int = Field(
        10_000, ge=10, le=1_000_000, description="signal ids kept for idempotency"
    )

    @field_validator("secret")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < 32:
            raise ValueError("webhook.secret: at least 32 characters")
        return value
