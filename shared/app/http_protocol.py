"""uvicorn's httptools protocol with the limits it lacks: the size of a request's head
(request line and headers), the time to send it, and the pace of its body.

Without them one anonymous request with a 300 MiB header is buffered whole (the process
grew by half a gigabyte and every service in it stalled), and connections that send their
headers — or their body — a byte at a time are kept forever. h11 has a head size limit of
its own; httptools, the parser the platform runs, has none.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_HEAD_END = b"\r\n\r\n"
_TOO_LARGE_TEXT = b"Request header fields are too large"
# How long a refused connection still takes (and drops) what the client sends: closing on
# unread data would reset the connection, and the client would never read the 431.
_LINGER_SECONDS = 2.0


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """A head above ``max_head_bytes`` is answered 431 — before the parser sees any of the
    chunk that holds it, so no request in that chunk starts — and the connection closed; a
    head not complete ``head_seconds`` after its first byte (a new connection's: after it
    opened) closes the connection, unless an earlier answer on it is still streaming.
    Bodies are the application's (its own size limit), answers have no time limit.

    A body gets ``head_seconds`` from the end of its head, and one second more for each
    ``body_min_rate`` bytes that arrive (Apache's ``RequestReadTimeout body=…,MinRate=…``):
    slower, the connection is closed — unless the server is the slow one (it stopped
    reading because the application has not taken what came).

    Head bytes are counted up to the blank line that ends the head; a head that starts in
    the same read as the previous request's end is counted from the next read on (the
    limit holds within one read: at most 256 KiB more)."""

    max_head_bytes = 64 * 1024
    head_seconds = 10.0
    body_min_rate = 500

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True
        self._head_bytes = 0
        self._tail = b""  # the last bytes of the head so far: its end may straddle reads
        self._head_timer: asyncio.TimerHandle | None = None
        self._refused = False
        self._body_timer: asyncio.TimerHandle | None = None
        self._body_deadline = 0.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        self._stop_body_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # dropped until the linger ends
        if self._in_head:
            seen = self._tail + data
            end = seen.find(_HEAD_END)
            head_part = len(data) if end < 0 else end + len(_HEAD_END) - len(self._tail)
            if self._head_bytes + head_part > self.max_head_bytes:
                self._refuse()
                return
            if end < 0:
                self._head_bytes += len(data)
                self._tail = seen[-(len(_HEAD_END) - 1) :]
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._head_timer is None:
            self._arm_head_timer()

    def on_headers_complete(self) -> None:
        self._in_head, self._head_bytes, self._tail = False, 0, b""
        self._stop_head_timer()
        self._body_deadline = self.loop.time() + self.head_seconds
        self._body_timer = self.loop.call_at(self._body_deadline, self._body_too_slow)
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._body_deadline += len(body) / self.body_min_rate
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._stop_body_timer()
        super().on_message_complete()
        self._in_head, self._head_bytes, self._tail = True, 0, b""

    def _refuse(self) -> None:
        self._refused = True
        self._stop_head_timer()
        headers = b"".join(
            name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers
        )
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            + headers
            + b"content-type: text/plain; charset=utf-8\r\n"
            + b"content-length: "
            + str(len(_TOO_LARGE_TEXT)).encode()
            + b"\r\nconnection: close\r\n\r\n"
            + _TOO_LARGE_TEXT
        )
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(_LINGER_SECONDS, self.transport.close)

    def _arm_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self.head_seconds, self._head_too_slow)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _stop_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _body_too_slow(self) -> None:
        self._body_timer = None
        if self.transport.is_closing():
            return
        now = self.loop.time()
        if self.flow.read_paused:  # the application's turn: the client waits on it
            self._body_deadline = max(self._body_deadline, now + self.head_seconds)
        if now < self._body_deadline:  # bytes came meanwhile: their time first
            self._body_timer = self.loop.call_at(self._body_deadline, self._body_too_slow)
            return
        self.transport.close()

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if not self._in_head or self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # A head sent behind an answer still streaming: the answer goes on; look again.
            self._arm_head_timer()
            return
        self.transport.close()


def guarded_protocol(
    max_head_bytes: int, head_seconds: float, body_min_rate: int = 500
) -> type[GuardedHttpToolsProtocol]:
    """The protocol class with these limits (uvicorn makes one instance per connection)."""
    return type(
        "GuardedHttpToolsProtocol",
        (GuardedHttpToolsProtocol,),
        {
            "max_head_bytes": max_head_bytes,
            "head_seconds": head_seconds,
            "body_min_rate": body_min_rate,
        },
    )
