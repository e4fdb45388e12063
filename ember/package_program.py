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

import torch

from ember.package_manifest import PackageError

__all__ = ["load_program", "save_program"]

logger = logging.getLogger(__name__)

# Entries torch.export.save writes for a plain program (names inside the archive's top folder).
_PT2_ALLOWED = ("archive_format", "archive_version", "byteorder", ".data/", "models/", "data/")
_PT2_FORBIDDEN = (
    "data/aotinductor/",
    "data/executorch/",
    "data/weights/model.pt",
    "data/constants/model.pt",
)


def save_program(model: torch.nn.Module, example: torch.Tensor, file: Path) -> str | None:
    """Write ``model`` as a ``torch.export`` program with a dynamic batch dimension.

    Args:
        model: the module, in eval mode, its lazy layers built.
        example: a batch of inputs, shape ``(N, ...)``.
        file: where to write the ``.pt2`` archive (removed again if export fails).

    Returns:
        None on success, else the failure's cause (the package then has no program).

    Example:
        >>> cause = save_program(net.eval(), torch.zeros(2, 1, 8, 8), Path("digits/model.pt2"))
    """
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
