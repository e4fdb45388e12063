"""Fixtures: a model repository of tiny models, and a running server on free ports."""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from tests.plugins.models import LABELS, HalfPlusThree, make_package, tiny_mlp
from tests.plugins.waiting import wait_until


@pytest.fixture(scope="session")
def template_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """models/mlp/{1,2} (classifier, 4 -> 3, labels a b c; policy all; labels stable=1, canary=2)
    and models/half_plus_three/123 (policy latest)."""
    root = tmp_path_factory.mktemp("template") / "models"
    for version, seed in ((1, 0), (2, 1)):
        make_package(tiny_mlp(seed), root / "mlp" / str(version), torch.randn(6, 4),
                     name="mlp", task="classification", labels=LABELS)  # fmt: skip
    config = {"version_policy": {"all": {}}, "labels": {"stable": 1, "canary": 2}}
    (root / "mlp" / "config.json").write_text(json.dumps(config))
    make_package(HalfPlusThree(), root / "half_plus_three" / "123", torch.randn(6),
                 name="half_plus_three", task="regression")  # fmt: skip
    return root


@pytest.fixture
def repo_dir(template_repo: Path, tmp_path: Path) -> Path:
    """A private copy of the template repository (tests may change it)."""
    return Path(shutil.copytree(template_repo, tmp_path / "models"))


class ServerThread:
    """``ember.serve.server.run`` on its own event loop in a thread; ``stop()`` shuts it down."""

    def __init__(self, path: Path, **options: Any) -> None:
        self.info: dict[str, Any] = {}
        self.error: BaseException | None = None
        self._started = threading.Event()
        self._options = options
        self._path = path
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            await _server_run(self._path, self._stop, self._on_start, self._options)

        try:
            asyncio.run(main())
        except BaseException as exc:  # reported by start()
            self.error = exc
            self._started.set()

    def _on_start(self, info: dict[str, Any]) -> None:
        self.info = info
        self._started.set()

    def start(self, wait_ready: bool = True) -> ServerThread:
        self._thread.start()
        self._started.wait(60)
        if self.error is not None:
            raise self.error
        if wait_ready:
            wait_until(
                lambda: httpx.get(self.url + "/v2/health/ready").status_code == 200,
                60,
                "server never became ready",
            )
        return self

    @property
    def url(self) -> str:
        return self.info["rest"]

    @property
    def repository(self) -> Any:
        return self.info["repository"]

    def stop(self) -> None:
        if self._loop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        assert not self._thread.is_alive(), "server thread did not stop"


async def _server_run(path: Path, stop: asyncio.Event, on_start: Any, options: dict) -> None:
    from ember.serve.server import run

    defaults = {"host": "127.0.0.1", "port": 0, "poll_interval": 0.2, "grace_period": 5.0}
    await run(path, stop=stop, on_start=on_start, **{**defaults, **options})


@pytest.fixture
def start_server():
    """Factory: ``start_server(path, **serve_options)``; every server is stopped at teardown."""
    servers: list[ServerThread] = []

    def start(path: Path, wait_ready: bool = True, **options: Any) -> ServerThread:
        server = ServerThread(path, **options)
        servers.append(server)
        return server.start(wait_ready)

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def server(repo_dir: Path, start_server: Any, tmp_path: Path) -> ServerThread:
    """A running server over ``repo_dir`` with the management API on a free port."""
    return start_server(repo_dir, management_port=0, token_file=tmp_path / "token",
                        max_queue_delay_ms=5.0)  # fmt: skip
