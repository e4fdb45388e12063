"""The package's ``torch.export`` program (``model.pt2``): writing it, and loading it without pickle.

``torch.export.load`` can unpickle objects and load shared libraries; :func:`load_program` first
proves that the archive holds only what a plain exported program holds (see docs/export.md,
"No pickle").
"""

from __future__ import annotations

import io
import json
import logging
import os
import zipfile
from pathlib import Path
from typing import Any

import torch

from ember.package.cause import advice, first_line
from ember.package.manifest import PackageError

__all__ = ["load_program", "save_program"]

logger = logging.getLogger(__name__)

BATCH = "batch"

# Entries torch.export.save writes for a plain program (names inside the archive's top folder).
_PT2_ALLOWED = ("archive_format", "archive_version", "byteorder", ".data/", "models/", "data/")
_PT2_FORBIDDEN = (
    "data/aotinductor/",
    "data/executorch/",
    "data/weights/model.pt",
    "data/constants/model.pt",
)


def save_program(
    flat: torch.nn.Module, args: tuple, dynamic: dict[str, dict[int, str]] | str, file: Path
) -> tuple[str | None, dict, dict]:
    """Write a :class:`~ember.package.signature.FlatModule` as a ``torch.export`` program.

    Axis 0 of every input is the dynamic batch; ``dynamic`` names the other dynamic axes
    (``{"input_ids": {1: "sequence"}}``) or is ``"auto"`` to let torch.export infer them.

    Args:
        flat: the module, in eval mode, its lazy layers built, taking ``*args``.
        args: one example batch per input, shape ``(N, ...)``.
        dynamic: the dynamic axes beyond the batch, or ``"auto"``.
        file: where to write the ``.pt2`` archive (removed again if export fails).

    Returns:
        ``(error, dynamic_axes, dims)``: the failure's cause or None (the package then has no
        program), ``{input: {"axis": dim name}}`` and ``{dim name: {"min", "max"}}``.

    Example:
        >>> error, axes, dims = save_program(flat, (ids, mask), {"input_ids": {1: "seq"}}, path)
    """
    from ember.package.signature import dims_for_export

    names = list(flat.names)
    trace = tuple(_two_rows(a) for a in args)
    axes = {} if dynamic == "auto" else {n: dict(a) for n, a in dynamic.items()}
    dims: dict = {BATCH: {"min": 1, "max": None}}
    dims.update({d: {"min": 1, "max": None} for a in axes.values() for d in a.values()})
    try:
        if dynamic == "auto" or axes:
            axes, dims = _discover(flat, trace, names, axes, auto=dynamic == "auto")
        signature = {
            "inputs": [{"name": n} for n in names],
            "dynamic_axes": _json_axes(axes),
            "dims": dims,
        }
        program = torch.export.export(flat, trace, dynamic_shapes=dims_for_export(signature))
        torch.export.save(program, str(file))
        return None, _json_axes(axes), dims
    except Exception as exc:  # torch.export raises many error types; all mean "not exportable"
        file.unlink(missing_ok=True)
        cause = first_line(exc)
        logger.warning(
            "torch.export failed, so the package has no model.pt2 (%s). %s", cause, advice(cause)
        )
        return cause, _json_axes(axes), dims


def _two_rows(t: torch.Tensor) -> torch.Tensor:
    # Export specialises a size-1 dim to a constant, so trace with at least two rows.
    return t if t.shape[0] >= 2 else t.repeat(2, *[1] * (t.dim() - 1))


def _discover(
    flat: torch.nn.Module, trace: tuple, names: list[str], axes: dict, *, auto: bool
) -> tuple[dict, dict]:
    """Export once to learn which axes are dynamic (``auto``) and each dim's range."""
    dynamic, auto_dim = torch.export.Dim.DYNAMIC, torch.export.Dim.AUTO
    shapes = []
    for name, t in zip(names, trace):
        chosen = {0: dynamic}
        if auto:
            chosen.update({axis: auto_dim for axis in range(1, t.dim())})
        else:
            chosen.update({axis: dynamic for axis in axes.get(name, {})})
        shapes.append(chosen)
    program = torch.export.export(flat, trace, dynamic_shapes=(tuple(shapes),))
    user = set(program.graph_signature.user_inputs)
    placeholders = [n for n in program.graph.nodes if n.op == "placeholder" and n.name in user]
    found: dict = {}
    ranges: dict[str, dict] = {BATCH: {"min": 1, "max": None}}
    by_symbol: dict = {}
    for name, node, t in zip(names, placeholders, trace):
        shape = node.meta["val"].shape
        for axis in range(t.dim()):
            size = shape[axis]
            if not isinstance(size, torch.SymInt) or not size.node.expr.free_symbols:
                continue
            expr = size.node.expr
            if axis == 0:
                label = BATCH
            elif auto:
                label = by_symbol.setdefault(expr, _auto_name(t, axis, len(by_symbol)))
                found.setdefault(name, {})[axis] = label
            else:
                label = axes[name][axis]
                found.setdefault(name, {})[axis] = label
            bounds = program.range_constraints.get(expr)
            _merge_range(ranges.setdefault(label, {"min": 1, "max": None}), bounds)
    missing = {n: a for n, a in axes.items() for x in a if x not in found.get(n, {})}
    if missing:  # Dim.DYNAMIC raises first; this is a second line of defence
        raise ValueError(f"torch.export made the axes {missing} static")
    return found, ranges


def _auto_name(t: torch.Tensor, axis: int, index: int) -> str:
    # The first inferred axis 1 is the usual sequence axis of token ids and masks.
    return "sequence" if index == 0 and axis == 1 else f"dim{index}"


def _merge_range(current: dict, bounds: Any) -> None:
    if bounds is None:
        return
    upper, lower = _finite(bounds.upper), _finite(bounds.lower) or 1
    if upper is not None:
        current["max"] = upper if current["max"] is None else min(current["max"], upper)
    if lower > 2:  # torch reports 2 for any size that may also be 0 or 1 at run time
        current["min"] = max(current["min"], lower)


def _finite(value: Any) -> int | None:
    try:
        return int(value)
    except Exception:  # torch's int_oo / -int_oo (sympy) raise various errors here
        return None


def _json_axes(axes: dict) -> dict:
    return {name: {str(axis): dim for axis, dim in a.items()} for name, a in axes.items()}


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


def _check_pt2_archive(file: Path, archive: zipfile.ZipFile) -> None:
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
