"""Writing a model package: weights, signature, the ``torch.export`` program and the sample.

A package is what every stage after training reads (export targets, the server, ``ember inspect``).
Nothing in it is unpickled: tensors are safetensors, metadata is JSON, and the ``torch.export``
program (``model.pt2``) is checked by ``load_program`` before torch reads it (see docs/export.md,
"No pickle"). :mod:`ember.package.load` reads packages back.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import subprocess
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from ember.package.manifest import (
    FORMAT,
    FORMAT_VERSION,
    PROGRAM,
    SAMPLE,
    WEIGHTS,
    PackageError,
    is_listed_name,
    read_manifest,
    sha256_file,
    write_manifest,
)
from ember.package.program import save_program
from ember.package.sample import MAX_SAMPLE_ROWS, varied_inputs, write_samples
from ember.package.signature import (
    FlatModule,
    named_example,
    output_names,
    parse_dynamic_shapes,
    same_names,
    tensor_spec,
)

__all__ = ["save"]

logger = logging.getLogger(__name__)

_TASKS = (None, "classification", "regression")


def save(
    model: torch.nn.Module,
    path: str | os.PathLike,
    *,
    example_input: Any,
    name: str | None = None,
    task: str | None = None,
    labels: list[str] | None = None,
    preprocessing: dict | None = None,
    metrics: dict | None = None,
    sample_inputs: Any = None,
    dynamic_shapes: Any = None,
) -> Path:
    """Write ``model`` as a model package directory.

    Args:
        model: any ``torch.nn.Module``. Its output may be a tensor, a tuple of tensors, a dict
            of tensors or a transformers ``ModelOutput``; each tensor becomes a named output.
        path: the package directory (created; a package saved there before is replaced,
            its export targets removed: export again).
        example_input: a batch ``(N, ...)`` as a tensor, a tuple of tensors (passed
            positionally, named after ``forward``'s parameters) or a dict of named tensors
            (passed as keywords); numpy arrays are accepted. Every dtype is kept (int64 ids,
            bool/int masks, floats).
        name: package name; defaults to the directory name.
        task: ``"classification"``, ``"regression"`` or None.
        labels: class labels, one per output column, or None.
        preprocessing: free-form JSON describing how raw inputs become model inputs.
        metrics: figures at save time, e.g. ``{"test_accuracy": 0.97}``.
        sample_inputs: real inputs kept for parity checks (at most 64 rows), structured like
            ``example_input``; default ``example_input``.
        dynamic_shapes: dynamic axes beyond the batch (axis 0, always dynamic), in
            ``torch.export``'s terms: ``{"input_ids": {1: "sequence"}}`` (the same name ties
            axes of several inputs together); ``"auto"`` lets torch.export infer them.

    Returns:
        The package directory.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
        >>> ember.save(net, "digits", example_input=torch.zeros(2, 1, 8, 8), task="classification")
        >>> ember.save(bert, "bert", example_input={"input_ids": ids, "attention_mask": mask},
        ...            dynamic_shapes={"input_ids": {1: "seq"}, "attention_mask": {1: "seq"}})
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"`model` must be a torch.nn.Module. Received: {type(model).__name__}")
    example, keyword = named_example(model, example_input, "example_input")
    names = list(example)
    dynamic = parse_dynamic_shapes(dynamic_shapes, names)
    if task not in _TASKS:
        raise ValueError(f"Unknown task {task!r}. Choose one of: classification, regression, None")
    if sample_inputs is not None:
        sample = same_names(names, sample_inputs, "sample_inputs", model)
    else:
        sample = example
    sample = {n: t[:MAX_SAMPLE_ROWS].detach().cpu().contiguous() for n, t in sample.items()}
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    previous = _previous_files(path)

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            # builds lazy layers before export and state_dict; shows which outputs there are
            raw = model(**example) if keyword else model(*example.values())
            out_names, keys = output_names(raw)
            flat = FlatModule(model, names, keyword, keys)
            export_error, axes, dims = save_program(
                flat, tuple(example.values()), dynamic, path / PROGRAM
            )
            samples = _samples(flat, sample, out_names, axes)
        weights = {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}
        save_file(weights, str(path / WEIGHTS))
        write_samples(path / SAMPLE, samples)
    finally:
        model.train(was_training)

    stored_in, stored_out = samples["stored"]
    varied_out = samples.get("varied", (None, {}))[1]
    files = [WEIGHTS, SAMPLE] + ([] if export_error else [PROGRAM])
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": name or path.resolve().name,
        "task": task,
        "signature": {
            "inputs": [tensor_spec(n, t, _axes(axes.get(n))) for n, t in stored_in.items()],
            "outputs": [
                tensor_spec(n, t, _changed(t, varied_out.get(n))) for n, t in stored_out.items()
            ],
            "call": "keyword" if keyword else "positional",
            "dynamic_axes": axes,
            "dims": dims,
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
    _remove_stale(path, previous - set(files))
    logger.info("Saved model package %s", path)
    return path


def _previous_files(path: Path) -> set[str]:
    """The files a package saved earlier in ``path`` lists (its export targets among them)."""
    try:
        return set(read_manifest(path).get("files") or {})
    except PackageError:
        return set()


def _remove_stale(path: Path, names: set[str]) -> None:
    """Delete the earlier package's files the new one does not write.

    Its export targets were made from other weights: a ``model.onnx`` left beside the new
    weights would be served (and fail the server's parity check) although ``ember.json`` no
    longer lists it. Only files ember listed are touched, and folders they leave empty.
    """
    removed = 0
    for name in sorted(names):
        file = path / name
        if not is_listed_name(name) or not file.is_file():
            continue
        file.unlink()
        removed += 1
        for folder in file.parents:
            if folder == path or any(folder.iterdir()):
                break
            folder.rmdir()
    if removed:
        logger.info("Removed %d export file(s) of the package saved before in %s: export again "
                    "(ember export %s --to ...)", removed, path, path)  # fmt: skip


def _samples(flat: FlatModule, sample: dict, out_names: list[str], axes: dict) -> dict:
    """The stored sample and, where an axis beyond the batch is dynamic, a varied one."""
    samples = {"stored": (sample, dict(zip(out_names, flat(*sample.values()))))}
    varied = varied_inputs(sample, axes)
    if varied is not None:
        samples["varied"] = (varied, dict(zip(out_names, flat(*varied.values()))))
    return samples


def _axes(axes: dict | None) -> dict[int, str]:
    return {int(axis): dim for axis, dim in (axes or {}).items()}


def _changed(stored: torch.Tensor, varied: torch.Tensor | None) -> dict[int, str]:
    """Output axes whose length follows a dynamic input axis (they differ in the varied sample)."""
    if varied is None or varied.dim() != stored.dim():
        return {}
    return {i: "dynamic" for i in range(1, stored.dim()) if stored.shape[i] != varied.shape[i]}


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
