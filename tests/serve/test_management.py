"""Management API: bearer token, load/unload, default version, canary, labels, rollback."""

from __future__ import annotations

import shutil
import stat

import httpx
import pytest

from ember.serve.management import resolve_token

ROW = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}


def _manage(server, path: str, json=None, token: str | None = "good") -> httpx.Response:
    token = server.info["token"] if token == "good" else token
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.post(server.info["management"] + path, json=json, headers=headers)


def _served_version(server) -> str:
    return httpx.post(server.url + "/v2/models/mlp/infer", json=ROW).json()["model_version"]


def test_token_is_generated_into_a_0600_file_and_required(server, tmp_path):
    token_file = tmp_path / "token"
    assert token_file.read_text().strip() == server.info["token"]
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert server.info["management"].startswith("http://127.0.0.1:")
    for token in (None, "wrong-token-wrong-token"):
        r = _manage(server, "/v2/repository/index", token=token)
        assert r.status_code == 401 and "bearer token" in r.json()["error"]
        assert r.headers["www-authenticate"] == "Bearer"
    r = _manage(server, "/v2/repository/index")
    assert r.status_code == 200
    assert {(m["name"], m["version"], m["state"]) for m in r.json()} >= {("mlp", 2, "AVAILABLE")}
    # The management routes are not on the public port.
    assert httpx.post(server.url + "/v2/repository/index").status_code == 404


def test_default_version_canary_and_rollback(server):
    assert _served_version(server) == "2"
    assert _manage(server, "/v2/repository/models/mlp/default", {"version": 1}).status_code == 200
    assert _served_version(server) == "1"
    r = _manage(server, "/v2/repository/models/mlp/canary", {"version": 2, "percent": 100})
    assert r.status_code == 200
    assert {row["version"]: row.get("canary_percent") for row in r.json()}[2] == 100.0
    assert {_served_version(server) for _ in range(10)} == {"2"}
    _manage(server, "/v2/repository/models/mlp/canary", {"version": 2, "percent": 50})
    assert {_served_version(server) for _ in range(60)} == {"1", "2"}
    for expected in ("2", "1", "2"):  # undo: 50% canary -> 100% canary -> default 1 -> latest
        assert _manage(server, "/v2/repository/models/mlp/rollback").status_code == 200
        if expected == "1":
            assert _served_version(server) == "1"
    assert _served_version(server) == "2"
    r = _manage(server, "/v2/repository/models/mlp/rollback")
    assert r.status_code == 400 and "Nothing to roll back" in r.json()["error"]


def test_bad_management_requests_are_4xx(server):
    r = _manage(server, "/v2/repository/models/mlp/default", {"version": 9})
    assert r.status_code == 404 and "Version 9" in r.json()["error"]
    r = _manage(server, "/v2/repository/models/mlp/canary", {"version": 1, "percent": 150})
    assert r.status_code == 400 and "from 0 to 100" in r.json()["error"]
    r = _manage(server, "/v2/repository/models/mlp/default", {})
    assert r.status_code == 400 and "needs 'version'" in r.json()["error"]
    r = _manage(server, "/v2/repository/models/%2E%2E/load")
    assert r.status_code == 400 and "Invalid model name" in r.json()["error"]
    r = _manage(server, "/v2/repository/models/..secret/load")
    assert r.status_code == 400
    r = _manage(server, "/v2/repository/models/%2Fetc/load")
    assert r.status_code == 404
    r = _manage(server, "/v2/repository/models/ghost/load")
    assert r.status_code == 404 and "No model directory 'ghost'" in r.json()["error"]


def test_unload_load_and_labels(server):
    r = _manage(server, "/v2/repository/models/mlp/unload")
    assert r.status_code == 200 and {row["state"] for row in r.json()} == {"UNLOADED"}
    assert httpx.post(server.url + "/v2/models/mlp/infer", json=ROW).status_code == 404
    r = _manage(server, "/v2/repository/models/mlp/load")
    assert r.status_code == 200 and {row["state"] for row in r.json()} == {"AVAILABLE"}
    assert _served_version(server) == "2"
    assert (
        _manage(
            server, "/v2/repository/models/mlp/labels", {"label": "stable", "version": 2}
        ).status_code
        == 200
    )
    r = httpx.post(
        server.url + "/v1/models/mlp/labels/stable:predict", json={"instances": [[1, 2, 3, 4]]}
    )
    assert r.status_code == 200
    status = httpx.get(server.url + "/v1/models/mlp/labels/stable").json()["model_version_status"]
    assert [s["version"] for s in status] == ["2"]


def test_resolve_token(tmp_path):
    assert resolve_token("x" * 20) == "x" * 20
    with pytest.raises(ValueError, match="at least 16 characters"):
        resolve_token("short")
    first = resolve_token(token_file=tmp_path / "t")
    assert len(first) >= 32 and resolve_token(token_file=tmp_path / "t") == first


def test_load_answers_400_with_the_reason_when_the_version_failed(server, repo_dir):
    (repo_dir / "broken" / "1").mkdir(parents=True)
    (repo_dir / "broken" / "1" / "model.onnx").write_bytes(b"not an onnx model")
    r = _manage(server, "/v2/repository/models/broken/load")
    assert r.status_code == 400, r.text
    assert "Model 'broken' did not load: version 1 FAILED: Cannot load" in r.json()["error"]
    assert [(v["version"], v["state"]) for v in r.json()["versions"]] == [(1, "FAILED")]
    # A model whose newest version serves loads fine.
    assert _manage(server, "/v2/repository/models/mlp/load").status_code == 200


def test_load_refuses_a_symlink_out_of_the_repository(server, repo_dir, tmp_path):
    shutil.copytree(repo_dir / "mlp", tmp_path / "elsewhere")
    (repo_dir / "evil").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    r = _manage(server, "/v2/repository/models/evil/load")
    assert r.status_code == 400 and "symlink to outside the repository" in r.json()["error"]
    r = _manage(server, "/v2/repository/models/mlp%0A/load")  # a trailing newline
    assert r.status_code == 400 and "Invalid model name" in r.json()["error"]
