"""Matplotlib figures of a training run, rendered to inline SVG strings for the HTML report.

Every figure has a transparent background and neutral grey axes, so it reads on a light and on a
dark page. Each plotted line carries its exact values as data attributes
(`<g id="series-..." data-values="[...]" data-epochs="[...]">`), which lets a test (or a reader
with the browser's inspector) check the drawn curves against `history.json`.
"""

from __future__ import annotations

import html
import io
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["PALETTE", "Series", "line_figure", "metric_figures", "norm_figures", "timing_figures"]

# Mid-luminance colours: readable on white and on near-black backgrounds.
PALETTE = ("#3b82f6", "#f97316", "#10b981", "#ef4444", "#a855f7", "#eab308", "#06b6d4", "#ec4899")
_NEUTRAL = "#8a8a8a"
_SIZE = (5.6, 3.0)  # inches; at 72 dpi one SVG unit is one point


@dataclass
class Series:
    """One line of a figure.

    Attributes:
        label: the legend text.
        epochs: x values (epoch numbers, counted from 1).
        values: y values; None marks an epoch without a value (a gap in the line).
        color: a colour from `PALETTE`.
        dashed: draw dashed (validation curves).
        best: the epoch to mark with a star, or None.
        key: a short machine name used in the element id (`series-<title>-<key>-<index>`).
        extra: more JSON values written as `data-*` attributes of the line's element.
    """

    label: str
    epochs: Sequence[int]
    values: Sequence[float | None]
    color: str = PALETTE[0]
    dashed: bool = False
    best: int | None = None
    key: str = ""
    extra: dict = field(default_factory=dict)


def line_figure(
    title: str,
    series: Sequence[Series],
    *,
    ylabel: str = "",
    log_y: bool = False,
    best_epoch: int | None = None,
    legend: bool = True,
) -> str:
    """Draw `series` against the epoch and return the figure as an SVG string.

    Args:
        title: the figure title.
        series: the lines to draw (see `Series`).
        ylabel: the y axis label.
        log_y: a logarithmic y axis (norms, learning rates that decay by orders of magnitude).
        best_epoch: draw a dotted vertical line at this epoch.
        legend: show a legend.

    Returns:
        An `<svg>` element as text, without the XML prolog, ready to inline in HTML.

    Example:
        >>> svg = line_figure("loss", [Series("train", [1, 2, 3], [0.9, 0.5, 0.4])])
        >>> svg.startswith("<svg")
        True
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=_SIZE, dpi=72)
    try:
        _style(ax, title, ylabel)
        if best_epoch is not None:
            ax.axvline(best_epoch, color=_NEUTRAL, linestyle=":", linewidth=1.2, label="best epoch")
        attributes = {}
        for i, s in enumerate(series):
            gid = f"series-{_slug(title)}-{_slug(s.key or s.label)}-{i}"
            attributes[gid] = _draw(ax, s, gid)
        if log_y and _all_positive(series):
            ax.set_yscale("log")
        ax.xaxis.get_major_locator().set_params(integer=True)
        if legend and series:
            leg = ax.legend(fontsize=8, frameon=False, labelcolor=_NEUTRAL, loc="best")
            leg.set_zorder(5)
        return _to_svg(fig, attributes)
    finally:
        plt.close(fig)


def _pyplot():
    # matplotlib is the report extra's dependency: imported only when a report is drawn.
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _style(ax, title: str, ylabel: str) -> None:
    ax.set_title(title, color=_NEUTRAL, fontsize=11, loc="left")
    ax.set_xlabel("epoch", color=_NEUTRAL, fontsize=9)
    ax.set_ylabel(ylabel, color=_NEUTRAL, fontsize=9)
    ax.tick_params(colors=_NEUTRAL, labelsize=8)
    ax.grid(True, color=_NEUTRAL, alpha=0.25, linewidth=0.6)
    for spine in ax.spines.values():
        spine.set_color(_NEUTRAL)
        spine.set_alpha(0.6)
    ax.patch.set_alpha(0.0)
    ax.figure.patch.set_alpha(0.0)


def _draw(ax, s: Series, gid: str) -> dict:
    xs = [e for e, v in zip(s.epochs, s.values) if _finite(v)]
    ys = [float(v) for v in s.values if _finite(v)]
    (line,) = ax.plot(
        xs,
        ys,
        color=s.color,
        linestyle="--" if s.dashed else "-",
        linewidth=1.6,
        marker="o",
        markersize=3,
        label=s.label,
    )
    line.set_gid(gid)
    if s.best is not None and s.best in xs:
        star = ax.plot(
            [s.best],
            [ys[xs.index(s.best)]],
            marker="*",
            markersize=12,
            color=s.color,
            linestyle="none",
        )[0]
        star.set_gid(f"{gid}-best")
    return {"label": s.label, "epochs": xs, "values": ys, "best": s.best, **s.extra}


def _to_svg(fig, attributes: dict[str, dict]) -> str:
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "ember"}):
        # A fixed layout, not bbox_inches="tight": that draws the figure twice.
        fig.subplots_adjust(left=0.13, right=0.98, top=0.89, bottom=0.16)
        fig.savefig(buf, format="svg", transparent=True, metadata={"Date": None})
    svg = buf.getvalue()
    svg = svg[svg.index("<svg") :]
    svg = re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.S)  # rdf links, creator text
    for gid, data in attributes.items():
        attrs = " ".join(
            f"data-{k}='{html.escape(json.dumps(v), quote=True)}'"
            for k, v in data.items()
            if v is not None
        )
        svg = svg.replace(f'<g id="{gid}">', f'<g id="{gid}" class="series" {attrs}>', 1)
    return svg


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "s"


def _finite(v: float | None) -> bool:
    return v is not None and math.isfinite(float(v))


def _all_positive(series: Sequence[Series]) -> bool:
    values = [float(v) for s in series for v in s.values if _finite(v)]
    return bool(values) and min(values) > 0


# -- the report's figures, built from loaded runs (`ember.report.html.Run`) ------------------------
def metric_figures(runs: Sequence) -> list[str]:
    """One figure per metric (loss first): train solid, validation dashed, best epoch starred.

    Args:
        runs: loaded runs; several runs overlay their curves, one colour per run.

    Returns:
        SVG strings, one per metric.

    Example:
        >>> svgs = metric_figures([load_run("runs/default/version_0")])  # doctest: +SKIP
    """
    names = _metric_names(runs)
    figures = []
    for name in names:
        series = []
        for i, run in enumerate(runs):
            color = PALETTE[i % len(PALETTE)]
            prefix = f"{run.name} " if len(runs) > 1 else ""
            for key, dashed in ((name, False), (f"val_{name}", True)):
                if key in run.history:
                    best = run.best_epoch if (dashed or f"val_{name}" not in run.history) else None
                    series.append(
                        Series(
                            prefix + ("val" if dashed else "train"),
                            run.x,
                            run.history[key],
                            color,
                            dashed,
                            best,
                            key,
                            {"run": run.name, "metric": key},
                        )
                    )
        best_line = runs[0].best_epoch if len(runs) == 1 else None
        figures.append(line_figure(name, series, ylabel=name, best_epoch=best_line))
    return figures


def timing_figures(runs: Sequence) -> list[str]:
    """Learning rate, seconds per epoch and samples per second, each with one line per run.

    Args:
        runs: loaded runs.

    Returns:
        SVG strings for the quantities any run logged.
    """
    figures = []
    for title, ylabel, metric in (
        ("learning rate", "lr", "lr"),
        ("time per epoch", "seconds", "epoch_time"),
        ("throughput", "samples/s", "samples_per_sec"),
    ):
        series = [
            Series(
                run.name,
                run.x,
                values,
                PALETTE[i % len(PALETTE)],
                key=ylabel,
                extra={"run": run.name, "metric": metric},
            )
            for i, run in enumerate(runs)
            if (values := run.history.get(metric) or run.info_values(metric))
            and any(_finite(v) for v in values)
        ]
        if series:
            spread = _spread(series)
            figures.append(
                line_figure(title, series, ylabel=ylabel, log_y=spread > 20, legend=len(runs) > 1)
            )
    return figures


def norm_figures(run, *, with_name: bool = False) -> list[str]:
    """Weight and gradient L2 norms per layer over time, on a log scale.

    A layer's norm is the norm of all its parameters together (weight and bias). Gradients that
    shrink by orders of magnitude from the last layer to the first (vanishing) or grow without
    bound (exploding) stand out at a glance.

    Args:
        run: one loaded run.
        with_name: put the run's name in the titles (when a report shows several runs).

    Returns:
        Zero, one or two SVG strings (weights, gradients).
    """
    figures = []
    for kind in ("weight", "grad"):
        layers = run.layer_norms(kind)
        if not layers:
            continue
        series = [
            Series(
                layer,
                run.x,
                values,
                PALETTE[i % len(PALETTE)],
                key=f"{kind}-{layer}",
                dashed=i >= len(PALETTE),
                extra={"layer": layer, "kind": kind},
            )
            for i, (layer, values) in enumerate(layers.items())
        ]
        title = f"{'gradient' if kind == 'grad' else 'weight'} norm per layer"
        if with_name:
            title += f" ({run.name})"
        figures.append(
            line_figure(title, series, ylabel="L2 norm", log_y=True, legend=len(series) <= 12)
        )
    return figures


def _metric_names(runs: Sequence) -> list[str]:
    names: list[str] = []
    for run in runs:
        for key in run.history:
            base = key[4:] if key.startswith("val_") else key
            if base != "lr" and base not in names:
                names.append(base)
    return sorted(names, key=lambda n: (n != "loss", names.index(n)))


def _spread(series: Sequence[Series]) -> float:
    values = [abs(float(v)) for s in series for v in s.values if _finite(v) and float(v) != 0]
    return max(values) / min(values) if values else 1.0
