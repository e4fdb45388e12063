"""Security: no pickle on any load path, the management API's token and address, model names that
try to leave the repository, the body limit, and slow clients.

The malicious pickles create a directory when unpickled; each test first proves its payload is
live (unpickling it in the test does create the directory), then that ember never ran it.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
import os
import pickle
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import torch

import ember
from ember import package
from ember.serve.errors import ServeError
from ember.serve.repository import check_model_name
from ember.serve.runtime import load_version
from ember.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from tests.plugins.models import make_package, tiny_mlp

ROW = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}


class _Payload:
    """Unpickling this runs ``os.makedirs(marker)``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (str(self.marker),))


def _malicious(tmp_path: Path, kind: str) -> tuple[bytes, Path]:
    """A pickle (``kind="pickle"``) or a torch.save zip (``"torch"``) with a live payload."""
    marker = tmp_path / f"pwned-{kind}"
    control = tmp_path / f"control-{kind}"
    if kind == "pickle":
        data, proof = pickle.dumps(_Payload(marker)), pickle.dumps(_Payload(control))
        pickle.loads(proof)
    else:
        path, proof_path = tmp_path / "evil.pt", tmp_path / "proof.pt"
        torch.save({"state": _Payload(marker)}, path)
        torch.save({"state": _Payload(control)}, proof_path)
        data = path.read_bytes()
        torch.load(proof_path, weights_only=False)
    assert control.is_dir(), "the payload is not live: the test would prove nothing"
    return data, marker


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("file", ["trainer_state.pt", "weights.safetensors"])
@pytest.mark.parametrize("kind", ["pickle", "torch"])
def test_pickle_disguised_as_checkpoint_file_is_refused(tmp_path, file, kind):
    path = save_checkpoint(tmp_path / "ckpt", model_state={"w": torch.ones(2)},
                           trainer_state={"step": 1}, meta={"global_step": 1})  # fmt: skip
    data, marker = _malicious(tmp_path, kind)
    (path / file).write_bytes(data)
    meta = json.loads((path / "meta.json").read_text())
    meta["ember_checkpoint"]["sha256"][file] = _sha(data)  # the attacker fixes the checksum too
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="refused or corrupt|cannot read weights"):
        load_checkpoint(path)
    net = ember.compile(torch.nn.Linear(2, 1), "sgd", "mse")
    loader = ember.data.make_loader(torch.ones(4, 2), torch.ones(4, 1))
    with pytest.raises(CheckpointError):
        ember.Trainer(max_epochs=1, enable_progress_bar=False, logger=False).fit(
            net, loader, ckpt_path=path
        )
    assert not marker.exists(), "the pickle payload ran"


# --------------------------------------------------------------------------- packages
@pytest.fixture(scope="module")
def clean_package(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pkg") / "mlp"
    return make_package(tiny_mlp(0), path, torch.randn(3, 4),
                                       name="mlp", task="classification")  # fmt: skip


def _poison(clean: Path, tmp_path: Path, file: str, kind: str) -> tuple[Path, Path]:
    import shutil

    path = Path(shutil.copytree(clean, tmp_path / "poisoned"))
    data, marker = _malicious(tmp_path, kind)
    (path / file).write_bytes(data)
    manifest = json.loads((path / "ember.json").read_text())
    manifest["files"][file] = _sha(data)  # the attacker fixes the checksum too
    (path / "ember.json").write_text(json.dumps(manifest))
    return path, marker


@pytest.mark.parametrize("file", ["weights.safetensors", "model.pt2", "sample.safetensors"])
@pytest.mark.parametrize("kind", ["pickle", "torch"])
def test_pickle_disguised_as_package_file_is_refused(clean_package, tmp_path, file, kind):
    path, marker = _poison(clean_package, tmp_path, file, kind)
    with pytest.raises(Exception) as loading:
        if file == "sample.safetensors":
            package.load_sample(path)
        else:
            package.load(path)
    assert not isinstance(loading.value, AssertionError)
    assert not marker.exists(), "the pickle payload ran"
    # The server: the torch runtime refuses the version; ONNX Runtime never reads weights or
    # model.pt2 (so it may load), and refuses a poisoned sample. The payload never runs.
    with ThreadPoolExecutor(1) as executor:
        for runtime in ("torch", "auto"):
            try:
                load_version("mlp", 1, path, executor, runtime=runtime)
            except Exception as exc:
                assert not isinstance(exc, AssertionError)
            else:
                assert runtime == "auto" and file != "sample.safetensors", "loaded a pickle"
    assert not marker.exists(), "the pickle payload ran in the server"


def test_no_pickle_loader_is_reachable_from_the_load_paths(monkeypatch, clean_package):
    """Loading a clean checkpoint, package and server version never calls the unsafe loaders."""

    def forbidden(*args, **kwargs):
        raise AssertionError("pickle.load(s) was called on a load path")

    real_torch_load = torch.load

    def torch_load(*args, **kwargs):
        assert kwargs.get("weights_only") is True, f"torch.load without weights_only: {kwargs}"
        return real_torch_load(*args, **kwargs)

    ckpt = save_checkpoint(clean_package.parent / "ckpt", model_state={"w": torch.ones(2)},
                           trainer_state={"step": torch.tensor(1)}, meta={})  # fmt: skip
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(torch, "load", torch_load)
    assert load_checkpoint(ckpt).trainer_state["step"].item() == 1
    assert package.load(clean_package)(torch.zeros(1, 4)).shape == (1, 3)
    with ThreadPoolExecutor(1) as executor:
        for runtime in ("auto", "torch"):
            assert load_version("mlp", 1, clean_package, executor, runtime=runtime).inputs


# --------------------------------------------------------------------------- management API
def test_management_api_needs_the_token(server):
    url = server.info["management"]
    for headers in ({}, {"Authorization": "Bearer wrong-token-wrong-token"},
                    {"Authorization": server.info["token"]}, {"X-Token": server.info["token"]}):  # fmt: skip
        for method, path in (("GET", "/v2/repository/index"),
                             ("POST", "/v2/repository/models/mlp/unload")):  # fmt: skip
            r = httpx.request(method, url + path, headers=headers)
            assert r.status_code == 401 and "bearer token" in r.json()["error"], (headers, path)
    assert httpx.post(server.url + "/v2/models/mlp/infer", json=ROW).status_code == 200
    ok = httpx.get(url + "/v2/repository/index",
                   headers={"Authorization": f"Bearer {server.info['token']}"})  # fmt: skip
    assert ok.status_code == 200


def test_management_api_is_not_on_the_public_address(repo_dir, start_server, tmp_path):
    from ember.serve import serve

    assert inspect.signature(serve).parameters["management_host"].default == "127.0.0.1"
    # Public interface on another loopback address: management stays on 127.0.0.1 alone.
    server = start_server(repo_dir, host="127.0.0.2", management_port=0,
                          token_file=tmp_path / "token")  # fmt: skip
    mgmt_port = int(server.info["management"].rsplit(":", 1)[1])
    assert server.info["management"].startswith("http://127.0.0.1:")
    assert server.url.startswith("http://127.0.0.2:")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.2", mgmt_port), timeout=5)
    token = {"Authorization": f"Bearer {server.info['token']}"}
    for path in ("/v2/repository/index", "/v2/repository/models/mlp/unload"):
        assert httpx.post(server.url + path, headers=token).status_code == 404
    assert httpx.post(server.url + "/v2/models/mlp/infer", json=ROW).status_code == 200


# --------------------------------------------------------------------------- model names
BAD_NAMES = ["../../etc", "..", "../mlp", "/etc", "/etc/passwd", "a/../../b", "mlp/..",
             ".hidden", "", " ", "x" * 200, "C:\\Windows", "mlp\x00", "~root"]  # fmt: skip


@pytest.mark.parametrize("name", BAD_NAMES)
def test_model_names_that_leave_the_repository_are_refused(name):
    with pytest.raises(ServeError, match="Invalid model name") as info:
        check_model_name(name)
    assert info.value.status == 400


def _raw(url: str, request: bytes, timeout: float = 10.0) -> tuple[int, bytes]:
    """Sends bytes exactly as given (httpx would normalise ``..`` away)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data or len(data) < _expected_length(data):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return int(data.split()[1]), data.partition(b"\r\n\r\n")[2]


def _expected_length(data: bytes) -> int:
    head, _, _ = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(head) + 4 + int(line.split(b":")[1])
    return 0


@pytest.mark.parametrize("name", ["..", "../../etc", "%2e%2e", "..%2F..%2Fetc", "%2Fetc",
                                  "%2e%2e%2f%2e%2e%2fetc", "/etc"])  # fmt: skip
def test_traversal_in_urls_is_refused(server, name):
    token = server.info["token"]
    requests = [
        (server.info["management"], f"POST /v2/repository/models/{name}/load HTTP/1.1\r\n"
         f"Host: x\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\n\r\n"),
        (server.url, f"GET /v2/models/{name} HTTP/1.1\r\nHost: x\r\n\r\n"),
        (server.url, f"POST /v1/models/{name}:predict HTTP/1.1\r\nHost: x\r\n"
         "Content-Length: 2\r\n\r\n{}"),
    ]  # fmt: skip
    for url, request in requests:
        status, body = _raw(url, request.encode())
        assert status in (400, 404), (request, status, body)
        assert "error" in json.loads(body)
    assert {row["name"] for row in server.repository.status()} == {"mlp", "half_plus_three"}


# --------------------------------------------------------------------------- body limit
def test_body_limit_holds(repo_dir, start_server):
    server = start_server(repo_dir, body_limit=4096, poll_interval=0)
    big = json.dumps({**ROW, "id": "x" * 8192}).encode()
    for content in (big, iter([big[:3000], big[3000:]])):  # Content-Length, then chunked
        r = httpx.post(server.url + "/v2/models/mlp/infer", content=content,
                       headers={"Content-Type": "application/json"})  # fmt: skip
        assert r.status_code == 413 and "over the limit of 4096" in r.json()["error"]
    status, body = _raw(server.url, b"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\n"
                        b"Content-Length: 99999999999\r\n\r\n{}")  # fmt: skip
    assert status == 413, body
    assert httpx.post(server.url + "/v2/models/mlp/infer", json=ROW).status_code == 200


# --------------------------------------------------------------------------- slow clients
async def _slowloris(url: str, sockets: int, seconds: float) -> int:
    """Opens ``sockets`` connections that send their headers a few bytes at a time."""
    host, port = url.removeprefix("http://").split(":")
    streams = [await asyncio.open_connection(host, int(port)) for _ in range(sockets)]
    head = b"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
    start, sent = time.monotonic(), 0
    while time.monotonic() - start < seconds:
        for _, writer in streams:
            writer.write(head[sent % len(head) : sent % len(head) + 1])
        sent += 1
        await asyncio.sleep(0.1)
    for _, writer in streams:
        writer.close()
    return len(streams)


async def _timed_requests(url: str, count: int) -> list[float]:
    latencies = []
    async with httpx.AsyncClient(timeout=10) as client:
        await asyncio.sleep(0.5)  # the slow clients are connected and trickling by now
        for _ in range(count):
            start = time.monotonic()
            r = await client.post(url + "/v2/models/mlp/infer", json=ROW)
            assert r.status_code == 200
            latencies.append(time.monotonic() - start)
    return latencies


@pytest.mark.e2e
def test_slow_clients_do_not_block_others(repo_dir, start_server, figures):
    server = start_server(repo_dir, poll_interval=0)

    async def main() -> tuple[int, list[float]]:
        return await asyncio.gather(_slowloris(server.url, 100, 4.0),
                                    _timed_requests(server.url, 50))  # fmt: skip

    slow, latencies = asyncio.run(main())
    figures["slow_clients"] = {"slow_connections": slow, "requests": len(latencies),
                               "max_latency_ms": round(1000 * max(latencies), 1)}  # fmt: skip
    assert max(latencies) < 1.0, figures["slow_clients"]


@pytest.mark.e2e
def test_idle_keep_alive_connections_time_out(repo_dir, start_server):
    server = start_server(repo_dir, poll_interval=0)
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        body = json.dumps(ROW).encode()
        sock.sendall(b"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nContent-Length: "
                     + str(len(body)).encode() + b"\r\n\r\n" + body)  # fmt: skip
        data = b""
        while b"\r\n\r\n" not in data or len(data) < _expected_length(data):
            data += sock.recv(65536)
        assert data.startswith(b"HTTP/1.1 200")
        start = time.monotonic()
        assert sock.recv(1) == b"", "the server should close an idle connection"
        assert time.monotonic() - start < 15
