"""The console's routes on the API app: the page, its assets, login/logout, table, history, events.

``console_routes(hub, security)`` returns an extension for
``scheduler.api.app.create_app``.  The page and its assets need no token (they
hold no data); ``POST /console/login`` exchanges a bearer token for a session
cookie; every data route and the existing /v1 routes then accept the cookie
(scheduler.api.security), changes only with the CSRF token.  Assets are read
from the package once, served gzip-compressed with an ETag, under a
Content-Security-Policy that allows nothing from elsewhere.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from scheduler.api.auth import Principal, RateLimiter
from scheduler.api.security import PRINCIPAL
from scheduler.api.sessions import SESSION_COOKIE, SessionStore, cookie_value
from scheduler.api.wiring import ApiSecurity
from scheduler.console.hub import HEARTBEAT_SECONDS, ConsoleHub
from scheduler.store.operator import ApiAuditEntry
from scheduler.store.sqlite import StoreError

log = logging.getLogger(__name__)

TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
}
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}
STREAM_CHECK_SECONDS = 1.0


class LoginRequest(BaseModel):
    """A bearer token to exchange for a session."""

    model_config = ConfigDict(extra="forbid")
    token: str = Field(min_length=1, max_length=256)


class _Asset:
    def __init__(self, name: str, body: bytes) -> None:
        self.name = name
        self.body = body
        self.gzipped = gzip.compress(body, compresslevel=9, mtime=0)
        self.etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
        suffix = name[name.rfind(".") :]
        self.media_type = TYPES.get(suffix, "application/octet-stream")


def load_assets() -> dict[str, _Asset]:
    """Every file under scheduler/console/static, read once."""
    root = resources.files("scheduler.console").joinpath("static")
    assets = {}
    for entry in root.iterdir():
        if entry.is_file():
            assets[entry.name] = _Asset(entry.name, entry.read_bytes())
    return assets


def _accepts_gzip(request: Request) -> bool:
    return "gzip" in request.headers.get("accept-encoding", "").lower()


def _asset_response(request: Request, asset: _Asset) -> Response:
    headers = {
        **SECURITY_HEADERS,
        "etag": asset.etag,
        "cache-control": "no-cache",
        "vary": "accept-encoding",
    }
    if request.headers.get("if-none-match") == asset.etag:
        return Response(status_code=304, headers=headers)
    if _accepts_gzip(request):
        headers["content-encoding"] = "gzip"
        return Response(asset.gzipped, media_type=asset.media_type, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)


def console_routes(
    hub: ConsoleHub,
    security: ApiSecurity,
    *,
    wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Callable[[FastAPI], None]:
    """The extension that adds the console to the API app."""
    sessions = security.sessions if security.sessions is not None else SessionStore()
    failed_logins = RateLimiter(per_minute=10.0, burst=10, max_keys=4096)
    assets = load_assets()
    view = hub.view

    def audit(request: Request, principal: Principal | None, status: int, result: str) -> None:
        control = view.control
        request.state.audited = True
        if control is None:
            return
        client = request.client
        entry = ApiAuditEntry(
            at=wall_clock(),
            principal=principal.name if principal else "anonymous",
            role=principal.role.label if principal else "none",
            remote=f"{client.host}:{client.port}" if client else "unknown",
            method=request.method,
            path=request.url.path[:512],
            before="null",
            after="null",
            result=result[:512],
            status_code=status,
        )
        try:
            control.store.record_api_audit(entry)
        except StoreError as exc:
            log.error("cannot write the audit row of %s: %s", entry.path, exc)

    def session_of(request: Request) -> tuple[str, Any]:
        session_id = cookie_value(request.scope.get("headers", ()))
        return session_id, sessions.get(session_id) if session_id else None

    def add(app: FastAPI) -> None:
        @app.get("/console", include_in_schema=False)
        async def console_page(request: Request) -> Response:
            return _asset_response(request, assets["index.html"])

        @app.get("/console/static/{name}", include_in_schema=False)
        async def console_asset(name: str, request: Request) -> Response:
            asset = assets.get(name)
            if asset is None or name == "index.html":
                raise HTTPException(404, "no such file")
            return _asset_response(request, asset)

        @app.post("/console/login", include_in_schema=False)
        async def login(body: LoginRequest, request: Request) -> Response:
            client = request.client
            address = client.host if client else "unknown"
            principal = security.authenticator.authenticate(body.token)
            if principal is None:
                wait = failed_logins.take(address)
                status = 429 if wait > 0 else 401
                audit(request, None, status, "rejected: console login with a wrong token")
                detail = "too many failed logins; wait" if wait > 0 else "wrong token"
                headers = {"retry-after": str(max(1, round(wait + 0.5)))} if wait > 0 else {}
                return JSONResponse({"detail": detail}, status_code=status, headers=headers)
            session_id, session = sessions.create(principal)
            audit(request, principal, 200, "console login")
            response = JSONResponse(
                {
                    "name": principal.name,
                    "role": principal.role.label,
                    "csrf": session.csrf,
                    "expires_in": round(sessions.seconds_left(session)),
                }
            )
            response.set_cookie(
                SESSION_COOKIE,
                session_id,
                max_age=int(sessions.lifetime_seconds),
                path="/",
                httponly=True,
                samesite="strict",
                secure=request.url.scheme == "https",
            )
            return response

        @app.post("/console/logout", include_in_schema=False)
        async def logout(request: Request) -> Response:
            session_id, _ = session_of(request)
            principal = getattr(request.state, PRINCIPAL, None)
            sessions.revoke(session_id)
            audit(request, principal, 200, "console logout")
            response = JSONResponse({"logged_out": True})
            response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
            return response

        @app.get("/console/api/me", include_in_schema=False)
        async def me(request: Request) -> dict[str, Any]:
            principal: Principal = getattr(request.state, PRINCIPAL)
            _, session = session_of(request)
            return {
                "name": principal.name,
                "role": principal.role.label,
                "csrf": None if session is None else session.csrf,
                "expires_in": None if session is None else round(sessions.seconds_left(session)),
            }

        @app.get("/console/api/fleet", include_in_schema=False)
        async def fleet(request: Request) -> Response:
            plain, packed = hub.fleet_body()
            headers = {"cache-control": "no-store", "vary": "accept-encoding"}
            if _accepts_gzip(request):
                headers["content-encoding"] = "gzip"
                return Response(packed, media_type="application/json", headers=headers)
            return Response(plain, media_type="application/json", headers=headers)

        @app.get("/console/api/history", include_in_schema=False)
        async def history() -> Response:
            return Response(
                hub.history_body(),
                media_type="application/json",
                headers={"cache-control": "no-store"},
            )

        @app.get("/console/api/events", include_in_schema=False)
        async def events(request: Request) -> Response:
            queue = hub.subscribe()
            if queue is None:
                raise HTTPException(503, "too many open consoles")
            session_id, session = session_of(request)

            async def stream() -> AsyncIterator[bytes]:
                try:
                    first = {"v": hub.version, "summary": hub.summary}
                    yield (
                        b"retry: 2000\nevent: hello\ndata: " + json.dumps(first).encode() + b"\n\n"
                    )
                    idle = 0.0
                    while True:
                        try:
                            event = await asyncio.wait_for(queue.get(), STREAM_CHECK_SECONDS)
                        except TimeoutError:
                            idle += STREAM_CHECK_SECONDS
                            event = None
                        if session is not None and sessions.get(session_id) is None:
                            yield b"event: expired\ndata: {}\n\n"
                            return
                        if event == b"":
                            return
                        if event is None:
                            if idle >= HEARTBEAT_SECONDS:
                                idle = 0.0
                                yield b": ping\n\n"
                            continue
                        idle = 0.0
                        yield event
                finally:
                    hub.unsubscribe(queue)

            headers = {"cache-control": "no-store", "x-accel-buffering": "no"}
            return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)

    return add
