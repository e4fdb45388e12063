"""TorchServe style API: /predictions and /ping."""

from __future__ import annotations

import httpx
import numpy as np
import torch

from tests.plugins.models import LABELS, tiny_mlp


def test_ping_is_healthy_when_ready(server):
    r = httpx.get(server.url + "/ping")
    assert r.status_code == 200 and r.json() == {"status": "Healthy"}


def test_one_instance_of_a_classifier_gives_top_labels(server):
    x = [0.5, -1.0, 2.0, 0.0]
    with torch.no_grad():
        probs = torch.softmax(tiny_mlp(1)(torch.tensor([x])), dim=1)[0].numpy()
    r = httpx.post(server.url + "/predictions/mlp", json=x)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert list(answer) == [LABELS[i] for i in np.argsort(-probs)]
    np.testing.assert_allclose([answer[k] for k in LABELS], probs, atol=1e-5)


def test_batch_and_version_and_data_key(server):
    x = [[0.5, -1.0, 2.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
    r = httpx.post(server.url + "/predictions/mlp/1", json={"data": x})
    assert r.status_code == 200 and len(r.json()) == 2
    r = httpx.post(server.url + "/predictions/half_plus_three", json=[1.0, 2.0])
    assert r.json() == [3.5, 4.0]


def test_bad_bodies_are_400_and_unknown_models_404(server):
    r = httpx.post(server.url + "/predictions/mlp", content=b"nope")
    assert r.status_code == 400 and "Invalid JSON" in r.json()["error"]
    r = httpx.post(server.url + "/predictions/mlp", json={"pixels": [1]})
    assert r.status_code == 400 and '{"data": [...]}' in r.json()["error"]
    r = httpx.post(server.url + "/predictions/ghost", json=[1.0])
    assert r.status_code == 404
