"""Hot reload under load: publish version 2, then a corrupt version 3, then delete version 2.

While 32 clients keep sending requests: 0 failed requests, the status shows the corrupt version's
error, and every response comes from a version that was live when it was sent (the outputs
identify the version: each one has other weights).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch

from tests.plugins.models import LABELS, make_package, tiny_mlp
from tests.plugins.processes import load_in_thread, serve_command
from tests.plugins.waiting import wait_until

SEEDS = {1: 10, 2: 11, 3: 12}
CLIENTS = 32


def _package(staging: Path, version: int) -> Path:
    return make_package(
        tiny_mlp(SEEDS[version]), staging / str(version), torch.randn(6, 4),
        name="hot", task="classification", labels=LABELS,
    )  # fmt: skip


def _corrupt(package: Path) -> Path:
    onnx = package / "model.onnx"
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = b"\xff" * 64
    onnx.write_bytes(bytes(data))
    return package


def _requests() -> list[tuple[str, bytes, Any]]:
    """KServe v2, TF Serving and TorchServe requests whose answers name the serving version."""
    x = np.random.default_rng(1).normal(size=(2, 4)).astype(np.float32)
    with torch.no_grad():
        outs = {v: tiny_mlp(s)(torch.from_numpy(x)).numpy() for v, s in SEEDS.items()}

    def which(got: np.ndarray) -> str:
        for v, want in outs.items():
            if got.shape == want.shape and np.allclose(got, want, atol=1e-4):
                return str(v)
        raise AssertionError(f"outputs of no known version: {got.tolist()}")

    def v2(status: int, body: bytes) -> tuple[str, str]:
        assert status == 200, f"status {status}: {body[:300]!r}"
        answer = json.loads(body)
        got = np.asarray(answer["outputs"][0]["data"], np.float32).reshape(2, 3)
        assert which(got) == answer["model_version"], "outputs of another version"
        return "hot", answer["model_version"]

    def tf(status: int, body: bytes) -> tuple[str, str]:
        assert status == 200, f"status {status}: {body[:300]!r}"
        return "hot", which(np.asarray(json.loads(body)["predictions"], np.float32))

    v2_body = {"inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32",
                           "data": x.reshape(-1).tolist()}]}  # fmt: skip
    tf_body = {"instances": x.tolist()}
    return [
        ("/v2/models/hot/infer", json.dumps(v2_body).encode(), v2),
        ("/v1/models/hot:predict", json.dumps(tf_body).encode(), tf),
    ]


def _status(url: str) -> dict[int, dict]:
    rows = httpx.get(url + "/v1/models/hot", timeout=10).json()["model_version_status"]
    return {int(r["version"]): r for r in rows}


def _wait(what: str, condition: Any, timeout: float = 60.0) -> float:
    """Waits for ``condition``; returns the time it was seen (``time.monotonic()``)."""
    wait_until(condition, timeout, f"waiting for {what}")
    return time.monotonic()


def _load_runs(result: Any, what: str) -> None:
    """Waits until the load got ``2 * CLIENTS`` more answers (each client about two)."""
    target = result.requests + 2 * CLIENTS
    wait_until(lambda: result.requests >= target, 60, lambda: f"{what}: {result.failures}")


def _serving(url: str) -> set[int]:
    return {v for v, r in _status(url).items() if r["state"] == "AVAILABLE"}


@pytest.mark.e2e
def test_publish_corrupt_and_delete_versions_under_load(tmp_path, server_process, figures):
    repo, staging = tmp_path / "models", tmp_path / "staging"
    (repo / "hot").mkdir(parents=True)
    os.rename(_package(staging, 1), repo / "hot" / "1")
    _package(staging, 2)
    _corrupt(_package(staging, 3))
    server = server_process(serve_command(repo, poll_interval=0.2, max_queue_delay_ms=2.0))
    thread, stop, result = load_in_thread(server.url, _requests(), CLIENTS)
    try:
        _load_runs(result, "load on version 1")
        published_2 = time.monotonic()
        os.rename(staging / "2", repo / "hot" / "2")  # publish atomically
        gone_1 = _wait("version 2 to replace version 1", lambda: _serving(server.url) == {2})
        os.rename(staging / "3", repo / "hot" / "3")
        _wait("version 3 to fail", lambda: _status(server.url).get(3, {}).get("status", {})
              .get("error_message"))  # fmt: skip
        _load_runs(result, "load beside the failed version 3")
        deleted_2 = time.monotonic()
        shutil.rmtree(repo / "hot" / "2")
        gone_2 = _wait("version 1 to serve again", lambda: _serving(server.url) == {1})
        _load_runs(result, "load on version 1 again")
    finally:
        stop.set()
        thread.join(60)
    status = _status(server.url)
    counts = {v: sum(1 for *_, r in result.versions if r == v) for v in ("1", "2", "3")}
    figures["hot_reload"] = {"clients": CLIENTS, "requests": result.requests,
                             "errors": result.errors, "responses_by_version": counts}  # fmt: skip
    assert result.errors == 0, result.failures
    assert "sha256" in status[3]["status"]["error_message"], status[3]
    assert status[3]["state"] != "AVAILABLE"
    assert counts["3"] == 0 and counts["2"] > 0 and counts["1"] > 0
    for sent, received, _, version in result.versions:
        if version == "2":  # live from its publication until it was deleted
            assert published_2 <= received and sent <= gone_2
        if version == "1":  # not live between its replacement and the deletion of version 2
            assert not gone_1 < sent < deleted_2, (sent - gone_1, deleted_2 - sent)
