"""The Trainer: one fit loop for ember models and plain torch modules, with fixed hook points.

The Trainer owns one `LoopState` (`loop_state`: position, epoch sums, loaders); what a checkpoint
holds to resume is in `resume`, the module's steps and optimizers in `steps.Steps`, the evaluation
and prediction loops in `evaluation`, and the checks and defaults for the Trainer's arguments in
`trainer_setup`.
"""

from __future__ import annotations

import itertools
import logging
import math
import operator
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ember.train import evaluation, resume, trainer_setup
from ember.train.backup import BackupAndRestore
from ember.train.batches import batch_mover, batch_size, example_input, materialize
from ember.train.budget import TimeBudget
from ember.train.callbacks import Callback, CallbackRunner
from ember.train.deferred_dynamo import deferred_dynamo
from ember.train.distributed import get_strategy
from ember.train.history import History
from ember.train.loggers import Logger
from ember.train.loop_state import LoopState, epoch_info, norm_tags, prepare_loader
from ember.train.model_checkpoint import ModelCheckpoint
from ember.train.precision import Precision
from ember.train.run_dir import share_run_dir, write_run_record
from ember.train.steps import Steps, bind_train_step
from ember.train.strategies import SingleDevice
from ember.train.trainer_setup import default_callbacks, make_loggers, nan_message

__all__ = ["Trainer"]

log = logging.getLogger(__name__)

# The largest share of training time the per-layer weight and gradient norms may take: with
# epochs over ~0.1 s they are computed after every epoch, with shorter ones every few epochs.
_NORM_BUDGET = 0.001


def _loop_field(name: str, doc: str) -> property:
    """A Trainer attribute kept in its `LoopState` (callbacks read and set these)."""
    return property(
        operator.attrgetter(f"loop.{name}"),  # C-level getter: callbacks read some per batch
        lambda self, value: setattr(self.loop, name, value),
        doc=doc,
    )


class Trainer:
    """Train, validate and predict with any `ember.Model` or compiled `torch.nn.Module`.

    Args:
        max_epochs: epochs to train (default 1000 when `max_steps` is not set either).
        max_steps: stop after this many optimizer steps.
        accelerator: "auto", "cpu", "cuda" or "mps".
        strategy: "auto", "single_device", "ddp", "fsdp" or a Strategy object (DDPStrategy(...)):
            see docs/distributed.md. "auto" is DDP when more than one process runs.
        devices: processes (devices) per node, or "auto" (torchrun's count, else 1). Outside
            torchrun, devices > 1 re-runs the script in that many processes.
        num_nodes: machines in the job (start multi-node jobs with torchrun).
        precision: "32", "16-mixed" or "bf16-mixed".
        accumulate_grad_batches: batches per optimizer step.
        gradient_clip_val: clip the gradient norm (or values, see `gradient_clip_algorithm`).
        gradient_clip_algorithm: "norm" or "value".
        compile: run the model through `torch.compile`.
        callbacks: `Callback` objects.
        logger: True (TensorBoard), False (none), a Logger or a list of Loggers.
        default_root_dir: root of run directories when `logger` is True or False.
        name: the run name (`<default_root_dir>/<name>/version_N`).
        seed: seed every RNG; a run with the same seed is reproducible. None picks one (recorded).
        deterministic: use torch's deterministic algorithms.
        log_every_n_steps: how often the per-step training loss is logged.
        enable_progress_bar: show a progress bar (plain lines when not a TTY).
        enable_checkpointing: add a `ModelCheckpoint` (last + best) when none is given.
        enable_report: write `report.html` (curves, confusion matrix, norms) into the run dir.
        terminate_on_nan: stop with an error when the loss becomes NaN or infinite.
        limit_train_batches: use only this many training batches per epoch (for quick runs).
        limit_val_batches: use only this many validation batches per evaluation.
        fast_dev_run: True (or n) runs 1 (or n) training and validation batches in one epoch,
            with no logger, checkpoints or report: a quick check that the code runs end to end.
        overfit_batches: train on the same first n batches every epoch (in order, unshuffled) and
            validate on the first n validation batches: a model that cannot overfit them has a bug.

    Example:
        >>> trainer = ember.Trainer(max_epochs=5, precision="bf16-mixed", seed=0)
        >>> history = trainer.fit(model, train_loader, val_loader)
    """

    current_epoch = _loop_field("epoch", "The current epoch (0-based).")
    global_step = _loop_field("global_step", "Optimizer steps taken in this fit.")
    batch_in_epoch = _loop_field("batch_in_epoch", "Batches of the current epoch done.")
    num_train_batches = _loop_field("num_batches", "Batches in this epoch (None: unknown).")
    should_stop = _loop_field("should_stop", "Set to True to stop the fit after this epoch.")
    at_step_boundary = _loop_field(
        "at_step_boundary", "The batch just done ended an optimizer step (accumulation)."
    )
    train_loader = _loop_field("train_loader", "The running fit's training loader.")
    val_loader = _loop_field("val_loader", "The running fit's validation loader (or None).")

    def __init__(
        self,
        max_epochs: int | None = None,
        max_steps: int | None = None,
        accelerator: str = "auto",
        strategy: Any = "auto",
        devices: int | str = "auto",
        num_nodes: int = 1,
        precision: Any = "32",
        accumulate_grad_batches: int = 1,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str = "norm",
        compile: bool = False,
        callbacks: list[Callback] | None = None,
        logger: Any = True,
        default_root_dir: str | Path = "runs",
        name: str = "default",
        seed: int | None = None,
        deterministic: bool = False,
        log_every_n_steps: int = 50,
        enable_progress_bar: bool = True,
        enable_checkpointing: bool = True,
        enable_report: bool = True,
        terminate_on_nan: bool = True,
        limit_train_batches: int | None = None,
        limit_val_batches: int | None = None,
        fast_dev_run: bool | int = False,
        overfit_batches: int = 0,
    ) -> None:
        trainer_setup.check_arguments(
            accumulate_grad_batches, log_every_n_steps, gradient_clip_algorithm
        )
        dev_run = trainer_setup.check_batch_limits(
            limit_train_batches, limit_val_batches, fast_dev_run, overfit_batches
        )
        if dev_run:  # Lightning's fast_dev_run: n batches, one epoch, nothing written
            max_epochs, max_steps = 1, None
            limit_train_batches = limit_val_batches = dev_run
            logger = enable_checkpointing = enable_report = False
        if overfit_batches:
            limit_train_batches = limit_val_batches = overfit_batches
        if max_epochs is None and max_steps is None:
            max_epochs = 1000
        self.max_epochs, self.max_steps = max_epochs, max_steps
        self.strategy = get_strategy(strategy, accelerator, devices, num_nodes)
        self.device = self.strategy.device
        self.precision = Precision(precision, self.device)
        self.accumulate_grad_batches = accumulate_grad_batches
        self.gradient_clip_val = gradient_clip_val
        self.gradient_clip_algorithm = gradient_clip_algorithm
        self.compile = compile
        self.seed = seed
        self.deterministic = deterministic
        self.log_every_n_steps = log_every_n_steps
        self.terminate_on_nan = terminate_on_nan
        self.limit_train_batches, self.limit_val_batches = limit_train_batches, limit_val_batches
        self.fast_dev_run, self.overfit_batches = dev_run, overfit_batches
        self.loggers = make_loggers(logger, default_root_dir, name)
        self._run_dir = self.loggers[0] if self.loggers else Logger(default_root_dir, name)
        progress = enable_progress_bar and self.strategy.is_global_zero
        self.callbacks = default_callbacks(
            callbacks,
            progress,
            enable_checkpointing,
            enable_report and self.strategy.is_global_zero,
        )
        self.history = History()
        self._history_written: int | None = None  # epochs in the history.json last written
        self.loop = LoopState()  # position, epoch sums, loaders: saved with every checkpoint
        self.logged_metrics: dict[str, float] = {}
        self.optimizer: torch.optim.Optimizer | None = None
        self.hparams: dict[str, Any] = {}

    # -- public properties used by callbacks ------------------------------------------------------
    @property
    def log_dir(self) -> Path:
        """This run's directory (TensorBoard files, checkpoints, history.json, report)."""
        return self._run_dir.log_dir

    @property
    def is_global_zero(self) -> bool:
        return self.strategy.is_global_zero

    @property
    def checkpoint_callback(self) -> ModelCheckpoint | None:
        return next((c for c in self.callbacks if isinstance(c, ModelCheckpoint)), None)

    # -- fit ------------------------------------------------------------------------------------
    def fit(
        self,
        model: nn.Module,
        train_data: Any,
        val_data: Any = None,
        *,
        ckpt_path: str | Path | None = None,
    ) -> History:
        """Train `model`; resume from `ckpt_path` ("last" or a checkpoint directory) if given.

        Args:
            model: an `ember.Model`, or a `torch.nn.Module` compiled with `ember.compile`.
            train_data: a DataLoader (or Dataset) of (inputs, targets) batches.
            val_data: validation batches, evaluated after every epoch.
            ckpt_path: "last" (the newest complete checkpoint of this run name) or a path.

        Returns:
            The History of per-epoch metrics.
        """
        # An eager, one-process fit runs torch.optim without importing torch._dynamo (~1 s).
        eager = not self.compile and isinstance(self.strategy, SingleDevice)
        with deferred_dynamo(eager):
            return self._fit(model, train_data, val_data, ckpt_path)

    def _fit(self, model: nn.Module, train_data: Any, val_data: Any, ckpt_path: Any) -> History:
        steps = Steps(model)
        backup = next((c for c in self.callbacks if isinstance(c, BackupAndRestore)), None)
        if ckpt_path is None and backup is not None:
            ckpt_path = backup.latest()  # None: no backup yet, a fresh start
        ckpt = self._find_checkpoint(ckpt_path) if ckpt_path is not None else None
        share_run_dir(self._run_dir, self.loggers, self.strategy)
        trainer_setup.seed_run(self, ckpt)
        if self.overfit_batches:
            train_data = trainer_setup.first_batches(train_data, self.overfit_batches)
        train_loader = self._prepare_loader(train_data, shuffle=True)
        val_loader = None
        if val_data is not None:
            val_loader = self._prepare_loader(val_data, shuffle=False)
        self.loop.train_loader, self.loop.val_loader = train_loader, val_loader
        self._setup_model(steps, train_loader)
        if ckpt is not None:
            resume.restore(self, ckpt, module=steps.module, callbacks=self._runner)
        self._start_logging(steps, train_loader, resumed=ckpt is not None)
        runner, loop = self._runner, self.loop
        try:
            runner.call("on_fit_start", self, model)
            while not self._done():
                self._train_epoch(steps, train_loader)
                if loop.should_stop and loop.batch_in_epoch:
                    break  # max_steps reached mid-epoch
                logs = self._end_epoch(steps, val_loader)
                runner.call("on_epoch_end", self, model, logs)
                loop.end_epoch()
        except BaseException as exc:
            self._write_history(failing=True)
            runner.call("on_exception", self, model, exc)
            self._finish_logging(final=False)
            raise
        self._write_history()  # complete before on_fit_end: the report reads it
        runner.call("on_fit_end", self, model)
        self._finish_logging(final=True)
        return self.history

    @property
    def is_last_epoch(self) -> bool:
        """In the current epoch's hooks: whether `fit` stops after this epoch."""
        return self._done(epochs_done=self.current_epoch + 1)

    def _done(self, epochs_done: int | None = None) -> bool:
        """Whether the loop stops once `epochs_done` epochs (default: those counted so far) ran."""
        loop = self.loop
        epochs = loop.epoch if epochs_done is None else epochs_done
        return (
            loop.should_stop
            or (self.max_steps is not None and loop.global_step >= self.max_steps)
            or (self.max_epochs is not None and epochs >= self.max_epochs)
        )

    def _prepare_loader(self, data: Any, shuffle: bool) -> Any:
        rank, world_size = self.strategy.rank, self.strategy.world_size
        return prepare_loader(
            data, shuffle=shuffle, seed=self.seed, rank=rank, world_size=world_size
        )

    def _find_checkpoint(self, ckpt_path: str | Path) -> Any:
        cb = self.checkpoint_callback
        return resume.find_checkpoint(
            ckpt_path,
            strategy=self.strategy,
            run_dir=self._run_dir,
            loggers=self.loggers,
            checkpoint_dir=cb.dirpath if cb is not None else None,
        )

    def _setup_model(self, steps: Steps, train_loader: Any) -> None:
        self._steps = steps
        materialize(steps.module, train_loader, self.device)
        steps.forward_module = self.strategy.setup_module(steps.module)
        self._norm_tags = norm_tags(steps.module)
        self._norm_budget = TimeBudget(_NORM_BUDGET)
        step = steps.train_step or bind_train_step(steps.module)
        step = self.strategy.wrap_step(steps.module, step)
        steps.train_step = self.precision.wrap_step(step)
        if self.compile:  # torch's Module.compile: an ember.Model's own compile() is Keras'
            nn.Module.compile(steps.module)
        self.optimizer, self.scheduler, self.scheduler_interval, self.scheduler_monitor = (
            steps.configure_optimizers()
        )
        self._runner = CallbackRunner(self.callbacks)
        self.history = History()
        self._history_written = None
        self.loop.reset()
        self.hparams = {**steps.hparams(), **trainer_setup.trainer_hparams(self)}

    # -- one epoch ------------------------------------------------------------------------------
    def _train_epoch(self, steps: Steps, loader: Any) -> None:
        module, runner, state = steps.module, self._runner, self.loop
        loader = state.begin_epoch(
            loader, seed=self.seed, limit=self.limit_train_batches, device=self.device
        )
        module.train()
        runner.call("on_train_epoch_start", self, module)
        # Read once: on a small model every lookup or call per batch costs about 0.1 %.
        per_batch = runner.has("on_train_batch_end")
        acc, optimizer, step = self.accumulate_grad_batches, self.optimizer, steps.train_step
        check_nan, log_every, max_steps = (
            self.terminate_on_nan,
            self.log_every_n_steps,
            self.max_steps,
        )
        on_cpu, num_batches = self.device.type == "cpu", state.num_batches
        to_device, backward = batch_mover(self.device), self.precision.backward
        clip, optimizer_step = self.gradient_clip_val is not None, self.precision.step
        step_scheduler = self.scheduler if self.scheduler_interval == "step" else None
        add_step_loss = state.step_losses.add
        batches = enumerate(loader, start=state.batch_in_epoch)
        if self.limit_train_batches is not None:  # no batch past the limit is even read
            batches = itertools.islice(
                batches, max(0, self.limit_train_batches - state.batch_in_epoch)
            )
        for batch_idx, batch in batches:
            if not on_cpu:  # data loaders produce CPU tensors
                batch = to_device(batch)
            if batch_idx % acc == 0:
                optimizer.zero_grad(set_to_none=True)
            logs = step(batch)  # under autocast in mixed precision (Precision.wrap_step)
            loss, n = logs["loss"], batch_size(batch)
            if on_cpu:  # one scalar read per step, free on CPU: checks and sums the loss
                value = loss.item()
                if check_nan and not math.isfinite(value):
                    raise FloatingPointError(nan_message(loss, state.epoch, batch_idx))
                state.loss_sum += value * n
            else:  # a read would stall the accelerator every step: check at the log interval
                if check_nan and batch_idx % log_every == 0 and not math.isfinite(loss.item()):
                    raise FloatingPointError(nan_message(loss, state.epoch, batch_idx))
                state.loss_sum += loss.detach() * n
            backward(loss / acc if acc > 1 else loss)
            state.samples += n
            state.batch_in_epoch = done = batch_idx + 1
            state.at_step_boundary = done % acc == 0 or done == num_batches
            if state.at_step_boundary:  # one optimizer step
                if clip:
                    self._clip_gradients(steps)
                optimizer_step(optimizer)
                state.global_step = global_step = state.global_step + 1
                if step_scheduler is not None:
                    step_scheduler.step()
                if global_step % log_every == 0:
                    self.log_metrics({"step/loss": value if on_cpu else loss.item()})
                add_step_loss(global_step, value if on_cpu else loss)
            if per_batch:
                runner.call("on_train_batch_end", self, module, logs, batch_idx)
                if state.should_stop:  # a callback stopped the fit mid-epoch (TerminateOnNaN)
                    break
            if max_steps is not None and state.global_step >= max_steps:
                state.should_stop = True
                break

    def _clip_gradients(self, steps: Steps) -> None:
        self.precision.unscale(self.optimizer)
        params = steps.module.parameters()
        if self.gradient_clip_algorithm == "norm":
            torch.nn.utils.clip_grad_norm_(params, self.gradient_clip_val)
        else:
            torch.nn.utils.clip_grad_value_(params, self.gradient_clip_val)

    def _end_epoch(self, steps: Steps, val_loader: Any) -> dict[str, float]:
        logs = {"loss": self.loop.mean_loss(self.strategy, self.device)}
        logs.update(steps.compute_metrics("train", self.strategy))
        self._runner.call("on_train_epoch_end", self, steps.module)
        if val_loader is not None:
            val_logs = self._validate(steps, val_loader)
            logs.update({f"val_{k}": v for k, v in val_logs.items()})
            self._runner.call("on_validation_end", self, steps.module, logs)
        logs["lr"] = self.optimizer.param_groups[0]["lr"]
        final, sharded = self.is_last_epoch, self.strategy.shards_parameters
        # Norms within their time budget (sharded: every epoch, all ranks gather together).
        if sharded or final or self._norm_budget.due():
            with self._norm_budget.timed():
                info = epoch_info(self.loop, self._norm_tags, sharded=sharded)
        else:
            info = epoch_info(self.loop, [], sharded=False)  # time and throughput only
        self.history.append(self.current_epoch, logs, info)
        self.logged_metrics.update(logs)
        self.log_metrics({**logs, **info["norms"]}, step=self.current_epoch)
        if self.is_global_zero and not self.strategy.shards_parameters:
            for logger in self.loggers:
                logger.log_histograms(steps.module, self.current_epoch, final=final)
        self._step_epoch_scheduler(logs)
        if self.is_global_zero:
            for logger in self.loggers:
                logger.flush()
        return logs

    def _write_history(self, failing: bool = False) -> None:
        """Write history.json (rank 0); while fit fails, a write error must not hide fit's own."""
        if not self.is_global_zero or self.fast_dev_run:
            return
        epochs = len(self.history.epochs)
        if epochs == self._history_written:  # already on disk (the final checkpoint wrote it)
            return
        try:
            self.history.write(self.log_dir / "history.json")
            self._history_written = epochs
        except OSError as exc:
            if not failing:
                raise
            log.warning("history.json not written: %s", exc)

    def _step_epoch_scheduler(self, logs: dict[str, float]) -> None:
        if self.scheduler is None or self.scheduler_interval != "epoch":
            return
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            if self.scheduler_monitor not in logs:
                raise KeyError(
                    f"ReduceLROnPlateau monitors {self.scheduler_monitor!r}, which was not logged. "
                    f"Available: {', '.join(sorted(logs))}"
                )
            self.scheduler.step(logs[self.scheduler_monitor])
        else:
            self.scheduler.step()

    # -- evaluation and prediction --------------------------------------------------------------
    def validate(self, model: nn.Module, data: Any) -> dict[str, float]:
        """Evaluate `model` on `data`; returns {"loss": ..., metric: ...}."""
        steps = Steps(model)
        steps.forward_module = self.strategy.setup_module(model)
        loader = self._prepare_loader(data, shuffle=False)
        return self._validate(steps, loader)

    def test(self, model: nn.Module, data: Any) -> list[dict[str, float]]:
        """Evaluate `model` on held-out test data, as Lightning's `trainer.test`.

        Returns:
            A list with one dict per data set (Lightning's shape), its keys prefixed with
            "test_": `test_loss` and each compiled metric, e.g. `test_accuracy`.

        Example:
            >>> trainer.fit(model, train_loader, val_loader)
            >>> results = trainer.test(model, test_loader)
        """
        results = {f"test_{k}": v for k, v in self.validate(model, data).items()}
        log.info("Test: %s", ", ".join(f"{k}={v:.4g}" for k, v in results.items()))
        return [results]

    def lr_find(self, model: nn.Module, train_data: Any, **kwargs: Any) -> Any:
        """Run the learning-rate range test on this Trainer's device; see `ember.train.lr_find`."""
        from ember.train.lr_finder import lr_find

        return lr_find(model, train_data, device=self.device, **kwargs)

    def _validate(self, steps: Steps, loader: Any) -> dict[str, float]:
        if self.limit_val_batches is not None:
            loader = itertools.islice(loader, self.limit_val_batches)
        kwargs = dict(device=self.device, precision=self.precision, strategy=self.strategy)
        return evaluation.evaluate(steps, loader, "val", **kwargs)

    def predict(self, model: nn.Module, data: Any) -> torch.Tensor:
        """Run `predict_step` over `data` and concatenate the outputs along dim 0."""
        steps = Steps(model)
        steps.forward_module = self.strategy.setup_module(model)
        loader = self._prepare_loader(data, shuffle=False)
        return evaluation.predict(steps, loader, device=self.device, precision=self.precision)

    # -- checkpoints and logging ----------------------------------------------------------------
    def save_checkpoint(self, path: str | Path, epoch_done: bool = False) -> Path:
        """Write a checkpoint directory with everything needed to resume exactly.

        Args:
            path: the checkpoint directory (replaced atomically if it exists).
            epoch_done: the current epoch is finished: resume at the next epoch's start.
        """
        module, callbacks = self._steps.module, self._runner
        saved = resume.save(self, Path(path), epoch_done, module=module, callbacks=callbacks)
        # history.json as of this checkpoint: after a crash, even kill -9, the run directory's
        # history matches the checkpoint fit resumes from (fit writes it complete when it ends).
        self._write_history()
        return saved

    def copy_checkpoint(self, src: str | Path, dst: str | Path) -> Path:
        """Make `dst` a copy of checkpoint `src` (rank 0 writes; hard links, no second write)."""
        if self.is_global_zero:
            from ember.train.checkpoint import copy_checkpoint

            copy_checkpoint(src, dst)
        self.strategy.barrier()
        return Path(dst)

    def remove_checkpoint(self, path: str | Path) -> None:
        """Delete a checkpoint directory (rank 0 only)."""
        if self.is_global_zero:
            shutil.rmtree(path, ignore_errors=True)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Send values to every logger (rank 0 only); `step` defaults to the global step."""
        if not self.is_global_zero:
            return
        step = self.global_step if step is None else step
        for logger in self.loggers:
            logger.log_metrics(metrics, step)

    def _start_logging(self, steps: Steps, loader: Any, resumed: bool) -> None:
        if not self.is_global_zero or self.fast_dev_run:  # a dev run writes no files
            return
        sharded = self.strategy.shards_parameters
        write_run_record(
            self.log_dir, self.hparams, steps.module, loader, device=self.device, sharded=sharded
        )
        for logger in self.loggers:
            logger.start(resume_step=self.global_step if resumed else None)
            logger.log_hyperparams(self.hparams)
            if not resumed and not self.strategy.shards_parameters:  # rank 0 alone cannot gather
                logger.log_graph(steps.module, example_input(loader, self.device))

    def _finish_logging(self, final: bool) -> None:
        if not self.is_global_zero:
            return
        final_metrics = {k: v for k, v in self.logged_metrics.items() if "/" not in k}
        for logger in self.loggers:
            logger.finalize(final_metrics if final else {})
