from __future__ import annotations

import socket
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


PORT_VARIABLES = tuple(
    f"TICKETLINE_{name}_PORT" for name in ("INTAKE", "DISPATCH", "PARTS", "FEEDBACK", "CONSOLE")
)


def free_ports_env() -> dict[str, str]:
    """Every port ``ticketline run`` listens on, free (the defaults may be taken: another
    ``make run`` on the machine)."""
    return {variable: str(free_port()) for variable in PORT_VARIABLES}


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port}")
