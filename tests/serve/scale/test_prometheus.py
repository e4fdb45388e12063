"""Summing the workers' Prometheus expositions."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from ember.serve.metrics import ServeMetrics
from ember.serve.scale.prometheus import merge_expositions


def _samples(text: bytes) -> dict:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text.decode())
        for s in f.samples
    }


def test_counters_and_histograms_are_summed_gauges_take_the_largest():
    a, b = ServeMetrics(), ServeMetrics()
    for _ in range(3):
        a.request("mlp", 1, "kserve", 200, 0.002)
    b.request("mlp", 1, "kserve", 200, 0.2)
    b.request("mlp", 1, "tfserving", 404, None)
    a.set_loaded("mlp", 1)
    b.set_loaded("mlp", 2)
    merged = _samples(merge_expositions([a.render()[0], b.render()[0]]))
    labels = (("model", "mlp"), ("protocol", "kserve"), ("status", "200"), ("version", "1"))
    assert merged[("ember_requests_total", labels)] == 4
    tf = (("model", "mlp"), ("protocol", "tfserving"), ("status", "404"), ("version", "1"))
    assert merged[("ember_requests_total", tf)] == 1
    hist = (("model", "mlp"), ("protocol", "kserve"), ("version", "1"))
    assert merged[("ember_request_duration_seconds_count", hist)] == 4
    assert abs(merged[("ember_request_duration_seconds_sum", hist)] - 0.206) < 1e-9
    le = dict(hist + (("le", "0.0025"),))
    assert merged[("ember_request_duration_seconds_bucket", tuple(sorted(le.items())))] == 3
    assert merged[("ember_models_loaded", (("model", "mlp"),))] == 2


def test_created_timestamps_take_the_earliest_and_labels_are_escaped():
    a = b'# HELP x_total X.\n# TYPE x_total counter\nx_total{m="a\\"b"} 1.0\nx_created{m="a\\"b"} 5.0\n'
    b = b'# HELP x_total X.\n# TYPE x_total counter\nx_total{m="a\\"b"} 2.0\nx_created{m="a\\"b"} 3.0\n'
    merged = _samples(merge_expositions([a, b]))
    assert merged[("x_total", (("m", 'a"b'),))] == 3
    assert merged[("x_created", (("m", 'a"b'),))] == 3


def test_one_worker_is_left_as_it_is():
    a = ServeMetrics()
    a.request("mlp", 1, "kserve", 200, 0.01)
    assert _samples(merge_expositions([a.render()[0]])) == _samples(a.render()[0])
