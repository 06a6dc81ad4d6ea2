"""A throwaway PostgreSQL cluster on a free loopback port, from Debian's package."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.packages import ensure_installed
from tests.support.ports import free_port


def _pg_bindir() -> Path | None:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    return Path(candidates[0]).parent if candidates else None


def ensure_postgres_installed() -> Path:
    ensure_installed(
        ["postgresql"], lambda: _pg_bindir() is not None, "sudo apt-get install -y postgresql"
    )
    bindir = _pg_bindir()
    if bindir is None:
        raise RuntimeError("apt-get installed postgresql but no initdb was found")
    return bindir


class PostgresCluster:
    def __init__(self) -> None:
        self.bindir = ensure_postgres_installed()
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="ticketline-pg-"))
        self.datadir = self.dir / "data"
        self._as_root = os.geteuid() == 0

    def _run(self, args: list[str]) -> subprocess.CompletedProcess[bytes]:
        if self._as_root:
            # PostgreSQL refuses to run as root; Debian's package creates a postgres user.
            args = ["runuser", "-u", "postgres", "--", *args]
        return subprocess.run(args, check=True, capture_output=True)

    def start(self) -> None:
        if self._as_root:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(self.datadir),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-sync",
            ]
        )
        self._start_server()

    def _start_server(self) -> None:
        opts = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} -c fsync=off "
            f"-c synchronous_commit=off -c full_page_writes=off -c max_connections=300 "
            f"-c unix_socket_directories={self.dir}"
        )
        self._run(
            [
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.datadir),
                "-o",
                opts,
                "-w",
                "-l",
                str(self.dir / "log"),
                "start",
            ]
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            probe = subprocess.run(
                [str(self.bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                capture_output=True,
            )
            if probe.returncode == 0:
                return
            time.sleep(0.2)
        raise RuntimeError("PostgreSQL did not become ready")

    def restart(self, *, mode: str = "fast", down_seconds: float = 0.0) -> None:
        """Stop the server (``fast``: clients are disconnected, as in a planned restart;
        ``immediate``: as if it crashed), stay down ``down_seconds``, start it again on the
        same port. Blocking: call it from a thread in async tests."""
        self._run([str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w", "stop"])
        time.sleep(down_seconds)
        self._start_server()

    def stop(self) -> None:
        try:
            self._run(
                [str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "immediate", "stop"]
            )
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> None:
        subprocess.run(
            [
                str(self.bindir / "psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                database,
                "-v",
                "ON_ERROR_STOP=1",
                "-q",
                "-c",
                sql,
            ],
            check=True,
            capture_output=True,
        )
