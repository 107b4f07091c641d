"""wattmux configuration: a TOML file plus WATTMUX_* environment overrides, validated by pydantic.

Every error names the file, the field path and what was expected.  Environment
variables override file values: ``WATTMUX_<SECTION>__<KEY>`` (double underscore
between levels), for example ``WATTMUX_GUARD__MIN_DWELL_SECONDS=60`` or
``WATTMUX_API__LISTEN=0.0.0.0:9470``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from drivers.asic.config import AsicOptions, CgminerOptions
from drivers.gpu.config import GpuTelemetryOptions
from drivers.market.btc_price import BtcPriceConfig
from drivers.market.ercot import ErcotConfig
from drivers.market.network import BitcoindConfig, MempoolNetworkConfig
from drivers.market.tariff import TariffConfig
from drivers.queues.kubernetes import KubernetesOptions
from drivers.queues.slurm import SlurmOptions
from drivers.queues.webhook import WebhookOptions
from drivers.telemetry.mqtt import MqttOptions
from scheduler.core.hardware import MODELS
from scheduler.core.model import TERA, Device, DeviceKind, Lease, Pool

ENV_PREFIX = "WATTMUX_"
QUEUE_DRIVERS = ("slurm", "webhook", "kubernetes")

LIVE_MARKET_DRIVERS = ("btc-price", "mempool-network", "bitcoind", "ercot-rtm", "tariff")


class _Strict(BaseModel):
    """Base for config sections: unknown keys are errors (a typo never passes silently)."""

    model_config = ConfigDict(extra="forbid")


class SiteConfig(_Strict):
    """The site as a whole."""

    name: str = Field("site", pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="site name")
    timezone: str = Field("UTC", description="IANA zone for schedules, e.g. America/Chicago")
    power_cap_kw: float = Field(gt=0, description="site power cap in kW; never exceeded")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown IANA time zone {value!r}") from exc
        return value


class ControlConfig(_Strict):
    """How often the loop runs and how hard it pushes the devices."""

    tick_seconds: float = Field(5.0, gt=0, le=3600, description="control loop period")
    poll_concurrency: int = Field(64, ge=1, le=4096, description="parallel device polls")
    command_concurrency: int = Field(
        32, ge=1, le=4096, description="parallel device commands and read-backs (commands first)"
    )
    pool_recovery_seconds: float = Field(
        300.0,
        ge=0,
        le=86400,
        description="a pool that was down counts up again after miners see it alive this long",
    )


class EconomicsConfig(_Strict):
    """Revenue assumptions."""

    pool_fee: float = Field(0.02, ge=0, lt=1, description="pool fee as a fraction (0.02 = 2%)")


class ScheduleWindowConfig(_Strict):
    """A recurring local-time window: sleep through it, or add a tariff charge to the power price."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="window name")
    start: str = Field(description="local start HH:MM")
    end: str = Field(description="local end HH:MM (before start: the window runs past midnight)")
    weekdays: list[int] = Field(
        default_factory=lambda: list(range(7)), description="0 = Monday ... 6 = Sunday"
    )
    months: list[int] = Field(default_factory=lambda: list(range(1, 13)), description="1..12")
    action: Literal["sleep", "adder"] = Field("sleep", description="sleep, or add a charge")
    adder_usd_per_mwh: float = Field(
        0.0, ge=-1000, le=10_000, description="added to the power price in the window (adder)"
    )

    @field_validator("start", "end")
    @classmethod
    def _clock_time(cls, value: str) -> str:
        try:
            datetime.strptime(value, "%H:%M")
        except ValueError:
            raise ValueError(f"expected HH:MM, got {value!r}") from None
        return value

    @field_validator("weekdays")
    @classmethod
    def _weekdays(cls, value: list[int]) -> list[int]:
        if not value or any(not 0 <= day <= 6 for day in value):
            raise ValueError(f"weekdays must be 0 (Monday) .. 6 (Sunday), got {value}")
        return value

    @field_validator("months")
    @classmethod
    def _months(cls, value: list[int]) -> list[int]:
        if not value or any(not 1 <= month <= 12 for month in value):
            raise ValueError(f"months must be 1..12, got {value}")
        return value


class PolicyConfig(_Strict):
    """Which policy decides and its knobs."""

    name: str = Field("breakeven", description="registered policy name")
    hysteresis_usd_per_mwh: float = Field(
        5.0, ge=0, description="band around break-even: sleep above +band, wake below -band"
    )
    sleep_band_usd_per_mwh: float = Field(
        0.0, ge=0, description="max-margin: a mining device sleeps above break-even + this"
    )
    wake_band_usd_per_mwh: float = Field(
        0.0, ge=0, description="max-margin: a sleeping device wakes below break-even - this"
    )
    sleep_band_fraction: float = Field(
        0.14, ge=0, le=10, description="max-margin: plus this fraction of break-even"
    )
    wake_band_fraction: float = Field(
        0.06, ge=0, le=10, description="max-margin: plus this fraction of break-even"
    )
    power_levels: list[float] = Field(
        default_factory=lambda: [1.0],
        min_length=1,
        description="max-margin: relative mining power levels a device may be set to",
    )

    pool_fees: dict[str, float] = Field(
        default_factory=dict,
        description="max-margin: fee per pool name (fraction); others pay [economics] pool_fee",
    )
    schedule: list[ScheduleWindowConfig] = Field(
        default_factory=list, description="schedule policy: time-of-use windows"
    )
    ercot_4cp: bool = Field(
        False, description="schedule policy: sleep in ERCOT 4CP windows (Jun-Sep weekdays)"
    )
    schedule_timezone: str | None = Field(
        None, description="zone of the schedule windows; default: [site] timezone"
    )

    @field_validator("pool_fees")
    @classmethod
    def _fees_in_range(cls, value: dict[str, float]) -> dict[str, float]:
        bad = {name: fee for name, fee in value.items() if not 0.0 <= fee < 1.0}
        if bad:
            raise ValueError(f"pool fees must be in [0, 1), got {bad}")
        return value

    @field_validator("schedule_timezone")
    @classmethod
    def _schedule_zone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError) as exc:
                raise ValueError(f"unknown IANA time zone {value!r}") from exc
        return value

    @field_validator("power_levels")
    @classmethod
    def _levels_in_range(cls, value: list[float]) -> list[float]:
        bad = [level for level in value if not 0.0 < level <= 1.5]
        if bad:
            raise ValueError(f"power levels must be in (0, 1.5], got {bad}")
        return sorted(set(value))


class GuardConfig(_Strict):
    """Safety and anti-flap rules applied to every plan."""

    min_dwell_seconds: float = Field(300.0, ge=0, description="minimum time between switches")
    min_margin_gain_usd_per_hour: float = Field(
        0.0, ge=0, description="ignore switches that gain less than this (per device)"
    )
    stale_price_seconds: float = Field(
        1800.0, gt=0, description="power price older than this is stale"
    )
    stale_action: Literal["sleep", "hold"] = Field(
        "sleep", description="what to do when the power price is stale or missing"
    )
    ramp_kw_per_minute: float | None = Field(
        None,
        gt=0,
        description="most kW switched in any 60 s (safety and DR exempt); none: no limit",
    )
    max_input_age_seconds: dict[
        Literal["btc_price_usd", "difficulty", "block_subsidy_btc", "fees_btc_per_block"], float
    ] = Field(
        default_factory=dict,
        description="other market inputs that, older than this or missing, trigger stale_action",
    )


class StoreConfig(_Strict):
    """Where desired state, intents and the audit log live."""

    path: Path = Field(Path("/var/lib/wattmux/wattmux.sqlite"), description="SQLite file")


class ApiTokenConfig(_Strict):
    """One API bearer token: a name for the audit log, a role and the token's hash (never the token)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.@-]{1,64}$", description="who holds it (audit log)")
    role: Literal["viewer", "operator", "admin"] = Field(description="what it may do")
    sha256: str = Field(
        pattern=r"^sha256:[0-9a-f]{64}$",
        description="hash printed by `wattmux token new` (sha256:<64 hex>)",
    )


class ApiConfig(_Strict):
    """HTTP API and /metrics listener."""

    listen: str = Field("127.0.0.1:9470", description="HOST:PORT for the API and /metrics")
    tokens: list[ApiTokenConfig] = Field(
        default_factory=list, description="bearer tokens; every route but /healthz needs one"
    )
    tls_cert_file: Path | None = Field(None, description="PEM certificate: serve HTTPS")
    tls_key_file: Path | None = Field(None, description="PEM private key of tls_cert_file")
    max_body_bytes: int = Field(16384, ge=256, le=1048576, description="largest request body")
    mutations_per_minute: float = Field(
        60.0, gt=0, le=60000, description="changes allowed per token and minute (then 429)"
    )
    mutation_burst: int = Field(20, ge=1, le=10000, description="changes allowed at once")

    @model_validator(mode="after")
    def _tls_pair(self) -> ApiConfig:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together")
        names = [token.name for token in self.tokens]
        if len(set(names)) != len(names):
            raise ValueError("tokens: names must be unique")
        return self

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"expected HOST:PORT, got {value!r}")
        return value

    @property
    def host(self) -> str:
        """Host part of listen."""
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        """Port part of listen."""
        return int(self.listen.rpartition(":")[2])


class PoolConfig(_Strict):
    """A mining pool the devices may be sent to."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    url: str = Field(pattern=r"^stratum(\+tcp|\+ssl|2\+tcp)?://.+", description="stratum URL")
    user: str = Field(min_length=1, description="worker name")
    password: str = Field("x", description="worker password (usually ignored by pools)")


class _DeviceCommon(_Strict):
    """Fields shared by single devices and ranges."""

    model: str = Field(description="miner model, e.g. S21; see scheduler/core/hardware.py")
    pools: list[str] = Field(min_length=1, description="pool names, in order of preference")
    nominal_hashrate_ths: float | None = Field(None, gt=0, description="default: model's")
    nominal_power_w: float | None = Field(None, gt=0, description="default: model's")
    sleep_power_w: float | None = Field(None, ge=0, description="default: model's")
    max_temperature_c: float | None = Field(None, gt=0, lt=150, description="default: model's")
    options: AsicOptions = Field(
        default_factory=CgminerOptions,
        description="driver settings (driver = cgminer | luxos | antminer | braiins | whatsminer | asic-rs)",
    )

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        if value not in MODELS:
            raise ValueError(f"unknown model {value!r}; known: {', '.join(sorted(MODELS))}")
        return value

    def devices(self) -> list[Device]:
        """The devices this entry describes."""
        raise NotImplementedError

    def _device(self, device_id: str, address: str) -> Device:
        facts = MODELS[self.model]
        return Device(
            id=device_id,
            kind=DeviceKind.ASIC,
            model=self.model,
            driver=self.options.driver,
            address=address,
            port=self.options.port,
            nominal_hashrate_hs=(self.nominal_hashrate_ths or facts.hashrate_ths) * TERA,
            nominal_power_w=self.nominal_power_w or facts.power_w,
            sleep_power_w=(
                self.sleep_power_w if self.sleep_power_w is not None else facts.sleep_power_w
            ),
            max_temperature_c=self.max_temperature_c or facts.max_temperature_c,
            pools=tuple(self.pools),
        )


class DeviceConfig(_DeviceCommon):
    """One miner."""

    id: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    address: str = Field(description="IPv4 or IPv6 address of the miner's API")

    @field_validator("address")
    @classmethod
    def _ip_address(cls, value: str) -> str:
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            raise ValueError(f"expected an IPv4 or IPv6 address, got {value!r}") from None

    def devices(self) -> list[Device]:
        """The one Device this entry describes."""
        return [self._device(self.id, str(self.address))]


class DeviceRangeConfig(_DeviceCommon):
    """Many identical miners on consecutive addresses (ids prefix-001, prefix-002, ...)."""

    id_prefix: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,48}$")
    first_address: ipaddress.IPv4Address
    count: int = Field(ge=1, le=100_000)

    def devices(self) -> list[Device]:
        """One Device per address."""
        width = max(3, len(str(self.count)))
        first = self._device(f"{self.id_prefix}-{1:0{width}d}", str(self.first_address))
        # replace() shares the model, driver, pools tuple and nominal floats of the first
        # Device: one copy per range, not per device (memory at 10,000 devices).
        return [first] + [
            dataclasses.replace(
                first, id=f"{self.id_prefix}-{i + 1:0{width}d}", address=str(self.first_address + i)
            )
            for i in range(1, self.count)
        ]


class StaticMarketConfig(_Strict):
    """Fixed market values, for sites without live feeds and for tests."""

    driver: Literal["static"] = "static"
    btc_price_usd: float | None = Field(None, gt=0, le=10_000_000)
    difficulty: float | None = Field(None, gt=0)
    block_subsidy_btc: float | None = Field(3.125, ge=0, le=50)
    fees_btc_per_block: float | None = Field(0.0, ge=0, le=100)
    power_price_usd_per_mwh: float | None = Field(None, ge=-1000, le=10_000)


class ReplayPriceConfig(_Strict):
    """Replays a recorded ERCOT 15-minute trace as the live power price (demo, tests)."""

    driver: Literal["ercot-replay"] = "ercot-replay"
    path: Path | None = Field(None, description="CSV; default: the bundled 2024-08-19..21 slice")
    start: str | None = Field(None, description="local time to start from, e.g. 2024-08-19 00:00")
    speed: float = Field(1.0, gt=0, le=1_000_000, description="replay speed-up (1 = real time)")

    @field_validator("start")
    @classmethod
    def _local_time(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                datetime.strptime(value, "%Y-%m-%d %H:%M")
            except ValueError:
                raise ValueError(f"expected YYYY-MM-DD HH:MM, got {value!r}") from None
        return value


MarketFeedConfig = Annotated[
    StaticMarketConfig
    | ReplayPriceConfig
    | BtcPriceConfig
    | MempoolNetworkConfig
    | BitcoindConfig
    | ErcotConfig
    | TariffConfig,
    Field(discriminator="driver"),
]


QueueOptions = Annotated[
    SlurmOptions | WebhookOptions | KubernetesOptions, Field(discriminator="driver")
]


class QueueConfig(_Strict):
    """An AI job queue GPU nodes can serve, and what its work pays."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    pricing: Literal["contract", "spot"] = Field(
        "contract", description="contract: the fixed rate below; spot: the rate the driver reports"
    )
    contract_rate_usd_per_gpu_hour: float | None = Field(None, ge=0, le=1000)
    preemption_allowed: bool = Field(
        False, description="running jobs may be requeued to free a node (their progress is lost)"
    )
    options: QueueOptions = Field(description="queue driver settings (driver = slurm, ...)")

    @model_validator(mode="after")
    def _rate(self) -> QueueConfig:
        if self.pricing == "contract" and self.contract_rate_usd_per_gpu_hour is None:
            raise ValueError("pricing = 'contract' needs contract_rate_usd_per_gpu_hour")
        return self


class GpuNodeConfig(_Strict):
    """A GPU node that serves AI queues or mines as a preemptible job through its queue driver."""

    id: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    node: str | None = Field(None, description="its name in the queue system; default: id")
    gpus: int = Field(ge=1, le=1024)
    queues: list[str] = Field(min_length=1, description="queue names it may serve")
    pools: list[str] = Field(default_factory=list, description="pools its mining job may use")
    mining_hashrate_ths: float = Field(gt=0, description="what its mining job hashes (TH/s)")
    nominal_power_w: float = Field(gt=0, description="power with every GPU busy")
    idle_power_w: float = Field(ge=0, description="power with no GPU busy (drained, idle)")

    def devices(self) -> list[Device]:
        """The one Device this entry describes (address = its name in the queue system)."""
        return [
            Device(
                id=self.id,
                kind=DeviceKind.GPU_NODE,
                model=f"{self.gpus}xGPU",
                driver="queue",
                address=self.node or self.id,
                port=0,
                nominal_hashrate_hs=self.mining_hashrate_ths * TERA,
                nominal_power_w=self.nominal_power_w,
                sleep_power_w=self.idle_power_w,
                pools=tuple(self.pools),
                gpus=self.gpus,
                queues=tuple(self.queues),
            )
        ]


class LeaseConfig(_Strict):
    """An AI lease: a GPU node under contract to a customer for a time window, at a price."""

    id: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    node: str = Field(description="the gpu_nodes id it leases")
    queue: str = Field(description="the node's queue the customer's jobs come through")
    start: AwareDatetime = Field(description="lease start, with its UTC offset")
    end: AwareDatetime = Field(description="lease end (exclusive), with its UTC offset")
    price_usd_per_hour: float = Field(ge=0, le=1_000_000, description="what the customer pays")
    priority: int = Field(
        0,
        ge=0,
        le=1000,
        description="only a demand-response event of a higher priority outranks it",
    )

    @model_validator(mode="after")
    def _window(self) -> LeaseConfig:
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self

    def lease(self) -> Lease:
        """The model object the policies see."""
        return Lease(
            id=self.id,
            node=self.node,
            queue=self.queue,
            start=self.start,
            end=self.end,
            price_usd_per_hour=self.price_usd_per_hour,
            priority=self.priority,
        )


class WattmuxConfig(_Strict):
    """The whole configuration file."""

    site: SiteConfig
    control: ControlConfig = Field(default_factory=ControlConfig)
    economics: EconomicsConfig = Field(default_factory=EconomicsConfig)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    guard: GuardConfig = Field(default_factory=GuardConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)
    pools: list[PoolConfig] = Field(min_length=1)
    devices: list[DeviceConfig] = Field(default_factory=list)
    device_ranges: list[DeviceRangeConfig] = Field(default_factory=list)
    market: list[MarketFeedConfig] = Field(default_factory=list)
    queues: list[QueueConfig] = Field(default_factory=list)
    gpu_nodes: list[GpuNodeConfig] = Field(default_factory=list)
    leases: list[LeaseConfig] = Field(default_factory=list, description="AI leases of GPU nodes")
    mqtt: MqttOptions | None = Field(None, description="MQTT ingest; absent: no MQTT")
    gpu_telemetry: GpuTelemetryOptions | None = Field(
        None, description="NVML / dcgm-exporter GPU readings; absent: none"
    )

    @model_validator(mode="after")
    def _gpu_checks(self) -> WattmuxConfig:
        queue_names = [q.name for q in self.queues]
        errors = []
        if len(set(queue_names)) != len(queue_names):
            errors.append("queues: names must be unique")
        pool_names = {p.name for p in self.pools}
        for index, node in enumerate(self.gpu_nodes):
            for queue in node.queues:
                if queue not in queue_names:
                    errors.append(f"gpu_nodes[{index}].queues: unknown queue {queue!r}")
            for pool in node.pools:
                if pool not in pool_names:
                    errors.append(f"gpu_nodes[{index}].pools: unknown pool {pool!r}")
            drivers = {
                q.options.model_dump_json(exclude={"partition"})
                for q in self.queues
                if q.name in node.queues
            }
            if len(drivers) > 1:
                errors.append(f"gpu_nodes[{index}].queues: all of a node's queues need one driver")
        nodes = {node.id: node for node in self.gpu_nodes}
        if len({lease.id for lease in self.leases}) != len(self.leases):
            errors.append("leases: ids must be unique")
        for index, lease in enumerate(self.leases):
            leased = nodes.get(lease.node)
            if leased is None:
                errors.append(f"leases[{index}].node: unknown gpu node {lease.node!r}")
            elif lease.queue not in leased.queues:
                errors.append(f"leases[{index}].queue: {lease.queue!r} is not a queue of its node")
        if errors:
            raise ValueError("; ".join(errors[:20]))
        return self

    @model_validator(mode="after")
    def _mqtt_checks(self) -> WattmuxConfig:
        if self.mqtt is not None:
            known = {d.id for d in self.all_devices()}
            unknown = [d for d in self.mqtt.push_devices if d not in known]
            if unknown:
                raise ValueError(f"mqtt.push_devices: unknown device ids {unknown[:10]}")
        return self

    @model_validator(mode="after")
    def _cross_checks(self) -> WattmuxConfig:
        pool_names = [p.name for p in self.pools]
        if len(set(pool_names)) != len(pool_names):
            raise ValueError("pools: names must be unique")
        errors: list[str] = []
        for label, entries in (("devices", self.devices), ("device_ranges", self.device_ranges)):
            for index, entry in enumerate(entries):
                for pool in entry.pools:
                    if pool not in pool_names:
                        errors.append(f"{label}[{index}].pools: unknown pool {pool!r}")
        seen_ids: set[str] = set()
        seen_endpoints: set[tuple[str, int]] = set()
        for device in self.all_devices():
            if device.id in seen_ids:
                errors.append(f"device id {device.id!r} appears twice")
            if (device.address, device.port) in seen_endpoints:
                errors.append(f"address {device.address}:{device.port} appears twice")
            seen_ids.add(device.id)
            seen_endpoints.add((device.address, device.port))
        if not seen_ids:
            errors.append("no devices: add [[devices]] or [[device_ranges]]")
        if errors:
            raise ValueError("; ".join(errors[:20]))
        return self

    @model_validator(mode="after")
    def _schedule_zone_from_site(self) -> WattmuxConfig:
        if self.policy.schedule_timezone is None:
            self.policy.schedule_timezone = self.site.timezone
        return self

    def all_devices(self) -> list[Device]:
        """Every device of the site, ranges expanded."""
        out: list[Device] = []
        for entry in (*self.devices, *self.device_ranges):
            out.extend(entry.devices())
        for node in self.gpu_nodes:
            out.extend(node.devices())
        return out

    def pool(self, name: str) -> PoolConfig:
        """The pool with that name (names are validated unique and referenced)."""
        for pool in self.pools:
            if pool.name == name:
                return pool
        raise KeyError(name)


class ConfigError(Exception):
    """A configuration could not be loaded; ``problems`` lists every error found."""

    def __init__(self, source: str, problems: list[str]) -> None:
        super().__init__(f"{source}: " + "; ".join(problems))
        self.source = source
        self.problems = problems


def _apply_env(data: dict[str, Any], environ: Mapping[str, str]) -> dict[str, str]:
    """Write WATTMUX_A__B=value into data["a"]["b"]; return {dotted path: variable name}."""
    applied: dict[str, str] = {}
    for variable, value in sorted(environ.items()):
        if not variable.startswith(ENV_PREFIX) or "__" not in variable[len(ENV_PREFIX) :]:
            continue
        path = [part.lower() for part in variable[len(ENV_PREFIX) :].split("__")]
        node = data
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                break
            node = child
        else:
            node[path[-1]] = value
            applied[".".join(path)] = variable
    return applied


def _format_loc(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part in (
            "static",
            "ercot-replay",
            "cgminer",
            "luxos",
            "antminer",
            "braiins",
            "asic-rs",
            *QUEUE_DRIVERS,
            *LIVE_MARKET_DRIVERS,
        ):
            continue  # discriminator tags add nothing for the reader
        else:
            text += f".{part}" if text else str(part)
    return text or "(top level)"


def parse_config(
    data: dict[str, Any], source: str = "<config>", environ: Mapping[str, str] | None = None
) -> WattmuxConfig:
    """Validate already-parsed TOML data (plus env overrides) or raise ConfigError."""
    applied = _apply_env(data, os.environ if environ is None else environ)
    try:
        return WattmuxConfig.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            path = _format_loc(error["loc"])
            origin = f" (from {applied[path]})" if path in applied else ""
            got = error.get("input")
            got_text = "" if isinstance(got, dict | list) else f" (got {got!r})"
            message = error["msg"].removeprefix("Value error, ")
            problems.append(f"{path}{origin}: {message}{got_text}")
        raise ConfigError(source, problems) from exc


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> WattmuxConfig:
    """Read and validate a TOML config file, or raise ConfigError naming every problem."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read: {exc.strerror or exc}"]) from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), [f"not UTF-8 text: {exc}"]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), [f"TOML syntax: {exc}"]) from exc
    return parse_config(data, str(path), environ)


def summarize(config: WattmuxConfig) -> list[str]:
    """Human-readable lines describing what a config loaded."""
    devices = config.all_devices()
    by_model: dict[str, int] = {}
    for device in devices:
        by_model[device.model] = by_model.get(device.model, 0) + 1
    nominal_kw = sum(d.nominal_power_w for d in devices) / 1000
    nominal_phs = sum(d.nominal_hashrate_hs for d in devices) / 1e15
    models = ", ".join(f"{count} x {model}" for model, count in sorted(by_model.items()))
    feeds = ", ".join(feed.driver for feed in config.market) or "none"
    return [
        f"site {config.site.name} ({config.site.timezone}), power cap {config.site.power_cap_kw:g} kW",
        f"devices: {len(devices)} ({models}); nominal {nominal_kw:,.1f} kW, {nominal_phs:,.2f} PH/s",
        f"pools: {', '.join(p.name for p in config.pools)}",
        f"policy: {config.policy.name} (hysteresis {config.policy.hysteresis_usd_per_mwh:g} USD/MWh)",
        f"guard: min dwell {config.guard.min_dwell_seconds:g} s, stale price after "
        f"{config.guard.stale_price_seconds:g} s -> {config.guard.stale_action}",
        f"control: tick {config.control.tick_seconds:g} s",
        f"market feeds: {feeds}",
        f"store: {config.store.path}",
        f"api and /metrics: http://{config.api.listen}",
    ]


def pools_of(config: WattmuxConfig) -> dict[str, Pool]:
    """The configured pools as model objects keyed by name."""
    return {
        p.name: Pool(name=p.name, url=p.url, user=p.user, password=p.password) for p in config.pools
    }
