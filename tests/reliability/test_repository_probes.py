"""The model repository as an operator and an attacker change it under a running server.

Each test replays a probe that once took a replica out of service or served what it should not
(issue 13): a model directory deleted, a new model that fails, a manifest that does not match
its model, a symlink out of the repository, a slow non-atomic upload, a tampered file the ONNX
runtime never reads, a management ``load`` of a broken model and a model name with a newline.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.plugins.models import make_package
from tests.plugins.processes import cli_command
from tests.plugins.waiting import wait_until

ROW = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
HALF = {"inputs": [{"name": "input", "shape": [2], "datatype": "FP32", "data": [1.0, 2.0]}]}


def _wait(what: str, condition: Any, timeout: float = 60.0) -> None:
    wait_until(condition, timeout, f"waiting for {what}")


def _state(server: Any, name: str, version: int) -> str | None:
    rows = [r for r in server.repository.status() if r["name"] == name]
    return next((r["state"] for r in rows if r["version"] == version), None)


def _error(server: Any, name: str, version: int) -> str:
    (row,) = [r for r in server.repository.status(name) if r["version"] == version]
    return row.get("error") or ""


def _ready(server: Any) -> tuple[int, int]:
    return (httpx.get(server.url + "/v2/health/ready").status_code,
            httpx.get(server.url + "/ping").status_code)  # fmt: skip


def _manage(server: Any, path: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {server.info['token']}"}
    return httpx.post(server.info["management"] + path, headers=headers, timeout=60)


def _ten_class(path: Path, **meta: Any) -> Path:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 10)).eval()
    return make_package(model, path, torch.randn(6, 4), **meta)


def _edit_manifest(package: Path, edit: Any) -> None:
    manifest = json.loads((package / "ember.json").read_text())
    edit(manifest)
    (package / "ember.json").write_text(json.dumps(manifest))


def _publish(staged: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    os.rename(staged, target)  # atomically, as an operator should


def test_deleting_a_model_directory_keeps_the_replica_ready(server, repo_dir):
    assert _ready(server) == (200, 200)
    shutil.rmtree(repo_dir / "half_plus_three")  # rm -rf repo/other
    _wait("the watcher to unload it", lambda: "half_plus_three" not in server.repository.models())
    assert _ready(server) == (200, 200)
    assert httpx.post(server.url + "/v2/models/mlp/infer", json=ROW).status_code == 200
    r = httpx.post(server.url + "/v2/models/half_plus_three/infer", json=HALF)
    assert r.status_code == 404 and "Unknown model" in r.json()["error"]


def test_a_new_model_that_fails_keeps_the_replica_ready_and_says_why(server, repo_dir, tmp_path):
    staged = _ten_class(tmp_path / "staging" / "1", name="bad", task="classification",
                        labels=list("abcdefghij"))  # fmt: skip
    onnx = staged / "model.onnx"
    onnx.write_bytes(onnx.read_bytes()[:200])  # truncated: ONNX Runtime cannot load it
    _edit_manifest(staged, lambda m: m["files"].update(
        {"model.onnx": hashlib.sha256(onnx.read_bytes()).hexdigest()}))  # fmt: skip
    _publish(staged, repo_dir / "bad" / "1")
    _wait("the new model to fail", lambda: _state(server, "bad", 1) == "FAILED")
    assert _ready(server) == (200, 200)
    r = httpx.get(server.url + "/v2/models/bad/ready")
    assert r.status_code == 503 and "version 1 FAILED: Cannot load" in r.json()["error"]
    index = _manage(server, "/v2/repository/index").json()
    (row,) = [row for row in index if row["name"] == "bad"]
    assert row["state"] == "FAILED" and "Cannot load" in row["error"]
    metrics = httpx.get(server.url + "/metrics").text
    assert 'ember_model_version_state{model="bad",state="FAILED",version="1"} 1.0' in metrics
    r = _manage(server, "/v2/repository/models/bad/load")  # management load of a FAILED version
    assert r.status_code == 400 and "version 1 FAILED: Cannot load" in r.json()["error"]


@pytest.mark.e2e
def test_strict_readiness_takes_the_replica_out_while_a_model_fails(
    repo_dir, server_process, tmp_path
):
    (repo_dir / "bad" / "1").mkdir(parents=True)
    (repo_dir / "bad" / "1" / "model.onnx").write_bytes(b"not an onnx model")
    server = server_process(cli_command(repo_dir, "--no-grpc", "--no-management",
                                        "--poll-interval", "0.2", "--strict-readiness"),
                            wait=False)  # fmt: skip
    _wait("the server to log its address", lambda: "ready at" in server.log())
    server.url = server.log().split("ready at ", 1)[1].split("/v2/health/ready", 1)[0]
    _wait("the startup load", lambda: "Repository" in server.log() and "ready:" in server.log())
    assert httpx.get(server.url + "/v2/health/ready").status_code == 503
    shutil.rmtree(repo_dir / "bad")
    _wait("ready once the failed model is gone",
          lambda: httpx.get(server.url + "/v2/health/ready").status_code == 200)  # fmt: skip


@pytest.mark.parametrize("runtime", ["onnxruntime", "torch"])
def test_three_labels_for_a_ten_class_model_are_refused_at_load(
    repo_dir, start_server, tmp_path, runtime
):
    staged = _ten_class(tmp_path / "staging" / "1", name="ten", task="classification",
                        labels=list("abcdefghij"))  # fmt: skip
    _edit_manifest(staged, lambda m: m.update(labels=["a", "b", "c"]))
    _publish(staged, repo_dir / "ten" / "1")
    server = start_server(repo_dir, runtime=runtime, poll_interval=0)
    assert _state(server, "ten", 1) == "FAILED"
    assert "lists 3 labels but output 'output' has 10 values per row" in _error(server, "ten", 1)
    body = {"examples": [{"input": [1.0, 2.0, 3.0, 4.0]}]}
    r = httpx.post(server.url + "/v1/models/ten:classify", json=body)
    assert r.status_code == 503 and "lists 3 labels" in r.json()["error"]  # never 3 classes


def test_an_input_shape_the_model_does_not_take_is_refused_at_load(
    repo_dir, start_server, tmp_path
):
    staged = _ten_class(tmp_path / "staging" / "1", name="shape")
    _edit_manifest(staged, lambda m: m["signature"]["inputs"][0].update(shape=[-1, 7]))
    _publish(staged, repo_dir / "shape" / "1")
    server = start_server(repo_dir, poll_interval=0)
    assert _state(server, "shape", 1) == "FAILED"
    assert "declared with shape [-1, 7], the model's is [-1, 4]" in _error(server, "shape", 1)
    r = httpx.post(server.url + "/v2/models/shape/infer", json={"inputs": [
        {"name": "input", "shape": [1, 7], "datatype": "FP32", "data": [0.0] * 7}]})  # fmt: skip
    assert r.status_code == 503  # never a 500 from inside the model


def test_a_symlink_out_of_the_repository_is_refused_by_the_watcher_and_load(
    server, repo_dir, tmp_path
):
    outside = Path(shutil.copytree(repo_dir / "mlp", tmp_path / "outside"))
    (repo_dir / "evil").symlink_to(outside, target_is_directory=True)
    r = _manage(server, "/v2/repository/models/evil/load")
    assert r.status_code == 400 and "symlink to outside the repository" in r.json()["error"]
    time.sleep(1.0)  # five scans
    assert "evil" not in server.repository.models()
    assert httpx.post(server.url + "/v2/models/evil/infer", json=ROW).status_code == 404


def test_a_slow_upload_is_never_served_early_nor_unloads_the_previous_version(server, repo_dir):
    source = repo_dir / "half_plus_three" / "123"
    target = repo_dir / "half_plus_three" / "124"
    target.mkdir()
    for name in ("model.onnx", "weights.safetensors", "sample.safetensors", "ember.json"):
        with open(source / name, "rb") as src, open(target / name, "wb") as dst:
            data = src.read()
            for start in range(0, len(data), max(1, len(data) // 3)):  # a third at a time
                dst.write(data[start : start + max(1, len(data) // 3)])
                dst.flush()
                time.sleep(0.25)  # more than a scan
                assert _state(server, "half_plus_three", 124) in (None, "PENDING")
                assert _state(server, "half_plus_three", 123) == "AVAILABLE"
                r = httpx.post(server.url + "/v2/models/half_plus_three/infer", json=HALF)
                assert r.status_code == 200 and r.json()["model_version"] == "123"
    shutil.copy(source / "model.pt2", target / "model.pt2")  # the last listed file
    _wait("the complete upload to serve",
          lambda: _state(server, "half_plus_three", 124) == "AVAILABLE")  # fmt: skip


def test_a_tampered_weights_file_is_caught_when_onnx_serves(server, repo_dir, tmp_path):
    staged = Path(shutil.copytree(repo_dir / "mlp" / "1", tmp_path / "staging" / "3"))
    weights = load_file(str(staged / "weights.safetensors"))
    save_file({k: v * 0 for k, v in weights.items()}, str(staged / "weights.safetensors"))
    _publish(staged, repo_dir / "mlp" / "3")
    _wait("the tampered version to fail", lambda: _state(server, "mlp", 3) == "FAILED")
    assert "weights.safetensors" in _error(server, "mlp", 3)
    assert "sha256" in _error(server, "mlp", 3)
    assert httpx.post(server.url + "/v2/models/mlp/infer", json=ROW).json()["model_version"] == "2"


def test_a_model_name_with_a_trailing_newline_is_refused(server):
    r = _manage(server, "/v2/repository/models/mlp%0A/load")
    assert r.status_code == 400 and "Invalid model name" in r.json()["error"]
    r = _manage(server, "/v2/repository/models/mlp%0A/unload")
    assert r.status_code == 400
    assert httpx.post(server.url + "/v2/models/mlp/infer", json=ROW).status_code == 200
