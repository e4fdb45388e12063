"""Loggers: TensorBoard event files and CSV, under `<save_dir>/<name>/version_<N>/`."""

from __future__ import annotations

import csv
import logging
import re
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ember.train.arguments import check_seconds
from ember.train.budget import TimeBudget

__all__ = ["Logger", "TensorBoardLogger", "CSVLogger", "keras_tag", "next_version", "share_version"]

log = logging.getLogger(__name__)

_HISTOGRAM_BINS = 30


def next_version(root: Path) -> int:
    """The first unused `version_N` number under `root`."""
    found = [
        int(m.group(1))
        for p in root.glob("version_*")
        if (m := re.fullmatch(r"version_(\d+)", p.name))
    ]
    return max(found, default=-1) + 1


def share_version(loggers: list[Logger]) -> None:
    """Give loggers of one experiment (same `save_dir` and `name`) the first one's version.

    Without this, a TensorBoardLogger and a CSVLogger of one run would each take the next free
    number and write into two different `version_N` directories.

    Args:
        loggers: the run's loggers; those with `version=None` are updated in place.

    Example:
        >>> tb, csv = TensorBoardLogger("runs"), CSVLogger("runs")
        >>> share_version([tb, csv]); assert tb.log_dir == csv.log_dir
    """
    versions: dict[Path, Any] = {}
    for logger in loggers:
        if logger.version is None and logger.root_dir in versions:
            logger.version = versions[logger.root_dir]
        elif logger.root_dir not in versions:
            _ = logger.log_dir  # resolves (and creates) the version directory
            versions[logger.root_dir] = logger.version


class Logger:
    """Base logger: a run directory and no-op hooks. Subclasses write somewhere.

    Args:
        save_dir: the root of all runs (default "runs").
        name: the experiment name (a sub-directory).
        version: an int (version_<N>), a string (used as is) or None for the next free number.
    """

    def __init__(self, save_dir: str | Path = "runs", name: str = "default", version: Any = None):
        self.root_dir = Path(save_dir) / name
        self.version = version
        self._created: Path | None = None  # read after every epoch: mkdir only once

    @property
    def log_dir(self) -> Path:
        """This run's directory, created on first use."""
        if self.version is None:
            self.version = next_version(self.root_dir)
        sub = self.version if isinstance(self.version, str) else f"version_{self.version}"
        path = self.root_dir / sub
        if path != self._created:
            path.mkdir(parents=True, exist_ok=True)
            self._created = path
        return path

    def start(self, resume_step: int | None = None) -> None:
        """Open files; `resume_step` drops events logged after a resumed checkpoint."""

    def log_hyperparams(self, params: dict) -> None: ...

    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...

    def log_graph(self, model: nn.Module, example_input: Any) -> None: ...

    def log_histograms(self, model: nn.Module, step: int, final: bool = False) -> None:
        """Weight and gradient histograms after epoch `step`; `final`: the last epoch of `fit`."""

    def flush(self) -> None:
        """Write what was logged to disk. The Trainer calls it after every epoch; a logger may
        write less often (TensorBoard: at most every `flush_secs`)."""

    def finalize(self, final_metrics: dict[str, float]) -> None: ...


class TensorBoardLogger(Logger):
    """Write TensorBoard event files (scalars, histograms, graph, hparams) with torch's SummaryWriter.

    The layout is Keras's: training values go to the `train/` run directory, validation values
    to `validation/`, under the same tags, so TensorBoard draws a metric's two curves on one
    chart: `epoch_loss`, `epoch_accuracy`, `epoch_learning_rate` per epoch (step = epoch),
    `batch_loss` per optimizer step (step = global step). Tags holding a "/" (`norm/...`,
    `hparam/...`) and histograms, graph and hparams go to `train/` as they are.

    Args:
        save_dir, name, version: see `Logger`.
        histogram_every_n_epochs: weight and gradient histograms every n epochs (0 disables).
        histogram_budget: the largest share of training time histograms may take (0.001 = 0.1%).
            When epochs are much shorter than the histograms' cost allows, some epochs get none
            (the first and the last epoch of `fit` always do); None writes them every n
            epochs whatever they cost.
        log_graph: write the model graph (traced with the first batch; a dict batch's inputs are
            the model's named arguments, as in training).
        flush_secs: scalars are kept and handed to TensorBoard's writer thread in one batch at
            most this often (it appends them to the file while training goes on; a running
            `tensorboard` shows them then): the first log call or epoch end after this long
            since the last batch. 0 writes each at once and waits for it. `fit` ends with
            everything on disk, also when it fails.

    Example:
        >>> ember.Trainer(logger=TensorBoardLogger("runs", name="digits"))
        >>> # then: tensorboard --logdir runs
    """

    def __init__(
        self,
        save_dir: str | Path = "runs",
        name: str = "default",
        version: Any = None,
        histogram_every_n_epochs: int = 1,
        histogram_budget: float | None = 0.001,
        log_graph: bool = True,
        flush_secs: float = 2.0,
    ) -> None:
        super().__init__(save_dir, name, version)
        self.histogram_every_n_epochs = histogram_every_n_epochs
        self._histogram_budget = TimeBudget(histogram_budget, "histogram_budget")
        self.log_graph_enabled = log_graph
        self.flush_secs = check_seconds("flush_secs", flush_secs)
        self._flushed = 0.0  # time.monotonic() of the last flush
        self._pending: list[tuple[int, dict[str, float]]] = []  # scalars not yet written
        self._writer = None  # train/
        self._val_writer = None  # validation/, opened when the first validation value comes
        self._purge_step: int | None = None
        self._hparams: dict = {}

    def start(self, resume_step: int | None = None) -> None:
        _use_fast_crc32c()
        self._purge_step = resume_step
        self._writer = self._open("train")
        self._flushed = time.monotonic()

    def _open(self, run: str) -> Any:
        from torch.utils.tensorboard import SummaryWriter  # lazy: imports tensorboard

        # A deep event queue: with the default (10) every add_scalar waits on TensorBoard's
        # writer thread, which costs more per epoch than a short epoch's training. That thread
        # also flushes the file every `flush_secs` by itself.
        return SummaryWriter(
            str(self.log_dir / run),
            purge_step=self._purge_step,
            max_queue=10_000,
            flush_secs=max(self.flush_secs, 0.001),
        )

    def log_hyperparams(self, params: dict) -> None:
        self._hparams = {k: _hparam_value(v) for k, v in params.items()}

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        # Kept, then written in a batch every `flush_secs`: right after a training step an event
        # written alone costs ~0.1 ms (cold caches), in a batch a tenth of that.
        self._pending.append((step, dict(metrics)))
        self.flush()  # writes only once `flush_secs` have passed

    def _write_pending(self) -> None:
        from tensorboard.compat.proto.summary_pb2 import Summary

        pending, self._pending = self._pending, []
        for step, metrics in pending:
            # One event per run holding its values (what add_scalar writes, in one record).
            runs: dict[bool, list] = {False: [], True: []}
            for key, value in metrics.items():
                validation, tag = keras_tag(key)
                runs[validation].append(Summary.Value(tag=tag, simple_value=float(value)))
            if runs[False]:
                self._writer.file_writer.add_summary(Summary(value=runs[False]), step)
            if runs[True]:
                if self._val_writer is None:
                    self._val_writer = self._open("validation")
                self._val_writer.file_writer.add_summary(Summary(value=runs[True]), step)

    def log_graph(self, model: nn.Module, example_input: Any) -> None:
        if not self.log_graph_enabled:
            return
        import warnings

        try:
            with warnings.catch_warnings():  # the trace is only drawn: shape checks are harmless
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                # Traced once per model and input shape, without add_graph's second checking
                # trace: a later fit of the same model reuses it.
                from ember.train.model_graph import model_graph

                self._writer.file_writer.add_graph(model_graph(model, example_input))
        except Exception as exc:  # tracing fails for some models; the run must go on
            log.warning("TensorBoard graph not written: the model could not be traced (%s).", exc)

    def log_histograms(self, model: nn.Module, step: int, final: bool = False) -> None:
        n = self.histogram_every_n_epochs
        if not n or step % n or not (final or self._histogram_budget.due()):
            return
        with self._histogram_budget.timed():
            self._write_histograms(model, step)

    def _write_histograms(self, model: nn.Module, step: int) -> None:
        from tensorboard.compat.proto.summary_pb2 import HistogramProto, Summary

        from ember.train.histograms import histograms

        tags, tensors = [], []
        for name, p in model.named_parameters():
            tags.append(f"weights/{name}")
            tensors.append(p)
            if p.grad is not None:
                tags.append(f"gradients/{name}")
                tensors.append(p.grad)
        # One fused pass for every tensor, and one event holding every histogram (the protos
        # add_histogram_raw writes, in one record instead of one per tensor).
        values = []
        for tag, h in zip(tags, histograms(tensors, bins=_HISTOGRAM_BINS)):
            if h is None:  # no finite value: the other histograms are still written
                continue
            # Histogram's fields are HistogramProto's, one for one.
            values.append(Summary.Value(tag=tag, histo=HistogramProto(**vars(h))))
        if values:
            self._writer.file_writer.add_summary(Summary(value=values), step)

    def flush(self, force: bool = False) -> None:
        # The kept values go to TensorBoard's writer thread, which appends each event to the file
        # as it arrives (opening and closing the file each time, ~70 us an event): the loop waits
        # for it only at the end of fit (`force`) or when asked to (`flush_secs=0`).
        if self._writer is None:
            return
        if force or time.monotonic() - self._flushed >= self.flush_secs:
            self._write_pending()
            if force or not self.flush_secs:
                self._writer.flush()
                if self._val_writer is not None:
                    self._val_writer.flush()
            self._flushed = time.monotonic()

    def finalize(self, final_metrics: dict[str, float]) -> None:
        if self._writer is None:
            return
        if self._hparams:
            from torch.utils.tensorboard.summary import hparams

            metrics = {f"hparam/{k}": v for k, v in final_metrics.items()}
            # Written into this run's own file (SummaryWriter.add_hparams would make a sub-run).
            for summary in hparams(self._hparams, metrics):
                self._writer.file_writer.add_summary(summary)
            for k, v in metrics.items():
                self._writer.add_scalar(k, v, 0)
        self.flush(force=True)
        self._writer.close()
        if self._val_writer is not None:
            self._val_writer.close()
        self._writer = self._val_writer = None


def keras_tag(key: str) -> tuple[bool, str]:
    """Where a logged value goes in Keras's layout: (in `validation/`?, tag).

    Example:
        >>> keras_tag("val_accuracy"), keras_tag("loss"), keras_tag("step/loss")
        ((True, 'epoch_accuracy'), (False, 'epoch_loss'), (False, 'batch_loss'))
    """
    if key.startswith("step/"):
        return False, "batch_" + _KERAS_NAMES.get(key[5:], key[5:])
    if "/" in key:
        return False, key
    if key.startswith("val_"):
        return True, "epoch_" + _KERAS_NAMES.get(key[4:], key[4:])
    return False, "epoch_" + _KERAS_NAMES.get(key, key)


_KERAS_NAMES = {"lr": "learning_rate"}


def _hparam_value(value: Any) -> Any:
    if isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    return str(value)


class CSVLogger(Logger):
    """Write `metrics.csv` (one row per logging call: step plus the values) and `hparams.csv`.

    Example:
        >>> ember.Trainer(logger=[TensorBoardLogger(), CSVLogger()])
    """

    def start(self, resume_step: int | None = None) -> None:
        self._rows: list[dict] = []
        path = self.log_dir / "metrics.csv"
        if resume_step is not None and path.exists():
            with path.open(newline="") as f:
                self._rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]

    def log_hyperparams(self, params: dict) -> None:
        with (self.log_dir / "hparams.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["name", "value"])
            writer.writerows((k, _hparam_value(v)) for k, v in params.items())

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self._rows.append({"step": step, **metrics})

    def finalize(self, final_metrics: dict[str, float]) -> None:
        self.flush()

    def flush(self) -> None:
        keys: list[str] = ["step"]
        for row in self._rows:
            keys += [k for k in row if k not in keys]
        with (self.log_dir / "metrics.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(self._rows)


def _use_fast_crc32c() -> bool:
    """Make TensorBoard checksum event records with google-crc32c's C code instead of pure Python.

    Without TensorFlow, tensorboard's record writer computes CRC32C byte by byte in Python: about
    90 us per histogram record, held under the GIL in its writer thread, which competes with the
    training loop after every epoch. The C implementation gives the same checksums ~100x faster.
    Returns whether the fast implementation is in use (False when google-crc32c is missing).
    """
    try:
        import google_crc32c
    except ImportError:
        return False
    if google_crc32c.implementation != "c":
        return False
    from tensorboard.summary.writer import record_writer

    def masked_crc32c(data: bytes) -> int:  # tensorboard's masking, on the C checksum
        x = google_crc32c.value(bytes(data))
        return (((x >> 15) | (x << 17)) + 0xA282EAD8) & 0xFFFFFFFF

    record_writer.masked_crc32c = masked_crc32c
    return True
