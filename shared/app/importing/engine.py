"""The import of one file: check it, validate it, write it in batches — resumable.

1. The file as a whole (``source.py``): encoding, format, header. A problem here refuses
   the file; nothing is written.
2. Unless ``skip_invalid``: a validating pass over every row (parse, natural keys given
   twice, the owning service's decide functions against the database as it is, and what
   the file's earlier batches decided: ``KindContext.remembered``). Its verdicts are
   spooled to a scratch file (``Spool``). A dry run stops here. Any problem refuses the
   file (all or nothing): nothing is written.
3. The writing pass: batches, each appended in one unit of work — the segments of a
   batch grouped into one bulk append per service and round (``Committer``) — together
   with the run's progress (``import_runs``: the last committed line). All or nothing, the
   batches are the spooled verdicts (the file is not parsed and decided twice); a stream
   another writer changed since stops the import (resumable). With ``skip_invalid`` this
   is the only pass: each batch read and decided, invalid rows reported and left out. An
   interrupted import resumes after its last committed line under the same batch id;
   rows already present (their natural key) are skipped, so running the same file again
   changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from shared.app.importing import runs
from shared.app.importing.catalog import find_kind
from shared.app.importing.commit import Committer, Interrupted
from shared.app.importing.fields import Fields, Problem
from shared.app.importing.keys import KeyIndex
from shared.app.importing.kinds import Kind, KindContext, Parsed, Verdict
from shared.app.importing.report import ProblemSink, Tally
from shared.app.importing.scratch import Remembered, Spool
from shared.app.importing.source import Busy, RawRow, Refusal, Source, open_source, read_rows
from shared.app.platform import Platform
from shared.eventstore.leases import Lease
from shared.eventstore.outbox import relay_owner_id
from shared.kernel.calendar import iana_zone, unknown_zone
from shared.kernel.events.envelope import Actor

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class ImportRequest:
    kind: str
    path: Path
    operator: Actor
    source_name: str | None = None
    dry_run: bool = False
    skip_invalid: bool = False
    encoding: str | None = None
    format: str | None = None
    timezone: str | None = None
    batch_size: int = 500


@dataclass
class ImportSummary:
    kind: str
    source: str
    mode: str
    dry_run: bool
    status: str = "refused"
    format: str | None = None
    encoding: str | None = None
    batch_id: str | None = None
    resumed_after_line: int = 0
    tally: Tally = field(default_factory=Tally)
    problems: int = 0
    ledger_before: int = 0
    ledger_after: int = 0
    seconds: float = 0.0
    message: str | None = None

    def as_dict(self) -> dict[str, Any]:
        t, seconds = self.tally, self.seconds or 1e-9
        return {
            "kind": self.kind,
            "source": self.source,
            "format": self.format,
            "encoding": self.encoding,
            "mode": self.mode,
            "dry_run": self.dry_run,
            "status": self.status,
            "message": self.message,
            "batch_id": self.batch_id,
            "resumed_after_line": self.resumed_after_line,
            "rows": t.rows,
            "imported": t.imported,
            "already_present": t.present,
            "invalid": t.invalid,
            "problems": self.problems,
            "events": t.events,
            "ledger_position": {"before": self.ledger_before, "after": self.ledger_after},
            "seconds": round(self.seconds, 3),
            "rows_per_second": round(t.rows / seconds, 1),
            "events_per_second": round(t.events / seconds, 1),
        }


def new_summary(request: ImportRequest) -> ImportSummary:
    mode = "skip_invalid" if request.skip_invalid else "all_or_nothing"
    name = request.source_name or request.path.name
    return ImportSummary(request.kind, name, mode, request.dry_run)


async def run_import(
    platform: Platform,
    request: ImportRequest,
    sink: ProblemSink,
    progress: Callable[[str], Progress] | None = None,
    summary: ImportSummary | None = None,
) -> ImportSummary:
    """Import one file; ``summary`` (filled as the import goes) stays readable when the
    import is interrupted (KeyboardInterrupt, cancellation)."""
    started = time.perf_counter()
    summary = summary or new_summary(request)
    name = summary.source
    summary.ledger_before = await platform.db.read(platform.store.last_position)
    try:
        kind = find_kind(request.kind)
        summary.kind = kind.name
        zone = import_zone(request.timezone)
        source = await asyncio.to_thread(
            open_source,
            request.path,
            kind.columns,
            name=name,
            format=request.format,
            encoding=request.encoding,
        )
        summary.format, summary.encoding = source.format, source.encoding
        await _run(platform, request, kind, source, zone, summary, sink, progress)
    except Refusal as exc:
        # Unreadable past some rows already written (--skip-invalid): the run stops there.
        stopped = summary.status == "interrupted"
        summary.status = (
            "interrupted" if stopped else "busy" if isinstance(exc, Busy) else "refused"
        )
        summary.message = exc.message
    except Interrupted as exc:
        summary.status = "interrupted"
        summary.message = f"{exc}; run the same import again to resume"
    except (KeyboardInterrupt, asyncio.CancelledError):
        if summary.status not in ("imported", "interrupted"):  # (stopped while validating)
            summary.status = "interrupted"
            summary.message = "stopped before the end: " + (
                "nothing was written" if request.dry_run else "run the same import again"
            )
        raise
    finally:
        summary.problems = sink.count
        summary.ledger_after = await platform.db.read(platform.store.last_position)
        summary.seconds = time.perf_counter() - started
    return summary


def import_zone(name: str | None) -> ZoneInfo | None:
    if not name:
        return None
    zone = iana_zone(name)
    if zone is None:
        raise Refusal(unknown_zone(name))
    return zone


@dataclass
class _Job:
    """One import under way: what its passes share."""

    platform: Platform
    request: ImportRequest
    kind: Kind
    source: Source
    zone: ZoneInfo | None
    summary: ImportSummary
    sink: ProblemSink
    progress: Callable[[str], Progress] | None
    start_after: int = 0
    # What the kind keeps across batches; the validating pass's is the writing pass's.
    memory: dict[str, Any] = field(default_factory=dict)

    def context(self, validating: bool) -> KindContext:
        now = self.platform.clock.now()
        return KindContext(self.platform.settings, now, validating, self.zone, self.memory)

    def report(self, phase: str) -> Progress | None:
        return self.progress(phase) if self.progress else None


async def _run(
    platform: Platform,
    request: ImportRequest,
    kind: Kind,
    source: Source,
    zone: ZoneInfo | None,
    summary: ImportSummary,
    sink: ProblemSink,
    progress: Callable[[str], Progress] | None,
) -> None:
    job = _Job(platform, request, kind, source, zone, summary, sink, progress)
    async with contextlib.AsyncExitStack() as held:
        run = None
        if not request.dry_run:
            await held.enter_async_context(_sole_import(platform, kind, source))
            run = await platform.db.read(lambda c: runs.resumable(c, kind.name, source.sha256))
        job.start_after = summary.resumed_after_line = run.committed_line if run else 0
        # All or nothing: what the validating pass decided is what the writing pass appends.
        spool = None if request.dry_run or request.skip_invalid else Spool()
        if spool is not None:
            held.callback(spool.close)
        if (request.dry_run or not request.skip_invalid) and not await _check(job, spool):
            return
        if run is None:
            run = await platform.db.write(lambda c: _start(c, platform, kind, source, request))
        await _write_all(job, run, spool)


# A run holds its file's lease, renewed a third of the way through each term: a second
# run of the same file (resuming the first while it still wrote) is refused meanwhile.
IMPORT_LEASE_SECONDS = 60.0


@contextlib.asynccontextmanager
async def _sole_import(platform: Platform, kind: Kind, source: Source) -> AsyncIterator[None]:
    lease = Lease(
        platform.db,
        f"import:{kind.name}:{source.sha256[:40]}",
        relay_owner_id(),
        IMPORT_LEASE_SECONDS,
        platform.clock,
    )
    if not await lease.acquire():
        raise Busy(
            "this file is being imported by another run: wait for it to finish (a run "
            "that was killed gives its turn up at once on SQLite, within "
            f"{IMPORT_LEASE_SECONDS:g} s on PostgreSQL), then run it again to resume or "
            "check it"
        )

    try:
        async with lease.kept():
            yield
    finally:
        with contextlib.suppress(Exception):  # it lapses on its own
            await lease.release()


async def _check(job: _Job, spool: Spool | None) -> bool:
    """The validating pass: whether to go on and write."""
    summary, sink = job.summary, job.sink
    tally = await validate(job, job.context(True), spool)
    summary.tally = tally
    if job.request.dry_run:
        summary.status = "valid" if not sink.count else "invalid"
        return False
    if sink.count:
        summary.status = "refused"
        summary.message = f"{sink.count} problem(s) in {tally.invalid} row(s): nothing imported"
        tally.imported = tally.events = 0  # the valid rows were not written either
        return False
    return True


async def _write_all(job: _Job, run: runs.Run, spool: Spool | None) -> None:
    platform, request, summary = job.platform, job.request, job.summary
    summary.batch_id = run.batch_id
    context = job.context(False)
    committer = Committer(platform, job.kind, request.operator, run.batch_id, request.skip_invalid)
    summary.status = "interrupted"
    summary.message = "stopped before the end: run the same import again to resume"
    summary.tally = committer.tally
    await write(job, committer, context, spool)
    await platform.db.write(lambda c: runs.finish(c, run.batch_id, platform.clock.now()))
    await job.kind.finish(platform, context)
    summary.status, summary.message = "imported", None


def _start(
    conn: Any, platform: Platform, kind: Kind, source: Source, request: ImportRequest
) -> runs.Run:
    return runs.start(
        conn,
        kind=kind.name,
        source=source.name,
        fingerprint=source.sha256,
        operator=request.operator,
        mode="skip_invalid" if request.skip_invalid else "all_or_nothing",
        now=platform.clock.now(),
    )


def batches(source: Source, kind: Kind, size: int, start_after: int) -> Iterator[list[RawRow]]:
    rows = (r for r in read_rows(source, kind.columns) if r.line > start_after)
    while batch := list(islice(rows, size)):
        yield batch


def parse_batch(
    kind: Kind, raws: Sequence[RawRow], context: KindContext, keys: KeyIndex | None
) -> tuple[list[Parsed], list[Problem], int]:
    """The batch's rows read into items; the problems of those that could not be (and of
    natural keys given twice in the file); how many rows those were."""
    parsed: list[Parsed] = []
    failed: dict[int, list[Problem]] = {}
    keyed: list[tuple[str, int]] = []
    for raw in raws:
        if raw.values is None:
            failed[raw.line] = list(raw.problems)
            continue
        fields = Fields(raw.line, raw.values, context.zone)
        item = kind.parse(fields, context)
        if item is not None:
            keyed.append((kind.key(item), raw.line))  # a row in error still claims its key
        if fields.problems or item is None:
            failed[raw.line] = fields.problems or [Problem(raw.line, "(row)", "not readable")]
            continue
        parsed.append(Parsed(raw.line, kind.key(item), item))
    if keys is not None and keyed:
        for line, first in keys.duplicates(keyed).items():
            problem = Problem(line, kind.key_column, f"given twice: also on line {first}")
            failed.setdefault(line, []).append(problem)
        parsed = [p for p in parsed if p.line not in failed]
    return parsed, [p for line in sorted(failed) for p in failed[line]], len(failed)


def count(tally: Tally, batch: _Batch, verdicts: Sequence[Verdict], sink: ProblemSink) -> None:
    """A batch's outcome in the tally, its problems in the report (in line order)."""
    tally.rows += batch.rows
    tally.invalid += batch.invalid
    problems = list(batch.problems)
    for verdict in verdicts:
        if verdict.problems:
            tally.invalid += 1
            problems += verdict.problems
        elif verdict.present:
            tally.present += 1
        else:
            tally.imported += 1
            tally.events += verdict.events
    sink.add(sorted(problems, key=lambda p: p.line))


@dataclass
class _Batch:
    """A batch of rows read and parsed, on its way to the database; or, spooled by the
    validating pass, its ``decided`` verdicts."""

    rows: int
    last_line: int
    parsed: list[Parsed]
    invalid: int
    problems: list[Problem]
    decided: list[Verdict] | None = None


def parsed_batches(
    kind: Kind,
    source: Source,
    context: KindContext,
    request: ImportRequest,
    start_after: int,
    keys: KeyIndex | None,
) -> Generator[_Batch, None, None]:
    """The file's batches, parsed; ``keys`` (the keys seen so far) closed when the
    generator ends or is closed."""
    try:
        for raws in batches(source, kind, request.batch_size, start_after):
            parsed, problems, invalid = parse_batch(kind, raws, context, keys)
            yield _Batch(len(raws), raws[-1].line, parsed, invalid, problems)
    finally:
        if keys is not None:
            keys.close()


async def pipelined(
    batches_: Iterator[_Batch],
    send: Callable[[_Batch], Awaitable[list[Verdict]]],
    done: Callable[[_Batch, list[Verdict]], None],
) -> None:
    """Each batch sent to the database in turn; the next one is read and parsed while the
    database works on the previous one (its thread, or the server)."""

    async def settle(batch: _Batch, sending: asyncio.Future[list[Verdict]]) -> None:
        try:
            verdicts = await asyncio.shield(sending)
        except asyncio.CancelledError:
            # Interrupted while the database works on the batch: it commits (or not) in its
            # own time; counted before stopping, the summary says what the ledger holds.
            with contextlib.suppress(Exception):
                done(batch, await sending)
            raise
        done(batch, verdicts)

    previous: tuple[_Batch, asyncio.Future[list[Verdict]]] | None = None
    for batch in batches_:
        if previous is not None:
            await settle(*previous)
        previous = (batch, asyncio.ensure_future(send(batch)))
    if previous is not None:
        await settle(*previous)


async def validate(job: _Job, context: KindContext, spool: Spool | None) -> Tally:
    """Every row checked against the database as it is, its verdict spooled; nothing
    written. What earlier batches decided is remembered in a scratch file."""
    platform, kind = job.platform, job.kind
    context.remembered = remembered = Remembered()

    async def send(batch: _Batch) -> list[Verdict]:
        if not batch.parsed:
            return []
        return await platform.db.read(lambda c: kind.decide(c, batch.parsed, context))

    def keep(batch: _Batch, verdicts: list[Verdict]) -> None:
        if spool is not None:
            spool.put(batch.rows, batch.last_line, verdicts)

    request = job.request
    batches = parsed_batches(kind, job.source, context, request, job.start_after, KeyIndex())
    try:
        return await _pass(job, "validating", batches, send, Tally(), keep)
    finally:
        context.remembered = None
        remembered.close()


def spooled_batches(spool: Spool) -> Generator[_Batch, None, None]:
    for rows, last_line, verdicts in spool.read():
        yield _Batch(rows, last_line, [], 0, [], verdicts)


async def write(
    job: _Job, committer: Committer, context: KindContext, spool: Spool | None
) -> Tally:
    """The writing pass: one unit of work per batch (its events and the run's progress):
    the spooled verdicts of the validating pass, or (``skip_invalid``) the file's rows
    decided a batch at a time."""
    request = job.request

    async def send(batch: _Batch) -> list[Verdict]:
        def work(conn: Any) -> list[Verdict]:
            return committer.commit_batch(
                conn, batch.parsed, context, batch.last_line, batch.invalid, batch.decided
            )

        return await job.platform.db.write(work)

    if spool is not None:
        batches = spooled_batches(spool)
    else:
        keys = KeyIndex() if request.skip_invalid else None
        batches = parsed_batches(
            committer.kind, job.source, context, request, job.start_after, keys
        )
    return await _pass(job, "importing", batches, send, committer.tally)


async def _pass(
    job: _Job,
    phase: str,
    batches: Generator[_Batch, None, None],
    send: Callable[[_Batch], Awaitable[list[Verdict]]],
    tally: Tally,
    keep: Callable[[_Batch, list[Verdict]], None] | None = None,
) -> Tally:
    """One pass over the file: each batch sent (the next one parsed meanwhile), its
    verdicts counted and reported (and kept)."""
    lines = job.source.lines
    progress = job.report(phase)

    def done(batch: _Batch, verdicts: list[Verdict]) -> None:
        count(tally, batch, verdicts, job.sink)
        if keep is not None:
            keep(batch, verdicts)
        if progress:
            progress(batch.last_line, max(lines, batch.last_line))

    try:
        await pipelined(batches, send, done)
    finally:
        batches.close()
    if progress:
        progress(lines, lines)
    return tally
