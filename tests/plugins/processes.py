"""A server in its own process and a tiny keep-alive HTTP client for load (reliability tests).

``server_process`` is a fixture; ``ServerProcess``, ``serve_command``, ``cli_command``,
``run_load`` and ``load_in_thread`` are plain helpers to import.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.plugins.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
_READY_LINE = re.compile(r"ready at (http://127\.0\.0\.1:\d+)/v2/health/ready")


# --------------------------------------------------------------------------- server process
class ServerProcess:
    """``ember serve`` (or any server command) in a subprocess on a free port of 127.0.0.1.

    The port comes from the server's own log line (``--port 0``), so there is no port race.
    """

    def __init__(self, command: list[str], log_file: Path) -> None:
        self.log_file = log_file
        self._log = open(log_file, "w")  # noqa: SIM115 - closed in stop()
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=log_file.parent
        )
        self.url = ""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, timeout: float = 120.0) -> ServerProcess:
        wait_until(self._ready, timeout, lambda: f"server not ready:\n{self.log()}", interval=0.1)
        return self

    def _ready(self) -> bool:
        import httpx

        if self.proc.poll() is not None:
            raise RuntimeError(f"server exited {self.proc.returncode}:\n{self.log()}")
        if not self.url:
            found = _READY_LINE.search(self.log())
            self.url = found.group(1) if found else ""
        try:
            return bool(self.url) and httpx.get(self.url + "/v2/health/ready").status_code == 200
        except httpx.TransportError:
            return False

    def log(self) -> str:
        self._log.flush()
        return self.log_file.read_text(errors="replace")

    def rss_kib(self) -> int:
        """Resident memory of the server process (VmRSS, KiB)."""
        status = Path(f"/proc/{self.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1))

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        return self.proc.returncode


_SERVE = """
import json, logging, sys
from ember.serve import serve
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
logging.getLogger("ember.serve.access").setLevel(logging.WARNING)  # one line per request: off
sys.exit(serve(sys.argv[1], **json.loads(sys.argv[2])))
"""


def serve_command(path: Path, **options: Any) -> list[str]:
    """``ember.serve.serve(path, port=0, grpc_port=None, management_port=None, **options)`` in
    a fresh interpreter, access log off (it would write a line per load request)."""
    options = {"port": 0, "grpc_port": None, "management_port": None, **options}
    return [sys.executable, "-c", _SERVE, str(path), json.dumps(options)]


def cli_command(path: Path, *args: str) -> list[str]:
    """``python -m ember.cli -v serve PATH --port 0 ...``: the command users run (``-v`` makes
    it log its endpoints, which is how the test learns the port)."""
    return [sys.executable, "-m", "ember.cli", "-v", "serve", str(path), "--port", "0", *args]


@pytest.fixture
def server_process(tmp_path: Path) -> Iterator[Any]:
    """Factory: ``server_process(command)`` starts and waits for a server; all stop at teardown."""
    started: list[ServerProcess] = []

    def start(command: list[str], wait: bool = True) -> ServerProcess:
        proc = ServerProcess(command, tmp_path / f"server-{len(started)}.log")
        started.append(proc)
        return proc.wait_ready() if wait else proc

    yield start
    for proc in started:
        proc.stop()


# --------------------------------------------------------------------------- load client
class HttpConnection:
    """A minimal HTTP/1.1 keep-alive client on asyncio streams (fast enough to load a server
    from the same two cores; httpx spends more CPU per request than the server does)."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.host, self.port = host, int(port)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(
        self, method: str, path: str, body: bytes = b"", timeout: float = 30.0
    ) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode() + body)
        return await asyncio.wait_for(self._response(), timeout)

    async def _response(self) -> tuple[int, bytes]:
        status_line = await self.reader.readline()
        if not status_line:
            await self.close()
            raise ConnectionError("server closed the connection")
        status = int(status_line.split()[1])
        length, close = 0, False
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
            elif name.lower() == "connection" and value.strip().lower() == "close":
                close = True
        body = await self.reader.readexactly(length)
        if close:
            await self.close()
        return status, body

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class LoadResult:
    """What a load run saw: counts, failures (first few kept) and every response's version."""

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.failures: list[str] = []
        self.versions: list[tuple[float, float, str, str]] = []  # (sent, received, model, ver)

    def fail(self, message: str) -> None:
        self.errors += 1
        if len(self.failures) < 10:
            self.failures.append(message)


async def run_load(
    url: str,
    requests: list[tuple[str, bytes, Any]],
    *,
    clients: int = 64,
    total: int | None = None,
    stop: threading.Event | None = None,
    result: LoadResult | None = None,
) -> LoadResult:
    """Drives ``clients`` concurrent keep-alive connections through ``requests`` round-robin.

    Args:
        url: ``http://127.0.0.1:PORT``.
        requests: ``(path, body, check)``: ``check(status, body) -> (model, version)`` raises
            AssertionError for a wrong answer.
        clients: concurrent connections.
        total: requests to send in all; None runs until ``stop`` is set.
        stop: ends the run (each client finishes its request in flight).
        result: where to count (a new LoadResult when None).

    Returns:
        The ``LoadResult``.
    """
    result = result if result is not None else LoadResult()
    counter = iter(range(10**12 if total is None else total))

    async def client(index: int) -> None:
        conn = HttpConnection(url)
        try:
            for n in counter:
                if stop is not None and stop.is_set():
                    break
                path, body, check = requests[(n + index) % len(requests)]
                sent = time.monotonic()
                try:
                    status, answer = await conn.request("POST", path, body)
                    model, version = check(status, answer)
                    result.versions.append((sent, time.monotonic(), model, version))
                except Exception as exc:  # every failure counts; the first few are kept
                    await conn.close()
                    result.fail(f"{path}: {type(exc).__name__}: {exc}")
                result.requests += 1
        finally:
            await conn.close()

    await asyncio.gather(*(client(i) for i in range(clients)))
    return result


def load_in_thread(url: str, requests: list, clients: int) -> tuple[threading.Thread, Any, Any]:
    """Runs ``run_load`` until stopped in a thread; returns (thread, stop event, LoadResult)."""
    stop, result = threading.Event(), LoadResult()
    thread = threading.Thread(
        target=lambda: asyncio.run(
            run_load(url, requests, clients=clients, stop=stop, result=result)
        ),
        daemon=True,
    )
    thread.start()
    return thread, stop, result
