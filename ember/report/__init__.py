"""The training report: `report.html` of a run (curves, speed, norms, confusion matrix, parity).

This package only renders run directories; `ember report` and `write_report` write the report
for one or several runs. `fit` writes it into the run directory at the end of every run through
`ReportCallback`, a training callback (`ember.train.report_callback`), re-exported here.

Example:
    >>> from ember.report import write_report
    >>> write_report(["runs/a/version_0", "runs/b/version_0"], "compare.html")  # doctest: +SKIP
"""

from typing import Any

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

_FROM_TRAIN = ("ReportCallback", "confusion_matrix")


def __getattr__(name: str) -> Any:
    # lazy: the callback is training code (it imports ember.train, which imports this package's
    # html lazily); importing it here at the top would run an import back up from report to train.
    if name in _FROM_TRAIN:
        from ember.train import report_callback

        return getattr(report_callback, name)
    raise AttributeError(f"module 'ember.report' has no attribute {name!r}")
