import hashlib
import json
import logging
import os
import pickle
import random
import tempfile

import numpy as np
import pytest
import safetensors.torch
import torch

from ember.train.checkpoint import (
    FORMAT,
    FORMAT_VERSION,
    CheckpointError,
    find_last,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from ember.train.rng import get_rng_state, seed_everything, set_rng_state


def _model_state():
    emb = torch.arange(12, dtype=torch.float32).reshape(4, 3)
    return {
        "emb.weight": emb,
        "head.weight": emb,  # tied weights share storage
        "proj.weight": torch.randn(3, 5).t(),  # non-contiguous
        "half": torch.randn(2, 2, dtype=torch.bfloat16),
        "steps": torch.tensor(7, dtype=torch.int64),
        "empty": torch.zeros(0),
    }


def _save(path, step=1, **overrides):
    kwargs = {
        "model_state": {"w": torch.full((2,), float(step))},
        "trainer_state": {"step": step},
        "meta": {"global_step": step},
    }
    kwargs.update(overrides)
    return save_checkpoint(path, **kwargs)


def _rewrite_header(path, **changes):
    meta = json.loads((path / "meta.json").read_text())
    meta["ember_checkpoint"].update(changes)
    (path / "meta.json").write_text(json.dumps(meta))


def _siblings(path):
    return sorted(p.name for p in path.parent.iterdir() if p != path)


def test_round_trip_is_bit_exact(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    state = _model_state()
    trainer_state = {
        "optimizer": opt.state_dict(),
        "callbacks": {"early_stopping": {"best": 0.5, "wait": 2, "mode": "min", "prev": None}},
        "metric": [torch.tensor([1.0, 2.0]), (3, "x")],
    }
    meta = {"format": "mine", "global_step": 10, "epoch": 1, "hparams": {"lr": 0.1}}
    out = save_checkpoint(
        tmp_path / "ckpt", model_state=state, trainer_state=trainer_state, meta=meta
    )

    ckpt = load_checkpoint(out)
    assert ckpt.path == tmp_path / "ckpt"
    assert ckpt.meta == meta
    assert set(ckpt.model_state) == set(state)
    for name, tensor in state.items():
        assert ckpt.model_state[name].dtype == tensor.dtype
        assert torch.equal(ckpt.model_state[name], tensor), name
    assert torch.equal(ckpt.trainer_state["metric"][0], torch.tensor([1.0, 2.0]))
    assert ckpt.trainer_state["callbacks"] == trainer_state["callbacks"]
    restored = torch.optim.Adam(torch.nn.Linear(3, 2).parameters(), lr=0.1)
    restored.load_state_dict(ckpt.trainer_state["optimizer"])
    exp_avg = opt.state_dict()["state"][0]["exp_avg"]
    assert torch.equal(restored.state_dict()["state"][0]["exp_avg"], exp_avg)
    assert _siblings(out) == []  # no temp dir left behind


def test_rng_state_restores_through_checkpoint(tmp_path):
    seed_everything(3)
    path = _save(tmp_path / "ckpt", trainer_state={"rng": get_rng_state()})
    expected = (torch.rand(3).tolist(), np.random.rand(3).tolist(), random.random())
    set_rng_state(load_checkpoint(path).trainer_state["rng"])
    assert (torch.rand(3).tolist(), np.random.rand(3).tolist(), random.random()) == expected


def test_meta_json_records_format_and_checksums(tmp_path):
    path = _save(tmp_path / "ckpt", step=4)
    meta = json.loads((path / "meta.json").read_text())
    header = meta["ember_checkpoint"]
    assert header["format"] == FORMAT
    assert header["format_version"] == FORMAT_VERSION
    assert meta["global_step"] == 4
    for name in ("weights.safetensors", "trainer_state.pt"):
        assert header["sha256"][name] == hashlib.sha256((path / name).read_bytes()).hexdigest()


def test_save_replaces_previous_checkpoint(tmp_path):
    path = _save(tmp_path / "last", step=1)
    _save(path, step=2)
    assert load_checkpoint(path).meta["global_step"] == 2
    assert _siblings(path) == []  # old copy moved aside and removed


def _fail_save_file(tensors, filename, metadata=None):
    with open(filename, "wb") as f:
        f.write(b"half a file")
    raise OSError(28, "No space left on device")


def _fail_torch_save(obj, f, *args, **kwargs):
    raise OSError(28, "No space left on device")


@pytest.mark.parametrize(
    ("target", "attr", "fake", "message"),
    [
        (safetensors.torch, "save_file", _fail_save_file, r"writing .*weights\.safetensors failed"),
        (torch, "save", _fail_torch_save, r"writing .*trainer_state\.pt failed"),
        (os, "fsync", lambda fd: _fail_torch_save(None, None), "No space left on device"),
    ],
)
def test_failed_write_keeps_old_checkpoint_and_cleans_up(
    tmp_path, monkeypatch, target, attr, fake, message
):
    path = _save(tmp_path / "last", step=1)
    monkeypatch.setattr(target, attr, fake)
    with pytest.raises(CheckpointError, match=message) as info:
        _save(path, step=2)
    monkeypatch.undo()
    assert str(path) in str(info.value)
    assert load_checkpoint(path).meta["global_step"] == 1
    assert _siblings(path) == []


def test_failed_rename_puts_old_checkpoint_back(tmp_path, monkeypatch):
    path = _save(tmp_path / "last", step=1)
    real_replace = os.replace

    def replace(src, dst):
        if os.path.basename(src).startswith(".tmp-"):
            raise PermissionError(13, "Permission denied", str(dst))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(CheckpointError, match=r"renaming .*\.tmp-last-.* failed: PermissionError"):
        _save(path, step=2)
    monkeypatch.undo()
    assert load_checkpoint(path).meta["global_step"] == 1
    assert _siblings(path) == []


def test_unwritable_parent_gives_clear_error(tmp_path, monkeypatch):
    def mkdtemp(prefix=None, dir=None, **kwargs):
        raise PermissionError(13, "Permission denied", str(dir))

    monkeypatch.setattr(tempfile, "mkdtemp", mkdtemp)
    with pytest.raises(
        CheckpointError, match=r"creating a temporary directory in .* Permission denied"
    ):
        _save(tmp_path / "ckpt")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores permissions")
def test_read_only_parent_gives_clear_error(tmp_path):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        with pytest.raises(CheckpointError, match=r"ro/ckpt: creating a temporary directory"):
            _save(parent / "ckpt")
    finally:
        parent.chmod(0o755)
    assert list(parent.iterdir()) == []


def test_refuses_to_replace_a_directory_that_is_not_a_checkpoint(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(
        CheckpointError, match="is not an ember checkpoint .*refusing to replace it"
    ):
        _save(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_bad_inputs_are_rejected_before_writing(tmp_path):
    path = tmp_path / "ckpt"
    with pytest.raises(TypeError, match=r"expected str -> Tensor. Received: 'w' -> list"):
        _save(path, model_state={"w": [1.0]})
    with pytest.raises(TypeError, match=r"trainer_state\['x'\]\[0\] has type numpy.float64"):
        _save(path, trainer_state={"x": [np.float64(1.0)]})
    with pytest.raises(TypeError, match="`meta` must be JSON-serialisable"):
        _save(path, meta={"when": object()})
    with pytest.raises(ValueError, match="'ember_checkpoint' is reserved"):
        _save(path, meta={"ember_checkpoint": "mine"})
    assert not path.exists()


def test_load_errors_name_the_problem(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointError, match="file: not a directory"):
        load_checkpoint(tmp_path / "file")
    (tmp_path / "other").mkdir()
    with pytest.raises(
        CheckpointError, match=r"is not an ember checkpoint \(no meta.json\): expected files"
    ):
        load_checkpoint(tmp_path / "other")
    half = _save(tmp_path / "half")
    (half / "meta.json").unlink()
    with pytest.raises(CheckpointError, match=r"incomplete \(half-written\)"):
        load_checkpoint(half)


def test_missing_file_is_incomplete(tmp_path):
    path = _save(tmp_path / "ckpt")
    (path / "trainer_state.pt").unlink()
    with pytest.raises(
        CheckpointError, match=r"incomplete \(half-written\): missing \['trainer_state.pt'\]"
    ):
        load_checkpoint(path)


def test_flipped_byte_is_corrupt(tmp_path):
    path = _save(tmp_path / "ckpt")
    data = bytearray((path / "weights.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (path / "weights.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt: weights.safetensors checksum mismatch"):
        load_checkpoint(path)


def test_invalid_meta_json_and_foreign_format(tmp_path):
    path = _save(tmp_path / "ckpt")
    (path / "meta.json").write_text('{"ember_checkpoint": {"format": "ember.checkpoint", "f')
    with pytest.raises(CheckpointError, match="corrupt: meta.json is not valid JSON"):
        load_checkpoint(path)
    (path / "meta.json").write_text('{"ember_checkpoint": {"format": "other"}}')
    with pytest.raises(
        CheckpointError,
        match="is not an ember checkpoint: meta.json has ember_checkpoint.format='other'",
    ):
        load_checkpoint(path)


def test_newer_format_version_is_refused(tmp_path):
    path = _save(tmp_path / "ckpt")
    _rewrite_header(path, format_version=FORMAT_VERSION + 1)
    expected = (
        f"newer format version {FORMAT_VERSION + 1} \\(this ember reads up to {FORMAT_VERSION}\\)"
    )
    with pytest.raises(CheckpointError, match=expected):
        load_checkpoint(path)


class _Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_malicious_pickle_is_refused_without_running(tmp_path, writer):
    live = tmp_path / "live-marker"
    pickle.loads(pickle.dumps(_Payload(live))).close()
    assert live.exists()  # the payload does run when unpickled unsafely

    marker = tmp_path / "pwned"
    path = _save(tmp_path / "ckpt")
    target = path / "trainer_state.pt"
    if writer == "pickle":
        target.write_bytes(pickle.dumps({"x": _Payload(marker)}, protocol=2))
    else:
        torch.save({"x": _Payload(marker)}, target)
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    sha256 = json.loads((path / "meta.json").read_text())["ember_checkpoint"]["sha256"]
    _rewrite_header(path, sha256={**sha256, "trainer_state.pt": digest})
    with pytest.raises(CheckpointError, match=r"refused or corrupt trainer_state.pt"):
        load_checkpoint(path)
    assert not marker.exists()


def test_find_last_skips_incomplete_tmp_and_corrupt(tmp_path, caplog):
    root = tmp_path / "ckpts"
    _save(root / "step-1", step=1)
    _save(root / "step-3", step=3)
    corrupt = _save(root / "step-5", step=5)
    (corrupt / "trainer_state.pt").write_bytes(b"garbage")
    half = _save(root / "step-7", step=7)
    (half / "meta.json").unlink()
    _save(root / ".tmp-step-9-abc", step=9)  # complete content, but a temp dir
    (root / "logs").mkdir()
    (root / "notes.txt").write_text("x")

    with caplog.at_level(logging.WARNING, logger="ember.train.checkpoint"):
        assert find_last(root) == root / "step-3"
    assert "step-5: corrupt: trainer_state.pt checksum mismatch" in caplog.text
    assert "step-7: incomplete (half-written)" in caplog.text
    assert ".tmp-step-9" not in caplog.text and "logs" not in caplog.text
    assert [p.name for p in list_checkpoints(root)] == ["step-1", "step-3", "step-5"]


def test_find_last_orders_by_step_then_mtime(tmp_path):
    assert find_last(tmp_path / "missing") is None
    assert find_last(tmp_path) is None
    _save(tmp_path / "b", step=2)
    _save(tmp_path / "a", step=2)
    _save(tmp_path / "z", step=1)
    os.utime(tmp_path / "a" / "meta.json", ns=(10**18, 10**18))
    os.utime(tmp_path / "b" / "meta.json", ns=(2 * 10**18, 2 * 10**18))
    assert find_last(tmp_path) == tmp_path / "b"
    assert [p.name for p in list_checkpoints(tmp_path)] == ["z", "a", "b"]


def test_interrupted_replace_leaves_old_checkpoint_findable(tmp_path):
    path = _save(tmp_path / "last", step=4)
    # A crash between the two renames: the old checkpoint is aside, the new one still a temp dir.
    os.replace(path, tmp_path / ".old-last-1234abcd")
    _save(tmp_path / ".tmp-last-xyz", step=5)
    (tmp_path / ".tmp-last-xyz" / "meta.json").unlink()
    assert find_last(tmp_path) == tmp_path / ".old-last-1234abcd"
    with pytest.raises(
        CheckpointError, match=r"does not exist \(an interrupted save left .*\.old-last-1234abcd"
    ):
        load_checkpoint(path)


def test_files_and_directories_are_fsynced(tmp_path, monkeypatch):
    synced = set()
    real_fsync = os.fsync

    def fsync(fd):
        synced.add(os.fstat(fd).st_ino)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    path = _save(tmp_path / "ckpt")
    names = ["weights.safetensors", "trainer_state.pt", "meta.json"]
    expected = {os.stat(p).st_ino for p in [path / n for n in names] + [path, tmp_path]}
    assert expected <= synced
