"""The HTTP limit: the least a FastAPI endpoint on uvicorn can do for ``POST /tickets``.

One POST endpoint reads a JSON body (the same bytes the load generator sends to
Ticketline), decodes it with orjson, and stores it with ONE aiosqlite INSERT in autocommit
mode — one statement, one transaction, one commit, one hop to aiosqlite's thread. Same
SQLite settings as Ticketline (WAL, synchronous=NORMAL) and the same uvicorn (no access
log). Run as its own process, like ``ticketline run``:

    python -m bench.bare_app --db /tmp/bare.db --port 8101
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import aiosqlite
import orjson
from fastapi import FastAPI, Request, Response

DDL = """
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY,
    idempotency_key VARCHAR(200),
    received_at DATETIME NOT NULL,
    body TEXT NOT NULL
)"""
INSERT = "INSERT INTO requests (idempotency_key, received_at, body) VALUES (?, ?, ?)"


def create_app(db_path: str) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # isolation_level=None: autocommit, each INSERT is its own transaction.
        db = await aiosqlite.connect(db_path, isolation_level=None)
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("PRAGMA synchronous=NORMAL")
        await db.execute("PRAGMA busy_timeout=30000")
        await db.execute(DDL)
        app.state.db = db
        try:
            yield
        finally:
            await db.close()

    app = FastAPI(title="bench bare endpoint", lifespan=lifespan, openapi_url=None)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ready"}

    @app.post("/tickets", status_code=201)
    async def receive(request: Request) -> Response:
        raw = await request.body()
        body = orjson.loads(raw)
        if not isinstance(body, dict):
            return Response(b'{"detail":"expected an object"}', 422, media_type="application/json")
        row_id = (
            await request.app.state.db.execute_insert(
                INSERT,
                (
                    request.headers.get("idempotency-key"),
                    datetime.now(UTC).isoformat(),
                    raw.decode(),
                ),
            )
        )[0]
        return Response(orjson.dumps({"id": row_id}), 201, media_type="application/json")

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m bench.bare_app")
    parser.add_argument("--db", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(
        create_app(args.db),
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
