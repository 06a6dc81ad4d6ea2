"""HTTP hardening every service shares: security headers, CORS (off unless origins are
configured), a request body size limit and a token-bucket rate limit."""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import FastAPI, Request
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.app.config import AuthSettings
from shared.http.context import Principal
from shared.http.problems import PROBLEM_BASE, ProblemError

SECURITY_HEADERS = {
    b"x-content-type-options": b"nosniff",
    b"x-frame-options": b"DENY",
    b"content-security-policy": b"frame-ancestors 'none'",
    b"referrer-policy": b"no-referrer",
}
# Swagger UI and the OpenAPI document may be cached; API answers never (personal data).
CACHEABLE_PATHS = ("/docs", "/redoc", "/openapi.json")


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cacheable = scope["path"].startswith(CACHEABLE_PATHS)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                for name, value in SECURITY_HEADERS.items():
                    if name not in present:
                        headers.append((name, value))
                if not cacheable and b"cache-control" not in present:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class BodyTooLarge(Exception):
    """An upload (``/imports/``) went past its limit while being read."""


# File uploads: streamed by their route (never buffered here), under their own limit.
UPLOAD_PREFIX = "/imports/"


class BodyLimitMiddleware:
    """413 for a body above ``max_bytes``: by Content-Length up front, else while reading.
    Uploads to ``/imports/`` have their own limit (``upload_max_bytes``) and are counted
    as their route streams them, not read here."""

    def __init__(self, app: ASGIApp, max_bytes: int, upload_max_bytes: int | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.upload_max_bytes = upload_max_bytes or max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if scope["path"].startswith(UPLOAD_PREFIX):
            await self._upload(scope, receive, send, declared)
            return
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(scope, send)
            return
        if declared is not None or scope["method"] in {"GET", "HEAD", "OPTIONS", "DELETE"}:
            # Content-Length is what servers read up to; a GET carries no body we read.
            await self.app(scope, receive, send)
            return
        # Chunked body: read it here (bounded), then hand it on.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                await self._reject(scope, send)
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _upload(
        self, scope: Scope, receive: Receive, send: Send, declared: bytes | None
    ) -> None:
        limit = self.upload_max_bytes
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._reject(scope, send, limit)
            return
        size = 0

        async def counted() -> Message:
            nonlocal size
            message = await receive()
            size += len(message.get("body", b""))
            if size > limit:
                raise BodyTooLarge(f"the limit is {limit} bytes")
            return message

        await self.app(scope, counted, send)

    async def _reject(self, scope: Scope, send: Send, limit: int | None = None) -> None:
        body = json.dumps(
            {
                "type": PROBLEM_BASE + "payload-too-large",
                "title": "Request body too large",
                "status": 413,
                "detail": f"the limit is {limit or self.max_bytes} bytes",
                "instance": scope["path"],
            },
            separators=(",", ":"),  # as every other problem is written
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/problem+json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class ProblemCORSMiddleware(CORSMiddleware):
    """Starlette's CORS, with a refused preflight answered as a problem (it writes plain
    text: "Disallowed CORS origin") like every other error."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code != 400:
            return response
        body = json.dumps(
            {
                "type": PROBLEM_BASE + "cors-refused",
                "title": "Cross-origin request refused",
                "status": 400,
                "detail": bytes(response.body).decode(),
            }
        ).encode()
        headers = {
            k: v for k, v in response.headers.items() if k not in ("content-type", "content-length")
        }
        return Response(body, 400, headers, media_type="application/problem+json")


# What a browser client may send across origins: every request header a route reads.
CORS_HEADERS = [
    "Authorization",
    "Content-Type",
    "Idempotency-Key",
    "If-Match",
    "Last-Event-ID",
    "X-API-Key",
    "X-Correlation-ID",
]


def install_security(app: FastAPI, auth: AuthSettings) -> None:
    # Starlette runs the last added middleware first: the security headers wrap every answer
    # (a 413 and a refused preflight too), then CORS, then the size limit.
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=auth.max_body_bytes,
        upload_max_bytes=auth.import_max_body_bytes,
    )
    if auth.cors_allow_origins:
        app.add_middleware(
            ProblemCORSMiddleware,
            allow_origins=auth.cors_allow_origins,
            allow_methods=["GET", "POST", "PATCH", "PUT", "DELETE"],
            allow_headers=CORS_HEADERS,
            expose_headers=[
                "ETag",
                "Location",
                "X-Export-Summary",
                "Retry-After",
                "Link",
                "X-Correlation-ID",
                "Idempotent-Replayed",
                "Content-Disposition",
            ],
        )
    app.add_middleware(SecurityHeadersMiddleware)


@dataclass
class _Bucket:
    tokens: float
    updated: float


class TokenBucketLimiter:
    """Per-key token buckets held in this process: each replica limits on its own, so the
    effective limit across N replicas is up to N times the setting."""

    def __init__(self, per_minute: float, burst: int, now: Callable[[], float] = time.monotonic):
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.now = now
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """0 when admitted, else the seconds until a request would be."""
        with self._lock:
            now = self.now()
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = _Bucket(self.burst, now)
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return 0.0
            if self.rate <= 0:
                return 60.0
            return (1.0 - bucket.tokens) / self.rate


def rate_refusal(request: Request, name: str, principal: Principal) -> ProblemError | None:
    """One request of ``principal`` against the ``name`` rate limit (per subject): the 429
    problem with Retry-After when its bucket is empty, else None."""
    state = request.app.state
    limiters: dict[str, TokenBucketLimiter] | None = getattr(state, "limiters", None)
    if limiters is None:
        limiters = state.limiters = {}
    limiter = limiters.get(name)
    if limiter is None:
        auth = state.platform.settings.auth
        limiter = limiters[name] = TokenBucketLimiter(
            getattr(auth, f"{name}_rate_per_minute"), getattr(auth, f"{name}_burst")
        )
    wait = limiter.take(principal.subject)
    if wait <= 0:
        return None
    retry_after = max(1, math.ceil(wait))
    return ProblemError(
        429,
        "rate-limited",
        "Too many requests",
        f"{name} is limited per caller; retry in {retry_after} s",
        headers={"Retry-After": str(retry_after)},
        retry_after=retry_after,
    )
