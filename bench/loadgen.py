"""A small HTTP/1.1 load generator on raw asyncio streams.

It shares the machine's cores with the server it measures, so it does as little as it can:
requests are prebuilt bytes, responses are parsed just enough to find the status and the
Content-Length (every JSON answer of FastAPI/uvicorn has one; anything else counts as an
error and the connection is reopened). ``concurrency`` callers, each on its own keep-alive
connection, send one request at a time; the run stops after ``requests`` or ``seconds``,
whichever comes first, after a warm-up that is not measured.

    make = json_post("/tickets", "127.0.0.1", port, body_for=ticket_body,
                     headers={"Authorization": f"Bearer {token}"})
    result = await run_load("127.0.0.1", port, make, requests=2000, seconds=30)
    result.rate, result.p99, result.errors, result.detail["statuses"]
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping

import orjson

from bench.measure import Result

RequestFactory = Callable[[], bytes]

_PHONE = "13800000000"
_SERIAL = "SN-000000"


def _ticket_template() -> bytes:
    from services.intake.schemas import RECEIVE_EXAMPLE

    body = {
        **RECEIVE_EXAMPLE,
        "customer": {**RECEIVE_EXAMPLE["customer"], "phone": _PHONE},
        "product": {**RECEIVE_EXAMPLE["product"], "serial_number": _SERIAL},
    }
    return orjson.dumps(body)


_TEMPLATE: bytes | None = None


def ticket_body(i: int) -> bytes:
    """The README's ``POST /tickets`` body (``RECEIVE_EXAMPLE``) with a phone number and a
    serial number of its own per ``i``, so no request is another's possible duplicate;
    every body has the same length."""
    global _TEMPLATE
    if _TEMPLATE is None:
        _TEMPLATE = _ticket_template()
    return _TEMPLATE.replace(_PHONE.encode(), f"138{i % 10**8:08d}".encode()).replace(
        _SERIAL.encode(), f"SN-{i % 10**6:06d}".encode()
    )


def json_post(
    path: str,
    host: str,
    port: int,
    *,
    body_for: Callable[[int], bytes] = ticket_body,
    headers: Mapping[str, str] | None = None,
    idempotency_prefix: str | None = None,
) -> RequestFactory:
    """A factory of complete ``POST path`` requests (bytes): each call numbers the next
    body and, unless ``idempotency_prefix`` is ``""``, sends a unique ``Idempotency-Key``
    (``<prefix>-<n>``; a random prefix when None)."""
    prefix = uuid.uuid4().hex[:12] if idempotency_prefix is None else idempotency_prefix
    fixed = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: application/json\r\nAccept: application/json\r\n{fixed}"
    ).encode()
    numbers = itertools.count(1)

    def make() -> bytes:
        i = next(numbers)
        body = body_for(i)
        key = f"Idempotency-Key: {prefix}-{i}\r\n" if prefix else ""
        return head + f"{key}Content-Length: {len(body)}\r\n\r\n".encode() + body

    return make


def get(path: str, host: str, port: int, headers: Mapping[str, str] | None = None) -> bytes:
    fixed = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    return f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{fixed}\r\n".encode()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bool, bytes]:
    """(status, the server closes the connection, body) of one Content-Length response."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    at = lower.find(b"\r\ncontent-length:")
    if at < 0:
        raise ValueError("response without Content-Length")
    end = lower.find(b"\r\n", at + 2)
    length = int(head[at + 17 : end])
    body = await reader.readexactly(length) if length else b""
    return status, b"\r\nconnection: close" in lower, body


class _Run:
    def __init__(self, requests: int, seconds: float) -> None:
        self.left = requests
        self.until = time.perf_counter() + seconds
        self.latencies: list[float] = []
        self.statuses: Counter[int] = Counter()
        self.failures: Counter[str] = Counter()

    def take(self) -> bool:
        if self.left <= 0 or time.perf_counter() >= self.until:
            return False
        self.left -= 1
        return True


async def _caller(host: str, port: int, make: RequestFactory, run: _Run) -> None:
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    try:
        while run.take():
            request = make()
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(host, port)
                assert reader is not None
                started = time.perf_counter()
                writer.write(request)
                status, close, _ = await read_response(reader)
                elapsed = time.perf_counter() - started
            except (
                OSError,
                asyncio.IncompleteReadError,
                asyncio.LimitOverrunError,
                ValueError,
            ) as e:
                run.failures[type(e).__name__] += 1
                if writer is not None:
                    writer.close()
                reader = writer = None
                await asyncio.sleep(0.01)  # a dead server must not make this spin
                continue
            run.statuses[status] += 1
            if 200 <= status < 300:
                run.latencies.append(elapsed)
            if close:
                writer.close()
                reader = writer = None
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def _phase(
    host: str, port: int, make: RequestFactory, requests: int, seconds: float, concurrency: int
) -> tuple[_Run, float, float, int]:
    run = _Run(requests, seconds)
    cpu = time.process_time()
    started = time.perf_counter()
    tasks = [asyncio.create_task(_caller(host, port, make, run)) for _ in range(concurrency)]
    # Bounded in time even when the server stops answering: stragglers are cancelled.
    _, pending = await asyncio.wait(tasks, timeout=seconds + 30)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    elapsed = time.perf_counter() - started
    return run, elapsed, time.process_time() - cpu, len(pending)


async def run_load(
    host: str,
    port: int,
    make: RequestFactory,
    *,
    requests: int = 1000,
    seconds: float = 30.0,
    concurrency: int = 8,
    warmup_requests: int | None = None,
    warmup_seconds: float = 5.0,
    server_cpu: Callable[[], float] | None = None,
) -> Result:
    """``concurrency`` keep-alive callers send ``make()`` requests until ``requests`` were
    sent or ``seconds`` passed; first a warm-up (default: 5 per caller, at least 20)
    that is not counted. ``count`` and the latencies are the 2xx answers; ``errors`` the
    other answers, failed exchanges and callers cut off at the end. ``detail`` has the
    answers per status, the failures by kind, the client's own CPU seconds and, given
    ``server_cpu`` (a reading of the server's CPU seconds, e.g.
    ``ServerProcess.cpu_seconds``), the server's CPU seconds during the measured phase."""
    warmup = max(20, 5 * concurrency) if warmup_requests is None else warmup_requests
    if warmup:
        await _phase(host, port, make, warmup, warmup_seconds, concurrency)
    server_before = server_cpu() if server_cpu else 0.0
    run, elapsed, cpu, cut_off = await _phase(host, port, make, requests, seconds, concurrency)
    server_seconds = server_cpu() - server_before if server_cpu else 0.0
    ok = len(run.latencies)
    non_2xx = sum(n for status, n in run.statuses.items() if not 200 <= status < 300)
    return Result(
        count=ok,
        seconds=elapsed,
        latencies=run.latencies,
        errors=non_2xx + sum(run.failures.values()) + cut_off,
        detail={
            "statuses": {str(k): v for k, v in sorted(run.statuses.items())},
            "failures": dict(run.failures),
            "client_cpu_seconds": round(cpu, 3),
            **({"server_cpu_seconds": round(server_seconds, 3)} if server_cpu else {}),
            "concurrency": concurrency,
        },
    )
