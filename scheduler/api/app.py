"""HTTP API (FastAPI): health, fleet, plan, market, decisions, operator control; ``serve`` runs it.

Handlers are ``async def`` on purpose: they run on the daemon's event loop,
the same thread that writes FleetState, so a request never reads the state
half-way through an update.  Every route but /healthz needs a bearer token
(scheduler.api.auth.ROUTE_ROLES; checked by scheduler.api.security before routing).
Changes go through scheduler.control.service, which commits each with its audit row
before the answer is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Generator
from typing import TYPE_CHECKING, Literal, Protocol

import uvicorn
from fastapi import FastAPI, Response
from pydantic import BaseModel, Field

from scheduler.core.model import MARKET_INPUTS, TERA, Plan, Reading
from scheduler.core.state import FleetState
from scheduler.observability.metrics import Metrics, hashprice_from_market

if TYPE_CHECKING:
    from scheduler.api.routes import ApiSecurity, ControlView

logger = logging.getLogger(__name__)

STARTUP_POLL_SECONDS = 0.005


class ApiView(Protocol):
    """What the API reads from the daemon."""

    state: FleetState
    metrics: Metrics

    def current_plan(self) -> Plan | None:
        """Return the latest plan, or None before the first one."""
        ...

    def clock(self) -> float:
        """Return the loop's monotonic time in seconds (the clock sample ages are measured on)."""
        ...


class Health(BaseModel):
    """Liveness answer."""

    status: Literal["ok"] = "ok"


class DeviceView(BaseModel):
    """One device as the loop sees it; sample fields are null unless the device is reachable."""

    id: str
    kind: str
    model: str
    address: str
    port: int
    reachable: bool
    last_error: str | None = Field(description="why the last poll failed, if it did")
    workload: str | None = Field(description="observed workload, e.g. mine(main) or sleep")
    power_w: float | None
    hashrate_ths: float | None
    temperature_c: float | None
    sample_age_seconds: float | None
    desired_workload: str | None = Field(description="workload the scheduler wants")


class ReadingView(BaseModel):
    """One market input with its age and where it came from."""

    value: float
    age_seconds: float
    source: str


class MarketView(BaseModel):
    """The latest market inputs (null until a good value has arrived) and the hashprice."""

    btc_price_usd: ReadingView | None
    difficulty: ReadingView | None
    block_subsidy_btc: ReadingView | None
    fees_btc_per_block: ReadingView | None
    power_price_usd_per_mwh: ReadingView | None
    hashprice_usd_per_th_day: float | None = Field(
        description="USD per TH/s per day net of pool fee; null if not computable"
    )
    pools_up: dict[str, bool] = Field(
        default_factory=dict,
        description="pool -> up, from the miners' pool reports (absent: not reported yet, up)",
    )


class AssignmentView(BaseModel):
    """One device's assignment in the current plan."""

    device: str
    workload: str
    reason: str
    expected_margin_usd_per_hour: float


def _reading_view(reading: Reading | None, now: float) -> ReadingView | None:
    """Convert a Reading to its API form (None stays None)."""
    if reading is None:
        return None
    return ReadingView(
        value=reading.value,
        age_seconds=max(0.0, now - reading.observed_at),
        source=reading.source,
    )


def device_views(state: FleetState, now: float) -> list[DeviceView]:
    """Return every device of the state, sorted by id, as API views."""
    views = []
    for device_id in sorted(state.devices):
        device = state.devices[device_id]
        status = state.status.get(device_id)
        sample = state.samples.get(device_id)
        reachable = status is not None and status.reachable
        trusted = sample if reachable else None
        desired = state.desired.get(device_id)
        views.append(
            DeviceView(
                id=device.id,
                kind=device.kind.value,
                model=device.model,
                address=device.address,
                port=device.port,
                reachable=reachable,
                last_error=None if status is None else status.last_error,
                workload=None if trusted is None else str(trusted.workload),
                power_w=None if trusted is None else trusted.power_w,
                hashrate_ths=None if trusted is None else trusted.hashrate_hs / TERA,
                temperature_c=None if trusted is None else trusted.temperature_c,
                sample_age_seconds=(
                    None if trusted is None else max(0.0, now - trusted.observed_at)
                ),
                desired_workload=None if desired is None else str(desired),
            )
        )
    return views


def market_view(state: FleetState, now: float) -> MarketView:
    """Return the market inputs with ages, and the hashprice when it can be computed."""
    readings = {name: _reading_view(getattr(state.market, name), now) for name in MARKET_INPUTS}
    return MarketView(
        **readings,
        hashprice_usd_per_th_day=hashprice_from_market(state.market, state.pool_fee),
        pools_up=dict(sorted(state.pools_up.items())),
    )


def plan_view(plan: Plan | None) -> list[AssignmentView]:
    """Return the plan's assignments in plan order (empty before the first plan)."""
    if plan is None:
        return []
    return [
        AssignmentView(
            device=a.device_id,
            workload=str(a.workload),
            reason=a.reason,
            expected_margin_usd_per_hour=a.expected_margin_usd_per_hour,
        )
        for a in plan.assignments
    ]


def create_app(view: ControlView, security: ApiSecurity) -> FastAPI:
    """Build the FastAPI application reading from ``view``, every route behind ``security``."""
    from scheduler.api.dr import add_dr_routes
    from scheduler.api.routes import add_control_routes, secure

    app = FastAPI(
        title="wattmux",
        summary="Schedules mining ASICs and GPU nodes by power price and network economics.",
        version="0.1.0",
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )

    @app.get("/healthz", response_model=Health, tags=["health"])
    async def healthz() -> Health:
        """Report that the process serves requests."""
        return Health()

    @app.get("/v1/devices", response_model=list[DeviceView], tags=["fleet"])
    async def devices() -> list[DeviceView]:
        """List every device with its observed and desired workload."""
        return device_views(view.state, view.clock())

    @app.get("/v1/market", response_model=MarketView, tags=["market"])
    async def market() -> MarketView:
        """Return the latest market inputs with their ages and the hashprice."""
        return market_view(view.state, view.clock())

    @app.get("/v1/plan", response_model=list[AssignmentView], tags=["plan"])
    async def plan() -> list[AssignmentView]:
        """Return the current plan's assignments (empty before the first plan)."""
        return plan_view(view.current_plan())

    @app.get(
        "/metrics",
        response_class=Response,
        tags=["metrics"],
        responses={200: {"content": {view.metrics.content_type: {}}}},
    )
    async def metrics() -> Response:
        """Return the Prometheus metrics in the text exposition format."""
        return Response(content=view.metrics.render(), media_type=view.metrics.content_type)

    add_control_routes(app, view)
    add_dr_routes(app, view)
    secure(app, view, security)
    return app


class _QuietServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to its owner."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        """Install nothing: the daemon owns signals and stops the server itself."""
        yield


async def _bind(host: str, port: int) -> socket.socket:
    """Create a listening-ready TCP socket bound to host:port (port 0 picks a free one)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    if not infos:
        raise OSError(f"cannot resolve {host!r}")
    family, sock_type, proto, _, address = infos[0]
    sock = socket.socket(family, sock_type, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    return sock


def bound_port(server: uvicorn.Server) -> int:
    """Return the TCP port a started server listens on (useful with port 0)."""
    for listener in server.servers:
        for sock in listener.sockets:
            return int(sock.getsockname()[1])
    raise RuntimeError("server is not listening")


@contextlib.asynccontextmanager
async def serve(
    app: FastAPI,
    host: str,
    port: int,
    *,
    shutdown_timeout_seconds: int = 5,
    tls_cert_file: str | None = None,
    tls_key_file: str | None = None,
) -> AsyncIterator[uvicorn.Server]:
    """Run the app under uvicorn as a task while the block runs; stop it on exit.

    The socket is bound before uvicorn starts, so a busy port raises OSError
    here.  No signal handlers are installed and logging is left as configured.
    """
    sock = await _bind(host, port)
    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=shutdown_timeout_seconds,
        ssl_certfile=tls_cert_file,
        ssl_keyfile=tls_key_file,
    )
    server = _QuietServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="api.serve")
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("uvicorn stopped before it started")
            await asyncio.sleep(STARTUP_POLL_SECONDS)
        logger.info("API listening on %s:%d", host, bound_port(server))
        yield server
    finally:
        server.should_exit = True
        try:
            await task
        finally:
            sock.close()
