"""`ticketline run` (what `make run` starts) as a real process on loopback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import httpx

from services.intake.schemas import RECEIVE_EXAMPLE
from tests.support.ports import free_port, wait_for_port


def test_run_starts_every_service_and_stops_cleanly(tmp_path) -> None:
    ports = {name: free_port() for name in ("intake", "dispatch", "parts", "feedback", "console")}
    env = {
        **os.environ,
        "TICKETLINE_DATA_DIR": str(tmp_path / "data"),
        **{f"TICKETLINE_{name.upper()}_PORT": str(port) for name, port in ports.items()},
    }
    env.pop("DATABASE_URL", None)
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    env.pop("TICKETLINE_AUTH_JWT_SECRET", None)
    received: list[str] = []
    process = subprocess.Popen(
        [sys.executable, "-m", "shared.app.cli", "run"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 60
        assert process.stdout is not None
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Press Ctrl+C" in line:
                break
        output = "".join(lines)
        for name, port in ports.items():
            assert f"{name}" in output and f"http://127.0.0.1:{port}" in output, output
            wait_for_port(port, 10)
            assert httpx.get(f"http://127.0.0.1:{port}/health/ready").json()["status"] == "ready"
        assert "ticketline token" in output
        console = f"http://127.0.0.1:{ports['console']}"
        assert "operations console" in output
        sign_in = httpx.get(f"{console}/board")
        assert sign_in.status_code == 401 and 'name="token"' in sign_in.text
        intake = f"http://127.0.0.1:{ports['intake']}"
        anonymous = httpx.post(f"{intake}/tickets", json=RECEIVE_EXAMPLE)
        assert anonymous.status_code == 401
        # A token from the CLI, signed with the secret the run generated into the same data
        # dir at start (the CLI says when it generates one: not here).
        command = [sys.executable, "-m", "shared.app.cli", "token", "--role", "call_center_agent"]
        issued = subprocess.run(
            [*command, "--subject", "u"], env=env, capture_output=True, text=True, check=True
        )
        assert "generated a new signing key" not in issued.stderr
        auth = {"Authorization": f"Bearer {issued.stdout.strip()}"}
        created = httpx.post(
            f"{intake}/tickets",
            json=RECEIVE_EXAMPLE,
            headers={**auth, "Idempotency-Key": "e2e"},
        )
        assert created.status_code == 201, created.text
        ticket = httpx.get(f"{intake}/tickets/{created.json()['ticket_id']}", headers=auth).json()
        assert ticket["status"] == "received"
        assert (tmp_path / "data" / "ticketline.db").exists()
        # A subscriber stays connected while the process stops.
        subscriber = threading.Thread(
            target=subscribe, args=(f"{intake}/streams/events", cli_token(env, "auditor"), received)
        )
        subscriber.start()
        deadline = time.monotonic() + 10
        while not any(line.startswith("retry:") for line in received):
            assert time.monotonic() < deadline, received
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert process.returncode == 0
    # The stream ended with an event saying so (the client reconnects from its last id):
    # an open stream kept the stopping process alive for as long as the client stayed.
    subscriber.join(10)
    assert (
        "event: unavailable" in received and "data: the server is stopping; reconnect" in received
    )


def subscribe(url: str, token: str, lines: list[str]) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.stream("GET", url, headers=headers, timeout=30) as response:
        for line in response.iter_lines():
            lines.append(line)


def cli_token(env: dict[str, str], role: str) -> str:
    command = [sys.executable, "-m", "shared.app.cli", "token", "--role", role, "--subject", "u"]
    return subprocess.run(
        command, env=env, capture_output=True, text=True, check=True
    ).stdout.strip()


def test_run_on_a_taken_port_says_which_and_how_to_change_it(tmp_path, monkeypatch, capsys) -> None:
    import socket

    from shared.app.cli import main as cli_main
    from tests.support.ports import free_ports_env

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        monkeypatch.setenv("TICKETLINE_DATA_DIR", str(tmp_path))
        monkeypatch.setenv("TICKETLINE_HOST", "127.0.0.1")
        for variable, port in free_ports_env().items():
            monkeypatch.setenv(variable, port)
        monkeypatch.setenv("TICKETLINE_DISPATCH_PORT", str(taken.getsockname()[1]))
        assert cli_main(["run"]) == 2
    err = capsys.readouterr().err
    assert "dispatch: cannot listen on 127.0.0.1:" in err and "TICKETLINE_DISPATCH_PORT" in err
    assert "Traceback" not in err


def test_run_and_serve_refuse_ports_they_cannot_use(tmp_path, monkeypatch, capsys) -> None:
    """Two services on one port, a host not of this machine, `serve --port 99999`: each
    refused at start, saying what to change (uvicorn's tracebacks and exit 3, or a port
    taken modulo 65536)."""
    import pytest

    from shared.app.cli import main as cli_main
    from tests.support.ports import free_ports_env

    monkeypatch.setenv("TICKETLINE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("TICKETLINE_HOST", "127.0.0.1")
    ports = free_ports_env()
    for variable, port in ports.items():
        monkeypatch.setenv(variable, port)
    monkeypatch.setenv("TICKETLINE_DISPATCH_PORT", ports["TICKETLINE_INTAKE_PORT"])
    assert cli_main(["run"]) == 2
    err = capsys.readouterr().err
    assert "both on port" in err and "TICKETLINE_DISPATCH_PORT" in err
    monkeypatch.setenv("TICKETLINE_DISPATCH_PORT", str(int(ports["TICKETLINE_INTAKE_PORT"]) + 1))
    monkeypatch.setenv("TICKETLINE_HOST", "192.0.2.1")  # TEST-NET-1: no machine's own
    assert cli_main(["run"]) == 2
    assert "TICKETLINE_HOST" in capsys.readouterr().err
    with pytest.raises(SystemExit) as refused:
        cli_main(["serve", "intake", "--port", "99999"])
    assert refused.value.code == 2 and "a port from 1 to 65535" in capsys.readouterr().err


def test_serve_refusals_name_the_command(tmp_path, monkeypatch, capsys) -> None:
    """`serve` before `migrate`, or without a token key shared by every replica: refused,
    exit 2, the message prefixed as every command's refusal is."""
    from shared.app.cli import main as cli_main

    monkeypatch.setenv("TICKETLINE_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("TICKETLINE_AUTH_JWT_SECRET", raising=False)
    assert cli_main(["serve", "intake"]) == 2
    assert capsys.readouterr().err.startswith(
        "ticketline serve: the database schema is not current: run `ticketline migrate`"
    )
    assert cli_main(["migrate"]) == 0
    capsys.readouterr()
    assert cli_main(["serve", "intake"]) == 2
    assert capsys.readouterr().err.startswith("ticketline serve: configure token verification")


def test_sigterm_stops_a_command_as_ctrl_c_does(monkeypatch, capsys) -> None:
    """`timeout`, systemd and Kubernetes send SIGTERM: the command's cleanup runs (its
    `finally`: a replay's partial copy removed) and it says so, exit 143 — it was killed
    where it stood. The caller's own handler is back afterwards."""
    import os
    import signal
    import time

    from shared.app import cli

    cleaned: list[bool] = []

    def command(_argv: object) -> int:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(30)  # the handler raises in here
            return 0
        finally:
            cleaned.append(True)

    before = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(cli, "_main", command)
    assert cli.main([]) == 143
    assert cleaned == [True] and "ticketline: terminated" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) == before
