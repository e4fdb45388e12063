"""`import ember` and `ember --help` do not import torch; every public name resolves on use."""

from __future__ import annotations

import subprocess
import sys

import ember


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys; print(' '.join(sys.modules))"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return set(out.stdout.split())


def test_import_ember_and_the_cli_help_leave_torch_unimported():
    assert "torch" not in _modules_after("import ember")
    help_run = (
        "import contextlib, io\nfrom ember.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n        main(['--help'])\n    except SystemExit:\n        pass"
    )
    assert "torch" not in _modules_after(help_run)
    assert "torch" in _modules_after("import ember\nember.Sequential")


def test_every_public_name_resolves():
    assert sorted(ember.__all__) == sorted(["__version__", *ember._LAZY])
    for name in ember.__all__:
        assert getattr(ember, name) is not None, name
    assert set(ember.__all__) <= set(dir(ember))
    assert callable(ember.export) and ember.export.__name__ == "ember.export"
