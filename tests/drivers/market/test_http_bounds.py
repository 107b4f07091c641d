"""The market feeds' HTTP layer: bodies too large, too deep or dripping are MalformedReply/Timeout."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from drivers.bounds import MAX_HTTP_BODY_BYTES
from drivers.errors import MalformedReply, Timeout
from drivers.market.http import JsonEndpoint


class Endless(httpx.AsyncByteStream):
    """A body that never ends (counts what was taken from it)."""

    def __init__(self, delay: float = 0.0) -> None:
        self.sent = 0
        self.delay = delay

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b"["
        while True:
            if self.delay:
                await asyncio.sleep(self.delay)
            self.sent += 65536
            yield b"1," * 32768


def endpoint(stream: httpx.AsyncByteStream | bytes, timeout: float = 2.0) -> JsonEndpoint:
    def handler(request: httpx.Request) -> httpx.Response:
        if isinstance(stream, bytes):
            return httpx.Response(200, content=stream)
        return httpx.Response(200, stream=stream)

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return JsonEndpoint("feed", client, timeout_seconds=timeout)


async def test_an_endless_body_is_cut_at_the_limit() -> None:
    stream = Endless()
    with pytest.raises(MalformedReply, match="larger than"):
        await endpoint(stream).request("GET", "http://feed.invalid/x")
    assert stream.sent <= MAX_HTTP_BODY_BYTES + 65536


async def test_a_dripping_body_meets_the_whole_exchange_deadline() -> None:
    with pytest.raises(Timeout):
        await endpoint(Endless(delay=0.05), timeout=0.3).request("GET", "http://feed.invalid/x")


@pytest.mark.parametrize(
    "body",
    [b"[" * 10_000 + b"]" * 10_000, b"[" + b"9" * 5_000 + b"]"],
    ids=["deep", "huge_integer"],
)
async def test_deep_and_huge_bodies_are_malformed(body: bytes) -> None:
    with pytest.raises(MalformedReply):
        await endpoint(body).request("GET", "http://feed.invalid/x")
