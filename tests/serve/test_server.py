"""The server process: graceful SIGTERM, announced endpoints, OpenAPI schema and docs page."""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from starlette.routing import Route

from ember.serve.app import build_app, openapi_schema
from tests.plugins.waiting import free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
ROW = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
SCRIPT = """
import gc, sys
from ember.serve import serve
code = serve(sys.argv[1], port=int(sys.argv[2]), grpc_port=None, management_port=None,
             poll_interval=0, max_batch_size=64, max_queue_delay_ms=1500, grace_period=10)
print(f"frozen objects: {gc.get_freeze_count()}", file=sys.stderr)
sys.exit(code)
"""


@pytest.mark.e2e
def test_sigterm_finishes_in_flight_requests_and_exits_0(repo_dir):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(repo_dir), str(port)],
        env=env, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            assert proc.poll() is None, proc.stderr.read()
            try:
                return httpx.get(url + "/v2/health/ready").status_code == 200
            except httpx.TransportError:
                return False

        wait_until(ready, 90, "server never became ready", interval=0.1)
        result: dict = {}
        # The request waits up to 1.5 s in the batching queue: SIGTERM arrives while it is in flight.
        request = threading.Thread(
            target=lambda: result.update(
                r=httpx.post(url + "/v2/models/mlp/infer", json=ROW, timeout=30)
            )
        )
        request.start()
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        request.join(30)
        assert result["r"].status_code == 200
        assert proc.wait(30) == 0
        log = proc.stderr.read()
        assert f"KServe v2 REST   {url}/v2/models/{{name}}/infer" in log
        assert "Shutting down" in log
        # serve() owns its process: the startup heap leaves the collector's reach (p99).
        frozen = re.search(r"frozen objects: (\d+)", log)
        assert frozen and int(frozen.group(1)) > 10_000, log[-2000:]
        assert "Froze" not in log  # a DEBUG detail, not a line for every user
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_openapi_describes_every_rest_route_with_bodies(repo_dir):
    from ember.serve.repository import ModelRepository

    app = build_app(ModelRepository(repo_dir, poll_interval=0))
    schema = openapi_schema()
    for route in app.routes:
        assert isinstance(route, Route)
        if route.path in ("/openapi.json", "/docs"):
            continue
        for method in route.methods - {"HEAD"}:
            op = schema["paths"][route.path][method.lower()]
            assert op["summary"]
            if method == "POST":
                assert "schema" in op["requestBody"]["content"]["application/json"]
            names = {p["name"] for p in op["parameters"]}
            assert names == set(route.param_convertors), route.path


def test_openapi_and_docs_are_served(server):
    schema = httpx.get(server.url + "/openapi.json").json()
    assert schema["openapi"].startswith("3.") and "/v2/models/{name}/infer" in schema["paths"]
    page = httpx.get(server.url + "/docs")
    assert page.status_code == 200 and "/openapi.json" in page.text


def test_wrong_method_is_a_json_405(server):
    r = httpx.get(server.url + "/v2/models/mlp/infer")
    assert r.status_code == 405 and "not allowed" in r.json()["error"]


def test_busy_port_is_a_clear_error(repo_dir, start_server):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=f"Cannot listen on 127.0.0.1:{port}"):
            start_server(repo_dir, port=port)


def test_access_log_has_one_line_per_request(server, caplog):
    def lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "ember.serve.access"]

    with caplog.at_level(logging.INFO, logger="ember.serve.access"):
        httpx.get(server.url + "/v2/health/live")
        httpx.get(server.url + "/v2/models/ghost")
        # The line is written once the response is sent: the client may read it first.
        wait_until(lambda: any('"GET /v2/models/ghost" 404' in line for line in lines()), 10,
                   lambda: str(lines()))  # fmt: skip
    assert any('"GET /v2/health/live" 200' in line for line in lines()), lines()
    assert len([line for line in lines() if "/v2/models/ghost" in line]) == 1, lines()


def _start_cli_server(repo: Path, tmp_path: Path, name: str) -> tuple[subprocess.Popen, list]:
    """`ember serve REPO --port 0` in a process; its stderr lines collect in the list."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "ember.cli", "serve", str(repo), "--port", "0",
            "--poll-interval", "0", "--token-file", str(tmp_path / f"{name}.token")]  # fmt: skip
    proc = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    threading.Thread(
        target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True
    ).start()
    return proc, lines


def _wait_for(lines: list, proc: subprocess.Popen, text: str, timeout: float = 90) -> None:
    def seen() -> bool:
        assert proc.poll() is None, "".join(lines)
        return any(text in line for line in lines)

    wait_until(seen, timeout, lambda: "".join(lines))


def _listed(lines: list, label: str) -> str:
    """The address the announcement line `  <label>   <address> ...` gives."""
    return next(m.group(1) for line in lines if (m := re.match(rf"\s+{label}\s+(\S+)", line)))


@pytest.mark.e2e
def test_two_cli_servers_with_port_0_announce_their_ports_and_models(repo_dir, tmp_path):
    servers = [_start_cli_server(repo_dir, tmp_path, name) for name in ("a", "b")]
    try:
        seen = []
        for proc, lines in servers:
            _wait_for(lines, proc, "Loaded model     mlp")
            _wait_for(lines, proc, "Loaded model     half_plus_three")
            rest = _listed(lines, "KServe v2 REST").split("/v2/")[0]
            grpc = _listed(lines, "KServe v2 gRPC")
            management = _listed(lines, "Management").split("/v2/")[0]
            assert any("mlp (version 1, 2)" in line for line in lines)
            assert httpx.get(rest + "/v2/health/ready").status_code == 200
            token = next(tmp_path.glob(f"{'ab'[len(seen) // 3]}.token")).read_text().strip()
            index = httpx.post(management + "/v2/repository/index",
                               headers={"Authorization": f"Bearer {token}"})  # fmt: skip
            assert index.status_code == 200, index.text
            with socket.create_connection(tuple(grpc.rsplit(":", 1)), timeout=5):
                pass  # the gRPC port accepts connections
            seen += [rest.rsplit(":", 1)[1], grpc.rsplit(":", 1)[1], management.rsplit(":", 1)[1]]
        assert len(set(seen)) == 6 and "0" not in seen  # six real, distinct ports
    finally:
        for proc, _ in servers:
            proc.send_signal(signal.SIGTERM)
        for proc, _ in servers:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


def test_grpc_and_management_port_0_pick_free_ports_and_loaded_models_are_announced(
    repo_dir, tmp_path, start_server, caplog
):
    caplog.set_level(logging.INFO, logger="ember.serve.server")
    server = start_server(repo_dir, grpc_port=0, management_port=0,
                          token_file=tmp_path / "token")  # fmt: skip
    host, port = server.info["grpc"].rsplit(":", 1)
    assert int(port) > 0 and not server.info["management"].endswith(":0")
    with socket.create_connection((host, int(port)), timeout=5):
        pass
    wait_until(
        lambda: "Loaded model     mlp (version 1, 2)" in caplog.text, 30, lambda: caplog.text
    )
    assert "Loaded model     half_plus_three (version 123)" in caplog.text


def test_body_timeout_is_an_option_of_serve_and_the_cli(monkeypatch, tmp_path, capsys):
    import ember.serve
    from ember.cli import main

    with pytest.raises(ValueError, match="`body_timeout` must be a positive number of seconds"):
        build_app(object(), body_timeout=-1)
    seen = {}
    monkeypatch.setattr(ember.serve, "serve", lambda path, **options: seen.update(options) or 0)
    assert main(["serve", str(tmp_path), "--body-timeout", "2.5"]) == 0
    assert seen["body_timeout"] == 2.5
    assert main(["serve", str(tmp_path), "--body-timeout", "0"]) == 0
    assert seen["body_timeout"] is None  # 0: no limit
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    assert "--body-timeout SECONDS" in capsys.readouterr().out


def test_no_model_loaded_says_where_the_models_are(tmp_path, caplog):
    # `ember serve demo_output` (one level too high) loaded nothing and did not say why
    from ember.serve import server

    class Empty:
        root = tmp_path

        def status(self) -> list:
            return []

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "ember.json").write_text("{}")
    with caplog.at_level(logging.WARNING, logger="ember.serve.server"):
        server._announce_models(Empty())
    assert f"{tmp_path / 'model'} is a model package, serve it alone" in caplog.text
    (tmp_path / "models" / "digits" / "1").mkdir(parents=True)
    (tmp_path / "models" / "digits" / "1" / "ember.json").write_text("{}")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ember.serve.server"):
        server._announce_models(Empty())
    assert f"{tmp_path / 'models'} is a repository, serve it: ember serve" in caplog.text
