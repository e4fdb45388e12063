"""Prometheus metrics: per-app registry, request counts, latency histograms, models loaded."""

from __future__ import annotations

import httpx

from ember.serve.metrics import ServeMetrics

ROW = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}


def test_each_metrics_object_has_its_own_registry():
    a, b = ServeMetrics(), ServeMetrics()
    a.request("m", 1, "kserve", 200, 0.01)
    assert b'ember_requests_total{model="m"' in a.render()[0]
    assert b'ember_requests_total{model="m"' not in b.render()[0]


def test_histograms_are_cumulative_with_inclusive_bounds_count_and_sum():
    metrics = ServeMetrics()
    observe = metrics.observer("m", 3)
    observe(4, [0.001, 0.0001, 7.0], 0.01)  # rows, queue seconds per request, compute seconds
    observe(64, [20.0], 0.002)
    text = metrics.render()[0].decode()
    for line in (
        'ember_queue_duration_seconds_bucket{le="0.0005",model="m",version="3"} 1.0',
        'ember_queue_duration_seconds_bucket{le="0.001",model="m",version="3"} 2.0',  # le: <=
        'ember_queue_duration_seconds_bucket{le="5.0",model="m",version="3"} 2.0',
        'ember_queue_duration_seconds_bucket{le="10.0",model="m",version="3"} 3.0',
        'ember_queue_duration_seconds_bucket{le="+Inf",model="m",version="3"} 4.0',
        'ember_queue_duration_seconds_count{model="m",version="3"} 4.0',
        'ember_queue_duration_seconds_sum{model="m",version="3"} 27.0011',
        'ember_batch_size_bucket{le="4.0",model="m",version="3"} 1.0',
        'ember_batch_size_bucket{le="32.0",model="m",version="3"} 1.0',
        'ember_batch_size_bucket{le="64.0",model="m",version="3"} 2.0',
        'ember_compute_duration_seconds_count{model="m",version="3"} 2.0',
        "# TYPE ember_request_duration_seconds histogram",
    ):
        assert line in text, line


def test_requests_latencies_and_models_loaded_are_exported(server):
    httpx.post(server.url + "/v2/models/mlp/infer", json=ROW)
    httpx.post(server.url + "/v1/models/half_plus_three:predict", json={"instances": [1.0]})
    httpx.post(server.url + "/v2/models/mlp/infer", content=b"{")
    httpx.post(server.url + "/v2/models/made-up-name/infer", json=ROW)
    r = httpx.get(server.url + "/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    for line in (
        'ember_requests_total{model="mlp",protocol="kserve",status="200",version="2"} 1.0',
        'ember_requests_total{model="half_plus_three",protocol="tfserving",status="200",version="123"} 1.0',
        'ember_requests_total{model="mlp",protocol="kserve",status="400",version=""} 1.0',
        'ember_requests_total{model="",protocol="kserve",status="404",version=""} 1.0',
        'ember_models_loaded{model="mlp"} 2.0',
        'ember_models_loaded{model="half_plus_three"} 1.0',
    ):
        assert line in text, line
    assert "made-up-name" not in text
    for name in ("ember_request_duration_seconds_bucket", "ember_queue_duration_seconds_bucket",
                 "ember_compute_duration_seconds_bucket", "ember_batch_size_bucket"):  # fmt: skip
        assert f'{name}{{le="0.0005",model="mlp"' in text or f"{name}{{" in text, name


def test_version_states_are_a_gauge_that_follows_each_change():
    metrics = ServeMetrics()
    metrics.set_states("m", {1: "AVAILABLE", 2: "LOADING"})
    metrics.set_states("m", {1: "AVAILABLE", 2: "FAILED", 3: "PENDING"})
    text = metrics.render()[0].decode()
    for line in (
        'ember_model_version_state{model="m",state="AVAILABLE",version="1"} 1.0',
        'ember_model_version_state{model="m",state="FAILED",version="2"} 1.0',
        'ember_model_version_state{model="m",state="PENDING",version="3"} 1.0',
    ):
        assert line in text, line
    assert 'state="LOADING"' not in text
    metrics.set_states("m", {1: "END", 2: "FAILED"})  # 1 unloaded, 3 left the disk
    text = metrics.render()[0].decode()
    assert 'version="1"' not in text and 'version="3"' not in text and 'version="2"' in text
    metrics.set_loaded("m", 0)
    metrics.forget_model("m")
    assert 'model="m"' not in metrics.render()[0].decode()
