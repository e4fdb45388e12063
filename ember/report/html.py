"""The training report: one self-contained HTML file (inline SVG, CSS and data; no network).

`write_report` and `render_report` turn loaded runs (`ember.report.run`: `Run`, `load_run`,
re-exported here) into the page: overview, curves (`ember.report.plots`), confusion matrix,
export parity, hyper-parameters and model summary.
"""

from __future__ import annotations

import html
import json
import logging
import os
from pathlib import Path
from typing import Any

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
    from ember.report import plots

    title = "ember report: " + ", ".join(r.name for r in runs)
    body = [f"<h1>{_e(title)}</h1>", _overview(runs, status)]
    if any(r.epochs for r in runs):
        body += _section("Loss and metrics", plots.metric_figures(runs))
        body += _section("Learning rate and speed", plots.timing_figures(runs))
        for run in runs:
            body += _section(
                "Weight and gradient norms" + (f" - {run.name}" if len(runs) > 1 else ""),
                plots.norm_figures(run, with_name=len(runs) > 1),
            )
    for run in runs:
        if run.confusion:
            body.append(_confusion_section(run, named=len(runs) > 1))
    if package is not None:
        body.append(_parity_section(package))
    body.append(_hparams_section(runs))
    body += [_summary_section(r, named=len(runs) > 1) for r in runs if r.record.get("summary")]
    return _PAGE.format(title=_e(title), body="\n".join(body), data=_data_json(runs, package))


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


def _section(title: str, figures: list[str]) -> list[str]:
    if not figures:
        return []
    inner = "".join(f'<figure class="plot">{svg}</figure>' for svg in figures)
    return [f"<section><h2>{_e(title)}</h2><div class='grid'>{inner}</div></section>"]


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


def _data_json(runs: list[Run], package: dict | None) -> str:
    data = {
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
    # "</" would end the <script> element early.
    return json.dumps(data, default=str).replace("</", "<\\/")


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
figure.plot {{ margin: 0; }} figure.plot svg {{ max-width: 100%; height: auto; }}
figure.plot svg text {{ fill: var(--fg) !important; }}
.status {{ border-left: 4px solid #ef4444; padding: .4em .8em; }}
</style></head>
<body>
{body}
<script type="application/json" id="ember-report-data">{data}</script>
</body></html>
"""
