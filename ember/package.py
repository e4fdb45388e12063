"""The model package: a directory holding weights, a signature, metadata and a fixed sample.

A package is what every stage after training reads (export targets, the server, ``ember inspect``).
Nothing in it is unpickled: tensors are safetensors, metadata is JSON, and the ``torch.export``
program (``model.pt2``) is checked by ``load_program`` before torch reads it (see docs/export.md, "No pickle").

This module saves and loads packages; the manifest (``ember.json``: reading, writing, file
digests, export-target records) is in :mod:`ember.package_manifest`, the ``torch.export``
program in :mod:`ember.package_program`. Both are re-exported here.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ember.data import as_tensor
from ember.package_manifest import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,  # noqa: F401  (re-exported: ember.package.MANIFEST)
    PROGRAM,
    SAMPLE,
    WEIGHTS,
    PackageError,
    read_manifest,
    record_target,
    remove_target,
    remove_target_dir,
    sha256_file,
    verify_files,
    write_manifest,
)
from ember.package_program import load_program, save_program

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "PackageError",
    "inspect_text",
    "load",
    "load_program",
    "load_sample",
    "read_manifest",
    "record_target",
    "remove_target",
    "remove_target_dir",
    "save",
    "verify_files",
    "write_manifest",
]

logger = logging.getLogger(__name__)

MAX_SAMPLE_ROWS = 64
_TASKS = (None, "classification", "regression")


def save(
    model: torch.nn.Module,
    path: str | os.PathLike,
    *,
    example_input: torch.Tensor,
    name: str | None = None,
    task: str | None = None,
    labels: list[str] | None = None,
    preprocessing: dict | None = None,
    metrics: dict | None = None,
    sample_inputs: torch.Tensor | None = None,
) -> Path:
    """Write ``model`` as a model package directory.

    Args:
        model: any ``torch.nn.Module`` with one tensor input and one tensor output.
        path: the package directory (created; existing package files are overwritten).
        example_input: a batch of inputs, shape ``(N, ...)``; the batch dimension is dynamic.
        name: package name; defaults to the directory name.
        task: ``"classification"``, ``"regression"`` or None.
        labels: class labels, one per output column, or None.
        preprocessing: free-form JSON describing how raw inputs become model inputs.
        metrics: figures at save time, e.g. ``{"test_accuracy": 0.97}``.
        sample_inputs: real inputs kept for parity checks (at most 64 rows); default ``example_input``.

    Returns:
        The package directory.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
        >>> ember.save(net, "digits", example_input=torch.zeros(2, 1, 8, 8), task="classification")
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"`model` must be a torch.nn.Module. Received: {type(model).__name__}")
    example_input = _check_tensor("example_input", example_input)
    if task not in _TASKS:
        raise ValueError(f"Unknown task {task!r}. Choose one of: classification, regression, None")
    sample = _check_tensor(
        "sample_inputs", sample_inputs if sample_inputs is not None else example_input
    )
    sample = sample[:MAX_SAMPLE_ROWS].detach().cpu().float().contiguous()
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example_input)  # builds lazy layers before export and state_dict
            outputs = model(sample)
        if not isinstance(outputs, torch.Tensor):
            raise PackageError(
                "save supports models with one tensor output. "
                f"Received an output of type {type(outputs).__name__}"
            )
        weights = {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}
        save_file(weights, str(path / WEIGHTS))
        save_file(
            {"inputs": sample, "outputs": outputs.detach().cpu().contiguous()}, str(path / SAMPLE)
        )
        export_error = save_program(model, example_input, path / PROGRAM)
    finally:
        model.train(was_training)

    files = [WEIGHTS, SAMPLE] + ([] if export_error else [PROGRAM])
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": name or path.resolve().name,
        "task": task,
        "signature": {
            "inputs": [_tensor_spec("input", example_input)],
            "outputs": [_tensor_spec("output", outputs)],
        },
        "labels": [str(label) for label in labels] if labels is not None else None,
        "preprocessing": preprocessing,
        "metrics": metrics or {},
        "architecture": _architecture(model),
        "provenance": _provenance(),
        "export_error": export_error,
        "files": {f: sha256_file(path / f) for f in files},
        "targets": {},
    }
    write_manifest(path, manifest)
    logger.info("Saved model package %s", path)
    return path


def load(path: str | os.PathLike) -> torch.nn.Module:
    """Load a runnable model from a package, without the user's Python class where possible.

    The ``torch.export`` program is used when present, otherwise the model is rebuilt from the
    manifest's ``architecture`` (an ``ember.Sequential`` config). Weights always come from
    ``weights.safetensors`` after every file's sha256 has been checked.

    Args:
        path: the package directory.

    Returns:
        A ``torch.nn.Module`` computing the packaged model (in eval mode where supported).

    Raises:
        PackageError: newer format, missing or tampered files, or weights that don't match.

    Example:
        >>> model = ember.load("digits")
        >>> model(torch.zeros(1, 1, 8, 8)).shape
        torch.Size([1, 10])
    """
    path = Path(path)
    manifest = read_manifest(path)
    verify_files(path, manifest)
    weights = load_file(str(path / WEIGHTS))
    if PROGRAM in manifest["files"]:
        program = load_program(path / PROGRAM)
        expected = {k: tuple(v.shape) for k, v in program.state_dict.items()}
        _check_weights(expected, weights, "the torch.export program (model.pt2)")
        module = program.module()
        module.load_state_dict(weights, strict=False)
        return _Program(module)
    architecture = manifest.get("architecture")
    if isinstance(architecture, dict) and architecture.get("kind") == "sequential":
        return _rebuild_sequential(path, architecture, weights)
    cause = manifest.get("export_error") or "model.pt2 is not in the package"
    raise PackageError(
        f"Package {path} has no torch.export program and no rebuildable architecture "
        f"(torch.export failed at save time: {cause}). Load the weights into your own class: "
        f"model.load_state_dict(safetensors.torch.load_file('{path / WEIGHTS}'))"
    )


def load_sample(path: str | os.PathLike) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the stored sample ``(inputs, expected_outputs)`` after checking its hash.

    Args:
        path: the package directory.

    Returns:
        ``inputs`` of shape ``(N, ...)`` and the trained model's ``outputs`` on them.

    Example:
        >>> x, y = load_sample("digits")
    """
    path = Path(path)
    verify_files(path, read_manifest(path), names=[SAMPLE])
    tensors = load_file(str(path / SAMPLE))
    return tensors["inputs"], tensors["outputs"]


def inspect_text(path: str | os.PathLike) -> str:
    """A human-readable summary: signature, metrics, targets and their parity figures.

    Args:
        path: the package directory.

    Returns:
        Multi-line text for ``ember inspect DIR``.

    Example:
        >>> print(inspect_text("digits"))
    """
    m = read_manifest(path)
    lines = [f"{m.get('name')}  (task: {m.get('task')}, format {m['format_version']})"]
    for kind in ("inputs", "outputs"):
        for spec in m["signature"][kind]:
            lines.append(f"  {kind[:-1]:<6} {spec['name']}: {spec['dtype']} {spec['shape']}")
    if m.get("metrics"):
        lines.append("  metrics: " + ", ".join(f"{k}={v}" for k, v in m["metrics"].items()))
    lines.append(f"  program: {'model.pt2' if PROGRAM in m['files'] else 'none'}")
    targets = m.get("targets") or {}
    lines.append("  targets:" + ("" if targets else " none"))
    keys = (
        "max_abs_diff",
        "max_rel_diff",
        "top1_agreement",
        "size_bytes",
        "size_ratio",
        "accuracy",
    )
    for target, info in targets.items():
        figures = ", ".join(f"{k}={_fmt(info[k])}" for k in keys if info.get(k) is not None)
        lines.append(f"    {target:<7} {info.get('file', '')}  {figures}")
    return "\n".join(lines)


# -- helpers --------------------------------------------------------------------------------------


class _Program(torch.nn.Module):
    """An exported program's module that accepts ``eval()``/``train()`` (it is always in eval)."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.program = module
        self.training = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.program(x)

    def train(self, mode: bool = True) -> _Program:
        # The exported graph was traced in eval mode; training behaviour is not in it.
        return self


def _check_tensor(arg: str, value: Any) -> torch.Tensor:
    if isinstance(value, np.ndarray):  # Keras users hold numpy arrays
        value = as_tensor(value, arg)
    if not isinstance(value, torch.Tensor) or value.dim() < 1 or value.shape[0] < 1:
        got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise ValueError(
            f"`{arg}` must be a tensor with a batch dimension (N, ...). Received: {got}"
        )
    return value


def _tensor_spec(name: str, t: torch.Tensor) -> dict:
    return {"name": name, "dtype": str(t.dtype).removeprefix("torch."), "shape": [-1, *t.shape[1:]]}


def _architecture(model: torch.nn.Module) -> dict | None:
    get_config = getattr(model, "get_config", None)
    if not callable(get_config):
        return None
    try:
        config = get_config()
        json.dumps(config)
        return config if isinstance(config, dict) else None
    except Exception as exc:  # a model's own config hook must not break saving
        logger.warning("get_config() failed, the package has no architecture: %s", exc)
        return None


def _rebuild_sequential(path: Path, architecture: dict, weights: dict) -> torch.nn.Module:
    try:
        from ember.model import Sequential
    except ImportError as exc:
        raise PackageError(f"Cannot rebuild the architecture of {path}: {exc}") from exc
    model = Sequential.from_config(architecture)
    inputs, _ = load_sample(path)
    model.eval()
    with torch.no_grad():
        model(inputs[:1])  # builds lazy layers so their weights exist
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    _check_weights(expected, weights, "the architecture in ember.json")
    model.load_state_dict(weights)
    return model


def _check_weights(expected: dict[str, tuple], weights: dict[str, torch.Tensor], what: str) -> None:
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    shapes = [
        f"{k}: {tuple(weights[k].shape)} != {expected[k]}"
        for k in sorted(set(expected) & set(weights))
        if tuple(weights[k].shape) != tuple(expected[k])
    ]
    if missing or unexpected or shapes:
        raise PackageError(
            f"weights.safetensors does not match {what}: missing={missing}, "
            f"unexpected={unexpected}, shape mismatches={shapes}"
        )


def _provenance() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    try:
        ember_version = version("ember")
    except PackageNotFoundError:
        ember_version = None
    return {
        "ember_version": ember_version,
        "torch_version": torch.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": _git_commit(),
    }


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _fmt(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
