"""``ember inspect``: a package's signature, metrics and targets as text."""

from __future__ import annotations

import os
from typing import Any

from ember.package.manifest import PROGRAM, read_manifest

__all__ = ["inspect_text"]

_FIGURES = (
    "max_abs_diff",
    "max_rel_diff",
    "top1_agreement",
    "size_bytes",
    "size_ratio",
    "accuracy",
)


def inspect_text(path: str | os.PathLike) -> str:
    """A human-readable summary: signature, dynamic axes, metrics, targets and their parity.

    Args:
        path: the package directory.

    Returns:
        Multi-line text for ``ember inspect DIR``.

    Example:
        >>> print(inspect_text("digits"))
    """
    m = read_manifest(path)
    signature = m["signature"]
    task = m.get("task") or "not set"  # ember.save(..., task=...) sets it
    lines = [f"{m.get('name')}  (task: {task}, format {m['format_version']})"]
    for kind in ("inputs", "outputs"):
        for spec in signature[kind]:
            lines.append(f"  {kind[:-1]:<6} {spec['name']}: {spec['dtype']} {spec['shape']}")
    for name, axes in (signature.get("dynamic_axes") or {}).items():
        dims = signature.get("dims") or {}
        shown = ", ".join(f"{a}={d}{_range(dims.get(d))}" for a, d in axes.items())
        lines.append(f"  dynamic {name}: {shown}")
    if m.get("metrics"):
        lines.append("  metrics: " + ", ".join(f"{k}={v}" for k, v in m["metrics"].items()))
    lines.append(f"  program: {'model.pt2' if PROGRAM in m['files'] else 'none'}")
    targets = m.get("targets") or {}
    lines.append("  targets:" + ("" if targets else " none"))
    for target, info in targets.items():
        figures = ", ".join(f"{k}={_fmt(info[k])}" for k in _FIGURES if info.get(k) is not None)
        lines.append(f"    {target:<7} {info.get('file', '')}  {figures}")
    return "\n".join(lines)


def _range(info: dict | None) -> str:
    if not info or info.get("max") is None:
        return ""
    return f" [{info.get('min', 1)}..{info['max']}]"


def _fmt(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
