"""``/metrics`` (Prometheus text format), request latency and correlation ids for a service.

Process-local counters and histograms come from ``shared.app.observability``; the outbox
backlog and the projections' lag are read from the database at scrape time, so any
instance reports the platform-wide figures.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

from fastapi import APIRouter, FastAPI, Request, Response
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from sqlalchemy import Connection
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.app.observability import HTTP_LATENCY, correlation_var
from shared.app.platform import Platform
from shared.eventstore.applied import parked_counts
from shared.eventstore.db import DatabaseUnavailable
from shared.eventstore.outbox import outbox_backlog
from shared.eventstore.progress import projection_lag
from shared.eventstore.projection import Projection
from shared.http.validation import GIVEN_CORRELATION_ID

access_log = logging.getLogger("ticketline.http")
QUIET_PATHS = ("/health/", "/metrics")


def install_observability(app: FastAPI, service: str) -> None:
    app.add_middleware(ObservabilityMiddleware, service=service)
    app.include_router(metrics_router())


class ObservabilityMiddleware:
    """Pure ASGI (streams pass through untouched): a correlation id for every request —
    the caller's ``X-Correlation-ID`` when it is a UUID, else a new one, put back into
    the request so the events it records carry the same id — one access-log line, and
    the latency histogram labelled with the route template."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cid = _valid_correlation_id(scope)
        if cid is None:
            given = _given_correlation_id(scope)
            if given is not None:
                # Replaced, yet the caller's value is still checked as text (validation.py).
                scope.setdefault("state", {})[GIVEN_CORRELATION_ID] = given
            cid = str(uuid4())
            headers = [(k, v) for k, v in scope["headers"] if k != b"x-correlation-id"]
            scope["headers"] = [*headers, (b"x-correlation-id", cid.encode())]
        token = correlation_var.set(cid)
        status = 500
        started = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                names = {k.lower() for k, _ in message.get("headers", [])}
                if b"x-correlation-id" not in names:
                    message["headers"] = [
                        *message.get("headers", []),
                        (b"x-correlation-id", cid.encode()),
                    ]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - started
            route = _route_template(scope)
            method = scope["method"]
            HTTP_LATENCY.labels(self.service, method, route, str(status)).observe(elapsed)
            quiet = scope["path"].startswith(QUIET_PATHS)
            access_log.log(
                logging.DEBUG if quiet else logging.INFO,
                "%s %s %s",
                method,
                route,
                status,
                extra={
                    "method": method,
                    "route": route,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 2),
                },
            )
            correlation_var.reset(token)


def _given_correlation_id(scope: Scope) -> str | None:
    for key, value in scope["headers"]:
        if key == b"x-correlation-id":
            return str(value.decode("latin-1"))
    return None


def _valid_correlation_id(scope: Scope) -> str | None:
    given = _given_correlation_id(scope)
    if given is None:
        return None
    try:
        return str(UUID(given))
    except ValueError:
        return None


def _route_template(scope: Scope) -> str:
    """The matched route's path template; one label for everything unmatched, so that
    probing random URLs cannot create unbounded series."""
    route = scope.get("route")
    if route is not None and hasattr(route, "path"):
        return str(route.path)
    app = scope.get("app")
    return _matching_path(getattr(getattr(app, "router", None), "routes", []), scope) or "unmatched"


def _matching_path(routes: Iterable[Any], scope: Scope) -> str | None:
    """The path template of the route that takes ``scope``, looking into the routers the
    app included (FastAPI keeps them whole; their routes carry the paths) — what a
    request refused before routing (413) is labelled with."""
    for candidate in routes:
        included = getattr(candidate, "original_router", None)
        if included is not None:
            if (found := _matching_path(included.routes, scope)) is not None:
                return found
            continue
        match, _ = candidate.matches(scope)
        if match == Match.FULL and hasattr(candidate, "path"):
            return str(candidate.path)
    return None


def metrics_router() -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get(
        "/metrics",
        summary="Prometheus metrics",
        description="Request latency, events appended (this process), outbox backlog and "
        "age of the oldest unpublished event; per projection its applied position, its lag "
        "in ledger positions and its parked events (database).",
        response_class=Response,
    )
    async def metrics(request: Request) -> Response:
        platform: Platform = request.app.state.platform
        families = await database_metrics(platform)
        snapshot = CollectorRegistry(auto_describe=False)
        snapshot.register(_Snapshot(families))
        body = generate_latest(REGISTRY) + generate_latest(snapshot)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return router


class _Snapshot:
    """A collector yielding families computed for this scrape."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


def known_projections(platform: Platform) -> dict[str, Projection]:
    from shared.app.registry import all_handlers

    return all_handlers(platform)


@dataclass(frozen=True)
class Progress:
    """A projection (or reactor) in ledger terms."""

    name: str
    applied: int  # everything of its stream types up to this position is applied
    lag: int  # the newest event of its stream types minus ``applied``
    parked: int  # events parked (poison), waiting for `ticketline parked retry|skip`


def projections_progress(
    conn: Connection, projections: Iterable[tuple[str, Projection]]
) -> list[Progress]:
    parked = parked_counts(conn)
    return [
        Progress(name, *projection_lag(conn, name, p.stream_types), parked.get(name, 0))
        for name, p in projections
    ]


async def database_metrics(platform: Platform) -> list[Metric]:
    backlog = GaugeMetricFamily(
        "ticketline_outbox_backlog", "Outbox rows not yet published to Kafka."
    )
    oldest = GaugeMetricFamily(
        "ticketline_outbox_oldest_unpublished_age_seconds",
        "Age of the oldest unpublished outbox row (0 when the outbox is drained).",
    )
    lag = GaugeMetricFamily(
        "ticketline_projection_lag",
        "Events the projection is behind, in ledger positions: the newest event of its "
        "stream types minus its applied position (everything up to which is applied, "
        "whatever a broker's offsets say).",
        labels=["projection"],
    )
    checkpoint = GaugeMetricFamily(
        "ticketline_projection_checkpoint",
        "The projection's applied position: every event of its stream types up to this "
        "global position is applied (or parked).",
        labels=["projection"],
    )
    parked = GaugeMetricFamily(
        "ticketline_parked_events",
        "Events a projection or reactor parked after its retries (poison events), not yet "
        "resolved (`ticketline parked`).",
        labels=["projection"],
    )
    head = GaugeMetricFamily("ticketline_ledger_head", "Highest global position in the ledger.")
    reachable = GaugeMetricFamily(
        "ticketline_database_up",
        "1 when this scrape read the database; 0 when it could not, or (SQLite) the file "
        "was removed or replaced while open (the database's figures are then left out, "
        "the process's own are still here).",
    )
    projections = sorted(known_projections(platform).items())

    def read(conn: Connection) -> tuple[tuple[int, object], int, list[Progress]]:
        progress = projections_progress(conn, projections)
        return outbox_backlog(conn), platform.store.last_position(conn), progress

    try:
        if gone := platform.db.file_problem():  # readable, but not where writes last
            raise DatabaseUnavailable(gone)
        (count, oldest_at), last, progress = await platform.db.read(read)
    except DatabaseUnavailable:
        # An outage is when the request counts (the 503s) matter most: scrape on.
        reachable.add_metric([], 0)
        return [reachable]
    reachable.add_metric([], 1)
    backlog.add_metric([], count)
    oldest.add_metric([], _age_seconds(platform.clock.now(), oldest_at))
    head.add_metric([], last)
    for one in progress:
        checkpoint.add_metric([one.name], one.applied)
        lag.add_metric([one.name], one.lag)
        parked.add_metric([one.name], one.parked)
    return [reachable, backlog, oldest, head, checkpoint, lag, parked]


def _age_seconds(now: datetime, since: Any) -> float:
    if since is None:
        return 0.0
    if isinstance(since, datetime):
        return max(0.0, (now - since).total_seconds())
    return 0.0
