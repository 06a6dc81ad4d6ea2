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
    ``make run`` on the machine) and all different (held open until all are chosen)."""
    sockets = [socket.socket() for _ in PORT_VARIABLES]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return {v: str(s.getsockname()[1]) for v, s in zip(PORT_VARIABLES, sockets, strict=True)}
    finally:
        for s in sockets:
            s.close()


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port}")
