"""Graceful shutdown: SIGTERM under load finishes the requests in flight, then ``ember serve``
exits 0 within its grace period.

The server is the CLI (``python -m ember.cli serve``) with a 1 s batching delay, so requests are
certainly inside the server (waiting for their batch) when the signal arrives.
"""

from __future__ import annotations

import json
import signal
import time

import pytest

from tests.plugins.processes import cli_command, load_in_thread
from tests.plugins.waiting import wait_until

GRACE_S = 30.0  # ember.serve.serve's default grace period (the CLI has no option for it)
CLIENTS = 16
ROW = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}


def _check(status: int, body: bytes) -> tuple[str, str]:
    assert status == 200, f"status {status}: {body[:300]!r}"
    answer = json.loads(body)
    assert len(answer["outputs"][0]["data"]) == 3
    return answer["model_name"], answer["model_version"]


@pytest.mark.e2e
def test_sigterm_under_load_finishes_in_flight_requests_and_exits_0(
    repo_dir, server_process, reliability_scale, figures
):
    server = server_process(cli_command(repo_dir, "--poll-interval", "0",
                                        "--max-queue-delay-ms", "1000"))  # fmt: skip
    requests = [("/v2/models/mlp/infer", json.dumps(ROW).encode(), _check)]
    thread, stop, result = load_in_thread(server.url, requests, CLIENTS)
    # Warm up: about (2 + scale) one-second batches of every client.
    answers = (2 + reliability_scale) * CLIENTS
    wait_until(lambda: result.requests >= answers, 120, lambda: f"no load: {result.failures}")
    # Signal 0.3 s after a batch came back: the next requests are inside the server, waiting
    # (up to 1 s) for their batch.
    wait_until(
        lambda: result.versions and 0.3 < time.monotonic() - result.versions[-1][1] < 0.6,
        30,
        lambda: f"the load stalled: {result.failures}",
        interval=0.01,
    )
    stop.set()  # no new requests after those in flight
    signalled = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    thread.join(GRACE_S + 10)
    code = server.proc.wait(GRACE_S + 10)
    exited = time.monotonic() - signalled
    finished_after = sum(1 for _, received, _, _ in result.versions if received > signalled)
    figures["shutdown"] = {"requests": result.requests, "errors": result.errors,
                           "in_flight_at_sigterm_finished": finished_after,
                           "exit_code": code, "exit_s": round(exited, 2)}  # fmt: skip
    assert result.errors == 0, result.failures
    assert finished_after > 0, "no request was in flight at SIGTERM: the test proved nothing"
    assert code == 0, server.log()[-3000:]
    assert exited < GRACE_S
    assert "ember serve stopped" in server.log()
