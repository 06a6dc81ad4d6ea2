"""A customer whose personal data a test can look for byte by byte, and the places it
looks: database files, the broker, exports, API answers."""

from __future__ import annotations

import copy
import secrets
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.intake.schemas import RECEIVE_EXAMPLE
from shared.eventstore.db import sqlite_path


@dataclass(frozen=True)
class Person:
    """Values no other test writes: any byte of them found later is a leak."""

    name: str
    phone: str
    line: str
    postcode: str
    symptom: str
    comment: str
    complaint: str
    new_phone: str

    @classmethod
    def make(cls) -> Person:
        tag = secrets.token_hex(4)
        digits = "".join(str(secrets.randbelow(10)) for _ in range(8))
        other = "".join(str(secrets.randbelow(10)) for _ in range(8))
        return cls(
            name=f"张秀英 Zhang{tag}",
            phone=f"139{digits}",
            line=f"88 Plum Blossom Lane {tag}",
            postcode=f"PC{digits[:4]}x{tag}",
            symptom=f"drum noisy {tag}, neighbour Mrs Zhou complains",
            comment=f"Zhang{tag} says the technician was kind",
            complaint=f"Zhang{tag} was called at night about {digits}",
            new_phone=f"137{other}",
        )

    def body(self, serial: str) -> dict[str, Any]:
        body: dict[str, Any] = copy.deepcopy(RECEIVE_EXAMPLE)
        body["customer"] = {"name": self.name, "phone": self.phone}
        body["address"] = {**body["address"], "line": self.line, "postcode": self.postcode}
        body["problem"] = {**body["problem"], "symptom": self.symptom}
        body["product"] = {**body["product"], "serial_number": serial}
        return body

    def needles(self) -> dict[str, bytes]:
        """The clear values, as UTF-8 (what a file or a message would hold)."""
        values = {
            "name": self.name,
            "name (latin part)": self.name.split()[-1],
            "phone": self.phone,
            "corrected phone": self.new_phone,
            "street": self.line,
            "postcode": self.postcode,
            "symptom": self.symptom,
            "comment": self.comment,
            "complaint": self.complaint,
        }
        return {k: v.encode() for k, v in values.items()}


def found_in(data: bytes, needles: dict[str, bytes]) -> list[str]:
    return [what for what, needle in needles.items() if needle in data]


def sqlite_files_after_vacuum(database_url: str) -> bytes:
    """The SQLite database file and its WAL, after ``VACUUM`` (the platform closed)."""
    path = Path(sqlite_path(database_url))
    conn = sqlite3.connect(path)
    try:
        conn.execute("VACUUM")
    finally:
        conn.close()
    files = [path, Path(f"{path}-wal"), Path(f"{path}-shm")]
    return b"".join(p.read_bytes() for p in files if p.exists())


def found_in_tree(root: Path, needles: dict[str, bytes]) -> dict[str, list[str]]:
    """Which needles occur in which regular files under ``root`` (a PostgreSQL data
    directory: tables, indexes, WAL)."""
    found: dict[str, list[str]] = {}
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.is_symlink():
            continue
        try:
            data = path.read_bytes()
        except OSError:  # a temporary file removed while walking
            continue
        for what in found_in(data, needles):
            found.setdefault(what, []).append(str(path.relative_to(root)))
    return found
