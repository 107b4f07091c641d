"""API security: bearer tokens stored hashed, roles, the route x role table and a rate limiter.

A token is 32 random bytes (256 bits) in URL-safe base64.  The config keeps
only ``sha256:<hex>`` of it, so a leaked config file grants nothing; since a
token carries 256 random bits, an unsalted SHA-256 is enough to make
guessing hopeless.  Roles are ordered: viewer < operator < admin.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

TOKEN_BYTES = 32
HASH_PREFIX = "sha256:"


class Role(enum.IntEnum):
    """What a token may do; a higher role includes every lower one."""

    VIEWER = 1
    OPERATOR = 2
    ADMIN = 3

    @property
    def label(self) -> str:
        """The role's lowercase name as written in configs and the CLI."""
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Role:
        """Parse ``viewer``, ``operator`` or ``admin``."""
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise ValueError(f"unknown role {text!r}; expected viewer, operator or admin") from None


def new_token() -> str:
    """A fresh bearer token with 256 random bits.

    The urlsafe alphabet includes ``-``; a token that starts with it would be
    read as an option by ``--token TOKEN`` on the command line, so such draws
    are discarded (about 1 in 64; the token keeps its full length and the
    remaining first characters stay uniform).
    """
    while True:
        token = secrets.token_urlsafe(TOKEN_BYTES)
        if not token.startswith("-"):
            return token


def hash_token(token: str) -> str:
    """The form a token is stored in: ``sha256:<64 hex digits>``."""
    return HASH_PREFIX + hashlib.sha256(token.encode("utf-8")).hexdigest()


def is_token_hash(text: str) -> bool:
    """True when text has the ``sha256:<64 lowercase hex>`` form."""
    digest = text.removeprefix(HASH_PREFIX)
    return (
        text.startswith(HASH_PREFIX)
        and len(digest) == 64
        and all(c in "0123456789abcdef" for c in digest)
    )


@dataclass(frozen=True, slots=True)
class Principal:
    """Who made a request: the token's name and role."""

    name: str
    role: Role


@dataclass(frozen=True, slots=True)
class TokenEntry:
    """One configured token: a name for the audit log, its role and its stored hash."""

    name: str
    role: Role
    sha256: str


class Authenticator:
    """Maps a presented bearer token to the Principal it belongs to."""

    def __init__(self, entries: Iterable[TokenEntry]) -> None:
        self._entries = tuple(entries)
        for entry in self._entries:
            if not is_token_hash(entry.sha256):
                raise ValueError(f"token {entry.name!r}: hash must look like sha256:<64 hex>")

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def entries(self) -> tuple[TokenEntry, ...]:
        """The configured tokens."""
        return self._entries

    def replace(self, entries: Iterable[TokenEntry]) -> None:
        """Swap in a new set of tokens (live reload); checked before any is replaced."""
        fresh = Authenticator(entries)
        self._entries = fresh._entries

    def authenticate(self, token: str) -> Principal | None:
        """The principal of a token, or None when no configured token matches."""
        presented = hash_token(token)
        found: Principal | None = None
        for entry in self._entries:  # compare against all, in constant time each
            if hmac.compare_digest(presented, entry.sha256):
                found = Principal(entry.name, entry.role)
        return found


MUTATING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

# Every API route and the least role it needs; None = no token needed.  create_app refuses
# to build an app with a route missing here, so a new route cannot ship without a rule.
ROUTE_ROLES: dict[tuple[str, str], Role | None] = {
    ("GET", "/healthz"): None,
    ("GET", "/readyz"): Role.VIEWER,
    ("GET", "/openapi.json"): Role.VIEWER,
    ("GET", "/metrics"): Role.VIEWER,
    ("GET", "/v1/summary"): Role.VIEWER,
    ("GET", "/v1/devices"): Role.VIEWER,
    ("GET", "/v1/market"): Role.VIEWER,
    ("GET", "/v1/plan"): Role.VIEWER,
    ("GET", "/v1/decisions"): Role.VIEWER,
    ("GET", "/v1/audit"): Role.VIEWER,
    ("GET", "/v1/overrides"): Role.VIEWER,
    ("PUT", "/v1/overrides/{device_id}"): Role.OPERATOR,
    ("DELETE", "/v1/overrides/{device_id}"): Role.OPERATOR,
    ("GET", "/v1/mode"): Role.VIEWER,
    ("PUT", "/v1/mode"): Role.OPERATOR,
    ("GET", "/v1/curtail"): Role.VIEWER,
    ("PUT", "/v1/curtail"): Role.OPERATOR,
    ("DELETE", "/v1/curtail"): Role.OPERATOR,
    ("GET", "/v1/policy"): Role.VIEWER,
    ("PUT", "/v1/policy"): Role.ADMIN,
    ("GET", "/v1/config"): Role.ADMIN,
    ("GET", "/v1/demand-response/preview"): Role.VIEWER,
    # The console (scheduler.console): the page and its assets need no token, login checks one.
    ("GET", "/console"): None,
    ("GET", "/console/static/{name}"): None,
    ("POST", "/console/login"): None,
    ("POST", "/console/logout"): Role.VIEWER,
    ("GET", "/console/api/me"): Role.VIEWER,
    ("GET", "/console/api/fleet"): Role.VIEWER,
    ("GET", "/console/api/history"): Role.VIEWER,
    ("GET", "/console/api/events"): Role.VIEWER,
    # Live reload, maintenance windows and reports (scheduler.api.ops_routes).
    ("POST", "/v1/reload"): Role.ADMIN,
    ("GET", "/v1/maintenance"): Role.VIEWER,
    ("PUT", "/v1/maintenance/{target}"): Role.OPERATOR,
    ("DELETE", "/v1/maintenance/{target}"): Role.OPERATOR,
    ("GET", "/v1/reports"): Role.VIEWER,
    ("GET", "/v1/devices/{device_id}"): Role.VIEWER,
    ("POST", "/v1/device-actions"): Role.OPERATOR,
    ("GET", "/v1/device-actions/{job_id}"): Role.VIEWER,
    # Site power (scheduler.api.grid): the webhook checks its HMAC signature instead of a token.
    ("GET", "/v1/meter"): Role.VIEWER,
    ("GET", "/v1/setpoint"): Role.VIEWER,
    ("PUT", "/v1/setpoint"): Role.OPERATOR,
    ("DELETE", "/v1/setpoint"): Role.OPERATOR,
    ("POST", "/v1/signals/webhook"): None,
    ("GET", "/v1/events/{event_id}/mv"): Role.VIEWER,
    ("POST", "/v1/signals/openadr3"): None,  # the VTN's bearer token, checked by the VEN
}


SHARED_KEY = "*"
"""The bucket every new key shares once a RateLimiter tracks ``max_keys`` keys."""


@dataclass
class RateLimiter:
    """Token bucket per key: ``burst`` requests at once, refilled at ``per_minute``.

    Keys are principal names (changes) or client addresses (refused requests).
    With ``max_keys`` set, memory stays bounded however many keys a client
    invents: full buckets are forgotten first, and past the bound every new key
    shares one bucket.
    """

    per_minute: float
    burst: int
    clock: Callable[[], float] = time.monotonic
    max_keys: int | None = None
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)

    def take(self, key: str) -> float:
        """Spend one request for key; return 0 if allowed, else seconds until one is available."""
        now = self.clock()
        if (
            self.max_keys is not None
            and key not in self._buckets
            and len(self._buckets) >= self.max_keys
        ):
            self._forget_full(now)
            if len(self._buckets) >= self.max_keys:
                key = SHARED_KEY
        tokens, last = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.per_minute / 60.0)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) * 60.0 / self.per_minute

    def _forget_full(self, now: float) -> None:
        """Drop the buckets that have refilled to burst (a fresh bucket is the same)."""
        rate = self.per_minute / 60.0
        full = [
            key
            for key, (tokens, last) in self._buckets.items()
            if key != SHARED_KEY and tokens + (now - last) * rate >= self.burst
        ]
        for key in full:
            del self._buckets[key]
