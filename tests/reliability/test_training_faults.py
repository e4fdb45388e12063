"""Training faults: kill -9 during checkpoint saves, and saves that fail (disk full, no permission).

A training process is killed at random points, most of them inside ``save_checkpoint`` at each
stage of the atomic write (data files written, metadata written, previous checkpoint moved aside,
new one in place but the old one not yet removed), several times in a row. After every kill the
newest complete checkpoint must load; the run resumed after the last kill must end bit-identical
to an uninterrupted one. Kills: 6 per unit of ``--reliability-scale``.
"""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import ember
from ember.train import CallbackError
from ember.train.checkpoint import (
    CheckpointError,
    find_last,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)

ROOT = Path(__file__).resolve().parents[2]
STAGES = ("data", "meta", "aside", "cleanup", "timer")

SCRIPT = textwrap.dedent(
    """
    import json, os, sys, threading, time, torch, ember
    import ember.train.checkpoint as ckpt
    import ember.train.checkpoint_files as ckpt_files
    import ember.train.resume as resume_module
    from torch import nn
    from ember.data import make_loader

    root, mode, nth, resume = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4] == "1"
    saves = [0]

    def die(stage):
        if mode == stage and saves[0] >= int(nth):  # first chance at or after save nth
            os.kill(os.getpid(), 9)

    def wrap(name, stage, before=True):
        real = getattr(ckpt_files, name)
        def wrapped(*args, **kwargs):
            if before:
                die(stage)
            out = real(*args, **kwargs)
            if not before:
                die(stage)
            return out
        setattr(ckpt_files, name, wrapped)

    real_save = ckpt.save_checkpoint
    def counting_save(*args, **kwargs):
        saves[0] += 1
        return real_save(*args, **kwargs)
    resume_module.save_checkpoint = counting_save  # where the Trainer's saves call it
    wrap("hash_file", "data", before=False)     # a data file written and synced, meta.json not
    wrap("move_into_place", "meta")             # complete in .tmp-*, not renamed into place
    wrap("remove_quietly", "cleanup")           # new one in place, the old one still aside

    class _Os:  # kills between "move the old one aside" and "rename the new one in place"
        def __getattr__(self, name):
            return getattr(os, name)
        def replace(self, src, dst):
            os.replace(src, dst)
            if ".old-" in str(dst):
                die("aside")
    ckpt_files.os = _Os()
    if mode == "timer":
        threading.Timer(nth, lambda: os.kill(os.getpid(), 9)).start()

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(320, 16, generator=g), torch.randint(0, 4, (320,), generator=g)
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 4))
    ember.compile(net, "adam", "cross_entropy", ["accuracy"], lr=1e-2,
                  scheduler=lambda o: torch.optim.lr_scheduler.StepLR(o, 7, 0.5),
                  scheduler_interval="step")
    checkpoints = ember.ModelCheckpoint(dirpath=os.path.join(root, "ckpt"), every_n_train_steps=2,
                                        save_top_k=2)
    trainer = ember.Trainer(max_epochs=3, seed=7, default_root_dir=root, name="run",
                            enable_progress_bar=False, logger=False, callbacks=[checkpoints])
    history = trainer.fit(net, make_loader(x[:256], y[:256], batch_size=16, shuffle=True),
                          make_loader(x[256:], y[256:], batch_size=32),
                          ckpt_path="last" if resume else None)
    torch.save(net.state_dict(), os.path.join(root, "final.pt"))
    with open(os.path.join(root, "history.json"), "w") as f:
        json.dump(history.history, f)
    """
)


def _train(root: Path, mode: str = "none", nth: float = 0, resume: bool = False):
    root.mkdir(parents=True, exist_ok=True)
    script = root.parent / "train_faults.py"
    script.write_text(SCRIPT)
    args = [sys.executable, str(script), str(root), mode, str(nth), "1" if resume else "0"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)


def _same_weights(a: Path, b: Path) -> bool:
    sa, sb = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _check_identical(run: Path, reference: Path) -> None:
    assert _same_weights(reference / "final.pt", run / "final.pt"), f"{run} differs"
    assert json.loads((reference / "history.json").read_text()) == json.loads(
        (run / "history.json").read_text()
    )


@pytest.mark.e2e
def test_kill_9_during_saves_then_resume_is_bit_identical(tmp_path, reliability_scale, figures):
    start = time.perf_counter()
    full = _train(tmp_path / "full")
    assert full.returncode == 0, full.stderr[-3000:]
    duration = time.perf_counter() - start
    rng = random.Random(1234 + reliability_scale)
    runs, steps, kills, target = 0, [], 0, len(STAGES) * reliability_scale
    cut = tmp_path / "cut-0"
    while kills < target:
        assert runs <= 3 * target, (
            f"{runs} runs reached the end without a kill: a stage never fires"
        )
        stage = STAGES[kills % len(STAGES)]
        nth = rng.uniform(0.3, 0.9) * duration if stage == "timer" else rng.randint(2, 8)
        run = _train(cut, stage, nth, resume=True)
        if run.returncode == 0:  # this run reached the end: check it, start another
            _check_identical(cut, tmp_path / "full")
            runs += 1
            cut = tmp_path / f"cut-{runs}"
            continue
        assert run.returncode == -signal.SIGKILL, run.stderr[-3000:]
        kills += 1
        last = find_last(cut / "ckpt")
        assert last is not None or stage == "timer", f"no checkpoint after kill {kills} ({stage})"
        if last is not None:
            steps.append(load_checkpoint(last).meta["global_step"])
        for path in list_checkpoints(cut / "ckpt"):  # every complete checkpoint loads
            load_checkpoint(path)
    resumed = _train(cut, resume=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _check_identical(cut, tmp_path / "full")
    figures["training_kills"] = {"kills_survived": kills, "resumed_runs_bit_identical": runs + 1,
                                 "steps_of_last_checkpoint_after_each_kill": steps}  # fmt: skip
    assert steps and max(steps) > min(steps)


# --------------------------------------------------------------------------- failing saves
def _state(value: float) -> dict:
    return {"model_state": {"w": torch.full((4, 4), value)},
            "trainer_state": {"step": int(value)}, "meta": {"global_step": int(value)}}  # fmt: skip


def _fail(code: int):
    def failing(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    return failing


FAILURES = {
    "weights_disk_full": ("safetensors.torch.save_file", errno.ENOSPC, "No space left"),
    "state_disk_full": ("torch.save", errno.ENOSPC, "No space left"),
    "meta_disk_full": ("json.dump", errno.ENOSPC, "No space left"),
    "tmpdir_no_permission": ("tempfile.mkdtemp", errno.EACCES, "Permission denied"),
    "rename_no_permission": ("os.replace", errno.EACCES, "Permission denied"),
}


@pytest.mark.parametrize("failure", sorted(FAILURES))
def test_failed_save_keeps_the_previous_checkpoint_and_says_why(tmp_path, monkeypatch, failure):
    target, code, message = FAILURES[failure]
    path = tmp_path / "ckpts" / "last"
    save_checkpoint(path, **_state(1.0))
    monkeypatch.setattr(target, _fail(code))
    with pytest.raises(CheckpointError, match=message) as info:
        save_checkpoint(path, **_state(2.0))
    monkeypatch.undo()
    assert str(path) in str(info.value)
    kept = load_checkpoint(path)
    assert torch.equal(kept.model_state["w"], torch.full((4, 4), 1.0))
    assert kept.meta["global_step"] == 1
    assert [p.name for p in path.parent.iterdir()] == ["last"]  # no .tmp-* or .old-* left


def test_disk_full_during_fit_stops_with_the_reason_and_last_checkpoint_loads(
    tmp_path, monkeypatch
):
    class DiskFullAfter(ember.Callback):
        def on_train_batch_end(self, trainer, module, logs, i):
            if trainer.global_step == 4:
                monkeypatch.setattr("safetensors.torch.save_file", _fail(errno.ENOSPC))

    torch.manual_seed(0)
    net = ember.compile(torch.nn.Linear(8, 2), "sgd", "cross_entropy", lr=0.1)
    loader = ember.data.make_loader(torch.randn(64, 8), torch.randint(0, 2, (64,)), batch_size=8)
    checkpoints = ember.ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=3)
    trainer = ember.Trainer(max_epochs=1, default_root_dir=tmp_path, enable_progress_bar=False,
                            logger=False, callbacks=[DiskFullAfter(), checkpoints])  # fmt: skip
    with pytest.raises(CallbackError, match="ModelCheckpoint.*No space left on device") as info:
        trainer.fit(net, loader)
    assert isinstance(info.value.__cause__, CheckpointError)
    monkeypatch.undo()
    last = find_last(tmp_path / "ckpt")
    assert last is not None and load_checkpoint(last).meta["global_step"] == 3


# --------------------------------------------------------------------------- meta.json values
@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    """A finished two-epoch run with its last checkpoint."""
    import ember
    from ember.data import make_loader

    root = tmp_path_factory.mktemp("meta")
    torch.manual_seed(0)
    net = ember.compile(torch.nn.Linear(4, 2), "sgd", "cross_entropy", lr=0.1)
    x, y = torch.randn(32, 4), torch.randint(0, 2, (32,))
    trainer = ember.Trainer(max_epochs=2, default_root_dir=root, enable_progress_bar=False,
                            callbacks=[ember.ModelCheckpoint()])  # fmt: skip
    trainer.fit(net, make_loader(x, y, batch_size=8))
    return root, trainer.checkpoint_callback.last_model_path


@pytest.mark.parametrize(
    "field,value",
    [("epoch", -5), ("epoch", "1"), ("global_step", 1.5), ("batch_in_epoch", True),
     ("samples_in_epoch", None), ("should_stop", "no"), ("history", []),
     ("logged_metrics", {"loss": "low"}), ("format", "keras")],
)  # fmt: skip
def test_a_tampered_meta_json_is_refused_naming_the_field(saved_run, tmp_path, field, value):
    import shutil

    import ember
    from ember.data import make_loader
    from ember.train.checkpoint import CheckpointError

    _, last = saved_run
    ckpt = Path(shutil.copytree(last, tmp_path / "ckpt"))
    meta = json.loads((ckpt / "meta.json").read_text())
    meta[field] = value
    (ckpt / "meta.json").write_text(json.dumps(meta))
    net = ember.compile(torch.nn.Linear(4, 2), "sgd", "cross_entropy", lr=0.1)
    trainer = ember.Trainer(max_epochs=4, default_root_dir=tmp_path, enable_progress_bar=False)
    loader = make_loader(torch.randn(8, 4), torch.randint(0, 2, (8,)), batch_size=8)
    with pytest.raises(CheckpointError, match=f"field '{field}'"):
        trainer.fit(net, loader, ckpt_path=ckpt)
    assert trainer.global_step == 0, "training ran from a refused checkpoint"
