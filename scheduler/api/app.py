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
import functools
import logging
import socket
from collections.abc import AsyncIterator, Callable, Generator, Sequence

import uvicorn
from fastapi import FastAPI, Response

from scheduler.api.connections import ACCEPT_BACKLOG, ConnectionGuard, ConnectionLimits
from scheduler.api.dr import add_dr_routes
from scheduler.api.ops_routes import add_ops_routes
from scheduler.api.routes import add_control_routes
from scheduler.api.views import (
    AssignmentView,
    ControlView,
    DeviceView,
    Health,
    MarketView,
    device_views,
    market_view,
    plan_view,
)
from scheduler.api.wiring import ApiSecurity, secure
from scheduler.version import wattmux_version

logger = logging.getLogger(__name__)

STARTUP_POLL_SECONDS = 0.005


def create_app(
    view: ControlView,
    security: ApiSecurity,
    extensions: Sequence[Callable[[FastAPI], None]] = (),
) -> FastAPI:
    """Build the FastAPI application reading from ``view``, every route behind ``security``.

    ``extensions`` add routes of their own (the console) before the security check,
    so their routes need a rule in ROUTE_ROLES like every other.
    """
    app = FastAPI(
        title="wattmux",
        summary="Schedules mining ASICs and GPU nodes by power price and network economics.",
        version=wattmux_version(),
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
    add_ops_routes(app, view)
    for extend in extensions:
        extend(app)
    secure(app, view, security)
    return app


class _QuietServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to its owner."""

    connection_guard: ConnectionGuard
    handshake_timeout_seconds: float | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        """Install nothing: the daemon owns signals and stops the server itself."""
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """Start listening; under TLS, a handshake must end within the head deadline.

        asyncio gives a TLS handshake 60 s, and the connection guard sees a
        connection only once its handshake is done: without this, sockets that
        connect and never finish the handshake hold descriptors uncounted.
        uvicorn has no setting for it, so its ``create_server`` call gets one.
        """
        timeout = self.handshake_timeout_seconds
        if self.config.ssl is None or timeout is None:
            await super().startup(sockets)
            return
        loop = asyncio.get_running_loop()
        loop.create_server = functools.partial(  # type: ignore[method-assign]
            loop.create_server, ssl_handshake_timeout=timeout
        )
        try:
            await super().startup(sockets)
        finally:
            del loop.create_server  # the loop's own method again


class ListenError(OSError):
    """The API could not bind its address: ``strerror`` reads "cannot listen on HOST:PORT: why"."""


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
        raise ListenError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from exc
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
    limits: ConnectionLimits | None = None,
) -> AsyncIterator[_QuietServer]:
    """Run the app under uvicorn as a task while the block runs; stop it on exit.

    The socket is bound before uvicorn starts, so a busy port raises OSError
    here.  No signal handlers are installed and logging is left as configured.
    Connections are bounded and timed by a ConnectionGuard (``limits``, default
    ConnectionLimits()); the server's guard is ``server.connection_guard``.
    """
    sock = await _bind(host, port)
    guard = ConnectionGuard(limits if limits is not None else ConnectionLimits())
    config = uvicorn.Config(
        app,
        http=guard.protocol_class(),
        log_config=None,
        access_log=False,
        lifespan="off",
        backlog=ACCEPT_BACKLOG,
        timeout_keep_alive=guard.limits.keep_alive_seconds,
        timeout_graceful_shutdown=shutdown_timeout_seconds,
        ssl_certfile=tls_cert_file,
        ssl_keyfile=tls_key_file,
    )
    server = _QuietServer(config)
    server.connection_guard = guard
    server.handshake_timeout_seconds = guard.limits.header_timeout_seconds
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
