"""One worker process of an ``ember serve --workers N`` group (started by ``workers.py``).

A worker is a whole ``ember serve`` (``server.run``) accepting from the REST socket its parent
listens on (inherited), sharing the gRPC port with its siblings (``SO_REUSEPORT``), with its
management API on a private loopback port. ``GroupMember``
is what makes it one of a group:

* ``/v2/health/ready`` answers ready only when every worker is (the parent writes ``ready`` in
  the group's state directory when all of them are, and removes it when one is not);
* ``/metrics`` answers the sum over the workers (``prometheus.merge_expositions``);
* hot reload retires a version only once every sibling serves its replacement
  (``retire_gate``), so no worker's default route points at a version another one dropped;
* the private management port also answers ``GET /_ember/worker`` (pid, readiness) and
  ``GET /_ember/metrics`` (this worker's own metrics) for the parent and the siblings.

Run as ``python -m ember.serve.scale.worker CONFIG INDEX``.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from ember.serve.scale._http import fetch

__all__ = ["GroupMember", "main"]

logger = logging.getLogger(__name__)

READY_FILE = "ready"


class GroupMember:
    """This process's membership of a worker group.

    Args:
        state_dir: the group's private directory (mode 0700): worker files, ``ready``.
        index: this worker's number, 0..N-1.
        token: the management token (also guards the private ``/_ember`` routes).
        gate_timeout: longest wait of ``retire_gate`` for the siblings (then it goes on).
        rest_fd: the listening REST socket inherited from the parent.
    """

    def __init__(
        self,
        state_dir: Path,
        index: int,
        token: str,
        gate_timeout: float = 120.0,
        rest_fd: int | None = None,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.rest_fd = rest_fd
        self.index = index
        self.token = token
        self.gate_timeout = gate_timeout
        self._auth = {"Authorization": f"Bearer {token}"}

    # ------------------------------------------------------------------ hooks of server.run
    def rest_socket(self) -> socket.socket:
        """The REST socket the parent listens on and every worker accepts from."""
        return socket.socket(fileno=self.rest_fd)

    def wrap_app(self, app: Any, repository: Any, metrics: Any) -> Any:
        """The inference app with group readiness and group metrics."""
        return _GroupApp(app, self, repository, metrics)

    def wrap_management(self, app: Any, repository: Any, metrics: Any, token: str) -> Any:
        """The private management app plus ``/_ember/worker`` and ``/_ember/metrics``."""
        return _ControlApp(app, self, repository, metrics)

    def announce(self, info: dict[str, Any]) -> None:
        """Writes ``worker-<index>.json`` (pid, private management URL) for parent and siblings."""
        record = {"index": self.index, "pid": os.getpid(), "control": info["management"]}
        path = self.state_dir / f"worker-{self.index}.json"
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(record))
        os.replace(tmp, path)

    async def retire_gate(self, name: str, versions: list[int]) -> None:
        """Waits until every live sibling serves ``versions`` of ``name`` (or has failed them)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.gate_timeout
        while True:
            pending = [s for s in self.siblings() if not await self._serves(s, name, versions)]
            if not pending:
                return
            if loop.time() > deadline:
                logger.warning("Workers %s do not serve %s versions %s after %.0fs; retiring anyway",
                               [s["index"] for s in pending], name, versions, self.gate_timeout)  # fmt: skip
                return
            await asyncio.sleep(0.1)

    # ------------------------------------------------------------------ the group
    def siblings(self) -> list[dict]:
        """The other workers' records (``index``, ``pid``, ``control``)."""
        found = []
        for path in sorted(self.state_dir.glob("worker-*.json")):
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError):
                continue  # being replaced
            if record["index"] != self.index:
                found.append(record)
        return found

    def group_ready(self) -> bool:
        return (self.state_dir / READY_FILE).exists()

    async def sibling_metrics(self) -> list[bytes]:
        bodies = await asyncio.gather(
            *(self._get(s, "/_ember/metrics") for s in self.siblings()), return_exceptions=True
        )
        return [b[1] for b in bodies if isinstance(b, tuple) and b[0] == 200]

    async def _serves(self, sibling: dict, name: str, versions: list[int]) -> bool:
        try:
            status, body = await self._get(sibling, "/v2/repository/index")
        except OSError:
            return True  # gone: a restarted worker loads what the disk holds now
        if status != 200:
            return True
        states = {r["version"]: r["state"] for r in json.loads(body) if r["name"] == name}
        return all(states.get(v) in ("AVAILABLE", "FAILED") for v in versions)

    async def _get(self, sibling: dict, path: str) -> tuple[int, bytes]:
        return await fetch(sibling["control"] + path, headers=self._auth, timeout=2.0)


class _GroupApp:
    """ASGI wrapper answering ``GET /v2/health/ready`` and ``GET /metrics`` for the group."""

    def __init__(self, app: Any, member: GroupMember, repository: Any, metrics: Any) -> None:
        self.app, self.member, self.repository, self.metrics = app, member, repository, metrics
        self.state = getattr(app, "state", None)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            path = scope["path"]
            if path == "/v2/health/ready":
                ok = self.repository.ready and self.member.group_ready()
                body = json.dumps({"ready": ok}).encode()
                return await _send(send, 200 if ok else 503, body, b"application/json")
            if path == "/metrics":
                own, content_type = self.metrics.render()
                from ember.serve.scale.prometheus import merge_expositions

                merged = merge_expositions([own, *await self.member.sibling_metrics()])
                return await _send(send, 200, merged, content_type.encode())
        await self.app(scope, receive, send)


class _ControlApp:
    """ASGI wrapper adding the private ``/_ember/*`` routes to the worker's management app."""

    def __init__(self, app: Any, member: GroupMember, repository: Any, metrics: Any) -> None:
        self.app, self.member, self.repository, self.metrics = app, member, repository, metrics
        self._expected = f"Bearer {member.token}".encode()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith("/_ember/"):
            return await self.app(scope, receive, send)
        given = dict(scope["headers"]).get(b"authorization", b"")
        if not hmac.compare_digest(given, self._expected):
            return await _send(send, 401, b'{"error": "Missing or wrong bearer token."}')
        if path == "/_ember/worker":
            info = {"index": self.member.index, "pid": os.getpid(), "ready": self.repository.ready}
            return await _send(send, 200, json.dumps(info).encode())
        if path == "/_ember/metrics":
            body, content_type = self.metrics.render()
            return await _send(send, 200, body, content_type.encode())
        await _send(send, 404, b'{"error": "No such route."}')


async def _send(send: Any, status: int, body: bytes, content_type: bytes = b"application/json"):
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def main(argv: list[str] | None = None) -> int:
    """Runs worker ``INDEX`` of the group described by the JSON file ``CONFIG``."""
    from ember.serve.options import ServeOptions
    from ember.serve.server import loop_factory, run

    config_path, index = (argv or sys.argv[1:])[:2]
    config = json.loads(Path(config_path).read_text())
    path, state_dir, rest_fd = config.pop("path"), config.pop("state_dir"), config.pop("rest_fd")
    options = ServeOptions.from_dict(config)
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s worker-{index} %(name)s %(message)s"
    )
    logging.getLogger("ember.serve.access").setLevel(
        logging.INFO if options.access_log else logging.WARNING
    )
    member = GroupMember(Path(state_dir), int(index), options.token, rest_fd=rest_fd)
    parent = os.getppid()

    async def serve_until_stopped() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        orphan = loop.create_task(_stop_when_orphaned(parent, stop))
        await run(path, stop=stop, on_start=member.announce, freeze_heap=True, member=member,
                  options=options)  # fmt: skip
        orphan.cancel()

    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(serve_until_stopped())
    return 0


async def _stop_when_orphaned(parent: int, stop: asyncio.Event) -> None:
    # A parent killed with SIGKILL cannot stop its workers: they notice and stop themselves.
    while os.getppid() == parent:
        await asyncio.sleep(1.0)
    logger.warning("The group's parent process is gone; stopping")
    stop.set()


if __name__ == "__main__":
    sys.exit(main())
