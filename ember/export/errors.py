"""Errors raised by export targets, and the lazy import that names the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["ExportError", "MissingDependencyError", "require", "way_out"]


class ExportError(RuntimeError):
    """An export target could not be written or does not compute what the trained model computes."""


class MissingDependencyError(ExportError, ImportError):
    """An optional dependency of a target is not installed."""


def require(module: str, extra: str) -> ModuleType:
    """Import an optional dependency or fail with the ``pip install`` line of its extra.

    Args:
        module: the module to import, e.g. ``"onnxruntime"``.
        extra: the ember extra that provides it, e.g. ``"export"``.

    Returns:
        The imported module.

    Raises:
        MissingDependencyError: when the import fails.

    Example:
        >>> ort = require("onnxruntime", "export")
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"This export target needs {module!r}, which is not installed ({exc}). "
            f"Install it with: pip install 'ember[{extra}]'"
        ) from exc


def way_out(cause: BaseException | str) -> str:
    """Explain an export failure: its cause and how to change the model so that it exports.

    Args:
        cause: the exception raised by ``torch.export`` / ``torch.onnx.export``, or its text.

    Returns:
        A one-paragraph message.

    Example:
        >>> way_out(RuntimeError("Could not guard on data-dependent expression u0 > 0"))
    """
    if isinstance(cause, BaseException):
        text = str(cause).strip()
        cause = f"{type(cause).__name__}: {text.splitlines()[0] if text else ''}"
    return (
        f"{cause}. Way out: the model must be traceable by torch.export. Replace Python "
        "control flow that depends on tensor values (if x.sum() > 0: ...) with torch.cond or "
        "torch.where, avoid .item()/.tolist() in forward, or export with fixed shapes."
    )
