"""The database driver under a SQLAlchemy connection, for the hot paths that skip
SQLAlchemy's per-statement work (the ledger's append, projections' batch upserts, a
command's few lookups). A constraint the driver reports violated is raised as
SQLAlchemy's ``IntegrityError`` on every path, as callers expect from ``conn.execute``."""

from __future__ import annotations

import contextlib
import sqlite3
import sys
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError


def sqlite_driver(conn: Connection) -> Any | None:
    """The sqlite3 connection under ``conn`` (its statement cache makes repeated statements
    cheap), or None on other drivers."""
    if conn.dialect.driver != "pysqlite":
        return None
    return conn.connection.driver_connection


def asyncpg_driver(conn: Connection) -> Any | None:
    """The asyncpg connection under ``conn`` inside a unit of work (so in our transaction),
    or None on other drivers and when SQLAlchemy manages the transaction."""
    if conn.dialect.driver != "asyncpg":
        return None
    if not getattr(conn.connection.dbapi_connection, "autocommit", False):
        return None  # the legacy API's transaction: go through SQLAlchemy
    return conn.connection.driver_connection


@contextlib.contextmanager
def integrity_errors(statement: str) -> Iterator[None]:
    """A driver's constraint violation (unique, check, not null, foreign key) raised as
    SQLAlchemy's ``IntegrityError``."""
    try:
        yield
    except sqlite3.IntegrityError as exc:
        raise IntegrityError(statement, None, exc) from exc
    except Exception as exc:
        asyncpg = sys.modules.get("asyncpg")  # never imported: not an asyncpg error
        if asyncpg is not None and isinstance(exc, asyncpg.IntegrityConstraintViolationError):
            raise IntegrityError(statement, None, exc) from exc
        raise
