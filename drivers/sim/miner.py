"""A simulated ASIC that speaks the cgminer API, with LuxOS-style sessions and sleep, over TCP.

Wire behaviour, as real firmware: the client connects and sends one JSON
command (``{"command": "switchpool", "parameter": "1"}``); the miner answers
with one JSON document followed by a NUL byte and closes.  Report commands can
be joined (``summary+pools+stats``): the reply is an object keyed by command
name, each value that command's full reply in a one-element list, plus ``id``.

What each command returns (the field names real firmware uses):

    summary   SUMMARY[0]: Elapsed, MHS av, MHS 5s (GHS ... when hashrate_unit is "GHS"),
              Accepted, Rejected, and Power = input power in W (Whatsminer's field)
    power     POWER[0]: Watts, PSU (LuxOS's power command)
    pools     POOLS[i]: POOL, URL, User, Status (Alive/Dead/Disabled), Priority, Stratum Active
    stats     STATS[0] identity; STATS[1] bmminer style: fan1..4, temp1..3 (PCB), temp2_1..3
              (chip), temp_pcbN and temp_chipN as "a-b-c-d" sensor strings
    config    CONFIG[0] (LuxOS style): CurtailMode "None" or "Sleep", IsPowerSupplyOn
    version, switchpool|N, enablepool|N, disablepool|N, addpool|url,user,pass (cgminer)
    logon, logoff|sid, session, curtail|sid,sleep or sid,wakeup (LuxOS: one session at a
              time, dropped after session_timeout_seconds idle; curtail needs the session)

A sleeping miner reports CONFIG[0].CurtailMode == "Sleep", no pool with
Stratum Active, and its hash rate ramps to zero; that is how a client reads
sleep back.  Status codes are cgminer's where cgminer has the command; the
session and power commands use this simulator's own codes (300-306).

Physics, computed lazily from the injected clock: power and hash rate ramp
linearly over ramp_seconds towards the target (sleep power / nominal); chip
temperature follows a first-order lag (thermal_tau_seconds) towards ambient
plus a rise proportional to the hash rate.  Small per-miner offsets come from
a seed derived from the device id, so runs are reproducible.
"""

from __future__ import annotations

import json
import random
import time
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from drivers.sim.luxos import SimLuxos
from drivers.sim.physics import CHIP_RISE_C, MinerPhysics
from drivers.sim.tcp import ConnectionStats, Fault, SimTcpServer
from scheduler.core.model import Device, Pool

__all__ = ["ConnectionStats", "Fault", "SimMiner", "SimState"]

Reply = dict[str, Any]

DESCRIPTION = "cgminer 4.11.1 (wattmux sim)"
BOARDS = 3
FANS = 4
REPORT_COMMANDS = frozenset(
    {"summary", "pools", "stats", "version", "config", "power", "session", "profiles", "atm"}
)


@dataclass(frozen=True, slots=True)
class SimState:
    """What the simulated miner is doing at one instant (for tests and the demo)."""

    asleep: bool
    active_pool_url: str | None
    power_w: float
    hashrate_hs: float
    chip_temperature_c: float


@dataclass(slots=True)
class _SimPool:
    url: str
    user: str
    password: str
    enabled: bool = True
    alive: bool = True


def _split_escaped(text: str) -> list[str]:
    """Split on commas, honouring cgminer's backslash escapes (a backslash quotes the next char)."""
    parts: list[str] = []
    current: list[str] = []
    escaped = False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ",":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


class SimMiner(SimTcpServer):
    """One simulated ASIC: physics, pools, a LuxOS-style session, and a TCP API server."""

    def __init__(
        self,
        device: Device,
        pools: Sequence[Pool],
        *,
        port: int = 4028,
        ramp_seconds: float = 30.0,
        thermal_tau_seconds: float = 90.0,
        clock: Callable[[], float] = time.monotonic,
        ambient_c: float = 25.0,
        noise_fraction: float = 0.01,
        session_timeout_seconds: float = 60.0,
        connection_stats: ConnectionStats | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(device.address, port, connection_stats)
        self.device = device
        self.session_timeout_seconds = session_timeout_seconds
        self.hashrate_unit: Literal["MHS", "GHS"] = "MHS"
        self.command_counts: Counter[str] = Counter()
        self.version_extra: dict[str, str] = {}  # e.g. {"LUXminer": "2024.1.26"}
        self.description = DESCRIPTION  # STATUS Description (firmware personalities set theirs)
        self._clock = clock
        self.reboots = 0  # reboot() calls (maintenance tests)
        self._wall_clock = wall_clock
        rng = random.Random(zlib.crc32(device.id.encode()))
        session_seed = rng.getrandbits(32)
        self.physics = MinerPhysics(
            mining_hashrate_hs=device.nominal_hashrate_hs
            * (1 + noise_fraction * rng.uniform(-1, 1)),
            mining_power_w=device.nominal_power_w * (1 + noise_fraction * rng.uniform(-1, 1)),
            sleep_power_w=device.sleep_power_w,
            board_offsets_c=[noise_fraction * 100 * rng.uniform(-1, 1) for _ in range(BOARDS)],
            ramp_seconds=ramp_seconds,
            thermal_tau_seconds=thermal_tau_seconds,
            ambient_c=ambient_c,
            clock=clock,
        )
        self._pools = [_SimPool(p.url, p.user, p.password) for p in pools]
        self._dead_urls: set[str] = set()  # pools down upstream (also for pools added later)
        self._priority = list(range(len(self._pools)))
        self._asleep = False
        self.power_level = 1.0
        self._handlers: dict[str, Callable[[str | None], Reply]] = {
            "summary": self._summary,
            "power": self._power,
            "pools": self._pools_reply,
            "stats": self._stats,
            "version": self._version,
            "config": self._config,
            "switchpool": self._switchpool,
            "enablepool": self._enablepool,
            "disablepool": self._disablepool,
            "addpool": self._addpool,
        }
        self.luxos = SimLuxos(self, session_seed)
        self._handlers.update(self.luxos.handlers())
        self.reports_power = True

    def become_stock_bmminer(self) -> None:
        """Play stock Antminer firmware: no power reading, no LuxOS commands, no CONFIG mode."""
        self.reports_power = False
        for name in ("power", *self.luxos.handlers()):
            self._handlers.pop(name, None)
        self._handlers["config"] = self._stock_config

    def become_braiins_os(self) -> None:
        """Play Braiins OS on port 4028: BOSminer version, no LuxOS commands, no CONFIG mode.

        Control then goes through the gRPC API (drivers/sim/braiins_grpc.py); the
        cgminer-compatible API stays the read path (summary, pools, stats, power).
        """
        for name in self.luxos.handlers():
            self._handlers.pop(name, None)
        self._handlers["config"] = self._stock_config
        self.version_extra = {"BOSminer": "bosminer-plus-tuner 0.9.0"}

    def _stock_config(self, _parameter: str | None) -> Reply:
        row = {"ASC Count": BOARDS, "Pool Count": len(self._pools), "Strategy": "Failover"}
        return self._ok(33, "CGMiner config", "CONFIG", [row])

    # ---- physics -------------------------------------------------------------------------

    def hashrate_hs(self, at: float | None = None) -> float:
        """Hash rate in H/s at ``at`` (default: now)."""
        return self.physics.hashrate_hs(at)

    def power_w(self, at: float | None = None) -> float:
        """Input power in W at ``at`` (default: now)."""
        return self.physics.power_w(at)

    def chip_temperature_c(self, at: float | None = None) -> float:
        """Average chip temperature (before per-board offsets) at ``at`` (default: now)."""
        return self.physics.chip_temperature_c(at)

    def _retarget(self, asleep: bool) -> None:
        self.physics.retarget(0.0 if asleep else self.power_level)
        self._asleep = asleep

    def set_power_level(self, power_level: float) -> None:
        """Run at a share of stock power (power targets); takes effect now when awake."""
        self.power_level = power_level
        if not self._asleep:
            self.physics.retarget(power_level)

    def reboot(self) -> None:
        """Restart as a reboot would, at once: uptime (``Elapsed``) starts again from 0."""
        self.physics.started_at = self._clock()
        self.reboots += 1

    def set_asleep(self, asleep: bool) -> None:
        """Put the miner to sleep or wake it, as curtail would (test and demo helper)."""
        if asleep != self._asleep:
            self._retarget(asleep)

    def replace_pools(self, pools: Sequence[Pool]) -> None:
        """Replace the pool list, first pool first (Whatsminer's update_pools)."""
        self._pools = [_SimPool(p.url, p.user, p.password) for p in pools]
        self._priority = list(range(len(self._pools)))

    def set_pool_alive(self, index: int, alive: bool) -> None:
        """Make pool ``index`` reachable or not (a dead pool is never the active one)."""
        self._pools[index].alive = alive

    def set_pool_url_alive(self, url: str, alive: bool) -> None:
        """Make the pool at ``url`` reachable or not, as an outage upstream would (pools added later too)."""
        if alive:
            self._dead_urls.discard(url)
        else:
            self._dead_urls.add(url)
        for pool in self._pools:
            if pool.url == url:
                pool.alive = alive

    @property
    def asleep(self) -> bool:
        """True once curtail sleep was accepted (until wakeup)."""
        return self._asleep

    def active_pool_index(self) -> int | None:
        """Return the pool hashing now: highest-priority enabled alive pool; None asleep."""
        if self._asleep:
            return None
        for index in self._priority:
            if self._pools[index].enabled and self._pools[index].alive:
                return index
        return None

    def state(self, at: float | None = None) -> SimState:
        """Everything a client can observe, at ``at`` (default: now)."""
        now = self.physics.now(at)
        active = self.active_pool_index()
        return SimState(
            asleep=self._asleep,
            active_pool_url=None if active is None else self._pools[active].url,
            power_w=self.power_w(now),
            hashrate_hs=self.hashrate_hs(now),
            chip_temperature_c=float(
                max(max(chip) for chip, _ in self.physics.board_temperatures_c(now))
            ),
        )

    # ---- replies -------------------------------------------------------------------------

    def _status(self, severity: str, code: int, message: str) -> Reply:
        entry = {
            "STATUS": severity,
            "When": int(self._wall_clock()),
            "Code": code,
            "Msg": message,
            "Description": self.description,
        }
        return {"STATUS": [entry], "id": 1}

    def _ok(
        self, code: int, message: str, section: str | None = None, rows: list[Reply] | None = None
    ) -> Reply:
        reply = self._status("S", code, message)
        if section is not None:
            reply[section] = rows or []
            reply["id"] = reply.pop("id")  # cgminer puts id last
        return reply

    def _error(self, code: int, message: str) -> Reply:
        return self._status("E", code, message)

    def _summary(self, _parameter: str | None) -> Reply:
        now = self._clock()
        elapsed = max(0.0, now - self.physics.started_at)
        hashes = self.physics.hashes(now)
        average_hs = hashes / elapsed if elapsed > 0 else self.hashrate_hs(now)
        unit, scale = (self.hashrate_unit, 1e6 if self.hashrate_unit == "MHS" else 1e9)
        accepted = int(hashes / (65536 * 2**32))
        row = {
            "Elapsed": int(elapsed),
            f"{unit} av": round(average_hs / scale, 2),
            f"{unit} 5s": round(self.hashrate_hs(now) / scale, 2),
            "Found Blocks": 0,
            "Accepted": accepted,
            "Rejected": accepted // 500,
            "Hardware Errors": 0,
        }
        if self.reports_power:
            row["Power"] = round(self.power_w(now))
        return self._ok(11, "Summary", "SUMMARY", [row])

    def _power(self, _parameter: str | None) -> Reply:
        row = {"PSU": not self._asleep, "Watts": round(self.power_w())}
        return self._ok(306, "Power usage", "POWER", [row])

    def _pools_reply(self, _parameter: str | None) -> Reply:
        active = self.active_pool_index()
        rows = []
        for index, pool in enumerate(self._pools):
            status = "Disabled" if not pool.enabled else "Alive" if pool.alive else "Dead"
            rows.append(
                {
                    "POOL": index,
                    "URL": pool.url,
                    "Status": status,
                    "Priority": self._priority.index(index),
                    "Quota": 1,
                    "User": pool.user,
                    "Stratum Active": index == active,
                    "Stratum URL": pool.url.partition("://")[2] or pool.url,
                }
            )
        return self._ok(7, f"{len(rows)} Pool(s)", "POOLS", rows)

    def _stats(self, _parameter: str | None) -> Reply:
        now = self._clock()
        identity = {
            "BMMiner": "1.0.0",
            "Miner": "sim",
            "CompileTime": "",
            "Type": f"Antminer {self.device.model}",
        }
        hashrate_ghs = self.hashrate_hs(now) / 1e9
        thermal_load = (self.chip_temperature_c(now) - self.physics.ambient_c) / CHIP_RISE_C
        fan_rpm = round(1500 + 4500 * min(1.0, max(0.0, thermal_load)))
        detail: Reply = {
            "STATS": 0,
            "ID": "BTM_SOC0",
            "Elapsed": int(max(0.0, now - self.physics.started_at)),
            "GHS 5s": round(hashrate_ghs, 2),
            "GHS av": round(
                self.physics.hashes(now) / max(1e-9, now - self.physics.started_at) / 1e9, 2
            ),
            "miner_count": BOARDS,
            "fan_num": FANS,
            "temp_num": BOARDS,
            "total_rateideal": round(self.device.nominal_hashrate_hs / 1e9, 2),
            "rate_unit": "GH",
        }
        for fan in range(1, FANS + 1):
            detail[f"fan{fan}"] = fan_rpm + 30 * fan
        for board, (chip, pcb) in enumerate(self.physics.board_temperatures_c(now), start=1):
            detail[f"temp{board}"] = max(pcb)
            detail[f"temp2_{board}"] = max(chip)
            detail[f"temp_pcb{board}"] = "-".join(str(v) for v in pcb)
            detail[f"temp_chip{board}"] = "-".join(str(v) for v in chip)
            detail[f"chain_rate{board}"] = round(hashrate_ghs / BOARDS, 2)
        return self._ok(70, "CGMiner stats", "STATS", [identity, detail])

    def _version(self, _parameter: str | None) -> Reply:
        row = {
            "CGMiner": "4.11.1",
            "API": "3.7",
            "Miner": "sim",
            "Type": f"Antminer {self.device.model}",
            **self.version_extra,
        }
        return self._ok(22, "CGMiner versions", "VERSION", [row])

    def _config(self, _parameter: str | None) -> Reply:
        row = {
            "ASC Count": BOARDS,
            "Pool Count": len(self._pools),
            "Strategy": "Failover",
            "CurtailMode": "Sleep" if self._asleep else "None",
            "IsPowerSupplyOn": not self._asleep,
            "Model": f"Antminer {self.device.model}",
        }
        return self._ok(33, "CGMiner config", "CONFIG", [row])

    def _pool_index(self, parameter: str | None) -> int | Reply:
        """Return the pool number in ``parameter``, or the cgminer error reply."""
        if parameter is None or not parameter.strip():
            return self._error(25, "Missing pool id parameter")
        try:
            index = int(parameter.strip())
        except ValueError:
            index = -1
        if not 0 <= index < len(self._pools):
            return self._error(
                26, f"Invalid pool id {parameter} - range is 0 - {len(self._pools) - 1}"
            )
        return index

    def _switchpool(self, parameter: str | None) -> Reply:
        index = self._pool_index(parameter)
        if not isinstance(index, int):
            return index
        self._pools[index].enabled = True
        self._priority.remove(index)
        self._priority.insert(0, index)
        return self._ok(27, f"Switching to pool {index}:'{self._pools[index].url}'")

    def _enablepool(self, parameter: str | None) -> Reply:
        index = self._pool_index(parameter)
        if not isinstance(index, int):
            return index
        pool = self._pools[index]
        if pool.enabled:
            return self._status("I", 49, f"Pool {index}:'{pool.url}' already enabled")
        pool.enabled = True
        return self._ok(47, f"Enabling pool {index}:'{pool.url}'")

    def _disablepool(self, parameter: str | None) -> Reply:
        index = self._pool_index(parameter)
        if not isinstance(index, int):
            return index
        pool = self._pools[index]
        if not pool.enabled:
            return self._status("I", 50, f"Pool {index}:'{pool.url}' already disabled")
        if sum(p.enabled for p in self._pools) == 1:
            return self._error(51, f"Cannot disable last active pool {index}:'{pool.url}'")
        pool.enabled = False
        return self._ok(48, f"Disabling pool {index}:'{pool.url}'")

    def _addpool(self, parameter: str | None) -> Reply:
        if parameter is None or not parameter.strip():
            return self._error(52, "Missing addpool details")
        fields = _split_escaped(parameter)
        if len(fields) < 2 or not fields[0].strip() or not fields[1].strip():
            return self._error(53, f"Invalid addpool details '{parameter}'")
        password = fields[2] if len(fields) > 2 else ""
        url = fields[0].strip()
        self._pools.append(
            _SimPool(url, fields[1].strip(), password, alive=url not in self._dead_urls)
        )
        index = len(self._pools) - 1
        self._priority.append(index)
        return self._ok(55, f"Added pool {index}: '{fields[0].strip()}'")

    def handle(self, command: str, parameter: str | None = None) -> Reply:
        """Answer one command (or a ``+``-joined set of report commands) without the network."""
        self.command_counts[command] += 1
        if "+" in command:
            names = list(dict.fromkeys(name for name in command.split("+") if name))
            if not names:
                return self._error(24, "Missing JSON 'command'")
            joined: Reply = {}
            for name in names:
                if name in REPORT_COMMANDS and name in self._handlers:
                    joined[name] = [self._handlers[name](None)]
                elif name in self._handlers:
                    joined[name] = [
                        self._error(45, f"Access denied to '{name}' command: not a report")
                    ]
                else:
                    joined[name] = [self._error(14, "Invalid command")]
            joined["id"] = 1
            return joined
        handler = self._handlers.get(command)
        if handler is None:
            return self._error(14, "Invalid command")
        return handler(parameter)

    def handle_request(self, raw: bytes) -> Reply:
        """Decode one JSON request and answer it (cgminer's replies to bad requests included)."""
        try:
            request = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return self._error(23, "Invalid JSON")
        if not isinstance(request, dict):
            return self._error(23, "Invalid JSON")
        command = request.get("command")
        if not isinstance(command, str) or not command:
            return self._error(24, "Missing JSON 'command'")
        parameter = request.get("parameter")
        return self.handle(command, None if parameter is None else str(parameter))

    def respond(self, raw: bytes) -> bytes:
        """Answer one raw request (the TCP base class frames and sends it)."""
        return json.dumps(self.handle_request(raw)).encode()

    async def __aenter__(self) -> SimMiner:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()


class SimServer(Protocol):
    """A simulated server that a site starts and stops with its miner."""

    async def start(self) -> None:
        """Listen."""
        ...

    async def stop(self) -> None:
        """Stop listening (idempotent)."""
        ...


class Simulator(Protocol):
    """A firmware's simulator, named by its ASIC registry entry (``simulator``).

    Returns the miner serving the cgminer-style API on ``device.address`` and,
    where the firmware has a second API, its server (on ``companion_port``, 0 = free).
    """

    def __call__(
        self, device: Device, pools: Sequence[Pool], *, companion_port: int, **kwargs: Any
    ) -> tuple[SimMiner, SimServer | None]:
        """The miner (``kwargs`` go to SimMiner) and the companion server, if any."""
        ...


def simulate(
    device: Device, pools: Sequence[Pool], *, companion_port: int = 0, **kwargs: Any
) -> tuple[SimMiner, SimServer | None]:
    """The cgminer simulator (with the LuxOS commands); no companion server."""
    return SimMiner(device, pools, **kwargs), None
