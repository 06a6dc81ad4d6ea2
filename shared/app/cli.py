"""``ticketline``: the operational commands."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import os
import re
import select
import signal
import sqlite3
import sys
import threading
import time
import uuid
from collections.abc import Coroutine, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from alembic.util.exc import CommandError
from pydantic import ValidationError
from pydantic_settings import SettingsError
from sqlalchemy.exc import DatabaseError

from shared.app.config import (
    CommandRefused,
    ConfigurationError,
    Settings,
    describe_invalid_settings,
    describe_unparsed_setting,
    refuse_output_path,
    token_lifetime,
)
from shared.app.entry import stopped
from shared.app.files import written_whole, written_whole_text
from shared.app.importing.cli import add_export_kind, add_import_parser
from shared.app.observability import configure_logging
from shared.app.registry import SERVERS, all_projections
from shared.app.sla_cli import add_arguments as add_sla_arguments
from shared.eventstore.db import DatabaseUnavailable, is_outage
from shared.eventstore.personal import MasterKeyMismatch
from shared.http.auth.personal_data import install_log_filter
from shared.http.auth.tokens import SCOPES, TOKEN_ROLES
from shared.kernel.events.registry import UnreadableEvent

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from sqlalchemy import Connection

    from shared.app.checkpoints import HeldFile, OwnCheckpoint
    from shared.eventstore.verify import VerificationReport

T = TypeVar("T")


def _cmd_migrate(settings: Settings, _args: argparse.Namespace) -> int:
    from shared.eventstore.migrations import pending_revisions, upgrade

    url, where = settings.resolved_database_url, settings.database_url_for_display
    started = time.monotonic()
    pending = asyncio.run(pending_revisions(url))
    upgrade(url)
    if not pending:
        print(f"schema already current, nothing to do ({where})")
    else:
        seconds = time.monotonic() - started
        print(
            f"schema upgraded in {seconds:.1f} s, now current ({where}); applied "
            f"{len(pending)} revision(s): {', '.join(pending)}"
        )
    return 0


def _serve_forever(main: Coroutine[Any, Any, None]) -> None:
    """Long-running servers on uvloop where it is installed (a C event loop)."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    uvloop.run(main)


def _cmd_run(settings: Settings, _args: argparse.Namespace) -> int:
    from shared.app.runtime import run_embedded

    _serve_forever(run_embedded(settings, print_fn=lambda line: print(line, flush=True)))
    return 0


def _cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    from shared.app.runtime import serve_one

    _serve_forever(serve_one(settings, args.service, args.port))
    return 0


def _cmd_relay(settings: Settings, args: argparse.Namespace) -> int:
    from shared.app.runtime import run_job

    if args.action == "republish":
        return asyncio.run(_republish(settings, args.from_position))
    if not settings.uses_kafka:
        print(
            "ticketline relay: it publishes to Kafka: set KAFKA_BOOTSTRAP_SERVERS", file=sys.stderr
        )
        return 2
    asyncio.run(run_job(settings, "relay", (), "ledger"))
    return 0


async def _republish(settings: Settings, from_position: int) -> int:
    from shared.app.platform import Platform
    from shared.eventstore.outbox import requeue

    platform = Platform.from_settings(settings)
    try:
        queued = await platform.db.write(
            lambda c: requeue(c, settings.kafka_topic_prefix, from_position=from_position)
        )
    finally:
        await platform.close()
    print(
        json.dumps(
            {
                "requeued": queued,
                "from_position": from_position,
                "note": "the running relay publishes them in position order; consumers skip "
                "what they already have",
            }
        )
    )
    return 0


def _cmd_jobs(settings: Settings, _args: argparse.Namespace) -> int:
    from shared.app.runtime import run_job

    asyncio.run(run_job(settings, "jobs", (), "ledger"))
    return 0


def _cmd_project(settings: Settings, args: argparse.Namespace) -> int:
    from shared.app.runtime import run_job

    source = args.source or ("kafka" if settings.uses_kafka else "ledger")
    asyncio.run(run_job(settings, "project", args.projections, source))
    return 0


def _cmd_replay(settings: Settings, args: argparse.Namespace) -> int:
    from shared.app.replay import refuse_existing, replay

    if args.into:
        refuse_existing(Path(args.into))
    until = args.until
    projections = all_projections()
    chosen = (
        [projections[n] for n in dict.fromkeys(args.projections)]  # each once
        if args.projections
        else list(projections.values())
    )
    source = args.source or "ledger"
    results = asyncio.run(
        replay(
            settings,
            chosen,
            source=source,
            until=until,
            into=Path(args.into) if args.into else None,
            show_progress=not args.quiet,
        )
    )
    for result in results:
        print(json.dumps(result.as_dict()))
    total_events = sum(r.events for r in results)
    total_seconds = sum(r.seconds for r in results)
    print(
        json.dumps(
            {
                "summary": "replay",
                "source": source,
                "until": until.isoformat() if until else None,
                "projections": len(results),
                "events": total_events,
                "seconds": round(total_seconds, 3),
                "events_per_second": round(total_events / total_seconds, 1) if total_seconds else 0,
                "identical_to_live": None if until else all(not r.differences for r in results),
            }
        )
    )
    if not until and any(r.differences for r in results):
        # The rebuild trusts the ledger as stored: a row edited in place is rebuilt as edited.
        print(
            "ticketline replay: rebuilt from the ledger as stored; `ticketline verify` says "
            "whether it was edited before you take the rebuilt values over the live ones",
            file=sys.stderr,
        )
    return 0 if until or all(not r.differences for r in results) else 1


async def ledger_report(
    settings: Settings,
    *,
    checkpoints: Sequence[Any] = (),
    stop_at_first: bool = False,
    own_key: Ed25519PublicKey | None = None,
) -> tuple[VerificationReport, OwnCheckpoint | None]:
    """``verify_ledger`` on the configured database (``verify``, and ``first_damage``);
    with ``own_key`` and no held ``checkpoints``, against the ledger's own last checkpoint
    signed with it, found in the same read."""
    from shared.app.checkpoints import own_checkpoint
    from shared.app.platform import Platform
    from shared.eventstore.verify import verify_ledger
    from shared.readmodels.ticket_state import ticket_tail_problems

    platform = Platform.from_settings(settings)

    def work(c: Connection) -> tuple[VerificationReport, OwnCheckpoint | None]:
        own = own_checkpoint(c, platform.store, own_key) if own_key is not None else None
        held = [own.checkpoint] if own is not None and own.checkpoint else checkpoints
        report = verify_ledger(
            c,
            platform.store,
            checkpoints=held,
            stop_at_first=stop_at_first,
            tails=[ticket_tail_problems],
        )
        return report, own

    try:
        return await platform.db.read(work)
    finally:
        await platform.close()


def run_outside_loop(coroutine: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` in a thread of its own: the CLI may be called from code that
    already runs an event loop."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


async def _verify(settings: Settings, held: HeldFile | None) -> int:
    from shared.app.checkpoints import verifying_key

    # Without a held copy: the ledger's own last checkpoint, when this machine has the key.
    own_key = verifying_key(settings) if held is None else None
    report, own = await ledger_report(
        settings, checkpoints=held.checkpoints if held else (), own_key=own_key
    )
    problems = held.problems if held else own.problems if own else []
    summary: dict[str, object] = {
        "ok": report.ok and not problems,
        "events_checked": report.events_checked,
        "streams_checked": report.streams_checked,
        "broken": [link.__dict__ for link in report.broken],
    }
    if held is not None:
        summary["checkpoints_checked"] = report.checkpoints_checked
        summary["checkpoint_file_problems"] = held.problems
    elif own is not None:
        summary["ledger_checkpoint_checked"] = own.checkpoint is not None
        # Which one: the last checkpoint, however far behind the ledger's head it is.
        summary["ledger_checkpoint_position"] = own.checkpoint and own.checkpoint.position
        summary["ledger_checkpoint_problems"] = own.problems
    else:
        print(
            "ticketline verify: no checkpoint signing key here: the history was not checked "
            "against the ledger's own checkpoints (give --checkpoints FILE --public-key FILE)",
            file=sys.stderr,
        )
    print(json.dumps(summary, indent=2))
    return 0 if summary["ok"] else 1


def _cmd_verify(settings: Settings, args: argparse.Namespace) -> int:
    from shared.app.checkpoints import load_public, read_held, verifying_key

    held = None
    if args.public_key and args.checkpoints is None:
        raise CommandRefused("--public-key checks --checkpoints FILE: give both")
    if args.checkpoints is not None:
        try:
            key = load_public(Path(args.public_key).read_bytes()) if args.public_key else None
        except ValueError as exc:
            raise CommandRefused(f"--public-key {args.public_key}: {exc}") from None
        if key is None:
            key = verifying_key(settings)
            if key is None:
                print(
                    "ticketline verify: no signing key here; give --public-key FILE",
                    file=sys.stderr,
                )
                return 2
            # The key beside the database is what an intruder would replace with theirs.
            whose = (
                "TICKETLINE_CHECKPOINT_SIGNING_KEY"
                if settings.checkpoint_signing_key is not None
                else "this data directory's key"
            )
            print(
                f"ticketline verify: checking the checkpoints' signatures with {whose}; give "
                "--public-key FILE (the key the centers were given) not to trust it",
                file=sys.stderr,
            )
        held = read_held(Path(args.checkpoints), key)
    return asyncio.run(_verify(settings, held))


async def _checkpoint_now(settings: Settings) -> int:
    from shared.app.checkpoints import checkpoint_once, signing_key
    from shared.app.platform import Platform

    platform = Platform.from_settings(settings)
    try:
        written = await checkpoint_once(platform, signing_key(settings))
        empty = written is None and not await platform.db.read(platform.store.last_position)
    finally:
        await platform.close()
    if written is None:
        reason = "the ledger is empty" if empty else "nothing new since the last one"
        print(json.dumps({"appended": False, "reason": reason}))
    else:
        print(canonical_line(written.to_json_dict()))
    return 0


def _cmd_checkpoint(settings: Settings, args: argparse.Namespace) -> int:
    from shared.app.checkpoints import key_id, public_pem, signing_key

    if args.public_key:
        public = signing_key(settings).public_key()
        print(public_pem(public), end="")
        print(f"# key_id {key_id(public)}", file=sys.stderr)
        return 0
    return asyncio.run(_checkpoint_now(settings))


def canonical_line(document: dict[str, Any]) -> str:
    """One JSON line (line separators escaped, as `ticketline subscribe` writes them)."""
    from shared.app.subscribe import json_line

    return json_line(document)


async def _parked(settings: Settings, args: argparse.Namespace) -> int:
    from functools import partial

    from shared.app.platform import Platform
    from shared.app.registry import all_handlers
    from shared.eventstore.applied import parked_list, parked_one

    platform = Platform.from_settings(settings)
    try:
        if args.action == "list":
            rows = await platform.db.read(
                lambda c: parked_list(c, status=None if args.all else "parked", limit=1000)
            )
            for row in rows:
                print(canonical_line(row.as_dict()))
            if not rows:  # said beside the (empty) JSON lines, which stay parseable
                what = "events" if args.all else "events waiting (--all: resolved ones too)"
                print(f"ticketline parked: no parked {what}", file=sys.stderr)
            return 0
        code = 0
        handlers = all_handlers(platform)
        for parked_id in args.ids:
            found = await platform.db.read(partial(parked_one, parked_id=parked_id))
            if found is None or found.projection not in handlers:
                print(f"ticketline parked: no parked event {parked_id}", file=sys.stderr)
                code = 2
                continue
            outcome = await platform.runner.resolve_parked(
                handlers[found.projection], parked_id, args.action, args.by
            )
            print(
                canonical_line(
                    {
                        "id": parked_id,
                        "action": args.action,
                        "ok": outcome.ok,
                        "error": outcome.error,
                        "then_applied": outcome.held.applied,
                        "then_parked": outcome.held.parked,
                    }
                )
            )
            code = code or (0 if outcome.ok else 1)
        return code
    finally:
        await platform.close()


def _cmd_parked(settings: Settings, args: argparse.Namespace) -> int:
    from shared.eventstore.runner import ParkedNotOpen

    if args.action == "list" and args.ids:
        raise CommandRefused("list takes no ids (retry and skip do)")
    if args.action != "list" and not args.ids:
        raise CommandRefused(
            f"{args.action}: give the parked event ids (see `ticketline parked list`)"
        )
    try:
        return asyncio.run(_parked(settings, args))
    except ParkedNotOpen as exc:
        print(f"ticketline parked: event {exc} is not parked (already resolved?)", file=sys.stderr)
        return 2


def subscriber_group(settings: Settings, region: str | None, types: list[str]) -> str:
    """The default consumer group: one per region and type filter — two subscribers in
    one group split its partitions between them, so differently filtered ones must not
    share one (each would miss what the other's partitions held)."""
    name = f"{settings.kafka_consumer_group_prefix}.subscriber.{region or 'all'}"
    return f"{name}.{'+'.join(sorted(set(types)))}" if types else name


def _cmd_subscribe(settings: Settings, args: argparse.Namespace) -> int:
    from shared.app.subscribe import AccessRefused, json_line, subscribe_http, subscribe_kafka
    from shared.eventstore.kafka import event_topics

    def emit(envelope: dict[str, Any]) -> None:
        print(json_line(envelope), flush=True)

    token = args.token or os.environ.get("TICKETLINE_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else None
    types = [t for t in (args.types or "").split(",") if t]
    region = args.region.lower() if args.region else None
    # --url and --position-file are the HTTP stream's: they choose it when a broker is set.
    http_asked = args.url or args.position_file
    source = args.source or ("kafka" if settings.uses_kafka and not http_asked else "http")
    if source == "kafka" and args.position_file:
        print(
            "ticketline subscribe: --position-file is for the HTTP stream; the Kafka source "
            "keeps its position in its consumer group (--group)",
            file=sys.stderr,
        )
        return 2
    try:
        if source == "kafka":
            assert settings.kafka_bootstrap_servers
            asyncio.run(
                subscribe_kafka(
                    settings.kafka_bootstrap_servers,
                    event_topics(settings.kafka_topic_prefix),
                    group_id=args.group or subscriber_group(settings, region, types),
                    region=region,
                    types=types,
                    from_beginning=args.from_beginning,
                    emit=emit,
                    max_events=args.max_events,
                )
            )
        else:
            url = args.url or f"http://{settings.host}:{settings.intake_port}"
            asyncio.run(
                subscribe_http(
                    url,
                    region=region,
                    types=types,
                    from_beginning=args.from_beginning,
                    position_file=Path(args.position_file) if args.position_file else None,
                    emit=emit,
                    max_events=args.max_events,
                    headers=headers,
                )
            )
    except KeyboardInterrupt:
        pass
    except AccessRefused as exc:
        print(f"ticketline subscribe: {exc}", file=sys.stderr)
        return 2
    return 0


async def _export(settings: Settings, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    from shared.app.audit import ExportScope, export_summary, signing_key, write_export
    from shared.app.platform import Platform

    scope = ExportScope(args.ticket, args.region, args.from_, args.to)
    # Written beside, renamed when whole: a failed export leaves no file that looks like one.
    platform = Platform.from_settings(settings)
    try:
        with written_whole(out) as file:
            tally = await platform.db.read(lambda c: write_export(c, file, args.format, scope))
            if args.ticket and not tally.events:  # a mistyped id: no signed "nothing happened"
                raise CommandRefused(f"--ticket: no ticket {args.ticket} in the ledger")
            file.flush()
            summary = export_summary(tally, args.format, scope.as_summary(), signing_key(settings))
            # Placed before the file (both or neither: one without the other fails to verify).
            with written_whole_text(Path(f"{out}.summary.json")) as said:
                said.write(json.dumps(summary, indent=2) + "\n")
    finally:
        await platform.close()
    return summary


def _cmd_export(settings: Settings, args: argparse.Namespace) -> int:
    if args.kind:
        from shared.app.importing.cli import cmd_export_kind

        if args.ticket or args.region or args.from_ or args.to:
            raise CommandRefused(
                "--ticket, --region, --from and --to select an audit export's events; "
                "--kind exports a whole kind"
            )
        return cmd_export_kind(settings, args)
    args.format = args.format or "jsonl"
    if args.from_ and args.to and args.from_ >= args.to:
        raise CommandRefused("--from must be before --to")
    out = Path(args.out)
    refuse_output_path(settings, out, "--out")
    from shared.app.audit import export_warning

    summary = asyncio.run(_export(settings, args, out))
    print(json.dumps(summary))
    warning = export_warning(summary)
    if warning:
        print(f"ticketline export: {warning}", file=sys.stderr)
    return 1 if warning else 0


async def _verify_export(settings: Settings, export: Path, summary: dict[str, Any]) -> int:
    from shared.app.audit import existing_signing_key, verify_export
    from shared.app.platform import Platform

    platform = Platform.from_settings(settings)
    try:
        key = existing_signing_key(settings)
        with export.open("rb") as file:
            check = await platform.db.read(
                lambda c: verify_export(file, summary, key, c, platform.store)
            )
    finally:
        await platform.close()
    return _export_verdict(check.problems, summary.get("events"))


def _export_verdict(problems: list[str], events: object) -> int:
    print(json.dumps({"ok": not problems, "events": events, "problems": problems}, indent=2))
    return 0 if not problems else 1


def _cmd_verify_export(settings: Settings, args: argparse.Namespace) -> int:
    export = Path(args.file)
    if not export.is_file():  # a directory, a missing file: said before any work
        export.open("rb").close()
    path = Path(args.summary or f"{args.file}.summary.json")
    try:
        summary = json.loads(path.read_bytes())
    except ValueError as exc:  # not JSON (or not UTF-8): a summary that fails, not a crash
        return _export_verdict([f"the summary {path} is not JSON text ({exc}): it fails"], None)
    if not isinstance(summary, dict):
        return _export_verdict([f"the summary {path} is not a JSON object"], None)
    return asyncio.run(_verify_export(settings, export, summary))


def _cmd_contract(_settings: Settings, args: argparse.Namespace) -> int:
    from shared.app.contract import contract_problems, write_contract

    if args.write:
        for path in write_contract(force=args.force):
            print(f"wrote {path}")
    problems = contract_problems()
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


def _cmd_sla(settings: Settings, args: argparse.Namespace) -> int:
    from shared.app.sla_cli import run

    return run(settings, args)


def _cmd_import(settings: Settings, args: argparse.Namespace) -> int:
    from shared.app.importing.cli import cmd_import

    return cmd_import(settings, args)


def _cmd_token(settings: Settings, args: argparse.Namespace) -> int:
    from shared.http.auth.tokens import generates_signing_key, hs256_key_file, issue_token

    generates = generates_signing_key(settings)
    try:
        try:
            ttl = token_lifetime(args.ttl) if args.ttl else None
        except ValueError as exc:
            raise ValueError(f"--ttl: {exc}") from None
        token = issue_token(
            settings,
            role=args.role,
            subject=args.subject,
            region=args.region,
            location=args.location,
            scopes=args.scope or None,
            ttl_seconds=ttl,
        )
    except ValueError as exc:
        print(f"ticketline token: {exc}", file=sys.stderr)
        return 2
    if generates:  # services of another data directory would refuse it (401)
        print(
            f"ticketline token: generated a new signing key at {hs256_key_file(settings)}: only "
            "services with this data directory accept the token (run it where `make run` "
            "runs, or set TICKETLINE_DATA_DIR)",
            file=sys.stderr,
        )
    print(token)
    return 0


def _cmd_api_key(_settings: Settings, args: argparse.Namespace) -> int:
    from shared.http.auth.tokens import api_key_entry, new_api_key

    key = new_api_key()
    try:
        entry = api_key_entry(args.name, key, args.region)
    except ValueError as exc:
        print(f"ticketline api-key: {exc}", file=sys.stderr)
        return 2
    print(f"key (give it to the call-center software; it is not stored): {key}")
    print(f"TICKETLINE_AUTH_API_KEYS entry (merge into the JSON object): {entry}")
    return 0


def _cmd_rotate_master_key(settings: Settings, args: argparse.Namespace) -> int:
    from shared.app.personal import generate_key_file, read_key_file, rotate_master_key
    from shared.eventstore.personal import MasterKeyMismatch

    path = Path(args.new_key_file).absolute()  # the `next` hint holds wherever it runs
    try:
        if args.generate:
            generate_key_file(path)
        new = read_key_file(path)
        status = asyncio.run(rotate_master_key(settings, new))
    except (OSError, ValueError, MasterKeyMismatch, RuntimeError) as exc:
        print(f"ticketline rotate-master-key: {exc}", file=sys.stderr)
        return 2
    summary = {"status": status, "master_key_id": new.key_id, "key_file": str(path)}
    if status != "no_keys":
        summary["next"] = (
            f"configure every process with TICKETLINE_PRIVACY_MASTER_KEY_FILE={path} (or "
            "replace the data directory's personal-data-master.key with it) before it "
            "restarts; keep the old key as long as you keep backups made before now"
        )
    print(json.dumps(summary, indent=2))
    return 0


def aware_time(value: str) -> datetime:
    """An ISO 8601 time with its timezone (argparse type: a usage error otherwise)."""
    try:
        found = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not an ISO 8601 time, e.g. 2026-11-20T10:00:00Z"
        ) from None
    if found.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{value!r} needs a timezone, e.g. 2026-11-20T10:00:00Z")
    return found


def port_number(value: str) -> int:
    """A TCP port, 1 to 65535 (argparse type)."""
    try:
        number = int(value)
    except ValueError:
        number = 0
    if not 1 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"{value!r}: a port from 1 to 65535")
    return number


def positive_int(value: str) -> int:
    """A whole number of 1 or more (argparse type)."""
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r}: a whole number of 1 or more")
    return number


def row_id(value: str) -> int:
    """An id of a table's row (argparse type): what its BIGINT column can hold."""
    from shared.http.params import MAX_POSITION, parse_ascii_uint

    try:
        return parse_ascii_uint(value, maximum=MAX_POSITION)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r}: {exc}") from None


def ticket_uuid(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a ticket id (a UUID)") from None


def region_code(value: str) -> str:
    code = value.strip().lower()
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,31}", code):
        raise argparse.ArgumentTypeError(f"{value!r} is not a region code, e.g. east")
    return code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ticketline",
        description="Ticketline operations. Configuration comes from environment variables "
        "(see README); with none set, everything runs on SQLite under ./data.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _process_commands(sub)
    _audit_commands(sub)
    _ledger_commands(sub)
    _access_commands(sub)
    return parser


def _process_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    sub.add_parser("migrate", help="create or upgrade the schema (safe to run twice)")
    sub.add_parser("run", help="everything in one process on the embedded default")
    serve = sub.add_parser("serve", help="one service (or the console) in its own process")
    serve.add_argument("service", choices=SERVERS)
    serve.add_argument("--port", type=port_number, default=None, help="default: the service's")
    relay = sub.add_parser(
        "relay", help="publish the outbox to Kafka (several may run; one publishes)"
    )
    relay.add_argument(
        "action",
        nargs="?",
        choices=("republish",),
        help="republish: queue the history again (a rebuilt or emptied topic), then exit",
    )
    relay.add_argument(
        "--from-position", type=positive_int, default=1, help="republish from here (1 or more)"
    )
    sub.add_parser(
        "jobs",
        help="periodic jobs: SLA clocks, overdue returns, quality alerts, checkpoints, "
        "personal-data retention, idempotency expiry",
    )
    project = sub.add_parser("project", help="keep projections up to date")
    project.add_argument("projections", nargs="*", help="names (default: all)")
    project.add_argument("--source", choices=("ledger", "kafka"), default=None)
    replay = sub.add_parser(
        "replay",
        help="rebuild projections from the first event in a scratch database and compare with live",
    )
    replay.add_argument("projections", nargs="*", help="names (default: all)")
    replay.add_argument("--source", choices=("ledger", "kafka"), default=None)
    replay.add_argument(
        "--until",
        type=aware_time,
        default=None,
        help="state as of this recorded time (ISO 8601 with a timezone); no comparison",
    )
    replay.add_argument(
        "--into", default=None, help="keep the rebuilt SQLite database at this path"
    )
    replay.add_argument("--quiet", action="store_true", help="no progress bar")


def _ledger_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    verify = sub.add_parser(
        "verify", help="check every stream's hash chain and the global sequence"
    )
    verify.add_argument(
        "--checkpoints",
        default=None,
        help="also check the history against signed checkpoints kept elsewhere (JSON lines, "
        "e.g. `ticketline subscribe` output; other events are ignored)",
    )
    verify.add_argument(
        "--public-key", default=None, help="the platform's public key (PEM) to check them with"
    )
    checkpoint = sub.add_parser("checkpoint", help="append a signed chain-head checkpoint now")
    checkpoint.add_argument(
        "--public-key", action="store_true", help="print the verifying public key (PEM) instead"
    )
    parked = sub.add_parser("parked", help="events a projection parked (poison events)")
    parked.add_argument("action", choices=("list", "retry", "skip"))
    parked.add_argument("ids", nargs="*", type=row_id, help="retry/skip: parked event ids")
    parked.add_argument("--all", action="store_true", help="list: resolved ones too")
    parked.add_argument("--by", default=os.environ.get("USER", "operator"), help="who resolves")


def _audit_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    export = sub.add_parser("export", help="audit export: events with hashes + signed summary")
    export.add_argument("--ticket", type=ticket_uuid, default=None, help="one ticket's events")
    export.add_argument("--region", type=region_code, default=None)
    export.add_argument(
        "--from", dest="from_", type=aware_time, default=None, help="recorded from (ISO 8601)"
    )
    export.add_argument("--to", type=aware_time, default=None, help="recorded before (ISO 8601)")
    export.add_argument("--format", choices=("jsonl", "csv"), default=None)
    export.add_argument("--out", required=True, help="file to write; FILE.summary.json beside it")
    add_export_kind(export)
    add_import_parser(sub)
    verify_export = sub.add_parser(
        "verify-export", help="check an export against its summary and the ledger"
    )
    verify_export.add_argument("file")
    verify_export.add_argument("--summary", default=None, help="default: FILE.summary.json")
    contract = sub.add_parser(
        "contract", help="check (or --write) the event JSON Schemas and AsyncAPI"
    )
    contract.add_argument("--write", action="store_true", help="write new schema versions")
    contract.add_argument("--force", action="store_true", help="also overwrite frozen versions")
    subscribe = sub.add_parser("subscribe", help="follow events as JSON lines (regional centers)")
    subscribe.add_argument("--region", default=None)
    subscribe.add_argument("--types", default=None, help="comma-separated event types")
    subscribe.add_argument(
        "--from-beginning",
        action="store_true",
        help="from the first event (HTTP: else new events only; Kafka: also past the "
        "group's committed offsets — a group without any starts at the beginning anyway)",
    )
    subscribe.add_argument(
        "--position-file", default=None, help="HTTP: where the last position is kept (resume)"
    )
    subscribe.add_argument("--url", default=None, help="a service's base URL (HTTP/SSE source)")
    subscribe.add_argument("--source", choices=("http", "kafka"), default=None)
    subscribe.add_argument(
        "--group",
        default=None,
        help="Kafka consumer group (default: <prefix>.subscriber.<region|all>[.<types>]); "
        "subscribers sharing a group split its partitions: each copy needs its own",
    )
    subscribe.add_argument(
        "--max-events", type=positive_int, default=None, help="stop after N events"
    )
    subscribe.add_argument(
        "--token", default=None, help="HTTP: bearer token (default: $TICKETLINE_TOKEN)"
    )
    add_sla_arguments(sub.add_parser("sla", help="SLA clock: what-if replay of a policy"))


def _access_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    token = sub.add_parser("token", help="issue a bearer token for local use")
    token.add_argument("--role", required=True, choices=sorted(TOKEN_ROLES))
    token.add_argument("--subject", required=True, help="who (user id; a technician's id)")
    token.add_argument(
        "--region", default=None, help="the one region (required for regional_center)"
    )
    token.add_argument("--location", default=None, help="parts clerk: its stock location")
    token.add_argument(
        "--scope",
        action="append",
        default=None,
        choices=sorted(SCOPES),
        metavar="SCOPE",
        help="limit to a scope a route requires, e.g. tickets:read (repeatable)",
    )
    token.add_argument(
        "--ttl",
        default=None,
        help="lifetime, e.g. 90s, 15m, 8h, 7d; a bare number is seconds (default 8h)",
    )
    api_key = sub.add_parser("api-key", help="make a machine API key for call-center software")
    api_key.add_argument("--name", required=True, help="which software / company it is for")
    api_key.add_argument("--region", default=None, help="limit its reads to one region")
    rotate = sub.add_parser(
        "rotate-master-key",
        help="wrap the personal-data keys with a new master key (the configured one unwraps)",
    )
    rotate.add_argument("--new-key-file", required=True, help="the new key: 64 hex digits")
    rotate.add_argument(
        "--generate", action="store_true", help="first write a new random key to that file"
    )


COMMANDS = {
    "migrate": _cmd_migrate,
    "run": _cmd_run,
    "serve": _cmd_serve,
    "relay": _cmd_relay,
    "jobs": _cmd_jobs,
    "project": _cmd_project,
    "replay": _cmd_replay,
    "verify": _cmd_verify,
    "checkpoint": _cmd_checkpoint,
    "parked": _cmd_parked,
    "subscribe": _cmd_subscribe,
    "export": _cmd_export,
    "import": _cmd_import,
    "contract": _cmd_contract,
    "verify-export": _cmd_verify_export,
    "token": _cmd_token,
    "api-key": _cmd_api_key,
    "rotate-master-key": _cmd_rotate_master_key,
    "sla": _cmd_sla,
}


# Commands that work on an existing ledger: refused, naming the fix, before they touch a
# database that is missing or not migrated (which they would otherwise create, empty).
NEEDS_SCHEMA = frozenset(
    {"relay", "jobs", "project", "replay", "verify", "checkpoint", "parked", "export"}
    | {"import", "verify-export", "sla", "rotate-master-key"}
)
# Commands that create the schema, or bring it up to date, before their work.
CREATES_SCHEMA = frozenset({"migrate", "run"})


def database_file_problem(settings: Settings) -> str | None:
    """Why the configured SQLite file cannot be the platform's database, or None (no file
    yet: `migrate` and `run` create it; PostgreSQL: the schema check says)."""
    from shared.eventstore.db import sqlite_path

    if not settings.is_sqlite:
        return None
    path = Path(sqlite_path(settings.resolved_database_url))
    if not path.exists():
        return None
    if not path.is_file():
        return f"{path} is not a database file"
    with path.open("rb") as file:
        header = file.read(16)
    if header and header != b"SQLite format 3\x00":
        return (
            f"{path} is not a SQLite database: point TICKETLINE_DATA_DIR / DATABASE_URL at "
            "the platform's, or at a new file"
        )
    if not (os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)):
        # SQLite's write-ahead log needs both, even to read: not an outage to wait out.
        return (
            f"{path} cannot be written here (read-only file, directory or file system); "
            "SQLite reads it only beside a writable write-ahead log: copy the data "
            "directory somewhere writable (an auditor's copy) and point "
            "TICKETLINE_DATA_DIR at it"
        )
    with contextlib.closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as conn:
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
    if tables and "alembic_version" not in tables:
        return (
            f"{path} holds another application's tables, not Ticketline's: point "
            "TICKETLINE_DATA_DIR / DATABASE_URL at the platform's database, or at a new file"
        )
    return None


def schema_problem(settings: Settings) -> str | None:
    """Why the configured database cannot serve a command yet, or None."""
    from shared.eventstore.db import sqlite_path
    from shared.eventstore.migrations import schema_is_current

    url = settings.resolved_database_url
    if settings.is_sqlite and not Path(sqlite_path(url)).exists():
        return (
            f"no database at {sqlite_path(url)}: run `ticketline migrate` first "
            "(or point TICKETLINE_DATA_DIR / DATABASE_URL at the platform's)"
        )
    if problem := database_file_problem(settings):
        return problem
    try:
        current = run_outside_loop(schema_is_current(url))
    except DatabaseError as exc:
        if unreachable(exc) is not None:
            raise  # an outage: exit 3
        return f"the database cannot be read as Ticketline's: {exc.orig or exc}"
    return None if current else "the database schema is not current: run `ticketline migrate`"


def process_name(args: argparse.Namespace) -> str:
    """The ``service`` field of every log line this process writes."""
    if args.command == "serve":
        return str(args.service)
    names = {"run": "embedded", "project": "projector"}
    return str(names.get(args.command, args.command))


# An unexpected failure (a bug: the traceback says where) — never 1, which is a finding.
EXIT_SOFTWARE = 70


def reserve_standard_streams() -> None:
    """Give a closed stdin, stdout or stderr (``2>&-``) the null device: Python leaves the
    stream None (a failure of whatever writes to it), and the next file opened (the
    database) would take its descriptor, where a library's stray write lands."""
    for fd, name, mode in ((0, "stdin", "r"), (1, "stdout", "w"), (2, "stderr", "w")):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
            setattr(sys, name, open(fd, mode, closefd=False))  # noqa: SIM115 (the process's)


class Terminated(KeyboardInterrupt):
    """SIGTERM (`timeout`, systemd, Kubernetes): stopped as Ctrl-C stops a command — its
    cleanup runs (a replay's partial copy, an import's scratch files) — not killed where
    it stood. ``run``, ``serve`` and the workers stop gracefully on it instead."""


def _terminate(_signum: int, _frame: object) -> None:
    raise Terminated()


def main(argv: Sequence[str] | None = None) -> int:
    reserve_standard_streams()
    main_thread = threading.current_thread() is threading.main_thread()
    before = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
    try:
        return _main(argv)
    except Terminated:
        return stopped(terminated=True)
    except KeyboardInterrupt:  # Ctrl-C before a command handles it (starting up): no traceback
        return stopped(terminated=False)
    except SystemExit as exc:
        if isinstance(exc.code, str):  # a refusal to start (schema, keys): its message
            print(exc.code, file=sys.stderr)
            return 2
        raise
    except BrokenPipeError:
        if not _stdout_gone():  # another pipe (an --out FIFO whose reader left): a failure
            import traceback

            traceback.print_exc()
            return EXIT_SOFTWARE
        # The output's reader went away (`| head`): quiet, as a shell's SIGPIPE (128 + 13);
        # stdout points nowhere so that flushing it at exit raises nothing more.
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception:
        import traceback

        traceback.print_exc()
        return EXIT_SOFTWARE
    finally:
        if main_thread:  # a caller's own handler back (tests call main in their process)
            signal.signal(signal.SIGTERM, before)


def _stdout_gone() -> bool:
    """Whether nobody reads standard output any more (a pipe or socket whose reader closed
    reports an error or hang-up to poll)."""
    try:
        poll = select.poll()
        poll.register(sys.stdout.fileno(), select.POLLOUT)
        return any(ev & (select.POLLERR | select.POLLHUP) for _, ev in poll.poll(0))
    except (OSError, ValueError, AttributeError):  # no such fd, or no poll (Windows)
        return False


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings()
    except (ValidationError, SettingsError) as exc:
        if isinstance(exc, SettingsError):
            problems = [describe_unparsed_setting(exc)]
        else:
            problems = describe_invalid_settings(exc)
        lines = "\n".join(f"  {line}" for line in problems)
        print(f"Refusing to start: invalid configuration\n{lines}", file=sys.stderr)
        return 2
    configure_logging(settings, process_name(args))
    install_log_filter()
    known = all_projections()
    for name in getattr(args, "projections", []) if args.command == "replay" else []:
        if name not in known:  # (`project` also runs the reactors: it checks its own names)
            print(
                f"ticketline replay: unknown projection {name!r} (a replay rebuilds read "
                "models, not reactors); "
                f"known: {', '.join(known)}",
                file=sys.stderr,
            )
            return 2
    if getattr(args, "source", None) == "kafka" and not settings.uses_kafka:
        print(
            f"ticketline {args.command}: --source kafka needs KAFKA_BOOTSTRAP_SERVERS",
            file=sys.stderr,
        )
        return 2
    try:
        # (`checkpoint --public-key` reads the key file only: also on a read-only copy)
        key_only = args.command == "checkpoint" and args.public_key
        needs_schema = args.command in NEEDS_SCHEMA and not key_only
        if needs_schema and (problem := schema_problem(settings)):
            raise CommandRefused(problem)
        if args.command in CREATES_SCHEMA and (problem := database_file_problem(settings)):
            raise CommandRefused(problem)
        return COMMANDS[args.command](settings, args)
    except (ConfigurationError, MasterKeyMismatch) as exc:
        print(f"Refusing to start: {exc}", file=sys.stderr)
        return 2
    except CommandRefused as exc:
        print(f"ticketline {args.command}: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        raise  # not the command's failure (main)
    except Exception as exc:
        explained = explained_failure(exc)
        if args.command in READS_THE_LEDGER and (
            (explained is None and _decoding_failure(exc)) or (explained and explained[0] == 1)
        ):
            # A hand-edited row can fail a reader in many ways: verify's checks name it.
            explained = first_damage(settings) or explained
        if explained is None:
            raise  # a real failure, with its traceback
        code, what = explained
        print(f"ticketline {args.command}: {what}", file=sys.stderr)
        return code


# Commands that read the whole ledger (or a time's state of it): a failure of theirs may
# be a damaged row, which ``first_damage`` then names.
READS_THE_LEDGER = frozenset({"replay", "export", "checkpoint"})


def _decoding_failure(exc: BaseException) -> bool:
    """A failure that reading a row edited into no event can give (a value of another
    type or shape), never an outage, a full disk or a broker's error."""
    from pydantic import ValidationError

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(
            current, ValidationError | ValueError | TypeError | LookupError | AttributeError
        ):
            return not isinstance(current, OSError)
        current = current.__cause__ or current.__context__
    return False


def first_damage(settings: Settings) -> tuple[int, str] | None:
    """(1, what is wrong) when ``verify`` finds the ledger damaged, else None (the walk
    itself failing too: the first failure is the one to show)."""
    try:
        broken = run_outside_loop(ledger_report(settings, stop_at_first=True))[0].broken
    except Exception:
        return None
    if not broken:
        return None
    link = broken[0]
    return 1, (
        f"the ledger is damaged at position {link.position} ({link.kind}: {link.detail}); "
        "`ticketline verify` lists every damaged row"
    )


def explained_failure(exc: Exception) -> tuple[int, str] | None:
    """(exit code, message) of a failure that is not the command's bug: a path it cannot
    use, a damaged ledger (a finding, as verify's 1), a database damaged or migrated by a
    newer release (2), a server away (3 — a script can tell an outage from a finding)."""
    if isinstance(exc, OSError) and exc.filename is not None:
        return 2, f"{exc.strerror}: {exc.filename}"
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return 2, f"{exc.strerror}: no room to write the output (nothing was left half-written)"
    if isinstance(exc, CommandError) and "Can't locate revision" in str(exc):
        return 2, (
            f"the database was migrated by a newer release ({exc}): run that release, or "
            "restore the backup taken before its migration (docs/operations.md)"
        )
    if (damage := ledger_damage(exc)) is not None:
        return 1, damage
    if (gone := missing_table(exc)) is not None:
        return 2, (
            f"the database is not a whole Ticketline database ({gone}): restore it from a "
            "backup, or run `ticketline migrate` on a new one"
        )
    if (refused := refused_login(exc)) is not None:
        return 2, (
            f"the database refused the connection ({refused}): check the database name, "
            "user and password in DATABASE_URL"
        )
    if (damaged := damaged_file(exc)) is not None:
        return 1, (
            f"the database file is damaged (SQLite: {damaged}): restore it from a backup "
            "(docs/operations.md); `PRAGMA integrity_check` says where"
        )
    if (away := unreachable(exc)) is not None:
        return 3, f"cannot reach {away}: {exc}"
    return None


# SQLite's words for a file whose pages are damaged: no retry mends it (not an outage).
_DAMAGED = ("database disk image is malformed",)


def damaged_file(exc: BaseException) -> str | None:
    """SQLite's words when the database file itself is damaged, or None."""
    for _, said in _database_said(exc):
        if found := next((words for words in _DAMAGED if words in said.lower()), None):
            return found
    return None


# PostgreSQL's answers to a login it refuses (a configuration error, not an outage): no
# such database, no such role or not allowed to log in, wrong password.
_LOGIN_REFUSED = {"3D000", "28000", "28P01"}


def refused_login(exc: BaseException) -> str | None:
    """What the database said when it refused the login, or None."""
    for current, said in _database_said(exc):
        if getattr(current, "sqlstate", None) in _LOGIN_REFUSED:
            return said
    return None


def _database_said(exc: BaseException) -> Iterator[tuple[BaseException, str]]:
    """Each error in the chain, with what the database said when it is the database's."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        said = current.orig if isinstance(current, DatabaseError) else current
        yield current, str(said) if _is_database_error(said) else ""
        current = current.__cause__ or current.__context__


def _is_database_error(exc: BaseException | None) -> bool:
    return isinstance(exc, sqlite3.Error) or getattr(exc, "sqlstate", None) is not None


def ledger_damage(exc: BaseException) -> str | None:
    """What a failure says about a damaged ledger (a row edited into no event), or None:
    the reader that met it, or the database's JSON functions refusing a payload."""
    for current, said in _database_said(exc):
        if isinstance(current, UnreadableEvent):
            return f"{current}; `ticketline verify` names every damaged row"
        # SQLite's JSON functions, PostgreSQL's cast of a payload (22P02) — not any error
        # that mentions JSON (a missing function is a bug, with its traceback).
        json_refused = "malformed json" in said.lower() or (
            getattr(current, "sqlstate", None) == "22P02" and "json" in said.lower()
        )
        if json_refused:
            return f"the ledger holds a payload that is no JSON ({said}); `ticketline verify` names the row"
    return None


def missing_table(exc: BaseException) -> str | None:
    """What the database said when a table the schema has is gone, or None (a table the
    schema has not: a bug, with its traceback). The code that failed imported the
    definitions of the tables it reads."""
    from shared.eventstore.db import metadata

    for _, said in _database_said(exc):
        found = re.search(r'no such table: (\w+)|relation "(\w+)" does not exist', said)
        if found and (found.group(1) or found.group(2)) in metadata.tables:
            return said
    return None


def unreachable(exc: BaseException) -> str | None:
    """The server a failure says is away (the broker, the database), or None. Only the
    drivers' own errors count: a broken pipe on stdout, a full disk or a timeout of the
    command's own are failures, not outages."""
    import socket

    from aiokafka.errors import KafkaConnectionError, NoBrokersAvailable
    from sqlalchemy.exc import DBAPIError

    if isinstance(exc, (KafkaConnectionError, NoBrokersAvailable)):
        return "the Kafka broker"
    if isinstance(exc, DatabaseUnavailable) or (isinstance(exc, DBAPIError) and is_outage(exc)):
        return "the database"
    # asyncpg's connect raises the socket's error as it is.
    if isinstance(exc, (ConnectionRefusedError, socket.gaierror)):
        return "the database"
    return None


if __name__ == "__main__":
    raise SystemExit(main())
