"""The HTTP server's own limits (shared/app/http_protocol.py): a request's head too large
or too slow ends the connection before it costs memory or a slot; bodies and streamed
answers are untouched. Real uvicorn servers on loopback, spoken to over raw sockets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from shared.app.platform import Platform
from shared.app.runtime import make_server
from tests.support.ports import free_port

pytestmark = pytest.mark.parametrize("backend", ["sqlite"])


@asynccontextmanager
async def intake_server(platform: Platform) -> AsyncIterator[int]:
    platform.settings = platform.settings.model_copy(
        update={"http_max_header_bytes": 8192, "http_header_timeout_seconds": 0.5}
    )
    port = free_port()
    server = make_server(platform, "intake", "127.0.0.1", port)
    task = asyncio.create_task(server.serve())
    for _ in range(200):
        if server.started or task.done():
            break
        await asyncio.sleep(0.025)
    assert server.started
    try:
        yield port
    finally:
        server.stop()
        await asyncio.wait_for(task, 15)


async def exchange(port: int, *chunks: bytes, pause: float = 0.0) -> bytes:
    """What the server says to ``chunks`` sent in turn (``pause`` between them), read
    until it closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for chunk in chunks:
            writer.write(chunk)
            await writer.drain()
            await asyncio.sleep(pause)
        return await asyncio.wait_for(reader.read(), 10)
    except ConnectionResetError:
        return b""
    finally:
        writer.close()


async def test_a_head_above_the_limit_is_431_and_a_normal_one_is_served(
    platform: Platform,
) -> None:
    async with intake_server(platform) as port:
        padding = b"X-Pad: " + b"a" * 1024 + b"\r\n"
        big = b"GET /health/live HTTP/1.1\r\nHost: t\r\n" + padding * 64
        answer = await exchange(port, big[:40_000], big[40_000:], pause=0.05)
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]
        ok = await exchange(
            port, b"GET /health/live HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        )
        assert ok.startswith(b"HTTP/1.1 200 "), ok[:100]


@pytest.mark.parametrize("body_kib", [20, 100, 600])
async def test_a_body_sent_with_its_head_is_not_counted_as_head(
    platform: Platform, body_kib: int
) -> None:
    """A body in the same write as its head (within one read of the server, or not)
    reaches the application, which answers 401 to no credentials: no 431."""
    async with intake_server(platform) as port:
        body = b"{" + b" " * (body_kib * 1024) + b"}"
        head = (
            b"POST /tickets HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n"
        )
        answer = await exchange(port, head + body)
        assert answer.startswith(b"HTTP/1.1 401 "), answer[:100]


async def test_pipelined_requests_are_each_a_head_of_their_own(platform: Platform) -> None:
    """300 small requests in one write (12 KiB, over the 8 KiB limit together): all served."""
    async with intake_server(platform) as port:
        one = b"GET /health/live HTTP/1.1\r\nHost: t\r\n\r\n"
        last = b"GET /health/live HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        answer = await exchange(port, one * 299 + last)
        assert answer.count(b"HTTP/1.1 200 ") == 300


async def test_a_head_sent_too_slowly_closes_the_connection(platform: Platform) -> None:
    async with intake_server(platform) as port:
        started = asyncio.get_running_loop().time()
        answer = await exchange(port, b"GET /health/live HTTP/1.1\r\n", b"Host: t\r\n", pause=0.3)
        # Closed without an answer about 0.5 s after the first byte, not kept forever.
        assert answer == b"" and asyncio.get_running_loop().time() - started < 5
        # A connection that never sends a byte is closed too.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()


async def test_a_body_trickled_too_slowly_closes_the_connection(platform: Platform) -> None:
    """The head's time, plus a second per 500 bytes that arrive: a body trickled a byte at
    a time held its connection (and its request) forever."""
    async with intake_server(platform) as port:
        head = (
            b"POST /tickets HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n"
        )
        started = asyncio.get_running_loop().time()
        answer = await exchange(port, head, *[b" "] * 30, pause=0.1)
        assert answer == b"" and asyncio.get_running_loop().time() - started < 5
        # At a body's pace, the same request is answered (401: no credentials).
        body = b"{" + b" " * 98 + b"}"
        paced = await exchange(
            port, head.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"), body[:50], body[50:]
        )
        assert paced.startswith(b"HTTP/1.1 401 "), paced[:100]
