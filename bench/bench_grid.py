"""Benchmark: site power control against the simulated meter.

Prints one JSON object per line: {"name", "value", "unit"}.

- ``setpoint_settle_seconds_10k_down`` / ``_up``: 10,000 simulated miners (a third each
  S19j Pro on cgminer -- sleep only --, S21 on LuxOS and S21 XP on Braiins OS -- power
  targets --) behind the simulated meter (an Eastron SDM630 map on pymodbus's Modbus TCP
  server, read over loopback each tick); a step from full power to 50 % and back; the time
  until the metered site power stays within +/-2 % of the target.
- ``setpoint_tracking_error_p95_pct``: 1,000 miners (``--tracking-devices``), one hour of
  5-minute base points (a seeded random
  walk between 45 % and 100 % of full power); |metered - base point| / base point at every
  tick, p95 (``..._5min_mean_p95_pct``: the same on each interval's mean).
  Both run the real Guard and SetpointController on a simulated clock (time compressed:
  the hour runs in seconds): each miner's power moves linearly to its new draw after the
  command (sleep 10 s, wake 30 s, power target 20 s), commands land spread over 2 s, a
  base load of 2 % of full power and 0.5 % meter noise.
- ``dr_signal_to_first_command_ms``: a signed webhook signal POSTed to the running daemon
  (real HTTP, 40 simulated miners over TCP, tick 5 s so the signal is acted on by the
  loop's wake path) until the first miner has received its sleep command; median and p95
  of ``--signals`` signals.

Usage: python bench/bench_grid.py [--devices 10000] [--tracking-devices 1000] [--signals 10] [--only settle|tracking|signal]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from drivers.meter.maps import load_map
from drivers.meter.modbus import ModbusMeter
from drivers.sim.meter import SimMeter
from scheduler.config.grid import SetpointConfig
from scheduler.config.schema import GuardConfig
from scheduler.control.service import ControlledGuard
from scheduler.control.setpoint import SetpointController
from scheduler.control.sitemeter import SiteMeter
from scheduler.core.hardware import MODELS
from scheduler.core.model import (
    TERA,
    Device,
    DeviceKind,
    DeviceStatus,
    MarketState,
    Reading,
    Sample,
    Snapshot,
    Workload,
    WorkloadKind,
)
from scheduler.core.power import planned_power_w
from scheduler.policies.breakeven import BreakevenPolicy

TICK_S = 2.0
BAND = 0.02
RAMP_S = {"sleep": 10.0, "wake": 30.0, "level": 20.0}
FLEET = (("S19j Pro", "cgminer"), ("S21", "luxos"), ("S21 XP", "braiins"))


def emit(name: str, value: float, unit: str) -> None:
    print(json.dumps({"name": name, "value": round(value, 3), "unit": unit}), flush=True)


def devices(count: int) -> list[Device]:
    out = []
    for i in range(count):
        model, driver = FLEET[i % len(FLEET)]
        facts = MODELS[model]
        out.append(
            Device(
                id=f"m{i:05d}",
                kind=DeviceKind.ASIC,
                model=model,
                driver=driver,
                address=f"10.{i // 65536}.{i // 256 % 256}.{i % 256}",
                port=4028,
                nominal_hashrate_hs=facts.hashrate_ths * TERA,
                nominal_power_w=facts.power_w,
                sleep_power_w=15.0,
                pools=("main",),
            )
        )
    return out


@dataclass
class Machine:
    device: Device
    workload: Workload
    power_w: float
    start_w: float = 0.0
    goal_w: float = 0.0
    move_at: float = 0.0  # when the command lands
    move_s: float = 0.0
    pending: Workload | None = None


class Plant:
    """The simulated site: miners that move to a new draw after a command, a base load, noise."""

    def __init__(self, fleet: list[Device], seed: int = 1) -> None:
        self.now = 0.0
        self.rng = random.Random(seed)
        self.machines = {d.id: Machine(d, Workload.mine("main"), d.nominal_power_w) for d in fleet}
        self.full_w = sum(d.nominal_power_w for d in fleet)
        self.base_w = 0.02 * self.full_w

    def command(self, device_id: str, workload: Workload) -> None:
        machine = self.machines[device_id]
        if machine.pending == workload or (
            machine.pending is None and machine.workload == workload
        ):
            return
        goal = planned_power_w(machine.device, workload)
        if workload.kind is WorkloadKind.SLEEP:
            ramp = RAMP_S["sleep"]
        elif machine.workload.kind is WorkloadKind.SLEEP:
            ramp = RAMP_S["wake"]
        else:
            ramp = RAMP_S["level"]
        machine.pending = workload
        machine.move_at = self.now + self.rng.uniform(0.0, 2.0)
        machine.start_w, machine.goal_w, machine.move_s = machine.power_w, goal, ramp

    def advance(self, to: float) -> None:
        self.now = to
        for machine in self.machines.values():
            if machine.pending is None or to < machine.move_at:
                continue
            machine.workload = machine.pending  # the firmware reports the new mode at once
            progress = min(1.0, (to - machine.move_at) / machine.move_s)
            machine.power_w = machine.start_w + (machine.goal_w - machine.start_w) * progress
            if progress >= 1.0:
                machine.pending = None

    def metered_w(self) -> float:
        total = self.base_w + sum(m.power_w for m in self.machines.values())
        return total * (1.0 + self.rng.gauss(0.0, 0.005))

    def snapshot(self, market: MarketState, device_map: dict[str, Device]) -> Snapshot:
        samples = {
            d: Sample(d, self.now, m.workload, m.power_w, 0.0, 60.0)
            for d, m in self.machines.items()
        }
        return Snapshot(
            now=self.now,
            wall=_WALL,
            devices=device_map,
            samples=samples,
            status={d: _UP for d in device_map},
            market=market,
            current={d: m.workload for d, m in self.machines.items()},
            power_cap_w=None,
        )


_UP = DeviceStatus(reachable=True)
from datetime import UTC, datetime  # noqa: E402

_WALL = datetime(2026, 1, 1, tzinfo=UTC)


def market(now: float) -> MarketState:
    def r(v: float) -> Reading:
        return Reading(v, now, "bench")

    return MarketState(
        btc_price_usd=r(100_000.0),
        difficulty=r(1.1e14),
        block_subsidy_btc=r(3.125),
        fees_btc_per_block=r(0.05),
        power_price_usd_per_mwh=r(20.0),
    )


class Rig:
    """The plant, its Modbus meter, and the real Guard + SetpointController on a simulated clock."""

    def __init__(self, count: int) -> None:
        fleet = devices(count)
        self.device_map = {d.id: d for d in fleet}
        self.plant = Plant(fleet)
        self.meter_value = self.plant.metered_w()
        self.policy = BreakevenPolicy()
        self.guard = ControlledGuard(GuardConfig(min_dwell_seconds=0), power_cap_w=1e12)
        self.controller = SetpointController(SetpointConfig(), clock=lambda: self.plant.now)
        self.guard.setpoint = self.controller
        self.sim_meter: SimMeter | None = None
        self.site_meter: SiteMeter | None = None

    async def __aenter__(self) -> Rig:
        register_map = load_map("eastron-sdm630")
        self.sim_meter = SimMeter(register_map, lambda: self.meter_value)
        await self.sim_meter.start()
        clock = lambda: self.plant.now  # noqa: E731
        source = ModbusMeter("127.0.0.1", self.sim_meter.port, register_map, clock=clock)
        self.site_meter = SiteMeter(source, stale_seconds=10.0, clock=clock)
        self.controller.metered_w = self.site_meter.power_w
        self.controller.metered_at = self.site_meter.observed_at
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self.sim_meter is not None and self.site_meter is not None
        self.site_meter.source.close()
        await self.sim_meter.stop()

    async def tick(self) -> float:
        """One control tick: read the meter over Modbus, plan, guard (+ setpoint), command."""
        assert self.site_meter is not None
        self.meter_value = self.plant.metered_w()
        reading = await self.site_meter.read_once()
        assert reading is not None
        snap = self.plant.snapshot(market(self.plant.now), self.device_map)
        plan = self.guard.apply(self.policy.plan(snap), snap)
        for assignment in plan.assignments:
            self.plant.command(assignment.device_id, assignment.workload)
        return reading.power_w

    async def run_for(self, seconds: float, trace: list[tuple[float, float, float]]) -> None:
        end = self.plant.now + seconds
        while self.plant.now < end:
            metered = await self.tick()
            goal = self.controller.target.kw * 1000 if self.controller.target else float("nan")
            trace.append((self.plant.now, metered, goal))
            self.plant.advance(self.plant.now + TICK_S)


def settle_seconds(
    trace: list[tuple[float, float, float]], start: float, end: float, goal_w: float
) -> float:
    """Time from start until metered stays within +/-2 % of goal_w up to end."""
    last_out = start
    for at, metered, _ in trace:
        if start <= at < end and abs(metered - goal_w) > BAND * goal_w:
            last_out = at + TICK_S
    return last_out - start


async def bench_settle(count: int, verbose: bool = False) -> None:
    async with Rig(count) as rig:
        trace: list[tuple[float, float, float]] = []
        await rig.run_for(20.0, trace)
        full_w = statistics.fmean(m for _, m, _ in trace[-5:])
        half_w = full_w * 0.5
        down_at = rig.plant.now
        rig.controller.set_target(half_w / 1000.0, "operator", "down")
        await rig.run_for(180.0, trace)
        up_at = rig.plant.now
        rig.controller.set_target(full_w / 1000.0, "operator", "up")
        await rig.run_for(180.0, trace)
    end = rig.plant.now
    if verbose:
        for at, metered, goal in trace:
            print(f"{at:7.1f} {metered / 1000:10.1f} {goal / 1000:10.1f}", file=sys.stderr)
    emit("setpoint_settle_seconds_10k_down", settle_seconds(trace, down_at, up_at, half_w), "s")
    emit("setpoint_settle_seconds_10k_up", settle_seconds(trace, up_at, end, full_w), "s")


async def bench_tracking(count: int) -> None:
    rng = random.Random(5)
    async with Rig(count) as rig:
        trace: list[tuple[float, float, float]] = []
        await rig.run_for(20.0, trace)
        full_w = statistics.fmean(m for _, m, _ in trace[-5:])
        level = 0.8
        errors: list[float] = []
        means: list[float] = []
        for index in range(12):  # one hour of 5-minute base points
            level = min(1.0, max(0.45, level + rng.uniform(-0.15, 0.15)))
            point_w = full_w * level
            rig.controller.set_target(point_w / 1000.0, "basepoint", f"bp-{index}")
            interval: list[tuple[float, float, float]] = []
            await rig.run_for(300.0, interval)
            errors.extend(abs(m - point_w) / point_w * 100 for _, m, _ in interval)
            mean = statistics.fmean(m for _, m, _ in interval)
            means.append(abs(mean - point_w) / point_w * 100)
    emit("setpoint_tracking_error_p95_pct", _p95(errors), "%")
    emit("setpoint_tracking_error_5min_mean_p95_pct", _p95(means), "%")


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


async def bench_signal(signals: int) -> None:
    import httpx

    from drivers.market.static import StaticMarketFeed
    from drivers.sim.site import SimSite
    from scheduler.api.grid import signature
    from scheduler.config.devices import pools_of
    from scheduler.config.loading import parse_config
    from scheduler.daemon import Daemon

    secret = "b" * 40
    address, port, api_port = "127.68.0.1", _free_port("127.68.0.1"), _free_port("127.0.0.1")
    with tempfile.TemporaryDirectory() as tmp:
        data: dict[str, Any] = {
            "site": {"name": "bench", "power_cap_kw": 10_000.0},
            "control": {"tick_seconds": 5.0},
            "economics": {"pool_fee": 0.0},
            "guard": {"min_dwell_seconds": 0.0, "stale_price_seconds": 600.0},
            "store": {"path": str(Path(tmp) / "w.sqlite")},
            "api": {"listen": f"127.0.0.1:{api_port}"},
            "webhook": {"secret": secret},
            "setpoint": {"confirm_seconds": 0.0},
            "pools": [{"name": "main", "url": "stratum+tcp://main.invalid:3333", "user": "w"}],
            "device_ranges": [
                {
                    "id_prefix": "s21",
                    "model": "S21",
                    "first_address": address,
                    "count": 40,
                    "pools": ["main"],
                    "options": {"port": port, "confirm_interval_seconds": 0.05},
                }
            ],
        }
        config = parse_config(data, "<bench>", environ={})
        market_values = {
            "btc_price_usd": 100_000.0,
            "difficulty": 1.1e14,
            "block_subsidy_btc": 3.125,
            "fees_btc_per_block": 0.05,
            "power_price_usd_per_mwh": 20.0,
        }
        daemon = Daemon(config, feeds=[StaticMarketFeed(market_values)])
        stop = asyncio.Event()
        latencies: list[float] = []
        async with SimSite(
            config.all_devices(), list(pools_of(config).values()), port=port
        ) as site:
            task = asyncio.create_task(daemon.run(stop))
            await asyncio.wait_for(daemon.ready.wait(), 30)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api_port}") as http:
                for index in range(signals):
                    for action, kw in (("setpoint", 100.0), ("release", None)):
                        body = json.dumps(
                            {"id": f"sig-{index}-{action}", "action": action, "kw": kw}
                        )
                        stamp = str(int(time.time()))
                        headers = {
                            "content-type": "application/json",
                            "x-wattmux-timestamp": stamp,
                            "x-wattmux-signature": signature(secret.encode(), stamp, body.encode()),
                        }
                        started = time.perf_counter()
                        reply = await http.post(
                            "/v1/signals/webhook", content=body, headers=headers
                        )
                        assert reply.status_code == 200, reply.text
                        if action == "setpoint":
                            await _until(lambda: any(m.asleep for m in site.miners.values()))
                            latencies.append((time.perf_counter() - started) * 1000)
                        else:
                            await _until(lambda: not any(m.asleep for m in site.miners.values()))
                            # the next signal after a poll has read the woken miners (the
                            # reconciler sends no command on a reading older than its last one)
                            assert daemon.loop is not None
                            ticks = daemon.loop.ticks
                            await _until(lambda t=ticks, lp=daemon.loop: lp.ticks > t)
                            await asyncio.sleep(random.uniform(0.1, 2.0))
            stop.set()
            await asyncio.wait_for(task, 30)
    emit("dr_signal_to_first_command_ms", statistics.median(latencies), "ms")
    emit("dr_signal_to_first_command_p95_ms", _p95(latencies), "ms")


async def _until(predicate: Callable[[], bool]) -> None:
    """Poll every millisecond until predicate() holds (the latency's resolution)."""
    for _ in range(10**7):
        if predicate():
            return
        await asyncio.sleep(0.001)
    raise TimeoutError("condition not reached")


def _free_port(host: str) -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--tracking-devices", type=int, default=1000)
    parser.add_argument("--signals", type=int, default=10)
    parser.add_argument("--only", choices=("settle", "tracking", "signal"))
    parser.add_argument("--trace", action="store_true", help="print the settle trace on stderr")
    args = parser.parse_args()
    if args.only in (None, "settle"):
        asyncio.run(bench_settle(args.devices, args.trace))
    if args.only in (None, "tracking"):
        asyncio.run(bench_tracking(args.tracking_devices))
    if args.only in (None, "signal"):
        asyncio.run(bench_signal(args.signals))


if __name__ == "__main__":
    main()
