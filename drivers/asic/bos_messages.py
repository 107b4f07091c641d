"""Braiins OS public API (braiins.bos.v1) messages and method paths wattmux uses, as tables.

The Python side of drivers/asic/proto/braiins_bos_v1_subset.proto: same
message names, field names and numbers.  Facts from the published
bos-plus-api protobufs: the token comes back from
``AuthenticationService/Login`` in the ``authorization`` response header and,
since API 1.1.0, also in ``LoginResponse.token`` with its validity
``timeout_s`` (refreshed by each request); every other call sends it as the
``authorization`` request header.  A missing or stale token and a wrong
password are both refused with UNAUTHENTICATED; a power target outside the
model's range with INVALID_ARGUMENT.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, ClassVar

from grpclib.encoding.base import CodecBase

from drivers.asic.protowire import Field, Kind, Message, decode, encode

PACKAGE = "braiins.bos.v1"
DEFAULT_PORT = 50051


class SaveAction(enum.IntEnum):
    """How a configuration change is kept (common.proto)."""

    UNSPECIFIED = 0
    SAVE = 1
    SAVE_AND_APPLY = 2
    SAVE_AND_FORCE_APPLY = 3


class MinerStatus(enum.IntEnum):
    """Miner status in GetMinerDetailsResponse.status (miner.proto)."""

    UNSPECIFIED = 0
    NOT_STARTED = 1
    NORMAL = 2
    PAUSED = 3
    SUSPENDED = 4
    RESTRICTED = 5


class TunerState(enum.IntEnum):
    """Overall tuner state (performance.proto)."""

    UNSPECIFIED = 0
    DISABLED = 1
    STABLE = 2
    TUNING = 3
    ERROR = 4


@dataclass(frozen=True, slots=True)
class Power(Message):
    """A power in watts."""

    watt: int = 0
    FIELDS: ClassVar[tuple[Field, ...]] = (Field(1, "watt", Kind.VARINT),)


@dataclass(frozen=True, slots=True)
class Empty(Message):
    """Any request or reply without fields wattmux uses (PauseMiningRequest, ...)."""


@dataclass(frozen=True, slots=True)
class LoginRequest(Message):
    """AuthenticationService.Login request."""

    username: str = ""
    password: str = ""
    FIELDS: ClassVar[tuple[Field, ...]] = (
        Field(1, "username", Kind.STRING),
        Field(2, "password", Kind.STRING),
    )


@dataclass(frozen=True, slots=True)
class LoginResponse(Message):
    """AuthenticationService.Login reply (empty before API 1.1.0: the header has the token)."""

    token: str = ""
    timeout_s: int = 0
    FIELDS: ClassVar[tuple[Field, ...]] = (
        Field(1, "token", Kind.STRING),
        Field(2, "timeout_s", Kind.VARINT),
    )


@dataclass(frozen=True, slots=True)
class PauseMiningResponse(Message):
    """ActionsService.PauseMining reply."""

    already_paused: bool = False
    FIELDS: ClassVar[tuple[Field, ...]] = (Field(1, "already_paused", Kind.VARINT),)


@dataclass(frozen=True, slots=True)
class ResumeMiningResponse(Message):
    """ActionsService.ResumeMining reply."""

    already_mining: bool = False
    FIELDS: ClassVar[tuple[Field, ...]] = (Field(1, "already_mining", Kind.VARINT),)


@dataclass(frozen=True, slots=True)
class SetPowerTargetRequest(Message):
    """PerformanceService.SetPowerTarget request."""

    save_action: int = SaveAction.UNSPECIFIED
    power_target: Power | None = None
    FIELDS: ClassVar[tuple[Field, ...]] = (
        Field(1, "save_action", Kind.VARINT),
        Field(2, "power_target", Kind.MESSAGE, Power),
    )


@dataclass(frozen=True, slots=True)
class SetPowerTargetResponse(Message):
    """PerformanceService.SetPowerTarget reply: the new target."""

    power_target: Power | None = None
    FIELDS: ClassVar[tuple[Field, ...]] = (Field(1, "power_target", Kind.MESSAGE, Power),)


@dataclass(frozen=True, slots=True)
class PowerTargetModeState(Message):
    """The tuner's power-target mode state: the target in force."""

    current_target: Power | None = None
    FIELDS: ClassVar[tuple[Field, ...]] = (Field(2, "current_target", Kind.MESSAGE, Power),)


@dataclass(frozen=True, slots=True)
class GetTunerStateResponse(Message):
    """PerformanceService.GetTunerState reply (power-target mode only)."""

    overall_tuner_state: int = TunerState.UNSPECIFIED
    power_target_mode_state: PowerTargetModeState | None = None
    FIELDS: ClassVar[tuple[Field, ...]] = (
        Field(1, "overall_tuner_state", Kind.VARINT),
        Field(2, "power_target_mode_state", Kind.MESSAGE, PowerTargetModeState),
    )


@dataclass(frozen=True, slots=True)
class GetMinerDetailsResponse(Message):
    """MinerService.GetMinerDetails reply (the fields wattmux reads)."""

    uid: str = ""
    hostname: str = ""
    bosminer_uptime_s: int = 0
    status: int = MinerStatus.UNSPECIFIED
    FIELDS: ClassVar[tuple[Field, ...]] = (
        Field(1, "uid", Kind.STRING),
        Field(6, "hostname", Kind.STRING),
        Field(10, "bosminer_uptime_s", Kind.VARINT),
        Field(12, "status", Kind.VARINT),
    )


@dataclass(frozen=True, slots=True)
class PowerConstraints(Message):
    """Default, minimum and maximum power target of the model."""

    default: Power | None = None
    min: Power | None = None
    max: Power | None = None
    FIELDS: ClassVar[tuple[Field, ...]] = (
        Field(1, "default", Kind.MESSAGE, Power),
        Field(2, "min", Kind.MESSAGE, Power),
        Field(3, "max", Kind.MESSAGE, Power),
    )


@dataclass(frozen=True, slots=True)
class TunerConstraints(Message):
    """Tuner constraints (power target only)."""

    power_target: PowerConstraints | None = None
    FIELDS: ClassVar[tuple[Field, ...]] = (
        Field(1, "power_target", Kind.MESSAGE, PowerConstraints),
    )


@dataclass(frozen=True, slots=True)
class GetConstraintsResponse(Message):
    """ConfigurationService.GetConstraints reply (tuner constraints only)."""

    tuner_constraints: TunerConstraints | None = None
    FIELDS: ClassVar[tuple[Field, ...]] = (
        Field(1, "tuner_constraints", Kind.MESSAGE, TunerConstraints),
    )


@dataclass(frozen=True, slots=True)
class Method:
    """One unary RPC: its HTTP/2 path and its request and reply types."""

    service: str
    name: str
    request: type[Message]
    reply: type[Message]

    @property
    def path(self) -> str:
        """``/braiins.bos.v1.<Service>/<Method>``."""
        return f"/{PACKAGE}.{self.service}/{self.name}"


LOGIN = Method("AuthenticationService", "Login", LoginRequest, LoginResponse)
PAUSE = Method("ActionsService", "PauseMining", Empty, PauseMiningResponse)
RESUME = Method("ActionsService", "ResumeMining", Empty, ResumeMiningResponse)
SET_POWER_TARGET = Method(
    "PerformanceService", "SetPowerTarget", SetPowerTargetRequest, SetPowerTargetResponse
)
GET_TUNER_STATE = Method("PerformanceService", "GetTunerState", Empty, GetTunerStateResponse)
GET_MINER_DETAILS = Method("MinerService", "GetMinerDetails", Empty, GetMinerDetailsResponse)
GET_CONSTRAINTS = Method("ConfigurationService", "GetConstraints", Empty, GetConstraintsResponse)
METHODS = (
    LOGIN,
    PAUSE,
    RESUME,
    SET_POWER_TARGET,
    GET_TUNER_STATE,
    GET_MINER_DETAILS,
    GET_CONSTRAINTS,
)


class BosCodec(CodecBase):
    """grpclib codec for the table-described messages (content type application/grpc+proto)."""

    __content_subtype__ = "proto"

    def encode(self, message: Any, message_type: Any) -> bytes:
        """Wire bytes of one message."""
        if not isinstance(message, message_type):
            raise TypeError(f"{type(message).__name__} is not {message_type.__name__}")
        return encode(message)

    def decode(self, data: bytes, message_type: Any) -> Any:
        """One message from its wire bytes (WireError when broken)."""
        return decode(message_type, data)
