"""wattmux configuration schema: the pydantic models of the TOML file.

Reading the file, environment overrides and error messages are
``scheduler.config.loading``; the devices an entry describes are built by
``scheduler.config.devices``.  The settings of a device's firmware, a market
feed, a queue backend and a policy are validated by the options model of the
registry entry their ``driver`` (policy: ``name``) tag names
(``drivers.asic.registry``, ``drivers.market.registry``,
``drivers.queues.registry``, ``scheduler.policies``): a new plugin needs no edit here.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails

from drivers.asic.config import CgminerOptions
from drivers.asic.registry import ASIC_DRIVERS, DEFAULT_DRIVER, AsicSettings
from drivers.dr.openadr import OpenAdrOptions
from drivers.dr.openadr3 import OpenAdr3Options
from drivers.gpu.config import GpuTelemetryOptions
from drivers.market.registry import MARKET_FEEDS, MarketSettings
from drivers.queues.registry import QUEUE_BACKENDS, QueueSettings, driver_key
from drivers.secrets import MaskedUrl
from drivers.telemetry.mqtt import MqttOptions
from scheduler.config.grid import MeterConfig, SetpointConfig, WebhookConfig
from scheduler.core.hardware import MAX_MODEL_CHARS, ModelFacts, lookup
from scheduler.core.model import TERA, Device, DeviceKind, Lease
from scheduler.policies import POLICIES
from scheduler.policies.breakeven import BreakevenOptions
from scheduler.policies.schedule import ScheduleOptions


class _Strict(BaseModel):
    """Base for config sections: unknown keys are errors (a typo never passes silently)."""

    model_config = ConfigDict(extra="forbid")


class SiteConfig(_Strict):
    """The site as a whole."""

    name: str = Field("site", pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="site name")
    timezone: str = Field("UTC", description="IANA zone for schedules, e.g. America/Chicago")
    power_cap_kw: float = Field(gt=0, description="site power cap in kW; never exceeded")
    locations_csv: Path | None = Field(
        None,
        description="CSV of address,rack,position for the console's site map (wins over config)",
    )

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
    poll_deadline_seconds: float | None = Field(
        2.0,
        gt=0,
        le=600,
        description=(
            "a tick waits at most this long for any one device's poll; a slower poll goes on"
            " in the background and that device is left out of the tick (none: wait for all)"
        ),
    )
    watchdog_ticks: float = Field(
        8.0,
        ge=0,
        le=10000,
        description=(
            "no tick completed in this many tick_seconds (and watchdog_min_seconds): the loop"
            " is stuck; every device is put to sleep (failsafe) and the daemon exits (0: off)"
        ),
    )
    watchdog_min_seconds: float = Field(
        30.0, ge=0, le=86400, description="the stuck-loop watchdog never fires sooner than this"
    )
    failsafe_attempts: int = Field(
        3,
        ge=1,
        le=20,
        description=(
            "the failsafe sends sleep to a device up to this many times while the device answers"
            " but does not read back asleep (a command lost or ignored)"
        ),
    )
    failsafe_confirm_seconds: float = Field(
        5.0,
        gt=0,
        le=600,
        description=(
            "the failsafe reads a device back this long after each sleep command before sending"
            " it again (capped by the driver's own confirm_timeout_seconds)"
        ),
    )


class EconomicsConfig(_Strict):
    """Revenue assumptions."""

    pool_fee: float = Field(0.02, ge=0, lt=1, description="pool fee as a fraction (0.02 = 2%)")


class PolicyConfig(BreakevenOptions, ScheduleOptions):
    """Which policy decides, and the policies' settings.

    The flat keys are the settings of the shipped policies (each policy's options
    model declares the keys it takes); ``[policy.options.<name>]`` holds the
    settings of one policy, validated by its registered options model and, for a
    shipped policy, taking precedence over the flat keys.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field("breakeven", description="registered policy name")
    options: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="settings of one policy by name, [policy.options.<name>]; checked by its model",
    )

    @field_validator("options")
    @classmethod
    def _known_settings(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        problems: list[InitErrorDetails] = []
        for name, table in value.items():
            if name not in POLICIES:
                known = ", ".join(POLICIES.tags())
                raise ValueError(f"settings of unknown policy {name!r}; known: {known}")
            model = POLICIES.get(name).options
            if model is None:
                raise ValueError(f"policy {name!r} takes the [policy] section, not a table")
            try:
                model.model_validate(table)
            except ValidationError as exc:
                problems.extend(
                    InitErrorDetails(
                        type=error["type"],
                        loc=(name, *error["loc"]),
                        input=error["input"],
                        ctx=error.get("ctx", {}),
                    )
                    for error in exc.errors()
                )
        if problems:
            raise ValidationError.from_exception_data("policy options", problems)
        return value

    def settings(self, name: str | None = None) -> BaseModel:
        """The validated settings of a policy (default: the configured one).

        Its options model takes the flat keys it declares, then its own table.
        """
        policy = name or self.name
        model = POLICIES.get(policy).options
        if model is None:
            return self
        flat = {
            key: getattr(self, key) for key in model.model_fields if key in type(self).model_fields
        }
        return model.model_validate({**flat, **self.options.get(policy, {})})


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
    refused_audit_days: float = Field(
        30.0,
        ge=0,
        le=36500,
        description=(
            "audit rows of refused API requests (status 400 and above: nothing changed) older"
            " than this are deleted, checked hourly (0: keep them all); changes are always kept"
        ),
    )
    meter_history_days: float = Field(
        45.0,
        ge=0,
        le=3660,
        description=(
            "site meter readings (per-minute means) and events' M&V inputs kept for M&V after a"
            " restart and for days-of-history baselines; older ones are deleted hourly (0: keep)"
        ),
    )


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
    max_connections: int = Field(
        256,
        ge=8,
        le=65536,
        description="open connections at once (lowered to fit the open-files limit); then 503",
    )
    max_connections_per_client: int = Field(
        32, ge=1, le=65536, description="open connections per client address; then 503"
    )
    header_timeout_seconds: float = Field(
        10.0, gt=0, le=3600, description="a request's line and headers must arrive within this"
    )
    body_timeout_seconds: float = Field(
        30.0, gt=0, le=3600, description="a request's body must arrive within this of its headers"
    )
    keep_alive_seconds: int = Field(
        5, ge=1, le=3600, description="idle time allowed between two requests on a connection"
    )
    refused_per_minute: float = Field(
        60.0,
        gt=0,
        le=60000,
        description="refused requests (401, 403, 413, 429) per client address and minute; then 429",
    )
    refused_burst: int = Field(
        20, ge=1, le=10000, description="refused requests allowed at once per client address"
    )
    session_seconds: float = Field(
        28800.0, ge=1, le=604800, description="a console login lasts this long (then log in again)"
    )

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
    url: MaskedUrl = Field(pattern=r"^stratum(\+tcp|\+ssl|2\+tcp)?://.+", description="stratum URL")
    user: str = Field(min_length=1, description="worker name")
    password: SecretStr = Field(
        SecretStr("x"), description="worker password (usually ignored by pools)"
    )


class LocationConfig(_Strict):
    """Where one miner stands: its rack and its position in the rack (the console's site map)."""

    rack: str = Field(pattern=r"^[A-Za-z0-9_.:/ -]{1,32}$", description="rack name, e.g. A03")
    position: int = Field(ge=1, le=10000, description="position in the rack, 1 = first")


class RangeLocationConfig(_Strict):
    """Where a range's miners stand: in order, ``per_rack`` to a rack (racks rack-01, rack-02 ...).

    Without ``per_rack`` the whole range stands in the one rack ``rack``.
    """

    rack: str = Field(pattern=r"^[A-Za-z0-9_.:/ -]{1,32}$", description="rack name or prefix")
    first_position: int = Field(1, ge=1, le=10000)
    per_rack: int | None = Field(None, ge=1, le=10000, description="miners per rack")

    def place(self, index: int) -> tuple[str, int]:
        """(rack, position) of the range's index-th miner (0-based)."""
        if self.per_rack is None:
            return self.rack, self.first_position + index
        rack, slot = divmod(index, self.per_rack)
        return f"{self.rack}-{rack + 1:02d}", self.first_position + slot


# A model the catalog lacks: its entry gives hash rate and power; these fill the rest.
UNKNOWN_MODEL_SLEEP_POWER_W = 20.0
UNKNOWN_MODEL_MAX_TEMPERATURE_C = 85.0


class _DeviceCommon(_Strict):
    """Fields shared by single devices and ranges."""

    model: str = Field(
        min_length=1,
        max_length=MAX_MODEL_CHARS,
        pattern=r"^[ -~]+$",
        description="miner model, e.g. S21 or a string firmware reports (Antminer S21 XP Hyd.,"
        " M60S_VK40); one the catalog (scheduler/core/catalog.toml) lacks needs"
        " nominal_hashrate_ths and nominal_power_w",
    )
    pools: list[str] = Field(min_length=1, description="pool names, in order of preference")
    nominal_hashrate_ths: float | None = Field(None, gt=0, description="default: model's")
    nominal_power_w: float | None = Field(None, gt=0, description="default: model's")
    sleep_power_w: float | None = Field(None, ge=0, description="default: model's")
    max_temperature_c: float | None = Field(None, gt=0, lt=150, description="default: model's")
    options: Annotated[AsicSettings, ASIC_DRIVERS.validator(DEFAULT_DRIVER)] = Field(
        default_factory=CgminerOptions,
        description="driver settings (driver = a registered ASIC driver tag; default cgminer)",
    )

    @model_validator(mode="after")
    def _figures_for_unknown_model(self) -> _DeviceCommon:
        if lookup(self.model) is not None:
            return self
        missing = [
            name
            for name in ("nominal_hashrate_ths", "nominal_power_w")
            if getattr(self, name) is None
        ]
        if missing:
            raise ValueError(
                f"model {self.model!r} is not in the model catalog: give "
                f"{' and '.join(missing)} in this entry (its stock figures)"
            )
        return self

    def devices(self) -> list[Device]:
        """The devices this entry describes."""
        raise NotImplementedError

    def _device(self, device_id: str, address: str) -> Device:
        """One ASIC of this entry; the catalog's facts fill the gaps (the entry's, unknown model)."""
        facts = lookup(self.model)
        if facts is None:  # not in the catalog: the validator made sure the figures are given
            facts = ModelFacts(
                hashrate_ths=self.nominal_hashrate_ths or 0.0,
                power_w=self.nominal_power_w or 0.0,
                sleep_power_w=UNKNOWN_MODEL_SLEEP_POWER_W,
                max_temperature_c=UNKNOWN_MODEL_MAX_TEMPERATURE_C,
                name=self.model,
            )
        return Device(
            id=device_id,
            kind=DeviceKind.ASIC,
            model=facts.name,
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

    location: LocationConfig | None = Field(None, description="rack and position (site map)")

    def devices(self) -> list[Device]:
        """The one Device this entry describes."""
        return [self._device(self.id, str(self.address))]


class DeviceRangeConfig(_DeviceCommon):
    """Many identical miners on consecutive addresses (ids prefix-001, prefix-002, ...)."""

    id_prefix: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,48}$")
    first_address: ipaddress.IPv4Address
    count: int = Field(ge=1, le=100_000)
    location: RangeLocationConfig | None = Field(None, description="racks of the range (site map)")

    @model_validator(mode="after")
    def _within_ipv4(self) -> DeviceRangeConfig:
        last = int(self.first_address) + self.count - 1
        if last > 0xFFFFFFFF:
            raise ValueError(
                f"first_address {self.first_address} + count {self.count} runs past "
                f"255.255.255.255 by {last - 0xFFFFFFFF} address(es): lower count or first_address"
            )
        return self

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


MarketFeedConfig = Annotated[MarketSettings, MARKET_FEEDS.validator()]
"""One [[market]] entry, validated by the feed its ``driver`` names."""

QueueOptions = Annotated[QueueSettings, QUEUE_BACKENDS.validator()]
"""A queue's driver settings, validated by the backend its ``driver`` names."""


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


class AlertmanagerConfig(_Strict):
    """[alertmanager]: where maintenance windows create their silences (API v2)."""

    url: MaskedUrl = Field(pattern=r"^https?://[^\s/]+(/\S*)?$", max_length=512)
    timeout_seconds: float = Field(5.0, gt=0, le=60)


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
    alertmanager: AlertmanagerConfig | None = Field(
        None, description="Alertmanager whose API silences machines in maintenance; absent: none"
    )
    meter: MeterConfig | None = Field(None, description="the site meter; absent: none")
    setpoint: SetpointConfig = Field(default_factory=SetpointConfig)
    webhook: WebhookConfig | None = Field(None, description="signed signal intake; absent: off")
    openadr: OpenAdrOptions | None = Field(None, description="OpenADR 2.0b VEN; absent: off")
    openadr3: OpenAdr3Options | None = Field(None, description="OpenADR 3 VEN; absent: off")

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
            drivers = {driver_key(q.options) for q in self.queues if q.name in node.queues}
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
        if self.meter is not None and self.meter.source == "mqtt" and self.mqtt is None:
            raise ValueError("meter.source = mqtt needs an [mqtt] section")
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

    def locations(self) -> dict[str, tuple[str, int]]:
        """Device id -> (rack, position) from the ``location`` fields of the config."""
        out: dict[str, tuple[str, int]] = {}
        for single in self.devices:
            if single.location is not None:
                out[single.id] = (single.location.rack, single.location.position)
        for entry in self.device_ranges:
            if entry.location is not None:
                for index, device in enumerate(entry.devices()):
                    out[device.id] = entry.location.place(index)
        return out

    def pool(self, name: str) -> PoolConfig:
        """The pool with that name (names are validated unique and referenced)."""
        for pool in self.pools:
            if pool.name == name:
                return pool
        raise KeyError(name)
