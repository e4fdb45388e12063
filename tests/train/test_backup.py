"""BackupAndRestore: a fit interrupted anywhere and run again ends bit-identical to one never stopped."""

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import ember
from ember import layers
from ember.callbacks import BackupAndRestore, Callback, EarlyStopping


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 6)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int64)


def _model():
    torch.manual_seed(3)
    model = ember.Sequential(
        [
            layers.Input((6,)),
            layers.Dense(16, activation="relu"),
            layers.Dropout(0.2),
            layers.Dense(2),
        ]
    )
    model.compile("adam", "cross_entropy", ["accuracy"], lr=1e-2)
    return model


class _Crash(Callback):
    def __init__(self, at_step):
        self.at_step = at_step

    def on_train_batch_end(self, trainer, module, logs, batch_idx):
        if trainer.global_step == self.at_step:
            raise KeyboardInterrupt  # like Ctrl-C: not a callback error


class _Count(Callback):
    steps = 0

    def on_train_batch_end(self, trainer, module, logs, batch_idx):
        self.steps += 1


def _fit(model, callbacks):
    x, y = _data()
    return model.fit(
        x, y, epochs=4, batch_size=16, validation_split=0.25, callbacks=callbacks,
        seed=5, verbose=False, logger=False, enable_report=False, enable_checkpointing=False,
    )  # fmt: skip


# 72 training samples in batches of 16: 5 steps an epoch, 20 in all; the crash is at step 12.
@pytest.mark.parametrize("save_freq, steps_left", [("epoch", 10), (4, 12), (3, 11)])
def test_a_rerun_after_an_interruption_continues_bit_identical(tmp_path, save_freq, steps_left):
    full_model = _model()
    full = _fit(full_model, [EarlyStopping(patience=10)])
    backup = tmp_path / "backup"
    model = _model()
    with pytest.raises(KeyboardInterrupt):
        _fit(model, [EarlyStopping(patience=10), BackupAndRestore(backup, save_freq), _Crash(12)])
    assert (backup / "backup").is_dir()
    again = _model()  # a fresh process would build the model again
    count = _Count()
    resumed = _fit(again, [EarlyStopping(patience=10), BackupAndRestore(backup, save_freq), count])
    assert count.steps == steps_left  # continued from the backup, not from scratch
    a, b = full_model.state_dict(), again.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.history == full.history
    assert not backup.exists()  # a completed fit deletes its backup: the next one starts fresh


def test_backup_can_be_kept_and_save_freq_is_checked(tmp_path):
    _fit(_model(), [BackupAndRestore(tmp_path / "b", delete_checkpoint=False)])
    assert (tmp_path / "b" / "backup" / "meta.json").is_file()
    with pytest.raises(ValueError, match="expected 'epoch' or a positive integer"):
        BackupAndRestore(tmp_path, save_freq=0)


SCRIPT = textwrap.dedent(
    """
    import os, sys, numpy as np, torch, ember, ember.callbacks
    from ember import layers
    out, kill_at = sys.argv[1], int(sys.argv[2])

    class Kill(ember.Callback):
        def on_train_batch_end(self, trainer, module, logs, i):
            if trainer.global_step == kill_at:
                os.kill(os.getpid(), 9)

    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    torch.manual_seed(3)
    model = ember.Sequential([layers.Input((6,)), layers.Dense(16, activation="relu"),
                              layers.Dropout(0.2), layers.Dense(2)])
    model.compile("adam", "cross_entropy", lr=1e-2)
    callbacks = [ember.callbacks.BackupAndRestore(os.path.join(out, "backup"), save_freq=3)]
    callbacks += [Kill()] if kill_at else []
    steps = []
    callbacks.append(ember.callbacks.LambdaCallback(on_batch_end=lambda b, logs: steps.append(b)))
    model.fit(x, y, epochs=3, batch_size=16, callbacks=callbacks, seed=5, verbose=False,
              logger=False, enable_report=False, enable_checkpointing=False)
    print("steps run:", len(steps))
    torch.save(model.state_dict(), os.path.join(out, "weights.pt"))
    """
)


@pytest.mark.e2e
def test_a_killed_process_rerun_with_the_same_backup_dir_ends_bit_identical(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def run(out, kill_at=0):
        out.mkdir(exist_ok=True)
        return subprocess.run([sys.executable, str(script), str(out), str(kill_at)],
                              capture_output=True, text=True, timeout=300, env=env)  # fmt: skip

    full = run(tmp_path / "full")
    assert full.returncode == 0 and "steps run: 18" in full.stdout, full.stderr
    assert (
        run(tmp_path / "cut", kill_at=8).returncode == -signal.SIGKILL
    )  # mid-epoch 2 (6 steps an epoch)
    rerun = run(tmp_path / "cut")
    assert rerun.returncode == 0, rerun.stderr
    assert "steps run: 12" in rerun.stdout  # 18 in all; the newest backup was at step 6
    a = torch.load(tmp_path / "full" / "weights.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "weights.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
