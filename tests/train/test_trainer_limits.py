"""Lightning's habits on the Trainer: test, fast_dev_run, limit_*_batches, overfit_batches, lr_find."""

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import ember
from ember.callbacks import LambdaCallback
from tests.plugins.models import tiny_sequential


def _model(lr=0.05):
    return tiny_sequential(hidden=16, optimizer="adam", metrics=["accuracy"], lr=lr)


def _data(n=64, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    return DataLoader(TensorDataset(x, x[:, :3].argmax(1)), batch_size=8, shuffle=True)


class _Counts(ember.Callback):
    def __init__(self):
        self.train, self.batches = 0, []

    def on_train_batch_end(self, trainer, module, logs, batch_idx):
        self.train += 1
        self.batches.append(batch_idx)


def _trainer(**kwargs):
    kwargs.setdefault("enable_progress_bar", False)
    kwargs.setdefault("enable_report", False)
    return ember.Trainer(seed=0, **kwargs)


def test_trainer_test_returns_lightning_shaped_test_metrics():
    model = _model()
    trainer = _trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_report=False)
    trainer.fit(model, _data())
    results = trainer.test(model, _data(32, seed=2))
    assert isinstance(results, list) and set(results[0]) == {"test_loss", "test_accuracy"}
    assert results[0]["test_loss"] == pytest.approx(
        trainer.validate(model, _data(32, seed=2))["loss"]
    )


def test_fast_dev_run_runs_one_batch_of_each_and_writes_nothing(tmp_path):
    counts, val_batches = _Counts(), []

    class _Val(ember.Callback):
        def on_validation_end(self, trainer, module, logs):
            val_batches.append(logs["val_loss"])

    trainer = _trainer(max_epochs=10, fast_dev_run=True, callbacks=[counts, _Val()],
                       default_root_dir=tmp_path / "runs")  # fmt: skip
    history = trainer.fit(_model(), _data(), _data(32, seed=2))
    assert counts.train == 1 and len(history.epochs) == 1 and len(val_batches) == 1
    assert not (tmp_path / "runs").exists()  # no logs, checkpoints or report
    assert _trainer(fast_dev_run=3).limit_val_batches == 3


def test_limit_val_batches_evaluates_only_that_many_batches():
    seen = []
    loader = _data(64)
    counting = DataLoader(loader.dataset, batch_size=8, collate_fn=lambda b: seen.append(1) or
                          torch.utils.data.default_collate(b))  # fmt: skip
    trainer = _trainer(limit_val_batches=2, logger=False, enable_checkpointing=False)
    trainer.validate(_model(), counting)
    assert len(seen) == 2


def test_limit_train_batches_caps_each_epoch():
    counts = _Counts()
    _trainer(max_epochs=2, limit_train_batches=3, callbacks=[counts], logger=False).fit(
        _model(), _data()
    )
    assert counts.batches == [0, 1, 2, 0, 1, 2]


def test_overfit_batches_repeats_the_same_first_batches_and_drives_the_loss_down():
    seen = []

    class _Inputs(ember.Callback):
        def on_train_epoch_start(self, trainer, module):
            seen.append([b[0].sum().item() for b in trainer.train_loader])

    trainer = _trainer(max_epochs=40, overfit_batches=2, callbacks=[_Inputs()], logger=False,
                       enable_checkpointing=False, enable_report=False)  # fmt: skip
    history = trainer.fit(_model(lr=0.05), _data(), _data(32, seed=2))
    loader = _data()
    first = [b[0].sum().item() for b in DataLoader(loader.dataset, batch_size=8)][:2]
    assert all(epoch == pytest.approx(first) for epoch in seen)  # the same, unshuffled batches
    assert history.history["loss"][-1] < 0.1 * history.history["loss"][0]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"limit_val_batches": 0}, "limit_val_batches"),
        ({"fast_dev_run": -1}, "fast_dev_run"),
        ({"overfit_batches": 0.5}, "overfit_batches"),
    ],
)
def test_batch_limits_are_checked(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ember.Trainer(**kwargs)


def test_lr_find_suggests_a_rate_and_leaves_the_model_as_it_was():
    model = _model()
    model(torch.zeros(1, 4))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    result = ember.train.lr_find(model, _data(256), min_lr=1e-5, max_lr=10.0, num_training=60)
    assert len(result.lrs) == len(result.losses) >= 20
    assert result.lrs == sorted(result.lrs) and result.lrs[0] == pytest.approx(1e-5)
    assert max(result.losses) > 2 * min(result.losses)  # the high rates diverged: a real curve
    best = result.suggestion()
    assert 1e-4 < best < 1.0
    i = result.lrs.index(best)
    assert result.losses[i + 1] < result.losses[i]  # the loss falls where the suggestion is
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(rng, torch.get_rng_state())


def test_trainer_lr_find_and_a_bad_range():
    trainer = _trainer(logger=False)
    result = trainer.lr_find(_model(), _data(), num_training=10)
    assert len(result.lrs) == 10
    with pytest.raises(ValueError, match="0 < min_lr < max_lr"):
        trainer.lr_find(_model(), _data(), min_lr=1.0, max_lr=0.1)


def test_lr_find_plot_draws_the_curve_and_the_suggestion():
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    result = ember.train.lr_find(_model(), _data(256), num_training=30)
    ax = result.plot()
    assert list(ax.lines[0].get_xdata()) == result.lrs and ax.get_xscale() == "log"


def test_lambda_on_batch_end_sees_the_limit():
    seen = []
    cb = LambdaCallback(on_batch_end=lambda batch, logs: seen.append(batch))
    _trainer(max_epochs=1, limit_train_batches=2, callbacks=[cb], logger=False).fit(
        _model(), _data()
    )
    assert seen == [0, 1]
