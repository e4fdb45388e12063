"""The repository on disk: model names, version directories, fingerprints and version policies.

Pure functions, no state: ``scan`` reads the layout, ``select_versions`` applies a version policy
(``latest``, ``all`` or ``specific``, as TF Serving and Triton spell them).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ember import package
from ember.serve.errors import ServeError, brief

__all__ = [
    "check_model_name",
    "model_dir",
    "parse_policy",
    "parse_version",
    "pending_versions",
    "read_config",
    "scan",
    "select_versions",
]

logger = logging.getLogger(__name__)

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}")  # used with fullmatch: no "\n" at the end
_POLICIES = ("latest", "all", "specific")
DEFAULT_POLICY = {"latest": {"num_versions": 1}}
_OUTSIDE = "a model directory must stay inside the repository"
# Files only a model package holds: a version directory with one of them is a package upload.
_PACKAGE_FILES = ("weights.safetensors", "sample.safetensors", "model.pt2")
# ASCII digits only: str.isdigit() also takes "²", "٣" and "１", which int() refuses or misreads.
_VERSION = re.compile(r"[0-9]{1,18}")

# {name: {version: (path, fingerprint)}}
Layout = dict[str, dict[int, tuple[Path, Any]]]


def check_model_name(name: str) -> str:
    """Returns ``name`` when it is a safe model directory name, else raises ``ServeError(400)``.

    Example:
        >>> check_model_name("../etc")
        Traceback (most recent call last):
        ...
        ember.serve.errors.ServeError: Invalid model name '../etc': ...
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise ServeError(
            400,
            f"Invalid model name {name!r}: use letters, digits, '_', '-' and '.', starting with a "
            "letter or digit; no '..', no '/', no absolute paths.",
        )
    return name


def scan(root: Path, single: bool, on_refused: Callable[[Path, str], None] | None = None) -> Layout:
    """Reads the disk (blocking: run it in a thread).

    A model or version directory that is a symlink to outside the repository is refused (as the
    management ``load`` refuses it): it is left out and reported to ``on_refused``.

    Args:
        root: the repository directory, or the one package / ``.onnx`` file served alone.
        single: whether ``root`` is one model served as version 1.
        on_refused: called with ``(path, reason)`` for each directory left out.

    Returns:
        ``{name: {version: (path, fingerprint)}}``.

    Example:
        >>> scan(Path("models"), single=False)  # doctest: +SKIP
        {'digits': {1: (PosixPath('models/digits/1'), (...))}}
    """
    if single:
        return {single_name(root): {1: (root, fingerprint(root))}}
    layout = {}
    for model_path in sorted(root.iterdir()):
        if not _NAME.fullmatch(model_path.name) or not model_path.is_dir():
            continue
        if model_path.resolve().parent != root:
            if on_refused is not None:
                on_refused(model_path, _OUTSIDE)
            continue
        versions = {}
        for vdir in model_path.iterdir():
            if vdir.is_dir() and _is_version_name(vdir.name):
                if not vdir.resolve().is_relative_to(root):
                    if on_refused is not None:
                        on_refused(vdir, _OUTSIDE)
                    continue
                versions[int(vdir.name)] = (vdir, fingerprint(vdir))
        layout[model_path.name] = versions
    return layout


def model_dir(root: Path, name: str) -> Path:
    """The directory of model ``name`` in the repository ``root`` (resolved), or ``ServeError``.

    Raises:
        ServeError: 400 for an invalid name or a symlink to outside the repository, 404 when
            there is no such directory.

    Example:
        >>> model_dir(Path("/srv/models"), "digits")  # doctest: +SKIP
        PosixPath('/srv/models/digits')
    """
    check_model_name(name)
    path = (root / name).resolve()
    if (root / name).is_dir() and path.parent != root:
        raise ServeError(400, f"Model directory {name!r} is a symlink to outside the repository "
                         f"{root}: {_OUTSIDE}.")  # fmt: skip
    if path.parent != root or not path.is_dir():
        raise ServeError(404, f"No model directory {name!r} in the repository {root}.")
    return path


def pending_versions(layout: Layout) -> dict[str, dict[int, str]]:
    """Versions whose files are not all there yet (blocking: run it in a thread).

    A version is pending, never loaded and never served, while it holds package files
    (``weights.safetensors``, ``sample.safetensors``, ``model.pt2``) but no ``ember.json``,
    while it has no ``ember.json`` and the model's other versions are packages, while its
    ``ember.json`` is not valid JSON, or while a file its ``ember.json`` lists is missing. A
    directory with only ``model.onnx`` in a model of such directories is a bare ONNX version,
    never pending. (A listed file whose sha256 differs fails the load, and is tried again as
    soon as the files change.)

    Returns:
        ``{name: {version: reason}}`` for the pending versions.

    Example:
        >>> pending_versions(scan(Path("models"), single=False))  # doctest: +SKIP
        {'digits': {3: 'waiting for ember.json (the directory holds weights.safetensors)'}}
    """
    pending: dict[str, dict[int, str]] = {}
    for name, versions in layout.items():
        packaged = {v for v, (path, _) in versions.items() if (path / "ember.json").is_file()}
        for v, (path, _) in versions.items():
            if path.is_dir():
                reason = _pending_reason(path, v in packaged, bool(packaged - {v}))
                if reason:
                    pending.setdefault(name, {})[v] = reason
    return pending


def select_versions(policy: dict, candidates: list[int]) -> set[int]:
    """The versions a policy selects from ``candidates`` (sorted newest first).

    Example:
        >>> sorted(select_versions({"latest": {"num_versions": 2}}, [3, 2, 1]))
        [2, 3]
    """
    kind, arg = next(iter(policy.items()))
    if kind == "latest":
        return set(candidates[: int(arg.get("num_versions", 1))])
    if kind == "all":
        return set(candidates)
    return set(candidates) & {int(v) for v in arg.get("versions", [])}


def parse_policy(policy: Any, name: str) -> dict:
    """Validates a version policy (``"all"`` is short for ``{"all": {}}``).

    Raises:
        ValueError: naming the model, what was received and the allowed forms.

    Example:
        >>> parse_policy("all", "digits")
        {'all': {}}
    """
    if isinstance(policy, str):
        policy = {policy: {}}
    if not isinstance(policy, dict) or len(policy) != 1 or next(iter(policy)) not in _POLICIES:
        raise ValueError(
            f"Invalid version_policy for model {name!r}: {policy!r}. Use one of "
            '{"latest": {"num_versions": N}}, {"all": {}}, {"specific": {"versions": [...]}}.'
        )
    return policy


def parse_version(version: int | str) -> int:
    """Returns a version number from an int or its string (``ServeError(400)`` otherwise).

    Example:
        >>> parse_version("12")
        12
    """
    if isinstance(version, bool):
        version = str(version)
    if isinstance(version, int) and version >= 0:
        return version
    if isinstance(version, str) and _VERSION.fullmatch(version):
        return int(version)
    raise ServeError(
        400, f"Invalid version {brief(version)}: expected a non-negative integer in ASCII digits."
    )


def read_config(model_dir: Path, override: dict | None) -> tuple[dict, dict[str, int]]:
    """Reads ``<model>/config.json``: its version policy (``override`` wins) and labels.

    An unreadable file is logged and ignored (the defaults apply).

    Returns:
        ``(policy, {label: version})``.

    Example:
        >>> read_config(Path("models/digits"), None)  # doctest: +SKIP
        ({'latest': {'num_versions': 1}}, {'stable': 1})
    """
    config: dict = {}
    config_file = model_dir / "config.json"
    if config_file.is_file():
        try:
            config = json.loads(config_file.read_text())
        except (OSError, ValueError) as exc:
            logger.error("Ignoring unreadable %s: %s", config_file, exc)
    policy = override or parse_policy(
        config.get("version_policy") or DEFAULT_POLICY, model_dir.name
    )
    labels = {str(k): int(v) for k, v in (config.get("labels") or {}).items()}
    return policy, labels


def is_version_dir(path: Path) -> bool:
    """Whether ``path`` is one version (a package or a directory with ``model.onnx``)."""
    return (path / package.MANIFEST).is_file() or (path / "model.onnx").is_file()


def single_name(path: Path) -> str:
    """The model name of a package or ``.onnx`` file served alone (its manifest name or stem)."""
    if path.is_file():
        name = path.stem
    else:
        try:
            name = package.read_manifest(path).get("name") or path.name
        except (OSError, package.PackageError):
            name = path.name
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", str(name)).lstrip(".") or "model"


def _is_version_name(name: str) -> bool:
    return _VERSION.fullmatch(name) is not None


def _pending_reason(path: Path, has_manifest: bool, siblings_packaged: bool) -> str | None:
    if not has_manifest:
        present = [f for f in _PACKAGE_FILES if (path / f).is_file()]
        if present:
            return f"waiting for ember.json (the directory holds {', '.join(present)})"
        if siblings_packaged:
            return "waiting for ember.json (the other versions of this model are packages)"
        return None
    try:
        manifest = json.loads((path / "ember.json").read_text())
    except (OSError, ValueError) as exc:  # still being written (or corrupt: the reason says)
        return f"waiting for a complete ember.json (not valid JSON yet: {str(exc)[:200]})"
    listed = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(listed, dict):
        return None  # a malformed manifest fails its load, with the reason
    missing = [n for n in listed if isinstance(n, str) and not (path / n).is_file()]
    if missing:
        return f"waiting for files listed in ember.json: {', '.join(sorted(missing)[:5])}"
    return None


def fingerprint(path: Path) -> Any:
    """What changes when the files of a version change: names, sizes and modification times."""
    try:
        if path.is_file():
            st = path.stat()
            return (st.st_size, st.st_mtime_ns)
        return tuple(
            sorted(
                (e.name, e.stat().st_size, e.stat().st_mtime_ns)
                for e in os.scandir(path)
                if e.is_file()
            )
        )
    except OSError:
        return None
