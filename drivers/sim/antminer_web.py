"""The stock Antminer web interface of a simulated miner: CGI config over HTTP digest auth.

Facts followed: the web UI's CGI endpoints use HTTP digest authentication
(realm ``antMiner Configuration``, default user root); ``GET
/cgi-bin/get_miner_conf.cgi`` returns the miner configuration, whose
``bitmain-work-mode`` is ``"0"`` (normal) or ``"1"`` (sleep); ``POST
/cgi-bin/set_miner_conf.cgi`` takes the configuration back as JSON with
``miner-mode`` 0 or 1 and answers ``{"stats": "success", "code": "M000", "msg": "OK!"}``.
The change takes ``mode_delay_seconds`` (about 20 s on real hardware) to land,
so a client must read back; the reply comes at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import secrets
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from drivers.sim.miner import SimMiner

REALM = "antMiner Configuration"
MAX_BODY_BYTES = 64 * 1024


def _md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def _parse_digest(header: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for part in header.removeprefix("Digest ").split(","):
        key, _, value = part.strip().partition("=")
        fields[key.strip()] = value.strip().strip('"')
    return fields


class SimAntminerWeb:
    """An HTTP/1.1 server for one simulated miner's CGI configuration endpoints."""

    def __init__(
        self,
        miner: SimMiner,
        *,
        port: int = 0,
        username: str = "root",
        password: str = "root",
        mode_delay_seconds: float = 20.0,
    ) -> None:
        self.miner = miner
        self.username = username
        self.password = password
        self.mode_delay_seconds = mode_delay_seconds
        self.requests: list[str] = []
        self.unauthorized = 0
        self._requested_port = port
        self._nonce = secrets.token_hex(16)
        self._server: asyncio.Server | None = None
        self._pending: asyncio.TimerHandle | None = None
        self._mode = 0

    @property
    def port(self) -> int:
        """The bound port."""
        if self._server is None or not self._server.sockets:
            return self._requested_port
        return int(self._server.sockets[0].getsockname()[1])

    async def __aenter__(self) -> SimAntminerWeb:
        self._server = await asyncio.start_server(
            self._serve, self.miner.address, self._requested_port
        )
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._pending is not None:
            self._pending.cancel()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def _authorized(self, method: str, path: str, header: str | None) -> bool:
        if header is None or not header.startswith("Digest "):
            return False
        fields = _parse_digest(header)
        if fields.get("username") != self.username or fields.get("nonce") != self._nonce:
            return False
        ha1 = _md5(f"{self.username}:{REALM}:{self.password}")
        ha2 = _md5(f"{method}:{fields.get('uri', path)}")
        if fields.get("qop") == "auth":
            expected = _md5(
                f"{ha1}:{self._nonce}:{fields.get('nc')}:{fields.get('cnonce')}:auth:{ha2}"
            )
        else:
            expected = _md5(f"{ha1}:{self._nonce}:{ha2}")
        return secrets.compare_digest(expected, fields.get("response", ""))

    def _conf(self) -> dict[str, Any]:
        pools = self.miner.handle("pools")["POOLS"]
        return {
            "pools": [{"url": p["URL"], "user": p["User"], "pass": "x"} for p in pools],
            "api-listen": True,
            "api-network": True,
            "bitmain-fan-ctrl": False,
            "bitmain-work-mode": str(self._mode),
        }

    def _set_mode(self, mode: int) -> None:
        self._mode = mode
        self.miner.set_asleep(mode == 1)

    def _set_conf(self, body: bytes) -> tuple[int, dict[str, Any]]:
        try:
            conf = json.loads(body)
            mode = int(conf["miner-mode"])
        except (ValueError, KeyError, TypeError):
            return 400, {"stats": "error", "code": "M001", "msg": "bad configuration"}
        if mode not in (0, 1):
            return 400, {"stats": "error", "code": "M002", "msg": f"bad miner-mode {mode}"}
        if self._pending is not None:
            self._pending.cancel()
        loop = asyncio.get_running_loop()
        self._pending = loop.call_later(self.mode_delay_seconds, self._set_mode, mode)
        return 200, {"stats": "success", "code": "M000", "msg": "OK!"}

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, ValueError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (line.partition(":") for line in lines[1:] if line)
                }
                length = min(int(headers.get("content-length", "0")), MAX_BODY_BYTES)
                body = await reader.readexactly(length) if length else b""
                self.requests.append(f"{method} {path}")
                status, payload, extra = self._route(method, path, headers, body)
                data = json.dumps(payload).encode()
                reason = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found"}
                response = (
                    f"HTTP/1.1 {status} {reason[status]}\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(data)}\r\n{extra}\r\n"
                ).encode() + data
                writer.write(response)
                await writer.drain()
        writer.close()

    def _route(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, Any], str]:
        if not self._authorized(method, path, headers.get("authorization")):
            self.unauthorized += 1
            challenge = (
                f'WWW-Authenticate: Digest realm="{REALM}", nonce="{self._nonce}", qop="auth"\r\n'
            )
            return 401, {"stats": "error", "msg": "unauthorized"}, challenge
        if method == "GET" and path == "/cgi-bin/get_miner_conf.cgi":
            return 200, self._conf(), ""
        if method == "POST" and path == "/cgi-bin/set_miner_conf.cgi":
            status, payload = self._set_conf(body)
            return status, payload, ""
        return 404, {"stats": "error", "msg": "not found"}, ""
