"""``wattmux demo``: the daemon on a simulated site replaying real ERCOT prices, with a live screen."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from drivers.errors import Unavailable
from drivers.market.replay import ErcotReplayFeed
from drivers.sim.site import SimSite
from scheduler.api.auth import hash_token, new_token
from scheduler.config.devices import pools_of
from scheduler.config.loading import parse_config
from scheduler.config.schema import WattmuxConfig
from scheduler.core.economics import market_economics
from scheduler.core.hardware import MODELS
from scheduler.core.model import DeviceKind, WorkloadKind
from scheduler.daemon import Daemon
from scheduler.demo.gpu import NODE_POWER_W, gpu_config_entries, gpu_lines, sim_queue

log = logging.getLogger(__name__)

# Share of each model in the demo fleet: older, mid and newest generation.
FLEET_MIX: tuple[tuple[str, float], ...] = (("S19j Pro", 0.3), ("S21", 0.5), ("S21 XP", 0.2))
FIRST_ADDRESS = (127, 77, 0, 1)
SIM_PORT = 4028


def _address(offset: int) -> str:
    base = (FIRST_ADDRESS[1] << 16) | (FIRST_ADDRESS[2] << 8) | FIRST_ADDRESS[3]
    value = base + offset
    return f"127.{(value >> 16) & 255}.{(value >> 8) & 255}.{value & 255}"


class DemoError(Exception):
    """The demo cannot start (for example a port is taken); the message says what to do."""


def demo_config(
    asics: int,
    speed: float,
    listen: str,
    store_path: Path,
    *,
    gpus: int = 0,
    queue_url: str = "http://127.0.0.1:1",
    sim_port: int = SIM_PORT,
    tokens: list[dict[str, str]] | None = None,
) -> WattmuxConfig:
    """The embedded demo site: a mixed fleet on 127.77.x.y, GPU nodes if asked, the ERCOT replay."""
    counts = [int(asics * share) for _, share in FLEET_MIX]
    counts[1] += asics - sum(counts)
    ranges: list[dict[str, Any]] = []
    offset = 0
    for (model, _), count in zip(FLEET_MIX, counts, strict=True):
        if count == 0:
            continue
        ranges.append(
            {
                "id_prefix": model.lower().replace(" ", ""),
                "model": model,
                "first_address": _address(offset),
                "count": count,
                "location": {"rack": "ABC"[len(ranges)], "per_rack": 20},
                "pools": ["main", "backup"],
                "options": {
                    "port": sim_port,
                    "timeout_seconds": 2.0,
                    "confirm_timeout_seconds": 5.0,
                    "confirm_interval_seconds": 0.2,
                },
            }
        )
        offset += count
    nominal_kw = (
        sum(MODELS[m].power_w * c for (m, _), c in zip(FLEET_MIX, counts, strict=True)) / 1000
    )
    nominal_kw += gpus * NODE_POWER_W / 1000
    interval_seconds = 900.0 / speed
    data: dict[str, Any] = {
        "site": {
            "name": "demo",
            "timezone": "America/Chicago",
            "power_cap_kw": round(nominal_kw * 1.1, 1),
        },
        "control": {"tick_seconds": min(5.0, max(0.25, interval_seconds / 2))},
        "economics": {"pool_fee": 0.02},
        "policy": {"name": "breakeven", "hysteresis_usd_per_mwh": 5.0},
        "guard": {
            "min_dwell_seconds": interval_seconds,
            "stale_price_seconds": max(5.0, interval_seconds * 4),
            "stale_action": "sleep",
        },
        "store": {"path": str(store_path)},
        "api": {"listen": listen, "tokens": tokens or []},
        "pools": [
            {"name": "main", "url": "stratum+tcp://main.pool.invalid:3333", "user": "demo.worker"},
            {
                "name": "backup",
                "url": "stratum+tcp://backup.pool.invalid:3333",
                "user": "demo.worker",
            },
        ],
        "device_ranges": ranges,
        "market": [{"driver": "ercot-replay", "speed": speed}],
    }
    if gpus:
        data.update(gpu_config_entries(gpus, queue_url, ["main", "backup"]))
    return parse_config(data, "<embedded demo config>", environ={})


@contextlib.contextmanager
def _store_path(explicit: str | None) -> Iterator[Path]:
    if explicit:
        yield Path(explicit)
        return
    with tempfile.TemporaryDirectory(prefix="wattmux-demo-") as directory:
        yield Path(directory) / "wattmux.sqlite"


def _replay(daemon: Daemon) -> ErcotReplayFeed:
    for feed in daemon.feeds:
        if isinstance(feed, ErcotReplayFeed):
            return feed
    raise RuntimeError("demo without a replay feed")


SCREEN_WIDTH = 80
SCREEN_HEIGHT = 24


def render(
    daemon: Daemon,
    site: SimSite,
    started: float,
    speed: float,
    console_link: str = "",
    *,
    token: str = "",
    width: int = SCREEN_WIDTH,
    height: int = SCREEN_HEIGHT,
) -> list[str]:
    """The lines of the live summary screen, each at most ``width`` wide, at most ``height - 1``.

    Price and site power come first so that a short terminal keeps them; the last decisions
    fill what is left.  Times are market time (the replayed ERCOT clock, Central time).
    """
    snapshot = daemon.state.snapshot(daemon.clock())
    economics = market_economics(snapshot)
    asics = sum(1 for d in snapshot.devices.values() if d.kind is DeviceKind.ASIC)
    head = [
        f"wattmux demo  market {_market_time(daemon, None):%Y-%m-%d %H:%M %Z}  {asics} ASICs  "
        f"{speed:g}x  {time.monotonic() - started:4.0f} s",
    ]
    reported_kw = (
        sum(
            s.power_w
            for d, s in snapshot.samples.items()
            if snapshot.devices[d].kind is DeviceKind.ASIC
        )
        / 1000
    )
    if economics is None:
        head.append("power price  waiting for inputs ...")
    else:
        price = economics.power_price_usd_per_mwh
        bar = "#" * min(30, max(0, int(price / 50)))
        head.append(f"power price  {price:9,.2f} USD/MWh  {bar}")
    head.append(
        f"site power   {reported_kw:9,.1f} kW of cap {daemon.config.site.power_cap_kw:,.0f} kW"
        f"  (meter {site.total_power_w() / 1000:,.1f} kW)"
    )
    counts = {"mining": 0, "asleep": 0, "unreachable": 0}
    for device_id, device in snapshot.devices.items():
        if device.kind is DeviceKind.GPU_NODE:
            continue
        if not snapshot.status[device_id].reachable:
            counts["unreachable"] += 1
        elif snapshot.current[device_id].kind is WorkloadKind.MINE:
            counts["mining"] += 1
        else:
            counts["asleep"] += 1
    head.append(
        f"machines     mining {counts['mining']:4d}   asleep {counts['asleep']:4d}   "
        f"unreachable {counts['unreachable']:4d}"
    )
    head.append(_control_line(daemon))
    if economics is not None:
        btc = snapshot.market.btc_price_usd
        head.append(
            f"hashprice    {economics.hashprice_usd_per_th_day:.4f} USD/TH/day"
            + (f"   BTC {btc.value:,.2f} USD" if btc else "")
        )
        breakevens = []
        for model, _ in FLEET_MIX:
            one = next((d for d in snapshot.devices.values() if d.model == model), None)
            if one is not None:
                breakevens.append(f"{model} {economics.breakeven_usd_per_mwh(one):.1f}")
        head.append("break-even   " + "  ".join(breakevens) + " USD/MWh")
    plan = daemon.current_plan()
    margin = sum(a.expected_margin_usd_per_hour for a in plan.assignments) if plan else 0.0
    head.append(f"margin       {margin:+,.2f} USD/h expected by the plan")
    head += gpu_lines(snapshot)
    listen = daemon.config.api.listen
    foot = [
        f"token        {token}  (admin)" if token else "",
        f"API and metrics http://{listen}  console /console  Ctrl-C stops",
    ]
    room = max(0, height - 1 - len(head) - len(foot) - 1)
    decisions = _decision_lines(daemon, limit=room - 1) if room > 1 else []
    middle = ["last decisions (market time, USD/MWh):", *decisions] if room > 1 else []
    del console_link  # the console link holds the token: printed at start, kept in scrollback
    lines = [*head, *middle, *(line for line in foot if line)]
    return [line[:width] for line in lines[: max(1, height - 1)]]


def _control_line(daemon: Daemon) -> str:
    """Mode, the curtail in force and the number of overrides (what an operator changed)."""
    control = daemon.control
    if control is None:
        return "control      starting ..."
    curtail = control.curtail()
    if curtail is None:
        curtail_text = "none"
    else:
        target = "full" if curtail.target_kw is None else f"{curtail.target_kw:,.0f} kW"
        left = max(0.0, (curtail.until - datetime.now(UTC)).total_seconds())
        curtail_text = f"{target} ({left / 60:.0f} min left)"
    return (
        f"control      mode {control.mode.value}   curtail {curtail_text}   "
        f"overrides {len(control.overrides())}"
    )


def _market_time(daemon: Daemon, at: datetime | None) -> datetime:
    """The replayed market time now (``at`` None) or at wall time ``at`` (the replay's ends held)."""
    replay = _replay(daemon)
    now = daemon.clock()
    if at is not None:
        now -= (datetime.now(UTC) - at).total_seconds()
    try:
        return replay.replay_time(now)
    except Unavailable:  # past the end of the replay: its last interval
        return replay.intervals[-1].start


def _decision_lines(daemon: Daemon, limit: int) -> list[str]:
    """The last decisions, one line per tick and transition (devices counted, not listed)."""
    groups: dict[tuple[datetime, str, str, str, float | None, str], list[str]] = {}
    for decision in daemon.loop.recent if daemon.loop else ():
        a = decision.assignment
        key = (
            decision.at,
            decision.previous or "-",
            str(a.workload),
            a.reason,
            decision.power_price_usd_per_mwh,
            daemon.state.devices[a.device_id].model,
        )
        groups.setdefault(key, []).append(a.device_id)
    lines = []
    for key, device_ids in list(groups.items())[-limit:][::-1] if limit > 0 else []:
        at, previous, workload, reason, price, model = key
        price_text = f"{price:8,.2f}" if price is not None else "       ?"
        lines.append(
            f" {_market_time(daemon, at):%m-%d %H:%M} {price_text} {len(device_ids):3d}x "
            f"{model:<8} {previous:>10}->{workload:<10} {reason}"
        )
    return lines


async def _screen(
    daemon: Daemon,
    site: SimSite,
    speed: float,
    stop: asyncio.Event,
    out: TextIO,
    live: bool,
    console_link: str = "",
    token: str = "",
) -> None:
    started = time.monotonic()
    if live:  # the alternate screen: the lines printed at start stay in the scrollback
        out.write("\x1b[?1049h")
    try:
        await _screen_loop(daemon, site, speed, stop, out, live, console_link, token, started)
    finally:
        if live:
            out.write("\x1b[?1049l")
            out.flush()


async def _screen_loop(
    daemon: Daemon,
    site: SimSite,
    speed: float,
    stop: asyncio.Event,
    out: TextIO,
    live: bool,
    console_link: str,
    token: str,
    started: float,
) -> None:
    last_counts: tuple[int, int, str] | None = None
    while not stop.is_set():
        if daemon.ready.is_set():
            if live:
                size = shutil.get_terminal_size((SCREEN_WIDTH, SCREEN_HEIGHT))
                lines = render(
                    daemon,
                    site,
                    started,
                    speed,
                    console_link,
                    token=token,
                    width=size.columns,
                    height=size.lines,
                )
                out.write("\x1b[H\x1b[2J" + "\n".join(lines) + "\n")
                out.flush()
            else:
                snapshot = daemon.state.snapshot(daemon.clock())
                asics = [
                    w
                    for d, w in snapshot.current.items()
                    if snapshot.devices[d].kind is DeviceKind.ASIC
                ]
                mining = sum(1 for w in asics if w.kind is WorkloadKind.MINE)
                gpu_text = "".join(
                    "; GPU nodes: " + " ".join(line.split()[2:]) for line in gpu_lines(snapshot)[:1]
                )
                counts = (mining, len(asics) - mining, gpu_text)
                if counts != last_counts:
                    price = snapshot.market.power_price_usd_per_mwh
                    log.info(
                        "market %s price %s USD/MWh: %d mining, %d asleep%s",
                        f"{_replay(daemon).replay_time(daemon.clock()):%Y-%m-%d %H:%M}",
                        f"{price.value:,.2f}" if price else "?",
                        *counts,
                    )
                    last_counts = counts
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)


def _check_listen(host: str, port: int) -> None:
    """Fail early, with a clear message, when the API address cannot be bound."""
    try:
        with socket.create_server((host, port)):
            pass
    except OSError as exc:
        raise DemoError(
            f"cannot listen on {host}:{port} for the API and /metrics: {exc.strerror or exc}. "
            "Pick another --listen HOST:PORT."
        ) from exc


async def run_demo(args: argparse.Namespace, stop: asyncio.Event) -> None:
    """Start the simulated site and the daemon; stop on Ctrl-C, at --duration or at the replay's end."""
    gpus = getattr(args, "gpus", 0)
    with _store_path(args.store) as store_path:
        token = getattr(args, "token", None) or new_token()
        admin = [{"name": "demo-admin", "role": "admin", "sha256": hash_token(token)}]
        async with contextlib.AsyncExitStack() as stack:
            replays: list[ErcotReplayFeed] = []
            queue_url = "http://127.0.0.1:1"
            if gpus:
                queue = sim_queue(
                    gpus,
                    args.speed,
                    lambda: replays[0].replay_time().hour if replays else 0,
                    time.monotonic,
                )
                queue_url = (await stack.enter_async_context(queue)).url
            config = demo_config(
                args.asics,
                args.speed,
                args.listen,
                store_path,
                gpus=gpus,
                queue_url=queue_url,
                sim_port=args.sim_port,
                tokens=admin,
            )
            daemon = Daemon(config)
            replay = _replay(daemon)
            replays.append(replay)
            await _run_site(args, config, daemon, replay, stop, token)
        print("wattmux demo: stopped cleanly", file=sys.stderr)


def _print_token(token: str, listen: str) -> None:
    """The admin token, the line to paste for the CLI and the console link (stdout: scrollback)."""
    print(
        f"wattmux demo: admin token {token}\n"
        f"  export WATTMUX_TOKEN={token} WATTMUX_URL=http://{listen}; wattmux status\n"
        f"wattmux demo: console http://{listen}/console#token={token}  (opens logged in)",
        flush=True,
    )


async def _run_site(
    args: argparse.Namespace,
    config: WattmuxConfig,
    daemon: Daemon,
    replay: ErcotReplayFeed,
    stop: asyncio.Event,
    token: str,
) -> None:
    duration = args.duration or replay.duration_seconds() + 2.0
    ramp_seconds = min(30.0, 1500.0 / args.speed)
    gpus = getattr(args, "gpus", 0)
    print(
        f"wattmux demo: starting {args.asics} simulated ASICs on {_address(0)}.. port {args.sim_port}"
        + (f" and {gpus} simulated GPU nodes behind a webhook queue" if gpus else "")
        + f"; API and /metrics on http://{args.listen}; running {duration:.0f} s",
        file=sys.stderr,
    )
    _print_token(token, args.listen)
    asics = [d for d in config.all_devices() if d.kind is DeviceKind.ASIC]
    _check_listen(config.api.host, config.api.port)
    site = SimSite(
        asics,
        list(pools_of(config).values()),
        port=args.sim_port,
        ramp_seconds=ramp_seconds,
        thermal_tau_seconds=ramp_seconds * 2,
    )
    try:
        await site.start()
    except OSError as exc:
        raise DemoError(
            f"cannot start the simulated miners: {exc}. Is another demo running? "
            "Stop it or pick another --sim-port."
        ) from exc
    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(daemon.run(stop), name="daemon.run")
            group.create_task(
                _screen(
                    daemon,
                    site,
                    args.speed,
                    stop,
                    sys.stdout,
                    live=not args.no_ui,
                    console_link=f"http://{args.listen}/console#token={token}",
                    token=token,
                ),
                name="demo.screen",
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), duration)
            stop.set()
    finally:
        await site.stop()
        if not args.no_ui:  # the live screen is gone: the token again, where it stays
            _print_token(token, args.listen)
