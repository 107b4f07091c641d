"""The daemon: composes inputs, loop, reconciler, store, metrics and API in one TaskGroup."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import httpx

from drivers.asic.registry import AsicDriver, create_asic_driver
from drivers.base import MarketFeed
from drivers.limits import raise_open_files_limit
from drivers.market.registry import FeedContext, build_market_feeds
from drivers.queues.registry import QueueNodeDriver
from drivers.secrets import settings_key
from drivers.telemetry.mqtt import MqttIngest
from scheduler.api.app import create_app, serve
from scheduler.api.connections import ConnectionLimits, connection_cap
from scheduler.api.grid import grid_routes
from scheduler.api.wiring import ApiSecurity, security_from_config
from scheduler.config.devices import pools_of
from scheduler.config.schema import WattmuxConfig
from scheduler.console.hub import ConsoleHub
from scheduler.console.locations import load_locations
from scheduler.console.web import console_routes
from scheduler.control.accounting import Accountant
from scheduler.control.device_actions import MaintenanceRunner
from scheduler.control.failsafe import curtail_all
from scheduler.control.grid import GridControl, grid_audit
from scheduler.control.ingest import POWER_PRICE, FleetSink
from scheduler.control.loop import ControlLoop
from scheduler.control.maintenance import AlertSilencer, MaintenanceWindows
from scheduler.control.memory import StartupFreezer, heap_trimmer
from scheduler.control.mvstore import MeterRecorder
from scheduler.control.queues import build_queues
from scheduler.control.reconciler import Reconciler
from scheduler.control.service import (
    ControlledGuard,
    ControlledPolicy,
    ControlledReconciler,
    ControlService,
    Mode,
)
from scheduler.control.systemd import SystemdHeartbeat, SystemdNotifier, watchdog_seconds
from scheduler.control.watchdog import LoopWatchdog
from scheduler.core.hardware import uncatalogued_models
from scheduler.core.model import Plan
from scheduler.core.state import FleetState
from scheduler.observability.gpu_telemetry import GpuTelemetry
from scheduler.observability.metrics import Metrics
from scheduler.observability.metrics_control import ControlCollector, ControlReading
from scheduler.policies import available_policies, create_policy
from scheduler.reload import Reloader, ReloadRefused, ReloadResult
from scheduler.store.operator import ControlStore, RefusedAuditRetention

log = logging.getLogger(__name__)
_Driver = TypeVar("_Driver")


def build_feeds(
    config: WattmuxConfig, clock: Callable[[], float], http: httpx.AsyncClient | None = None
) -> list[MarketFeed]:
    """Market feeds named in [[market]]; the replay also brings the BTC days it covers.

    Live HTTP feeds share ``http``, which the caller owns and closes.
    """
    context = FeedContext(clock=clock, timezone=config.site.timezone, http=http)
    return build_market_feeds(config.market, context)


class Daemon:
    """One running wattmux: what the API reads (state, metrics, plan) and the composition."""

    def __init__(
        self,
        config: WattmuxConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        feeds: Sequence[MarketFeed] | None = None,
        notifier: SystemdNotifier | None = None,
        exit_process: Callable[[int], None] = os._exit,
    ) -> None:
        self.config = config
        self.exit_process = exit_process  # what the stuck-loop watchdog calls after the failsafe
        self.notifier = notifier if notifier is not None else SystemdNotifier.from_environ()
        self.clock = clock
        self.state = FleetState(
            config.all_devices(),
            pool_fee=config.economics.pool_fee,
            power_cap_w=config.site.power_cap_kw * 1000,
        )
        self.state.set_leases(lease.lease() for lease in config.leases)
        self.metrics = Metrics(self.state, clock=clock)
        self.metrics.watch_plan(self.current_plan)
        self.metrics.site_power_cap.set(config.site.power_cap_kw * 1000)
        self.metrics.stale_price_threshold.set(config.guard.stale_price_seconds)
        self.http = httpx.AsyncClient(headers={"User-Agent": "wattmux"})
        self.feeds = list(feeds) if feeds is not None else build_feeds(config, clock, self.http)
        self.loop: ControlLoop | None = None
        self.ready = asyncio.Event()
        self.sink = FleetSink(
            self.state,
            self.metrics,
            max_events=config.mqtt.max_events if config.mqtt is not None else 1000,
        )
        self.ingest = (
            MqttIngest(config.mqtt, self.sink, site=config.site.name, clock=clock)
            if config.mqtt is not None
            else None
        )
        self.gpu_telemetry = (
            GpuTelemetry(config.gpu_telemetry, self.metrics, self.http)
            if config.gpu_telemetry is not None
            else None
        )
        self.control: ControlService | None = None
        self.device_actions: MaintenanceRunner | None = (
            None  # POST /v1/device-actions, once running
        )
        self.console: ConsoleHub | None = None  # the console's shared view, while the API serves
        self.grid = GridControl(  # the site meter, setpoint control and signal intake
            config.meter,
            config.setpoint,
            self.state,
            clock=clock,
            remembered=config.webhook.remembered_signals if config.webhook else 10_000,
        )
        self.grid.register(self.metrics.registry)
        if config.mqtt is not None:  # base points on <prefix>/grid/basepoint
            self.grid.subscribe_basepoints(config.mqtt, config.site.name)
        if config.openadr is not None:  # an OpenADR 2.0b VEN of the configured VTN
            self.grid.attach_openadr(config.openadr)
        if config.openadr3 is not None:  # an OpenADR 3 VEN of the configured VTN
            self.grid.attach_openadr3(config.openadr3)
        self.open_files_limit: int | None = None  # RLIMIT_NOFILE once run() has raised it
        self.config_path: Path | None = None  # the file a reload re-reads (None: no reload)
        self.security: ApiSecurity | None = None  # the API's tokens, while it serves
        self.reloader: Reloader | None = None  # live reload, once the loop is built
        self.maintenance: MaintenanceWindows | None = None  # once the store is open
        self.accounting: Accountant | None = None  # report sums, while the loop runs

    def readiness(self) -> dict[str, bool]:
        """Ready = config loaded, store open, a power price and a device read, one reconcile done."""
        return {
            "config": True,
            "store": self.control is not None,
            "inputs": self.state.market.power_price_usd_per_mwh is not None
            and any(s.reachable for s in self.state.status.values()),
            "reconciled": self.ready.is_set(),
        }

    def current_plan(self) -> Plan | None:
        """The last guarded plan (None before the first tick)."""
        return self.loop.plan if self.loop else None

    def _drivers(self, config: WattmuxConfig | None = None) -> dict[str, AsicDriver]:
        """One cgminer driver per distinct option set, keyed by device id."""
        config = config or self.config
        pools = pools_of(config)
        by_options: dict[str, AsicDriver] = {}
        per_device: dict[str, AsicDriver] = {}
        for entry in (*config.devices, *config.device_ranges):
            key = settings_key(entry.options)  # secrets in: a masked dump would merge blocks
            if key not in by_options:
                by_options[key] = create_asic_driver(
                    pools,
                    entry.options,
                    concurrency=max(config.control.poll_concurrency, 1),
                    clock=self.clock,
                )
            for device in entry.devices():
                per_device[device.id] = by_options[key]
        return per_device

    def _polled(self, drivers: Mapping[str, _Driver]) -> dict[str, _Driver]:
        """Drivers the loop polls: all but the devices whose samples come over MQTT."""
        pushed = set(self.config.mqtt.push_devices) if self.config.mqtt else set()
        return {d: driver for d, driver in drivers.items() if d not in pushed}

    async def run(self, stop: asyncio.Event, *, serve_api: bool = True) -> None:
        """Run until stop is set; the API listens while the loop runs."""
        config = self.config
        self.open_files_limit = raise_open_files_limit(
            config.control.poll_concurrency
            + config.control.command_concurrency
            + 1024
            + config.api.max_connections
        )
        create_policy(config.policy)  # an unknown policy name fails here, before anything runs
        queues = build_queues(config, self.clock)
        drivers: dict[str, AsicDriver | QueueNodeDriver] = {**self._drivers(), **queues.per_node}
        with ControlStore.open(config.store.path) as store:
            self.state.desired.update(
                {d: w for d, w in store.desired().items() if d in self.state.devices}
            )
            if self.ingest is not None:  # the last pushed price, while its interval lasts
                kept = store.pushed_price(POWER_PRICE)
                if kept is not None:
                    self.sink.restore(kept, self.clock())
                self.sink.persist = store.put_pushed_price
            control = ControlService(
                store,
                self.state.devices,
                default_policy=config.policy.name,
                policies=list(available_policies()),
                clock=self.clock,  # curtail and overrides last their time across wall steps
            )
            self.control = control
            self.maintenance = self._maintenance(store)
            self.metrics.registry.register(  # mode, curtail, effective cap, overrides
                ControlCollector(self._control_reading, [m.value for m in Mode])
            )
            guard = ControlledGuard(config.guard, power_cap_w=config.site.power_cap_kw * 1000)
            guard.control = control
            guard.setpoint = self.grid.setpoint
            self.grid.audit, self.grid.note = grid_audit(store)  # signals not made over the API
            try:  # queue clients close only after the reconciler's command tasks have ended
                async with ControlledReconciler(
                    drivers,
                    store,
                    self.metrics,
                    concurrency=config.control.command_concurrency,
                    state=self.state,
                    clock=self.clock,
                    control=control,
                ) as reconciler:
                    self.loop = ControlLoop(
                        state=self.state,
                        telemetry=self._polled(drivers),
                        feeds=self.feeds,
                        policy=ControlledPolicy(control, available_policies(), config.policy),
                        guard=guard,
                        reconciler=reconciler,
                        store=store,
                        metrics=self.metrics,
                        poll_concurrency=config.control.poll_concurrency,
                        clock=self.clock,
                        queues=queues.sources,
                        push_sample_max_age_seconds=(
                            config.mqtt.max_sample_age_seconds if config.mqtt else 60.0
                        ),
                        pool_recovery_seconds=config.control.pool_recovery_seconds,
                        poll_deadline_seconds=config.control.poll_deadline_seconds,
                    )
                    self.sink.wake = self.loop.wake
                    self.reloader = self._reloader(store, reconciler)
                    assert isinstance(self.loop.policy, ControlledPolicy)
                    self.loop.policy.in_maintenance = self.maintenance.devices_in_maintenance
                    self.grid.wake = self.loop.wake
                    async with contextlib.AsyncExitStack() as inputs:
                        inputs.push_async_callback(self.http.aclose)
                        if self.ingest is not None:
                            await inputs.enter_async_context(self.ingest)
                        if self.gpu_telemetry is not None:
                            await inputs.enter_async_context(self.gpu_telemetry)
                        self.device_actions = MaintenanceRunner(
                            self.state.devices, drivers, pools_of(config), clock=self.clock
                        )
                        inputs.push_async_callback(self.device_actions.close)
                        await inputs.enter_async_context(self.grid)
                        await self._serve(stop, serve_api)
            finally:
                await queues.aclose()

    async def _serve(self, stop: asyncio.Event, serve_api: bool) -> None:
        """Run the loop, with the API listening when asked."""
        if serve_api:
            api = self.config.api
            security = security_from_config(self.config)
            self.security = security
            locations, problems = load_locations(
                self.config.locations(), self.config.site.locations_csv, self.state.devices
            )
            for problem in problems[:20]:
                log.warning("site map: %s", problem)
            hub = ConsoleHub(self, locations=locations, location_problems=problems)
            self.console = hub
            hub_stop = asyncio.Event()
            async with serve(
                create_app(
                    self,
                    security,
                    [
                        console_routes(hub, security),
                        grid_routes(self.grid, self, self.config.webhook),
                    ],
                ),
                api.host,
                api.port,
                tls_cert_file=str(api.tls_cert_file) if api.tls_cert_file else None,
                tls_key_file=str(api.tls_key_file) if api.tls_key_file else None,
                limits=self.connection_limits(),
            ):
                hub_task = asyncio.create_task(hub.run(hub_stop), name="console.hub")
                try:
                    await self._run_loop(stop)
                finally:  # end the consoles' streams before the server stops
                    hub_stop.set()
                    await hub_task
        else:
            await self._run_loop(stop)

    def _control_reading(self) -> ControlReading:
        """The operator's controls for a scrape (scheduler.observability.metrics_control)."""
        control, maintenance = self.control, self.maintenance
        assert control is not None and maintenance is not None
        event = control.curtail()
        cap_kw = self.config.site.power_cap_kw
        if event is not None:
            cap_kw = min(cap_kw, event.target_kw or 0.0)
        return ControlReading(
            mode=control.mode.value,
            curtail=event is not None,
            effective_cap_kw=cap_kw,
            overrides=len(control.overrides()),
            in_maintenance=len(maintenance.devices_in_maintenance()),
        )

    def _accountant(self, control: ControlService) -> Accountant:
        """Per-day, per-machine sums for reports, off the store once a minute."""
        maintenance = self.maintenance
        return Accountant(
            self.state,
            control.store,
            timezone=self.config.site.timezone,
            clock=self.clock,
            maintenance=None if maintenance is None else maintenance.devices_in_maintenance,
            curtailed=lambda wall: control.curtail(wall) is not None,
        )

    def _racks(self) -> dict[str, tuple[str, int]]:
        """Device -> (rack, position): config `location` fields and [site] locations_csv."""
        config = self.config
        return load_locations(config.locations(), config.site.locations_csv, self.state.devices)[0]

    def _maintenance(self, store: ControlStore) -> MaintenanceWindows:
        """Maintenance windows, silencing through [alertmanager] when configured."""
        manager = self.config.alertmanager
        return MaintenanceWindows(
            store,
            self.state.devices,
            self._racks,
            silencer=None
            if manager is None
            else AlertSilencer(manager.url, timeout_seconds=manager.timeout_seconds),
        )

    def _reloader(self, store: ControlStore, reconciler: Reconciler) -> Reloader | None:
        """Live reload of the file the daemon was started with (scheduler.reload)."""
        loop = self.loop
        if self.config_path is None or loop is None:
            return None
        policy = loop.policy
        assert isinstance(policy, ControlledPolicy)
        assert isinstance(loop.telemetry, dict) and isinstance(reconciler.controls, dict)
        return Reloader(
            self,
            self.config_path,
            drivers_for=lambda config: dict(self._drivers(config)),
            telemetry=loop.telemetry,
            controls=reconciler.controls,
            rebuild_policy=lambda config: policy.reconfigure(config.policy),
            store=store,
            replace_tokens=self._replace_tokens,
            pushed=frozenset(self.config.mqtt.push_devices if self.config.mqtt else ()),
        )

    def _replace_tokens(self, config: WattmuxConfig) -> None:
        """Check a reloaded config's tokens and swap them into the serving API."""
        fresh = security_from_config(config).authenticator  # ValueError when one is malformed
        if self.security is not None:
            self.security.authenticator.replace(fresh.entries)

    def reload(self) -> ReloadResult:
        """Re-read the config file (SIGHUP); ReloadRefused leaves the running config."""
        if self.reloader is None:
            refused = ReloadRefused(
                "no config file to reload from, or the daemon is not running yet"
            )
            log.error("config reload refused: %s", refused.message)
            raise refused
        return self.reloader.reload()

    def connection_limits(self) -> ConnectionLimits:
        """The API's connection bounds, its cap lowered so the device sockets keep their fds."""
        api, control = self.config.api, self.config.control
        limit = self.open_files_limit
        if limit is None:
            limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            if limit == resource.RLIM_INFINITY:
                limit = 1 << 20
        device_sockets = min(
            len(self.state.devices), control.poll_concurrency + control.command_concurrency
        )
        cap = connection_cap(
            api.max_connections, open_files_limit=int(limit), device_sockets=device_sockets
        )
        if cap < api.max_connections:
            log.warning(
                "API connections capped at %d (api.max_connections = %d): the open-files limit "
                "(%d) is kept for %d device sockets and the daemon",
                cap,
                api.max_connections,
                limit,
                device_sockets,
            )
        return ConnectionLimits(
            max_connections=cap,
            max_per_client=api.max_connections_per_client,
            header_timeout_seconds=api.header_timeout_seconds,
            body_timeout_seconds=api.body_timeout_seconds,
            keep_alive_seconds=api.keep_alive_seconds,
        )

    async def _run_loop(self, stop: asyncio.Event) -> None:
        assert self.loop is not None
        log.info(
            "wattmux running: %d devices, policy %s, API on http://%s",
            len(self.state.devices),
            self.config.policy.name,
            self.config.api.listen,
        )
        for model, count in sorted(uncatalogued_models(self.state.devices.values()).items()):
            log.warning(
                "model %r (%d devices) is not in the model catalog: nominal figures from the config",
                model,
                count,
            )
        heartbeat = SystemdHeartbeat(self.notifier)
        watchdog_s = watchdog_seconds()
        if watchdog_s is not None and watchdog_s < 2 * self.config.control.tick_seconds:
            log.warning(
                "systemd WatchdogSec (%.0f s) is shorter than two ticks (%.1f s): expect restarts",
                watchdog_s,
                2 * self.config.control.tick_seconds,
            )
        watchdog = self._watchdog(heartbeat)
        if watchdog is not None:
            self.loop.tick_listeners.append(watchdog.beat)
        self.loop.tick_listeners.append(heartbeat.tick_done)
        freezer = StartupFreezer()  # the collector stops walking start-up objects
        self.loop.tick_listeners.append(freezer.after_tick)
        self.loop.tick_listeners.append(heap_trimmer())  # freed poll memory back to the OS
        if self.control is not None:  # refused-request audit rows: [store] refused_audit_days
            self.loop.tick_listeners.append(
                RefusedAuditRetention(self.control.store, self.config.store.refused_audit_days)
            )
        if self.control is not None:  # report sums (scheduler.control.accounting)
            self.accounting = self._accountant(self.control)
            self.loop.tick_listeners.append(self.accounting)
        recorder = None
        if self.control is not None:  # M&V history in the store (scheduler.control.mvstore)
            recorder = MeterRecorder(
                self.control.store,
                self.grid,
                retention_days=self.config.store.meter_history_days,
                clock=self.clock,
            )
            self.loop.tick_listeners.append(recorder)
        if watchdog is not None:
            watchdog.start()
        try:
            await self.loop.run(self.config.control.tick_seconds, stop, self.ready)
        finally:
            if self.accounting is not None:
                self.accounting.flush()
            if recorder is not None:
                recorder.flush(stopping=True)
            if watchdog is not None:
                watchdog.stop()
            heartbeat.stopping()
            freezer.release()

    def _watchdog(self, heartbeat: SystemdHeartbeat) -> LoopWatchdog | None:
        """The stuck-loop watchdog of [control] watchdog_ticks (None when 0)."""
        control = self.config.control
        if control.watchdog_ticks <= 0:
            return None
        stuck_after = max(
            control.watchdog_ticks * control.tick_seconds, control.watchdog_min_seconds
        )
        systemd_s = watchdog_seconds()
        if systemd_s is not None and stuck_after >= systemd_s:
            log.warning(
                "stuck-loop watchdog (%.0f s) is not shorter than systemd WatchdogSec (%.0f s):"
                " systemd may kill a stuck loop before the failsafe runs",
                stuck_after,
                systemd_s,
            )
        config = self.config
        return LoopWatchdog(
            stuck_after,
            lambda: curtail_all(config),
            heartbeat=heartbeat,
            exit_process=self.exit_process,
        )


def default_store_path(directory: Path) -> Path:
    """Where a throwaway store goes (demo)."""
    return directory / "wattmux.sqlite"
