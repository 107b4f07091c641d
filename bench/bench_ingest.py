"""Benchmark: MQTT ingest through a real mosquitto into FleetState, and price-to-decision latency.

Prints one JSON object per line: {"name", "value", "unit"}.
- ingest_single_msgs_per_second: one-sample messages (QoS 0) from publisher processes, counted
  in FleetState; every message must arrive (the loss is printed too and must be 0).
- ingest_batched_samples_per_second: the same with batches of --batch samples per message.
- *_per_cpu_second: the same counts divided by the CPU time the ingesting process used
  (all of it on one core: asyncio), a figure less sensitive to other load on the machine.
- ingest_to_decision_p99_ms: while --load-rate single messages/s flow in, a new power price
  is published every --price-period s from another process (after one warm-up price the
  fleet settles on); the time from publishing a price to the guarded plan computed from
  it.  Plain: prices below break-even (re-plan, nothing switches).  _fleet_flip: every
  --flip-period s a price moves every device across break-even, so the
  store's per-decision fsync'd writes and the reconciler's commands follow and delay the
  next tick (--store-dir /dev/shm takes the disk out).  A price replaced by the next one
  before any tick saw it is counted as superseded.
Usage: python bench/bench_ingest.py [--devices 1000] [--messages 100000] [--batch 500]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import paho.mqtt.client as paho

from drivers.sim.broker import Mosquitto
from scheduler.config.loading import parse_config
from scheduler.daemon import Daemon

PREFIX = "wattmux/bench"
MARKET = {
    "driver": "static",
    "btc_price_usd": 59_013.80,
    "difficulty": 86_871_474_313_762.0,
    "block_subsidy_btc": 3.125,
    "fees_btc_per_block": 0.0,
}


def emit(name: str, value: float, unit: str) -> None:
    print(json.dumps({"name": name, "value": round(value, 3), "unit": unit}), flush=True)


def device_ids(count: int) -> list[str]:
    width = max(3, len(str(count)))
    return [f"s21-{i + 1:0{width}d}" for i in range(count)]


def sample(device: str | None, ts: float) -> dict[str, Any]:
    body: dict[str, Any] = {
        "ts": ts,
        "power_w": 3500.0,
        "hashrate_hs": 2e14,
        "workload": "mine(main)",
    }
    if device:
        body["device_id"] = device
    return body


def _connect(port: int, name: str) -> paho.Client:
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=name, protocol=paho.MQTTv5)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


def publish_singles(port: int, devices: list[str], count: int, rate: float, name: str) -> None:
    """Publisher process: count one-sample messages, round-robin over devices (rate 0 = flat out)."""
    client = _connect(port, name)
    ts = time.time()
    payloads = [(f"{PREFIX}/telemetry/{d}", json.dumps(sample(None, ts)).encode()) for d in devices]
    started = time.perf_counter()
    for i in range(count):
        topic, payload = payloads[i % len(payloads)]
        client.publish(topic, payload, qos=0)
        if rate and i % 100 == 99:
            ahead = (i + 1) / rate - (time.perf_counter() - started)
            if ahead > 0:
                time.sleep(ahead)
    client.loop_stop()
    client.disconnect()


def publish_batches(port: int, devices: list[str], batches: int, size: int, name: str) -> None:
    """Publisher process: batches of size samples."""
    client = _connect(port, name)
    ts = time.time()
    bodies = []
    for start in range(0, len(devices), size):
        chunk = devices[start : start + size]
        bodies.append(json.dumps([sample(d, ts) for d in chunk]).encode())
    for i in range(batches):
        client.publish(f"{PREFIX}/telemetry/batch/{name}", bodies[i % len(bodies)], qos=0)
    client.loop_stop()
    client.disconnect()


def publish_prices(port: int, count: int, period_s: float, flip: bool, out: Any) -> None:
    """Publisher process: a warm-up price, then new prices (flip: across break-even each time)."""
    client = _connect(port, f"prices{int(flip)}")

    def send(value: float) -> float:
        start = datetime.now(UTC)
        body = {
            "usd_per_mwh": value,
            "interval_start": start.isoformat(),
            "interval_end": (start + timedelta(minutes=15)).isoformat(),
        }
        sent_at = time.time()
        client.publish(f"{PREFIX}/price/power", json.dumps(body).encode(), qos=1).wait_for_publish()
        return sent_at

    send(9.0 if not flip else 2399.0)  # warm-up: the fleet settles on it, not measured
    time.sleep(max(3.0, period_s))
    sent = []
    for i in range(count):
        spike = flip and i % 2 == 0
        value = 2400.0 + i if spike else 10.0 + i / 1000 + 0.5 * flip
        sent.append((value, send(value)))
        time.sleep(period_s)
    client.loop_stop()
    client.disconnect()
    out.put(sent)


def config(broker: Mosquitto, devices: int, directory: Path) -> dict[str, Any]:
    return {
        "site": {"name": "bench", "power_cap_kw": 1e6},
        "control": {"tick_seconds": 5.0},
        "guard": {"min_dwell_seconds": 0.0, "stale_price_seconds": 600.0},
        "store": {"path": str(directory / "w.sqlite")},
        "pools": [{"name": "main", "url": "stratum+tcp://p.invalid:3333", "user": "w"}],
        "device_ranges": [
            {
                "id_prefix": "s21",
                "model": "S21",
                "first_address": "127.40.100.1",
                "count": devices,
                "pools": ["main"],
                "options": {"port": 4999, "timeout_seconds": 0.2},
            }
        ],
        "market": [MARKET],
        "mqtt": {
            "host": broker.host,
            "port": broker.port,
            "prefix": PREFIX,
            "push_devices": device_ids(devices),
        },
    }


async def wait_count(get: Any, target: int, idle_s: float = 10.0) -> tuple[float, float, int]:
    """Wait until get() reaches target or stops growing; return (first, last change time, value)."""
    first = last = None
    seen = get()
    last_change = time.perf_counter()
    while True:
        await asyncio.sleep(0.002)
        now_value = get()
        now = time.perf_counter()
        if now_value != seen:
            if first is None:
                first = now
            last, seen, last_change = now, now_value, now
        if seen >= target or now - last_change > idle_s:
            return first or now, last or now, seen


async def run(args: argparse.Namespace, broker: Mosquitto, directory: Path) -> None:
    daemon = Daemon(parse_config(config(broker, args.devices, directory), environ={}))
    stop = asyncio.Event()
    runner = asyncio.create_task(daemon.run(stop, serve_api=False))
    assert daemon.ingest is not None
    await asyncio.wait_for(daemon.ingest.connected.wait(), 10)
    await asyncio.wait_for(daemon.ready.wait(), 30)
    devices = device_ids(args.devices)
    ctx = multiprocessing.get_context("spawn")
    sink = daemon.sink

    # 1. single-sample messages, flat out, from --publishers processes
    per = args.messages // args.publishers
    before = sink.samples
    cpu_before = time.process_time()
    procs = [
        ctx.Process(target=publish_singles, args=(broker.port, devices, per, 0.0, f"pub{i}"))
        for i in range(args.publishers)
    ]
    for p in procs:
        p.start()
    first, last, got = await wait_count(lambda: sink.samples - before, per * args.publishers)
    for p in procs:
        p.join()
    sent = per * args.publishers
    cpu_s = time.process_time() - cpu_before
    emit("ingest_single_msgs_per_second", (got - 1) / max(last - first, 1e-9), "msgs/s")
    emit("ingest_single_msgs_per_cpu_second", got / cpu_s, "msgs/s")
    emit("ingest_single_lost_messages", sent - got, "msgs")

    # 2. batched samples
    batches = max(1, args.messages * 4 // args.batch)
    before = sink.samples
    cpu_before = time.process_time()
    proc = ctx.Process(
        target=publish_batches, args=(broker.port, devices, batches, args.batch, "rack")
    )
    proc.start()
    first, last, got = await wait_count(lambda: sink.samples - before, batches * args.batch)
    proc.join()
    cpu_s = time.process_time() - cpu_before
    emit("ingest_batched_samples_per_cpu_second", got / cpu_s, "samples/s")
    emit(
        "ingest_batched_samples_per_second",
        (got - args.batch) / max(last - first, 1e-9),
        "samples/s",
    )
    emit("ingest_batched_lost_samples", batches * args.batch - got, "samples")

    # 3. price -> decision latency under a steady single-message load
    decided: dict[float, float] = {}
    loop = daemon.loop
    assert loop is not None
    guard = loop.guard
    original = guard.apply

    def decide(plan: Any, snapshot: Any) -> Any:
        guarded = original(plan, snapshot)
        price = snapshot.market.power_price_usd_per_mwh
        if price is not None and price.value not in decided:
            decided[price.value] = time.time()  # the guarded plan for this price exists now
        return guarded

    guard.apply = decide  # type: ignore[method-assign]
    phases = (
        (False, "", args.prices, args.price_period),
        (True, "_fleet_flip", args.flips, args.flip_period),
    )
    for flip, suffix, count, period in phases:
        queue = ctx.Queue()
        load_count = int(args.load_rate * (count * period + max(3.0, period) + 2))
        load = ctx.Process(
            target=publish_singles, args=(broker.port, devices, load_count, args.load_rate, "load")
        )
        prices = ctx.Process(
            target=publish_prices,
            args=(broker.port, count, period, flip, queue),
        )
        load.start()
        await asyncio.sleep(0.5)
        prices.start()
        sent_prices = await asyncio.to_thread(queue.get, True, 120)
        prices.join()
        await asyncio.sleep(1.0)
        load.join()
        latencies = sorted((decided[v] - t) * 1000 for v, t in sent_prices if v in decided)
        missing = len(sent_prices) - len(latencies)
        nan = float("nan")
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies else nan
        emit(f"ingest_to_decision{suffix}_p99_ms", p99, "ms")
        emit(
            f"ingest_to_decision{suffix}_p50_ms",
            statistics.median(latencies) if latencies else nan,
            "ms",
        )
        emit(f"ingest_to_decision{suffix}_superseded_prices", missing, "prices")
    stop.set()
    await asyncio.wait_for(runner, 30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--publishers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--load-rate", type=float, default=5000.0)
    parser.add_argument("--prices", type=int, default=40)
    parser.add_argument("--price-period", type=float, default=0.5)
    parser.add_argument("--flips", type=int, default=10)
    parser.add_argument("--flip-period", type=float, default=3.0)
    parser.add_argument("--store-dir", type=Path, default=None, help="default: a temporary dir")
    args = parser.parse_args()
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    with tempfile.TemporaryDirectory(dir=args.store_dir) as tmp, Mosquitto() as broker:
        runner(run(args, broker, Path(tmp)))


if __name__ == "__main__":
    main()
