"""The report's charts as data: which lines each chart shows, built from loaded runs.

The page draws them (inline SVG, `report.js`); here they are plain dicts that go into the page's
embedded JSON, so the report costs no plotting library in the training process:

    {"id": "loss", "title": "loss", "x_label": "epoch", "y_label": "loss", "log_y": False,
     "best": 3, "smooth": False,
     "series": [{"id": "series-loss-loss-0", "label": "train", "x": [1, 2, 3],
                 "y": [0.9, 0.5, 0.4], "color": "#3b82f6", "dashed": False, "best": None,
                 "data": {"run": "tiny/version_0", "metric": "loss"}}]}

The drawn page gives each line's `<g class="series">` element the line's `data` plus its
`values` and `epochs` (x) as `data-*` attributes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

__all__ = ["PALETTE", "charts", "metric_charts", "norm_charts", "step_charts", "timing_charts"]

# Mid-luminance colours: readable on white and on near-black backgrounds.
PALETTE = ("#3b82f6", "#f97316", "#10b981", "#ef4444", "#a855f7", "#eab308", "#06b6d4", "#ec4899")


def charts(runs: Sequence) -> list[dict[str, Any]]:
    """Every chart of the report, in page order: metrics, per-step loss, timing, norms.

    Args:
        runs: loaded runs (`ember.report.run.Run`); several runs overlay their lines.

    Returns:
        Chart dicts (see the module docstring), each tagged with its `section`.

    Example:
        >>> [c["id"] for c in charts([load_run("runs/default/version_0")])]  # doctest: +SKIP
        ['loss', 'accuracy', 'step_loss', 'lr', 'epoch_time', 'samples_per_sec', ...]
    """
    out = [_in("Loss and metrics", c) for c in metric_charts(runs)]
    out += [_in("Loss and metrics", c) for c in step_charts(runs)]
    out += [_in("Learning rate and speed", c) for c in timing_charts(runs)]
    for run in runs:
        section = "Weight and gradient norms" + (f" - {run.name}" if len(runs) > 1 else "")
        out += [_in(section, c) for c in norm_charts(run, with_name=len(runs) > 1)]
    return out


def metric_charts(runs: Sequence) -> list[dict[str, Any]]:
    """One chart per metric (loss first): train solid, validation dashed, best epoch starred.

    Example:
        >>> metric_charts([run])[0]["series"][1]["data"]["metric"]  # doctest: +SKIP
        'val_loss'
    """
    out = []
    for name in _metric_names(runs):
        series = []
        for i, run in enumerate(runs):
            prefix = f"{run.name} " if len(runs) > 1 else ""
            for key, dashed in ((name, False), (f"val_{name}", True)):
                if key not in run.history:
                    continue
                best = run.best_epoch if (dashed or f"val_{name}" not in run.history) else None
                series.append(
                    _series(
                        name,
                        key,
                        len(series),
                        prefix + ("val" if dashed else "train"),
                        run.x,
                        run.history[key],
                        PALETTE[i % len(PALETTE)],
                        dashed=dashed,
                        best=best,
                        data={"run": run.name, "metric": key},
                    )
                )
        best_line = runs[0].best_epoch if len(runs) == 1 else None
        out.append(_chart(name, name, "epoch", name, series, best=best_line))
    return out


def step_charts(runs: Sequence) -> list[dict[str, Any]]:
    """The training loss per step (what `ReportCallback` recorded), smoothed in the page.

    Example:
        >>> step_charts([run])[0]["smooth"]  # doctest: +SKIP
        True
    """
    series = []
    for i, run in enumerate(runs):
        steps = run.steps or {}
        if not steps.get("loss"):
            continue
        series.append(
            _series(
                "step_loss",
                "loss",
                len(series),
                run.name if len(runs) > 1 else "train",
                steps["step"],
                steps["loss"],
                PALETTE[i % len(PALETTE)],
                data={"run": run.name, "metric": "step/loss", "every": steps.get("every", 1)},
            )
        )
    if not series:
        return []
    return [_chart("step_loss", "loss per step", "step", "loss", series, smooth=True)]


def timing_charts(runs: Sequence) -> list[dict[str, Any]]:
    """Learning rate, seconds per epoch and samples per second, one line per run.

    Example:
        >>> [c["id"] for c in timing_charts([run])]  # doctest: +SKIP
        ['lr', 'epoch_time', 'samples_per_sec']
    """
    out = []
    for title, y_label, metric in (
        ("learning rate", "lr", "lr"),
        ("time per epoch", "seconds", "epoch_time"),
        ("throughput", "samples/s", "samples_per_sec"),
    ):
        series = []
        for i, run in enumerate(runs):
            values = run.history.get(metric) or run.info_values(metric)
            if any(_finite(v) for v in values):
                series.append(
                    _series(
                        metric,
                        y_label,
                        len(series),
                        run.name,
                        run.x,
                        values,
                        PALETTE[i % len(PALETTE)],
                        data={"run": run.name, "metric": metric},
                    )
                )
        if series:
            log_y = _spread(series) > 20
            out.append(_chart(metric, title, "epoch", y_label, series, log_y=log_y))
    return out


def norm_charts(run, *, with_name: bool = False) -> list[dict[str, Any]]:
    """Weight and gradient L2 norms per layer over time, on a log scale.

    A layer's norm is the norm of all its parameters together (weight and bias). Gradients that
    shrink by orders of magnitude from the last layer to the first (vanishing) or grow without
    bound (exploding) stand out at a glance.

    Example:
        >>> [c["title"] for c in norm_charts(run)]  # doctest: +SKIP
        ['weight norm per layer', 'gradient norm per layer']
    """
    out = []
    for kind in ("weight", "grad"):
        layers = run.layer_norms(kind)
        if not layers:
            continue
        title = f"{'gradient' if kind == 'grad' else 'weight'} norm per layer"
        if with_name:
            title += f" ({run.name})"
        series = []
        for i, (layer, values) in enumerate(layers.items()):
            # Short epochs get norms every few epochs (their time budget): join those points.
            points = [(x, v) for x, v in zip(run.x, values) if v is not None]
            series.append(
                _series(
                    title,
                    f"{kind}-{layer}",
                    i,
                    layer,
                    [x for x, _ in points],
                    [v for _, v in points],
                    PALETTE[i % len(PALETTE)],
                    dashed=i >= len(PALETTE),
                    data={"layer": layer, "kind": kind},
                )
            )
        chart_id = f"norm-{kind}-{run.name}"
        log_y = _all_positive(series)
        out.append(_chart(chart_id, title, "epoch", "L2 norm", series, log_y=log_y))
    return out


# -- helpers ----------------------------------------------------------------------------------------
def _chart(
    chart_id: str,
    title: str,
    x_label: str,
    y_label: str,
    series: list[dict],
    *,
    log_y: bool = False,
    best: int | None = None,
    smooth: bool = False,
) -> dict[str, Any]:
    return {
        "id": _slug(chart_id),
        "title": title,
        "x_label": x_label,
        "y_label": y_label,
        "log_y": log_y,
        "best": best,
        "smooth": smooth,
        "series": series,
    }


def _series(
    chart: str,
    key: str,
    index: int,
    label: str,
    x: Sequence[int],
    y: Sequence[float | None],
    color: str,
    *,
    dashed: bool = False,
    best: int | None = None,
    data: dict | None = None,
) -> dict[str, Any]:
    # Non-finite values are gaps (JSON has no NaN or infinity).
    return {
        "id": f"series-{_slug(chart)}-{_slug(key)}-{index}",
        "label": label,
        "x": list(x),
        "y": [float(v) if _finite(v) else None for v in y],
        "color": color,
        "dashed": dashed,
        "best": best,
        "data": data or {},
    }


def _in(section: str, chart: dict) -> dict:
    chart["section"] = section
    return chart


def _metric_names(runs: Sequence) -> list[str]:
    names: list[str] = []
    for run in runs:
        for key in run.history:
            base = key[4:] if key.startswith("val_") else key
            if base != "lr" and base not in names:
                names.append(base)
    return sorted(names, key=lambda n: (n != "loss", names.index(n)))


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "s"


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _all_positive(series: Sequence[dict]) -> bool:
    values = [v for s in series for v in s["y"] if v is not None]
    return bool(values) and min(values) > 0


def _spread(series: Sequence[dict]) -> float:
    values = [abs(v) for s in series for v in s["y"] if v is not None and v != 0]
    return max(values) / min(values) if values else 1.0
