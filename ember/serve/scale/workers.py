"""``ember serve --workers N``: N server processes sharing the ports, kept alive by a parent.

The parent loads no model. It listens on the REST port and every worker accepts from that one
socket (a pre-fork server: a busy worker accepts less, so load balances itself; ``SO_REUSEPORT``
sockets, one per worker, spread connections by a hash and left one worker with 70 % of 32
connections); it reserves the gRPC port (bound, not listening, ``SO_REUSEPORT``) for the workers'
gRPC servers, which share it. It starts
N ``python -m ember.serve.scale.worker`` processes, restarts one that dies (replaying the
management changes the group received, so it comes back with the same routing), writes the
group's ``ready`` file while every worker is ready, serves the management API by fanning each
call out to every worker (``fanout.py``), and on SIGTERM/SIGINT stops the workers gracefully.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ember.serve.options import ServeOptions

__all__ = ["WorkerGroup", "resolve_workers", "serve_workers"]

logger = logging.getLogger(__name__)

_REPLAY_TRIES = 50  # checks a restarted worker gets to accept the group's management changes
_READY = "ready"


def resolve_workers(workers: int | str) -> int:
    """Returns the number of worker processes: ``workers``, or one per core for ``"auto"``.

    Example:
        >>> resolve_workers(2), resolve_workers("3")
        (2, 3)
    """
    if workers == "auto":
        return (
            len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity")
            else os.cpu_count() or 1
        )
    try:
        count = int(workers)
    except (TypeError, ValueError):
        count = 0
    if isinstance(workers, bool) or count < 1 or str(count) != str(workers).strip():
        raise ValueError(
            f"Received an invalid `workers`, expected a positive integer or 'auto'. Received: {workers!r}"
        )
    return count


def serve_workers(
    path: str | os.PathLike,
    *,
    workers: int,
    options: ServeOptions | None = None,
    **kwargs: Any,
) -> int:
    """Serves ``path`` with ``workers`` processes until SIGTERM/SIGINT; returns 0.

    Args:
        path: what ``ember.serve.serve`` serves.
        workers: number of worker processes (2 or more).
        options: the server's ``ServeOptions`` (its ``workers`` field is ignored).
        **kwargs: ``ServeOptions`` fields replacing those of ``options``.

    Example:
        >>> serve_workers("models", workers=2, port=8080)  # doctest: +SKIP
    """
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    with WorkerGroup(path, workers=workers, options=options, **kwargs) as group:
        with asyncio.Runner() as runner:
            runner.run(group.serve_forever())
    return 0


class WorkerGroup:
    """The parent of a worker group: ports, processes, readiness, management, shutdown.

    Args:
        path: what the workers serve.
        workers: number of worker processes.
        options: the server's ``ServeOptions`` (ports, token, batching, ...).
        **kwargs: ``ServeOptions`` fields replacing those of ``options``.

    Example:
        >>> with WorkerGroup("models", workers=2, port=0) as group:  # doctest: +SKIP
        ...     asyncio.run(group.serve_forever())
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        workers: int,
        options: ServeOptions | None = None,
        **kwargs: Any,
    ) -> None:
        options = ServeOptions.build(options, kwargs, "WorkerGroup")
        if not Path(path).exists():
            raise ValueError(f"Model repository {str(path)!r} does not exist.")
        self.count = workers
        self.options = options
        self.grace_period = float(options.grace_period)
        self.host = options.host
        self._management = (options.management_host, options.management_port)
        self._path = str(Path(path).resolve())
        self._reserved: list[socket.socket] = []
        self.procs: list[subprocess.Popen | None] = [None] * workers
        self.members: dict[int, dict] = {}  # index -> {"pid", "control", "ready"}
        self.journal: list[tuple[str, str, bytes]] = []  # management changes, replayed on restart
        self.urls: dict[str, str | None] = {}
        self._restarts: list[float] = []

    # ------------------------------------------------------------------ set-up and tear-down
    def __enter__(self) -> WorkerGroup:
        self.state_dir = Path(tempfile.mkdtemp(prefix="ember-workers-"))  # mode 0700
        try:
            self._prepare()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _prepare(self) -> None:
        """Binds the ports, resolves the token and writes the workers' config file."""
        from ember.serve.management import resolve_token

        opts = self.options
        self._rest = self._listen(self.host, opts.port)
        port = self._rest.getsockname()[1]
        self.urls["rest"] = f"http://{self.host}:{port}"
        grpc_port = opts.grpc_port
        if grpc_port is not None:
            grpc_port = self._reserve(self.host, grpc_port)
            self.urls["grpc"] = f"{self.host}:{grpc_port}"
        if self._management[1] is None:  # only the group's own calls use it: nothing to write
            self.token = opts.token or secrets.token_urlsafe(32)
        else:
            self.token = resolve_token(opts.token, opts.token_file)
        # Each worker: the ports resolved above, the group's token, a private management port.
        worker = opts.replace(port=port, grpc_port=grpc_port, token=self.token, token_file=None,
                              management_host="127.0.0.1", management_port=0, workers=1)  # fmt: skip
        config = {**worker.to_dict(), "path": self._path, "rest_fd": self._rest.fileno(),
                  "state_dir": str(self.state_dir)}  # fmt: skip
        self.config_file = self.state_dir / "config.json"
        fd = os.open(self.config_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(config, f)

    def __exit__(self, *exc: Any) -> None:
        for proc in self.procs:
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        for sock in self._reserved:
            sock.close()
        shutil.rmtree(self.state_dir, ignore_errors=True)

    def _listen(self, host: str, port: int) -> socket.socket:
        """The REST socket: the parent listens, every worker accepts (whichever is free first)."""
        sock = self._socket(host, port, socket.SO_REUSEADDR)
        sock.listen(2048)
        return sock

    def _reserve(self, host: str, port: int) -> int:
        """Binds without listening, so port 0 resolves and the workers' gRPC servers share it."""
        return self._socket(host, port, socket.SO_REUSEPORT).getsockname()[1]

    def _socket(self, host: str, port: int, option: int) -> socket.socket:
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(
                f"Received an invalid port, expected 0..65535. Received: port={port!r}"
            )
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, option, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            raise OSError(f"Cannot listen on {host}:{port}: {exc.strerror}") from None
        self._reserved.append(sock)
        return sock

    # ------------------------------------------------------------------ running
    async def serve_forever(self, stop: asyncio.Event | None = None) -> None:
        """Runs the group until ``stop`` is set (default: until SIGTERM or SIGINT)."""
        from ember.serve.scale.fanout import start_management

        if stop is None:
            stop = asyncio.Event()
            for sig in (signal.SIGTERM, signal.SIGINT):
                asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        for i in range(self.count):
            self._start(i)
        management = None
        host, port = self._management
        if port is not None:
            management = await start_management(self, host, port)
        logger.info("ember serve: %d workers on %s (gRPC %s), management %s", self.count,
                    self.urls["rest"], self.urls.get("grpc"), self.urls.get("management"))  # fmt: skip
        try:
            while not stop.is_set():
                await self._supervise()
                try:
                    await asyncio.wait_for(stop.wait(), 0.2 if not self.ready else 1.0)
                except asyncio.TimeoutError:
                    pass
        finally:
            if management is not None:
                management.should_exit = True
            await self._stop_workers()
            if management is not None:
                await management.serving
        logger.info("ember serve: all workers stopped")

    @property
    def ready(self) -> bool:
        """True while every worker is up and ready."""
        return (self.state_dir / _READY).exists()

    def live_members(self) -> list[dict]:
        """The records of the workers now running (index, pid, control URL, ready)."""
        return [m for i, m in sorted(self.members.items()) if self._alive(i, m)]

    def _alive(self, index: int, member: dict) -> bool:
        proc = self.procs[index]
        return proc is not None and proc.poll() is None and member.get("pid") == proc.pid

    def _start(self, index: int) -> None:
        cmd = [sys.executable, "-m", "ember.serve.scale.worker", str(self.config_file), str(index)]
        (self.state_dir / f"worker-{index}.json").unlink(missing_ok=True)
        self.members.pop(index, None)
        self.procs[index] = subprocess.Popen(
            cmd, env=os.environ.copy(), pass_fds=[self._rest.fileno()]
        )
        logger.info("Started worker %d (pid %d)", index, self.procs[index].pid)

    async def _supervise(self) -> None:
        """Restarts dead workers, reads the new ones' records, updates the group's readiness."""
        for i, proc in enumerate(self.procs):
            if proc is not None and proc.poll() is not None:
                logger.warning("Worker %d (pid %d) exited with %s; restarting it",
                               i, proc.pid, proc.returncode)  # fmt: skip
                self._set_ready(False)
                await self._backoff()
                self._start(i)
        await asyncio.gather(*(self._check(i) for i in range(self.count)))
        self._set_ready(all(m.get("ready") for m in self.live_members())
                        and len(self.live_members()) == self.count)  # fmt: skip

    async def _check(self, index: int) -> None:
        from ember.serve.scale._http import fetch

        member = self.members.get(index)
        if member is None:
            try:
                member = json.loads((self.state_dir / f"worker-{index}.json").read_text())
            except (OSError, ValueError):
                return  # not listening yet
            member["ready"] = False
            self.members[index] = member
        if member["ready"]:
            return
        try:
            status, body = await fetch(member["control"] + "/_ember/worker", headers=self.auth)
        except OSError:
            return
        if status == 200 and json.loads(body)["ready"]:
            # A change the worker refuses (its model still loading) is retried at the next
            # check; after _REPLAY_TRIES the worker serves without it (the warning says which).
            member["replays"] = member.get("replays", 0) + 1
            if not await self._replay(member) and member["replays"] < _REPLAY_TRIES:
                return
            member["ready"] = True
            logger.info("Worker %d (pid %d) ready", index, member["pid"])

    async def _replay(self, member: dict) -> bool:
        """Applies the management changes the group received to a (re)started worker.

        Returns:
            Whether the worker accepted every change.
        """
        from ember.serve.scale._http import fetch

        accepted = True
        for method, path, body in self.journal:
            status, answer = await fetch(member["control"] + path, method, body, self.auth, 60.0)
            if status != 200:
                accepted = False
                logger.warning("Replaying %s %s on worker %d: %d %s", method, path,
                               member["index"], status, answer[:200])  # fmt: skip
        return accepted

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}

    async def _backoff(self) -> None:
        # A worker that keeps dying (a broken model file, no memory) is restarted at most once
        # a second after the third restart within a minute.
        now = time.monotonic()
        self._restarts = [t for t in self._restarts if now - t < 60] + [now]
        if len(self._restarts) > 3:
            await asyncio.sleep(1.0)

    def _set_ready(self, ready: bool) -> None:
        path = self.state_dir / _READY
        if ready and not path.exists():
            path.touch()
            logger.info("All %d workers ready", self.count)
        elif not ready and path.exists():
            path.unlink()

    async def _stop_workers(self) -> None:
        """SIGTERM every worker; SIGKILL what is left after the grace period."""
        self._set_ready(False)
        for proc in self.procs:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace_period + 5.0
        while time.monotonic() < deadline and any(p.poll() is None for p in self.procs if p):
            await asyncio.sleep(0.05)
        for i, proc in enumerate(self.procs):
            if proc is not None and proc.poll() is None:
                logger.warning("Worker %d did not stop within the grace period; killing it", i)
                proc.kill()
                proc.wait()
