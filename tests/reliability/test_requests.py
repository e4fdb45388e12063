"""Hostile and unusual requests found by probing the server (issue 13): each must get a 4xx that
names the problem, never a 500 / INTERNAL, and must not stall or bloat the server.

Versions in non-ASCII digits, a non-ASCII length header, shapes that overflow numpy, a 10 MB
datatype, strings and booleans in FP32 data, unused bytes after binary tensors, a body sent a
byte at a time, and big JSON bodies (parsed off the event loop; their memory given back).
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import httpx
import numpy as np
import orjson
import pytest

from tests.plugins.processes import serve_command
from tests.plugins.waiting import free_port, wait_until

ROW = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
NON_ASCII_DIGITS = ["%C2%B2", "%D9%A3", "%EF%BC%91"]  # "²", Arabic-Indic "٣", full-width "１"


# --------------------------------------------------------------------------- versions
@pytest.mark.parametrize("version", NON_ASCII_DIGITS)
def test_versions_in_non_ascii_digits_are_400_on_every_protocol(server, version):
    calls = [
        ("POST", f"/v2/models/mlp/versions/{version}/infer", ROW),
        ("GET", f"/v2/models/mlp/versions/{version}", None),
        ("GET", f"/v2/models/mlp/versions/{version}/ready", None),
        ("POST", f"/v1/models/mlp/versions/{version}:predict", {"instances": [[1, 2, 3, 4]]}),
        ("GET", f"/v1/models/mlp/versions/{version}", None),
        ("GET", f"/v1/models/mlp/versions/{version}/metadata", None),
        ("POST", f"/predictions/mlp/{version}", [1, 2, 3, 4]),
    ]
    for method, path, body in calls:
        r = httpx.request(method, server.url + path, json=body)
        assert r.status_code == 400, (path, r.status_code, r.text)
        assert "ASCII digits" in r.json()["error"], path


@pytest.fixture
def grpc_server(repo_dir, start_server):
    port = free_port()
    start_server(repo_dir, grpc_port=port, poll_interval=0)
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield service_pb2, service_pb2_grpc.GRPCInferenceServiceStub(channel)


def _grpc_infer(pb, shape: list[int], version: str = "", contents: list[float] | None = None):
    tensor = pb.ModelInferRequest.InferInputTensor(name="input", datatype="FP32", shape=shape)
    tensor.contents.fp32_contents.extend(contents or [])
    return pb.ModelInferRequest(model_name="mlp", model_version=version, inputs=[tensor])


@pytest.mark.parametrize("version", ["²", "٣", "１"])
def test_grpc_versions_in_non_ascii_digits_are_invalid_argument(grpc_server, version):
    pb, stub = grpc_server
    calls = [
        (stub.ModelInfer, _grpc_infer(pb, [1, 4], version, [1, 2, 3, 4])),
        (stub.ModelReady, pb.ModelReadyRequest(name="mlp", version=version)),
        (stub.ModelMetadata, pb.ModelMetadataRequest(name="mlp", version=version)),
    ]
    for call, request in calls:
        with pytest.raises(grpc.RpcError) as info:
            call(request, timeout=10)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
        assert "ASCII digits" in info.value.details()


def test_grpc_shape_past_numpy_limits_is_invalid_argument(grpc_server):
    pb, stub = grpc_server
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(_grpc_infer(pb, [0, 4611686018427387904]), timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "too large" in info.value.details()
    answer = stub.ModelInfer(_grpc_infer(pb, [1, 4], "", [1, 2, 3, 4]), timeout=10)
    assert answer.model_name == "mlp"


# --------------------------------------------------------------------------- malformed bodies
def _infer(server, body, headers=None) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(server.url + "/v2/models/mlp/infer", content=content, headers=headers)


def _tensor(**fields) -> dict:
    return {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", **fields}]}


@pytest.mark.parametrize(
    "body, headers, message",
    [
        (ROW, {"Inference-Header-Content-Length": b"\xb2"}, "Invalid Inference-Header"),
        (_tensor(shape=[0, 4611686018427387904], data=[]), None, "too large"),
        (_tensor(shape=[2**31] * 3, data=[]), None, "too large"),
        (_tensor(data=[1.0, "2.0", 3.0, 4.0]), None, "FP32 data must be JSON numbers, received a string"),
        (_tensor(data=[1.0, True, 3.0, 4.0]), None, "FP32 data must be JSON numbers, received a boolean"),
        (_tensor(datatype="INT32", data=[[1, 2], [None, 4]]), None, "received null"),
        (_tensor(datatype="INT64", data=[1, 2, False, 4]), None, "INT64 data must be JSON numbers"),
    ],
)  # fmt: skip
def test_malformed_infer_requests_are_400_naming_the_problem(server, body, headers, message):
    r = _infer(server, body, headers)
    assert r.status_code == 400, r.text
    assert message in r.json()["error"]
    assert _infer(server, ROW).status_code == 200


@pytest.mark.parametrize(
    "path, body",
    [
        ("/v1/models/mlp:predict", {"instances": [[1.0, "2", 3.0, 4.0]]}),
        ("/v1/models/mlp:predict", {"inputs": [[1.0, 2.0, True, 4.0]]}),
        ("/predictions/mlp", [1.0, 2.0, 3.0, "4"]),
        ("/predictions/mlp", {"data": [[False, 2.0, 3.0, 4.0]]}),
    ],
)
def test_strings_and_booleans_in_float_inputs_are_400_on_every_protocol(server, path, body):
    r = httpx.post(server.url + path, json=body)
    assert r.status_code == 400, r.text
    assert "Input 'input': FP32 data must be JSON numbers" in r.json()["error"]


def test_errors_echo_a_capped_prefix_of_a_huge_value(server):
    huge = "F" * 10_000_000
    for body in (_tensor(datatype=huge, data=[1, 2, 3, 4]), _tensor(name=huge, data=[1, 2, 3])):
        r = _infer(server, body)
        assert r.status_code == 400
        assert len(r.content) < 3000, len(r.content)
        assert "characters)" in r.json()["error"]
    r = httpx.get(server.url + "/v2/models/mlp/versions/" + "9" * 5000)
    assert r.status_code == 400 and len(r.content) < 3000


def test_unused_bytes_after_binary_tensors_are_refused(server):
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": [1, 4],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": 16},
                }
            ]
        }  # fmt: skip
    ).encode()
    data = np.arange(4, dtype="<f4").tobytes()
    headers = {"Inference-Header-Content-Length": str(len(header))}
    assert _infer(server, header + data, headers).status_code == 200
    r = _infer(server, header + data + b"extra", headers)
    assert r.status_code == 400
    assert "5 bytes after the binary tensors" in r.json()["error"]


# --------------------------------------------------------------------------- slow bodies
def test_a_body_sent_a_byte_at_a_time_is_cut_off_with_408(repo_dir, start_server):
    server = start_server(repo_dir, body_timeout=1.0, poll_interval=0)
    host, port = server.url.removeprefix("http://").split(":")
    body = json.dumps(ROW).encode() + b" " * 300  # a byte every 0.2 s: a minute to send it all
    answer = b""
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(b"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body))  # fmt: skip
        try:
            for byte in body:
                sock.sendall(bytes([byte]))
                readable, _, _ = select.select([sock], [], [], 0.2)
                if readable:
                    break  # the server answered: stop sending
            sock.settimeout(10)
            while chunk := sock.recv(65536):  # until the server closes the connection
                answer += chunk
        except ConnectionResetError:
            pass  # closed with our last bytes unread: what it sent before is in `answer`
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b"did not arrive within 1 s" in answer
    assert _infer(server, ROW).status_code == 200


# --------------------------------------------------------------------------- big bodies
def _big_predict_body(rows: int) -> tuple[bytes, np.ndarray]:
    x = np.random.default_rng(0).standard_normal((rows, 4)).astype(np.float32)
    return orjson.dumps({"instances": x.tolist()}), x


def test_health_is_answered_while_a_big_body_is_parsed(server, monkeypatch):
    """The big body's parse is held until /v2/health/live has answered: were it parsed on the
    event loop, the health request could not be answered and would time out."""
    from ember.serve import bigjson

    real, started, release, threads = bigjson.loads, threading.Event(), threading.Event(), []

    def held_loads(body):
        threads.append(threading.current_thread())
        if len(body) >= bigjson.CHUNK:
            started.set()
            release.wait(60)
        return real(body)

    monkeypatch.setattr(bigjson, "loads", held_loads)
    body, x = _big_predict_body(20_000)  # about 1.6 MB
    with ThreadPoolExecutor(1) as pool:
        answer = pool.submit(httpx.post, server.url + "/v1/models/mlp:predict", content=body,
                             timeout=60)  # fmt: skip
        assert started.wait(30), "the big body never reached the parser"
        try:
            assert httpx.get(server.url + "/v2/health/live", timeout=10).status_code == 200
        finally:
            release.set()
        r = answer.result()
    assert r.status_code == 200
    small = httpx.post(server.url + "/v1/models/mlp:predict", json={"instances": x[:3].tolist()})
    assert np.allclose(r.json()["predictions"][:3], small.json()["predictions"], atol=1e-5)
    big_thread, small_thread = threads[0], threads[-1]
    assert big_thread.name.startswith("asyncio")  # the loop's worker threads
    assert not small_thread.name.startswith("asyncio")  # small bodies stay on the loop


def test_big_bodies_take_bounded_memory_and_give_it_back(repo_dir, server_process, figures):
    """Four ~19 MB bodies at once, decoded then refused before inference (5 columns for a
    4-input model), so the figures are the bodies' and not the model's. Before the chunked
    parser the peak was ~9 x one body (Python floats) and more stayed after."""
    proc = server_process(serve_command(repo_dir, poll_interval=0))
    x = np.random.default_rng(0).standard_normal((200_000, 5)).astype(np.float32)
    body = orjson.dumps({"instances": x.tolist()})
    url = proc.url + "/v1/models/mlp:predict"
    assert httpx.post(url, json={"instances": [[1, 2, 3, 4]]}).status_code == 200
    base = peak = proc.rss_kib()
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, proc.rss_kib())
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda _: httpx.post(url, content=body, timeout=120), range(4)))
    finally:
        done.set()
        sampler.join()
    assert {r.status_code for r in answers} == {400}
    assert all("expected shape [-1, 4]" in r.json()["error"] for r in answers)
    held = 0

    def released() -> bool:
        nonlocal held
        held = proc.rss_kib() - base
        return held * 1024 <= 1.5 * len(body)

    with contextlib.suppress(AssertionError):  # up to 10 s; the assertion below says what is held
        wait_until(released, 10, interval=0.2)
    kib = len(body) / 1024
    figures["big bodies, 4 x 19 MB at once: peak RSS growth (x one body)"] = round(
        (peak - base) / kib, 2
    )
    figures["big bodies, 4 x 19 MB at once: RSS held after (x one body)"] = round(held / kib, 2)
    assert peak - base <= 6.5 * kib, f"peak growth {peak - base} KiB for a {kib:.0f} KiB body"
    assert held <= 1.5 * kib, f"{held} KiB still held after 4 bodies of {kib:.0f} KiB"


def test_big_bodies_decode_like_small_ones(server):
    """The chunked parser gives what orjson gives, on every protocol."""
    body, x = _big_predict_body(20_000)
    tf = httpx.post(server.url + "/v1/models/mlp:predict", content=body, timeout=60).json()
    inputs = [{"name": "input", "shape": [20_000, 4], "datatype": "FP32", "data": x.tolist()}]
    v2 = httpx.post(server.url + "/v2/models/mlp/infer", content=orjson.dumps({"inputs": inputs}),
                    timeout=60).json()  # fmt: skip
    ts = httpx.post(server.url + "/predictions/half_plus_three",
                    content=orjson.dumps(x[:, 0].tolist()), timeout=60).json()  # fmt: skip
    reference = httpx.post(server.url + "/v1/models/mlp:predict",
                           json={"instances": x[:50].tolist()}).json()["predictions"]  # fmt: skip
    assert np.allclose(tf["predictions"][:50], reference, atol=1e-5)
    assert np.allclose(np.reshape(v2["outputs"][0]["data"], (-1, 3))[:50], reference, atol=1e-5)
    assert np.allclose(ts[:50], x[:50, 0] * 0.5 + 3.0, atol=1e-5)
