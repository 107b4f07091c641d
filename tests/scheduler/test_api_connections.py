"""API connection bounds over real HTTP on loopback: caps in all and per client, head and body
deadlines, keep-alive; and the cap sized to the open-files limit."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import trustme

from scheduler.api.app import _QuietServer, bound_port, serve
from scheduler.api.auth import Role
from scheduler.api.connections import (
    ACCEPT_BACKLOG,
    FD_MARGIN,
    MIN_CONNECTIONS,
    ConnectionLimits,
    connection_cap,
)
from scheduler.daemon import Daemon
from tests.scheduler.api_fixtures import Tokens, build_app, small_config
from tests.scheduler.test_api_security import make_view

TOKENS = Tokens()
Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@asynccontextmanager
async def running(tmp_path: Path, limits: ConnectionLimits) -> AsyncIterator[_QuietServer]:
    app = build_app(make_view(tmp_path), TOKENS)

    @app.get("/slow")
    async def slow() -> dict[str, str]:
        await asyncio.sleep(0.6)
        return {"ok": "yes"}

    async with serve(app, "127.0.0.1", 0, limits=limits) as server:
        yield server


async def connect(port: int, source: str = "127.0.0.1") -> Stream:
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


async def until(condition: object, seconds: float = 3.0) -> None:
    deadline = time.monotonic() + seconds
    while not callable(condition) or not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bytes:
    """What the server sent before it closed the connection (fails if it stays open)."""
    return await asyncio.wait_for(reader.read(), seconds)


async def healthz(port: int, source: str = "127.0.0.1") -> int:
    transport = httpx.AsyncHTTPTransport(local_address=source)
    async with httpx.AsyncClient(transport=transport, trust_env=False, timeout=3.0) as client:
        return (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code


@pytest.mark.system
async def test_connections_over_the_cap_get_503_and_are_closed(tmp_path: Path) -> None:
    limits = ConnectionLimits(max_connections=4, max_per_client=100, header_timeout_seconds=30)
    async with running(tmp_path, limits) as server:
        port, guard = bound_port(server), server.connection_guard
        held = [await connect(port) for _ in range(4)]
        await until(lambda: guard.open == 4)
        reader, _ = await connect(port)
        answer = await closed_within(reader, 2.0)
        assert answer.startswith(b"HTTP/1.1 503 ") and b"retry-after: 1" in answer
        assert guard.refused == 1 and guard.open == 4
        for _, writer in held:
            writer.close()
        await until(lambda: guard.open == 0)
        assert await healthz(port) == 200  # room again once they are gone


@pytest.mark.system
async def test_each_client_address_has_its_own_cap(tmp_path: Path) -> None:
    limits = ConnectionLimits(max_connections=100, max_per_client=2, header_timeout_seconds=30)
    async with running(tmp_path, limits) as server:
        port, guard = bound_port(server), server.connection_guard
        held = [await connect(port, "127.0.0.1") for _ in range(2)]
        await until(lambda: guard.per_client.get("127.0.0.1") == 2)
        reader, _ = await connect(port, "127.0.0.1")
        assert (await closed_within(reader, 2.0)).startswith(b"HTTP/1.1 503 ")
        assert await healthz(port, "127.0.0.2") == 200  # another address is still served
        for _, writer in held:
            writer.close()
        await until(lambda: guard.open == 0 and not guard.per_client)


@pytest.mark.system
async def test_an_idle_connection_is_dropped_after_the_header_timeout(tmp_path: Path) -> None:
    limits = ConnectionLimits(header_timeout_seconds=0.3)
    async with running(tmp_path, limits) as server:
        port, guard = bound_port(server), server.connection_guard
        reader, _ = await connect(port)
        started = time.monotonic()
        assert await closed_within(reader, 2.0) == b""
        assert 0.25 <= time.monotonic() - started < 1.5
        await until(lambda: guard.open == 0)
        assert guard.timed_out == 1


@pytest.mark.system
async def test_a_header_sent_one_byte_at_a_time_is_cut_off(tmp_path: Path) -> None:
    limits = ConnectionLimits(header_timeout_seconds=0.5)
    async with running(tmp_path, limits) as server:
        port, guard = bound_port(server), server.connection_guard
        reader, writer = await connect(port)
        started = time.monotonic()
        request = b"GET /healthz HTTP/1.1\r\nhost: x\r\n" + b"x-pad: " + b"a" * 200
        with pytest.raises((ConnectionError, AssertionError)):
            for byte in request:  # each byte is progress, but the head never completes
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.02)
                assert not reader.at_eof()
        assert time.monotonic() - started < 2.0
        await until(lambda: guard.open == 0)
        assert guard.timed_out == 1


@pytest.mark.system
async def test_a_body_that_never_completes_is_cut_off(tmp_path: Path) -> None:
    limits = ConnectionLimits(header_timeout_seconds=5.0, body_timeout_seconds=0.3)
    async with running(tmp_path, limits) as server:
        port, guard = bound_port(server), server.connection_guard
        reader, writer = await connect(port)
        token = TOKENS.by_role[Role.OPERATOR]
        writer.write(
            b"PUT /v1/mode HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"authorization: Bearer " + token.encode() + b"\r\ncontent-length: 100\r\n\r\n{"
        )
        await writer.drain()
        started = time.monotonic()
        await closed_within(reader, 2.0)
        assert 0.25 <= time.monotonic() - started < 1.5
        await until(lambda: guard.open == 0)
        assert guard.timed_out == 1


@pytest.mark.system
async def test_keep_alive_requests_and_slow_handlers_are_not_cut_off(tmp_path: Path) -> None:
    # The head deadline restarts for every request, and a handler slower than it is fine:
    # the client owes nothing while its request is being answered.
    limits = ConnectionLimits(header_timeout_seconds=0.4, keep_alive_seconds=5)
    async with running(tmp_path, limits) as server:
        port, guard = bound_port(server), server.connection_guard
        async with httpx.AsyncClient(
            trust_env=False, timeout=5.0, headers=TOKENS.header(Role.VIEWER)
        ) as client:
            for _ in range(3):
                assert (await client.get(f"http://127.0.0.1:{port}/slow")).status_code == 200
                await asyncio.sleep(0.2)
            assert guard.open == 1  # one connection, kept alive across the requests
            assert guard.timed_out == 0


def test_connection_cap_leaves_the_device_sockets_their_descriptors() -> None:
    assert connection_cap(256, open_files_limit=1 << 20, device_sockets=96) == 256
    room = 1024 - 96 - ACCEPT_BACKLOG - FD_MARGIN
    assert connection_cap(5000, open_files_limit=1024, device_sockets=96) == room
    assert connection_cap(5000, open_files_limit=300, device_sockets=96) == MIN_CONNECTIONS


def test_the_daemon_sizes_the_api_cap_to_its_open_files_limit(tmp_path: Path) -> None:
    config = small_config(tmp_path, max_connections=2000, max_connections_per_client=7)
    daemon = Daemon(config)
    daemon.open_files_limit = 1024
    limits = daemon.connection_limits()
    # three devices: at most three device sockets at once
    assert limits.max_connections == 1024 - 3 - ACCEPT_BACKLOG - FD_MARGIN
    assert limits.max_per_client == 7
    daemon.open_files_limit = 1 << 20
    assert daemon.connection_limits().max_connections == 2000


@pytest.mark.system
async def test_a_tls_handshake_that_never_ends_is_cut_off_at_the_head_deadline(
    tmp_path: Path,
) -> None:
    """asyncio's own handshake limit is 60 s; the API's is its header_timeout_seconds."""
    authority = trustme.CA()
    certificate = authority.issue_cert("127.0.0.1")
    cert_file, key_file = tmp_path / "c.pem", tmp_path / "k.pem"
    certificate.cert_chain_pems[0].write_to_path(cert_file)
    certificate.private_key_pem.write_to_path(key_file)
    app = build_app(make_view(tmp_path), TOKENS)
    limits = ConnectionLimits(header_timeout_seconds=0.5)
    async with serve(
        app, "127.0.0.1", 0, limits=limits, tls_cert_file=str(cert_file),
        tls_key_file=str(key_file),
    ) as server:  # fmt: skip
        reader, writer = await connect(bound_port(server))  # TCP only: no ClientHello
        started = time.monotonic()
        with contextlib.suppress(ConnectionResetError):  # a reset is closed all the same
            assert await closed_within(reader, 5.0) == b""
        assert time.monotonic() - started < 3.0
        writer.close()
