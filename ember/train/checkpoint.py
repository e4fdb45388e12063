"""Atomic training checkpoints stored as a directory.

A checkpoint is a directory holding three files::

    step-000100/
      weights.safetensors   model_state (safetensors: no pickle)
      trainer_state.pt      optimizer / scheduler / scaler / RNG / callback state (torch.save,
                            read back with torch.load(weights_only=True) only)
      meta.json             the caller's JSON metadata plus an "ember_checkpoint" header
                            {"format", "format_version", "sha256" of the two files above};
                            written last

:func:`save_checkpoint` writes into a ``.tmp-*`` sibling directory, fsyncs every file, renames it
into place and fsyncs the parent, so a crash at any point leaves a complete checkpoint: the new
one, or the old one (kept at ``path`` or, between the two renames of a replacement, at a
``.old-<name>-*`` sibling that :func:`find_last` also considers). A directory without a valid
``meta.json`` is incomplete. All failures raise :class:`CheckpointError`, a subclass of
:class:`OSError`, whose message names the path and the problem.

This module holds the public API and the checks on what is stored; the file-level machinery
(staging, atomic moves, fsync, digests, meta.json validation, scans) is in
:mod:`ember.train.checkpoint_files`.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ember.train import checkpoint_files as files
from ember.train.checkpoint_files import (
    FORMAT,
    FORMAT_VERSION,
    HEADER,
    META_FILE,
    STATE_FILE,
    TMP_PREFIX,
    WEIGHTS_FILE,
    CheckpointError,
)

__all__ = [
    "copy_checkpoint",
    "FORMAT",
    "FORMAT_VERSION",
    "Checkpoint",
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint",
    "find_last",
    "list_checkpoints",
]

logger = logging.getLogger(__name__)

# Types torch.load(weights_only=True) reads back without extra allow-listing.
_LEAF_TYPES = (bool, int, float, complex, str, bytes, type(None), torch.dtype, torch.device)
_CONTAINER_TYPES = (dict, OrderedDict, list, tuple, set, torch.Size)


@dataclass
class Checkpoint:
    """A checkpoint read back by :func:`load_checkpoint`.

    Args:
        model_state: tensor name -> tensor, ready for ``model.load_state_dict``.
        trainer_state: the ``trainer_state`` dict given to :func:`save_checkpoint`.
        meta: the ``meta`` dict given to :func:`save_checkpoint` (without the keys ember adds).
        path: the checkpoint directory.

    Example:
        >>> ckpt = load_checkpoint("runs/ckpt/last")
        >>> model.load_state_dict(ckpt.model_state)
    """

    model_state: dict[str, torch.Tensor]
    trainer_state: dict[str, Any]
    meta: dict[str, Any]
    path: Path


def save_checkpoint(
    path: str | os.PathLike,
    *,
    model_state: dict[str, torch.Tensor],
    trainer_state: dict[str, Any],
    meta: dict[str, Any],
) -> Path:
    """Write a checkpoint directory atomically, replacing any checkpoint already at ``path``.

    Args:
        path: the checkpoint directory to create. Missing parents are created. An existing
            directory is replaced only if it is an ember checkpoint (or a half-written one).
        model_state: tensor name -> tensor (``model.state_dict()``); shared or non-contiguous
            tensors are copied, CUDA tensors moved to the CPU.
        trainer_state: tensors, numbers, strings, None and (nested) dicts, lists and tuples,
            e.g. optimizer/scheduler/scaler state dicts and :func:`ember.train.rng.get_rng_state`.
        meta: JSON-serialisable metadata (loop position such as ``global_step``, hparams).
            The key ``ember_checkpoint`` is reserved for the format header.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        TypeError, ValueError: an argument cannot be stored (nothing is written).
        CheckpointError: writing failed; the temp directory is removed and any previous
            checkpoint at ``path`` is left intact.

    Example:
        >>> save_checkpoint(
        ...     "runs/ckpt/step-100",
        ...     model_state=model.state_dict(),
        ...     trainer_state={"optimizer": opt.state_dict(), "rng": get_rng_state()},
        ...     meta={"global_step": 100, "epoch": 1},
        ... )
    """
    path = Path(path)
    tensors = _prepare_weights(model_state)
    if not isinstance(trainer_state, dict):
        raise TypeError(
            "Received an invalid value for `trainer_state`, expected a dict. "
            f"Received: {type(trainer_state).__name__}"
        )
    _check_storable(trainer_state, "trainer_state")
    _check_meta(meta)
    files.check_replaceable(path)
    tmp: Path | None = None
    done = False
    try:
        with files.stage(path, f"creating a temporary directory in {path.parent}"):
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{path.name}-", dir=path.parent))
        files.write_files(path, tmp, tensors, trainer_state, meta)
        files.move_into_place(tmp, path)
        done = True
    finally:
        if not done and tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    logger.info("Saved checkpoint %s", path)
    return path


def copy_checkpoint(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Make `dst` a copy of the complete checkpoint `src`, atomically, with hard links where possible.

    Checkpoint files are never modified in place (every save writes new files and renames), so
    two directories may share them: keeping `last` beside a best-k checkpoint costs no second write.

    Example:
        >>> copy_checkpoint("ckpts/epoch=3-step=120", "ckpts/last")
    """
    src, dst = Path(src), Path(dst)
    files.read_meta(src)  # refuses to copy an incomplete or foreign directory
    files.check_replaceable(dst)
    tmp: Path | None = None
    done = False
    try:
        with files.stage(dst, f"copying {src}"):
            tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{dst.name}-", dir=dst.parent))
            for name in (WEIGHTS_FILE, STATE_FILE, META_FILE):  # meta.json last: marks completion
                try:
                    os.link(src / name, tmp / name)
                except OSError:
                    shutil.copy2(src / name, tmp / name)
            files.fsync_dir(tmp)
        files.move_into_place(tmp, dst)
        done = True
    finally:
        if not done and tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return dst


def load_checkpoint(
    path: str | os.PathLike, *, map_location: str | torch.device = "cpu"
) -> Checkpoint:
    """Read and verify a checkpoint written by :func:`save_checkpoint`.

    The format marker, version and the sha256 of each file are checked before anything is
    deserialised; ``trainer_state.pt`` is read with ``torch.load(weights_only=True)`` only.

    Args:
        path: the checkpoint directory.
        map_location: device for the loaded tensors (default ``"cpu"``).

    Returns:
        A :class:`Checkpoint`.

    Raises:
        CheckpointError: ``path`` is missing, not a directory, not an ember checkpoint,
            incomplete (half-written), corrupt, unsafe, or written by a newer format version.

    Example:
        >>> ckpt = load_checkpoint(find_last("runs/ckpt"))
        >>> ckpt.meta["global_step"]
        100
    """
    path = Path(path)
    raw = files.read_meta(path)
    weights_file = path / WEIGHTS_FILE
    files.verify_digest(path, WEIGHTS_FILE, raw, files.hash_file(weights_file))
    state_bytes = (path / STATE_FILE).read_bytes()
    files.verify_digest(path, STATE_FILE, raw, hashlib.sha256(state_bytes).hexdigest())
    from safetensors.torch import load_file

    try:
        model_state = load_file(weights_file, device=str(map_location))
    except Exception as e:
        raise CheckpointError(path, f"corrupt: cannot read {WEIGHTS_FILE}: {e}") from e
    try:
        state = torch.load(io.BytesIO(state_bytes), map_location=map_location, weights_only=True)
    except Exception as e:
        raise CheckpointError(
            path,
            f"refused or corrupt {STATE_FILE}: torch.load(weights_only=True) failed, so it holds "
            f"objects other than tensors and plain Python values, or is damaged: {e}",
        ) from e
    meta = {k: v for k, v in raw.items() if k != HEADER}
    return Checkpoint(model_state=model_state, trainer_state=state, meta=meta, path=path)


def list_checkpoints(dirpath: str | os.PathLike) -> list[Path]:
    """List the complete checkpoints directly inside ``dirpath``, oldest first.

    Complete means a valid ``meta.json`` of this format and all files present; checksums are
    not verified here (see :func:`find_last`). ``.tmp-*`` directories are skipped silently,
    incomplete or unreadable checkpoints with a warning.

    Args:
        dirpath: a directory holding checkpoint directories. A missing one gives ``[]``.

    Returns:
        Paths sorted by ``meta["global_step"]`` (missing counts as -1), then by modification time.

    Example:
        >>> [p.name for p in list_checkpoints("runs/ckpt")]
        ['step-50', 'step-100']
    """
    return [p for p, _ in files.scan(Path(dirpath))]


def find_last(dirpath: str | os.PathLike) -> Path | None:
    """Return the newest complete, uncorrupted checkpoint directly inside ``dirpath``.

    Newest means the highest ``meta["global_step"]``, then the latest modification time.
    Candidates are checksum-verified newest first; corrupt ones are skipped with a warning.

    Args:
        dirpath: a directory holding checkpoint directories.

    Returns:
        The checkpoint path, or ``None`` if there is none (or ``dirpath`` does not exist).

    Example:
        >>> last = find_last("runs/ckpt")
        >>> ckpt = load_checkpoint(last) if last is not None else None
    """
    for path, raw in reversed(files.scan(Path(dirpath))):
        try:
            for name in files.DATA_FILES:
                files.verify_digest(path, name, raw, files.hash_file(path / name))
        except OSError as e:  # CheckpointError included
            logger.warning("Skipping checkpoint: %s", e)
            continue
        return path
    return None


# ----------------------------------------------------------------------------- what can be stored


def _prepare_weights(model_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if not isinstance(model_state, dict):
        raise TypeError(
            "Received an invalid value for `model_state`, expected a dict of str -> Tensor "
            f"(model.state_dict()). Received: {type(model_state).__name__}"
        )
    seen: set[int] = set()
    tensors = {}
    for name, value in model_state.items():
        if not isinstance(name, str) or not isinstance(value, torch.Tensor):
            raise TypeError(
                "Received an invalid entry in `model_state`, expected str -> Tensor. "
                f"Received: {name!r} -> {type(value).__name__}"
            )
        t = value.detach().cpu()
        storage = t.untyped_storage().data_ptr()
        # safetensors refuses tensors that share memory or are not contiguous: copy those.
        if storage in seen or not t.is_contiguous() or t.nbytes != t.untyped_storage().nbytes():
            t = t.clone(memory_format=torch.contiguous_format)
        seen.add(storage)
        tensors[name] = t
    return tensors


def _check_storable(value: Any, where: str) -> None:
    """Raise TypeError if torch.load(weights_only=True) could not read `value` back."""
    if isinstance(value, torch.Tensor) and type(value) in (torch.Tensor, torch.nn.Parameter):
        return
    if type(value) in _LEAF_TYPES:
        return
    if type(value) in (dict, OrderedDict):
        for key, item in value.items():
            _check_storable(key, f"{where} key {key!r}")
            _check_storable(item, f"{where}[{key!r}]")
        return
    if type(value) in _CONTAINER_TYPES:
        for i, item in enumerate(value):
            _check_storable(item, f"{where}[{i}]")
        return
    raise TypeError(
        f"{where} has type {type(value).__module__}.{type(value).__qualname__}, which "
        "torch.load(weights_only=True) cannot read back. Allowed: tensors, bool, int, float, "
        "str, bytes, None, torch.dtype/device and dict, list, tuple, set of those "
        "(convert numpy values with .item() or torch.from_numpy)."
    )


def _check_meta(meta: dict[str, Any]) -> None:
    if not isinstance(meta, dict):
        raise TypeError(
            "Received an invalid value for `meta`, expected a JSON-serialisable dict. "
            f"Received: {type(meta).__name__}"
        )
    if HEADER in meta:
        raise ValueError(
            f"`meta` key {HEADER!r} is reserved for the checkpoint format header; use another name."
        )
    try:
        json.dumps(meta)
    except (TypeError, ValueError) as e:
        raise TypeError(f"`meta` must be JSON-serialisable: {e}") from e
