"""Loading a runnable model from a package, without the user's Python class where possible."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from ember.package.manifest import PROGRAM, WEIGHTS, PackageError, read_manifest, verify_files
from ember.package.program import load_program
from ember.package.sample import load_named_sample
from ember.package.signature import input_names

__all__ = ["FlatProgram", "LoadedModel", "load", "register_architecture"]

# Format 2 exports a FlatModule, whose user model sits under this attribute.
_FLAT_PREFIX = "model."


def load(path: str | os.PathLike) -> LoadedModel:
    """Load a runnable model from a package, without the user's Python class where possible.

    The ``torch.export`` program is used when present, otherwise the model is rebuilt from the
    manifest's ``architecture`` (an ``ember.Sequential`` config). Weights always come from
    ``weights.safetensors`` after every file's sha256 has been checked.

    Args:
        path: the package directory.

    Returns:
        A module taking the signature's inputs (positionally in signature order, or by name)
        and returning one tensor, or a tuple in the signature's output order when there are
        several outputs.

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
    names = input_names(manifest["signature"])
    if PROGRAM in manifest["files"]:
        program = load_program(path / PROGRAM)
        prefix = _FLAT_PREFIX if manifest["format_version"] >= 2 else ""
        expected = {k.removeprefix(prefix): tuple(v.shape) for k, v in program.state_dict.items()}
        _check_weights(expected, weights, "the torch.export program (model.pt2)")
        module = program.module()
        module.load_state_dict({prefix + k: v for k, v in weights.items()}, strict=False)
        return LoadedModel(module, names)
    architecture = manifest.get("architecture")
    build = _ARCHITECTURES.get(architecture.get("kind")) if isinstance(architecture, dict) else None
    if build is not None:
        return LoadedModel(_rebuild(path, build(architecture), weights), names)
    cause = manifest.get("export_error") or "model.pt2 is not in the package"
    raise PackageError(
        f"Package {path} has no torch.export program and no rebuildable architecture "
        f"(torch.export failed at save time: {cause}). Load the weights into your own class: "
        f"model.load_state_dict(safetensors.torch.load_file('{path / WEIGHTS}'))"
    )


class LoadedModel(torch.nn.Module):
    """A package's model: ``forward(*inputs)`` or ``forward(**named_inputs)``, always in eval.

    Returns one tensor, or a tuple in the signature's output order for several outputs.
    ``flat`` is the same model as ``forward(*inputs) -> tuple``, which export targets trace.
    """

    def __init__(self, module: torch.nn.Module, names: list[str]) -> None:
        super().__init__()
        self.flat = FlatProgram(module)
        self.input_names = list(names)
        self.training = False

    def forward(self, *args: torch.Tensor, **kwargs: torch.Tensor) -> Any:
        if kwargs:
            rest = self.input_names[len(args) :]
            unknown = [k for k in kwargs if k not in rest]
            missing = [n for n in rest if n not in kwargs]
            if unknown or missing:
                raise TypeError(
                    f"Inputs are {self.input_names}. Received unknown {unknown}, missing {missing}"
                )
            args = (*args, *(kwargs[n] for n in rest))
        result = self.flat(*args)
        return result[0] if len(result) == 1 else result

    def train(self, mode: bool = True) -> LoadedModel:
        # The exported graph was traced in eval mode; training behaviour is not in it.
        return self


class FlatProgram(torch.nn.Module):
    """``forward(*inputs) -> tuple`` over an exported program or a rebuilt model (any format)."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.program = module
        self.training = False

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        result = self.program(*args)
        return tuple(result) if isinstance(result, (tuple, list)) else (result,)

    def train(self, mode: bool = True) -> FlatProgram:
        return self


# architecture "kind" -> a function building the (unbuilt) model from ember.json's config. The model
# layer fills it (ember.model registers "sequential"), so the package never imports the model layer.
_ARCHITECTURES: dict[str, Callable[[dict], torch.nn.Module]] = {}


def register_architecture(kind: str, build: Callable[[dict], torch.nn.Module]) -> None:
    """Let :func:`load` rebuild packages whose manifest ``architecture`` has this ``kind``.

    Args:
        kind: the ``"kind"`` a model's ``get_config()`` writes (``"sequential"``).
        build: ``config -> module``, its lazy layers not yet built.

    Example:
        >>> register_architecture("sequential", Sequential.from_config)
    """
    _ARCHITECTURES[kind] = build


def _rebuild(path: Path, model: torch.nn.Module, weights: dict) -> torch.nn.Module:
    inputs, _ = load_named_sample(path)
    model.eval()
    with torch.no_grad():
        model(*(t[:1] for t in inputs.values()))  # builds lazy layers so their weights exist
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
