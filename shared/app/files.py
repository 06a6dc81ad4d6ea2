"""Files the tools write whole or not at all: built under a name of their own beside the
target, then placed there — never over a file another run (or the operator) put there."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path


def new_sibling(path: Path) -> Path:
    """A new empty file beside ``path`` (its directory made if missing), owner-only, under a
    name no other run uses — the process id alone repeats (PID 1 in every container)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.partial")
    os.close(os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    return draft


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
