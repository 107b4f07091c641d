"""The web interface of a simulated Braiins OS miner: its page and the GraphQL reads clients make.

Real Braiins OS serves its web UI on port 80: the page's title names "Braiins
OS" (how scanners tell the firmware from the page), and ``POST /graphql``
answers queries such as ``{ bosminer { info { modelName } } }`` and
``{ bos { info { version { full } } } }`` with ``{"data": ...}``.  This
server answers those queries from the simulated miner; a query it does not
know gets a GraphQL error object (``{"errors": [{"message": ...}]}``), as a
GraphQL server answers an unknown field.  Requests are bounded in size and
logged in ``requests`` (method and path, GraphQL query text) for tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from drivers.sim.miner import SimMiner

MAX_BODY_BYTES = 64 * 1024
MAX_HEADER_LINES = 100
PAGE = (
    "<!DOCTYPE html><html><head><title>Braiins OS</title></head>"
    '<body><div id="root">Braiins OS</div></body></html>'
)


class SimBraiinsWeb:
    """An HTTP/1.1 server for one simulated Braiins OS miner's page and GraphQL endpoint."""

    def __init__(self, miner: SimMiner, *, port: int = 0) -> None:
        self.miner = miner
        self.requests: list[str] = []
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

    def graphql(self, query: str) -> dict[str, Any]:
        """The reply to one GraphQL query (the fields real firmware has that clients read)."""
        from drivers.sim.boser import BOS_VERSION

        compact = "".join(query.split())
        data: dict[str, Any] = {}
        if "bosminer{info{modelName}}" in compact:
            data["bosminer"] = {"info": {"modelName": f"Antminer {self.miner.device.model}"}}
        if "bos{info{version{full}}}" in compact:
            data["bos"] = {"info": {"version": {"full": BOS_VERSION}}}
        if not data:
            return {"errors": [{"message": "unknown field in query"}]}
        return {"data": data}

    def answer(self, method: str, path: str, body: bytes) -> tuple[int, str, bytes]:
        """Status, content type and body for one request."""
        if method == "GET" and path in ("/", "/index.html"):
            self.requests.append(f"{method} {path}")
            return 200, "text/html", PAGE.encode()
        if method == "POST" and path.split("?")[0] == "/graphql":
            try:
                request = json.loads(body)
                query = str(request["query"]) if isinstance(request, dict) else ""
            except (ValueError, KeyError):
                query = ""
            self.requests.append(f"{method} {path} {query}")
            if not query:
                return 400, "application/json", b'{"errors":[{"message":"no query"}]}'
            return 200, "application/json", json.dumps(self.graphql(query)).encode()
        self.requests.append(f"{method} {path}")
        return 404, "text/plain", b"not found"

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
                status, kind, payload = self.answer(parts[0], parts[1], body)
                reason = {200: "OK", 400: "Bad Request", 404: "Not Found"}[status]
                head = (
                    f"HTTP/1.1 {status} {reason}\r\nContent-Type: {kind}\r\n"
                    f"Content-Length: {len(payload)}\r\n\r\n"
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
