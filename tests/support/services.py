"""Start real services on 127.0.0.1 on free ports; every test gets its own."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import HTTPServer
from pathlib import Path

from pulsar_cli.demo_stack import free_port, nats_server_binary


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


class NatsServer:
    """A real nats-server with JetStream; restartable on the same port and store."""

    def __init__(self, store_dir: Path, port: int | None = None,
                 config: Path | None = None) -> None:
        self.store_dir = store_dir
        self.port = port or free_port()
        self.config = config  # a config file (e.g. subject mappings); the flags still apply
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [nats_server_binary(), *(["-c", str(self.config)] if self.config else []),
             "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.store_dir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


@contextmanager
def running_nats(store_dir: Path, config: Path | None = None) -> Iterator[NatsServer]:
    server = NatsServer(store_dir, config=config)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def running_mlflow_server(root: Path) -> Iterator[str]:
    """`mlflow server` as a subprocess (the remote-registry case), sqlite-backed."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--artifacts-destination", str(root / "artifacts"), "--workers", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, timeout=90)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=20)


@contextmanager
def serving_in_thread(server: HTTPServer) -> Iterator[HTTPServer]:
    """Serve `server` from a daemon thread for the block; shut it down and close it after."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
