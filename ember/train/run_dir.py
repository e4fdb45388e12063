"""The run directory: one version shared by every rank, and `run.json` (what the report shows
besides the history: hyper-parameters, the model's summary)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from ember.train.batches import example_input

__all__ = ["share_run_dir", "write_run_record"]

log = logging.getLogger(__name__)


def share_run_dir(run_dir: Any, loggers: list, strategy: Any) -> None:
    """Give every rank rank 0's run directory (version numbers), so all write to the same run.

    Args:
        run_dir: the Logger naming the run directory; loggers: the Trainer's loggers.
        strategy: the Trainer's strategy (rank 0 decides, the others receive).
    """
    if strategy.is_global_zero:
        from ember.train.loggers import share_version

        share_version(loggers)  # a TensorBoard and a CSV logger: one version directory
    if strategy.world_size == 1:
        return
    runs = {id(run_dir): run_dir, **{id(x): x for x in loggers}}
    if strategy.is_global_zero:
        for run in runs.values():
            _ = run.log_dir  # resolves (and creates) the version
    versions = strategy.broadcast([r.version for r in runs.values()])
    for run, version in zip(runs.values(), versions):
        run.version = version


def write_run_record(
    log_dir: Path,
    hparams: dict[str, Any],
    module: torch.nn.Module,
    loader: Any,
    *,
    device: torch.device,
    sharded: bool,
) -> None:
    """Write `run.json` into `log_dir`: hyper-parameters, the model's class and its summary
    (traced on the first batch of `loader`; skipped when `sharded`, or when tracing fails)."""
    record = {"hparams": hparams, "model": type(module).__name__, "started": time.time()}
    try:
        if sharded:
            raise RuntimeError("a sharded model runs forward on every rank together")
        from ember.summary import summary

        record["summary"] = summary(module, example_input=example_input(loader, device))
    except Exception as exc:  # a summary is a nicety; never fail a run for it
        log.debug("No model summary for the run record: %s", exc)
    (log_dir / "run.json").write_text(json.dumps(record, default=str, indent=1))
