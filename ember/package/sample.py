"""The package's stored sample (``sample.safetensors``): named inputs and the trained outputs.

Format 2 stores ``input.<name>`` and ``output.<name>`` for the stored sample and, when an axis
beyond the batch is dynamic, ``varied.input.<name>`` / ``varied.output.<name>``: the same rows
at another length of that axis, so each target is checked on a shape it was not traced with.
Format 1 packages hold one ``inputs`` and one ``outputs`` tensor; both are read.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ember.package.manifest import SAMPLE, PackageError, read_manifest, verify_files

__all__ = [
    "MAX_SAMPLE_ROWS",
    "Sample",
    "load_named_sample",
    "load_sample",
    "load_samples",
    "sample_shapes",
]

MAX_SAMPLE_ROWS = 64
VARIED = "varied"

Sample = tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]


def load_samples(path: str | os.PathLike) -> dict[str, Sample]:
    """Every stored sample by kind: ``"stored"`` and, where an axis is dynamic, ``"varied"``.

    Args:
        path: the package directory.

    Returns:
        ``{kind: ({input name: tensor}, {output name: tensor})}`` in signature order.

    Example:
        >>> for kind, (inputs, expected) in load_samples("bert").items(): ...
    """
    path = Path(path)
    manifest = read_manifest(path)
    verify_files(path, manifest, names=[SAMPLE])
    tensors = load_file(str(path / SAMPLE))
    signature = manifest["signature"]
    ins = [s["name"] for s in signature["inputs"]]
    outs = [s["name"] for s in signature["outputs"]]
    if "inputs" in tensors:  # format 1: one input, one output
        return {"stored": ({ins[0]: tensors["inputs"]}, {outs[0]: tensors["outputs"]})}
    samples = {}
    for kind, prefix in (("stored", ""), (VARIED, f"{VARIED}.")):
        if f"{prefix}input.{ins[0]}" not in tensors:
            continue
        try:
            inputs = {n: tensors[f"{prefix}input.{n}"] for n in ins}
            outputs = {n: tensors[f"{prefix}output.{n}"] for n in outs}
        except KeyError as exc:
            raise PackageError(f"{SAMPLE} in {path} lacks {exc}, which ember.json lists") from None
        samples[kind] = (inputs, outputs)
    if "stored" not in samples:
        raise PackageError(f"{SAMPLE} in {path} does not hold the inputs ember.json lists: {ins}")
    return samples


def load_named_sample(path: str | os.PathLike) -> Sample:
    """The stored sample as ``({input name: tensor}, {output name: tensor})``.

    Example:
        >>> inputs, expected = load_named_sample("bert"); inputs["input_ids"].dtype
        torch.int64
    """
    return load_samples(path)["stored"]


def load_sample(path: str | os.PathLike) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the stored sample ``(inputs, expected_outputs)`` of a one-input, one-output model.

    Args:
        path: the package directory.

    Returns:
        ``inputs`` of shape ``(N, ...)`` and the trained model's ``outputs`` on them.

    Raises:
        PackageError: the model has several inputs or outputs (use :func:`load_named_sample`).

    Example:
        >>> x, y = load_sample("digits")
    """
    inputs, outputs = load_named_sample(path)
    if len(inputs) != 1 or len(outputs) != 1:
        raise PackageError(
            f"{path} has inputs {list(inputs)} and outputs {list(outputs)}; "
            "load_sample returns one of each: use ember.package.load_named_sample"
        )
    return next(iter(inputs.values())), next(iter(outputs.values()))


def sample_shapes(path: str | os.PathLike) -> dict[str, dict[str, list[int]]]:
    """Shapes of the stored sample, read from the file's header only (no tensor is loaded).

    Returns:
        ``{"inputs": {name: shape}, "outputs": {name: shape}}``; a format 1 sample has one of
        each, named ``"inputs"`` and ``"outputs"``. Empty when the package has no sample.

    Example:
        >>> sample_shapes("bert")["inputs"]
        {'input_ids': [4, 16], 'attention_mask': [4, 16]}
    """
    from safetensors import safe_open

    file = Path(path) / SAMPLE
    if not file.is_file():
        return {}
    with safe_open(str(file), framework="numpy") as f:
        shapes = {k: list(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    result: dict[str, dict[str, list[int]]] = {"inputs": {}, "outputs": {}}
    for key, shape in shapes.items():
        if key in ("inputs", "outputs"):  # format 1
            result[key][key] = shape
        elif key.startswith(("input.", "output.")):
            side, name = key.split(".", 1)
            result[f"{side}s"][name] = shape
    return result


def write_samples(file: Path, samples: dict[str, Sample]) -> None:
    """Write samples (as returned by :func:`load_samples`) to ``sample.safetensors``."""
    tensors = {}
    for kind, (inputs, outputs) in samples.items():
        prefix = "" if kind == "stored" else f"{kind}."
        for side, named in (("input", inputs), ("output", outputs)):
            for name, t in named.items():
                tensors[f"{prefix}{side}.{name}"] = t.detach().cpu().contiguous()
    save_file(tensors, str(file))


def varied_inputs(inputs: dict[str, torch.Tensor], axes: dict) -> dict[str, torch.Tensor] | None:
    """The sample at another length of each dynamic axis beyond the batch, or None if none.

    A length ``L >= 3`` is cut to about two thirds (token ids and masks stay valid when cut);
    a shorter one is extended by repeating its last position.
    """
    if not any(axes.values()):
        return None
    lengths: dict[str, int] = {}
    for name, per_axis in axes.items():
        for axis, dim in per_axis.items():
            lengths.setdefault(dim, inputs[name].shape[int(axis)])
    target = {dim: (n - max(1, n // 3) if n >= 3 else n + 1) for dim, n in lengths.items()}
    varied = {}
    for name, t in inputs.items():
        for axis, dim in (axes.get(name) or {}).items():
            t = _resize(t, int(axis), target[dim])
        varied[name] = t.contiguous()
    return varied


def _resize(t: torch.Tensor, axis: int, length: int) -> torch.Tensor:
    if length <= t.shape[axis]:
        return t.narrow(axis, 0, length)
    last = t.narrow(axis, t.shape[axis] - 1, 1)
    extra = last.expand(*[length - t.shape[axis] if i == axis else -1 for i in range(t.dim())])
    return torch.cat([t, extra], dim=axis)
