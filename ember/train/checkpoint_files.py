"""The files of a checkpoint directory: names, format header, atomic writes and validation.

This is the machinery under :mod:`ember.train.checkpoint`: writing the three files into a
``.tmp-*`` staging directory with fsync, moving it into place (the previous checkpoint goes
aside to ``.old-<name>-*`` until the new one is in), sha256 digests, reading and validating
``meta.json``, and scanning a directory for complete checkpoints. Every failure is a
:class:`CheckpointError` naming the checkpoint and the problem.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "ALL_FILES",
    "DATA_FILES",
    "FORMAT",
    "FORMAT_VERSION",
    "HEADER",
    "META_FILE",
    "STATE_FILE",
    "TMP_PREFIX",
    "WEIGHTS_FILE",
    "CheckpointError",
    "check_replaceable",
    "fsync_dir",
    "hash_file",
    "move_into_place",
    "read_meta",
    "remove_quietly",
    "scan",
    "stage",
    "verify_digest",
    "write_files",
]

logger = logging.getLogger(__name__)

FORMAT = "ember.checkpoint"
FORMAT_VERSION = 1
WEIGHTS_FILE = "weights.safetensors"
STATE_FILE = "trainer_state.pt"
META_FILE = "meta.json"
DATA_FILES = (WEIGHTS_FILE, STATE_FILE)
ALL_FILES = (META_FILE, *DATA_FILES)
HEADER = "ember_checkpoint"  # the one meta.json key the checkpoint format owns
TMP_PREFIX = ".tmp-"
_OLD_PREFIX = ".old-"
_CHUNK = 1 << 20


class CheckpointError(OSError):
    """A checkpoint could not be written or read; the message names the path and the problem.

    It subclasses :class:`OSError`: like other file errors it is about something on disk.

    Args:
        path: the checkpoint directory concerned.
        problem: what is wrong, e.g. ``"corrupt: weights.safetensors checksum mismatch"``.

    Example:
        >>> try:
        ...     load_checkpoint("missing-dir")
        ... except CheckpointError as e:
        ...     print(e.path)
        missing-dir
    """

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        super().__init__(f"Checkpoint {os.fspath(path)}: {problem}")
        self.path = Path(path)
        self.problem = problem


# ----------------------------------------------------------------------------- writing


def check_replaceable(path: Path) -> None:
    """Refuse to replace anything that is not (a possibly half-written) checkpoint.

    Args:
        path: where a checkpoint is about to be written.

    Raises:
        CheckpointError: ``path`` exists and is a file, a link or a foreign directory.
    """
    if not path.exists() and not path.is_symlink():
        return
    if path.is_symlink() or not path.is_dir():
        raise CheckpointError(path, "exists and is not a directory; refusing to replace it")
    names = {p.name for p in path.iterdir()}
    if names <= set(ALL_FILES):
        return
    try:
        read_meta(path)
    except CheckpointError:
        pass
    else:
        return
    raise CheckpointError(
        path,
        f"exists and is not an ember checkpoint (contains {sorted(names)[:5]}); "
        "refusing to replace it",
    )


@contextlib.contextmanager
def stage(path: Path, action: str) -> Iterator[None]:
    """Turn any failure inside into a CheckpointError naming the checkpoint and the action.

    Example:
        >>> with stage(path, f"writing {tmp / META_FILE}"):
        ...     write_meta()
    """
    try:
        yield
    except CheckpointError:
        raise
    except Exception as e:
        raise CheckpointError(path, f"{action} failed: {type(e).__name__}: {e}") from e


def write_files(
    path: Path, tmp: Path, tensors: dict[str, torch.Tensor], state: dict[str, Any], meta: dict
) -> None:
    """Write and fsync the weights, the trainer state and, last, meta.json into ``tmp``.

    Args:
        path: the checkpoint being written (named in errors).
        tmp: the staging directory.
        tensors: safetensors-ready weights.
        state: the trainer state for ``torch.save``.
        meta: the caller's metadata; the format header with both digests is added.
    """
    from safetensors.torch import save_file

    digests = {}
    with stage(path, f"writing {tmp / WEIGHTS_FILE}"):
        save_file(tensors, tmp / WEIGHTS_FILE)
        digests[WEIGHTS_FILE] = hash_file(tmp / WEIGHTS_FILE, fsync=True)
    with stage(path, f"writing {tmp / STATE_FILE}"):
        with open(tmp / STATE_FILE, "wb") as f:
            torch.save(state, f)
        digests[STATE_FILE] = hash_file(tmp / STATE_FILE, fsync=True)
    header = {"format": FORMAT, "format_version": FORMAT_VERSION, "sha256": digests}
    with stage(path, f"writing {tmp / META_FILE}"):
        with open(tmp / META_FILE, "w", encoding="utf-8") as f:
            json.dump({HEADER: header, **meta}, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        fsync_dir(tmp)


def move_into_place(tmp: Path, path: Path) -> None:
    """Rename the complete ``tmp`` to ``path``, keeping any previous checkpoint until it is in.

    Args:
        tmp: the staging directory, complete and synced.
        path: the checkpoint's final place.

    Raises:
        CheckpointError: a rename failed; the previous checkpoint is moved back.
    """
    aside = None
    if path.exists():
        aside = path.parent / f"{_OLD_PREFIX}{path.name}-{secrets.token_hex(4)}"
        with stage(path, f"moving the previous checkpoint aside to {aside}"):
            os.replace(path, aside)
    try:
        with stage(path, f"renaming {tmp} to {path}"):
            os.replace(tmp, path)
    except CheckpointError:
        if aside is not None:
            try:
                os.replace(aside, path)
            except OSError:
                logger.error("Could not move the previous checkpoint back from %s", aside)
        raise
    with stage(path, f"syncing directory {path.parent}"):
        fsync_dir(path.parent)
    if aside is not None:
        remove_quietly(aside)


def remove_quietly(path: Path) -> None:
    """Delete a checkpoint directory, meta.json first; failures are logged, not raised."""
    # meta.json goes first: a removal cut short leaves a dir that reads as incomplete.
    with contextlib.suppress(OSError):
        (path / META_FILE).unlink()
    shutil.rmtree(path, ignore_errors=True)
    if path.exists():
        logger.warning("Could not remove the previous checkpoint moved aside to %s", path)


def fsync_dir(path: Path) -> None:
    """Flush a directory's entries to disk (a no-op where directories cannot be opened)."""
    if os.name != "posix":  # directories cannot be opened for fsync on Windows
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------- reading


def read_meta(path: Path) -> dict[str, Any]:
    """Return meta.json's content after checking the format, version and that files exist.

    Args:
        path: a checkpoint directory.

    Returns:
        The parsed meta.json, format header included.

    Raises:
        CheckpointError: missing, not a directory, foreign, incomplete, corrupt or too new.
    """
    if not path.exists():
        raise CheckpointError(path, "does not exist" + _aside_hint(path))
    if not path.is_dir():
        raise CheckpointError(path, "not a directory; a checkpoint is a directory")
    if not (path / META_FILE).is_file():
        present = [n for n in DATA_FILES if (path / n).exists()]
        if present or path.name.startswith(TMP_PREFIX):
            raise CheckpointError(
                path,
                f"incomplete (half-written): has {present} but no {META_FILE}; "
                "a save was probably interrupted",
            )
        raise CheckpointError(
            path, f"is not an ember checkpoint (no {META_FILE}): expected files {list(ALL_FILES)}"
        )
    try:
        raw = json.loads((path / META_FILE).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(path, f"corrupt: {META_FILE} is not valid JSON: {e}") from e
    _check_header(path, raw)
    missing = [n for n in DATA_FILES if not (path / n).is_file()]
    if missing:
        raise CheckpointError(path, f"incomplete (half-written): missing {missing}")
    return raw


def verify_digest(path: Path, name: str, raw: dict[str, Any], actual: str) -> None:
    """Raise CheckpointError unless ``actual`` is the sha256 that meta.json records for ``name``."""
    expected = raw[HEADER]["sha256"].get(name)
    if expected != actual:
        raise CheckpointError(
            path,
            f"corrupt: {name} checksum mismatch (meta.json says {expected}, file has {actual})",
        )


def hash_file(file: Path, *, fsync: bool = False) -> str:
    """The sha256 hex digest of ``file``; with ``fsync=True`` the file is synced first."""
    digest = hashlib.sha256()
    with open(file, "r+b" if fsync else "rb") as f:
        if fsync:
            os.fsync(f.fileno())
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def scan(dirpath: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Complete checkpoints in ``dirpath`` with their meta, oldest first.

    Args:
        dirpath: a directory of checkpoint directories; a missing one gives ``[]``.

    Returns:
        ``(path, meta)`` pairs sorted by ``global_step`` (missing counts as -1), then mtime.
    """
    if not dirpath.exists():
        return []
    if not dirpath.is_dir():
        raise CheckpointError(dirpath, "not a directory; expected a directory of checkpoints")
    found = []
    for child in dirpath.iterdir():
        if child.name.startswith(TMP_PREFIX) or not child.is_dir():
            continue
        try:
            raw = read_meta(child)
        except CheckpointError as e:
            if "is not an ember checkpoint" in e.problem:
                logger.debug("Ignoring %s: %s", child, e.problem)
            else:
                logger.warning("Skipping checkpoint: %s", e)
            continue
        step = raw.get("global_step")
        step = step if isinstance(step, int) and not isinstance(step, bool) else -1
        found.append(((step, (child / META_FILE).stat().st_mtime_ns), child, raw))
    found.sort(key=lambda item: item[0])
    return [(child, raw) for _, child, raw in found]


def _check_header(path: Path, raw: Any) -> None:
    header = raw.get(HEADER) if isinstance(raw, dict) else None
    fmt = header.get("format") if isinstance(header, dict) else None
    if fmt != FORMAT:
        raise CheckpointError(
            path,
            f"is not an ember checkpoint: {META_FILE} has {HEADER}.format={fmt!r}, "
            f"expected {FORMAT!r}",
        )
    version = header.get("format_version")
    if not isinstance(version, int) or not isinstance(header.get("sha256"), dict):
        raise CheckpointError(path, f"corrupt: {META_FILE} lacks format_version or sha256")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            path,
            f"written by a newer format version {version} (this ember reads up to "
            f"{FORMAT_VERSION}); upgrade ember to read it",
        )


def _aside_hint(path: Path) -> str:
    aside = sorted(path.parent.glob(f"{_OLD_PREFIX}{path.name}-*")) if path.parent.is_dir() else []
    if not aside:
        return ""
    return f" (an interrupted save left the previous checkpoint at {aside[-1]}; rename it back)"
