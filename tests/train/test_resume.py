"""Exact resume: a run stopped at any step and resumed ends bit-identical to an uninterrupted run."""

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import ember
from ember.train.checkpoint import CheckpointError

SCRIPT = textwrap.dedent(
    """
    import os, sys, torch, ember
    from torch import nn
    from ember.data import make_loader

    root, name, kill_at, resume = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
    (x, y), (xt, yt) = ember.load_digits(images=False)
    x, y, xt, yt = x[:400], y[:400], xt[:100], yt[:100]
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 10))
    ember.compile(net, "adam", "cross_entropy", ["accuracy", "f1", "auroc"], lr=1e-2,
                  scheduler=lambda o: torch.optim.lr_scheduler.StepLR(o, 5, 0.5),
                  scheduler_interval="step")

    class Kill(ember.Callback):
        def on_train_batch_end(self, trainer, module, logs, i):
            if trainer.global_step == kill_at:
                os.kill(os.getpid(), 9)

    callbacks = [ember.ModelCheckpoint(every_n_train_steps=3, monitor="val_loss", save_top_k=2),
                 ember.EarlyStopping(patience=10)]
    if kill_at:
        callbacks.append(Kill())
    trainer = ember.Trainer(max_epochs=3, seed=7, default_root_dir=root, name=name,
                            enable_progress_bar=False, callbacks=callbacks)
    history = trainer.fit(net, make_loader(x, y, batch_size=32, shuffle=True),
                          make_loader(xt, yt, batch_size=50), ckpt_path="last" if resume else None)
    torch.save(net.state_dict(), os.path.join(root, name + ".pt"))
    with open(os.path.join(root, name + ".json"), "w") as f:
        f.write(__import__("json").dumps(history.history))
    """
)


def _run(tmp_path, name, kill_at=0, resume=False):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    return subprocess.run(
        [sys.executable, str(script), str(tmp_path), name, str(kill_at), "1" if resume else "0"],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.e2e
def test_killed_process_resumes_bit_identical(tmp_path):
    full = _run(tmp_path, "full")
    assert full.returncode == 0, full.stderr
    # 13 batches per epoch: step 20 is mid-epoch 2, and the newest checkpoint is at step 18.
    killed = _run(tmp_path, "cut", kill_at=20)
    assert killed.returncode == -signal.SIGKILL
    resumed = _run(tmp_path, "cut", resume=True)
    assert resumed.returncode == 0, resumed.stderr
    a = torch.load(tmp_path / "full.pt", weights_only=True)
    b = torch.load(tmp_path / "cut.pt", weights_only=True)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((tmp_path / "full.json").read_text()) == json.loads(
        (tmp_path / "cut.json").read_text()
    )


def _two_quiet_epochs(root, callbacks, **kwargs):
    """A Trainer for two epochs without progress bar or logger."""
    return ember.Trainer(
        max_epochs=2,
        default_root_dir=root,
        enable_progress_bar=False,
        logger=False,
        callbacks=callbacks,
        **kwargs,
    )


def _in_process(tmp_path, stop_at=None, resume=False):
    (x, y), _ = ember.load_digits(images=False)
    torch.manual_seed(1)
    net = torch.nn.Sequential(
        torch.nn.Linear(64, 16), torch.nn.Dropout(0.2), torch.nn.Linear(16, 10)
    )
    ember.compile(net, "sgd", "cross_entropy", lr=0.05)

    class Stop(ember.Callback):
        def on_train_batch_end(self, trainer, module, logs, i):
            if trainer.global_step == stop_at:
                raise KeyboardInterrupt

    callbacks = [ember.ModelCheckpoint(every_n_train_steps=1)] + ([Stop()] if stop_at else [])
    trainer = _two_quiet_epochs(tmp_path, callbacks, seed=3)
    loader = ember.data.make_loader(x[:200], y[:200], batch_size=16, shuffle=True)
    try:
        history = trainer.fit(net, loader, ckpt_path="last" if resume else None)
    except KeyboardInterrupt:
        return None, None
    return net, history


@pytest.mark.parametrize("stop_at", [5, 13, 19])  # mid-epoch, at the epoch's last batch, epoch 2
def test_stop_at_any_step_and_resume(tmp_path, stop_at):
    ref, ref_history = _in_process(tmp_path / "ref")
    _in_process(tmp_path / "cut", stop_at=stop_at)
    net, history = _in_process(tmp_path / "cut", resume=True)
    assert all(
        torch.equal(p, q) for p, q in zip(ref.state_dict().values(), net.state_dict().values())
    )
    assert history.history == ref_history.history


def test_mid_epoch_resume_over_a_list_of_batches_skips_the_batches_done(tmp_path):
    # A re-iterable loader without ember's sampler (here a list) is skipped by iterating: the
    # epoch must continue on that iterator, not start the list again.
    torch.manual_seed(0)
    x, y = torch.randn(96, 4), torch.randint(0, 2, (96,))
    batches = [(x[i : i + 16], y[i : i + 16]) for i in range(0, 96, 16)]

    def fit(name, callbacks=(), ckpt_path=None):
        torch.manual_seed(1)
        net = ember.compile(torch.nn.Linear(4, 2), "sgd", "cross_entropy", lr=0.1)
        trainer = _two_quiet_epochs(tmp_path, list(callbacks), seed=0, name=name)
        history = trainer.fit(net, batches, ckpt_path=ckpt_path)
        return net, history

    class Stop(ember.Callback):
        def on_train_batch_end(self, trainer, module, logs, i):
            if trainer.current_epoch == 1 and i == 2:
                raise KeyboardInterrupt

    ref, ref_history = fit("ref")
    with pytest.raises(KeyboardInterrupt):
        fit("cut", [ember.ModelCheckpoint(every_n_train_steps=1, save_top_k=0), Stop()])
    net, history = fit("cut", ckpt_path="last")
    assert all(torch.equal(p, q) for p, q in zip(ref.parameters(), net.parameters()))
    assert history.history == ref_history.history


def test_resume_from_foreign_directory_is_refused(tmp_path):
    foreign = tmp_path / "not_a_ckpt"
    foreign.mkdir()
    (foreign / "model.bin").write_bytes(b"x")
    net = ember.compile(torch.nn.Linear(64, 10), "sgd", "cross_entropy")
    (x, y), _ = ember.load_digits(images=False)
    with pytest.raises(CheckpointError, match="is not an ember checkpoint"):
        ember.Trainer(max_epochs=1, enable_progress_bar=False).fit(
            net, ember.data.make_loader(x, y), ckpt_path=foreign
        )


def test_last_skips_an_incomplete_checkpoint(tmp_path):
    _in_process(tmp_path / "run", stop_at=7)
    ckpt_dir = next(Path(tmp_path / "run").rglob("checkpoints"))
    half = ckpt_dir / "epoch=9-step=999"
    half.mkdir()
    (half / "weights.safetensors").write_bytes(b"partial")  # no meta.json: never completed
    ref, _ = _in_process(tmp_path / "ref")
    net, _ = _in_process(tmp_path / "run", resume=True)
    assert all(
        torch.equal(p, q) for p, q in zip(ref.state_dict().values(), net.state_dict().values())
    )


def test_checkpoint_of_another_model_names_the_mismatch(tmp_path):
    _in_process(tmp_path / "run", stop_at=3)
    last = next(Path(tmp_path / "run").rglob("last"))
    other = ember.compile(torch.nn.Linear(64, 10), "sgd", "cross_entropy")
    (x, y), _ = ember.load_digits(images=False)
    with pytest.raises(ValueError, match="does not fit this model"):
        ember.Trainer(max_epochs=1, enable_progress_bar=False, logger=False).fit(
            other, ember.data.make_loader(x, y), ckpt_path=last
        )
