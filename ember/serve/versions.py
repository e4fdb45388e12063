"""The repository on disk: model names, version directories, fingerprints and version policies.

Pure functions, no state: ``scan`` reads the layout, ``select_versions`` applies a version policy
(``latest``, ``all`` or ``specific``, as TF Serving and Triton spell them).
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from ember import package
from ember.serve.errors import ServeError

__all__ = [
    "check_model_name",
    "parse_policy",
    "parse_version",
    "read_config",
    "scan",
    "select_versions",
]

logger = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
_POLICIES = ("latest", "all", "specific")
DEFAULT_POLICY = {"latest": {"num_versions": 1}}

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
    if not isinstance(name, str) or not _NAME.match(name) or ".." in name:
        raise ServeError(
            400,
            f"Invalid model name {name!r}: use letters, digits, '_', '-' and '.', starting with a "
            "letter or digit; no '..', no '/', no absolute paths.",
        )
    return name


def scan(root: Path, single: bool) -> Layout:
    """Reads the disk (blocking: run it in a thread).

    Args:
        root: the repository directory, or the one package / ``.onnx`` file served alone.
        single: whether ``root`` is one model served as version 1.

    Returns:
        ``{name: {version: (path, fingerprint)}}``.

    Example:
        >>> scan(Path("models"), single=False)  # doctest: +SKIP
        {'digits': {1: (PosixPath('models/digits/1'), (...))}}
    """
    if single:
        return {single_name(root): {1: (root, fingerprint(root))}}
    layout = {}
    for model_dir in sorted(root.iterdir()):
        if not model_dir.is_dir() or not _NAME.match(model_dir.name):
            continue
        versions = {}
        for vdir in model_dir.iterdir():
            if vdir.is_dir() and vdir.name.isdigit():
                versions[int(vdir.name)] = (vdir, fingerprint(vdir))
        layout[model_dir.name] = versions
    return layout


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
    if isinstance(version, str) and version.isdigit() and len(version) < 19:
        return int(version)
    raise ServeError(400, f"Invalid version {version!r}: expected a non-negative integer.")


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
