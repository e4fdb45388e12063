"""TF Serving REST, with the request and response bodies of TF Serving's REST API docs."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
import torch

from tests.plugins.models import LABELS, tiny_mlp


def test_model_status_matches_the_docs_example(server):
    # curl http://localhost:8501/v1/models/half_plus_three (docs "Example" section)
    r = httpx.get(server.url + "/v1/models/half_plus_three")
    assert r.status_code == 200
    assert r.json() == {
        "model_version_status": [
            {
                "version": "123",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }
    r = httpx.get(server.url + "/v1/models/half_plus_three/versions/123")
    assert r.json()["model_version_status"][0]["version"] == "123"


def test_predict_matches_the_docs_example(server):
    # curl -d '{"instances": [1.0,2.0,5.0]}' -X POST .../v1/models/half_plus_three:predict
    r = httpx.post(
        server.url + "/v1/models/half_plus_three:predict", content=b'{"instances": [1.0,2.0,5.0]}'
    )
    assert r.status_code == 200
    assert r.json() == {"predictions": [3.5, 4.0, 5.5]}


def test_regress_matches_the_docs_example(server):
    body = b'{"signature_name": "tensorflow/serving/regress", "examples": [{"x": 1.0}, {"x": 2.0}]}'
    r = httpx.post(server.url + "/v1/models/half_plus_three:regress", content=body)
    assert r.status_code == 200
    assert r.json() == {"results": [3.5, 4.0]}


def test_unknown_model_matches_the_docs_error(server):
    # curl -i -d '{"instances": [1.0,5.0]}' -X POST .../v1/models/half:predict -> 404 {"error": ...}
    r = httpx.post(server.url + "/v1/models/half:predict", content=b'{"instances": [1.0,5.0]}')
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/json"
    assert set(r.json()) == {"error"} and "half" in r.json()["error"]


def test_predict_row_and_columnar_forms(server):
    x = [[0.5, -1.0, 2.0, 0.0], [1.0, 1.0, 1.0, 1.0]]
    with torch.no_grad():
        expected = tiny_mlp(1)(torch.tensor(x)).numpy()
    row = httpx.post(server.url + "/v1/models/mlp:predict", json={"instances": x}).json()
    np.testing.assert_allclose(row["predictions"], expected, atol=1e-5)
    named = httpx.post(
        server.url + "/v1/models/mlp:predict", json={"instances": [{"input": r} for r in x]}
    )
    np.testing.assert_allclose(named.json()["predictions"], expected, atol=1e-5)
    col = httpx.post(server.url + "/v1/models/mlp:predict", json={"inputs": {"input": x}}).json()
    np.testing.assert_allclose(col["outputs"], expected, atol=1e-5)
    col = httpx.post(server.url + "/v1/models/mlp:predict", json={"inputs": x}).json()
    np.testing.assert_allclose(col["outputs"], expected, atol=1e-5)


def test_versions_and_labels_pick_the_version(server):
    x = [[0.5, -1.0, 2.0, 0.0]]
    with torch.no_grad():
        v1 = tiny_mlp(0)(torch.tensor(x)).numpy()
    for path in ("/v1/models/mlp/versions/1:predict", "/v1/models/mlp/labels/stable:predict"):
        r = httpx.post(server.url + path, json={"instances": x})
        np.testing.assert_allclose(r.json()["predictions"], v1, atol=1e-5)
    status = httpx.get(server.url + "/v1/models/mlp/labels/canary").json()
    assert [s["version"] for s in status["model_version_status"]] == ["2"]
    r = httpx.post(server.url + "/v1/models/mlp/labels/nightly:predict", json={"instances": x})
    assert r.status_code == 404 and "Unknown label 'nightly'" in r.json()["error"]


def test_classify_returns_label_score_pairs(server):
    body = {"examples": [{"input": [0.5, -1.0, 2.0, 0.0]}, {"input": [1.0, 1.0, 1.0, 1.0]}]}
    r = httpx.post(server.url + "/v1/models/mlp:classify", json=body)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert len(results) == 2
    for pairs in results:
        assert [label for label, _ in pairs] == LABELS
        assert sum(score for _, score in pairs) == pytest.approx(1.0, abs=1e-5)
    r = httpx.post(
        server.url + "/v1/models/half_plus_three:classify", json={"examples": [{"x": 1.0}]}
    )
    assert r.status_code == 400 and "not a classifier" in r.json()["error"]


def test_metadata_has_the_signature_def(server):
    meta = httpx.get(server.url + "/v1/models/mlp/versions/1/metadata").json()
    assert meta["model_spec"] == {"name": "mlp", "signature_name": "", "version": "1"}
    signature = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert signature["inputs"]["input"]["dtype"] == "DT_FLOAT"
    dims = signature["inputs"]["input"]["tensor_shape"]["dim"]
    assert [d["size"] for d in dims] == ["-1", "4"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"instances": [[1, 2]], "inputs": [[1, 2]]}, "exactly one of"),
        ({}, "exactly one of"),
        ({"instances": []}, "non-empty list"),
        ({"instances": [[1, 2, 3]]}, "expected shape [-1, 4]"),
        (
            {"instances": [["a", "b", "c", "d"]]},
            "FP32 data must be JSON numbers, received a string",
        ),
        ({"instances": [[1, 2], [1, 2, 3]]}, "do not fit FP32"),
    ],
)
def test_bad_predict_bodies_are_400(server, body, message):
    r = httpx.post(server.url + "/v1/models/mlp:predict", json=body)
    assert r.status_code == 400
    assert message in r.json()["error"]
