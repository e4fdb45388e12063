"""The Trainer: one fit loop for ember models and plain torch modules, with fixed hook points.

The loop's state bookkeeping (resume, checkpoints, loaders) is in `loop_state`, the evaluation
and prediction loops in `evaluation`, and the checks and defaults for the Trainer's arguments in
`trainer_setup`.
"""

from __future__ import annotations

import itertools
import logging
import math
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ember.train import evaluation, loop_state, steps, trainer_setup
from ember.train.backup import BackupAndRestore
from ember.train.budget import TimeBudget
from ember.train.callbacks import Callback, CallbackRunner
from ember.train.distributed import get_strategy
from ember.train.history import History
from ember.train.loggers import Logger
from ember.train.model_checkpoint import ModelCheckpoint
from ember.train.precision import Precision
from ember.train.program import Program
from ember.train.trainer_setup import default_callbacks, make_loggers, nan_message

__all__ = ["Trainer"]

log = logging.getLogger(__name__)

_HISTORY_BUDGET = 0.001  # the largest share of training time spent writing history.json


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
        self.current_epoch = 0
        self.global_step = 0
        self.batch_in_epoch = 0
        self.num_train_batches: int | None = None
        self.should_stop = False
        self.at_step_boundary = True
        self.logged_metrics: dict[str, float] = {}
        self.optimizer: torch.optim.Optimizer | None = None
        self.train_loader: Any = None
        self.val_loader: Any = None
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
        program = Program(model)
        backup = next((c for c in self.callbacks if isinstance(c, BackupAndRestore)), None)
        if ckpt_path is None and backup is not None:
            ckpt_path = backup.latest()  # None: no backup yet, a fresh start
        ckpt = loop_state.find_checkpoint(self, ckpt_path) if ckpt_path is not None else None
        loop_state.share_run_dir(self)
        trainer_setup.seed_run(self, ckpt)
        if self.overfit_batches:
            train_data = trainer_setup.first_batches(train_data, self.overfit_batches)
        train_loader = loop_state.prepare_loader(self, train_data, shuffle=True)
        val_loader = None
        if val_data is not None:
            val_loader = loop_state.prepare_loader(self, val_data, shuffle=False)
        self.train_loader, self.val_loader = train_loader, val_loader
        self._setup_model(program, train_loader)
        if ckpt is not None:
            loop_state.restore(self, program, ckpt)
        self._start_logging(program, train_loader, resumed=ckpt is not None)
        runner = self._runner
        try:
            runner.call("on_fit_start", self, model)
            while not self._done():
                self._train_epoch(program, train_loader)
                if self.should_stop and self.batch_in_epoch:
                    break  # max_steps reached mid-epoch
                logs = self._end_epoch(program, val_loader)
                runner.call("on_epoch_end", self, model, logs)
                self.current_epoch += 1
                self.batch_in_epoch = 0
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
        epochs = self.current_epoch if epochs_done is None else epochs_done
        return (
            self.should_stop
            or (self.max_steps is not None and self.global_step >= self.max_steps)
            or (self.max_epochs is not None and epochs >= self.max_epochs)
        )

    def _setup_model(self, program: Program, train_loader: Any) -> None:
        self._program = program
        loop_state.materialize(program.module, train_loader, self.device)
        program.forward_module = self.strategy.setup_module(program.module)
        self._norm_tags = loop_state.norm_tags(program.module)
        step = program.train_step or steps.bind_train_step(program.module)
        step = self.strategy.wrap_step(program.module, step)
        program.train_step = self.precision.wrap_step(step)
        if self.compile:
            program.module.compile()
        self.optimizer, self.scheduler, self.scheduler_interval, self.scheduler_monitor = (
            program.configure_optimizers()
        )
        self._runner = CallbackRunner(self.callbacks)
        self.history = History()
        # history.json after an epoch while it costs under 0.1% of the time, and when fit ends.
        self._history_budget = TimeBudget(_HISTORY_BUDGET)
        self.current_epoch = self.global_step = self.batch_in_epoch = 0
        self.should_stop = False
        self.hparams = {**program.hparams(), **trainer_setup.trainer_hparams(self)}

    # -- one epoch ------------------------------------------------------------------------------
    def _train_epoch(self, program: Program, loader: Any) -> None:
        module, runner = program.module, self._runner
        loop_state.begin_epoch(self, loader)
        module.train()
        runner.call("on_train_epoch_start", self, module)
        # Read once: on a small model every lookup or call per batch costs about 0.1 %.
        per_batch = runner.has("on_train_batch_end")
        acc, optimizer, step = self.accumulate_grad_batches, self.optimizer, program.train_step
        limit, check_nan, log_every = (
            self.limit_train_batches,
            self.terminate_on_nan,
            self.log_every_n_steps,
        )
        on_cpu, num_batches = self.device.type == "cpu", self.num_train_batches
        to_device, backward = loop_state.batch_mover(self.device), self.precision.backward
        for batch_idx, batch in enumerate(loader, start=self.batch_in_epoch):
            if limit is not None and batch_idx >= limit:
                break
            if not on_cpu:  # data loaders produce CPU tensors
                batch = to_device(batch)
            if batch_idx % acc == 0:
                optimizer.zero_grad(set_to_none=True)
            logs = step(batch)  # under autocast in mixed precision (Precision.wrap_step)
            loss, n = logs["loss"], loop_state.batch_size(batch)
            if on_cpu:  # one scalar read per step, free on CPU: checks and sums the loss
                value = loss.item()
                if check_nan and not math.isfinite(value):
                    raise FloatingPointError(nan_message(loss, self.current_epoch, batch_idx))
                self._epoch_loss_sum += value * n
            else:  # a read would stall the accelerator every step: check at the log interval
                if check_nan and batch_idx % log_every == 0 and not math.isfinite(loss.item()):
                    raise FloatingPointError(nan_message(loss, self.current_epoch, batch_idx))
                self._epoch_loss_sum += loss.detach() * n
            backward(loss / acc if acc > 1 else loss)
            self._epoch_samples += n
            self.batch_in_epoch = done = batch_idx + 1
            self.at_step_boundary = done % acc == 0 or done == num_batches
            if self.at_step_boundary:
                self._optimizer_step(program, loss)
            if per_batch:
                runner.call("on_train_batch_end", self, module, logs, batch_idx)
                if self.should_stop:  # a callback stopped the fit mid-epoch (TerminateOnNaN)
                    break
            if self.max_steps is not None and self.global_step >= self.max_steps:
                self.should_stop = True
                break

    def _optimizer_step(self, program: Program, loss: torch.Tensor) -> None:
        if self.gradient_clip_val is not None:
            self.precision.unscale(self.optimizer)
            params = program.module.parameters()
            if self.gradient_clip_algorithm == "norm":
                torch.nn.utils.clip_grad_norm_(params, self.gradient_clip_val)
            else:
                torch.nn.utils.clip_grad_value_(params, self.gradient_clip_val)
        self.precision.step(self.optimizer)
        self.global_step += 1
        if self.scheduler is not None and self.scheduler_interval == "step":
            self.scheduler.step()
        if self.global_step % self.log_every_n_steps == 0:
            self.log_metrics({"step/loss": loss.item()})

    def _end_epoch(self, program: Program, val_loader: Any) -> dict[str, float]:
        logs = loop_state.epoch_train_logs(self, program)
        self._runner.call("on_train_epoch_end", self, program.module)
        if val_loader is not None:
            val_logs = self._validate(program, val_loader)
            logs.update({f"val_{k}": v for k, v in val_logs.items()})
            self._runner.call("on_validation_end", self, program.module, logs)
        logs["lr"] = self.optimizer.param_groups[0]["lr"]
        info = loop_state.epoch_info(self, self._norm_tags)
        self.history.append(self.current_epoch, logs, info)
        self.logged_metrics.update(logs)
        self.log_metrics({**logs, **info["norms"]}, step=self.current_epoch)
        final = self.is_last_epoch
        if self.is_global_zero and not self.strategy.shards_parameters:
            for logger in self.loggers:
                logger.log_histograms(program.module, self.current_epoch, final=final)
        self._step_epoch_scheduler(logs)
        if self.is_global_zero:
            # Within its time budget; fit writes it complete when it ends anyway.
            if not final and self._history_budget.due():
                with self._history_budget.timed():
                    self._write_history()
            for logger in self.loggers:
                logger.flush()
        return logs

    def _write_history(self, failing: bool = False) -> None:
        """Write history.json (rank 0); while fit fails, a write error must not hide fit's own."""
        if not self.is_global_zero or self.fast_dev_run:
            return
        try:
            self.history.write(self.log_dir / "history.json")
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
        program = Program(model)
        program.forward_module = self.strategy.setup_module(model)
        loader = loop_state.prepare_loader(self, data, shuffle=False)
        return self._validate(program, loader)

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

    def _validate(self, program: Program, loader: Any) -> dict[str, float]:
        if self.limit_val_batches is not None:
            loader = itertools.islice(loader, self.limit_val_batches)
        kwargs = dict(device=self.device, precision=self.precision, strategy=self.strategy)
        return evaluation.evaluate(program, loader, "val", **kwargs)

    def predict(self, model: nn.Module, data: Any) -> torch.Tensor:
        """Run `predict_step` over `data` and concatenate the outputs along dim 0."""
        program = Program(model)
        program.forward_module = self.strategy.setup_module(model)
        loader = loop_state.prepare_loader(self, data, shuffle=False)
        return evaluation.predict(program, loader, device=self.device, precision=self.precision)

    # -- checkpoints and logging ----------------------------------------------------------------
    def save_checkpoint(self, path: str | Path, epoch_done: bool = False) -> Path:
        """Write a checkpoint directory with everything needed to resume exactly.

        Args:
            path: the checkpoint directory (replaced atomically if it exists).
            epoch_done: the current epoch is finished: resume at the next epoch's start.
        """
        return loop_state.save(self, Path(path), epoch_done)

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

    def _start_logging(self, program: Program, loader: Any, resumed: bool) -> None:
        if not self.is_global_zero or self.fast_dev_run:  # a dev run writes no files
            return
        loop_state.write_run_record(self, program, loader)
        for logger in self.loggers:
            logger.start(resume_step=self.global_step if resumed else None)
            logger.log_hyperparams(self.hparams)
            if not resumed and not self.strategy.shards_parameters:  # rank 0 alone cannot gather
                logger.log_graph(program.module, loop_state.example_input(loader, self.device))

    def _finish_logging(self, final: bool) -> None:
        if not self.is_global_zero:
            return
        final_metrics = {k: v for k, v in self.logged_metrics.items() if "/" not in k}
        for logger in self.loggers:
            logger.finalize(final_metrics if final else {})
