import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import ember
from ember import layers
from ember.train.callbacks import Callback, CallbackError
from ember.train.checkpoint import load_checkpoint
from ember.train.model_checkpoint import ModelCheckpoint

N, BATCH = 32, 8  # 4 batches (optimizer steps) per epoch


def _model():
    torch.manual_seed(0)
    model = ember.Sequential([layers.Input((4,)), layers.Dense(3)])
    model.compile("sgd", "cross_entropy", lr=0.1)
    return model


def _data(n=N):
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(n, 4, generator=g), torch.randint(0, 3, (n,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=BATCH, shuffle=True)


class _Scores(Callback):
    def __init__(self, values):
        self.values = values

    def on_epoch_end(self, trainer, module, logs):
        logs["score"] = self.values[trainer.current_epoch]


def _fit(tmp_path, checkpoint, callbacks=(), epochs=3, val=False):
    trainer = ember.Trainer(
        max_epochs=epochs,
        callbacks=[*callbacks, checkpoint],
        logger=False,
        default_root_dir=tmp_path.parent / (tmp_path.name + "-runs"),
        enable_progress_bar=False,
        enable_report=False,
        seed=0,
    )
    trainer.fit(_model(), _data(), _data(16) if val else None)
    return trainer


def _names(path):
    return sorted(p.name for p in path.iterdir() if not p.name.startswith("."))


def test_save_top_k_keeps_the_k_best_and_deletes_the_others(tmp_path):
    ckpt = ModelCheckpoint(
        tmp_path / "ckpt",
        "epoch={epoch}-score={score:.1f}",
        monitor="score",
        mode="min",
        save_top_k=2,
    )
    _fit(tmp_path, ckpt, [_Scores([3.0, 1.0, 4.0, 0.5, 2.0])], epochs=5)
    assert _names(tmp_path / "ckpt") == ["epoch=1-score=1.0", "epoch=3-score=0.5", "last"]
    assert ckpt.best_model_path == str(tmp_path / "ckpt" / "epoch=3-score=0.5")
    assert ckpt.best_model_score == 0.5
    assert [s for s, _ in ckpt.best_k] == [0.5, 1.0]


def test_save_top_k_in_max_mode(tmp_path):
    ckpt = ModelCheckpoint(tmp_path, "e{epoch}", monitor="score", mode="max", save_top_k=1)
    _fit(tmp_path, ckpt, [_Scores([0.2, 0.9, 0.5])])
    assert _names(tmp_path) == ["e1", "last"]


def test_saved_best_checkpoint_holds_that_epochs_weights(tmp_path):
    class Snap(Callback):
        def __init__(self):
            self.weights = []

        def on_epoch_end(self, trainer, module, logs):
            self.weights.append({k: v.clone() for k, v in module.state_dict().items()})

    snap = Snap()
    ckpt = ModelCheckpoint(tmp_path, "e{epoch}", monitor="score", mode="min", save_top_k=1)
    _fit(tmp_path, ckpt, [_Scores([2.0, 1.0, 3.0]), snap])
    saved = load_checkpoint(ckpt.best_model_path)
    assert saved.meta["epoch"] == 2  # resumes at the epoch after the one saved
    for k, v in snap.weights[1].items():
        assert torch.equal(saved.model_state[k], v)
    last = load_checkpoint(tmp_path / "last")
    assert last.meta["epoch"] == 3 and last.meta["global_step"] == 12


def test_save_last_off(tmp_path):
    ckpt = ModelCheckpoint(tmp_path, "e{epoch}", save_last=False, save_top_k=-1)
    _fit(tmp_path, ckpt, epochs=2)
    assert _names(tmp_path) == ["e0", "e1"]
    assert ckpt.best_model_path == str(tmp_path / "e1")  # unmonitored: the newest first


def test_save_top_k_zero_keeps_only_last(tmp_path):
    ckpt = ModelCheckpoint(tmp_path, save_top_k=0)
    _fit(tmp_path, ckpt, epochs=2)
    assert _names(tmp_path) == ["last"]


def test_without_monitor_the_newest_is_kept(tmp_path):
    ckpt = ModelCheckpoint(tmp_path, "e{epoch}", save_top_k=1)
    _fit(tmp_path, ckpt, epochs=3)
    assert _names(tmp_path) == ["e2", "last"]


def test_every_n_epochs(tmp_path):
    ckpt = ModelCheckpoint(tmp_path, "e{epoch}", save_top_k=-1, save_last=False, every_n_epochs=2)
    _fit(tmp_path, ckpt, epochs=5)
    assert _names(tmp_path) == ["e1", "e3"]


def test_every_n_train_steps_saves_mid_epoch(tmp_path):
    ckpt = ModelCheckpoint(
        tmp_path, "s{step}", save_top_k=-1, save_last=False, every_n_epochs=0, every_n_train_steps=3
    )
    _fit(tmp_path, ckpt, epochs=2)
    assert _names(tmp_path) == ["s3", "s6"]
    first, second = load_checkpoint(tmp_path / "s3").meta, load_checkpoint(tmp_path / "s6").meta
    assert (first["epoch"], first["batch_in_epoch"], first["global_step"]) == (0, 3, 3)
    assert (second["epoch"], second["batch_in_epoch"], second["global_step"]) == (1, 2, 6)


def test_every_n_train_steps_waits_for_the_monitored_value(tmp_path):
    # Before the first epoch ends no val_loss exists: mid-epoch saves only refresh `last`.
    ckpt = ModelCheckpoint(
        tmp_path, "s{step}", monitor="val_loss", every_n_epochs=0, every_n_train_steps=2
    )
    _fit(tmp_path, ckpt, epochs=2, val=True)
    # Steps 2 and 4 come before any val_loss; step 8 ties step 6's value, which stays.
    assert _names(tmp_path) == ["last", "s6"]


def test_default_checkpoints_go_to_the_run_directory(tmp_path):
    trainer = ember.Trainer(
        max_epochs=1,
        logger=False,
        default_root_dir=tmp_path,
        enable_progress_bar=False,
        enable_report=False,
    )
    trainer.fit(_model(), _data())
    ckpt = trainer.checkpoint_callback
    assert ckpt.dirpath == trainer.log_dir / "checkpoints"
    assert _names(ckpt.dirpath) == ["last"]
    assert (ckpt.save_top_k, ckpt.min_interval) == (0, 10.0)
    assert load_checkpoint(ckpt.dirpath / "last").meta["global_step"] == 4


class _CountSaves(Callback):
    """Records the epochs at which the trainer wrote a checkpoint."""

    def __init__(self):
        self.epochs = []

    def on_fit_start(self, trainer, module):
        save = trainer.save_checkpoint

        def counting(path, epoch_done=False):
            self.epochs.append((trainer.current_epoch, path.name))
            return save(path, epoch_done)

        trainer.save_checkpoint = counting


def test_min_interval_skips_last_refreshes_but_keeps_the_first_and_final_epoch(tmp_path):
    counter = _CountSaves()
    trainer = _fit(
        tmp_path, ModelCheckpoint(tmp_path, save_top_k=0, min_interval=3600), [counter], 4
    )
    assert counter.epochs == [(0, "last"), (3, "last")]
    assert load_checkpoint(tmp_path / "last").meta["global_step"] == trainer.global_step == 16


def test_min_interval_never_skips_a_new_best_checkpoint(tmp_path):
    counter = _CountSaves()
    ckpt = ModelCheckpoint(tmp_path, "e{epoch}", monitor="score", min_interval=3600)
    _fit(tmp_path, ckpt, [_Scores([3.0, 2.0, 5.0, 1.0, 4.0]), counter], epochs=5)
    # Epochs 1 and 3 improve the score; epoch 2 only refreshes `last` (skipped), 4 is final.
    assert counter.epochs == [(0, "e0"), (1, "e1"), (3, "e3"), (4, "last")]
    assert ckpt.best_model_path == str(tmp_path / "e3")


def test_min_interval_must_not_be_negative():
    with pytest.raises(ValueError, match="min_interval.*Received: min_interval=-1"):
        ModelCheckpoint(min_interval=-1)


def test_checkpoint_callback_runs_after_the_others(tmp_path):
    ckpt = ModelCheckpoint(tmp_path, "e{epoch}-{score}", monitor="score")
    trainer = ember.Trainer(callbacks=[ckpt, _Scores([1.0])], enable_progress_bar=False)
    assert trainer.callbacks[-1] is ckpt


def test_missing_monitor_is_reported_with_the_available_keys(tmp_path):
    ckpt = ModelCheckpoint(tmp_path, monitor="val_accuracy")
    with pytest.raises(CallbackError, match="ModelCheckpoint failed in on_epoch_end") as info:
        _fit(tmp_path, ckpt, epochs=1)
    assert "monitors 'val_accuracy', which was not logged. Available: loss, lr" in str(info.value)


def test_a_filename_with_an_unknown_key(tmp_path):
    ckpt = ModelCheckpoint(tmp_path, "{epoch}-{val_acc:.2f}")
    with pytest.raises(CallbackError, match=r"filename '\{epoch\}-\{val_acc:.2f\}' could not be"):
        _fit(tmp_path, ckpt, epochs=1)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"save_top_k": -2}, r"`save_top_k` must be >= -1. Received: save_top_k=-2"),
        ({"every_n_train_steps": 0}, r"Received: every_n_train_steps=0"),
        ({"mode": "lowest"}, r"Unknown mode 'lowest'. Choose one of: auto, min, max"),
        ({"min_interval": -1}, r"`min_interval`, expected seconds >= 0. Received: min_interval=-1"),
        ({"min_interval": "10"}, r"Received: min_interval='10'"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ModelCheckpoint(**kwargs)


def test_state_round_trip(tmp_path):
    ckpt = ModelCheckpoint(tmp_path, "e{epoch}", monitor="score", mode="min", save_top_k=2)
    _fit(tmp_path, ckpt, [_Scores([3.0, 1.0, 2.0])])
    copy = ModelCheckpoint(tmp_path, monitor="score", mode="min", save_top_k=2)
    copy.load_state_dict(ckpt.state_dict())
    assert copy.best_k == ckpt.best_k
    assert copy.best_model_path == str(tmp_path / "e1")
