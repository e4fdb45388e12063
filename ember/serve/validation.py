"""Checks a version must pass before it serves: its files and its manifest against its model.

``verify_version_files`` checks every file ``ember.json`` lists against its sha256, whatever
runtime will serve the version (a tampered ``weights.safetensors`` is caught under ONNX Runtime
too). ``check_manifest`` compares ``ember.json`` with the model the runtime loaded and with the
package's stored sample: the declared inputs and outputs (count, datatypes, shapes), the sample's
shapes and the number of labels against the output width. A mismatch refuses the version (FAILED,
with every problem named) instead of loading it and then answering 500 or a truncated
``:classify``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ember.serve.errors import ServeError
from ember.serve.tensors import TensorSpec

__all__ = ["check_manifest", "verify_version_files"]

_SAMPLE = "sample.safetensors"


def verify_version_files(path: Path, manifest: Any) -> None:
    """Checks every file ``ember.json`` lists: present, inside the version, matching its sha256.

    Args:
        path: the version directory (a ``.onnx`` file or a directory without ``ember.json``
            has nothing listed: nothing to check).
        manifest: the parsed ``ember.json`` (``{}`` when there is none).

    Raises:
        ServeError: 400 naming the file that is missing, outside the version or tampered with.

    Example:
        >>> verify_version_files(Path("models/digits/1"), manifest)  # doctest: +SKIP
    """
    from ember.package import PackageError, is_listed_name, verify_files

    if not isinstance(manifest, dict):
        raise ServeError(400, f"Corrupt manifest {path}/ember.json: expected a JSON object.")
    listed = manifest.get("files") or {}
    if not isinstance(listed, dict):
        raise ServeError(400, f"Corrupt manifest {path}/ember.json: 'files' must be an object.")
    for name in listed:
        if not is_listed_name(name):
            raise ServeError(
                400, f"ember.json in {path} lists {str(name)[:100]!r}: a listed file must be a "
                "relative path inside the version directory.",
            )  # fmt: skip
    try:
        verify_files(path, manifest)
    except PackageError as exc:
        raise ServeError(400, f"Corrupt package: {exc}") from None


def check_manifest(
    path: Path, manifest: dict, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]
) -> None:
    """Compares ``ember.json`` with the loaded model and with the package's stored sample.

    Args:
        path: the version directory (its ``sample.safetensors``, already verified, is read).
        manifest: the parsed ``ember.json`` (``{}``: nothing to check).
        inputs: the model's inputs as the runtime reports them.
        outputs: the model's outputs as the runtime reports them.

    Raises:
        ServeError: 400 listing every mismatch, e.g. ``ember.json lists 3 labels but output
            'output' has 10 values per row``.

    Example:
        >>> check_manifest(path, manifest, engine.inputs, engine.outputs)  # doctest: +SKIP
    """
    if not manifest:
        return
    problems: list[str] = []
    signature = manifest.get("signature") or {}
    if not isinstance(signature, dict):
        signature = {}
        problems.append("'signature' is not an object")
    for kind, specs in (("inputs", inputs), ("outputs", outputs)):
        if signature.get(kind) is not None:
            problems += _compare_signature(kind, signature[kind], specs)
    sample = _sample_shapes(path)
    for key, specs in (("inputs", inputs), ("outputs", outputs)):
        if key in sample and len(specs) == 1 and not _fits(sample[key][1:], specs[0].shape[1:]):
            problems.append(f"the stored sample's {key} have shape {sample[key]}, the model's "
                            f"{key[:-1]} {specs[0].name!r} takes {specs[0].shape}")  # fmt: skip
    problems += _compare_labels(manifest.get("labels"), outputs, sample.get("outputs"))
    if problems:
        raise ServeError(
            400, f"ember.json in {path} does not match its model: " + "; ".join(problems) + "."
        )


def _compare_signature(kind: str, declared: Any, specs: Sequence[TensorSpec]) -> list[str]:
    if not isinstance(declared, list) or not all(isinstance(d, dict) for d in declared):
        return [f"signature {kind} must be a list of objects"]
    if len(declared) != len(specs):
        return [f"it declares {len(declared)} {kind}, the model has {len(specs)}"]
    by_name = {s.name: s for s in specs}
    problems = []
    for position, (entry, model_spec) in enumerate(zip(declared, specs)):
        try:
            spec = TensorSpec.parse(str(entry.get("name")), entry.get("dtype"), entry["shape"])
        except (KeyError, TypeError, ServeError) as exc:
            problems.append(f"signature {kind}[{position}] is malformed ({exc})")
            continue
        model_spec = by_name.get(spec.name, model_spec)
        what = f"{kind[:-1]} {spec.name!r}"
        if spec.datatype != model_spec.datatype:
            problems.append(f"{what} is declared {spec.datatype}, the model takes "
                            f"{model_spec.datatype}")  # fmt: skip
        if not _fits(spec.shape, model_spec.shape):
            problems.append(f"{what} is declared with shape {spec.shape}, the model's is "
                            f"{model_spec.shape} (-1 = any)")  # fmt: skip
    return problems


def _compare_labels(labels: Any, outputs: Sequence[TensorSpec], sample: list | None) -> list[str]:
    if labels is None:
        return []
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        return ["'labels' must be a list of strings"]
    if not outputs:
        return []
    dims = list(outputs[0].shape[1:])
    if any(d < 0 for d in dims) and sample is not None and len(sample) == len(dims) + 1:
        dims = [s if d < 0 else d for d, s in zip(dims, sample[1:])]
    if any(d < 0 for d in dims):
        return []  # the width is only known per request
    width = math.prod(dims)
    if len(labels) != width:
        return [f"it lists {len(labels)} labels but output {outputs[0].name!r} has {width} "
                f"values per row (shape {outputs[0].shape})"]  # fmt: skip
    return []


def _fits(a: Sequence[int], b: Sequence[int]) -> bool:
    """Whether two shapes can be the same (-1 matches any size)."""
    return len(a) == len(b) and all(x == y or x < 0 or y < 0 for x, y in zip(a, b))


def _sample_shapes(path: Path) -> dict[str, list[int]]:
    """Shapes of the sample's one input and one output (read from the header only)."""
    from ember.package import sample_shapes

    if not path.is_dir():
        return {}
    try:
        shapes = sample_shapes(path)
    except Exception as exc:  # safetensors raises its own error types for a corrupt header
        raise ServeError(400, f"Corrupt package: cannot read {path / _SAMPLE}: {exc}") from None
    # several inputs or outputs: the runtime's warm-up compares each one with the sample
    return {side: next(iter(named.values())) for side, named in shapes.items() if len(named) == 1}
