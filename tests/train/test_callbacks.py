import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import ember
from ember.train.callbacks import Callback, CallbackError, EarlyStopping, LearningRateMonitor
from ember.train.loggers import Logger
from tests.plugins.models import tiny_sequential

N, BATCH = 32, 8  # 4 batches per epoch


def _data(n=N):
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(n, 4, generator=g), torch.randint(0, 3, (n,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=BATCH, shuffle=True)


def _fit(model, callbacks=(), epochs=3, val=False, logger=False, **kwargs):
    trainer = ember.Trainer(
        max_epochs=epochs,
        callbacks=list(callbacks),
        logger=logger,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_report=False,
        seed=0,
        **kwargs,
    )
    history = trainer.fit(model, _data(), _data(16) if val else None)
    return trainer, history


class _Scores(Callback):
    """Puts a chosen `score` per epoch into the epoch logs (before later callbacks read them)."""

    def __init__(self, values, key="score"):
        self.values, self.key = values, key

    def on_epoch_end(self, trainer, module, logs):
        logs[self.key] = self.values[trainer.current_epoch]


class _Snapshots(Callback):
    def __init__(self):
        self.weights = []

    def on_epoch_end(self, trainer, module, logs):
        self.weights.append({k: v.detach().clone() for k, v in module.state_dict().items()})


class _Recorder(Logger):
    """A logger keeping every log_metrics call as (step, key, value)."""

    def __init__(self, root):
        super().__init__(root, "rec")
        self.calls = []

    def log_metrics(self, metrics, step):
        self.calls.extend((step, k, v) for k, v in metrics.items())

    def values(self, key):
        return [(step, v) for step, k, v in self.calls if k == key]


# -- EarlyStopping ----------------------------------------------------------------------------
def test_early_stopping_stops_after_patience_epochs_without_improvement():
    stopper = EarlyStopping(monitor="score", mode="min", patience=2)
    trainer, history = _fit(tiny_sequential(), [_Scores([5, 4, 4.5, 4.2, 3, 2]), stopper], epochs=6)
    assert len(history.epochs) == 4  # best at epoch 1, no improvement in 2 and 3
    assert (stopper.best, stopper.best_epoch, stopper.stopped_epoch) == (4, 1, 3)
    assert trainer.should_stop


def test_early_stopping_mode_max_and_min_delta():
    stopper = EarlyStopping(monitor="score", mode="max", patience=2, min_delta=0.1)
    _, history = _fit(tiny_sequential(), [_Scores([1.0, 1.05, 1.08, 1.5, 1.6]), stopper], epochs=5)
    assert len(history.epochs) == 3  # +0.05 and +0.08 are below min_delta
    assert stopper.best == 1.0


def test_early_stopping_without_stop_runs_every_epoch():
    stopper = EarlyStopping(monitor="score", mode="min", patience=1)
    _, history = _fit(tiny_sequential(), [_Scores([3, 2, 1]), stopper], epochs=3)
    assert len(history.epochs) == 3
    assert stopper.stopped_epoch == -1


def test_early_stopping_auto_mode_follows_the_name():
    assert EarlyStopping(monitor="val_accuracy").mode == "max"
    assert EarlyStopping(monitor="val_loss").mode == "min"


def test_restore_best_weights_loads_the_best_epoch():
    snapshots = _Snapshots()
    stopper = EarlyStopping(monitor="score", mode="min", patience=10, restore_best_weights=True)
    model = tiny_sequential()
    _fit(model, [_Scores([3, 1, 2, 4]), snapshots, stopper], epochs=4)
    final = model.state_dict()
    assert all(torch.equal(final[k], v) for k, v in snapshots.weights[1].items())
    assert not all(torch.equal(final[k], v) for k, v in snapshots.weights[-1].items())


def test_without_restore_best_weights_the_last_weights_stay():
    snapshots = _Snapshots()
    model = tiny_sequential()
    stopper = EarlyStopping(monitor="score", mode="min", patience=10)
    _fit(model, [_Scores([3, 1, 2]), snapshots, stopper], epochs=3)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in snapshots.weights[-1].items())


def test_early_stopping_on_a_missing_value_lists_the_available_keys():
    with pytest.raises(CallbackError, match="EarlyStopping failed in on_epoch_end") as info:
        _fit(tiny_sequential(), [EarlyStopping(monitor="val_loss")], epochs=1)
    message = str(info.value)
    assert "monitors 'val_loss', which was not logged" in message
    assert "Available: loss, lr" in message
    assert isinstance(info.value.__cause__, KeyError)


def test_early_stopping_reads_validation_values():
    stopper = EarlyStopping(monitor="val_loss", patience=5)
    _, history = _fit(tiny_sequential(), [stopper], epochs=2, val=True)
    assert stopper.best == min(history.history["val_loss"])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"patience": -1}, r"`patience` must be >= 0. Received: patience=-1"),
        ({"mode": "best"}, r"Unknown mode 'best'. Choose one of: auto, min, max"),
    ],
)
def test_early_stopping_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EarlyStopping(**kwargs)


def test_early_stopping_state_round_trips():
    stopper = EarlyStopping(monitor="score", mode="min", patience=3)
    _fit(tiny_sequential(), [_Scores([2, 1, 3]), stopper], epochs=3)
    copy = EarlyStopping(monitor="score", mode="min", patience=3)
    copy.load_state_dict(stopper.state_dict())
    assert (copy.best, copy.wait, copy.best_epoch) == (1, 1, 1)


# -- LearningRateMonitor and schedulers -------------------------------------------------------
def test_learning_rate_monitor_per_epoch(tmp_path):
    rec = _Recorder(tmp_path)
    model = tiny_sequential(
        scheduler=lambda opt: torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5)
    )
    _fit(model, [LearningRateMonitor()], epochs=3, logger=rec)
    epoch_lrs = [(s, v) for s, v in rec.values("lr")]
    # on_train_epoch_start logs the lr the epoch trains with; the epoch-end logs add "lr" too.
    assert epoch_lrs[0::2] == [(0, 0.1), (1, 0.05), (2, 0.025)]
    assert not rec.values("step/lr")


def test_learning_rate_monitor_per_step_with_a_per_step_scheduler(tmp_path):
    rec = _Recorder(tmp_path)
    model = tiny_sequential(
        scheduler=lambda opt: torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.5),
        scheduler_interval="step",
    )
    _fit(model, [LearningRateMonitor("step")], epochs=2, logger=rec)
    logged = rec.values("step/lr")
    assert [s for s, _ in logged] == list(range(1, 9))
    assert [v for _, v in logged] == pytest.approx([0.1 * 0.5**s for s in range(1, 9)])


def test_learning_rate_monitor_names_every_param_group(tmp_path):
    class TwoGroups(ember.Model):
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Linear(4, 8), torch.nn.Linear(8, 3)

        def forward(self, x):
            return self.b(torch.relu(self.a(x)))

        def configure_optimizers(self):
            groups = [{"params": self.a.parameters(), "lr": 0.1}, {"params": self.b.parameters()}]
            return torch.optim.SGD(groups, lr=0.01)

    rec = _Recorder(tmp_path)
    model = TwoGroups()
    model.compile("sgd", "cross_entropy")
    _fit(model, [LearningRateMonitor()], epochs=1, logger=rec)
    assert rec.values("lr/group1") == [(0, 0.01)]
    assert rec.values("lr")[0] == (0, 0.1)


def test_learning_rate_monitor_bad_interval():
    with pytest.raises(
        ValueError, match="Unknown logging_interval 'batch'. Choose one of: epoch, step"
    ):
        LearningRateMonitor("batch")


def test_scheduler_per_epoch_history_lr():
    model = tiny_sequential(
        scheduler=lambda opt: torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5)
    )
    trainer, history = _fit(model, epochs=3)
    assert history.history["lr"] == pytest.approx([0.1, 0.05, 0.025])
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.0125)


def test_scheduler_per_step_from_configure_optimizers():
    class Net(ember.Model):
        def __init__(self):
            super().__init__()
            self.body = torch.nn.Linear(4, 3)

        def forward(self, x):
            return self.body(x)

        def configure_optimizers(self):
            opt = torch.optim.SGD(self.parameters(), lr=1.0)
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1 / (step + 1))
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    model = Net()
    model.compile("sgd", "cross_entropy")
    trainer, history = _fit(model, epochs=2)
    # lr logged at the end of each epoch: after 4 and 8 per-step scheduler steps
    assert history.history["lr"] == pytest.approx([1 / 5, 1 / 9])


def test_reduce_lr_on_plateau_reads_the_monitored_value():
    model = tiny_sequential(
        scheduler=lambda opt: torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, factor=0.5, patience=0
        ),
        scheduler_monitor="val_loss",
    )

    class Flat(Callback):  # a validation loss that never improves
        def on_validation_end(self, trainer, module, logs):
            logs["val_loss"] = 1.0

    trainer, history = _fit(model, [Flat()], epochs=3, val=True)
    assert history.history["lr"] == pytest.approx([0.1, 0.1, 0.05])
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.025)


def test_reduce_lr_on_plateau_without_the_monitored_value():
    model = tiny_sequential(
        scheduler=lambda opt: torch.optim.lr_scheduler.ReduceLROnPlateau(opt),
        scheduler_monitor="val_loss",
    )
    with pytest.raises(
        KeyError, match=r"ReduceLROnPlateau monitors 'val_loss'.*Available: loss, lr"
    ):
        _fit(model, epochs=1)


# -- the runner -------------------------------------------------------------------------------
class _BoomOnBatch(Callback):
    def on_train_batch_end(self, trainer, module, logs, batch_idx):
        if batch_idx == 2:
            raise ValueError("boom at batch 2")


class _Seen(Callback):
    def __init__(self):
        self.exceptions = []

    def on_exception(self, trainer, module, error):
        self.exceptions.append(error)


def test_a_failing_callback_is_named_with_its_hook():
    seen = _Seen()
    with pytest.raises(
        CallbackError, match=r"Callback _BoomOnBatch failed in on_train_batch_end: ValueError: boom"
    ) as info:
        _fit(tiny_sequential(), [_BoomOnBatch(), seen], epochs=1)
    assert isinstance(info.value.__cause__, ValueError)
    assert [type(e) for e in seen.exceptions] == [CallbackError]  # on_exception still ran


@pytest.mark.parametrize(
    "hook", ["on_fit_start", "on_train_epoch_end", "on_epoch_end", "on_fit_end"]
)
def test_every_hook_reports_a_failure(hook):
    class Failing(Callback):
        pass

    setattr(Failing, hook, lambda self, *args: (_ for _ in ()).throw(RuntimeError("bad")))
    with pytest.raises(
        CallbackError, match=rf"Callback Failing failed in {hook}: RuntimeError: bad"
    ):
        _fit(tiny_sequential(), [Failing()], epochs=1)


def test_hooks_run_in_order_with_the_loop_position():
    class Trace(Callback):
        def __init__(self):
            self.events = []

        def on_fit_start(self, trainer, module):
            self.events.append("fit_start")

        def on_train_epoch_start(self, trainer, module):
            self.events.append(f"epoch_start {trainer.current_epoch}")

        def on_train_batch_end(self, trainer, module, logs, batch_idx):
            assert isinstance(logs["loss"], torch.Tensor)
            self.events.append(f"batch {batch_idx} step {trainer.global_step}")

        def on_train_epoch_end(self, trainer, module):
            self.events.append("train_epoch_end")

        def on_validation_end(self, trainer, module, logs):
            self.events.append(f"val_end {sorted(logs)}")

        def on_epoch_end(self, trainer, module, logs):
            self.events.append(f"epoch_end {sorted(logs)}")

        def on_fit_end(self, trainer, module):
            self.events.append("fit_end")

    trace = Trace()
    _fit(tiny_sequential(), [trace], epochs=1, val=True)
    assert trace.events == [
        "fit_start",
        "epoch_start 0",
        *[f"batch {i} step {i + 1}" for i in range(4)],
        "train_epoch_end",
        "val_end ['loss', 'val_loss']",
        "epoch_end ['loss', 'lr', 'val_loss']",
        "fit_end",
    ]


def test_callbacks_must_be_callback_objects():
    with pytest.raises(
        TypeError, match="Every callback must be an ember Callback. Received: 'stop'"
    ):
        ember.Trainer(callbacks=["stop"])


def test_uses_hook_skips_a_hook_a_setting_turns_off():
    class Counts(Callback):
        def __init__(self, per_batch):
            self.per_batch, self.batches, self.epochs = per_batch, 0, 0

        def uses_hook(self, hook):
            return self.per_batch if hook == "on_train_batch_end" else super().uses_hook(hook)

        def on_train_batch_end(self, trainer, module, logs, batch_idx):
            self.batches += 1

        def on_epoch_end(self, trainer, module, logs):
            self.epochs += 1

    on, off = Counts(per_batch=True), Counts(per_batch=False)
    _fit(tiny_sequential(), [on, off], epochs=1)
    assert (on.batches, on.epochs) == (4, 1)
    assert (off.batches, off.epochs) == (0, 1)
    assert not Callback().uses_hook("on_epoch_end")  # not overridden: never called
    assert not ember.ModelCheckpoint().uses_hook("on_train_batch_end")
    assert ember.ModelCheckpoint(every_n_train_steps=5).uses_hook("on_train_batch_end")
