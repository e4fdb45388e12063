"""A training run as the report reads it: the run directory's files, loaded into a `Run`.

A run directory (`runs/<name>/version_N/`) holds what the Trainer wrote: `history.json` (after every
epoch), `run.json` (hyper-parameters, model summary), and, from `ReportCallback`, `confusion.json`
and `report.json` (the loss per step, the environment, test metrics).
`load_run` reads whatever of these a run (even a crashed one) left behind.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["LOOKED_FOR", "ReportError", "Run", "load_run", "read_json"]

LOOKED_FOR = (
    "history.json (per-epoch metrics, written by fit after every epoch)",
    "run.json (hyper-parameters and model summary, written when fit starts)",
)


class ReportError(ValueError):
    """A report input is not what it should be: not a run directory, not a model package."""


@dataclass
class Run:
    """One run directory, loaded.

    Attributes:
        path: the run directory.
        name: `<name>/version_N`.
        history: {metric: [value per epoch]} from history.json ({} when no epoch finished).
        epochs: the epoch indices recorded (0-based, as in history.json).
        epoch_info: per epoch: `epoch_time`, `samples_per_sec`, `norms`.
        record: run.json ({} when missing).
        confusion: confusion.json ({"labels", "matrix"}) or None.
        steps: the training loss per step ({"step": [...], "loss": [...], "every": n}) or None.
        environment: versions, device, seed, batch size, learning rate ({} when not recorded).
        test: test metrics ({} when none were computed).
    """

    path: Path
    name: str
    history: dict[str, list] = field(default_factory=dict)
    epochs: list[int] = field(default_factory=list)
    epoch_info: list[dict] = field(default_factory=list)
    record: dict = field(default_factory=dict)
    confusion: dict | None = None
    steps: dict | None = None
    environment: dict = field(default_factory=dict)
    test: dict = field(default_factory=dict)

    @property
    def x(self) -> list[int]:
        """Epoch numbers as the report shows them: counted from 1."""
        return [e + 1 for e in self.epochs]

    @property
    def monitor(self) -> str | None:
        """The value that picks the best epoch: val_loss, else loss."""
        return next((k for k in ("val_loss", "loss") if k in self.history), None)

    @property
    def best_epoch(self) -> int | None:
        """The epoch (counted from 1) with the lowest `monitor` value, or None."""
        values = self.history.get(self.monitor, []) if self.monitor else []
        finite = [(v, x) for v, x in zip(values, self.x) if v is not None and math.isfinite(v)]
        return min(finite)[1] if finite else None

    def info_values(self, key: str) -> list[float | None]:
        return [info.get(key) for info in self.epoch_info]

    def layer_norms(self, kind: str) -> dict[str, list[float | None]]:
        """{layer: [norm per epoch]}: the L2 norm of the layer's parameters together."""
        prefix = f"norm/{kind}/"
        squares: dict[str, list[float | None]] = {}
        for i, info in enumerate(self.epoch_info):
            for key, value in (info.get("norms") or {}).items():
                if key.startswith(prefix):
                    layer = key[len(prefix) :].rsplit(".", 1)[0]
                    row = squares.setdefault(layer, [None] * len(self.epoch_info))
                    row[i] = (row[i] or 0.0) + float(value) ** 2
        return {k: [None if v is None else math.sqrt(v) for v in vs] for k, vs in squares.items()}


def load_run(run_dir: str | os.PathLike) -> Run:
    """Read a run directory; a run that crashed or stopped early loads what it logged.

    Args:
        run_dir: a directory written by `fit` (`runs/<name>/version_N`).

    Returns:
        The loaded `Run`.

    Raises:
        ReportError: the directory does not exist or holds neither history.json nor run.json.

    Example:
        >>> run = load_run("runs/default/version_0")  # doctest: +SKIP
        >>> min(run.history["val_loss"])  # doctest: +SKIP
    """
    path = Path(run_dir)
    if not path.is_dir():
        raise ReportError(f"Run directory {str(run_dir)!r} does not exist or is not a directory.")
    history_file, record_file = path / "history.json", path / "run.json"
    if not history_file.is_file() and not record_file.is_file():
        raise ReportError(_not_a_run_message(path))
    run = Run(path=path, name=_run_name(path))
    if history_file.is_file():
        state = read_json(history_file)
        run.history = {k: list(v) for k, v in state.get("history", {}).items()}
        run.epochs = list(state.get("epochs", []))
        run.epoch_info = list(state.get("epoch_info", [])) or [{} for _ in run.epochs]
    if record_file.is_file():
        run.record = read_json(record_file)
    if (path / "confusion.json").is_file():
        run.confusion = read_json(path / "confusion.json")
    if (path / "report.json").is_file():
        extra = read_json(path / "report.json")
        run.steps = extra.get("steps")
        run.environment = dict(extra.get("environment") or {})
        run.test = dict(extra.get("test") or {})
    return run


def read_json(file: Path) -> dict:
    """Parse a JSON file of a run or package; failures are a ReportError naming the file.

    Example:
        >>> read_json(Path("runs/default/version_0/history.json"))["epochs"]  # doctest: +SKIP
        [0, 1, 2]
    """
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ReportError(f"Cannot read {file}: {exc}") from exc


# -- helpers ----------------------------------------------------------------------------------------
def _not_a_run_message(path: Path) -> str:
    found = sorted(p.name for p in path.iterdir())[:10]
    versions = sorted(p.name for p in path.glob("version_*") if p.is_dir())
    hint = f" It holds runs: {', '.join(versions)}; pass one of those." if versions else ""
    return (
        f"{str(path)!r} is not a training run directory: looked for "
        + "; ".join(LOOKED_FOR)
        + f", found neither. It contains: {', '.join(found) or 'nothing'}.{hint}"
    )


def _run_name(path: Path) -> str:
    path = path.resolve()
    return f"{path.parent.name}/{path.name}" if path.name.startswith("version_") else path.name
