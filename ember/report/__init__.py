"""The training report: `report.html` of a run (curves, speed, norms, confusion matrix, parity).

`fit` writes it into the run directory at the end of every run (`ReportCallback`); `ember report`
and `write_report` write it for one or several runs.

Example:
    >>> from ember.report import write_report
    >>> write_report(["runs/a/version_0", "runs/b/version_0"], "compare.html")  # doctest: +SKIP
"""

from ember.report.callback import ReportCallback, confusion_matrix
from ember.report.html import ReportError, Run, load_run, render_report, write_report

__all__ = [
    "ReportCallback",
    "ReportError",
    "Run",
    "confusion_matrix",
    "load_run",
    "render_report",
    "write_report",
]
