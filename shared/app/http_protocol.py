"""uvicorn's httptools protocol with the two limits it lacks: the size of a request's head
(request line and headers) and the time to send it.

Without them one anonymous request with a 300 MiB header is buffered whole (the process
grew by half a gigabyte and every service in it stalled), and connections that send their
headers a byte at a time are kept forever. h11 has a head size limit of its own; httptools,
the parser the platform runs, has none.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"content-length: 35\r\n"
    b"connection: close\r\n"
    b"\r\n"
    b"Request header fields are too large"
)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """A head above ``max_head_bytes`` is answered 431 and the connection closed; a head
    not complete ``head_seconds`` after its first byte (a new connection's: after it
    opened) closes the connection. Bodies are the application's (its own size limit)."""

    max_head_bytes = 64 * 1024
    head_seconds = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0
        self._in_head = True
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._in_head and self._head_timer is None:
            self._arm_head_timer()  # the first bytes of the next request's head
        in_head_before = self._in_head
        super().data_received(data)
        if self._in_head and in_head_before and not self.transport.is_closing():
            # Still reading the head after taking the whole chunk: all of it was head.
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head_bytes:
                self._stop_head_timer()
                self.transport.write(_TOO_LARGE)
                self.transport.close()

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._stop_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        # What comes next is the next request's head; its clock starts with its first
        # byte (till then the connection is idle, or its answer still streams: uvicorn's
        # keep-alive timeout is for idle connections, nothing limits an answer).
        self._in_head, self._head_bytes = True, 0
        self._stop_head_timer()

    def _start_head(self) -> None:
        self._in_head, self._head_bytes = True, 0
        self._stop_head_timer()
        self._arm_head_timer()

    def _arm_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self.head_seconds, self._head_too_slow)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self._in_head and not self.transport.is_closing():
            self.transport.close()


def guarded_protocol(max_head_bytes: int, head_seconds: float) -> type[GuardedHttpToolsProtocol]:
    """The protocol class with these limits (uvicorn makes one instance per connection)."""
    return type(
        "GuardedHttpToolsProtocol",
        (GuardedHttpToolsProtocol,),
        {"max_head_bytes": max_head_bytes, "head_seconds": head_seconds},
    )
