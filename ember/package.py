"""The model package: a directory holding weights, a signature, metadata and a fixed sample.

A package is what every stage after training reads (export targets, the server, ``ember inspect``).
Nothing in it is unpickled: tensors are safetensors, metadata is JSON, and the ``torch.export``
program (``model.pt2``) is checked by ``load_program`` before torch reads it (see docs/export.md, "No pickle").
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ember.data import as_tensor

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
    "save",
    "verify_files",
    "write_manifest",
]

logger = logging.getLogger(__name__)

FORMAT = "ember.package"
FORMAT_VERSION = 1
MANIFEST = "ember.json"
WEIGHTS = "weights.safetensors"
PROGRAM = "model.pt2"
SAMPLE = "sample.safetensors"
MAX_SAMPLE_ROWS = 64
_TASKS = (None, "classification", "regression")
# Entries torch.export.save writes for a plain program (names inside the archive's top folder).
_PT2_ALLOWED = ("archive_format", "archive_version", "byteorder", ".data/", "models/", "data/")
_PT2_FORBIDDEN = (
    "data/aotinductor/",
    "data/executorch/",
    "data/weights/model.pt",
    "data/constants/model.pt",
)


class PackageError(ValueError):
    """A model package is missing, malformed, tampered with, or too new for this ember."""


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
        export_error = _save_program(model, example_input, path / PROGRAM)
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
        "files": {f: _sha256(path / f) for f in files},
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
        manifest["files"][name] = _sha256(path / name)
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
        if _sha256(file) != listed[name]:
            raise PackageError(
                f"{name!r} in {path} does not match its sha256 in ember.json: "
                "the file was modified after the package was written"
            )


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


def load_program(file: str | os.PathLike) -> torch.export.ExportedProgram:
    """Load a ``model.pt2`` after proving that torch will not unpickle anything in it.

    ``torch.export.load`` unpickles tensors flagged ``use_pickle``, custom/opaque constants and,
    on fallback, example inputs; it also loads AOTInductor shared libraries. This refuses any
    archive containing those, and reads example inputs with ``weights_only=True`` first so that
    torch's own ``weights_only=False`` fallback can never trigger.

    Args:
        file: path of a ``torch.export.save`` archive.

    Returns:
        The ``ExportedProgram``.

    Raises:
        PackageError: the archive holds anything that would be unpickled or executed.

    Example:
        >>> program = load_program("digits/model.pt2")
    """
    file = Path(file)
    try:
        with zipfile.ZipFile(file) as archive:
            _check_pt2_archive(file, archive)
    except zipfile.BadZipFile as exc:
        raise PackageError(f"{file.name} is not a torch.export archive: {exc}") from exc
    try:
        return torch.export.load(str(file))
    except Exception as exc:
        raise PackageError(f"{file.name} could not be loaded by torch.export: {exc}") from exc


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


def _save_program(model: torch.nn.Module, example: torch.Tensor, file: Path) -> str | None:
    """torch.export with a dynamic batch dim; returns the failure cause, or None on success."""
    # Export specialises a size-1 dim to a constant, so trace with at least two rows.
    trace = example if example.shape[0] >= 2 else example.repeat(2, *[1] * (example.dim() - 1))
    batch = torch.export.Dim("batch", min=1)
    try:
        program = torch.export.export(model, (trace,), dynamic_shapes=({0: batch},))
        torch.export.save(program, str(file))
        return None
    except Exception as exc:  # torch.export raises many error types; all mean "not exportable"
        file.unlink(missing_ok=True)
        cause = (
            f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        )
        logger.warning(
            "torch.export failed, so the package has no model.pt2 (%s). Way out: replace "
            "data-dependent Python control flow with torch.cond / torch.where, or avoid "
            "shape-dependent branches.",
            cause,
        )
        return cause


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


def _check_pt2_archive(file: Path, archive: zipfile.ZipFile) -> None:
    import io

    names = archive.namelist()
    prefix = names[0].split("/", 1)[0] + "/" if names else ""
    inner = [n[len(prefix) :] if n.startswith(prefix) else n for n in names]
    bad = [n for n in inner if not n.startswith(_PT2_ALLOWED) or n.startswith(_PT2_FORBIDDEN)]
    if bad or "archive_version" not in inner:
        raise PackageError(f"{file.name} holds unexpected entries {bad[:5]}; refusing to load it")
    for name in inner:
        if name.endswith("_config.json"):
            config = json.loads(archive.read(prefix + name)).get("config", {})
            for fqn, meta in config.items():
                if meta.get("use_pickle") or not meta.get("path_name", "").startswith(
                    ("weight_", "tensor_")
                ):
                    raise PackageError(f"{file.name} stores {fqn!r} as a pickled object; refusing")
        elif name.startswith("data/sample_inputs/"):
            try:
                torch.load(io.BytesIO(archive.read(prefix + name)), weights_only=True)
            except Exception as exc:
                raise PackageError(f"{file.name} has unsafe example inputs: {exc}") from exc


def _sha256(file: Path) -> str:
    digest = hashlib.sha256()
    with open(file, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fmt(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
