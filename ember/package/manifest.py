"""The model package's manifest (``ember.json``): format, file digests and export-target records.

:func:`read_manifest` validates the format and version, :func:`write_manifest` replaces the file
atomically, :func:`verify_files` checks every listed file against its sha256, and
:func:`record_target` / :func:`remove_target` keep the export targets' entries in step with the
files on disk. :mod:`ember.package` re-exports all of these.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST",
    "PROGRAM",
    "SAMPLE",
    "WEIGHTS",
    "PackageError",
    "read_manifest",
    "record_target",
    "remove_target",
    "remove_target_dir",
    "is_listed_name",
    "sha256_file",
    "verify_files",
    "write_manifest",
]

FORMAT = "ember.package"
FORMAT_VERSION = 2  # 2: several named inputs/outputs of any dtype, dynamic axes
MANIFEST = "ember.json"
WEIGHTS = "weights.safetensors"
PROGRAM = "model.pt2"
SAMPLE = "sample.safetensors"


class PackageError(ValueError):
    """A model package is missing, malformed, tampered with, or too new for this ember."""


def read_manifest(path: str | os.PathLike) -> dict:
    """Read and validate ``ember.json``.

    Args:
        path: the package directory.

    Returns:
        The manifest as a dict.

    Raises:
        PackageError: missing/invalid manifest or a newer ``format_version`` than supported.

    Example:
        >>> read_manifest("digits")["signature"]["inputs"][0]["shape"]
        [-1, 1, 8, 8]
    """
    file = Path(path) / MANIFEST
    if not file.is_file():
        raise PackageError(f"Not a model package: {file} is missing")
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise PackageError(f"{file} is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise PackageError(f"{file} is not an ember package manifest (format != {FORMAT!r})")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise PackageError(
            f"Package format_version {version!r} is newer than this ember supports "
            f"({FORMAT_VERSION}). Upgrade ember: pip install -U ember"
        )
    return manifest


def write_manifest(path: str | os.PathLike, manifest: dict) -> None:
    """Atomically write ``ember.json`` (temporary file, then rename).

    Args:
        path: the package directory.
        manifest: the JSON-serialisable manifest.

    Example:
        >>> m = read_manifest("digits"); m["labels"] = list("0123456789"); write_manifest("digits", m)
    """
    path = Path(path)
    text = json.dumps(manifest, indent=2, sort_keys=False, allow_nan=False) + "\n"
    fd, tmp = tempfile.mkstemp(dir=path, prefix=".ember.json.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path / MANIFEST)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def record_target(path: str | os.PathLike, target: str, info: dict, files: list[str]) -> None:
    """Record an export target's figures and its files' sha256 in the manifest.

    Args:
        path: the package directory.
        target: target name, e.g. ``"onnx"``.
        info: JSON-serialisable figures (file, parity, sizes, tolerance, ...).
        files: paths relative to the package directory written by the target.

    Example:
        >>> record_target("digits", "onnx", {"file": "model.onnx", "max_abs_diff": 1e-6}, ["model.onnx"])
    """
    path = Path(path)
    manifest = read_manifest(path)
    for name in files:
        if not (path / name).is_file():
            raise PackageError(f"Target {target!r} lists {name!r}, which is not in {path}")
        manifest["files"][name] = sha256_file(path / name)
    manifest.setdefault("targets", {})[target] = info
    write_manifest(path, manifest)


def remove_target(path: str | os.PathLike, target: str, files: list[str]) -> None:
    """Delete a target's files and its record (used when a target fails parity).

    Args:
        path: the package directory.
        target: target name.
        files: paths relative to the package directory to delete.

    Example:
        >>> remove_target("digits", "int8", ["model.int8.onnx"])
    """
    path = Path(path)
    manifest = read_manifest(path)
    for name in files:
        (path / name).unlink(missing_ok=True)
        manifest["files"].pop(name, None)
    manifest.get("targets", {}).pop(target, None)
    write_manifest(path, manifest)


def remove_target_dir(path: str | os.PathLike, target: str) -> None:
    """Delete a target that lives in its own folder (`web/`, `cpp/`): its files, record and folder.

    Example:
        >>> remove_target_dir("digits", "web")
    """
    path = Path(path)
    manifest = read_manifest(path)
    old = [name for name in manifest["files"] if name.startswith(f"{target}/")]
    if old or target in manifest.get("targets", {}):
        remove_target(path, target, old)
    shutil.rmtree(path / target, ignore_errors=True)


def verify_files(path: Path, manifest: dict, names: list[str] | None = None) -> None:
    """Check that the manifest's files exist and match their sha256.

    Args:
        path: the package directory.
        manifest: its manifest.
        names: which files to check; default all listed.

    Raises:
        PackageError: naming the missing or tampered file.

    Example:
        >>> verify_files(Path("digits"), read_manifest("digits"))
    """
    listed = manifest.get("files", {})
    for name in names if names is not None else list(listed):
        file = Path(path) / name
        if name not in listed or not file.is_file():
            raise PackageError(f"Package {path} is missing {name!r}")
        if sha256_file(file) != listed[name]:
            raise PackageError(
                f"{name!r} in {path} does not match its sha256 in ember.json: "
                "the file was modified after the package was written"
            )


def is_listed_name(name: Any) -> bool:
    """Whether ``name`` may be listed under ``files`` in ``ember.json``: a relative POSIX path
    that stays inside the package directory (no ``..``, no leading ``/``, no backslash).

    Example:
        >>> is_listed_name("model.onnx"), is_listed_name("web/ember.js"), is_listed_name("../x")
        (True, True, False)
    """
    if not isinstance(name, str):
        return False
    parts = PurePosixPath(name).parts
    return bool(parts) and not name.startswith("/") and "\\" not in name and ".." not in parts


def sha256_file(file: Path) -> str:
    """The sha256 hex digest of ``file``, as recorded in the manifest's ``files``.

    Example:
        >>> digest = sha256_file(Path("digits/weights.safetensors"))
        >>> digest == read_manifest("digits")["files"]["weights.safetensors"]
        True
    """
    digest = hashlib.sha256()
    with open(file, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
