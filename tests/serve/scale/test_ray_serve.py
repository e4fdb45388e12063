"""ember on Ray Serve, on a real two-node Ray cluster started on this machine: replicas on both
nodes, every protocol, routing and hot reload reaching every replica, a killed replica."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

serve = pytest.importorskip("ray.serve")
ray = pytest.importorskip("ray")

from ember.serve.scale.ray_serve import GRPC_SERVICER, application  # noqa: E402
from tests.plugins.waiting import free_port, wait_until  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
REQUEST_TIMEOUT = 20.0  # the proxy answers 408 past this: a request never hangs
BODY = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}


def _ray(*args: str, env: dict) -> None:
    ray_cli = str(Path(sys.executable).with_name("ray"))
    done = subprocess.run([ray_cli, *args], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (
        f"ray {args[0]} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )


@pytest.fixture(scope="module")
def cluster(template_repo, tmp_path_factory):
    """A head node and a second node with its own custom resource, one CPU each."""
    repo = Path(shutil.copytree(template_repo, tmp_path_factory.mktemp("ray") / "models"))
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Unix socket paths are limited
    # RAY_AUTH_MODE: Ray turns token auth on when ~/.ray/auth_token exists (a local ray.init
    # writes one); this throwaway cluster on 127.0.0.1 runs without.
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
           "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}  # fmt: skip
    patch = pytest.MonkeyPatch()
    patch.setenv("RAY_AUTH_MODE", "disabled")  # for this process's ray.init
    gcs = free_port()
    try:
        _ray("start", "--head", f"--port={gcs}", "--num-cpus=1", '--resources={"head_node": 1}',
             "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}",
             "--node-ip-address=127.0.0.1", env=env)  # fmt: skip
        _ray("start", f"--address=127.0.0.1:{gcs}", "--num-cpus=1",
             '--resources={"second_node": 1}', "--node-ip-address=127.0.0.1", env=env)  # fmt: skip
        ray.init(address=f"127.0.0.1:{gcs}", log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}})  # fmt: skip
        http, grpc = free_port(), free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": http,
                                  "request_timeout_s": REQUEST_TIMEOUT},
                    grpc_options={"port": grpc, "grpc_servicer_functions": [GRPC_SERVICER]})  # fmt: skip
        yield {"repo": repo, "url": f"http://127.0.0.1:{http}", "grpc": f"127.0.0.1:{grpc}",
               "address": f"127.0.0.1:{gcs}", "port": http}  # fmt: skip
    finally:
        try:
            serve.shutdown()
            ray.shutdown()
        finally:
            _ray("stop", "--force", env=env)
            shutil.rmtree(temp, ignore_errors=True)
            patch.undo()


def _deploy(cluster, **kwargs) -> None:
    app = application(cluster["repo"], min_replicas=2, max_replicas=2, max_replicas_per_node=1,
                      num_cpus=0.5, poll_interval=0.2, **kwargs)  # fmt: skip
    serve.run(app, name="ember", route_prefix="/")


def _infer(cluster, model: str = "mlp", n: int = 40) -> list[tuple[int, str, str]]:
    """(status, replica, model version) of ``n`` requests, each on a new connection."""
    body = BODY if model == "mlp" else {"inputs": [{"name": "input", "shape": [1],
                                                    "datatype": "FP32", "data": [4.0]}]}  # fmt: skip
    answers = []
    for _ in range(n):
        with httpx.Client(timeout=30) as client:
            r = client.post(f"{cluster['url']}/v2/models/{model}/infer", json=body)
        answers.append((r.status_code, r.headers.get("x-ember-replica", ""),
                        r.json().get("model_version", "")))  # fmt: skip
    return answers


@pytest.fixture(scope="module")
def deployed(cluster):
    _deploy(cluster)
    return cluster


@pytest.mark.e2e
def test_replicas_on_both_nodes_answer(deployed):
    assert ray.cluster_resources().get("second_node") == 1
    answers = _infer(deployed)
    assert {status for status, _, _ in answers} == {200}
    nodes = {replica.split("/")[0] for _, replica, _ in answers}
    assert len(nodes) == 2, answers  # max_replicas_per_node=1: one replica on each node


@pytest.mark.e2e
def test_every_rest_protocol_and_grpc(deployed):
    url = deployed["url"]
    assert httpx.get(url + "/v2/health/ready").json() == {"ready": True}
    tf = httpx.post(url + "/v1/models/half_plus_three:predict", json={"instances": [1.0, 2.0]})
    assert tf.json() == {"predictions": [3.5, 4.0]}
    ts = httpx.post(url + "/predictions/half_plus_three", json=[2.0])
    assert ts.status_code == 200 and "4.0" in ts.text
    assert "ember_requests_total" in httpx.get(url + "/metrics").text
    tritonclient_grpc = pytest.importorskip("tritonclient.grpc")
    from tritonclient.utils import InferenceServerException

    with tritonclient_grpc.InferenceServerClient(deployed["grpc"]) as client:
        assert client.is_server_ready() and client.is_model_ready("half_plus_three")
        x = tritonclient_grpc.InferInput("input", [2], "FP32")
        x.set_data_from_numpy(np.array([1.0, 2.0], np.float32))
        out = client.infer("half_plus_three", [x]).as_numpy("output")
        assert out.tolist() == [3.5, 4.0]
        with pytest.raises(InferenceServerException, match="NOT_FOUND"):
            client.infer("nope", [x])


@pytest.mark.e2e
def test_routing_reaches_every_replica(deployed):
    assert {v for _, _, v in _infer(deployed, n=10)} == {"2"}  # newest by default
    _deploy(deployed, routing={"mlp": {"default": 1}})  # user_config: no restart
    answers = _infer(deployed)
    assert {v for _, _, v in answers} == {"1"}
    assert len({r.split("/")[0] for _, r, _ in answers}) == 2


@pytest.mark.e2e
def test_hot_reload_reaches_every_replica(deployed):
    src = deployed["repo"] / "half_plus_three"
    shutil.copytree(src / "123", src / "124")
    seen: dict = {}

    def reloaded() -> bool:
        answers = seen["answers"] = _infer(deployed, "half_plus_three", 20)
        replicas = {r.split("/")[0] for _, r, _ in answers}
        return {v for _, _, v in answers} == {"124"} and len(replicas) == 2

    wait_until(reloaded, 120, lambda: str(seen["answers"]), interval=0.5)


RAY_SETTLE_S = 2.0


@pytest.mark.e2e
def test_killing_a_replica_loses_only_its_in_flight_requests(deployed):
    """Ray Serve does not resend a request whose replica died while running it (it may not be
    idempotent): those answer 500. Every request sent after the kill must be answered."""
    results: list[tuple[float, float, object]] = []  # (sent, answered, status)
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(timeout=REQUEST_TIMEOUT * 3) as c:  # the proxy answers first
            while not stop.is_set():
                sent = time.monotonic()
                try:
                    status = c.post(deployed["url"] + "/v2/models/mlp/infer", json=BODY).status_code
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                results.append((sent, time.monotonic(), status))

    replicas = [a for a in ray.util.list_named_actors(all_namespaces=True)
                if a["name"].startswith("SERVE_REPLICA::ember#")]  # fmt: skip
    assert len(replicas) == 2
    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: len(results) >= 20, 120, "no answers before the kill")
        before = len(results)
        killed = time.monotonic()
        ray.kill(ray.get_actor(replicas[0]["name"], namespace=replicas[0]["namespace"]))
        # requests keep being answered after the kill
        wait_until(lambda: len(results) >= before + 200, 120, lambda: str(results[-5:]), 0.1)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    failed = [(sent, status) for sent, _, status in results if status != 200]
    assert len(failed) <= len(threads)  # at most one in flight per client
    # ray.kill only asks for the kill: a request sent just after it may still reach the dying
    # replica before Ray's router sees the death. Those answer 500 like the ones in flight, or,
    # when the replica dies without answering, 408 from the proxy's request timeout (never a
    # hang); every request sent once the death had time to be seen (RAY_SETTLE_S) is answered.
    assert all(sent < killed + RAY_SETTLE_S and status in (500, 408) for sent, status in failed), (
        failed
    )
    assert all(status == 200 for sent, _, status in results if sent > killed + RAY_SETTLE_S)


@pytest.mark.e2e
def test_cli_runs_the_application_until_stopped(deployed):
    serve.delete("ember")
    cmd = [sys.executable, "-m", "ember.cli", "serve", str(deployed["repo"]), "--ray",
           deployed["address"], "--port", str(deployed["port"]), "--no-grpc",
           "--min-replicas", "1", "--max-replicas", "2"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env)
    try:

        def ready() -> bool:
            assert proc.poll() is None, f"the CLI exited {proc.returncode}"
            try:
                return httpx.get(deployed["url"] + "/v2/health/ready").status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, 180, "the CLI's application never became ready", interval=0.5)
        assert {status for status, _, _ in _infer(deployed, n=5)} == {200}
    finally:
        proc.terminate()
        assert proc.wait(60) == 0
    assert "ember" not in serve.status().applications  # Ctrl-C/SIGTERM removes it


def test_replica_bounds_and_path_are_checked(tmp_path):
    with pytest.raises(ValueError, match="1 <= min_replicas <= max_replicas"):
        application(tmp_path, min_replicas=3, max_replicas=2)
    with pytest.raises(ValueError, match="does not exist"):
        application(tmp_path / "missing")


def test_routing_keys_are_checked(tmp_path):
    with pytest.raises(ValueError, match="Unknown routing keys \\['defualt'\\]"):
        application(tmp_path, routing={"mlp": {"defualt": 2}})
    with pytest.raises(ValueError, match="must map model names"):
        application(tmp_path, routing={"mlp": 2})
