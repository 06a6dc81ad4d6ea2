"""Long-running jobs: services, relay, projectors — alone or all together (embedded)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import signal
import socket
from collections.abc import Awaitable, Iterator, Sequence
from pathlib import Path

import uvicorn
from starlette.applications import Starlette

from shared.app.config import CommandRefused, Settings
from shared.app.http_protocol import guarded_protocol
from shared.app.jobs import FailureReport
from shared.app.platform import Platform
from shared.app.registry import (
    CONSOLE,
    SERVERS,
    all_handlers,
    all_jobs,
    app_factory,
    service_port,
)
from shared.eventstore.db import Database
from shared.eventstore.kafka import TopicWatch, ensure_topics, event_topics
from shared.eventstore.leases import Lease
from shared.eventstore.outbox import KafkaPublisher, OutboxRelay, relay_owner_id
from shared.eventstore.personal import MasterKeyMismatch
from shared.eventstore.progress import LedgerGuard
from shared.eventstore.projection import Projection
from shared.eventstore.pump import LedgerPump
from shared.eventstore.runner import KafkaSource
from shared.http.auth.personal_data import install_log_filter
from shared.kernel.clock import Clock

log = logging.getLogger("ticketline")


def relay_from_settings(
    db: Database, settings: Settings, clock: Clock | None = None
) -> OutboxRelay:
    if not settings.kafka_bootstrap_servers:
        raise RuntimeError("the relay needs KAFKA_BOOTSTRAP_SERVERS")
    publisher = KafkaPublisher(
        settings.kafka_bootstrap_servers, enable_idempotence=settings.kafka_enable_idempotence
    )
    watch = TopicWatch(
        settings.kafka_bootstrap_servers,
        event_topics(settings.kafka_topic_prefix),
        partitions=settings.kafka_topic_partitions,
        replication=settings.kafka_topic_replication,
    )
    return OutboxRelay(
        db,
        publisher,
        batch_size=settings.relay_batch_size,
        lease_seconds=settings.relay_lease_seconds,
        clock=clock,
        topic_prefix=settings.kafka_topic_prefix,
        watch=watch,
        check_seconds=settings.relay_topic_check_seconds,
    )


def ledger_guard(platform: Platform) -> LedgerGuard:
    """Judges a Kafka-fed projection in ledger positions (shared/eventstore/progress.py)."""
    settings = platform.settings
    return LedgerGuard(
        platform.db,
        platform.store,
        clock=platform.clock,
        check_seconds=settings.projector_ledger_check_seconds,
        grace_seconds=settings.projector_ledger_grace_seconds,
        batch_size=settings.projector_batch_size,
    )


class _Server(uvicorn.Server):
    """Several servers share one loop; signals are handled once, by the runner."""

    def __init__(self, config: uvicorn.Config, app: Starlette) -> None:
        super().__init__(config)
        self.app = app

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    def stop(self) -> None:
        """Stop serving. Open event streams end first (``server_stopping``): uvicorn waits
        for every answer in progress, and a stream never ends by itself."""
        self.app.state.stopping = True
        self.should_exit = True


def _install_stop_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)


async def personal_data_ready(platform: Platform) -> None:
    """Refuse to start (a clear message, nothing decrypted) when the configured master key
    is not the one this database's personal-data keys are wrapped with."""
    try:
        await platform.check_personal_data()
    except MasterKeyMismatch as exc:
        await platform.close()
        raise SystemExit(f"Refusing to start: {exc}") from None


# How long a stopping server waits for answers in progress before it cuts them.
STOP_GRACE_SECONDS = 5


def make_server(platform: Platform, service: str, host: str, port: int) -> _Server:
    app = app_factory(service)(platform)
    # log_config=None: uvicorn's loggers go through the root handler (JSON logs); the
    # access log is written by the observability middleware, with correlation ids.
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=STOP_GRACE_SECONDS,
        forwarded_allow_ips=platform.settings.forwarded_allow_ips,
        http=guarded_protocol(
            platform.settings.http_max_header_bytes,
            platform.settings.http_header_timeout_seconds,
            platform.settings.http_body_min_bytes_per_second,
        ),
    )
    install_log_filter()  # on whatever handlers exist now
    return _Server(config, app)


async def run_projector(
    platform: Platform,
    projections: Sequence[Projection],
    stop: asyncio.Event,
    *,
    source: str = "ledger",
) -> None:
    """Keep the projections up to date until ``stop`` is set: from Kafka, a consumer group
    per projection; from the ledger, one pump for them all (see ``pump_ledger``)."""
    settings = platform.settings

    async def one(projection: Projection) -> None:
        assert settings.kafka_bootstrap_servers
        kafka = KafkaSource(
            settings.kafka_bootstrap_servers,
            topic_prefix=settings.kafka_topic_prefix,
            group_prefix=settings.kafka_consumer_group_prefix,
            batch_size=settings.projector_batch_size,
            stop=stop,
            guard=ledger_guard(platform),
        )
        await platform.runner.run(projection, kafka)

    async def guarded(projection: Projection) -> None:
        failures = FailureReport(f"projector {projection.name}")
        while not stop.is_set():
            try:
                await one(projection)
                return
            except Exception as exc:
                failures.report(exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)

    if source == "kafka":
        assert settings.kafka_bootstrap_servers
        try:
            # Before the consumers subscribe: a broker that creates topics on first use
            # would give them its default partition count, not the configured one.
            await asyncio.wait_for(
                ensure_topics(
                    settings.kafka_bootstrap_servers,
                    event_topics(settings.kafka_topic_prefix),
                    partitions=settings.kafka_topic_partitions,
                    replication=settings.kafka_topic_replication,
                ),
                timeout=10,
            )
        except Exception as exc:  # away, or no right to create: the relay creates them
            log.warning("projector: could not create the topics first: %s", exc)
        await finish_when_stopped(asyncio.gather(*(guarded(p) for p in projections)), stop)
        return
    await pump_ledger(platform, projections, stop)


async def finish_when_stopped(
    work: Awaitable[object], stop: asyncio.Event, grace: float = 10.0, what: str = "projector"
) -> None:
    """``work`` to its end; once ``stop`` is set, ``grace`` seconds more, then cancelled. A
    consumer (or the relay's producer) waiting on a broker that went away mid-session
    ignored the stop for minutes (until the broker came back): an orchestrator's grace
    period would end in SIGKILL."""
    task = asyncio.ensure_future(work)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            done, _ = await asyncio.wait({task}, timeout=grace)
            if not done:
                log.warning("%s: still waiting %.0f s after the stop; cancelled", what, grace)
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if task.done() and not task.cancelled():
            task.result()
    finally:
        stopping.cancel()


async def pump_ledger(
    platform: Platform, projections: Sequence[Projection], stop: asyncio.Event
) -> None:
    """The ledger source: one pump for all the projections (one read and one write per
    page), under a lease so a second projector process on the same set stands by."""
    settings = platform.settings
    names = ",".join(sorted(p.name for p in projections))
    lease = Lease(
        platform.db,
        f"projector:{names}"[:100],
        relay_owner_id(),
        settings.relay_lease_seconds,
        platform.clock,
    )
    pump = LedgerPump(
        platform.runner,
        projections,
        batch_size=settings.projector_batch_size,
        poll_seconds=settings.projector_poll_seconds,
        stop=stop,
    )
    failures = FailureReport("projector")
    while not stop.is_set():
        try:
            if await lease.acquire():
                await pump.catch_up()
        except Exception as exc:
            failures.report(exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
            continue
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), settings.projector_poll_seconds)


async def run_relay(platform: Platform, stop: asyncio.Event) -> None:
    settings = platform.settings
    assert settings.kafka_bootstrap_servers
    with contextlib.suppress(Exception):  # the broker may come later; the relay retries
        await ensure_topics(
            settings.kafka_bootstrap_servers,
            event_topics(settings.kafka_topic_prefix),
            partitions=settings.kafka_topic_partitions,
            replication=settings.kafka_topic_replication,
        )
    relay = relay_from_settings(platform.db, settings, platform.clock)
    await finish_when_stopped(
        relay.run(stop, poll_seconds=settings.relay_poll_seconds), stop, what="relay"
    )


def refuse_taken_ports(
    settings: Settings, names: Sequence[str], port_flag: int | None = None
) -> None:
    """Each server's port free on its host (and no two servers on one port), or a
    message naming what to change (uvicorn would exit mid-start with a traceback in the
    log). ``port_flag``: ``serve --port``, for its one server."""
    taken: dict[int, str] = {}
    for name in names:
        port = port_flag or service_port(settings, name)
        setting = "--port" if port_flag else f"TICKETLINE_{name.upper()}_PORT"
        if port in taken:
            raise CommandRefused(
                f"{name} and {taken[port]} are both on port {port}: set {setting} to another"
            )
        taken[port] = name
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((settings.host, port))
            except OSError as exc:
                if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
                    raise CommandRefused(
                        f"cannot listen on host {settings.host} ({exc.strerror}): set "
                        "TICKETLINE_HOST to an address of this machine"
                    ) from None
                raise CommandRefused(
                    f"{name}: cannot listen on {settings.host}:{port} ({exc.strerror}); set "
                    f"{setting} to a free port"
                ) from None


def warn_of_a_lost_database(settings: Settings) -> None:
    """A data directory with a master key file but no database file held one before: a
    new, empty database is about to be made — said loudly, in case the ledger was lost."""
    from shared.app.personal import MASTER_KEY_FILE
    from shared.eventstore.db import sqlite_path

    url = settings.resolved_database_url
    path = sqlite_path(url) if url.startswith("sqlite") else ""
    key = Path(settings.data_dir) / MASTER_KEY_FILE
    if path and path != ":memory:" and not Path(path).exists() and key.exists():
        log.warning(
            "no database at %s, but %s is there: starting a new, empty database; if the "
            "ledger was lost, stop and restore it from a backup (docs/operations.md)",
            path,
            key,
        )


async def run_embedded(settings: Settings, *, print_fn=print) -> None:  # type: ignore[no-untyped-def]
    """All four services, the console, the projector and (with Kafka configured) the relay, in one
    process — the embedded default behind ``make run``."""
    from shared.eventstore.migrations import upgrade

    refuse_taken_ports(settings, SERVERS)
    warn_of_a_lost_database(settings)
    upgrade(settings.resolved_database_url)
    platform = Platform.from_settings(settings)
    await personal_data_ready(platform)
    stop = asyncio.Event()
    _install_stop_signals(stop)
    servers = [
        (name, make_server(platform, name, settings.host, service_port(settings, name)))
        for name in SERVERS
    ]
    tasks = [asyncio.create_task(server.serve(), name=name) for name, server in servers]
    while not all(server.started for _, server in servers):
        if any(t.done() for t in tasks):
            stop.set()
            break
        await asyncio.sleep(0.05)
    if not stop.is_set():
        print_fn(f"Ticketline (embedded) — database {settings.database_url_for_display}")
        for name, _ in servers:
            base = f"http://{settings.host}:{service_port(settings, name)}"
            if name == CONSOLE:
                print_fn(
                    f"  {name:<9} {base}   (operations console: sign in with a token from "
                    "`.venv/bin/ticketline token --role auditor --subject you`; docs/console.md)"
                )
            else:
                print_fn(f"  {name:<9} {base}   (API docs: {base}/docs)")
        projections = all_handlers(platform)
        print_fn(f"  projector ledger source, projections: {', '.join(projections)}")
        if settings.uses_kafka:
            print_fn(f"  relay     outbox → Kafka at {settings.kafka_bootstrap_servers}")
            tasks.append(asyncio.create_task(run_relay(platform, stop)))
        else:
            print_fn("  relay     off (no KAFKA_BOOTSTRAP_SERVERS: the ledger is the log)")
        tasks.append(asyncio.create_task(run_projector(platform, list(projections.values()), stop)))
        jobs = all_jobs()
        for name, job in jobs.items():
            tasks.append(asyncio.create_task(job(platform, stop), name=name))
        if jobs:
            print_fn(f"  jobs      {', '.join(jobs)}")
        print_fn(
            "  auth      get a token: .venv/bin/ticketline token --role call_center_agent "
            "--subject you   (send `Authorization: Bearer <token>`; docs/access-control.md)"
        )
        print_fn("Press Ctrl+C to stop.")
        await stop.wait()
    for _, server in servers:
        server.stop()
    await asyncio.gather(*tasks, return_exceptions=True)
    await platform.close()


async def serve_one(settings: Settings, service: str, port: int | None) -> None:
    """One service in its own process (scaled mode); the schema must already be current."""
    from shared.eventstore.migrations import schema_is_current

    if not await schema_is_current(settings.resolved_database_url):
        raise CommandRefused("the database schema is not current: run `ticketline migrate` first")
    if not (settings.auth.jwt_secret or settings.auth.uses_rs256):
        # A secret generated per host would make each replica refuse the others' tokens.
        raise CommandRefused(
            "configure token verification for separate processes: TICKETLINE_AUTH_JWKS_URL "
            "(or _JWKS_FILE / _PUBLIC_KEY_FILE) for RS256, or one TICKETLINE_AUTH_JWT_SECRET "
            "shared by every replica (docs/access-control.md)"
        )
    refuse_taken_ports(settings, [service], port)
    platform = Platform.from_settings(settings)
    await personal_data_ready(platform)
    stop = asyncio.Event()
    _install_stop_signals(stop)
    port = port or service_port(settings, service)
    server = make_server(platform, service, settings.host, port)
    task = asyncio.create_task(server.serve())
    log.info("serving %s on %s:%d", service, settings.host, port)
    await asyncio.wait([task, asyncio.create_task(stop.wait())], return_when="FIRST_COMPLETED")
    server.stop()
    await task
    await platform.close()


async def run_job(settings: Settings, job: str, names: Sequence[str], source: str) -> None:
    platform = Platform.from_settings(settings)
    if job != "relay":  # the relay publishes the stored form: it needs no key
        await personal_data_ready(platform)
    stop = asyncio.Event()
    _install_stop_signals(stop)
    if settings.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(settings.metrics_port, addr=settings.host)
    log.info("%s started", job)
    try:
        if job == "relay":
            await run_relay(platform, stop)
        elif job == "jobs":
            await asyncio.gather(*(run(platform, stop) for run in all_jobs().values()))
        else:
            projections = all_handlers(platform)
            if unknown := [n for n in names if n not in projections]:
                raise CommandRefused(
                    f"unknown projection or reactor {', '.join(map(repr, unknown))}; known: "
                    + ", ".join(projections)
                )
            chosen = [projections[n] for n in names] if names else list(projections.values())
            await run_projector(platform, chosen, stop, source=source)
    finally:
        await platform.close()
