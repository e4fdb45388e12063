"""Versions, policies, hot reload under load, corrupt versions, single-model paths, runtimes."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import threading
import time

import httpx
import numpy as np
import pytest

from ember.serve.errors import ServeError
from ember.serve.repository import ModelRepository, check_model_name
from tests.plugins.waiting import wait_until

ROW = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
HALF = {"inputs": [{"name": "input", "shape": [2], "datatype": "FP32", "data": [1.0, 2.0]}]}


def _fix_sha256(package, *names: str) -> None:
    manifest = json.loads((package / "ember.json").read_text())
    for name in names:
        manifest["files"][name] = hashlib.sha256((package / name).read_bytes()).hexdigest()
    (package / "ember.json").write_text(json.dumps(manifest))


def _states(server, name: str) -> dict[int, str]:
    return {row["version"]: row["state"] for row in server.repository.status(name)}


def test_new_version_takes_traffic_with_zero_failed_requests_under_load(server, repo_dir):
    url = server.url + "/v2/models/half_plus_three/infer"
    failures, versions, answers, stop = [], set(), [], threading.Event()

    def client() -> None:
        with httpx.Client() as http:
            while not stop.is_set():
                r = http.post(url, json=HALF)
                if r.status_code != 200 or r.json()["outputs"][0]["data"] != [3.5, 4.0]:
                    failures.append((r.status_code, r.text))
                else:
                    versions.add(r.json()["model_version"])
                answers.append(r.status_code)

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: versions == {"123"})
        shutil.copytree(repo_dir / "half_plus_three" / "123", repo_dir / "half_plus_three" / "124")
        wait_until(lambda: _states(server, "half_plus_three").get(123) == "END")
        after = len(answers) + 20  # 20 more requests once 123 is gone: all answered by 124
        wait_until(lambda: len(answers) >= after)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert failures == []
    assert versions == {"123", "124"}
    assert _states(server, "half_plus_three") == {123: "END", 124: "AVAILABLE"}


def test_corrupt_version_is_reported_and_never_serves(server, repo_dir, tmp_path):
    bad = shutil.copytree(repo_dir / "mlp" / "1", tmp_path / "staging" / "3")
    (bad / "model.onnx").write_bytes(b"this is not an onnx model")
    _fix_sha256(bad, "model.onnx")  # checksums right: the runtime itself must refuse the file
    os.rename(bad, repo_dir / "mlp" / "3")
    wait_until(lambda: _states(server, "mlp").get(3) == "FAILED")
    (row,) = [r for r in server.repository.status("mlp") if r["version"] == 3]
    assert "Cannot load" in row["error"]
    r = httpx.post(server.url + "/v2/models/mlp/infer", json=ROW)
    assert r.status_code == 200 and r.json()["model_version"] == "2"
    r = httpx.post(server.url + "/v2/models/mlp/versions/3/infer", json=ROW)
    assert r.status_code == 404 and "FAILED" in r.json()["error"]
    tf = httpx.get(server.url + "/v1/models/mlp/versions/3").json()["model_version_status"][0]
    assert tf["status"]["error_code"] == "UNKNOWN" and tf["status"]["error_message"]


def test_tampered_package_fails_its_hash_check(server, repo_dir):
    bad = repo_dir / "mlp" / "4"
    shutil.copytree(repo_dir / "mlp" / "1", bad)
    onnx = (bad / "model.onnx").read_bytes()
    (bad / "model.onnx").write_bytes(onnx[:-1] + bytes([onnx[-1] ^ 1]))
    wait_until(lambda: _states(server, "mlp").get(4) == "FAILED")
    assert httpx.post(server.url + "/v2/models/mlp/infer", json=ROW).json()["model_version"] == "2"


def test_removed_version_drains_and_ends(server, repo_dir):
    shutil.rmtree(repo_dir / "mlp" / "1")
    wait_until(lambda: _states(server, "mlp").get(1) == "END")
    r = httpx.post(server.url + "/v2/models/mlp/versions/1/infer", json=ROW)
    assert r.status_code == 404


def test_specific_version_policy_and_single_paths(repo_dir, start_server, tmp_path):
    server = start_server(repo_dir, poll_interval=0)
    assert sorted(_states(server, "mlp")) == [1, 2]
    # One package directory, a version dir with only model.onnx, and a bare .onnx file.
    only_onnx = tmp_path / "bare"
    only_onnx.mkdir()
    shutil.copy(repo_dir / "mlp" / "1" / "model.onnx", only_onnx / "model.onnx")
    onnx_file = tmp_path / "classifier.onnx"
    shutil.copy(repo_dir / "mlp" / "1" / "model.onnx", onnx_file)
    for path, name in (
        (repo_dir / "mlp" / "2", "mlp"),
        (only_onnx, "bare"),
        (onnx_file, "classifier"),
    ):
        single = start_server(path, poll_interval=0)
        meta = httpx.get(f"{single.url}/v2/models/{name}").json()
        assert meta["versions"] == ["1"] and meta["inputs"][0]["shape"] == [-1, 4], meta
        r = httpx.post(f"{single.url}/v2/models/{name}/infer", json=ROW)
        assert r.status_code == 200


def test_version_policy_override_and_torch_runtime(repo_dir):
    (repo_dir / "mlp" / "config.json").unlink()  # no labels keeping version 2 loaded

    async def main() -> None:
        repo = ModelRepository(
            repo_dir, poll_interval=0, runtime="torch",
            version_policy={"mlp": {"specific": {"versions": [1]}}},
        )  # fmt: skip
        await repo.start()
        try:
            assert repo.ready
            mv = repo.get("mlp")
            assert (mv.version, mv.platform) == (1, "pytorch")
            x = np.arange(8, dtype=np.float32).reshape(2, 4)
            torch_out = (await mv.infer({"input": x}))["output"]
            with pytest.raises(ServeError, match="Version 2 of model 'mlp' is not available"):
                repo.get("mlp", 2)
        finally:
            await repo.stop()
        ort = ModelRepository(repo_dir, poll_interval=0, version_policy={"mlp": "all"})
        await ort.start()
        try:
            ort_out = (await ort.get("mlp", "1").infer({"input": x}))["output"]
        finally:
            await ort.stop()
        np.testing.assert_allclose(torch_out, ort_out, atol=1e-5)

    asyncio.run(main())


def test_bad_arguments_are_refused_with_clear_messages(repo_dir, tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        ModelRepository(tmp_path / "missing")
    with pytest.raises(ValueError, match="Unknown runtime 'tf'. Choose one of"):
        ModelRepository(repo_dir, runtime="tf")
    with pytest.raises(ValueError, match="Invalid version_policy"):
        ModelRepository(repo_dir, version_policy={"mlp": {"newest": 1}})
    for name in ("../x", "/etc", "a/b", "..", "http://example.com/m"):
        with pytest.raises(ServeError, match="Invalid model name"):
            check_model_name(name)
    assert check_model_name("digits-v2.1_x") == "digits-v2.1_x"


def test_version_dir_being_written_loads_once_stable(server, repo_dir):
    target = repo_dir / "half_plus_three" / "200"
    target.mkdir()
    for f in sorted(os.listdir(repo_dir / "half_plus_three" / "123")):
        shutil.copy(repo_dir / "half_plus_three" / "123" / f, target / f)
        time.sleep(0.05)  # slower than nothing, faster than two polls
    wait_until(lambda: _states(server, "half_plus_three").get(200) == "AVAILABLE")
    assert _states(server, "half_plus_three")[123] in ("UNLOADING", "END")


def _broken(repo_dir, name: str = "broken") -> None:
    (repo_dir / name / "1").mkdir(parents=True)
    (repo_dir / name / "1" / "model.onnx").write_bytes(b"not an onnx model")


def test_readiness_default_and_strict(repo_dir, tmp_path):
    _broken(repo_dir)

    async def ready(root, **options) -> bool:
        repo = ModelRepository(root, poll_interval=0, **options)
        assert not repo.ready  # never before the startup load settled
        await repo.start()
        try:
            return repo.ready
        finally:
            await repo.stop()

    async def main() -> None:
        assert await ready(repo_dir)  # one failed model: the others serve, the replica stays in
        assert not await ready(repo_dir, strict_readiness=True)  # Triton's strict mode
        shutil.rmtree(repo_dir / "mlp")
        shutil.rmtree(repo_dir / "half_plus_three")
        assert not await ready(repo_dir)  # nothing serves at all
        shutil.rmtree(repo_dir / "broken")
        assert await ready(repo_dir) and await ready(repo_dir, strict_readiness=True)  # empty

    asyncio.run(main())


def test_removed_model_directory_is_unloaded_and_forgotten(server, repo_dir):
    shutil.rmtree(repo_dir / "half_plus_three")
    wait_until(lambda: "half_plus_three" not in server.repository.models())
    assert httpx.get(server.url + "/v2/health/ready").status_code == 200
    assert httpx.get(server.url + "/ping").status_code == 200
    r = httpx.get(server.url + "/v2/models/half_plus_three")
    assert r.status_code == 404 and "Unknown model" in r.json()["error"]
    text = httpx.get(server.url + "/metrics").text  # past request histograms stay; gauges go
    assert 'ember_models_loaded{model="half_plus_three"}' not in text
    assert 'ember_model_version_state{model="half_plus_three"' not in text
    shutil.copytree(repo_dir / "mlp" / "1", repo_dir / "half_plus_three" / "1")  # it comes back
    wait_until(lambda: "half_plus_three" in server.repository.models()
          and _states(server, "half_plus_three") == {1: "AVAILABLE"})  # fmt: skip


def test_failed_new_model_is_reported_with_its_reason_and_keeps_the_server_ready(server, repo_dir):
    _broken(repo_dir)
    wait_until(
        lambda: (
            "broken" in server.repository.models() and _states(server, "broken") == {1: "FAILED"}
        )
    )
    assert httpx.get(server.url + "/v2/health/ready").status_code == 200
    r = httpx.get(server.url + "/v2/models/broken/ready")
    assert r.status_code == 503 and r.json()["ready"] is False
    assert "version 1 FAILED: Cannot load" in r.json()["error"]
    r = httpx.get(server.url + "/v2/models/broken")
    assert r.status_code == 503 and "version 1 FAILED: Cannot load" in r.json()["error"]
    r = httpx.get(server.url + "/v2/models/broken/versions/1")
    assert r.status_code == 404 and "state: FAILED: Cannot load" in r.json()["error"]
    text = httpx.get(server.url + "/metrics").text
    assert 'ember_model_version_state{model="broken",state="FAILED",version="1"} 1.0' in text
    assert 'ember_model_version_state{model="mlp",state="AVAILABLE",version="2"} 1.0' in text


def test_strict_readiness_is_not_ready_while_a_model_fails(repo_dir, start_server):
    _broken(repo_dir)
    server = start_server(repo_dir, wait_ready=False, strict_readiness=True)
    wait_until(lambda: server.repository.started)
    assert httpx.get(server.url + "/v2/health/ready").status_code == 503
    assert httpx.get(server.url + "/ping").status_code == 503
    shutil.rmtree(repo_dir / "broken")  # the watcher unloads it: every model serves again
    wait_until(lambda: httpx.get(server.url + "/v2/health/ready").status_code == 200)


def test_slow_upload_is_pending_until_complete_and_never_unloads_the_serving_version(
    server, repo_dir
):
    source, target = repo_dir / "half_plus_three" / "123", repo_dir / "half_plus_three" / "124"
    target.mkdir()
    order = ["model.onnx", "sample.safetensors", "weights.safetensors", "ember.json", "model.pt2"]
    assert sorted(order) == sorted(os.listdir(source))
    for done, name in enumerate(order[:-1]):
        shutil.copy(source / name, target / name)
        wait_until(lambda: _states(server, "half_plus_three").get(124) == "PENDING")
        time.sleep(0.5)  # several scans: still pending, 123 still serves
        assert _states(server, "half_plus_three") == {123: "AVAILABLE", 124: "PENDING"}, done
        r = httpx.post(server.url + "/v2/models/half_plus_three/infer", json=HALF)
        assert r.json()["model_version"] == "123"
    (row,) = [r for r in server.repository.status("half_plus_three") if r["version"] == 124]
    assert row["error"] == "waiting for files listed in ember.json: model.pt2"
    tf = httpx.get(server.url + "/v1/models/half_plus_three/versions/124").json()
    assert tf["model_version_status"][0]["state"] == "START"  # TF Serving's "not yet loading"
    assert "model.pt2" in tf["model_version_status"][0]["status"]["error_message"]
    shutil.copy(source / "model.pt2", target / "model.pt2")
    wait_until(lambda: _states(server, "half_plus_three").get(124) == "AVAILABLE")
