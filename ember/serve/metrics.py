"""Prometheus metrics of one server, in its own ``CollectorRegistry`` (never the global one).

Label children are created once and cached, so the request hot path does one dict lookup and one
``inc``/``observe`` per metric. The histograms are ember's own (``_Histogram``: a bisect and two
additions, no lock; a request makes four observations) and are rendered in the Prometheus format
by a collector of the same registry; ``prometheus_client``'s take a lock and walk every bucket.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["ServeMetrics"]

_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class ServeMetrics:
    """Requests, latencies (queue, compute, total), batch sizes and loaded models.

    Metric names: ``ember_requests_total{model,version,protocol,status}``,
    ``ember_request_duration_seconds{model,version,protocol}``,
    ``ember_queue_duration_seconds{model,version}``,
    ``ember_compute_duration_seconds{model,version}``,
    ``ember_batch_size{model,version}`` (rows per model call), ``ember_models_loaded{model}``
    (versions serving), ``ember_model_version_state{model,version,state}`` (1 for the state each
    version is in: ``PENDING``, ``LOADING``, ``AVAILABLE``, ``FAILED``, ``UNLOADING``; unloaded
    versions drop out).

    Example:
        >>> metrics = ServeMetrics()
        >>> metrics.request("digits", 1, "kserve", 200, 0.002)
        >>> b"ember_requests_total" in metrics.render()[0]
        True
    """

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge

        self.registry = CollectorRegistry()
        r = self.registry
        self._requests = Counter(
            "ember_requests", "Inference requests.", ["model", "version", "protocol", "status"],
            registry=r,
        )  # fmt: skip
        self._latency = _Histogram(
            "ember_request_duration_seconds", "Request latency, end to end in the server.",
            ("model", "version", "protocol"), _LATENCY_BUCKETS,
        )  # fmt: skip
        self._queue = _Histogram(
            "ember_queue_duration_seconds", "Time a request waited in the batching queue.",
            ("model", "version"), _LATENCY_BUCKETS,
        )  # fmt: skip
        self._compute = _Histogram(
            "ember_compute_duration_seconds", "Model call time per batch.",
            ("model", "version"), _LATENCY_BUCKETS,
        )  # fmt: skip
        self._batch = _Histogram(
            "ember_batch_size", "Rows per model call (after dynamic batching).",
            ("model", "version"), _BATCH_BUCKETS,
        )  # fmt: skip
        r.register(_Collector([self._latency, self._queue, self._compute, self._batch]))
        self._loaded = Gauge(
            "ember_models_loaded", "Versions of the model that are serving.", ["model"], registry=r
        )
        self._state = Gauge(
            "ember_model_version_state",
            "1 for the state each version of a model is in (its reason: the status APIs).",
            ["model", "version", "state"], registry=r,
        )  # fmt: skip
        self._states: dict[tuple[str, str], str] = {}  # (model, version) -> state shown
        self._children: dict[tuple, Any] = {}

    def request(
        self, model: str, version: int | str, protocol: str, status: int, seconds: float | None
    ) -> None:
        """Counts one request and observes its latency (``seconds`` None: count only).

        Args:
            model: model name ("" when the request named no known model).
            version: version that served it ("" when none).
            protocol: ``kserve``, ``kserve-grpc``, ``tfserving``, ``torchserve``.
            status: HTTP status answered.
            seconds: end-to-end time in the server.
        """
        key = (model, version, protocol, status)
        children = self._children.get(key)
        if children is None:
            v = str(version)
            children = self._children[key] = (
                self._requests.labels(model, v, protocol, str(status)),
                self._latency.labels(model, v, protocol),
            )
        children[0].inc()
        if seconds is not None:
            children[1].observe(seconds)

    def observer(self, model: str, version: int) -> Callable[[int, list[float], float], None]:
        """Returns the batch callback of one model version (queue, compute, batch size)."""
        v = str(version)
        queue = self._queue.labels(model, v)
        compute = self._compute.labels(model, v)
        batch = self._batch.labels(model, v)

        def observe(rows: int, queued: list[float], seconds: float) -> None:
            batch.observe(rows)
            compute.observe(seconds)
            for q in queued:
                queue.observe(q)

        return observe

    def set_loaded(self, model: str, versions: int) -> None:
        """Sets how many versions of ``model`` are serving."""
        self._loaded.labels(model).set(versions)

    def set_states(self, model: str, states: dict[int, str]) -> None:
        """Shows the state of every version of ``model`` (``END`` ones are removed)."""
        shown = {(m, v) for m, v in self._states if m == model}
        for version, state in states.items():
            key = (model, str(version))
            old = self._states.get(key)
            if old == state:
                continue
            if old is not None:
                self._state.remove(model, key[1], old)
                del self._states[key]
            if state != "END":
                self._state.labels(model, key[1], state).set(1)
                self._states[key] = state
        for key in shown - {(model, str(v)) for v in states}:
            self._state.remove(model, key[1], self._states.pop(key))

    def forget_model(self, model: str) -> None:
        """Removes a model that left the repository from the per-model gauges."""
        self.set_states(model, {})
        try:
            self._loaded.remove(model)
        except KeyError:  # never set
            pass

    def render(self) -> tuple[bytes, str]:
        """Returns the exposition text and its content type for ``/metrics``."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _Child:
    """One label set of a histogram: bucket counts (not cumulative) and the sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # Called from the event loop thread only (requests and batch callbacks run there).
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value


class _Histogram:
    """A labelled Prometheus histogram without locks (see the module docstring)."""

    def __init__(self, name: str, doc: str, labels: tuple[str, ...], bounds: tuple) -> None:
        self.name, self.doc, self.labelnames = name, doc, labels
        self.bounds = tuple(float(b) for b in bounds)
        self.children: dict[tuple[str, ...], _Child] = {}

    def labels(self, *values: str) -> _Child:
        child = self.children.get(values)
        if child is None:
            child = self.children[values] = _Child(self.bounds)
        return child


class _Collector:
    def __init__(self, histograms: list[_Histogram]) -> None:
        self.histograms = histograms

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import HistogramMetricFamily
        from prometheus_client.utils import floatToGoString

        for h in self.histograms:
            family = HistogramMetricFamily(h.name, h.doc, labels=h.labelnames)
            for values, child in list(h.children.items()):
                counts, total, buckets = list(child.counts), 0, []
                for bound, count in zip((*h.bounds, float("inf")), counts):
                    total += count
                    buckets.append((floatToGoString(bound), total))
                family.add_metric(list(values), buckets, child.sum)
            yield family
