"""Debian packages the tests need (PostgreSQL, Chromium), installed when missing and the
tests run as root. One install at a time: the suite's parallel workers may all find a
package missing, and dpkg allows a single apt-get on the machine."""

from __future__ import annotations

import fcntl
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

_LOCK = Path("/tmp/ticketline-tests-apt.lock")


def ensure_installed(packages: list[str], present: Callable[[], bool], hint: str) -> None:
    """Install ``packages`` with apt-get unless ``present()``; ``hint`` is the command a
    non-root user is told to run."""
    if present():
        return
    if os.geteuid() != 0:
        raise RuntimeError(f"{packages[0]} is not installed; run: {hint}")
    with _LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if present():  # another worker installed it while this one waited
            return
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update"], check=True, env=env, capture_output=True)
        subprocess.run(
            ["apt-get", "install", "-y", "--no-install-recommends", *packages],
            check=True,
            env=env,
            capture_output=True,
        )
