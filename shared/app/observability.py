"""Operations: structured logs with correlation ids, process-local Prometheus metrics, and
the broker check behind ``/health/ready``.

Every ticketline process (service, relay, projector, jobs) logs one JSON object per line
to stderr unless ``TICKETLINE_LOG_FORMAT=text``. Request bodies are never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import time
from collections.abc import Callable
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Histogram

from shared.app.config import Settings

# The request's (or batch's) correlation id, for every log line written while handling it.
correlation_var: ContextVar[str | None] = ContextVar("ticketline_correlation_id", default=None)

# Process-wide: every process exposes its own (Prometheus sums across instances).
HTTP_LATENCY = Histogram(
    "ticketline_http_request_duration_seconds",
    "HTTP request latency by route template (never the raw path), method and status.",
    ["service", "method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
# --- logs -----------------------------------------------------------------------------

_STANDARD_ATTRS = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys() | {"message", "asctime"}
)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, service, correlation_id, and
    whatever the caller passed in ``extra=``."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "service": self.service,
        }
        if cid := correlation_var.get():
            data["correlation_id"] = cid
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                data[key] = value
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str, ensure_ascii=False)


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        cid = correlation_var.get()
        return f"{line} [{cid}]" if cid else line


class BrokerLogThrottle(logging.Filter):
    """Each aiokafka message (by its template) at most once per ``seconds``. With the broker
    away, every consumer and producer logs each reconnect attempt, tens a second: a black-
    box run wrote 115k lines in 90 s per projector, and the process spent its loop on them."""

    def __init__(self, seconds: float = 10.0, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.seconds, self.clock = seconds, clock
        self._last: dict[tuple[str, str], float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("aiokafka"):
            return True
        key, now = (record.name, str(record.msg)), self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.seconds:
            return False
        if len(self._last) > 1000:  # bounded: templates are few, but never trust that
            self._last.clear()
        self._last[key] = now
        return True


def configure_logging(settings: Settings, service: str) -> None:
    """Log to stderr as JSON (default) or plain text."""
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(
            _TextFormatter(f"%(asctime)s %(levelname)s {service} %(name)s %(message)s")
        )
    handler._ticketline = True  # type: ignore[attr-defined]
    handler.addFilter(BrokerLogThrottle())
    root = logging.getLogger()
    for old in list(root.handlers):  # ours from an earlier call; test harness handlers stay
        if getattr(old, "_ticketline", False):
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("aiokafka").setLevel(logging.WARNING)


# --- broker check ---------------------------------------------------------------------

_broker_checks: dict[str, tuple[float, str | None]] = {}


async def broker_problem(settings: Settings) -> str | None:
    """None when the Kafka cluster answers a metadata request, else why not. Cached for
    ``ready_broker_cache_seconds`` so frequent probes cost one request per period."""
    servers = settings.kafka_bootstrap_servers
    if not servers or not settings.ready_requires_broker:
        return None
    checked = _broker_checks.get(servers)
    if checked and time.monotonic() - checked[0] < settings.ready_broker_cache_seconds:
        return checked[1]
    problem = await _probe_broker(servers, settings.ready_broker_timeout_seconds)
    _broker_checks[servers] = (time.monotonic(), problem)
    return problem


async def _probe_broker(servers: str, seconds: float) -> str | None:
    from aiokafka.client import AIOKafkaClient

    client = AIOKafkaClient(
        bootstrap_servers=servers, request_timeout_ms=int(seconds * 1000), retry_backoff_ms=100
    )
    try:
        await asyncio.wait_for(client.bootstrap(), seconds)
        return None
    except Exception as exc:  # unreachable, refused, timed out: all "not ready"
        return f"broker unreachable ({servers}): {type(exc).__name__}: {exc}"
    finally:
        # Closing a half-open client must not fail the probe.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.close(), seconds)
