"""``ember serve --workers 2`` end to end: shared ports, group readiness, summed metrics,
management fan-out, hot reload across workers, a killed worker restarted, SIGTERM of the group."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.plugins.waiting import free_port, wait_until

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[3]
BODY = {"inputs": [{"name": "input", "shape": [1], "datatype": "FP32", "data": [4.0]}]}


def _wait(condition, what: str, timeout: float = 90.0):
    """``wait_until(condition)``, an HTTP error counting as not yet."""

    def attempt():
        try:
            return condition()
        except httpx.HTTPError:
            return None

    return wait_until(attempt, timeout, f"waiting for {what}", interval=0.1)


class Group:
    def __init__(self, repo: Path, tmp: Path) -> None:
        self.rest, self.grpc, self.mgmt = free_port(), free_port(), free_port()
        token_file = tmp / "token"
        cmd = [sys.executable, "-m", "ember.cli", "serve", str(repo), "--workers", "2",
               "--port", str(self.rest), "--grpc-port", str(self.grpc),
               "--management-port", str(self.mgmt), "--token-file", str(token_file),
               "--poll-interval", "0.2", "--grace-period", "5"]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen(cmd, env=env)
        self.url = f"http://127.0.0.1:{self.rest}"
        _wait(lambda: httpx.get(self.url + "/v2/health/ready").status_code == 200, "ready")
        self.auth = {"Authorization": f"Bearer {token_file.read_text().strip()}"}

    def manage(self, method: str, path: str, **kwargs) -> httpx.Response:
        url = f"http://127.0.0.1:{self.mgmt}{path}"
        return httpx.request(method, url, headers=self.auth, timeout=60, **kwargs)

    def index(self) -> dict[int, dict] | None:
        """{pid: {version: state}} of half_plus_three, per worker (None while one restarts)."""
        answer = self.manage("GET", "/v2/repository/index")
        if answer.status_code == 503:
            return None
        results = answer.json()["results"]
        return {
            r["pid"]: {row["version"]: row["state"] for row in r["body"]
                       if row["name"] == "half_plus_three"}
            for r in results
        }  # fmt: skip

    def infer(self) -> httpx.Response:
        # A new connection each time: the kernel spreads connections over the workers.
        with httpx.Client() as client:
            return client.post(self.url + "/v2/models/half_plus_three/infer", json=BODY)


@pytest.fixture(scope="module")
def group(template_repo, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("group")
    repo = Path(shutil.copytree(template_repo, tmp / "models"))
    g = Group(repo, tmp)
    g.repo = repo
    yield g
    if g.proc.poll() is None:
        g.proc.send_signal(signal.SIGTERM)
        g.proc.wait(30)


def test_two_workers_answer_on_the_shared_port_and_metrics_are_summed(group):
    pids = set(group.index())
    assert len(pids) == 2 and group.proc.pid not in pids
    for _ in range(40):
        answer = group.infer()
        assert answer.status_code == 200
        assert answer.json()["outputs"][0]["data"] == [5.0]
    metrics = httpx.get(group.url + "/metrics").text
    line = next(ln for ln in metrics.splitlines()
                if ln.startswith("ember_requests_total") and 'model="half_plus_three"' in ln)  # fmt: skip
    # Every request is counted, whichever worker answered it and whichever answers /metrics.
    assert float(line.split()[-1]) >= 40


def test_grpc_is_served_on_the_shared_port(group):
    tritonclient_grpc = pytest.importorskip("tritonclient.grpc")
    with tritonclient_grpc.InferenceServerClient(f"127.0.0.1:{group.grpc}") as client:
        assert client.is_server_ready()
        assert client.is_model_ready("half_plus_three")


def test_a_management_change_applies_to_every_worker_and_says_so(group):
    answer = group.manage("POST", "/v2/repository/models/mlp/canary",
                          json={"version": 1, "percent": 25})  # fmt: skip
    assert answer.status_code == 200
    payload = answer.json()
    assert payload["workers"] == 2 and payload["applied"] == 2
    for result in payload["results"]:
        rows = {row["version"]: row for row in result["body"]}
        assert rows[1]["canary_percent"] == 25
    bad = group.manage(
        "POST", "/v2/repository/models/nope/canary", json={"version": 1, "percent": 5}
    )
    assert bad.status_code == 404 and bad.json()["applied"] == 0
    assert "nope" in bad.json()["error"]
    assert httpx.get(f"http://127.0.0.1:{group.mgmt}/v2/repository/index").status_code == 401


def test_hot_reload_reaches_every_worker_and_none_drops_a_version_first(group):
    src = group.repo / "half_plus_three"
    shutil.copytree(src / "123", src / "124")
    seen: dict = {}

    def swapped() -> bool:
        index = seen["index"] = group.index()
        dropped = any(v.get(123) in ("UNLOADING", "END") for v in index.values())
        if dropped:  # a worker dropped 123: every worker serves 124 already
            assert all(v.get(124) == "AVAILABLE" for v in index.values()), index
        return all(v.get(123) == "END" and v.get(124) == "AVAILABLE" for v in index.values())

    wait_until(swapped, 90, lambda: str(seen["index"]))
    assert group.infer().json()["model_version"] == "124"


def test_a_killed_worker_is_restarted_with_the_group_s_routing(group):
    victim = next(iter(group.index()))
    os.kill(victim, signal.SIGKILL)
    _wait(lambda: httpx.get(group.url + "/v2/health/ready").status_code == 503 or None,
          "not ready", 10)  # fmt: skip
    index = _wait(lambda: (i := group.index()) and len(i) == 2 and victim not in i and i, "restart")
    _wait(lambda: httpx.get(group.url + "/v2/health/ready").status_code == 200, "ready again")
    for result in group.manage("GET", "/v2/repository/index").json()["results"]:
        rows = {row["version"]: row for row in result["body"] if row["name"] == "mlp"}
        assert rows[1].get("canary_percent") == 25  # replayed on the new worker
    assert len(index) == 2
    assert all(group.infer().status_code == 200 for _ in range(10))


def test_sigterm_stops_the_whole_group(group):
    pids = list(group.index())
    group.proc.send_signal(signal.SIGTERM)
    assert group.proc.wait(30) == 0
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
