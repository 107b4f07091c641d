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


# ---- reads that other clients make (miner.proto, cooling.proto, pool.proto, ...) -----------


@dataclass(frozen=True, slots=True)
class GigaHashrate(Message):
    """A hash rate in GH/s."""

    gigahash_per_second: float = 0.0
    FIELDS: ClassVar[tuple[Field, ...]] = (Field(1, "gigahash_per_second", Kind.DOUBLE),)


@dataclass(frozen=True, slots=True)
class TeraHashrate(Message):
    """A hash rate in TH/s."""

    terahash_per_second: float = 0.0
    FIELDS: ClassVar[tuple[Field, ...]] = (Field(1, "terahash_per_second", Kind.DOUBLE),)


@dataclass(frozen=True, slots=True)
class Temperature(Message):
    """A temperature in degrees Celsius."""

    degree_c: float = 0.0
    FIELDS: ClassVar[tuple[Field, ...]] = (Field(1, "degree_c", Kind.DOUBLE),)


@dataclass(frozen=True, slots=True)
class Voltage(Message):
    """A voltage in volts."""

    volt: float = 0.0
    FIELDS: ClassVar[tuple[Field, ...]] = (Field(1, "volt", Kind.DOUBLE),)


@dataclass(frozen=True, slots=True)
class Frequency(Message):
    """A frequency in hertz."""

    hertz: float = 0.0
    FIELDS: ClassVar[tuple[Field, ...]] = (Field(1, "hertz", Kind.DOUBLE),)


@dataclass(frozen=True, slots=True)
class UInt32Value(Message):
    """google.protobuf.UInt32Value (Hashboard.chips_count)."""

    value: int = 0
    FIELDS: ClassVar[tuple[Field, ...]] = (Field(1, "value", Kind.VARINT),)


@dataclass(frozen=True, slots=True)
class RealHashrate(Message):
    """Measured hash rate over a few windows (5 s, 1 min, 15 min, since restart)."""

    last_5s: GigaHashrate | None = None
    last_1m: GigaHashrate | None = None
    last_15m: GigaHashrate | None = None
    since_restart: GigaHashrate | None = None
    FIELDS: ClassVar[tuple[Field, ...]] = (
        Field(1, "last_5s", Kind.MESSAGE, GigaHashrate),
        Field(4, "last_1m", Kind.MESSAGE, GigaHashrate),
        Field(6, "last_15m", Kind.MESSAGE, GigaHashrate),
        Field(10, "since_restart", Kind.MESSAGE, GigaHashrate),
    )


@dataclass(frozen=True, slots=True)
class WorkSolverStats(Message):
    """Hash rates of a work solver (the whole miner or one hashboard)."""

    real_hashrate: RealHashrate | None = None
    nominal_hashrate: GigaHashrate | None = None
    error_hashrate: GigaHashrate | None = None
    found_blocks: int = 0
    best_share: int = 0
    FIELDS: ClassVar[tuple[Field, ...]] = (
        Field(1, "real_hashrate", Kind.MESSAGE, RealHashrate),
        Field(2, "nominal_hashrate", Kind.MESSAGE, GigaHashrate),
        Field(3, "error_hashrate", Kind.MESSAGE, GigaHashrate),
        Field(4, "found_blocks", Kind.VARINT),
        Field(5, "best_share", Kind.VARINT),
    )


@dataclass(frozen=True, slots=True)
class PoolStats(Message):
    """Share counters of a pool or of the miner."""

    accepted_shares: int = 0
    rejected_shares: int = 0
    stale_shares: int = 0
    last_difficulty: int = 0
    FIELDS: ClassVar[tuple[Field, ...]] = (
        Field(1, "accepted_shares", Kind.VARINT),
        Field(2, "rejected_shares", Kind.VARINT),
        Field(3, "stale_shares", Kind.VARINT),
        Field(4, "last_difficulty", Kind.VARINT),
    )


@dataclass(frozen=True, slots=True)
class MinerPowerStats(Message):
    """Approximated consumption of the miner."""

    approximated_consumption: Power | None = None
    FIELDS: ClassVar[tuple[Field, ...]] = (
        Field(1, "approximated_consumption", Kind.MESSAGE, Power),
    )


@dataclass(frozen=True, slots=True)
class GetMinerStatsResponse(Message):
    """MinerService.GetMinerStats reply."""

    pool_stats: PoolStats | None = None
    miner_stats: WorkSolverStats | None = None
    power_stats: MinerPowerStats | None = None
    FIELDS: ClassVar[tuple[Field, ...]] = (
        Field(1, "pool_stats", Kind.MESSAGE, PoolStats),
        Field(2, "miner_stats", Kind.MESSAGE, WorkSolverStats),
        Field(3, "power_stats", Kind.MESSAGE, MinerPowerStats),
    )


@dataclass(frozen=True, slots=True)
class TemperatureSensor(Message):
    """A temperature sensor reading (location: 1 chip, 2 PCB, ...)."""

    id: int = 0
    location: int = 0
    temperature: Temperature | None = None
    FIELDS: ClassVar[tuple[Field, ...]] = (
        Field(1, "id", Kind.VARINT),
        Field(2, "location", Kind.VARINT),
        Field(3, "temperature", Kind.MESSAGE, Temperature),
    )


@dataclass(frozen=True, slots=True)
class Hashboard(Message):
    """One hashboard of GetHashboardsResponse."""

    id: str = ""
    enabled: bool = False
    chips_count: UInt32Value | None = None
    current_voltage: Voltage | None = None
    current_frequency: Frequency | None = None
    highest_chip_temp: TemperatureSensor | None = None
    board_temp: Temperature | None = None
    stats: WorkSolverStats | None = None
    model: str = ""
    serial_number: str = ""
    FIELDS: ClassVar[tuple[Field, ...]] = (
        Field(1, "id", Kind.STRING),
        Field(2, "enabled", Kind.VARINT),
        Field(3, "chips_count", Kind.MESSAGE, UInt32Value),
        Field(4, "current_voltage", Kind.MESSAGE, Voltage),
        Field(5, "current_frequency", Kind.MESSAGE, Frequency),
        Field(6, "highest_chip_temp", Kind.MESSAGE, TemperatureSensor),
        Field(7, "board_temp", Kind.MESSAGE, Temperature),
        Field(8, "stats", Kind.MESSAGE, WorkSolverStats),
        Field(9, "model", Kind.STRING),
        Field(12, "serial_number", Kind.STRING),
    )


@dataclass(frozen=True, slots=True)
class GetHashboardsResponse(Message):
    """MinerService.GetHashboards reply."""

    hashboards: tuple[Hashboard, ...] = ()
    FIELDS: ClassVar[tuple[Field, ...]] = (
        Field(1, "hashboards", Kind.MESSAGE, Hashboard, repeated=True),
    )


@dataclass(frozen=True, slots=True)
class FanState(Message):
    """One fan of GetCoolingStateResponse."""

    position: int = 0
    rpm: int = 0
    target_speed_ratio: float = 0.0
    FIELDS: ClassVar[tuple[Field, ...]] = (
        Field(1, "position", Kind.VARINT),
        Field(2, "rpm", Kind.VARINT),
        Field(3, "target_speed_ratio", Kind.DOUBLE),
    )


@dataclass(frozen=True, slots=True)
class GetCoolingStateResponse(Message):
    """CoolingService.GetCoolingState reply."""

    fans: tuple[FanState, ...] = ()
    highest_temperature: TemperatureSensor | None = None
    FIELDS: ClassVar[tuple[Field, ...]] = (
        Field(1, "fans", Kind.MESSAGE, FanState, repeated=True),
        Field(2, "highest_temperature", Kind.MESSAGE, TemperatureSensor),
    )


@dataclass(frozen=True, slots=True)
class Quota(Message):
    """Pool group quota."""

    value: int = 0
    FIELDS: ClassVar[tuple[Field, ...]] = (Field(1, "value", Kind.VARINT),)


@dataclass(frozen=True, slots=True)
class BosPool(Message):
    """One pool of a pool group (PoolService)."""

    uid: str = ""
    url: str = ""
    user: str = ""
    enabled: bool = False
    alive: bool = False
    active: bool = False
    stats: PoolStats | None = None
    FIELDS: ClassVar[tuple[Field, ...]] = (
        Field(1, "uid", Kind.STRING),
        Field(2, "url", Kind.STRING),
        Field(3, "user", Kind.STRING),
        Field(4, "enabled", Kind.VARINT),
        Field(5, "alive", Kind.VARINT),
        Field(6, "active", Kind.VARINT),
        Field(7, "stats", Kind.MESSAGE, PoolStats),
    )


@dataclass(frozen=True, slots=True)
class PoolGroup(Message):
    """A pool group: name, quota, pools."""

    name: str = ""
    quota: Quota | None = None
    pools: tuple[BosPool, ...] = ()
    FIELDS: ClassVar[tuple[Field, ...]] = (
        Field(1, "name", Kind.STRING),
        Field(2, "quota", Kind.MESSAGE, Quota),
        Field(4, "pools", Kind.MESSAGE, BosPool, repeated=True),
    )


@dataclass(frozen=True, slots=True)
class GetPoolGroupsResponse(Message):
    """PoolService.GetPoolGroups reply."""

    pool_groups: tuple[PoolGroup, ...] = ()
    FIELDS: ClassVar[tuple[Field, ...]] = (
        Field(1, "pool_groups", Kind.MESSAGE, PoolGroup, repeated=True),
    )


@dataclass(frozen=True, slots=True)
class LocateDeviceStatus(Message):
    """ActionsService Get/SetLocateDeviceStatus reply (the LED blinks while enabled)."""

    enabled: bool = False
    FIELDS: ClassVar[tuple[Field, ...]] = (Field(1, "enabled", Kind.VARINT),)


@dataclass(frozen=True, slots=True)
class SetLocateDeviceStatusRequest(Message):
    """ActionsService.SetLocateDeviceStatus request."""

    enable: bool = False
    FIELDS: ClassVar[tuple[Field, ...]] = (Field(1, "enable", Kind.VARINT),)


@dataclass(frozen=True, slots=True)
class PowerTargetMode(Message):
    """Tuner mode: a power target."""

    power_target: Power | None = None
    FIELDS: ClassVar[tuple[Field, ...]] = (Field(1, "power_target", Kind.MESSAGE, Power),)


@dataclass(frozen=True, slots=True)
class TunerPerformanceMode(Message):
    """Tuner performance mode (power-target member only)."""

    power_target: PowerTargetMode | None = None
    FIELDS: ClassVar[tuple[Field, ...]] = (Field(1, "power_target", Kind.MESSAGE, PowerTargetMode),)


@dataclass(frozen=True, slots=True)
class PerformanceMode(Message):
    """PerformanceService.GetActivePerformanceMode reply (tuner mode)."""

    tuner_mode: TunerPerformanceMode | None = None
    FIELDS: ClassVar[tuple[Field, ...]] = (
        Field(2, "tuner_mode", Kind.MESSAGE, TunerPerformanceMode),
    )


@dataclass(frozen=True, slots=True)
class PoolConfiguration(Message):
    """One pool of the configuration."""

    uid: str = ""
    url: str = ""
    user: str = ""
    enabled: bool = False
    FIELDS: ClassVar[tuple[Field, ...]] = (
        Field(1, "uid", Kind.STRING),
        Field(2, "url", Kind.STRING),
        Field(3, "user", Kind.STRING),
        Field(5, "enabled", Kind.VARINT),
    )


@dataclass(frozen=True, slots=True)
class PoolGroupConfiguration(Message):
    """One pool group of the configuration."""

    uid: str = ""
    name: str = ""
    quota: Quota | None = None
    pools: tuple[PoolConfiguration, ...] = ()
    FIELDS: ClassVar[tuple[Field, ...]] = (
        Field(1, "uid", Kind.STRING),
        Field(2, "name", Kind.STRING),
        Field(3, "quota", Kind.MESSAGE, Quota),
        Field(5, "pools", Kind.MESSAGE, PoolConfiguration, repeated=True),
    )


@dataclass(frozen=True, slots=True)
class TunerConfiguration(Message):
    """Tuner configuration: enabled, mode (1 power target), power target."""

    enabled: bool = False
    tuner_mode: int = 0
    power_target: Power | None = None
    FIELDS: ClassVar[tuple[Field, ...]] = (
        Field(1, "enabled", Kind.VARINT),
        Field(2, "tuner_mode", Kind.VARINT),
        Field(3, "power_target", Kind.MESSAGE, Power),
    )


@dataclass(frozen=True, slots=True)
class GetMinerConfigurationResponse(Message):
    """ConfigurationService.GetMinerConfiguration reply (pool groups and tuner)."""

    pool_groups: tuple[PoolGroupConfiguration, ...] = ()
    tuner: TunerConfiguration | None = None
    FIELDS: ClassVar[tuple[Field, ...]] = (
        Field(1, "pool_groups", Kind.MESSAGE, PoolGroupConfiguration, repeated=True),
        Field(3, "tuner", Kind.MESSAGE, TunerConfiguration),
    )


@dataclass(frozen=True, slots=True)
class BosVersion(Message):
    """Firmware version (``current`` like ``2025-05-06-0-...-25.05-plus``)."""

    current: str = ""
    major: str = ""
    bos_plus: bool = False
    FIELDS: ClassVar[tuple[Field, ...]] = (
        Field(1, "current", Kind.STRING),
        Field(2, "major", Kind.STRING),
        Field(3, "bos_plus", Kind.VARINT),
    )


@dataclass(frozen=True, slots=True)
class MinerIdentity(Message):
    """Brand and model as the firmware names them."""

    miner_model: str = ""
    FIELDS: ClassVar[tuple[Field, ...]] = (Field(4, "miner_model", Kind.STRING),)


@dataclass(frozen=True, slots=True)
class MinerDetails(Message):
    """MinerService.GetMinerDetails reply with identity, version, MAC and sticker hash rate."""

    uid: str = ""
    miner_identity: MinerIdentity | None = None
    bos_version: BosVersion | None = None
    hostname: str = ""
    mac_address: str = ""
    sticker_hashrate: GigaHashrate | None = None
    bosminer_uptime_s: int = 0
    system_uptime_s: int = 0
    status: int = MinerStatus.UNSPECIFIED
    serial_number: str = ""
    FIELDS: ClassVar[tuple[Field, ...]] = (
        Field(1, "uid", Kind.STRING),
        Field(2, "miner_identity", Kind.MESSAGE, MinerIdentity),
        Field(5, "bos_version", Kind.MESSAGE, BosVersion),
        Field(6, "hostname", Kind.STRING),
        Field(7, "mac_address", Kind.STRING),
        Field(9, "sticker_hashrate", Kind.MESSAGE, GigaHashrate),
        Field(10, "bosminer_uptime_s", Kind.VARINT),
        Field(11, "system_uptime_s", Kind.VARINT),
        Field(12, "status", Kind.VARINT),
        Field(16, "serial_number", Kind.STRING),
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
GET_MINER_STATS = Method("MinerService", "GetMinerStats", Empty, GetMinerStatsResponse)
GET_HASHBOARDS = Method("MinerService", "GetHashboards", Empty, GetHashboardsResponse)
GET_COOLING_STATE = Method("CoolingService", "GetCoolingState", Empty, GetCoolingStateResponse)
GET_POOL_GROUPS = Method("PoolService", "GetPoolGroups", Empty, GetPoolGroupsResponse)
GET_LOCATE = Method("ActionsService", "GetLocateDeviceStatus", Empty, LocateDeviceStatus)
SET_LOCATE = Method(
    "ActionsService", "SetLocateDeviceStatus", SetLocateDeviceStatusRequest, LocateDeviceStatus
)
REBOOT = Method("ActionsService", "Reboot", Empty, Empty)
"""actions.proto ``Reboot(RebootRequest) returns (RebootResponse)``: both messages are empty."""
GET_PERFORMANCE_MODE = Method(
    "PerformanceService", "GetActivePerformanceMode", Empty, PerformanceMode
)
GET_MINER_CONFIGURATION = Method(
    "ConfigurationService", "GetMinerConfiguration", Empty, GetMinerConfigurationResponse
)
GET_MINER_DETAILS_FULL = Method("MinerService", "GetMinerDetails", Empty, MinerDetails)
"""GetMinerDetails with every field the simulator serves (the driver decodes the short form)."""
READ_METHODS = (
    GET_MINER_STATS,
    GET_HASHBOARDS,
    GET_COOLING_STATE,
    GET_POOL_GROUPS,
    GET_LOCATE,
    SET_LOCATE,
    GET_PERFORMANCE_MODE,
    GET_MINER_CONFIGURATION,
)
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
