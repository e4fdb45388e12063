"""Fixtures: a model repository of tiny models, and a running server on free ports."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

logger = logging.getLogger(__name__)

LABELS = ["a", "b", "c"]


class HalfPlusThree(torch.nn.Module):
    """TF Serving's documentation model: y = x / 2 + 3."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 0.5 + 3.0


def mlp(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)).eval()


def make_package(model: torch.nn.Module, path: Path, example: torch.Tensor, **meta: Any) -> Path:
    """A package with model.onnx: ember.package.save + ember.export, else written by hand."""
    try:
        from ember import export, package

        package.save(model, path, example_input=example, **meta)
        export.export(path, ["onnx"])
        return path
    except ImportError:
        logger.warning("ember.package/export unavailable: writing the package by hand")
    path.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        model, (example,), str(path / "model.onnx"), input_names=["input"],
        output_names=["output"], dynamo=True, dynamic_shapes=({0: torch.export.Dim("batch")},),
    )  # fmt: skip
    out = model(example)
    manifest = {
        "format": "ember.package", "format_version": 1, "name": meta.get("name"),
        "task": meta.get("task"), "labels": meta.get("labels"),
        "signature": {
            "inputs": [{"name": "input", "dtype": "float32", "shape": [-1, *example.shape[1:]]}],
            "outputs": [{"name": "output", "dtype": "float32", "shape": [-1, *out.shape[1:]]}],
        },
    }  # fmt: skip
    (path / "ember.json").write_text(json.dumps(manifest))
    return path


@pytest.fixture(scope="session")
def template_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """models/mlp/{1,2} (classifier, 4 -> 3, labels a b c; policy all; labels stable=1, canary=2)
    and models/half_plus_three/123 (policy latest)."""
    root = tmp_path_factory.mktemp("template") / "models"
    for version, seed in ((1, 0), (2, 1)):
        make_package(mlp(seed), root / "mlp" / str(version), torch.randn(6, 4),
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
            deadline = time.time() + 60
            while httpx.get(self.url + "/v2/health/ready").status_code != 200:
                assert time.time() < deadline, "server never became ready"
                time.sleep(0.05)
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
