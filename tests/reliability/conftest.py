"""The figures the reliability tests measured, printed at the end of the session.

The serve fixtures (``repo_dir``, ``server`` ...) and the server-process and load helpers come
from tests/plugins (registered in tests/conftest.py). Scale every count by the
``reliability_scale`` fixture (``--reliability-scale N``; CI uses 1, ``make reliability`` 10).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

_FIGURES: dict[str, Any] = {}


@pytest.fixture
def figures() -> dict[str, Any]:
    """Figures a test measured (requests, errors, kills ...): printed at the end of the session."""
    return _FIGURES


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _FIGURES:
        return
    terminalreporter.section("reliability figures")
    for key in sorted(_FIGURES):
        terminalreporter.write_line(f"{key}: {json.dumps(_FIGURES[key])}")
