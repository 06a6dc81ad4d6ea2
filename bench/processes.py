"""The servers the bench measures, each a process of its own on 127.0.0.1 free ports:
the bare endpoint (``bench/bare_app.py``), ``ticketline run`` (what ``make run`` starts)
and the scaled topology (a process per service, relays, Kafka projectors, jobs). Each
logs to a file in its directory, never to a pipe nobody reads.

    with start_ticketline_run(tmp / "tl") as tl, start_bare_endpoint(tmp / "bare.db") as bare:
        tl.port, tl.token, bare.port, tl.cpu_seconds(), bare.pause(), bare.resume()
    with start_scaled_topology(tmp / "scaled", database_url, broker.bootstrap_servers) as top:
        top.ports["intake"]; with top.paused(("relay-", "projector-")): ...
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import httpx

from tests.support.ports import free_port
from tests.support.topology import Topology

REPO_ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("intake", "dispatch", "parts", "feedback")
# The bench measures the write path, not the per-caller rate limiter (120/min by default).
UNLIMITED_INTAKE = {
    "TICKETLINE_AUTH_INTAKE_RATE_PER_MINUTE": "1000000000",
    "TICKETLINE_AUTH_INTAKE_BURST": "1000000000",
}


@dataclass
class ServerProcess:
    """A server process we started: where it listens, its log, and its CPU time."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    host: str = "127.0.0.1"
    ports: dict[str, int] = field(default_factory=dict)
    token: str | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def cpu_seconds(self) -> float:
        """User + system CPU seconds of the process so far (all its threads; Linux)."""
        stat = Path(f"/proc/{self.process.pid}/stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])  # utime, stime
        return ticks / os.sysconf("SC_CLK_TCK")

    def pause(self) -> None:
        """SIGSTOP: an idle server must not take CPU (projector polls, jobs) while the
        other one is measured."""
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 20.0) -> None:
        if self.process.poll() is not None:
            return
        self.resume()
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _spawn(args: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        return subprocess.Popen(
            args, env=env, cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=log
        )


def _wait_ready(server: ServerProcess, urls: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    pending = list(urls)
    while pending:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"{server.name} exited with {server.process.returncode}:\n{server.log_tail()}"
            )
        if time.monotonic() > deadline:
            server.stop()
            raise TimeoutError(f"{server.name} not ready after {timeout} s:\n{server.log_tail()}")
        try:
            if httpx.get(pending[0], timeout=1.0).status_code == 200:
                pending.pop(0)
                continue
        except httpx.HTTPError:
            pass
        time.sleep(0.1)


def _base_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def start_bare_endpoint(db_path: Path, *, timeout: float = 30.0) -> ServerProcess:
    """``python -m bench.bare_app`` on a free port, storing into ``db_path``; returns once
    it answers ``GET /health``."""
    port = free_port()
    log_path = db_path.with_suffix(".log")
    process = _spawn(
        [sys.executable, "-m", "bench.bare_app", "--db", str(db_path), "--port", str(port)],
        _base_env(),
        log_path,
    )
    server = ServerProcess("bare endpoint", process, port, log_path)
    _wait_ready(server, [f"{server.base_url}/health"], timeout)
    return server


def start_ticketline_run(
    data_dir: Path, *, extra_env: dict[str, str] | None = None, timeout: float = 90.0
) -> ServerProcess:
    """``ticketline run`` (the embedded default: SQLite under ``data_dir``, no Kafka) with
    every service on a free port and the intake rate limit lifted; returns once each
    service answers ``/health/ready``, with a token from ``ticketline token --role
    call_center_agent --subject bench``. ``port`` is intake's; ``ports`` has them all."""
    ports = {name: free_port() for name in SERVICES}
    env = _base_env()
    for name in ("DATABASE_URL", "TICKETLINE_DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS"):
        env.pop(name, None)
    # The embedded default generates its token key into the data directory.
    env.pop("TICKETLINE_AUTH_JWT_SECRET", None)
    env.update(
        {
            "TICKETLINE_DATA_DIR": str(data_dir),
            **{f"TICKETLINE_{name.upper()}_PORT": str(port) for name, port in ports.items()},
            **UNLIMITED_INTAKE,
            **(extra_env or {}),
        }
    )
    process = _spawn(
        [sys.executable, "-m", "shared.app.cli", "run"], env, data_dir / "ticketline-run.log"
    )
    server = ServerProcess(
        "ticketline run", process, ports["intake"], data_dir / "ticketline-run.log", ports=ports
    )
    server.env = env
    _wait_ready(
        server, [f"http://127.0.0.1:{port}/health/ready" for port in ports.values()], timeout
    )
    try:
        server.token = subprocess.run(
            [
                sys.executable,
                "-m",
                "shared.app.cli",
                "token",
                "--role",
                "call_center_agent",
                "--subject",
                "bench",
            ],
            env=env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout.strip()
    except BaseException:
        server.stop()
        raise
    return server


@dataclass
class ScaledTopology(Topology):
    """The scaled deployment as processes we started: ``ticketline serve`` per service
    (API on ``ports``), two relays, two ``ticketline project --source kafka``, the jobs."""

    ports: dict[str, int] = field(default_factory=dict)

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                tail = (self.logs / f"{name}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{name} exited with {process.returncode}:\n{tail}")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_scaled_topology(
    directory: Path,
    database_url: str,
    bootstrap_servers: str,
    *,
    extra_env: dict[str, str] | None = None,
    timeout: float = 90.0,
) -> ScaledTopology:
    """``ticketline migrate`` on ``database_url``, then the four services, two relays, two
    Kafka projectors and the jobs (as tests/test_scaled_e2e.py runs them), with the intake
    rate limit lifted; returns once every service answers ``/health/ready``."""
    env = _base_env()
    env.pop("TICKETLINE_DATABASE_URL", None)
    env.update(
        {
            "DATABASE_URL": database_url,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers,
            "TICKETLINE_KAFKA_ENABLE_IDEMPOTENCE": "false",  # the test broker lacks it
            "TICKETLINE_KAFKA_TOPIC_PARTITIONS": "4",
            "TICKETLINE_HOST": "127.0.0.1",
            "TICKETLINE_DATA_DIR": str(directory / "data"),
            **UNLIMITED_INTAKE,
            **(extra_env or {}),
        }
    )
    subprocess.run(
        [sys.executable, "-m", "shared.app.cli", "migrate"],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        check=True,
        timeout=120,
    )
    ports = {name: free_port() for name in SERVICES}
    topology = ScaledTopology(env, directory / "logs", REPO_ROOT, ports=ports)
    try:
        for name, port in topology.ports.items():
            topology.start(name, "serve", name, "--port", str(port))
        for n in (1, 2):
            topology.start(f"relay-{n}", "relay", TICKETLINE_METRICS_PORT=str(free_port()))
            topology.start(
                f"projector-{n}",
                "project",
                "--source",
                "kafka",
                TICKETLINE_METRICS_PORT=str(free_port()),
            )
        topology.start("jobs", "jobs")
        deadline = time.monotonic() + timeout
        for port in topology.ports.values():
            while True:
                topology.check_alive()
                try:
                    url = f"http://127.0.0.1:{port}/health/ready"
                    if httpx.get(url, timeout=1.0).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the scaled topology not ready after {timeout} s")
                time.sleep(0.2)
    except BaseException:
        topology.stop()
        raise
    return topology
