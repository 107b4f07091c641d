"""The web interface of a simulated Braiins OS miner: its page and its GraphQL API.

Real Braiins OS serves its web UI on port 80: the page's title names "Braiins
OS" (how scanners tell the firmware from the page), and ``POST /graphql``
answers GraphQL.  This server executes the queries clients send against a
schema of the part of Braiins OS 25.05's GraphQL API that clients read
(graphql-core), so a selection is answered field by field as a GraphQL server
does and an unknown field gets a GraphQL error object
(``{"errors": [{"message": ...}]}``):

- identity, readable without logging in: ``bosminer.info.modelName``,
  ``bos.info.version.full``, ``bos.hostname``;
- ``mutation { auth { login(username, password) { ... on VoidResult { void } } } }``:
  right credentials set the ``session_id`` cookie (``Set-Cookie``), wrong ones
  answer a ``LoginError`` and no cookie;
- with that cookie: ``bosminer.info`` (``workSolver`` with ``realHashrate.mhs5S``,
  ``nominalMhs`` and one ``childSolvers`` entry per hashboard with ``hwDetails``
  and ``temperatures`` named ``MAX_BOARD``/``MAX_CHIP``/``INLET``/``OUTLET`` as
  25.05 names them; ``fans`` with ``name``/``rpm``/``speed``;
  ``summary.power.{limitW, approxConsumptionW}``; ``poolGroups``),
  ``bosminer.config`` (pool groups with their quota strategy, autotuning),
  ``bosminer.metadata.autotuning.powerTarget`` and ``events.appeals``; without
  it those fields are errors ("Unauthorized").

Every value is the simulated miner's own state, computed as for its cgminer and
gRPC replies (drivers/sim/boser.py).  Requests are bounded in size and logged
in ``requests`` (method and path, GraphQL query text) for tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import Callable
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from graphql import GraphQLSchema

    from drivers.sim.miner import SimMiner

MAX_BODY_BYTES = 64 * 1024
MAX_HEADER_LINES = 100
MAX_SESSIONS = 64  # oldest sessions are forgotten beyond this
PAGE = (
    "<!DOCTYPE html><html><head><title>Braiins OS</title></head>"
    '<body><div id="root">Braiins OS</div></body></html>'
)
INLET_SHARE = 0.5  # inlet sensor: half way from ambient to the PCB's hottest point
FAN_FULL_RPM = 6500  # fan speed at 100 % (the gRPC target_speed_ratio uses the same)
SDL = """
type Query { bos: Bos  bosminer: Bosminer  events: Events }
type Mutation { auth: AuthMutation }
type AuthMutation { login(username: String!, password: String!): LoginResult }
union LoginResult = VoidResult | LoginError
type VoidResult { void: Boolean }
type LoginError { message: String }
type Bos { hostname: String  faultLight: Boolean  info: BosInfo  uptime: Uptime }
type BosInfo { version: BosVersion }
type BosVersion { full: String }
type Uptime { durationS: Int }
type Bosminer { info: BosminerInfo  config: BosminerConfigResult  metadata: Metadata }
type BosminerInfo {
  modelName: String  workSolver: WorkSolver  fans: [Fan]  summary: Summary
  poolGroups: [PoolGroup]
}
type WorkSolver {
  name: String  realHashrate: RealHashrate  nominalMhs: Float  childSolvers: [WorkSolver]
  hwDetails: HwDetails  temperatures: [TemperatureReading]
}
type RealHashrate { mhs5S: Float  mhs1M: Float  mhs15M: Float }
type HwDetails { chips: Int  frequencyMhz: Float  voltageV: Float  hbSerialNumber: String }
type TemperatureReading { name: String  degreesC: Float }
type Fan { name: String  rpm: Int  speed: Int }
type Summary { power: PowerSummary }
type PowerSummary { limitW: Int  approxConsumptionW: Int }
type PoolGroup { name: String  pools: [PoolInfo] }
type PoolInfo { url: String  user: String  status: String  active: Boolean  shares: Shares }
type Shares { acceptedSolutions: Int  rejectedSolutions: Int }
union BosminerConfigResult = BosminerConfig | ConfigError
type ConfigError { message: String }
type BosminerConfig { groups: [PoolGroupConfig]  autotuning: Autotuning }
type PoolGroupConfig { id: String  name: String  strategy: Strategy }
union Strategy = QuotaStrategy | FixedShareRatioStrategy
type QuotaStrategy { quota: Int }
type FixedShareRatioStrategy { ratio: Float }
type Autotuning { enabled: Boolean  mode: String  powerTarget: Int  hashrateTarget: Float }
type Metadata { autotuning: AutotuningMetadata }
type AutotuningMetadata { powerTarget: Range }
type Range { default: Int  min: Int  max: Int }
type Events { appeals: [Appeal] }
type Appeal { id: String  kind: String  message: String  timestamp: Int }
"""


@cache
def schema() -> GraphQLSchema:
    """The GraphQL schema (built once; graphql-core is imported only when a query comes)."""
    from graphql import build_schema

    return build_schema(SDL)


def _unauthorized(*_args: Any, **_kwargs: Any) -> Any:
    from graphql import GraphQLError

    raise GraphQLError("Unauthorized")


class SimBraiinsWeb:
    """An HTTP/1.1 server for one simulated Braiins OS miner's page and GraphQL endpoint."""

    def __init__(
        self,
        miner: SimMiner,
        *,
        port: int = 0,
        username: str = "root",
        password: str = "root",
        power_target_w: Callable[[], int] | None = None,
        power_range_w: tuple[int, int, int] | None = None,
        locate: Callable[[], bool] = lambda: False,
    ) -> None:
        nominal = round(miner.device.nominal_power_w)
        self.miner = miner
        self.requests: list[str] = []
        self.username = username
        self.password = password
        self.power_target_w = power_target_w or (lambda: nominal)
        self.power_range_w = power_range_w or (nominal, nominal, nominal)
        self.locate = locate
        self._sessions: list[str] = []
        self._requested_port = port
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def port(self) -> int:
        """The bound port (the requested one before start)."""
        if self._server is None or not self._server.sockets:
            return self._requested_port
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Listen on the miner's address (idempotent)."""
        if self._server is None:
            self._server = await asyncio.start_server(
                self._serve, self.miner.address, self._requested_port
            )

    async def stop(self) -> None:
        """Stop listening (idempotent)."""
        server, self._server = self._server, None
        for writer in list(self._writers):
            writer.transport.abort()
        if server is not None:
            server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 2)

    # ---- what the miner is doing, in the shapes of Braiins OS 25.05 ---------------------------

    def _work_solver(self, now: float) -> dict[str, Any]:
        from drivers.sim import boser
        from drivers.sim.miner import BOARDS

        miner = self.miner
        chips = boser.chips_per_board(miner.device.model)
        serial = boser.board_serial(miner)
        ambient = miner.physics.ambient_c
        children = []
        for index, (ghs, chip, pcb) in enumerate(boser.board_rows(miner, now)):
            mhs = ghs * 1e3
            inlet = ambient + INLET_SHARE * (pcb - ambient)
            children.append(
                {
                    "name": str(index + 1),
                    "realHashrate": {"mhs5S": mhs, "mhs1M": mhs, "mhs15M": mhs},
                    "nominalMhs": miner.device.nominal_hashrate_hs / 1e6 / BOARDS,
                    "hwDetails": {
                        "chips": chips,
                        "frequencyMhz": 525.0,
                        "voltageV": 13.5,
                        "hbSerialNumber": f"{serial}{index}",
                    },
                    "temperatures": [
                        {"name": "MAX_BOARD", "degreesC": float(pcb)},
                        {"name": "MAX_CHIP", "degreesC": float(chip)},
                        {"name": "INLET", "degreesC": round(inlet, 1)},
                        {"name": "OUTLET", "degreesC": float(pcb)},
                    ],
                }
            )
        mhs = miner.hashrate_hs(now) / 1e6
        return {
            "name": "",
            "realHashrate": {"mhs5S": mhs, "mhs1M": mhs, "mhs15M": mhs},
            "nominalMhs": miner.device.nominal_hashrate_hs / 1e6,
            "childSolvers": children,
        }

    def _pools(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        rows = self.miner._pools_reply(None)["POOLS"]
        pools = [
            {
                "url": row["URL"],
                "user": row["User"],
                "status": str(row["Status"]).upper(),
                "active": bool(row["Stratum Active"]),
                "shares": {
                    "acceptedSolutions": int(row.get("Accepted", 0)),
                    "rejectedSolutions": int(row.get("Rejected", 0)),
                },
            }
            for row in rows
        ]
        groups = [{"name": "default", "pools": pools}]
        config = [
            {
                "id": "0",
                "name": "default",
                "strategy": {"__typename": "QuotaStrategy", "quota": 1},
            }
        ]
        return groups, config

    def _root(self, authenticated: bool) -> dict[str, Any]:
        from drivers.sim import boser

        miner = self.miner
        now = miner.physics.now(None)
        default, low, high = self.power_range_w
        target = self.power_target_w()

        def guarded(value: Callable[[], Any]) -> Any:
            return (lambda _info: value()) if authenticated else _unauthorized

        fans = [
            {"name": str(index), "rpm": rpm, "speed": round(100 * min(1.0, rpm / FAN_FULL_RPM))}
            for index, rpm in enumerate(boser.fan_rpms(miner, now))
        ]
        uptime = int(max(0.0, now - miner.physics.started_at))
        groups, config = self._pools()
        return {
            "bos": {
                "hostname": miner.device.id,
                "info": {"version": {"full": boser.BOS_VERSION}},
                "faultLight": guarded(self.locate),
                "uptime": guarded(lambda: {"durationS": uptime}),
            },
            "bosminer": {
                "info": {
                    "modelName": f"Antminer {miner.device.model}",
                    "workSolver": guarded(lambda: self._work_solver(now)),
                    "fans": guarded(lambda: fans),
                    "summary": guarded(
                        lambda: {
                            "power": {
                                "limitW": target,
                                "approxConsumptionW": round(miner.power_w(now)),
                            }
                        }
                    ),
                    "poolGroups": guarded(lambda: groups),
                },
                "config": guarded(
                    lambda: {
                        "__typename": "BosminerConfig",
                        "groups": config,
                        "autotuning": {
                            "enabled": True,
                            "mode": "POWER_TARGET",
                            "powerTarget": target,
                            "hashrateTarget": None,
                        },
                    }
                ),
                "metadata": guarded(
                    lambda: {
                        "autotuning": {"powerTarget": {"default": default, "min": low, "max": high}}
                    }
                ),
            },
            "events": guarded(lambda: {"appeals": []}),
        }

    # ---- GraphQL over HTTP ----------------------------------------------------------------------

    def graphql(
        self, query: str, variables: dict[str, Any] | None = None, session: str | None = None
    ) -> tuple[dict[str, Any], str | None]:
        """The reply to one GraphQL request, and the session it opened (a login), if any."""
        from graphql import graphql_sync

        opened: list[str] = []

        def login(_info: Any, username: str, password: str) -> dict[str, Any]:
            if (username, password) != (self.username, self.password):
                return {"__typename": "LoginError", "message": "Invalid username or password"}
            token = secrets.token_hex(16)
            self._sessions = [*self._sessions, token][-MAX_SESSIONS:]
            opened.append(token)
            return {"__typename": "VoidResult", "void": True}

        authenticated = session is not None and session in self._sessions
        root = self._root(authenticated)
        root["auth"] = {"login": login}
        result = graphql_sync(schema(), query, root_value=root, variable_values=variables)
        reply: dict[str, Any] = {}
        if result.errors:
            reply["errors"] = [{"message": error.message} for error in result.errors]
        if result.data is not None:
            reply["data"] = result.data
        return reply, (opened[0] if opened else None)

    def answer(
        self, method: str, path: str, body: bytes, cookie: str = ""
    ) -> tuple[int, str, bytes, list[str]]:
        """Status, content type, body and extra headers for one request."""
        if method == "GET" and path in ("/", "/index.html"):
            self.requests.append(f"{method} {path}")
            return 200, "text/html", PAGE.encode(), []
        if method == "POST" and path.split("?")[0] == "/graphql":
            variables: Any = None
            try:
                request = json.loads(body)
                query = str(request["query"]) if isinstance(request, dict) else ""
                variables = request.get("variables") if isinstance(request, dict) else None
            except (ValueError, KeyError):
                query = ""
            self.requests.append(f"{method} {path} {query}")
            if not query:
                return 400, "application/json", b'{"errors":[{"message":"no query"}]}', []
            if not isinstance(variables, dict):
                variables = None
            session = _cookie(cookie, "session_id")
            reply, opened = self.graphql(query, variables, session)
            headers = [] if opened is None else [f"Set-Cookie: session_id={opened}; Path=/"]
            return 200, "application/json", json.dumps(reply).encode(), headers
        self.requests.append(f"{method} {path}")
        return 404, "text/plain", b"not found", []

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                request_line = await reader.readline()
                if not request_line:
                    break
                parts = request_line.decode("latin-1").split()
                if len(parts) < 2:
                    break
                headers: dict[str, str] = {}
                for _ in range(MAX_HEADER_LINES):
                    line = (await reader.readline()).decode("latin-1").strip()
                    if not line:
                        break
                    key, _, value = line.partition(":")
                    headers[key.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0") or 0)
                if length > MAX_BODY_BYTES:
                    break
                body = await reader.readexactly(length) if length else b""
                status, kind, payload, extra = self.answer(
                    parts[0], parts[1], body, headers.get("cookie", "")
                )
                reason = {200: "OK", 400: "Bad Request", 404: "Not Found"}[status]
                head = (
                    f"HTTP/1.1 {status} {reason}\r\nContent-Type: {kind}\r\n"
                    + "".join(f"{line}\r\n" for line in extra)
                    + f"Content-Length: {len(payload)}\r\n\r\n"
                )
                writer.write(head.encode() + payload)
                await writer.drain()
                if headers.get("connection", "").lower() == "close":
                    break
        except (asyncio.IncompleteReadError, ConnectionError, ValueError, asyncio.CancelledError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()


def _cookie(header: str, name: str) -> str | None:
    """The value of cookie ``name`` in a ``Cookie`` header, if present."""
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name and value:
            return value
    return None
