"""Load: 64 concurrent clients over 2 models and 3 protocols, 0 errors, bounded memory growth.

2,000 requests per unit of ``--reliability-scale`` (``make reliability``: 20,000) after a warm-up;
the server runs as ``ember serve`` in its own process so its resident memory is measured alone.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import numpy as np
import pytest
import torch

from tests.plugins.models import LABELS, tiny_mlp
from tests.plugins.processes import run_load, serve_command

CLIENTS = 64
WARM_UP = 1_000
PER_SCALE = 2_000


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def _load_requests() -> list[tuple[str, bytes, Any]]:
    """Requests of every REST protocol for ``mlp`` (version 2 serves) and ``half_plus_three``."""
    rng = np.random.default_rng(0)
    mlp = tiny_mlp(1)  # the weights of mlp version 2 (seed 1)
    requests = []
    for rows in (1, 3, 8):
        x = rng.normal(size=(rows, 4)).astype(np.float32)
        with torch.no_grad():
            want = mlp(torch.from_numpy(x)).numpy()
        body = {"id": f"r{rows}", "inputs": [{"name": "input", "shape": [rows, 4],
                                              "datatype": "FP32", "data": x.tolist()}]}  # fmt: skip
        requests.append(("/v2/models/mlp/infer", json.dumps(body).encode(), _v2_check(want)))
        scores = torch.softmax(torch.from_numpy(want), dim=1).numpy()
        requests.append(("/predictions/mlp", json.dumps(x[0].tolist()).encode(),
                         _torchserve_check(scores[0])))  # fmt: skip
    for n in (1, 5):
        x = rng.normal(size=n).astype(np.float32)
        body = {"inputs": [{"name": "input", "shape": [n], "datatype": "FP32", "data": x.tolist()}]}
        requests.append(("/v2/models/half_plus_three/infer", json.dumps(body).encode(),
                         _v2_check(x * 0.5 + 3.0)))  # fmt: skip
        requests.append(("/v1/models/half_plus_three:predict",
                         json.dumps({"instances": x.tolist()}).encode(),
                         _tf_check(x * 0.5 + 3.0)))  # fmt: skip
    return requests


def _v2_check(want: np.ndarray) -> Any:
    def check(status: int, body: bytes) -> tuple[str, str]:
        answer = json.loads(body)
        _expect(status == 200, f"status {status}: {body[:200]!r}")
        got = np.asarray(answer["outputs"][0]["data"], dtype=np.float32)
        _expect(np.allclose(got, want.reshape(-1), atol=1e-4), "wrong outputs")
        return answer["model_name"], answer["model_version"]

    return check


def _tf_check(want: np.ndarray) -> Any:
    def check(status: int, body: bytes) -> tuple[str, str]:
        _expect(status == 200, f"status {status}: {body[:200]!r}")
        got = np.asarray(json.loads(body)["predictions"], dtype=np.float32)
        _expect(np.allclose(got, want, atol=1e-5), "wrong predictions")
        return "half_plus_three", ""

    return check


def _torchserve_check(scores: np.ndarray) -> Any:
    def check(status: int, body: bytes) -> tuple[str, str]:
        _expect(status == 200, f"status {status}: {body[:200]!r}")
        got = json.loads(body)
        want = {label: float(s) for label, s in zip(LABELS, scores)}
        _expect(got.keys() == want.keys(), f"labels {list(got)}")
        _expect(all(abs(got[k] - want[k]) < 1e-4 for k in want), "wrong probabilities")
        return "mlp", ""

    return check


@pytest.mark.e2e
def test_64_clients_two_models_no_errors_and_bounded_memory(
    repo_dir, server_process, reliability_scale, figures
):
    server = server_process(serve_command(repo_dir, poll_interval=0))
    requests = _load_requests()
    warm = asyncio.run(run_load(server.url, requests, clients=CLIENTS, total=WARM_UP))
    assert warm.errors == 0, warm.failures
    rss_start = server.rss_kib()
    total = PER_SCALE * reliability_scale
    start = time.perf_counter()
    result = asyncio.run(run_load(server.url, requests, clients=CLIENTS, total=total))
    seconds = time.perf_counter() - start
    rss_end = server.rss_kib()
    growth = (rss_end - rss_start) / rss_start
    figures["load"] = {
        "clients": CLIENTS, "models": 2, "warm_up_requests": WARM_UP,
        "requests": result.requests, "errors": result.errors,
        "requests_per_s": round(result.requests / seconds), "rss_start_mib": rss_start // 1024,
        "rss_end_mib": rss_end // 1024, "rss_growth_pct": round(100 * growth, 2),
    }  # fmt: skip
    assert result.requests == total
    assert result.errors == 0, result.failures
    assert {(m, v) for _, _, m, v in result.versions} == {
        ("mlp", "2"),
        ("mlp", ""),
        ("half_plus_three", "123"),
        ("half_plus_three", ""),
    }
    assert growth < 0.10, figures["load"]
    assert server.stop() == 0
