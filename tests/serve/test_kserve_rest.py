"""KServe v2 REST, driven by tritonclient.http and by hand-written bodies."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
import torch

from ember.serve.errors import ServeError
from tests.plugins.models import tiny_mlp


def _client(server):
    import tritonclient.http as httpclient

    return httpclient.InferenceServerClient(server.url.removeprefix("http://"))


def _expected(x: np.ndarray, seed: int) -> np.ndarray:
    with torch.no_grad():
        return tiny_mlp(seed)(torch.from_numpy(x)).numpy()


def test_tritonclient_health_metadata_and_infer(server):
    import tritonclient.http as httpclient

    client = _client(server)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("mlp") and client.is_model_ready("mlp", "1")
    assert client.get_server_metadata()["name"] == "ember"
    meta = client.get_model_metadata("mlp")
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]
    assert meta["outputs"][0]["shape"] == [-1, 3]
    assert meta["versions"] == ["2", "1"]  # policy "all"; version 2, the newest, is the default

    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    for binary in (True, False):
        inp = httpclient.InferInput("input", [3, 4], "FP32")
        inp.set_data_from_numpy(x, binary_data=binary)
        out = httpclient.InferRequestedOutput("output", binary_data=binary)
        result = client.infer("mlp", [inp], outputs=[out], request_id="req-7")
        np.testing.assert_allclose(result.as_numpy("output"), _expected(x, 1), atol=1e-5)
        assert result.get_response()["id"] == "req-7"
        assert result.get_response()["model_version"] == "2"
    # No outputs named: tritonclient asks for every output in binary.
    inp = httpclient.InferInput("input", [3, 4], "FP32")
    inp.set_data_from_numpy(x)
    np.testing.assert_allclose(
        client.infer("mlp", [inp]).as_numpy("output"), _expected(x, 1), atol=1e-5
    )


def test_tritonclient_errors_are_raised_with_the_message(server):
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    client = _client(server)
    inp = httpclient.InferInput("input", [2, 5], "FP32")
    inp.set_data_from_numpy(np.zeros((2, 5), np.float32))
    with pytest.raises(InferenceServerException, match=r"expected shape \[-1, 4\]"):
        client.infer("mlp", [inp])
    with pytest.raises(InferenceServerException, match="Unknown model 'nope'"):
        client.get_model_metadata("nope")
    assert not client.is_model_ready("mlp", "7")


def test_json_infer_flat_and_nested_data_with_version(server):
    x = [[0.1, 0.2, 0.3, 0.4], [1.0, -1.0, 0.5, 2.0]]
    expected = _expected(np.array(x, np.float32), 0)
    for data in (x, [v for row in x for v in row]):
        body = {
            "id": "abc",
            "inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32", "data": data}],
        }
        r = httpx.post(server.url + "/v2/models/mlp/versions/1/infer", json=body)
        assert r.status_code == 200, r.text
        answer = r.json()
        assert answer["id"] == "abc" and answer["model_version"] == "1"
        (out,) = answer["outputs"]
        assert out["shape"] == [2, 3] and out["datatype"] == "FP32"
        np.testing.assert_allclose(np.array(out["data"]).reshape(2, 3), expected, atol=1e-5)


def test_outputs_selection_of_an_unknown_output_is_a_400(server):
    body = {
        "inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [0, 0, 0, 0]}],
        "outputs": [{"name": "logits"}],
    }
    r = httpx.post(server.url + "/v2/models/mlp/infer", json=body)
    assert r.status_code == 400 and "Unknown output(s) ['logits']" in r.json()["error"]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{not json", 400, "Invalid JSON"),
        (b"[1, 2]", 400, "must be a JSON object"),
        (b'{"inputs": []}', 400, "non-empty list"),
        (b'{"inputs": [{"name": "input", "shape": [1, 4], "datatype": "INT64", "data": [1,2,3,4]}]}',
         400, "expected datatype FP32, received INT64"),
        (b'{"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1,2,3]}]}',
         400, "needs 4 elements, received 3"),
        (b'{"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP99", "data": [1,2,3,4]}]}',
         400, "Unknown datatype 'FP99'"),
        (b'{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1,2,3,4]}]}',
         400, "Missing input 'input'"),
        (b'{"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": ["a","b","c","d"]}]}',
         400, "FP32 data must be JSON numbers, received a string"),
        (b'{"inputs": [{"name": "input", "shape": "1,4", "datatype": "FP32", "data": [1]}]}',
         400, "'shape' must be a list"),
    ],
)  # fmt: skip
def test_bad_input_is_a_4xx_naming_the_problem(server, body, status, message):
    r = httpx.post(server.url + "/v2/models/mlp/infer", content=body)
    assert r.status_code == status
    assert message in r.json()["error"]


def test_unknown_model_version_and_route_are_404_json(server):
    r = httpx.get(server.url + "/v2/models/nope")
    assert r.status_code == 404 and "Available models: half_plus_three, mlp" in r.json()["error"]
    r = httpx.get(server.url + "/v2/models/mlp/versions/9")
    assert r.status_code == 404 and "Version 9" in r.json()["error"]
    r = httpx.get(server.url + "/v2/nothing/here")
    assert r.status_code == 404 and "error" in r.json()


def test_body_over_the_limit_is_413(repo_dir, start_server):
    server = start_server(repo_dir, body_limit=1024)
    data = [0.0] * 4 * 200
    body = {"inputs": [{"name": "input", "shape": [200, 4], "datatype": "FP32", "data": data}]}
    r = httpx.post(server.url + "/v2/models/mlp/infer", json=body)
    assert r.status_code == 413 and "over the limit of 1024" in r.json()["error"]
    assert httpx.get(server.url + "/v2/health/live").status_code == 200  # worker alive


def test_parse_infer_request_refuses_unused_binary_bytes_and_non_ascii_lengths():
    from ember.serve.protocols.kserve_rest import parse_infer_request

    header = json.dumps({"inputs": [{"name": "x", "shape": [2], "datatype": "INT32",
                                     "parameters": {"binary_data_size": 8}}]}).encode()  # fmt: skip
    data = np.array([1, 2], "<i4").tobytes()
    _, inputs, _, _ = parse_infer_request(header + data, str(len(header)))
    assert inputs["x"].tolist() == [1, 2]
    with pytest.raises(ServeError, match="3 bytes after the binary tensors"):
        parse_infer_request(header + data + b"xyz", str(len(header)))
    for length in ("²", "١٢", "１２", "-1", "1e3"):
        with pytest.raises(ServeError, match="Invalid Inference-Header-Content-Length header"):
            parse_infer_request(header + data, length)
