"""Sums the Prometheus expositions of the workers of a group into one (what ``/metrics`` shows).

prometheus-client's multiprocess mode only covers its own metric classes and writes one mmap file
per process and metric; ember's histograms are its own (see ``ember.serve.metrics``). So each
worker renders its registry as usual, and the worker answering ``/metrics`` merges the texts:
counters, histogram buckets, sums and counts are added; gauges take the largest value (a gauge
such as ``ember_models_loaded`` says the same on every worker); ``*_created`` takes the earliest.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["merge_expositions"]


def merge_expositions(texts: Iterable[bytes | str]) -> bytes:
    """Merges Prometheus text expositions (one per worker) into one.

    Args:
        texts: ``/metrics`` bodies of the workers.

    Returns:
        One exposition in the Prometheus text format.

    Example:
        >>> a = b'# HELP x_total X.\\n# TYPE x_total counter\\nx_total{m="a"} 2.0\\n'
        >>> merge_expositions([a, a]).decode().splitlines()[-1]
        'x_total{m="a"} 4.0'
    """
    from prometheus_client.parser import text_string_to_metric_families

    families: dict[str, tuple[str, str, dict[tuple, float]]] = {}
    for text in texts:
        text = text.decode() if isinstance(text, bytes) else text
        for family in text_string_to_metric_families(text):
            _, _, samples = families.setdefault(
                family.name, (family.type, family.documentation, {})
            )
            for s in family.samples:
                key = (s.name, tuple(sorted(s.labels.items())))
                old = samples.get(key)
                samples[key] = (
                    s.value if old is None else _combine(family.type, s.name, old, s.value)
                )
    return _render(families).encode()


def _combine(kind: str, sample: str, old: float, new: float) -> float:
    if sample.endswith("_created"):
        return min(old, new)
    if kind == "gauge":
        return max(old, new)
    return old + new


def _render(families: dict[str, tuple[str, str, dict[tuple, float]]]) -> str:
    from prometheus_client.utils import floatToGoString

    lines = []
    for name, (kind, doc, samples) in families.items():
        doc = doc.replace("\\", r"\\").replace("\n", r"\n")
        lines += [f"# HELP {name} {doc}", f"# TYPE {name} {kind}"]
        for (sample, labels), value in samples.items():
            text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
            lines.append(f"{sample}{{{text}}} {floatToGoString(value)}" if labels
                         else f"{sample} {floatToGoString(value)}")  # fmt: skip
    return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
