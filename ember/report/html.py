"""The training report: one self-contained HTML file (CSS, data and a small script inline; no network).

`write_report` and `render_report` turn loaded runs (`ember.report.run`: `Run`, `load_run`,
re-exported here) into the page: overview, environment and test metrics, charts (their data from
`ember.report.charts`, drawn as SVG in the page by `report.js`), confusion matrix, export parity,
hyper-parameters and model summary. Rendering is string formatting: a few milliseconds.
"""

from __future__ import annotations

import functools
import html
import json
import logging
import math
import os
from pathlib import Path
from typing import Any

from ember.report import charts
from ember.report.run import LOOKED_FOR, ReportError, Run, load_run, read_json  # noqa: F401

__all__ = ["ReportError", "Run", "load_run", "render_report", "write_report"]

log = logging.getLogger(__name__)

_MAX_MATRIX_CLASSES = 30


def write_report(
    run_dirs: str | os.PathLike | list[str | os.PathLike],
    output: str | os.PathLike | None = None,
    package_dir: str | os.PathLike | None = None,
    *,
    status: str | None = None,
) -> Path:
    """Write the HTML report of one or more runs (several runs overlay their curves).

    Args:
        run_dirs: one run directory or a list of them.
        output: the HTML file; default `<run_dir>/report.html` for one run, `./report.html` for
            several.
        package_dir: a model package (`ember.save`) whose export targets' parity figures to show.
        status: a line shown at the top, e.g. why training stopped.

    Returns:
        The path of the written report.

    Raises:
        ReportError: a directory is not a run, or `package_dir` is not a model package.

    Example:
        >>> ember.report.write_report("runs/default/version_0")  # doctest: +SKIP
        PosixPath('runs/default/version_0/report.html')
    """
    dirs = [run_dirs] if isinstance(run_dirs, (str, os.PathLike)) else list(run_dirs)
    if not dirs:
        raise ReportError("write_report needs at least one run directory. Received: []")
    runs = [load_run(d) for d in dirs]
    package = _load_package(Path(package_dir)) if package_dir is not None else None
    if output is None:
        output = runs[0].path / "report.html" if len(runs) == 1 else Path("report.html")
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_text(render_report(runs, package=package, status=status), encoding="utf-8")
    os.replace(tmp, output)
    log.info("Wrote the training report %s", output)
    return output


def render_report(
    runs: list[Run], *, package: dict | None = None, status: str | None = None
) -> str:
    """The report's HTML text for loaded runs (see `write_report`).

    Args:
        runs: loaded runs (`load_run`).
        package: a model package's ember.json, for the parity table.
        status: a line shown at the top.

    Returns:
        A complete HTML document.
    """
    title = "ember report: " + ", ".join(r.name for r in runs)
    body = [f"<h1>{_e(title)}</h1>", _overview(runs, status), _environment(runs), _tests(runs)]
    body.append(
        '<div id="ember-charts"><noscript><p>The charts are drawn by the page\'s script: allow '
        "JavaScript to see them (their data is in the ember-report-data JSON below).</p>"
        "</noscript></div>"
    )
    for run in runs:
        if run.confusion:
            body.append(_confusion_section(run, named=len(runs) > 1))
    if package is not None:
        body.append(_parity_section(package))
    body.append(_hparams_section(runs))
    body += [_summary_section(r, named=len(runs) > 1) for r in runs if r.record.get("summary")]
    chart_list = charts.charts(runs) if any(r.epochs or r.steps for r in runs) else []
    return _PAGE.format(
        title=_e(title),
        body="\n".join(b for b in body if b),
        data=_data_json(runs, package, chart_list),
        script=_script(),
    )


# -- sections ---------------------------------------------------------------------------------------
def _overview(runs: list[Run], status: str | None) -> str:
    rows = []
    for run in runs:
        planned = (run.record.get("hparams") or {}).get("max_epochs")
        done = len(run.epochs)
        note = "" if not planned or done >= planned else f" of {planned} planned (stopped early)"
        best, best_text = run.best_epoch, "-"
        if best is not None:
            value = run.history[run.monitor][run.x.index(best)]
            best_text = f"epoch {best} ({run.monitor} = {_num(value)})"
        cells = [
            run.name,
            run.record.get("model", "?"),
            f"{done}{note}" if done else "none",
            best_text,
        ]
        rows.append("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>")
    head = "<tr><th>run</th><th>model</th><th>epochs</th><th>best</th></tr>"
    banner = f'<p class="status">{_e(status)}</p>' if status else ""
    return f"{banner}<table>{head}{''.join(rows)}</table>"


_ENVIRONMENT = (
    ("ember", "ember"),
    ("torch", "torch"),
    ("python", "python"),
    ("platform", "platform"),
    ("device", "device"),
    ("seed", "seed"),
    ("batch_size", "batch size"),
    ("effective_batch_size", "effective batch size"),
    ("lr", "effective lr"),
    ("optimizer", "optimizer"),
    ("precision", "precision"),
)


def _environment(runs: list[Run]) -> str:
    """Versions, device, seed, batch size and learning rate, one column per run."""
    envs = [r.environment for r in runs]
    keys = [(k, label) for k, label in _ENVIRONMENT if any(k in e for e in envs)]
    if not keys:
        return ""
    head = "".join(f"<th>{_e(r.name)}</th>" for r in runs) if len(runs) > 1 else "<th></th>"
    rows = "".join(
        f"<tr><th>{_e(label)}</th>"
        + "".join(f"<td>{_e(_num(e.get(k, '-')))}</td>" for e in envs)
        + "</tr>"
        for k, label in keys
    )
    return f'<table class="environment"><tr><th>environment</th>{head}</tr>{rows}</table>'


def _tests(runs: list[Run]) -> str:
    """Test metrics (`ReportCallback(test_data=...)`), one row per run."""
    tested = [r for r in runs if r.test]
    if not tested:
        return ""
    keys = list(dict.fromkeys(k for r in tested for k in r.test))
    head = "<tr><th>test</th>" + "".join(f"<th>{_e(k)}</th>" for k in keys) + "</tr>"
    rows = "".join(
        f"<tr><td>{_e(r.name)}</td>"
        + "".join(f"<td>{_e(_num(r.test.get(k, '-')))}</td>" for k in keys)
        + "</tr>"
        for r in tested
    )
    return f'<table class="test">{head}{rows}</table>'


def _confusion_section(run: Run, named: bool) -> str:
    matrix = run.confusion["matrix"]
    labels = [str(label) for label in run.confusion.get("labels") or range(len(matrix))]
    title = "Validation: confusion matrix and per-class scores" + (
        f" - {run.name}" if named else ""
    )
    parts = [f"<section><h2>{_e(title)}</h2>"]
    if len(labels) <= _MAX_MATRIX_CLASSES:
        parts.append(_matrix_table(matrix, labels))
    parts.append(_per_class_table(matrix, labels))
    return "".join(parts) + "</section>"


def _matrix_table(matrix: list[list[int]], labels: list[str]) -> str:
    peak = max((max(row) for row in matrix if row), default=0) or 1
    head = "<tr><th>true \\ predicted</th>" + "".join(f"<th>{_e(x)}</th>" for x in labels) + "</tr>"
    rows = []
    for label, row in zip(labels, matrix):
        cells = "".join(
            f'<td class="cm" style="background: rgba(59,130,246,{0.85 * v / peak:.2f})">{v}</td>'
            for v in row
        )
        rows.append(f"<tr><th>{_e(label)}</th>{cells}</tr>")
    return f'<table class="confusion">{head}{"".join(rows)}</table>'


def _per_class_table(matrix: list[list[int]], labels: list[str]) -> str:
    head = "<tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>"
    rows = []
    for i, label in enumerate(labels):
        tp = matrix[i][i]
        predicted = sum(row[i] for row in matrix)
        support = sum(matrix[i])
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        cells = [label, f"{precision:.3f}", f"{recall:.3f}", f"{f1:.3f}", str(support)]
        rows.append("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>")
    return f'<table class="per-class">{head}{"".join(rows)}</table>'


def _parity_section(package: dict) -> str:
    targets = package.get("targets") or {}
    if not targets:
        return (
            "<section><h2>Export parity</h2><p>The package has no export targets yet.</p></section>"
        )
    keys = sorted({k for info in targets.values() for k, v in info.items() if _scalar(v)})
    head = "<tr><th>target</th>" + "".join(f"<th>{_e(k)}</th>" for k in keys) + "</tr>"
    rows = [
        f"<tr><td>{_e(t)}</td>"
        + "".join(f"<td>{_e(_num(info.get(k)))}</td>" for k in keys)
        + "</tr>"
        for t, info in targets.items()
    ]
    name = package.get("name") or ""
    return (
        f"<section><h2>Export parity: {_e(name)}</h2>"
        f'<table class="parity">{head}{"".join(rows)}</table></section>'
    )


def _hparams_section(runs: list[Run]) -> str:
    params = [(r.record.get("hparams") or {}) for r in runs]
    keys = list(dict.fromkeys(k for p in params for k in p))
    if not keys:
        return ""
    head = (
        "<tr><th>hyper-parameter</th>" + "".join(f"<th>{_e(r.name)}</th>" for r in runs) + "</tr>"
    )
    rows = []
    for key in keys:
        values = [_num(p.get(key, "-")) for p in params]
        differs = ' class="differs"' if len(set(values)) > 1 else ""
        rows.append(
            f"<tr{differs}><td>{_e(key)}</td>"
            + "".join(f"<td>{_e(v)}</td>" for v in values)
            + "</tr>"
        )
    return f"<section><h2>Hyper-parameters</h2><table>{head}{''.join(rows)}</table></section>"


def _summary_section(run: Run, named: bool) -> str:
    title = "Model summary" + (f" - {run.name}" if named else "")
    return f"<section><h2>{_e(title)}</h2><pre>{_e(run.record['summary'])}</pre></section>"


# -- helpers ----------------------------------------------------------------------------------------
def _load_package(path: Path) -> dict:
    manifest = path / "ember.json"
    if not manifest.is_file():
        raise ReportError(
            f"--package expects a model package directory (written by ember.save) holding "
            f"ember.json. Received: {str(path)!r}, which has no ember.json."
        )
    return read_json(manifest)


def _data_json(runs: list[Run], package: dict | None, chart_list: list[dict]) -> str:
    data = {
        "charts": chart_list,
        "runs": [
            {
                "name": r.name,
                "history": r.history,
                "epochs": r.epochs,
                "epoch_info": r.epoch_info,
                "best_epoch": r.best_epoch,
                "confusion": r.confusion,
            }
            for r in runs
        ],
        "targets": (package or {}).get("targets"),
    }
    # Strict JSON for the browser (NaN and infinity become null); "</" would end the <script>
    # element early.
    text = json.dumps(_finite(data), default=str, allow_nan=False, separators=(",", ":"))
    return text.replace("</", "<\\/")


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


@functools.cache
def _script() -> str:
    # Read once per process: the page draws its charts with it (no library, no network).
    return (Path(__file__).with_name("report.js")).read_text(encoding="utf-8")


def _scalar(v: Any) -> bool:
    return isinstance(v, (int, float, str, bool)) or v is None


def _num(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _e(text: Any) -> str:
    return html.escape(str(text))


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<title>{title}</title>
<style>
:root {{ --fg: #1f2328; --bg: #ffffff; --muted: #6e7781; --line: #d0d7de; --hi: #fff8c5; }}
@media (prefers-color-scheme: dark) {{
  :root {{ --fg: #e6edf3; --bg: #0d1117; --muted: #8d96a0; --line: #30363d; --hi: #3b2e00; }}
}}
body {{ font: 14px/1.45 system-ui, sans-serif; color: var(--fg); background: var(--bg);
  margin: 0 auto; padding: 1em 2em; max-width: 1400px; }}
h1 {{ font-size: 1.5em; }} h2 {{ font-size: 1.15em; border-bottom: 1px solid var(--line); }}
table {{ border-collapse: collapse; margin: .5em 0 1em; }}
td, th {{ border: 1px solid var(--line); padding: .2em .6em; text-align: left; }}
td.cm {{ text-align: right; min-width: 2em; }}
tr.differs {{ background: var(--hi); }}
pre {{ border: 1px solid var(--line); padding: .8em; overflow-x: auto; }}
.grid {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(480px, 1fr)); gap: 1em; }}
figure.plot {{ margin: 0; min-width: 0; }}
.plot-head {{ display: flex; justify-content: space-between; align-items: center; }}
.plot-title {{ color: var(--muted); font-size: 1.05em; }}
.plot-box {{ position: relative; }}
.plot-box svg {{ width: 100%; height: auto; display: block; user-select: none; cursor: crosshair; }}
.plot-box svg text {{ fill: var(--muted); font-size: 11px; }}
.plot-box svg .axis-title {{ fill: var(--fg); }}
.plot-box svg .grid {{ stroke: var(--line); stroke-width: .6; }}
.plot-box svg .frame {{ fill: none; stroke: var(--muted); stroke-opacity: .6; }}
.plot-box svg .best-line {{ stroke: var(--muted); stroke-dasharray: 2 3; }}
.plot-box svg .cursor {{ stroke: var(--muted); }}
.plot-box svg .band {{ fill: #3b82f6; fill-opacity: .15; }}
.tip {{ position: absolute; pointer-events: none; background: var(--bg); border: 1px solid var(--line);
  padding: .3em .5em; font-size: 12px; white-space: nowrap; box-shadow: 0 1px 4px rgba(0,0,0,.2); }}
.tip-x {{ color: var(--muted); }}
.legend {{ display: flex; flex-wrap: wrap; gap: .2em .8em; font-size: 12px; }}
.legend-item {{ background: none; border: 0; color: var(--fg); cursor: pointer; padding: 0; font: inherit; }}
.legend-item.off {{ opacity: .4; text-decoration: line-through; }}
.swatch {{ display: inline-block; width: 1.4em; border-top: 2px solid; margin-right: .3em;
  vertical-align: middle; }}
.swatch.dashed {{ border-top-style: dashed; }}
.plot-controls {{ font-size: 12px; color: var(--muted); }}
button.reset {{ font-size: 11px; }}
.status {{ border-left: 4px solid #ef4444; padding: .4em .8em; }}
</style></head>
<body>
{body}
<script type="application/json" id="ember-report-data">{data}</script>
<script>{script}</script>
</body></html>
"""
