import json

import pytest
import torch
from torch import nn

import ember
from ember.data import make_loader
from ember.train import budget
from ember.train.callbacks import CallbackError
from ember.train.history import History
from ember.train.sampler import ResumableSampler
from tests.plugins.models import tiny_mlp


def _net(seed=0):
    return ember.compile(tiny_mlp(seed), "sgd", "cross_entropy", lr=0.1)


def _trainer(**kw):
    kw.setdefault("enable_progress_bar", False)
    kw.setdefault("logger", False)
    kw.setdefault("enable_checkpointing", False)
    return ember.Trainer(**kw)


def test_gradient_accumulation_matches_a_bigger_batch(blobs):
    x, y = blobs
    a, b = _net(), _net()
    _trainer(max_epochs=1, seed=0).fit(a, make_loader(x, y, batch_size=40))
    _trainer(max_epochs=1, seed=0, accumulate_grad_batches=2).fit(
        b, make_loader(x, y, batch_size=20)
    )
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_gradient_clipping_bounds_the_update(blobs):
    x, y = blobs
    net = _net()
    before = [p.detach().clone() for p in net.parameters()]
    net._ember_compile.lr = 1.0
    _trainer(max_steps=1, gradient_clip_val=1e-3).fit(net, make_loader(x * 100, y, batch_size=120))
    step = torch.cat([(p - q).flatten() for p, q in zip(net.parameters(), before)])
    assert step.norm() <= 1e-3 + 1e-6


def test_max_steps_stops_mid_epoch(blobs):
    x, y = blobs
    trainer = _trainer(max_steps=5)
    trainer.fit(_net(), make_loader(x, y, batch_size=10))
    assert trainer.global_step == 5


@pytest.mark.parametrize("interval", ["epoch", "step"])
def test_scheduler_interval(blobs, interval):
    x, y = blobs
    net = ember.compile(
        _net(),
        "sgd",
        "cross_entropy",
        lr=1.0,
        scheduler=lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5),
        scheduler_interval=interval,
    )
    trainer = _trainer(max_epochs=2)
    history = trainer.fit(net, make_loader(x, y, batch_size=60))
    steps = {"epoch": 2, "step": 4}[interval]
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.5**steps)
    # History records the rate at the end of each epoch, before the epoch's scheduler step.
    assert history.history["lr"] == pytest.approx(
        {"epoch": [1.0, 0.5], "step": [0.25, 0.0625]}[interval]
    )


def test_reduce_lr_on_plateau_reads_the_monitor(blobs):
    x, y = blobs
    net = ember.compile(
        _net(),
        "sgd",
        "cross_entropy",
        lr=0.1,
        # Only a drop of val_loss by 10 counts as progress, so epochs 2 and 3 both cut the rate.
        scheduler=lambda opt: torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, patience=0, factor=0.5, threshold=10.0, threshold_mode="abs"
        ),
        scheduler_monitor="val_loss",
    )
    loader = make_loader(x, y, batch_size=60)
    trainer = _trainer(max_epochs=3)
    history = trainer.fit(net, loader, loader)
    # Epoch 1 sets the best val_loss; epochs 2 and 3 do not improve on it: two cuts.
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.025)
    assert history.history["lr"] == pytest.approx([0.1, 0.1, 0.05])


def test_reduce_lr_on_plateau_without_validation_names_the_monitor(blobs):
    x, y = blobs
    net = ember.compile(
        _net(),
        "sgd",
        "cross_entropy",
        scheduler=lambda opt: torch.optim.lr_scheduler.ReduceLROnPlateau(opt),
    )
    with pytest.raises(
        KeyError, match="monitors 'val_loss', which was not logged. Available: loss, lr"
    ):
        _trainer(max_epochs=1).fit(net, make_loader(x, y, batch_size=60))


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_mixed_precision_trains_on_cpu(blobs, precision):
    x, y = blobs
    net = _net()
    history = _trainer(max_epochs=3, precision=precision, seed=0).fit(
        net, make_loader(x, y, batch_size=30)
    )
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert all(p.dtype == torch.float32 for p in net.parameters())


@pytest.mark.parametrize(
    "precision, autocast",
    [("32", None), ("bf16-mixed", torch.bfloat16), ("16-mixed", torch.float16)],
)
def test_the_train_step_runs_under_autocast_in_mixed_precision(blobs, precision, autocast):
    seen = []

    class Net(ember.Model):
        def __init__(self):
            super().__init__()
            self.body = nn.Linear(4, 3)

        def forward(self, x):
            return self.body(x)

        def train_step(self, batch):
            on = torch.is_autocast_enabled("cpu")
            seen.append(torch.get_autocast_dtype("cpu") if on else None)
            return super().train_step(batch)

    net = Net()
    net.compile("sgd", "cross_entropy", lr=0.1)
    x, y = blobs
    _trainer(max_epochs=1, precision=precision).fit(net, make_loader(x, y, batch_size=60))
    assert seen and set(seen) == {autocast}


def test_seed_makes_runs_reproducible(blobs):
    x, y = blobs
    nets = []
    for seed in (123, 123, 124):
        torch.manual_seed(
            0
        )  # same initial weights; the Trainer's seed drives dropout and shuffling
        net = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 3))
        ember.compile(net, "adam", "cross_entropy")
        _trainer(max_epochs=2, seed=seed).fit(net, make_loader(x, y, batch_size=16, shuffle=True))
        nets.append(net)
    same = [torch.equal(p, q) for p, q in zip(nets[0].parameters(), nets[1].parameters())]
    other = [torch.equal(p, q) for p, q in zip(nets[0].parameters(), nets[2].parameters())]
    assert all(same) and not any(other)


def test_deterministic_flag_turns_on_torch_determinism(blobs):
    x, y = blobs
    try:
        _trainer(max_epochs=1, deterministic=True).fit(_net(), make_loader(x, y))
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(False)


@pytest.mark.e2e
def test_torch_compile(blobs):
    x, y = blobs
    history = _trainer(max_epochs=1, compile=True).fit(_net(), make_loader(x, y, batch_size=60))
    assert history.history["loss"][0] > 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"precision": "fp8"}, "Unknown precision 'fp8'. Choose one of: 32, 16-mixed, bf16-mixed"),
        ({"accelerator": "tpu"}, "Unknown accelerator 'tpu'. Choose one of: auto, cpu, cuda, mps"),
        ({"accumulate_grad_batches": 0}, "accumulate_grad_batches=0"),
        ({"gradient_clip_algorithm": "l1"}, "Choose one of: norm, value"),
        ({"callbacks": [object()]}, "must be an ember Callback"),
    ],
)
def test_bad_trainer_arguments(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        ember.Trainer(**kwargs)


def test_resumable_sampler_shards_and_skips():
    full = ResumableSampler(10, shuffle=True, seed=3)
    full.set_epoch(2)
    order = list(full)
    assert sorted(order) == list(range(10))
    again = ResumableSampler(10, shuffle=True, seed=3)
    again.set_epoch(2)
    again.set_start(4)
    assert list(again) == order[4:]
    assert list(again) == order  # the skip applies to one pass only
    ranks = [ResumableSampler(10, shuffle=True, seed=3, rank=r, world_size=2) for r in (0, 1)]
    for s in ranks:
        s.set_epoch(2)
    assert sorted(list(ranks[0]) + list(ranks[1])) == list(range(10))


class _SeeHistory(ember.Callback):
    """Records the epochs history.json holds when each epoch starts; can fail an epoch."""

    def __init__(self, raise_at=None):
        self.raise_at, self.seen = raise_at, []

    def on_train_epoch_start(self, trainer, module):
        path = trainer.log_dir / "history.json"
        self.seen.append(json.loads(path.read_text())["epochs"] if path.exists() else None)

    def on_epoch_end(self, trainer, module, logs):
        if trainer.current_epoch == self.raise_at:
            raise RuntimeError("stop here")


@pytest.mark.parametrize(
    ("min_interval", "seen"),
    [(0.0, [None, [0], [0, 1]]), (3600.0, [None, [0], [0]])],
    ids=["checkpoint-every-epoch", "checkpoint-once-an-hour"],
)
def test_history_json_is_written_with_every_checkpoint(blobs, tmp_path, min_interval, seen):
    # A checkpoint of `last` refreshes history.json to the same epoch: after a crash, even
    # kill -9, the run directory's history matches the checkpoint fit resumes from.
    see = _SeeHistory()
    checkpoints = ember.ModelCheckpoint(save_top_k=0, min_interval=min_interval)
    x, y = blobs
    trainer = _trainer(max_epochs=3, default_root_dir=tmp_path, callbacks=[checkpoints, see])
    history = trainer.fit(_net(), make_loader(x, y, batch_size=40))
    assert see.seen == seen
    assert json.loads((trainer.log_dir / "history.json").read_text()) == history.state_dict()


def test_history_json_is_not_written_twice_for_the_same_epochs(blobs, tmp_path, monkeypatch):
    # The default checkpoint saves after epoch 0 and the last epoch, each writing history.json;
    # the end of fit finds it already complete.
    writes = []
    monkeypatch.setattr(History, "write", lambda self, path: writes.append(len(self.epochs)))
    x, y = blobs
    trainer = _trainer(max_epochs=3, default_root_dir=tmp_path, enable_checkpointing=True)
    trainer.fit(_net(), make_loader(x, y, batch_size=40))
    assert writes == [1, 3]


def test_history_json_is_complete_when_fit_fails(blobs, tmp_path):
    # No checkpoint, so no write during training, and still every finished epoch on disk when
    # a callback stops fit with an error.
    see = _SeeHistory(raise_at=2)
    x, y = blobs
    trainer = _trainer(max_epochs=5, default_root_dir=tmp_path, callbacks=[see])
    with pytest.raises(CallbackError, match="stop here"):
        trainer.fit(_net(), make_loader(x, y, batch_size=40))
    assert see.seen == [None, None, None]
    assert json.loads((trainer.log_dir / "history.json").read_text())["epochs"] == [0, 1, 2]


class _Clock:
    """A clock that advances one second each time it is read (the norms "cost" one second)."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        self.now += 1.0
        return self.now


class _EpochsLast(ember.Callback):
    """Makes every epoch seem to last `seconds` to the time budgets."""

    def __init__(self, clock, seconds):
        self.clock, self.seconds = clock, seconds

    def on_train_epoch_start(self, trainer, module):
        self.clock.now += self.seconds


@pytest.mark.parametrize(
    ("seconds", "with_norms"),
    [(10_000.0, [0, 1, 2, 3, 4]), (0.0, [0, 4])],
    ids=["long-epochs", "instant-epochs"],
)
def test_norms_follow_every_epoch_their_time_budget_allows(
    blobs, tmp_path, monkeypatch, seconds, with_norms
):
    # Epochs much longer than the norms' cost get them every time; when epochs take no time
    # the budget allows only the first epoch, and the last one always gets them.
    clock = _Clock()
    monkeypatch.setattr(budget, "time", clock)
    x, y = blobs
    trainer = _trainer(max_epochs=5, callbacks=[_EpochsLast(clock, seconds)])
    history = trainer.fit(_net(), make_loader(x, y, batch_size=40))
    got = [e for e, info in zip(history.epochs, history.epoch_info) if info["norms"]]
    assert got == with_norms
    names = {k for k in history.epoch_info[0]["norms"]}
    assert {"norm/weight/0.weight", "norm/grad/0.weight"} <= names
    assert all(info["epoch_time"] >= 0 for info in history.epoch_info)


def test_an_uncompiled_module_is_refused_before_training(blobs):
    x, y = blobs
    with pytest.raises(RuntimeError, match=r"Linear is not compiled: call model.compile\("):
        _trainer(max_epochs=1).fit(nn.Linear(4, 3), make_loader(x, y, batch_size=60))
