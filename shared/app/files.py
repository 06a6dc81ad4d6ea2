"""Files the tools write whole or not at all: built under a name of their own beside the
target, then placed there — never over a file another run (or the operator) put there."""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, TextIO


def new_sibling(path: Path) -> Path:
    """A new empty file beside ``path`` (its directory made if missing), owner-only, under a
    name no other run uses — the process id alone repeats (PID 1 in every container).
    Errors name ``path``, never the hidden draft."""
    for parent in path.parents:  # mkdir would say "File exists" of the file in the way
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():  # named itself: the part of the path that is wrong
                raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(parent))
            break
    with said_of(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        draft = path.with_name(f"{draft_prefix(path)}{os.getpid()}.{secrets.token_hex(4)}.partial")
        os.close(os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    return draft


def draft_prefix(path: Path) -> str:
    """How the drafts of ``path`` are named: its name cut short enough that a name near the
    file system's limit (255 bytes) leaves room for the draft's own ending."""
    name = path.name.encode()[:200].decode(errors="ignore")
    return f".{name}."


# How long a draft of a dead run must have been left untouched before it is swept (one on
# a shared disk may be another host's, whose process ids mean nothing here: still written).
ABANDONED_AFTER_SECONDS = 600


def sweep_abandoned(directory: Path, prefix: str) -> list[Path]:
    """Remove what runs killed before their cleanup left in ``directory``: entries named
    ``{prefix}{pid}.…`` (drafts, their -wal/-shm/-journal, scratch directories) whose
    process is gone and which nobody touched for ``ABANDONED_AFTER_SECONDS``."""
    swept = []
    now = time.time()
    for entry in directory.glob(f"{glob.escape(prefix)}*"):
        pid = entry.name[len(prefix) :].split(".", 1)[0].split("-", 1)[0]
        try:
            idle = now - max([entry.stat().st_mtime, *(f.stat().st_mtime for f in entry.glob("*"))])
        except OSError:
            continue  # gone meanwhile
        if not pid.isdigit() or _alive(int(pid)) or idle < ABANDONED_AFTER_SECONDS:
            continue
        with contextlib.suppress(OSError):
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
            swept.append(entry)
    return swept


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's: alive
        return True
    return True


def place_new(draft: Path, path: Path) -> bool:
    """``draft`` at ``path`` unless a file is there already: True when placed (``draft``
    then gone), False when ``path`` was taken (``draft`` left to the caller)."""
    try:
        os.link(draft, path)
    except FileExistsError:
        return False
    except OSError:  # a file system without hard links: reserve the name, then move onto it
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            return False
        os.replace(draft, path)
        return True
    draft.unlink()
    return True


def key_file(path: Path, make: Callable[[], bytes]) -> bytes:
    """The key in ``path``, made by ``make`` and written there (owner-only) when missing:
    processes starting together on one data directory all end up with the first one's key
    — never a half-written file, never two keys."""
    if not path.exists():
        draft = new_sibling(path)
        try:
            draft.write_bytes(make())
            place_new(draft, path)  # False if another process got there first: theirs stands
        finally:
            draft.unlink(missing_ok=True)
    return path.read_bytes()


@contextlib.contextmanager
def _placed_when_whole(path: Path) -> Iterator[Path]:
    """A draft of ``path`` (``new_sibling``: created afresh, owner-only — an export may
    hold personal data) renamed over it when the block ends without an error; on one,
    the draft is removed and ``path`` untouched. A link left at ``path`` is replaced,
    never followed, and nothing is written into a file someone planted under a
    predictable name."""
    sweep_abandoned(path.parent, draft_prefix(path))  # drafts of runs killed before cleanup
    draft = new_sibling(path)
    try:
        yield draft
        with said_of(path):
            os.replace(draft, path)
    finally:
        draft.unlink(missing_ok=True)


@contextlib.contextmanager
def said_of(path: Path) -> Iterator[None]:
    """A file operation's error named by the path asked for, never by the hidden draft."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None:
            raise
        raise type(exc)(exc.errno, exc.strerror, str(path)) from None


@contextlib.contextmanager
def written_whole(path: Path) -> Iterator[BinaryIO]:
    """``path``'s bytes, placed whole or not at all (``_placed_when_whole``)."""
    with _placed_when_whole(path) as draft:
        with said_of(path):
            f = open(draft, "wb")  # noqa: SIM115 (closed below)
        with f:
            yield f


@contextlib.contextmanager
def written_whole_text(path: Path) -> Iterator[TextIO]:
    """``path``'s text (UTF-8), placed whole or not at all (``_placed_when_whole``)."""
    with _placed_when_whole(path) as draft:
        with said_of(path):
            f = open(draft, "w", encoding="utf-8", newline="")  # noqa: SIM115 (closed below)
        with f:
            yield f
