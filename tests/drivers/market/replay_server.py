"""A real HTTP/1.1 server on a loopback address that replays scripted responses per path."""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "market"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


@dataclass
class Reply:
    status: int = 200
    body: bytes = b"{}"
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    truncate_to: int | None = None  # send only this many body bytes, then close


class ReplayServer:
    def __init__(self, host: str = "127.40.0.1") -> None:
        self.host = host
        self.port = 0
        self.script: dict[str, list[Reply]] = {}
        self.requests: list[tuple[str, str, bytes]] = []
        self._server: asyncio.Server | None = None

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def set(self, path: str, *replies: Reply) -> None:
        self.script[path] = list(replies)

    def json(self, path: str, value: object, status: int = 200) -> None:
        self.set(path, Reply(status, json.dumps(value).encode()))

    async def __aenter__(self) -> ReplayServer:
        self._server = await asyncio.start_server(self._handle, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode().split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = {
                    k.lower(): v.strip()
                    for k, v in (line.split(":", 1) for line in lines[1:] if line)
                }
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                path = target.split("?", 1)[0]
                self.requests.append((method, target, body))
                queue = self.script.get(path) or [Reply(404, b'{"error": "not found"}')]
                reply = queue.pop(0) if len(queue) > 1 else queue[0]
                if reply.delay_s:
                    await asyncio.sleep(reply.delay_s)
                payload = (
                    reply.body if reply.truncate_to is None else reply.body[: reply.truncate_to]
                )
                extra = "".join(f"{k}: {v}\r\n" for k, v in reply.headers.items())
                writer.write(
                    f"HTTP/1.1 {reply.status} X\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(reply.body)}\r\n{extra}\r\n".encode()
                    + payload
                )
                await writer.drain()
                if reply.truncate_to is not None:
                    break
        writer.close()
