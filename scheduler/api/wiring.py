"""The API's security wiring: which tokens, rate limit and body bound, and the middleware in front.

``secure`` puts SecurityMiddleware (scheduler.api.security) in front of an app
and refuses to build one with a route that has no rule in ROUTE_ROLES;
``security_from_config`` reads the tokens and bounds from the config.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from scheduler.api.auth import ROUTE_ROLES, Authenticator, RateLimiter, Role, TokenEntry
from scheduler.api.security import RefusalAudit, SecurityMiddleware
from scheduler.api.sessions import SessionStore
from scheduler.api.views import ControlView
from scheduler.config.schema import WattmuxConfig

MAX_REFUSAL_ADDRESSES = 4096
"""Client addresses whose refusals are counted apart; past it new ones share a bucket."""


@dataclass(frozen=True)
class ApiSecurity:
    """Tokens, rate limit and body bound the API enforces."""

    authenticator: Authenticator
    limiter: RateLimiter
    max_body_bytes: int = 16384
    refusal_limiter: RateLimiter | None = None  # per client address; None: no such limit
    sessions: SessionStore | None = None  # console sessions (cookie + CSRF); None: bearer only


def secure(app: FastAPI, view: ControlView, security: ApiSecurity) -> None:
    """Add /openapi.json, check every route has a rule, and put the middleware in front."""

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    missing = [
        f"{method} {route.path}"
        for route in app.routes
        if isinstance(route, APIRoute)
        for method in sorted(route.methods or ())
        if (method, route.path) not in ROUTE_ROLES
    ]
    if missing:
        raise RuntimeError(f"routes without a rule in ROUTE_ROLES: {', '.join(missing)}")

    def audit_store() -> Any:
        service = view.control
        return None if service is None else service.store

    def count(status: str) -> None:
        view.metrics.api_rejected.labels(status=status).inc()

    app.add_middleware(
        SecurityMiddleware,
        router_app=app,
        authenticator=security.authenticator,
        limiter=security.limiter,
        max_body_bytes=security.max_body_bytes,
        audit_store=audit_store,
        on_reject=count,
        refusal_limiter=security.refusal_limiter,
        refusal_audit=RefusalAudit(audit_store),
        sessions=security.sessions,
    )


def security_from_config(config: WattmuxConfig) -> ApiSecurity:
    """The API security the config asks for: its tokens, rate limit and body bound."""
    return ApiSecurity(
        authenticator=Authenticator(
            TokenEntry(t.name, Role.parse(t.role), t.sha256) for t in config.api.tokens
        ),
        limiter=RateLimiter(
            per_minute=config.api.mutations_per_minute, burst=config.api.mutation_burst
        ),
        max_body_bytes=config.api.max_body_bytes,
        refusal_limiter=RateLimiter(
            per_minute=config.api.refused_per_minute,
            burst=config.api.refused_burst,
            max_keys=MAX_REFUSAL_ADDRESSES,
        ),
        sessions=SessionStore(config.api.session_seconds),
    )
