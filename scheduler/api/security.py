"""ASGI middleware in front of the API: token check, role check, body bound, rate limit, audit.

It runs before routing and body parsing, so a request without a valid token
gets 401 whatever its body, a too-small role 403, an oversized body 413 and a
too-fast client 429.  Every mutating request that does not write its own
audit row together with its change (see scheduler.control.service) gets one here,
committed before the response starts.

Refusals (401, 403, 413, 429) also spend the client address's budget
(``refusal_limiter``); once it is spent the address gets 429 before anything
else is done, and its refused changes are counted into one audit row per
address and window (``RefusalAudit``) instead of a row each, so a flood of
anonymous PUTs cannot grow the audit table without bound.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from scheduler.api.auth import MUTATING_METHODS, ROUTE_ROLES, Authenticator, RateLimiter, Role
from scheduler.api.sessions import CSRF_HEADER, SessionStore, cookie_value
from scheduler.store.operator import ApiAuditEntry, ControlStore
from scheduler.store.sqlite import StoreError

log = logging.getLogger(__name__)

AUDITED = "audited"
PRINCIPAL = "principal"
REFUSAL_WINDOW_SECONDS = 60.0
MAX_AGGREGATED_CLIENTS = 1024


def route_template(app: Any, scope: Scope) -> str | None:
    """The path template of the route that fully matches scope (None when none does)."""
    for route in app.router.routes:
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return str(route.path)
    return None


@dataclass
class _Window:
    """Refused changes from one address counted into one audit row."""

    row_id: int
    started: float
    count: int
    written: int


class RefusalAudit:
    """One audit row per client address and window for the changes refused as too many.

    The first refusal of a window inserts the row (count 1); later ones only
    count, and the row's result is rewritten with the count when the window
    closes (a timer on the running loop), when the address's next window
    starts, or on ``flush()``.  Past ``max_clients`` addresses in one window,
    the others share one row (remote ``*``).
    """

    def __init__(
        self,
        audit_store: Callable[[], ControlStore | None],
        *,
        window_seconds: float = REFUSAL_WINDOW_SECONDS,
        max_clients: int = MAX_AGGREGATED_CLIENTS,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.audit_store = audit_store
        self.window_seconds = window_seconds
        self.max_clients = max_clients
        self.clock = clock
        self.wall_clock = wall_clock
        self._windows: dict[str, _Window] = {}
        self._timer: asyncio.TimerHandle | None = None

    @staticmethod
    def result(count: int, client: str, window_seconds: float) -> str:
        """The result text of an aggregated row (``refused_count`` reads the count back)."""
        return (
            f"rejected: {count} refused as too many from {client} "
            f"(status 429, window {window_seconds:g} s)"
        )

    def count(self, client: str, method: str, path: str) -> None:
        """Count one refused change from client."""
        now = self.clock()
        window = self._windows.get(client)
        if window is not None and now - window.started >= self.window_seconds:
            self._write(client, window)
            del self._windows[client]
            window = None
        if window is None:
            if len(self._windows) >= self.max_clients and client != "*":
                self.count("*", method, path)
                return
            store = self.audit_store()
            if store is None:
                return
            entry = ApiAuditEntry(
                at=self.wall_clock(),
                principal="anonymous",
                role="none",
                remote=client,
                method=method,
                path=path[:512],
                before="null",
                after="null",
                result=self.result(1, client, self.window_seconds),
                status_code=429,
            )
            try:
                row_id = store.record_api_audit(entry)
            except StoreError as exc:
                log.error("cannot write the audit row of refusals from %s: %s", client, exc)
                return
            self._windows[client] = _Window(row_id, now, 1, 1)
            self._arm()
            return
        window.count += 1

    def flush(self) -> None:
        """Write every window's count; forget the windows that have closed."""
        now = self.clock()
        for client, window in list(self._windows.items()):
            self._write(client, window)
            if now - window.started >= self.window_seconds:
                del self._windows[client]
        self._timer = None
        if self._windows:
            self._arm()

    def _arm(self) -> None:
        """Flush when the oldest open window closes (when a loop runs)."""
        if self._timer is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._timer = loop.call_later(self.window_seconds, self.flush)

    def _write(self, client: str, window: _Window) -> None:
        if window.count == window.written:
            return
        store = self.audit_store()
        if store is None:
            return
        try:
            store.update_api_audit_result(
                window.row_id, self.result(window.count, client, self.window_seconds)
            )
        except StoreError as exc:
            log.error("cannot update the audit row of refusals from %s: %s", client, exc)
            return
        window.written = window.count


class SecurityMiddleware:
    """Authenticates, authorizes, bounds and rate-limits every request; audits mutations."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        router_app: Any,
        authenticator: Authenticator,
        limiter: RateLimiter,
        max_body_bytes: int,
        audit_store: Callable[[], ControlStore | None],
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_reject: Callable[[str], None] | None = None,
        refusal_limiter: RateLimiter | None = None,
        refusal_audit: RefusalAudit | None = None,
        sessions: SessionStore | None = None,
    ) -> None:
        self.app = app
        self.sessions = sessions
        self.refusal_limiter = refusal_limiter
        self.refusal_audit = refusal_audit
        self.router_app = router_app
        self.authenticator = authenticator
        self.limiter = limiter
        self.max_body_bytes = max_body_bytes
        self.audit_store = audit_store
        self.wall_clock = wall_clock
        self.on_reject = on_reject

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the request, then pass it on with a bounded body and an auditing send."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state: dict[str, Any] = scope.setdefault("state", {})
        method = str(scope["method"]).upper()
        template = route_template(self.router_app, scope)
        needed = ROUTE_ROLES.get((method, template or ""), Role.VIEWER)
        mutating = method in MUTATING_METHODS
        if needed is not None:
            problem = self._check(scope, state, needed, mutating)
            if problem is not None:
                status, detail, headers = problem
                await self._refuse(scope, state, send, status, detail, headers, mutating)
                return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            detail = f"body of {declared} bytes exceeds the limit of {self.max_body_bytes}"
            await self._refuse(scope, state, send, 413, detail, {}, mutating)
            return
        # Read the whole (bounded) body before the app sees it, then hand it over in one piece.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = bytes(message.get("body", b""))
            size += len(chunk)
            if size > self.max_body_bytes:
                detail = f"body exceeds the limit of {self.max_body_bytes} bytes"
                await self._refuse(scope, state, send, 413, detail, {}, mutating)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if body and _parsed_as_json(scope):
            invalid = _unacceptable_json(body)
            if invalid is not None:
                error = {"type": "json_invalid", "loc": ["body"], "msg": invalid, "input": {}}
                await self._reply(scope, state, send, 422, [error], {}, mutating)
                return
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        async def auditing_send(message: Message) -> None:
            if message["type"] == "http.response.start" and mutating and not state.get(AUDITED):
                self._audit(scope, state, int(message["status"]), "rejected")
            await send(message)

        try:
            await self.app(scope, replay, auditing_send)
        except Exception as exc:
            if mutating and not state.get(AUDITED):
                self._audit(scope, state, 500, f"error: {type(exc).__name__}")
            raise

    def _check(
        self, scope: Scope, state: dict[str, Any], needed: Role, mutating: bool
    ) -> tuple[int, str, dict[str, str]] | None:
        """None when the request may go on, else (status, detail, headers)."""
        header = _header(scope, b"authorization")
        scheme, _, token = header.partition(" ")
        session_id = cookie_value(scope.get("headers", ())) if self.sessions is not None else ""
        if not header and session_id and self.sessions is not None:
            # A console session: the cookie stands for the token; a change needs the CSRF token.
            session = self.sessions.get(session_id)
            if session is None:
                return 401, "session expired or unknown; log in again", {}
            state[PRINCIPAL] = session.principal
            if mutating and not self.sessions.csrf_ok(
                session, _header(scope, CSRF_HEADER.encode())
            ):
                return 403, "missing or wrong CSRF token", {}
            principal = session.principal
        else:
            if scheme.lower() != "bearer" or not token.strip():
                return 401, "missing bearer token", {"www-authenticate": "Bearer"}
            found = self.authenticator.authenticate(token.strip())
            if found is None:
                return 401, "invalid token", {"www-authenticate": 'Bearer error="invalid_token"'}
            principal = found
        state[PRINCIPAL] = principal
        if principal.role < needed:
            return 403, f"role {principal.role.label} may not do this; needs {needed.label}", {}
        if mutating:
            wait_seconds = self.limiter.take(principal.name)
            if wait_seconds > 0:
                retry = str(max(1, round(wait_seconds + 0.5)))
                return 429, "too many changes; slow down", {"retry-after": retry}
        return None

    async def _refuse(
        self,
        scope: Scope,
        state: dict[str, Any],
        send: Send,
        status: int,
        detail: str,
        headers: dict[str, str],
        mutating: bool,
    ) -> None:
        """Answer a refusal, or 429 (counted, not audited row by row) past the address's budget."""
        if self.refusal_limiter is not None:
            client = scope.get("client")
            address = str(client[0]) if client else "unknown"
            wait_seconds = self.refusal_limiter.take(address)
            if wait_seconds > 0:
                if mutating and self.refusal_audit is not None:
                    self.refusal_audit.count(address, str(scope["method"]), str(scope["path"]))
                retry = {"retry-after": str(max(1, round(wait_seconds + 0.5)))}
                detail = "too many refused requests from this address; slow down"
                await self._reply(scope, state, send, 429, detail, retry, False)
                return
        await self._reply(scope, state, send, status, detail, headers, mutating)

    async def _reply(
        self,
        scope: Scope,
        state: dict[str, Any],
        send: Send,
        status: int,
        detail: str | list[dict[str, Any]],
        headers: dict[str, str],
        mutating: bool,
    ) -> None:
        """Answer {"detail": ...} with status, auditing it first when it was a mutation."""
        if self.on_reject is not None:
            self.on_reject(str(status))
        if mutating:
            reason = detail if isinstance(detail, str) else detail[0]["msg"]
            self._audit(scope, state, status, f"rejected: {reason}")
        body = json.dumps({"detail": detail}).encode()
        raw_headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *((k.encode(), v.encode()) for k, v in headers.items()),
        ]
        await send({"type": "http.response.start", "status": status, "headers": raw_headers})
        await send({"type": "http.response.body", "body": body})

    def _audit(self, scope: Scope, state: dict[str, Any], status: int, result: str) -> None:
        """Write the audit row of a mutation that changed nothing (or log why it could not)."""
        store = self.audit_store()
        if store is None:
            return
        principal = state.get(PRINCIPAL)
        client = scope.get("client")
        entry = ApiAuditEntry(
            at=self.wall_clock(),
            principal=principal.name if principal else "anonymous",
            role=principal.role.label if principal else "none",
            remote=f"{client[0]}:{client[1]}" if client else "unknown",
            method=str(scope["method"]),
            path=str(scope["path"])[:512],
            before="null",
            after="null",
            result=(result if result != "rejected" else f"rejected: status {status}")[:512],
            status_code=status,
        )
        try:
            store.record_api_audit(entry)
        except StoreError as exc:
            log.error("cannot write the audit row of %s %s: %s", entry.method, entry.path, exc)
        state[AUDITED] = True


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return ""


def _content_length(scope: Scope) -> int | None:
    text = _header(scope, b"content-length")
    return int(text) if text.isdigit() else None


def _parsed_as_json(scope: Scope) -> bool:
    """True when FastAPI will parse this request's body as JSON (no or a JSON content type)."""
    kind = _header(scope, b"content-type").split(";", 1)[0].strip().lower()
    return (
        not kind
        or kind == "application/json"
        or (kind.startswith("application/") and kind.endswith("+json"))
    )


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotFinite(f"number {text[:32]} is out of range")
    return value


def _constant(text: str) -> Any:
    raise _NotFinite(f"{text} is not JSON")


class _NotFinite(ValueError):
    """A JSON body with NaN, Infinity or a number too large for a float."""


def _unacceptable_json(body: bytes) -> str | None:
    """Why body, valid to Python's json module, is no JSON a route takes (None: fine).

    Python's parser reads ``NaN`` and ``Infinity`` and turns ``1e999`` into
    infinity; none of them is JSON, a validation error quoting them cannot be
    answered as JSON, and a float field would take them.  Too deep nesting and
    too many digits are refused here too rather than crash the parse later.
    Plain syntax errors are left to FastAPI's own 422.
    """
    try:
        json.loads(body, parse_constant=_constant, parse_float=_finite)
    except _NotFinite as exc:
        return f"JSON decode error: {exc}"
    except json.JSONDecodeError:
        return None
    except (ValueError, RecursionError) as exc:
        return f"JSON decode error: {type(exc).__name__}"
    return None
