"""OpenADR 3.0.1 VEN over the VTN's REST API (``httpx``): programs, events, subscriptions, reports.

The routes and JSON shapes are those of the OpenADR 3.0.1 OpenAPI document
(``oadr3.0.1.yaml``, OpenADR Alliance, API version "3.0.1"):

- ``POST auth/token`` (form ``grant_type=client_credentials``, ``client_id``,
  ``client_secret``) gives ``{"access_token", "token_type": "Bearer", "expires_in"}``;
  a configured bearer token is used as it is instead;
- ``GET /vens?venName=`` then ``POST /vens {"venName"}`` when absent: registration;
- ``GET /programs`` (``skip``/``limit`` pages of at most 50): the configured
  program names become program ids;
- ``GET /events?programID=`` every ``poll_seconds``; an event is identified by
  ``id`` and ``modificationDateTime``: the same version again acts once, a new
  version acts again, an event gone from a complete listing (deleted) releases;
- ``POST /subscriptions`` (``EVENT`` ``POST``/``PUT``/``DELETE`` to ``callback_url``)
  when a callback URL is configured; ``notification`` takes what the VTN posts there;
- ``POST /reports``: while an event the site follows is in force, every
  ``report_seconds`` a report of the metered power (``DEMAND``, kW) and the
  energy of the period (``USAGE``, kWh).

Event intervals become ``DispatchEvent``s (``drivers.dr.openadr``), so the
2.0b and 3.0 VENs feed the site target the same way:

- ``IMPORT_CAPACITY_LIMIT`` and ``DISPATCH_SETPOINT``: the site at that power
  (units from the event's ``payloadDescriptors``: ``KW`` when none, ``W``, ``MW``);
- ``SIMPLE`` (levels 0-3): mapped to kW by ``simple_levels_kw`` (0: release);
- other payload types (``PRICE``, ``EXPORT_CAPACITY_LIMIT``, ...) are not followed.

Every reply is bounded (bytes, JSON depth, objects, intervals) and a reply that
is not what the document describes is refused with one line, counted, never acted on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import httpx
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    TypeAdapter,
    model_validator,
)
from pydantic import ValidationError as PydanticError

from drivers.bounds import json_problem
from drivers.dr.openadr import DispatchEvent, DispatchInterval
from drivers.secrets import MaskedUrl, reveal

log = logging.getLogger(__name__)

PAGE = 50  # the document's maximum ``limit``
MAX_DEPTH = 16
FOLLOWED = ("IMPORT_CAPACITY_LIMIT", "DISPATCH_SETPOINT", "SIMPLE")
UNITS_KW = {"KW": 1.0, "W": 0.001, "MW": 1000.0}
_DURATION = TypeAdapter(timedelta)
_DATETIME = TypeAdapter(AwareDatetime)


class OpenAdr3Options(BaseModel):
    """The ``[openadr3]`` section: the VTN, this VEN, its programs and how payloads map to kW."""

    model_config = ConfigDict(extra="forbid")
    vtn_url: MaskedUrl = Field(
        pattern=r"^https?://", description="the VTN's base URL, e.g. https://vtn/openadr3/3.0.1"
    )
    ven_name: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,128}$", description="venName/clientName")
    programs: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(
        min_length=1, max_length=20, description="programName(s) whose events the site follows"
    )
    client_id: str | None = Field(None, max_length=4096, description="OAuth2 client credentials")
    client_secret: SecretStr | None = Field(None, description="OAuth2 client secret")
    oauth_url: MaskedUrl | None = Field(
        None,
        pattern=r"^https?://",
        description="OAuth2 token endpoint; absent: <vtn_url>/auth/token",
    )
    bearer_token: SecretStr | None = Field(None, description="a fixed bearer token instead")
    callback_url: MaskedUrl | None = Field(
        None, pattern=r"^https?://", description="subscribe: the VTN posts event changes here"
    )
    callback_token: SecretStr | None = Field(
        None, description="the bearer token the VTN must send to callback_url"
    )
    poll_seconds: float = Field(30.0, ge=1, le=3600, description="time between event polls")
    timeout_seconds: float = Field(10.0, gt=0, le=60, description="deadline of one request")
    max_reply_bytes: int = Field(
        1024 * 1024, ge=1024, le=16 * 1024 * 1024, description="a larger reply is refused"
    )
    max_events: int = Field(200, ge=1, le=5000, description="events read per program per poll")
    max_intervals: int = Field(1000, ge=1, le=10_000, description="intervals read per event")
    simple_levels_kw: dict[str, float] = Field(
        default_factory=dict, description='SIMPLE level -> site kW, e.g. {"1" = 800}'
    )
    report_seconds: float = Field(60.0, ge=1, le=3600, description="reporting period")

    @model_validator(mode="after")
    def _auth(self) -> OpenAdr3Options:
        credentials = self.client_id is not None or self.client_secret is not None
        if credentials and (self.client_id is None or self.client_secret is None):
            raise ValueError("openadr3: client_id and client_secret go together")
        if credentials and self.bearer_token is not None:
            raise ValueError("openadr3: client credentials or bearer_token, not both")
        if self.callback_url is not None and self.callback_token is None:
            raise ValueError("openadr3: callback_url needs a callback_token (16+ characters)")
        if self.callback_token is not None and len(self.callback_token.get_secret_value()) < 16:
            raise ValueError("openadr3: callback_token needs 16 or more characters")
        return self


class Vtn3Error(Exception):
    """A VTN reply refused or a request failed: ``message`` is one line for the operator.

    ``refused``: the reply was not what the document describes (hostile or
    broken: counted as an invalid signal); otherwise the request failed
    (unreachable, an HTTP error status) and the next poll retries.
    """

    def __init__(self, message: str, *, refused: bool = True) -> None:
        super().__init__(message)
        self.message = message[:300]
        self.refused = refused


def _time(value: object, what: str) -> datetime:
    try:
        return _DATETIME.validate_python(value)
    except PydanticError:
        raise Vtn3Error(f"{what}: not an ISO 8601 date-time with a zone") from None


def _duration(value: object, what: str) -> timedelta:
    if not isinstance(value, str) or len(value) > 64:
        raise Vtn3Error(f"{what}: not an ISO 8601 duration")
    try:
        return _DURATION.validate_python(value)
    except PydanticError:
        raise Vtn3Error(f"{what}: not an ISO 8601 duration") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _object_id(value: object, what: str) -> str:
    if (
        not isinstance(value, str)
        or not 1 <= len(value) <= 128
        or not value.replace("-", "").replace("_", "").isalnum()
        or not value.isascii()
    ):
        raise Vtn3Error(f"{what}: not an objectID")
    return value


@dataclass(frozen=True, slots=True)
class Event3:
    """One version of an event, parsed: ``dispatch`` None when the site cannot follow it."""

    id: str
    program_id: str
    version: str
    dispatch: DispatchEvent | None


def parse_event3(
    event: object, simple_levels_kw: dict[str, float], max_intervals: int = 1000
) -> Event3:
    """The event's dispatch intervals (Vtn3Error when it is not an event of the document)."""
    if not isinstance(event, dict):
        raise Vtn3Error("event: not an object")
    event_id = _object_id(event.get("id"), "event.id")
    program_id = _object_id(event.get("programID"), f"event {event_id}: programID")
    stamp = event.get("modificationDateTime") or event.get("createdDateTime")
    version = "0"
    if stamp is not None:
        version = _time(stamp, f"event {event_id}: modificationDateTime").isoformat()
    descriptors = event.get("payloadDescriptors") or []
    if not isinstance(descriptors, list):
        raise Vtn3Error(f"event {event_id}: payloadDescriptors is not a list")
    units: dict[str, float | None] = {}
    for descriptor in descriptors:
        if isinstance(descriptor, dict) and isinstance(descriptor.get("payloadType"), str):
            unit = str(descriptor.get("units") or "KW").upper()
            units[descriptor["payloadType"]] = UNITS_KW.get(unit)
    default_start: datetime | None = None
    default_duration: timedelta | None = None
    period = event.get("intervalPeriod")
    if isinstance(period, dict):
        default_start = _time(period.get("start"), f"event {event_id}: intervalPeriod.start")
        default_duration = _duration(
            period.get("duration", "PT0S"), f"event {event_id}: intervalPeriod.duration"
        )
    raw_intervals = event.get("intervals")
    if not isinstance(raw_intervals, list):
        raise Vtn3Error(f"event {event_id}: intervals is not a list")
    if len(raw_intervals) > max_intervals:
        raise Vtn3Error(f"event {event_id}: more than {max_intervals} intervals")
    intervals: list[DispatchInterval] = []
    followable = True
    for index, interval in enumerate(raw_intervals):
        if not isinstance(interval, dict) or not isinstance(interval.get("payloads"), list):
            raise Vtn3Error(f"event {event_id}: interval {index} is not an interval")
        own = interval.get("intervalPeriod")
        if isinstance(own, dict):
            start = _time(own.get("start"), f"event {event_id}: interval {index} start")
            duration = _duration(
                own.get("duration", "PT0S"), f"event {event_id}: interval {index} duration"
            )
        elif default_start is not None and default_duration is not None:
            start, duration = default_start + index * default_duration, default_duration
        else:
            raise Vtn3Error(f"event {event_id}: interval {index} has no intervalPeriod")
        for payload in interval["payloads"]:
            if not isinstance(payload, dict) or not isinstance(payload.get("values"), list):
                raise Vtn3Error(f"event {event_id}: interval {index}: a payload is not a valuesMap")
            kind = payload.get("type")
            if kind not in FOLLOWED:
                continue
            values = payload["values"]
            value = values[0] if values else None
            if (
                not isinstance(value, int | float)
                or isinstance(value, bool)
                or not math.isfinite(value)
            ):
                raise Vtn3Error(f"event {event_id}: interval {index}: {kind} value not a number")
            if duration <= timedelta(0):
                followable = False  # open-ended (PT0S) intervals are not followed
                continue
            if kind == "SIMPLE":
                level = str(int(value))
                kw = simple_levels_kw.get(level) if level != "0" else None
                if level != "0" and kw is None:
                    followable = False
                    continue
                intervals.append(DispatchInterval(start, duration, kw))
            else:
                scale = units.get(str(kind), 1.0)
                if scale is None or not 0 <= value * scale <= 1e7:
                    followable = False
                    continue
                intervals.append(DispatchInterval(start, duration, float(value) * scale))
    dispatch = None
    if intervals and followable:
        intervals.sort(key=lambda i: i.start)
        dispatch = DispatchEvent(f"{event_id}:{version}", event_id, "active", tuple(intervals))
    return Event3(event_id, program_id, version, dispatch)


def legacy_raw(event_id: str, version: str) -> dict[str, Any]:
    """The 2.0b-shaped descriptor ``GridControl.openadr_event`` labels its audit rows with."""
    return {"event_descriptor": {"event_id": event_id, "modification_number": version}}


class OpenAdr3Ven:
    """The VEN: ``async with OpenAdr3Ven(...)`` authenticates, registers and polls until closed.

    ``on_event(dispatch, raw)`` is ``GridControl.openadr_event``: it returns
    whether the site follows the event.  ``on_refused(reason)`` counts a reply
    refused.  ``counts`` holds this VEN's own tallies (polls, reports, refusals).
    """

    def __init__(
        self,
        options: OpenAdr3Options,
        on_event: Callable[[DispatchEvent | None, dict[str, Any]], Awaitable[bool]],
        metered_w: Callable[[], float | None],
        *,
        on_refused: Callable[[str], None] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.options = options
        self._on_event = on_event
        self._metered_w = metered_w
        self._on_refused = on_refused
        self._http = httpx.AsyncClient(
            base_url=options.vtn_url.rstrip("/") + "/",
            timeout=options.timeout_seconds,
            transport=transport,
            follow_redirects=False,
        )
        self._token: str | None = reveal(options.bearer_token)
        self._token_expires = float("inf")
        self.ven_id: str | None = None
        self.registered = False  # VEN, programs and subscriptions done (else retried each poll)
        self.program_ids: dict[str, str] = {}  # programName -> id
        self.subscription_ids: list[str] = []
        self.subscribed: set[str] = set()  # program ids with a subscription
        self.versions: dict[str, str] = {}  # event id -> the version handed to on_event
        self.followed: dict[str, tuple[str, DispatchEvent]] = {}  # event id -> program, event
        self.counts: dict[str, int] = {}
        self.last_error: str | None = None
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    # -- HTTP, bounded ---------------------------------------------------------

    def _count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    def refuse(self, reason: str) -> None:
        """A reply refused: one line in the log, counted, nothing acted on."""
        self._count("refused")
        self.last_error = reason
        log.warning("OpenADR 3 VTN reply refused: %s", reason)
        if self._on_refused is not None:
            self._on_refused(reason)

    def fail(self, reason: str) -> None:
        """A request failed (VTN unreachable, an HTTP error): one log line, counted, retried."""
        self._count("failed")
        self.last_error = reason
        log.warning("OpenADR 3 VTN request failed: %s", reason)

    async def _read(self, response: httpx.Response, what: str) -> Any:
        limit = self.options.max_reply_bytes
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise Vtn3Error(f"{what}: reply of {declared} bytes, more than {limit}")
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > limit:
                raise Vtn3Error(f"{what}: reply larger than {limit} bytes")
        raw = bytes(body)
        problem = json_problem(raw, max_depth=MAX_DEPTH)
        if problem is not None:
            raise Vtn3Error(f"{what}: reply {problem}")
        try:
            return json.loads(raw, parse_constant=_no_constant) if raw else None
        except (ValueError, UnicodeDecodeError):
            raise Vtn3Error(f"{what}: reply is not JSON") from None

    async def _send(
        self, method: str, path: str, what: str, *, auth: bool = True, **kwargs: Any
    ) -> tuple[int, Any]:
        headers = {"Accept": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {await self._bearer()}"
        try:
            request = self._http.build_request(method, path, headers=headers, **kwargs)
            response = await self._http.send(request, stream=True)
        except httpx.HTTPError as exc:
            message = f"{what}: {type(exc).__name__}: {exc}".splitlines()[0]
            raise Vtn3Error(message, refused=False) from None
        try:
            try:
                body = await self._read(response, what)
            except httpx.HTTPError as exc:
                raise Vtn3Error(f"{what}: {type(exc).__name__}", refused=False) from None
        finally:
            await response.aclose()
        return response.status_code, body

    async def _call(self, method: str, path: str, what: str, **kwargs: Any) -> Any:
        status, body = await self._send(method, path, what, **kwargs)
        if status in (401, 403) and self.options.client_id is not None:
            self._token = None  # expired or revoked: one fresh token, one retry
            status, body = await self._send(method, path, what, **kwargs)
        if not 200 <= status < 300:
            detail = ""
            if isinstance(body, dict):
                detail = str(body.get("title") or body.get("detail") or body.get("error") or "")
            message = f"{what}: HTTP {status} {detail[:120]}".rstrip()
            raise Vtn3Error(" ".join(message.split()), refused=False)
        return body

    async def _bearer(self) -> str:
        if self._token is not None and time.monotonic() < self._token_expires:
            return self._token
        if self.options.client_id is None:
            raise Vtn3Error(
                "no credentials: set client_id/client_secret or bearer_token", refused=False
            )
        url = self.options.oauth_url or "auth/token"
        status, body = await self._send(
            "POST",
            url,
            "auth/token",
            auth=False,
            data={
                "grant_type": "client_credentials",
                "client_id": self.options.client_id,
                "client_secret": reveal(self.options.client_secret) or "",
            },
        )
        if status != 200:
            error = body.get("error") if isinstance(body, dict) else None
            message = f"auth/token: HTTP {status} {str(error or '')[:60]}".rstrip()
            raise Vtn3Error(" ".join(message.split()), refused=False)
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not 1 <= len(token) <= 4096 or not token.isprintable():
            raise Vtn3Error("auth/token: no access_token in the reply")
        if str(body.get("token_type", "")).lower() != "bearer":
            raise Vtn3Error("auth/token: token_type is not Bearer")
        expires = body.get("expires_in")
        lifetime = float(expires) if isinstance(expires, int) and expires > 0 else 3600.0
        self._token = token
        self._token_expires = time.monotonic() + max(1.0, lifetime - 30.0)
        self._count("token")
        return token

    async def _list(self, path: str, what: str, params: dict[str, str], most: int) -> list[Any]:
        """Pages of a search route (skip/limit); complete unless more than ``most`` objects."""
        found: list[Any] = []
        while True:
            page = await self._call(
                "GET", path, what, params={**params, "skip": str(len(found)), "limit": str(PAGE)}
            )
            if not isinstance(page, list):
                raise Vtn3Error(f"{what}: reply is not a list")
            if len(page) > PAGE:
                raise Vtn3Error(f"{what}: {len(page)} objects in a page of {PAGE}")
            found += page
            if len(found) > most:
                raise Vtn3Error(f"{what}: more than {most} objects")
            if len(page) < PAGE:
                return found

    # -- the VEN ---------------------------------------------------------------

    async def register(self) -> None:
        """Authenticate, find or create this VEN, resolve the programs, subscribe."""
        name = self.options.ven_name
        vens = await self._list("vens", "GET /vens", {"venName": name}, PAGE)
        mine = [v for v in vens if isinstance(v, dict) and v.get("venName") == name]
        if mine:
            self.ven_id = _object_id(mine[0].get("id"), "ven.id")
        else:
            created = await self._call("POST", "vens", "POST /vens", json={"venName": name})
            if not isinstance(created, dict):
                raise Vtn3Error("POST /vens: reply is not a ven")
            self.ven_id = _object_id(created.get("id"), "ven.id")
        programs = await self._list("programs", "GET /programs", {}, 1000)
        wanted = set(self.options.programs)
        for program in programs:
            if isinstance(program, dict) and program.get("programName") in wanted:
                self.program_ids[program["programName"]] = _object_id(
                    program.get("id"), "program.id"
                )
        missing = sorted(wanted - set(self.program_ids))
        if missing:
            message = f"GET /programs: no program named {', '.join(missing)}"
            raise Vtn3Error(message, refused=False)  # retried at the next poll
        if self.options.callback_url is not None:
            for program_id in self.program_ids.values():
                if program_id in self.subscribed:
                    continue
                operation: dict[str, Any] = {
                    "objects": ["EVENT"],
                    "operations": ["POST", "PUT", "DELETE"],
                    "callbackUrl": self.options.callback_url,
                }
                if self.options.callback_token is not None:
                    operation["bearerToken"] = reveal(self.options.callback_token)
                created = await self._call(
                    "POST",
                    "subscriptions",
                    "POST /subscriptions",
                    json={
                        "clientName": name,
                        "programID": program_id,
                        "objectOperations": [operation],
                    },
                )
                self.subscribed.add(program_id)
                if isinstance(created, dict) and isinstance(created.get("id"), str):
                    self.subscription_ids.append(created["id"][:128])
        self.registered = True
        self._count("registered")

    async def poll(self) -> None:
        """Read the events of every program once and act on what changed."""
        if not self.registered:
            await self.register()
        present: set[str] = set()
        for program_id in self.program_ids.values():
            what = f"GET /events?programID={program_id}"
            events = await self._list(
                "events", what, {"programID": program_id}, self.options.max_events
            )
            listed: set[str] = set()
            for raw in events:
                try:
                    event = parse_event3(
                        raw, self.options.simple_levels_kw, self.options.max_intervals
                    )
                except Vtn3Error as exc:
                    self.refuse(f"{what}: {exc.message}")
                    if isinstance(raw, dict) and isinstance(raw.get("id"), str):
                        listed.add(raw["id"])  # still there: not deleted
                    continue
                if event.program_id != program_id:
                    self.refuse(f"{what}: event {event.id} of program {event.program_id}")
                    continue
                listed.add(event.id)
                await self._handle(event)
            for event_id in [e for e, (p, _) in self.followed.items() if p == program_id]:
                if event_id not in listed:
                    await self._release(event_id)
            present |= listed
        for event_id in [e for e in self.versions if e not in present]:
            if event_id not in self.followed:
                del self.versions[event_id]
        self._count("poll")

    async def _handle(self, event: Event3) -> None:
        async with self._lock:
            if self.versions.get(event.id) == event.version:
                self._count("repeated")  # delivered again: acted on once already
                return
            self.versions[event.id] = event.version
            while len(self.versions) > 10 * self.options.max_events:
                self.versions.pop(next(iter(self.versions)))
            raw = legacy_raw(event.id, event.version)
            if event.dispatch is None and event.id in self.followed:
                await self._release(event.id, locked=True)
            take = await self._on_event(event.dispatch, raw)
            if take and event.dispatch is not None:
                self.followed[event.id] = (event.program_id, event.dispatch)
            self._count("event")

    async def _release(self, event_id: str, *, locked: bool = False) -> None:
        """The event was deleted (or can no longer be followed): its target ends."""
        if not locked:
            async with self._lock:
                await self._release(event_id, locked=True)
            return
        followed = self.followed.pop(event_id, None)
        version = self.versions.get(event_id, "deleted")  # kept: a stale listing repeats it
        if followed is None:
            return
        cancel = DispatchEvent(f"{event_id}:{version}:deleted", event_id, "cancelled", ())
        await self._on_event(cancel, legacy_raw(event_id, f"{version} deleted"))
        self._count("released")

    async def notification(self, body: bytes, authorization: str | None) -> None:
        """What the VTN posted to ``callback_url`` (Vtn3Error when refused; counted)."""
        try:
            expected = reveal(self.options.callback_token)
            if expected is None or authorization != f"Bearer {expected}":
                raise Vtn3Error("notification: wrong or missing bearer token")
            if len(body) > self.options.max_reply_bytes:
                raise Vtn3Error("notification: larger than max_reply_bytes")
            problem = json_problem(body, max_depth=MAX_DEPTH)
            if problem is not None:
                raise Vtn3Error(f"notification: {problem}")
            try:
                data = json.loads(body, parse_constant=_no_constant)
            except (ValueError, UnicodeDecodeError):
                raise Vtn3Error("notification: not JSON") from None
            if not isinstance(data, dict) or data.get("objectType") != "EVENT":
                raise Vtn3Error("notification: not an EVENT notification")
            operation = data.get("operation")
            if operation not in ("POST", "PUT", "DELETE"):
                raise Vtn3Error("notification: operation not POST, PUT or DELETE")
            event = parse_event3(
                data.get("object"), self.options.simple_levels_kw, self.options.max_intervals
            )
            if event.program_id not in self.program_ids.values():
                raise Vtn3Error(f"notification: event {event.id} of another program")
        except Vtn3Error as exc:
            self.refuse(exc.message)
            raise
        if operation == "DELETE":
            await self._release(event.id)
        else:
            await self._handle(event)

    async def report(self) -> None:
        """One report per followed event in force: metered kW (DEMAND) and kWh (USAGE)."""
        watts = self._metered_w()
        if watts is None:
            return  # no fresh reading: nothing to report this time
        now = datetime.now(UTC)
        period = self.options.report_seconds
        kw = watts / 1000.0
        for event_id, (program_id, event) in list(self.followed.items()):
            first, last = event.intervals[0], event.intervals[-1]
            if not first.start <= now < last.start + last.duration:
                continue
            report = {
                "programID": program_id,
                "eventID": event_id,
                "clientName": self.options.ven_name,
                "reportName": f"{self.options.ven_name}-{event_id}-{int(now.timestamp())}",
                "payloadDescriptors": [
                    {
                        "objectType": "REPORT_PAYLOAD_DESCRIPTOR",
                        "payloadType": "DEMAND",
                        "readingType": "DIRECT_READ",
                        "units": "KW",
                    },
                    {
                        "objectType": "REPORT_PAYLOAD_DESCRIPTOR",
                        "payloadType": "USAGE",
                        "readingType": "DIRECT_READ",
                        "units": "KWH",
                    },
                ],
                "resources": [
                    {
                        "resourceName": "AGGREGATED_REPORT",
                        "intervalPeriod": {
                            "start": (now - timedelta(seconds=period)).isoformat(),
                            "duration": f"PT{period:g}S",
                        },
                        "intervals": [
                            {
                                "id": 0,
                                "payloads": [
                                    {"type": "DEMAND", "values": [round(kw, 3)]},
                                    {"type": "USAGE", "values": [round(kw * period / 3600, 6)]},
                                ],
                            }
                        ],
                    }
                ],
            }
            await self._call("POST", "reports", "POST /reports", json=report)
            self._count("report")

    async def _run(self) -> None:
        next_report = time.monotonic()
        while not self._stop.is_set():
            try:
                await self.poll()
                if time.monotonic() >= next_report:
                    next_report = time.monotonic() + self.options.report_seconds
                    await self.report()
            except Vtn3Error as exc:
                if exc.refused:
                    self.refuse(exc.message)
                else:
                    self.fail(exc.message)
            except Exception:  # a bug here must not take the daemon down: the next poll retries
                self._count("failed")
                log.exception("OpenADR 3 poll failed")
            wait = min(self.options.poll_seconds, self.options.report_seconds)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), wait)

    async def __aenter__(self) -> OpenAdr3Ven:
        self._stop.clear()
        self._task = asyncio.create_task(self._run(), name="openadr3.ven")
        return self

    async def __aexit__(self, *_exc: object) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._http.aclose()
