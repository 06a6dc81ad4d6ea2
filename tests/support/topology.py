"""Ticketline's processes started as ``ticketline <args>`` on loopback, each logging to
``logs/<name>.log``: the scaled deployment of tests/test_scaled_e2e.py and of the bench's
outage section (bench/processes.py)."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Topology:
    env: dict[str, str]
    logs: Path
    cwd: Path | None = None
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    killed: set[str] = field(default_factory=set)

    def start(self, name: str, *args: str, **extra_env: str) -> subprocess.Popen[bytes]:
        self.logs.mkdir(parents=True, exist_ok=True)
        with (self.logs / f"{name}.log").open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "shared.app.cli", *args],
                env={**self.env, **extra_env},
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.processes[name] = process
        return process

    def run(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """A command to its end (``migrate``, ``replay``, a refused ``serve``)."""
        return subprocess.run(
            [sys.executable, "-m", "shared.app.cli", *args],
            env=self.env,
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def kill(self, name: str) -> None:
        self.killed.add(name)
        self.processes[name].send_signal(signal.SIGKILL)
        self.processes[name].wait(10)

    @contextlib.contextmanager
    def paused(self, prefixes: tuple[str, ...]) -> Iterator[None]:
        """SIGSTOP the live processes named so, SIGCONT them after."""
        names = [n for n in self.processes if n.startswith(prefixes) and n not in self.killed]
        for name in names:
            self.processes[name].send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            for name in names:
                self.processes[name].send_signal(signal.SIGCONT)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM to every live process (SIGCONT first: one may be paused), a kill for
        those still running after ``timeout``."""
        live = [p for p in self.processes.values() if p.poll() is None]
        for process in live:
            process.send_signal(signal.SIGCONT)
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in live:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)

    def log_tail(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-1500:]}"
            for p in sorted(self.logs.glob("*.log"))
        )
