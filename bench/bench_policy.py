"""Benchmark: max-margin plan for 100,000 devices, and the 10-month backtest for 1,000 devices.

Prints one JSON object per line: {"name", "value", "unit"}.
Also ``plan_100k_heterogeneous_ms``: 100,000 devices whose measured efficiencies all differ
(each its own measured power, 0.85-1.15 x nominal) and whose current workloads are mixed
(mining and asleep), max-margin ranking them by measured J/TH (to 1 %), and
``plan_100k_heterogeneous_nominal_ms``: the same with every device's nominal figures different
(nothing groups).
Usage: python bench/bench_policy.py [--devices 100000] [--backtest-devices 1000] [--repeat 5]
       [--only plan|backtest|heterogeneous]
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scheduler.backtest.engine import load_trace, run_backtest
from scheduler.config.loading import parse_config
from scheduler.core.model import Reading, Sample, Snapshot, Workload
from scheduler.core.state import FleetState
from scheduler.policies.max_margin import MaxMarginPolicy

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "drivers" / "market" / "data"
MODELS = ("S19j Pro", "S21", "S21 XP")


def emit(name: str, value: float, unit: str) -> None:
    print(json.dumps({"name": name, "value": round(value, 3), "unit": unit}), flush=True)


def fleet(devices: int, cap_fraction: float) -> dict:  # type: ignore[type-arg]
    per_model = devices // len(MODELS)
    ranges = []
    for index, model in enumerate(MODELS):
        count = per_model if index < len(MODELS) - 1 else devices - per_model * (len(MODELS) - 1)
        ranges.append(
            {
                "id_prefix": f"m{index}",
                "model": model,
                "pools": ["main"],
                "first_address": f"10.{index}.0.1",
                "count": count,
            }
        )
    nominal_kw = devices * 3.4
    return {
        "site": {"name": "bench", "power_cap_kw": nominal_kw * cap_fraction},
        "pools": [{"name": "main", "url": "stratum+tcp://pool.example:3333", "user": "w"}],
        "device_ranges": ranges,
    }


def bench_plan(devices: int, repeat: int) -> None:
    config = parse_config(fleet(devices, 0.6), environ={})  # the cap binds: the knapsack runs
    state = FleetState(
        config.all_devices(), pool_fee=0.02, power_cap_w=config.site.power_cap_kw * 1000
    )
    for name, value in (
        ("btc_price_usd", 59_013.8),
        ("difficulty", 86_871_474_313_762.0),
        ("block_subsidy_btc", 3.125),
        ("power_price_usd_per_mwh", 45.0),
    ):
        state.market = type(state.market)(
            **{
                **{
                    f: getattr(state.market, f)
                    for f in (
                        "btc_price_usd",
                        "difficulty",
                        "block_subsidy_btc",
                        "fees_btc_per_block",
                        "power_price_usd_per_mwh",
                    )
                },
                name: Reading(value, 0.0, "bench"),
            }
        )
    base = state.snapshot(1.0)
    fields = base.__dataclass_fields__

    def fresh_snapshot(repeat_index: int) -> object:
        # As in the daemon: every tick a new snapshot whose current workloads are new (equal)
        # objects from telemetry, and a power price that moved.
        current = {d: Workload.mine("main") for d in state.devices}
        market = base.market
        price = Reading(45.0 + 0.01 * repeat_index, 0.0, "bench")
        market = type(market)(
            **{
                f: getattr(market, f)
                for f in (
                    "btc_price_usd",
                    "difficulty",
                    "block_subsidy_btc",
                    "fees_btc_per_block",
                )
            },
            power_price_usd_per_mwh=price,
        )
        return type(base)(
            **{
                **{f: getattr(base, f) for f in fields},
                "current": current,
                "market": market,
                "now": 1.0 + repeat_index,
            }
        )

    gc_ms = [0.0]
    gc_started = [0.0]

    def on_gc(phase: str, info: dict) -> None:  # type: ignore[type-arg]
        if phase == "start":
            gc_started[0] = time.process_time()
        else:
            gc_ms[0] += (time.process_time() - gc_started[0]) * 1000

    read_times: list[float] = []
    read_cpu_times: list[float] = []

    def measure(fresh_policy: bool) -> tuple[list[float], list[float], list[float], int]:
        policy = MaxMarginPolicy()
        policy.plan(fresh_snapshot(-1))  # the daemon's first tick (imports, memo of facts)
        times, cpu_times, gc_times = [], [], []
        read_times.clear()
        read_cpu_times.clear()
        assigned = 0
        for index in range(repeat):
            snapshot = fresh_snapshot(index)
            if fresh_policy:
                policy = MaxMarginPolicy()
            gc_ms[0] = 0.0
            started, cpu_started = time.perf_counter(), time.process_time()
            plan = policy.plan(snapshot)  # type: ignore[arg-type]
            times.append((time.perf_counter() - started) * 1000)
            cpu_times.append((time.process_time() - cpu_started) * 1000)
            gc_times.append(gc_ms[0])
            assigned = len(plan.assignments)
            # What a reader of every device's assignment pays on top (the Guard's by_device()):
            # a grouped plan builds its per-device Assignment objects here, not in the policy.
            started, cpu_started = time.perf_counter(), time.process_time()
            by_device = plan.by_device()
            read_times.append((time.perf_counter() - started) * 1000)
            read_cpu_times.append((time.process_time() - cpu_started) * 1000)
            assert len(by_device) == devices
            del plan, by_device
        return times, cpu_times, gc_times, assigned

    # Steady state: the same policy object every tick (devices and workloads unchanged).
    gc.callbacks.append(on_gc)
    times, cpu_times, gc_times, assigned = measure(fresh_policy=False)
    assert assigned == devices
    emit(f"plan_{devices // 1000}k_devices_ms", statistics.median(times), "ms")
    # CPU time of the same calls: on a shared machine wall time includes waiting for a core.
    emit(f"plan_{devices // 1000}k_devices_cpu_ms", statistics.median(cpu_times), "ms")
    # CPU time of CPython's garbage collector inside those calls (a full collection walks the
    # whole heap, 100,000 devices and their workloads included, when one falls in a call).
    emit(f"plan_{devices // 1000}k_devices_gc_ms", statistics.median(gc_times), "ms")
    emit(
        f"plan_{devices // 1000}k_devices_without_gc_cpu_ms",
        statistics.median(c - g for c, g in zip(cpu_times, gc_times, strict=True)),
        "ms",
    )
    emit(f"plan_{devices // 1000}k_devices_by_device_ms", statistics.median(read_times), "ms")
    emit(
        f"plan_{devices // 1000}k_devices_by_device_cpu_ms", statistics.median(read_cpu_times), "ms"
    )
    # A new policy object every call: devices grouped from scratch (first tick, fleet changed).
    times, cpu_times, _, assigned = measure(fresh_policy=True)
    gc.callbacks.remove(on_gc)
    assert assigned == devices
    emit(f"plan_{devices // 1000}k_devices_cold_ms", statistics.median(times), "ms")
    emit(f"plan_{devices // 1000}k_devices_cold_cpu_ms", statistics.median(cpu_times), "ms")


def _market_state(state: FleetState, price: float) -> object:
    values = {
        "btc_price_usd": 59_013.8,
        "difficulty": 86_871_474_313_762.0,
        "block_subsidy_btc": 3.125,
        "fees_btc_per_block": 0.06,
        "power_price_usd_per_mwh": price,
    }
    return type(state.market)(**{k: Reading(v, 0.0, "bench") for k, v in values.items()})


def bench_heterogeneous(devices: int, repeat: int, nominal: bool) -> None:
    import dataclasses
    import random

    config = parse_config(fleet(devices, 0.6), environ={})
    rng = random.Random(1)
    factors = [0.85 + 0.3 * i / devices for i in range(devices)]
    rng.shuffle(factors)
    base_devices = config.all_devices()
    if nominal:  # every device its own nominal power: no two alike
        base_devices = [
            dataclasses.replace(d, nominal_power_w=d.nominal_power_w * f)
            for d, f in zip(base_devices, factors, strict=True)
        ]
    state = FleetState(base_devices, pool_fee=0.02, power_cap_w=config.site.power_cap_kw * 1000)
    base = state.snapshot(1.0)
    fields = {f: getattr(base, f) for f in base.__dataclass_fields__}
    mine, sleep = Workload.mine("main"), Workload.sleep()
    current = {d.id: (sleep if i % 5 == 0 else mine) for i, d in enumerate(base_devices)}
    for_market = _market_state(state, 45.0)

    def snap(tick: int) -> Snapshot:
        price = 45.0 + 0.01 * tick
        market = type(base.market)(
            **{
                f: getattr(for_market, f)
                for f in ("btc_price_usd", "difficulty", "block_subsidy_btc", "fees_btc_per_block")
            },
            power_price_usd_per_mwh=Reading(price, float(tick), "bench"),
        )
        samples = {
            d.id: Sample(
                d.id,
                float(tick),
                current[d.id],
                power_w=d.nominal_power_w * f if current[d.id] is mine else d.sleep_power_w,
                hashrate_hs=d.nominal_hashrate_hs if current[d.id] is mine else 0.0,
            )
            for d, f in zip(base_devices, factors, strict=True)
        }
        return Snapshot(
            **{
                **fields,
                "now": float(tick),
                "market": market,
                "samples": samples,
                "current": dict(current),
            }
        )

    policy = MaxMarginPolicy()
    for tick in range(3):  # measured efficiency needs 3 readings per device
        policy.plan(snap(tick))
    times, cpu_times = [], []
    for tick in range(3, 3 + repeat):
        snapshot = snap(tick)
        started, cpu_started = time.perf_counter(), time.process_time()
        plan = policy.plan(snapshot)
        times.append((time.perf_counter() - started) * 1000)
        cpu_times.append((time.process_time() - cpu_started) * 1000)
        assert len(plan.assignments) == devices
    name = f"plan_{devices // 1000}k_heterogeneous{'_nominal' if nominal else ''}"
    emit(f"{name}_ms", statistics.median(times), "ms")
    emit(f"{name}_cpu_ms", statistics.median(cpu_times), "ms")


def bench_backtest(devices: int) -> None:
    config = parse_config(fleet(devices, 1.2), environ={})
    trace = load_trace(
        DATA / "ercot_hb_south_15min_2024-06-01_2025-03-27.csv",
        DATA / "btc_daily_price_difficulty_2017-08-17_2025-06-02.csv",
    )
    started, cpu_started = time.perf_counter(), time.process_time()
    run_backtest(config, MaxMarginPolicy(), trace, info="lagged")
    wall_s, cpu_s = time.perf_counter() - started, time.process_time() - cpu_started
    emit(f"backtest_10_months_{devices // 1000}k_devices_seconds", wall_s, "s")
    emit(f"backtest_10_months_{devices // 1000}k_devices_cpu_seconds", cpu_s, "s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--backtest-devices", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--only", choices=("plan", "backtest", "heterogeneous"), help="run one of them"
    )
    args = parser.parse_args()
    if args.only in (None, "plan"):
        bench_plan(args.devices, args.repeat)
    if args.only in (None, "heterogeneous"):
        bench_heterogeneous(args.devices, args.repeat, nominal=False)
        bench_heterogeneous(args.devices, max(1, args.repeat // 2), nominal=True)
    if args.only in (None, "backtest"):
        bench_backtest(args.backtest_devices)


if __name__ == "__main__":
    main()
