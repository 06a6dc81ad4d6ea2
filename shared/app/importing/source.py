"""Reading an import file: its encoding and format, its header, then its rows one at a time
(flat memory whatever the file's size).

Before any row is read the whole file is decoded once, in chunks: a file in another
encoding than the one given (or detected: UTF-8, else GB18030 — common in files from older
Chinese systems) is refused with the line of the first bad byte, before anything is
written. The same pass takes the file's SHA-256 (an import resumes the unfinished run of
the same file) and counts its lines (the progress bar's total).
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from shared.app.importing.cells import cell_value
from shared.app.importing.fields import Column, Problem
from shared.kernel.text import DuplicateKey, loads_unique

CHUNK = 1 << 20
# Tried in this order when no encoding is given. GB18030 decodes most byte strings, so
# UTF-8 (strict, and far more likely to fail on non-UTF-8 input) goes first.
DETECTED = ("utf-8", "gb18030")
FORMATS = ("csv", "jsonl")
_ENCODING_OPTION = "encoding (--encoding; uploaded: ?encoding= or the Content-Type's charset)"
# A cell is read whole up to 64 MiB, so that one too long for its column is that row's
# problem (as in JSON Lines), not a refusal of the file; beyond it the file is refused.
csv.field_size_limit(1 << 26)


class Refusal(Exception):
    """The file as a whole cannot be imported (nothing is written)."""

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


class Busy(Refusal):
    """Another run holds this file's turn: nothing written, the same request later resumes
    or checks it."""


@dataclass(frozen=True)
class Source:
    path: Path
    name: str
    format: str
    encoding: str
    size: int
    sha256: str
    lines: int  # physical lines (an estimate of the rows, for progress)
    header: tuple[str, ...] = ()  # CSV


@dataclass(frozen=True)
class RawRow:
    """A record as read: its first line and its values, or the problem reading it."""

    line: int
    values: dict[str, Any] | None
    problems: tuple[Problem, ...] = ()


def _format_of(path: Path, name: str, given: str | None) -> str:
    if given:
        if given not in FORMATS:
            raise Refusal(f"unknown format {given!r}; use csv or jsonl")
        return given
    suffix = Path(name).suffix.lower() or path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if suffix == ".csv":
        return "csv"
    with path.open("rb") as f:
        start = f.read(4096).lstrip(codecs.BOM_UTF8).lstrip()
    return "jsonl" if start.startswith(b"{") else "csv"


def _scan(path: Path, encoding: str) -> tuple[str, int] | tuple[None, int]:
    """Decode the whole file: (sha256, lines) or (None, line of the first bad byte)."""
    decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    digest = hashlib.sha256()
    lines = 0
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                return None, lines + chunk[: exc.start].count(b"\n") + 1
            except UnicodeError:  # some codecs raise the base class (UTF-16 without a BOM)
                return None, lines + 1
            lines += chunk.count(b"\n")
        try:
            decoder.decode(b"", final=True)
        except UnicodeError:
            return None, lines + 1
    return digest.hexdigest(), lines


def text_encoding(given: str) -> str:
    """The codec name of ``given``, or a refusal: an unknown name, or a codec of bytes."""
    try:
        info = codecs.lookup(given)
    except LookupError:
        raise Refusal(f"unknown encoding {given!r}") from None
    if not getattr(info, "_is_text_encoding", True):
        raise Refusal(f"{given!r} is not a text encoding")
    return info.name


def _encoding_of(path: Path, given: str | None) -> tuple[str, str, int]:
    """(encoding, sha256, lines), or a refusal naming the line of the first bad byte."""
    if given:
        name = text_encoding(given)
        digest, lines = _scan(path, name)
        if digest is None:
            raise Refusal(f"line {lines}: not valid {given} (give the file's {_ENCODING_OPTION})")
        return _bom_aware(path, name), digest, lines
    failed: list[int] = []
    for candidate in DETECTED:
        digest, lines = _scan(path, candidate)
        if digest is not None:
            return _bom_aware(path, candidate), digest, lines
        failed.append(lines)
    # The line GB18030 (which decodes nearly every byte) stops at holds the byte that
    # decodes in neither; UTF-8 may stop earlier, at a line that is good GB18030.
    raise Refusal(
        f"line {failed[-1]}: the file is neither UTF-8 (from line {failed[0]}) nor GB18030; "
        f"give its {_ENCODING_OPTION} (e.g. gbk, big5, cp1252)"
    )


def _bom_aware(path: Path, encoding: str) -> str:
    if encoding == "utf-8":
        with path.open("rb") as f:
            if f.read(3) == codecs.BOM_UTF8:
                return "utf-8-sig"
    return encoding


def open_source(
    path: Path,
    columns: Sequence[Column],
    *,
    name: str | None = None,
    format: str | None = None,
    encoding: str | None = None,
) -> Source:
    """Check the file as a whole: readable, its encoding, its format, its header."""
    if not path.is_file():
        raise Refusal(f"no file {path}")
    name = name or path.name
    fmt = _format_of(path, name, format)
    enc, digest, lines = _encoding_of(path, encoding)
    size = os.path.getsize(path)
    source = Source(path, name, fmt, enc, size, digest, lines)
    if fmt == "csv":
        return Source(**{**source.__dict__, "header": _header(source, columns)})
    return source


def _header(source: Source, columns: Sequence[Column]) -> tuple[str, ...]:
    with source.path.open(encoding=source.encoding, newline="") as f:
        try:
            header = next(csv.reader(f), None)
        except csv.Error as exc:
            raise Refusal(f"line 1: {exc}") from None
    if not header or not any(h.strip() for h in header):
        raise Refusal("line 1: the header (the column names) is missing")
    names = tuple(h.strip() for h in header)
    known = {c.name for c in columns}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise Refusal(
            f"line 1: unknown column(s) {', '.join(map(repr, unknown))}; "
            f"this kind has {', '.join(c.name for c in columns)}"
        )
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise Refusal(f"line 1: column(s) given twice: {', '.join(twice)}")
    missing = [c.name for c in columns if c.required and c.name not in names]
    if missing:
        raise Refusal(f"line 1: required column(s) missing: {', '.join(missing)}")
    return names


def read_rows(source: Source, columns: Sequence[Column]) -> Iterator[RawRow]:
    """Every record of the file, in order (blank lines and rows of empty cells skipped)."""
    if source.format == "csv":
        return _csv_rows(source)
    return _jsonl_rows(source, {c.name for c in columns})


def _csv_rows(source: Source) -> Iterator[RawRow]:
    header = source.header
    with source.path.open(encoding=source.encoding, newline="") as f:
        reader = csv.reader(f)
        next(reader, None)
        line = reader.line_num
        while True:
            start = line + 1
            try:
                values = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise Refusal(f"line {start}: {exc}") from None
            line = reader.line_num
            if not any(v.strip() for v in values):
                continue  # blank, or every cell empty: what spreadsheets leave of cleared rows
            if len(values) != len(header):
                problem = Problem(start, "(row)", f"{len(values)} values for {len(header)} columns")
                yield RawRow(start, None, (problem,))
                continue
            yield RawRow(start, dict(zip(header, map(cell_value, values), strict=True)))


def _jsonl_rows(source: Source, known: set[str]) -> Iterator[RawRow]:
    with source.path.open(encoding=source.encoding, newline="") as f:
        for number, text in enumerate(_lines(f), start=1):
            if not text.strip():
                continue
            try:
                value = loads_unique(text)
            except DuplicateKey as exc:
                problem = Problem(number, exc.key, "given more than once in its object")
                yield RawRow(number, None, (problem,))
                continue
            except orjson.JSONDecodeError as exc:  # its line is the row's (1): the column says
                said = f"not JSON: {exc.msg} at column {exc.colno}"
                yield RawRow(number, None, (Problem(number, "(row)", said),))
                continue
            if not isinstance(value, dict):
                yield RawRow(number, None, (Problem(number, "(row)", "not a JSON object"),))
                continue
            unknown = [k for k in value if k not in known]
            if unknown:
                problems = tuple(Problem(number, k, "unknown field") for k in unknown)
                yield RawRow(number, None, problems)
                continue
            yield RawRow(number, value)


def _lines(f: Any) -> Iterator[str]:
    """Lines ending in \\n only: JSON strings may hold U+2028 and other separators that
    str.splitlines would split on."""
    pending = ""
    while chunk := f.read(CHUNK):
        pending += chunk
        *complete, pending = pending.split("\n")
        yield from complete
    if pending:
        yield pending
