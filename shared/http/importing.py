"""``POST /imports/<kind>``: an import file uploaded to the service that owns the kind.

The body is the file itself (CSV with its header, or JSON Lines), streamed to a scratch
file — never held in memory — then imported as ``ticketline import`` would: validated as
a whole, written in batches, resumable, nothing imported twice. The answer is the summary
and the first lines of the error report (`report`: line, field, problem); a refused file is a
422 problem with the same two members, a file another run is importing a 409. Admin only.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from email.message import EmailMessage
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect

from shared.app.importing.engine import ImportRequest, run_import
from shared.app.importing.kinds import Kind
from shared.app.importing.report import ProblemSink
from shared.app.importing.source import Refusal, text_encoding
from shared.app.platform import Platform
from shared.http.app import get_platform
from shared.http.context import Principal, allow, every_region
from shared.http.params import QueryFlag
from shared.http.problems import ProblemError, problem_doc
from shared.http.security import BodyTooLarge
from shared.http.validation import invalid_fields
from shared.kernel.calendar import iana_zone, unknown_zone

IMPORT_PREFIX = "/imports/"
may_import = allow("admin", scope="imports:write")
# Problems listed in the answer (the rest are counted).
SHOWN_PROBLEMS = 1000
_FORMATS = {"text/csv": "csv", "application/x-ndjson": "jsonl", "application/jsonl": "jsonl"}


def import_path(kind: Kind) -> str:
    return IMPORT_PREFIX + kind.name.replace("_", "-")


def import_router(kinds: Sequence[Kind]) -> APIRouter:
    router = APIRouter(tags=["imports"])
    for kind in kinds:
        _route(router, kind)
    return router


def _openapi(kind: Kind) -> dict[str, Any]:
    header = ",".join(c.name for c in kind.columns)
    return {
        "requestBody": {
            "required": True,
            "description": "The file: CSV with this header (UTF-8 or GB18030), or JSON Lines. "
            "The format is the `format` parameter's, else the content type's (`text/csv`; "
            "`application/x-ndjson`, `application/jsonl`), else read from the file's first "
            "byte. Format: docs/import/.",
            "content": {
                "text/csv": {"schema": {"type": "string"}, "example": header + "\n"},
                "text/plain": {"schema": {"type": "string"}, "example": header + "\n"},
                **{
                    media: {"schema": {"type": "string"}}
                    for media, fmt in _FORMATS.items()
                    if fmt == "jsonl"
                },
            },
        }
    }


def _route(router: APIRouter, kind: Kind) -> None:
    @router.post(
        import_path(kind),
        summary=f"Import: {kind.title}",
        description=f"Columns: {', '.join(c.name + ('*' if c.required else '') for c in kind.columns)} "
        "(* required). `dry_run` validates and writes nothing; by default a file with any "
        "problem imports nothing, `skip_invalid` imports its valid rows. Rows already present "
        "(natural key) are skipped: sending the same file again changes nothing.",
        openapi_extra=_openapi(kind),
        responses={
            422: problem_doc("The file was refused: `summary` and `report` say why"),
            409: problem_doc(
                "The same file is being imported by another run (`import-busy`: send it "
                "again when that run ends), or the import stopped (`import-interrupted`: "
                "send it again to resume)"
            ),
            413: problem_doc("The file is above the import size limit"),
        },
        name=f"import_{kind.name}",
    )
    async def upload(
        request: Request,
        dry_run: Annotated[QueryFlag, Query(description="Validate only: write nothing.")] = False,
        skip_invalid: Annotated[QueryFlag, Query(description="Import the valid rows.")] = False,
        format: Literal["csv", "jsonl"] | None = Query(
            default=None, description="Default: by content type."
        ),
        encoding: str | None = Query(default=None, max_length=40, description="Default: detected."),
        timezone: str | None = Query(
            default=None, max_length=64, description="For times without an offset."
        ),
        principal: Principal = Depends(may_import),
        platform: Platform = Depends(get_platform),
    ) -> JSONResponse:
        every_region(principal, "an import")
        media_type, charset = _content_type(request.headers.get("content-type", ""))
        # Before the body is read, each named: what no file could satisfy.
        _check_options(encoding=encoding, timezone=timezone, charset=charset)
        options = {
            "dry_run": dry_run,
            "skip_invalid": skip_invalid,
            "encoding": encoding or charset,
            "timezone": timezone,
        }
        with tempfile.TemporaryDirectory(prefix="ticketline-upload-") as tmp:
            path = Path(tmp) / "upload"
            await _spool(request, path)
            fmt = format or _FORMATS.get(media_type)
            named = (
                "the one `encoding` names"
                if encoding
                else "the Content-Type's charset"
                if charset
                else None
            )
            return await _import(platform, kind, principal, path, fmt, options, named)


def _check_options(*, encoding: str | None, timezone: str | None, charset: str | None) -> None:
    refused = []
    for field, name in (("encoding", encoding), ("Content-Type", None if encoding else charset)):
        if name:
            try:
                text_encoding(name)
            except Refusal as exc:
                refused.append((field, exc.message))
    if timezone and iana_zone(timezone) is None:
        refused.append(("timezone", unknown_zone(timezone)))
    if refused:
        raise invalid_fields(refused)


def _content_type(header: str) -> tuple[str, str | None]:
    """The media type and its ``charset`` parameter (``text/csv; charset=gbk``)."""
    message = EmailMessage()
    message["content-type"] = header
    return message.get_content_type(), message.get_param("charset")  # type: ignore[return-value]


async def _spool(request: Request, path: Path) -> None:
    """The body to a scratch file, as it arrives (flat memory whatever its size)."""
    try:
        with path.open("wb") as f:
            async for chunk in request.stream():
                f.write(chunk)
    except BodyTooLarge as exc:
        raise ProblemError(413, "payload-too-large", "Request body too large", str(exc)) from None
    except ClientDisconnect:
        raise ProblemError(400, "bad-request", "The upload was cut off") from None


async def _import(
    platform: Platform,
    kind: Kind,
    principal: Principal,
    path: Path,
    fmt: str | None,
    options: dict[str, Any],
    encoding_from: str | None = None,
) -> JSONResponse:
    request = ImportRequest(
        kind=kind.name,
        path=path,
        operator=principal.actor,
        source_name=f"upload.{fmt}" if fmt else "upload",  # no format: read from the file
        format=fmt,
        **options,
    )
    sink = ProblemSink(keep=SHOWN_PROBLEMS)
    summary = await run_import(platform, request, sink)
    body: dict[str, Any] = {
        "summary": summary.as_dict(),
        "report": sink.as_dicts(),
        "report_total": sink.count,
    }
    if summary.status == "refused" and encoding_from and summary.encoding is None:
        # Not decoded in the encoding the upload named: say where that came from.
        summary.message = f"{summary.message} (the encoding is {encoding_from})"
    if summary.status == "refused":
        raise ProblemError(
            422, "import-refused", "The file was not imported", summary.message, **body
        )
    if summary.status == "busy":
        raise ProblemError(
            409,
            "import-busy",
            "The file is being imported",
            summary.message,
            rule="import_busy",
            **body,
        )
    if summary.status == "interrupted":
        raise ProblemError(
            409,
            "import-interrupted",
            "The import stopped",
            summary.message,
            rule="import_interrupted",
            **body,
        )
    return JSONResponse(body)
