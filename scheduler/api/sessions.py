"""Console sessions: a bearer token exchanged for a session cookie, with a CSRF token.

``POST /console/login`` checks a token once and returns a random session id in
an HttpOnly, SameSite=Strict cookie (Secure under TLS) and a CSRF token the
page keeps in memory.  The security middleware takes the cookie in place of a
bearer token; a change made with the cookie must carry the CSRF token in the
``x-csrf-token`` header.  Sessions live in memory only (a restart logs every
console out), expire ``lifetime_seconds`` after login, and at most
``max_sessions`` exist (the oldest goes first).  Only a hash of the session id
is kept, so the table leaks nothing usable.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from scheduler.api.auth import Principal

SESSION_COOKIE = "wattmux_session"
CSRF_HEADER = "x-csrf-token"
DEFAULT_LIFETIME_SECONDS = 8 * 3600.0
MAX_SESSIONS = 1024


@dataclass(frozen=True, slots=True)
class Session:
    """A logged-in console: who, its CSRF token and when it ends (monotonic seconds)."""

    principal: Principal
    csrf: str
    expires_at: float


def _key(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8", "replace")).hexdigest()


class SessionStore:
    """Bounded in-memory sessions keyed by the hash of their id."""

    def __init__(
        self,
        lifetime_seconds: float = DEFAULT_LIFETIME_SECONDS,
        *,
        max_sessions: int = MAX_SESSIONS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if lifetime_seconds <= 0 or max_sessions < 1:
            raise ValueError("session lifetime and count must be positive")
        self.lifetime_seconds = lifetime_seconds
        self.max_sessions = max_sessions
        self.clock = clock
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    def create(self, principal: Principal) -> tuple[str, Session]:
        """A new session for principal: (session id for the cookie, the session)."""
        self._expire()
        while len(self._sessions) >= self.max_sessions:
            self._sessions.popitem(last=False)
        session_id = secrets.token_urlsafe(32)
        session = Session(
            principal, secrets.token_urlsafe(32), self.clock() + self.lifetime_seconds
        )
        self._sessions[_key(session_id)] = session
        return session_id, session

    def get(self, session_id: str) -> Session | None:
        """The live session of that id (None when unknown or expired)."""
        if not session_id or len(session_id) > 128:
            return None
        key = _key(session_id)
        session = self._sessions.get(key)
        if session is None:
            return None
        if self.clock() >= session.expires_at:
            del self._sessions[key]
            return None
        return session

    def revoke(self, session_id: str) -> bool:
        """End a session (logout); True when there was one."""
        return self._sessions.pop(_key(session_id), None) is not None

    def seconds_left(self, session: Session) -> float:
        """Seconds until session expires."""
        return max(0.0, session.expires_at - self.clock())

    @staticmethod
    def csrf_ok(session: Session, presented: str) -> bool:
        """True when presented is the session's CSRF token (constant-time)."""
        return bool(presented) and hmac.compare_digest(
            session.csrf.encode(), presented.encode("utf-8", "replace")
        )

    def _expire(self) -> None:
        now = self.clock()
        for key in [k for k, s in self._sessions.items() if now >= s.expires_at]:
            del self._sessions[key]


def cookie_value(scope_headers: Iterable[tuple[bytes, bytes]], name: str = SESSION_COOKIE) -> str:
    """The value of cookie ``name`` in an ASGI scope's headers ('' when absent)."""
    for key, value in scope_headers:
        if bytes(key).lower() != b"cookie":
            continue
        for part in bytes(value).decode("latin-1").split(";"):
            cookie, _, text = part.strip().partition("=")
            if cookie == name:
                return text.strip()
    return ""
