"""A minimal in-process HTTP client for ASGI apps, for the fuzz stage.

Unlike httpx's ASGITransport it returns from a streaming answer (SSE) after its first
chunks — disconnecting like a client that hangs up — and it reports what the app raised,
also after the answer started (a stream that dies mid-way is a failure, not a 200).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlencode, urlsplit


@dataclass
class Answer:
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    error: BaseException | None = None
    timed_out: bool = False

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")


def _header_bytes(value: Any) -> bytes:
    text = str(value)
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8", errors="surrogateescape")


async def call(
    app: Any,
    method: str,
    url: str,
    *,
    headers: dict[str, Any] | list[tuple[str, Any]] | None = None,
    params: dict[str, Any] | None = None,
    body: bytes = b"",
    stream_chunks: int = 2,
    give_up_after: float = 10.0,
) -> Answer:
    """One request. A streaming answer is read for ``stream_chunks`` body chunks (or until
    the app pauses for a moment), then the client disconnects."""
    parts = urlsplit(url)
    raw_path = parts.path or "/"
    query = parts.query
    if params:
        extra = urlencode(params, doseq=True)
        query = f"{query}&{extra}" if query else extra
    pairs = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    if body and not any(k.lower() == "content-length" for k, _ in pairs):
        pairs.append(("content-length", str(len(body))))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method.upper(),
        "scheme": "http",
        "path": unquote(raw_path, errors="surrogateescape"),
        "raw_path": raw_path.encode("latin-1", errors="replace"),
        "query_string": query.encode("latin-1", errors="replace"),
        "root_path": "",
        "headers": [(k.lower().encode("latin-1"), _header_bytes(v)) for k, v in pairs],
        "server": ("fuzz.test", 80),
        "client": ("127.0.0.1", 40000),
    }
    answer = Answer()
    hang_up = asyncio.Event()
    sent_body = False
    chunks = 0
    finished = asyncio.Event()

    async def receive() -> dict[str, Any]:
        nonlocal sent_body
        if not sent_body:
            sent_body = True
            return {"type": "http.request", "body": body, "more_body": False}
        await hang_up.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal chunks
        if message["type"] == "http.response.start":
            answer.status = message["status"]
            answer.headers = {
                k.decode("latin-1").lower(): v.decode("latin-1")
                for k, v in message.get("headers", [])
            }
        elif message["type"] == "http.response.body":
            answer.body += message.get("body", b"")
            chunks += 1
            if not message.get("more_body", False):
                finished.set()
            elif chunks >= stream_chunks:
                hang_up.set()

    async def run() -> None:
        try:
            await app(scope, receive, send)
        finally:
            finished.set()

    task = asyncio.ensure_future(run())
    try:
        # A stream that only heartbeats is hung up on after a short pause.
        while not finished.is_set():
            try:
                await asyncio.wait_for(asyncio.shield(finished.wait()), 0.5)
            except TimeoutError:
                if answer.status is not None:
                    hang_up.set()
                give_up_after -= 0.5
                if give_up_after <= 0:
                    answer.timed_out = True
                    task.cancel()
                    break
        hang_up.set()
        await asyncio.wait_for(task, 5)
    except asyncio.CancelledError:
        if not answer.timed_out:
            raise
    except BaseException as exc:  # what the app raised is the finding
        answer.error = exc
    return answer
