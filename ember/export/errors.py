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


def way_out(cause: BaseException | str, *, target: str | None = None, static: bool = False) -> str:
    """Explain an export failure: torch's own first error line and advice for that cause.

    The cause is the innermost exception's first sentence, without colour codes (see
    :func:`ember.package.first_line`); the advice depends on its kind: a dtype mismatch, a
    data-dependent shape or control flow, a dynamic axis the model fixes, an unsupported
    operator (see :func:`ember.package.advice`).

    Args:
        cause: the exception raised by ``torch.export`` / ``torch.onnx.export`` / a lowering,
            or its text (as recorded in ``ember.json``'s ``export_error``).
        target: the target's name, for target-specific advice.
        static: the target was already exported with fixed shapes (no advice to try them).

    Returns:
        A one-paragraph message.

    Example:
        >>> way_out(RuntimeError("Could not guard on data-dependent expression u0 > 0"))
    """
    from ember.package import advice, first_line
    from ember.package.cause import classify

    line = first_line(cause)
    text = f"{line} {advice(line)}" if line.endswith((".", "!", "?")) else f"{line}. {advice(line)}"
    extra = None if static else _TARGET_ADVICE.get((target, classify(line)))
    return f"{text} {extra}" if extra else text


_TARGET_ADVICE = {
    ("mobile", "constraint"): "For ExecuTorch: ember export DIR --to mobile --static.",
    ("mobile", "unsupported"): "For ExecuTorch: ember export DIR --to mobile --static, or use "
    "the mobile/model.ort file from the onnx route.",
    ("mobile", "other"): "For ExecuTorch, a dynamic axis often cannot lower: try --static.",
    ("mobile", "view"): "If it still fails, also try --static.",
    ("cpp", "constraint"): "For AOTInductor: export with fixed shapes (static=True).",
}
