"""A VTN double for OpenADR 3.0.1, served by uvicorn on a free loopback port.

Its routes, query parameters, status codes and JSON shapes follow the OpenADR
3.0.1 OpenAPI document (``oadr3.0.1.yaml``, OpenADR Alliance, API version
"3.0.1"), under its base path ``/openadr3/3.0.1``: ``POST /auth/token`` (form,
snake case per RFC 6749), ``GET/POST /vens``, ``GET /programs``, ``GET /events``
(``programID``, ``skip``, ``limit`` at most 50), ``POST /subscriptions``,
``GET/POST /reports``; errors are ``problem`` objects.  Only what a VEN uses is
served; the business-logic side (creating programs and events) is the test's,
through ``put_event``/``delete_event``, which also notify subscribers the way
the document's ``notification`` object describes.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

import httpx
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from tests.conftest import free_port

BASE = "/openadr3/3.0.1"


def problem(status: int, title: str) -> JSONResponse:
    return JSONResponse({"type": "about:blank", "title": title, "status": status}, status)


@dataclass
class Vtn3Double:
    """The VTN's state: clients, issued tokens, programs, events, subscriptions, reports."""

    clients: dict[str, str] = field(default_factory=lambda: {"ven-client": "ven-secret"})
    tokens: set[str] = field(default_factory=set)
    vens: list[dict[str, Any]] = field(default_factory=list)
    programs: list[dict[str, Any]] = field(default_factory=list)
    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    subscriptions: list[dict[str, Any]] = field(default_factory=list)
    reports: list[dict[str, Any]] = field(default_factory=list)
    token_requests: int = 0
    notified: list[int] = field(default_factory=list)  # the callback's answers
    event_polls: int = 0
    hostile: str | None = None  # "oversized", "malformed", "deep": how /events misbehaves
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    port: int = 0
    _server: uvicorn.Server | None = None
    _task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{BASE}"

    def new_id(self, prefix: str) -> str:
        return f"{prefix}-{next(self._ids)}"

    def now(self) -> str:
        return datetime.now(UTC).isoformat().replace("+00:00", "Z")

    def add_program(self, name: str) -> str:
        program = {
            "id": self.new_id("program"),
            "createdDateTime": self.now(),
            "modificationDateTime": self.now(),
            "objectType": "PROGRAM",
            "programName": name,
        }
        self.programs.append(program)
        return str(program["id"])

    async def put_event(self, event: dict[str, Any]) -> dict[str, Any]:
        """Create (no id) or update an event as the business logic would; notify subscribers."""
        stamp = self.now()
        operation = "PUT" if event.get("id") in self.events else "POST"
        event = {
            "objectType": "EVENT",
            "createdDateTime": stamp,
            **event,
            "id": event.get("id") or self.new_id("event"),
            "modificationDateTime": stamp,
        }
        self.events[event["id"]] = event
        await self.notify(operation, event)
        return event

    async def delete_event(self, event_id: str) -> None:
        event = self.events.pop(event_id)
        await self.notify("DELETE", event)

    async def notify(self, operation: str, event: dict[str, Any]) -> None:
        for subscription in self.subscriptions:
            if subscription["programID"] != event["programID"]:
                continue
            for op in subscription["objectOperations"]:
                if "EVENT" in op["objects"] and operation in op["operations"]:
                    headers = {}
                    if op.get("bearerToken"):
                        headers["Authorization"] = f"Bearer {op['bearerToken']}"
                    body = {"objectType": "EVENT", "operation": operation, "object": event}
                    async with httpx.AsyncClient(timeout=5) as client:
                        reply = await client.post(op["callbackUrl"], json=body, headers=headers)
                    self.notified.append(reply.status_code)

    def app(self) -> FastAPI:
        app = FastAPI()

        def authorized(request: Request) -> bool:
            header = request.headers.get("authorization", "")
            return header.startswith("Bearer ") and header[7:] in self.tokens

        @app.post(f"{BASE}/auth/token")
        async def token(request: Request) -> Response:
            self.token_requests += 1
            form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
            if form.get("grant_type") != "client_credentials":
                return JSONResponse({"error": "unsupported_grant_type"}, 400)
            if self.clients.get(form.get("client_id", "")) != form.get("client_secret"):
                return JSONResponse({"error": "invalid_client"}, 400)
            issued = self.new_id("token")
            self.tokens.add(issued)
            return JSONResponse(
                {"access_token": issued, "token_type": "Bearer", "expires_in": 3600}
            )

        def page(items: list[Any], request: Request) -> list[Any]:
            skip = int(request.query_params.get("skip", 0))
            limit = min(int(request.query_params.get("limit", 50)), 50)
            return items[skip : skip + limit]

        @app.get(f"{BASE}/vens")
        async def vens(request: Request) -> Response:
            if not authorized(request):
                return problem(403, "Forbidden")
            name = request.query_params.get("venName")
            return JSONResponse(
                page([v for v in self.vens if name in (None, v["venName"])], request)
            )

        @app.post(f"{BASE}/vens")
        async def create_ven(request: Request) -> Response:
            if not authorized(request):
                return problem(403, "Forbidden")
            body = await request.json()
            if any(v["venName"] == body.get("venName") for v in self.vens):
                return problem(409, "Conflict")
            ven = {"id": self.new_id("ven"), "objectType": "VEN", "venName": body["venName"]}
            self.vens.append(ven)
            return JSONResponse(ven, 201)

        @app.get(f"{BASE}/programs")
        async def programs(request: Request) -> Response:
            if not authorized(request):
                return problem(403, "Forbidden")
            return JSONResponse(page(self.programs, request))

        @app.get(f"{BASE}/events")
        async def events(request: Request) -> Response:
            if not authorized(request):
                return problem(403, "Forbidden")
            self.event_polls += 1
            if self.hostile == "error":
                return problem(500, "Internal Server Error")
            if self.hostile == "oversized":
                return Response(b"[" + b'"x",' * 1_000_000 + b'"x"]', 200)
            if self.hostile == "malformed":
                return Response(b'[{"id": "event-1", "programID": ', 200)
            if self.hostile == "chunked":  # no Content-Length: bounded while read

                async def chunks() -> Any:
                    yield b"["
                    for _ in range(1000):
                        yield b'"x",' * 100
                    yield b'"x"]'

                return StreamingResponse(chunks(), 200)
            if self.hostile == "deep":
                return Response(b"[" * 100 + b"]" * 100, 200)
            program = request.query_params.get("programID")
            found = [e for e in self.events.values() if program in (None, e["programID"])]
            return JSONResponse(page(found, request))

        @app.post(f"{BASE}/subscriptions")
        async def subscribe(request: Request) -> Response:
            if not authorized(request):
                return problem(403, "Forbidden")
            body = await request.json()
            if not {"clientName", "programID", "objectOperations"} <= body.keys():
                return problem(400, "Bad Request")
            subscription = {"id": self.new_id("sub"), "objectType": "SUBSCRIPTION", **body}
            self.subscriptions.append(subscription)
            return JSONResponse(subscription, 201)

        @app.post(f"{BASE}/reports")
        async def report(request: Request) -> Response:
            if not authorized(request):
                return problem(403, "Forbidden")
            body = await request.json()
            if not {"programID", "eventID", "clientName", "resources"} <= body.keys():
                return problem(400, "Bad Request")
            stored = {"id": self.new_id("report"), "objectType": "REPORT", **body}
            self.reports.append(stored)
            return JSONResponse(stored, 201)

        return app

    async def __aenter__(self) -> Vtn3Double:
        self.port = free_port()
        config = uvicorn.Config(
            self.app(), host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve())
        for _ in range(200):
            if self._server.started:
                return self
            await asyncio.sleep(0.02)
        raise RuntimeError("the VTN double did not start")

    async def __aexit__(self, *_exc: object) -> None:
        assert self._server is not None and self._task is not None
        self._server.should_exit = True
        await self._task


async def serve(app: Any) -> tuple[str, uvicorn.Server, asyncio.Task[None]]:
    """Serve ``app`` (the daemon's API, receiving the VTN's notifications) on a free port."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    for _ in range(200):
        if server.started:
            break
        await asyncio.sleep(0.02)
    return f"http://127.0.0.1:{port}", server, task
