"""``ticketline import`` and ``ticketline export --kind``: the operator's side of imports."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from shared.app.config import CommandRefused, Settings, refuse_output_path
from shared.app.files import written_whole_text
from shared.app.importing.catalog import find_kind
from shared.app.importing.engine import ImportRequest, import_zone, new_summary, run_import
from shared.app.importing.report import ProblemSink
from shared.app.importing.source import Refusal, text_encoding
from shared.eventstore.bulk import bulk_gc
from shared.kernel.events.envelope import Actor
from shared.kernel.text import unprintable_reason

# An import meets each customer in one batch only: keys and memos kept past a few
# batches only grow with the file (100k tickets: +100 MB at the store's default bounds).
IMPORT_CACHED_CUSTOMERS = 5_000

KIND_HELP = (
    "service_points, technicians (dispatch); locations, parts, stock, usage (parts); "
    "tickets (intake). Import them in this order: each names records of the ones before."
)


def _batch_size(value: str) -> int:
    number = int(value) if value.isdigit() else 0
    if not 1 <= number <= 100_000:
        raise argparse.ArgumentTypeError(f"{value!r}: 1 to 100000 rows")
    return number


def _checked(check: Callable[[str], object]) -> Callable[[str], str]:
    """An argparse type refusing what ``check`` refuses (exit 2, before any file is read)."""

    def parse(value: str) -> str:
        try:
            check(value)
        except Refusal as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return value

    return parse


def _input_file(value: str) -> str:
    """The file to import, refused before anything else reads or writes beside it."""
    if Path(value).is_dir():
        raise argparse.ArgumentTypeError(f"{value}: a directory, not a file")
    if Path(value).exists() and not Path(value).is_file():
        raise argparse.ArgumentTypeError(f"{value}: not a regular file (a device or a pipe)")
    if not Path(value).is_file():
        raise argparse.ArgumentTypeError(f"{value}: no such file")
    return value


def add_import_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "import",
        help="import a file of the replaced system's history (docs/import/)",
        description="Validates the whole file, then imports it in batches (all or nothing "
        "unless --skip-invalid); re-running imports nothing twice, an interrupted import "
        "resumes. Problems go to a CSV report (line, field, problem).",
    )
    p.add_argument("kind", type=_checked(find_kind), help=KIND_HELP)
    p.add_argument("file", type=_input_file, help="CSV (with a header) or JSON Lines")
    p.add_argument("--dry-run", action="store_true", help="validate only: write nothing")
    p.add_argument(
        "--skip-invalid", action="store_true", help="import the valid rows, report the rest"
    )
    p.add_argument(
        "--encoding",
        type=_checked(text_encoding),
        default=None,
        help="default: detected (UTF-8, else GB18030)",
    )
    p.add_argument("--format", choices=("csv", "jsonl"), default=None, help="default: by extension")
    p.add_argument(
        "--timezone",
        type=_checked(import_zone),
        default=None,
        help="zone of times written without an offset",
    )
    p.add_argument("--report", default=None, help="error report (default: FILE.errors.csv)")
    p.add_argument("--batch-size", type=_batch_size, default=500, help="rows per transaction")
    p.add_argument(
        "--operator", default=None, help="who imports (default: $TICKETLINE_OPERATOR or the login)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def add_export_kind(export: argparse.ArgumentParser) -> None:
    export.add_argument(
        "--kind",
        default=None,
        help="instead of the events (jsonl): one kind's records in its import format "
        "(csv, or --format jsonl; docs/import/)",
    )


def operator(args: argparse.Namespace) -> Actor:
    """Who imports: the actor every imported event names — held to a token subject's
    rules (printable, at most 200 characters): refused, never cut or stored raw."""
    name = args.operator or os.environ.get("TICKETLINE_OPERATOR") or getpass.getuser()
    reason = unprintable_reason(name) or ("" if 0 < len(name) <= 200 else "1 to 200 characters")
    if reason:
        raise CommandRefused(f"--operator (or TICKETLINE_OPERATOR): {reason}")
    return Actor(subject=name, role="admin")


async def _import(settings: Settings, args: argparse.Namespace) -> int:
    from shared.app.platform import Platform
    from shared.app.replay import progress_bar

    path, report = Path(args.file), _report_path(args)
    request = ImportRequest(
        kind=args.kind,
        path=path,
        operator=operator(args),
        dry_run=args.dry_run,
        skip_invalid=args.skip_invalid,
        encoding=args.encoding,
        format=args.format,
        timezone=args.timezone,
        batch_size=max(1, args.batch_size),
    )
    summary = new_summary(request)
    sink = ProblemSink(report)
    platform = Platform.from_settings(settings, cached_customers=IMPORT_CACHED_CUSTOMERS)
    progress = (
        None if args.quiet else (lambda phase: progress_bar(f"{args.kind}: {phase}", unit="lines"))
    )
    try:
        with bulk_gc():
            await run_import(platform, request, sink, progress, summary)
    finally:
        sink.close()
        await platform.close()
        written = sink.count and not sink.write_error
        document = summary.as_dict() | {
            "report": str(report) if written else None,
            "report_error": sink.write_error,
        }
        if sink.write_error:
            print(f"the error report could not be written: {sink.write_error}", file=sys.stderr)
        print(json.dumps(document, indent=2, ensure_ascii=False))
    if summary.status == "imported" and not args.quiet:
        print(
            "imported: read models other than ticket_state, the network and parts catch up "
            "when the projector runs (ticketline run / ticketline project)",
            file=sys.stderr,
        )
    return 0 if summary.status in ("imported", "valid") else 1


async def _cancelled_on_sigterm(work: Coroutine[Any, Any, int]) -> int:
    """SIGTERM stops the import as Ctrl-C does (asyncio cancels it): the batch the
    database is writing then is counted before it stops, so the summary says what the
    ledger holds — raised where the signal lands, the exception left it uncounted."""
    from shared.app.cli import Terminated

    if threading.current_thread() is not threading.main_thread():
        return await work  # (signals reach the main thread only)
    loop, task, asked = asyncio.get_running_loop(), asyncio.current_task(), []
    assert task is not None

    def stop() -> None:
        asked.append(signal.SIGTERM)
        task.cancel()

    loop.add_signal_handler(signal.SIGTERM, stop)
    try:
        return await work
    except asyncio.CancelledError:
        if asked:
            raise Terminated() from None
        raise
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def _report_path(args: argparse.Namespace) -> Path:
    return Path(args.report) if args.report else Path(f"{args.file}.errors.csv")


def cmd_import(settings: Settings, args: argparse.Namespace) -> int:
    # Checked as an export's --out: written (and, with no problem, removed) by the run.
    operator(args)  # refused before anything is read or written
    report = _report_path(args)
    refuse_output_path(settings, report, "--report")
    if report.resolve() == Path(args.file).resolve():
        raise CommandRefused(f"--report {report}: that is the file to import; give another path")
    try:
        return asyncio.run(_cancelled_on_sigterm(_import(settings, args)))
    except KeyboardInterrupt:  # Ctrl-C (130), or SIGTERM (Terminated: 143)
        said = "nothing was written" if args.dry_run else "run the same import again to resume"
        print(f"interrupted: {said}", file=sys.stderr)
        raise


async def _export(settings: Settings, args: argparse.Namespace) -> int:
    from shared.app.importing.catalog import find_kind
    from shared.app.importing.export import write_rows
    from shared.app.importing.source import Refusal
    from shared.app.platform import Platform

    try:
        kind = find_kind(args.kind)
    except Refusal as exc:
        print(f"ticketline export: {exc.message}", file=sys.stderr)
        return 2
    fmt = "jsonl" if args.format == "jsonl" else "csv"
    out = Path(args.out)
    refuse_output_path(settings, out, "--out")
    # Written beside, renamed when whole: a failed export leaves no file that looks like one.
    platform = Platform.from_settings(settings)
    try:
        now = platform.clock.now()
        with written_whole_text(out) as file:
            summary = await platform.db.read(
                lambda c: write_rows(file, kind, kind.export(c, now, platform.store), fmt)
            )
            file.flush()
            # Beside the file as well, like an audit export's: the record of what was left
            # out — placed before it (both or neither).
            said = json.dumps(summary.as_dict(), ensure_ascii=False)
            with written_whole_text(Path(f"{out}.summary.json")) as beside:
                beside.write(said + "\n")
    finally:
        await platform.close()
    print(said)
    return 0


def cmd_export_kind(settings: Settings, args: argparse.Namespace) -> int:
    return asyncio.run(_export(settings, args))
