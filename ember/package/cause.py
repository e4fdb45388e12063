"""Why an export failed: torch's own first error line, and advice for that cause.

``torch.export``, ``torch.onnx`` and ExecuTorch wrap the real error in several layers of
boilerplate, with ANSI colour codes in it. :func:`first_line` digs out the innermost message's
first sentence; :func:`advice` maps its kind (dtype mismatch, data-dependent shape, a dynamic
axis the model fixes, an unsupported operator) to what the user can change.
"""

from __future__ import annotations

import re

__all__ = ["advice", "classify", "first_line"]

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_MAX_CHARS = 500
# Lines torch puts before the real message.
_BOILERPLATE = (
    "failed to export the model",
    "the error above occurred",
    "for more information",
    "set torch_logs",
    "please",
)

_ADVICE = {
    "dtype": (
        "The example input's dtypes differ from what the model computes with: pass token ids "
        "as int64 (torch.long), attention masks as int64 or bool and features as float32 in "
        "`example_input`, exactly as the model gets them in training."
    ),
    "data_dependent": (
        "The model's control flow or a shape depends on tensor values. Replace "
        "`if x.sum() > 0:` with torch.cond or torch.where, avoid .item()/.tolist()/nonzero() "
        "in forward, or use torch._check() to tell torch.export the size's range."
    ),
    "constraint": (
        "An axis marked dynamic is fixed or bounded by the model (e.g. an LSTM unrolled over a "
        "fixed length, or position embeddings of a maximum length). Drop that axis from "
        "`dynamic_shapes`, save with a sample of the length you serve, or export this target "
        "with fixed shapes (--static / static=True)."
    ),
    "view": (
        "A view of a non-contiguous tensor (often the output of fused attention, "
        "scaled_dot_product_attention, after a transpose) cannot be lowered. For a transformers "
        'model set `model.config._attn_implementation = "eager"` before ember.save (or load '
        'it with attn_implementation="eager"); in your own model use .reshape or '
        ".contiguous().view."
    ),
    "unsupported": (
        "The model uses an operator this target cannot convert. Try another target (onnx and "
        "cpp cover the most operators), a newer opset (opset=...), or replace the operator in "
        "the model's forward with a standard one."
    ),
    "other": (
        "Check that the model runs on the stored sample in eval mode (`model.eval()(x)`) and "
        "that torch.export.export(model, (x,)) works; `ember -v` shows the full trace."
    ),
}
_PATTERNS = (
    (
        "dtype",
        r"dtype mismatch|expected scalar type|floattensor|longtensor|"
        r"expected .*dtype|tensors? of type|dtype .* but got|must have the same dtype",
    ),
    ("view", r"cannot view a tensor|view size is not compatible"),
    (
        "constraint",
        r"constraints? violated|not all values of|specializ|suggested fixes|"
        r"dim\.dynamic|is not in range|guard.*size\(\)",
    ),
    (
        "data_dependent",
        r"data-dependent|data dependent|guardondatadependent|unbacked|"
        r"could not guard|could not extract specialized integer",
    ),
    (
        "unsupported",
        r"not supported|unsupported|no symbolic function|notimplemented|"
        r"not implemented|could not find an implementation|no decomposition|cannot be lowered|"
        r"not currently supported|unknown op",
    ),
)


def first_line(exc: BaseException | str) -> str:
    """The real cause of an export failure as ``Type: first sentence``, without colour codes.

    Follows ``__cause__`` / ``__context__`` to the innermost exception (torch.onnx wraps
    torch.export's error), skips boilerplate lines and never cuts inside a sentence: a line
    longer than 500 characters ends at its last full stop before that.

    Example:
        >>> first_line(RuntimeError("\\x1b[31mTensor dtype mismatch! Expected int64\\x1b[0m\\nmore"))
        'RuntimeError: Tensor dtype mismatch! Expected int64'
    """
    if isinstance(exc, str):
        return _first_sentence(_ANSI.sub("", exc)) or exc
    chain = [exc]
    while True:
        nxt = chain[-1].__cause__
        if nxt is None or nxt in chain or len(chain) > 10:
            break
        chain.append(nxt)
    # The innermost error with a message is the real one; outer ones are wrappers.
    for error in reversed(chain):
        line = _first_sentence(_ANSI.sub("", str(error)))
        if line:
            return f"{type(error).__name__}: {line}"
    return type(exc).__name__


def classify(cause: str) -> str:
    """``"dtype"``, ``"view"``, ``"constraint"``, ``"data_dependent"``, ``"unsupported"`` or
    ``"other"``."""
    text = cause.lower()
    for kind, pattern in _PATTERNS:
        if re.search(pattern, text):
            return kind
    return "other"


def advice(cause: str) -> str:
    """What to change for a failure whose first line is ``cause`` (see :func:`classify`).

    Example:
        >>> advice("Tensor dtype mismatch! Expected: torch.int64, Got: torch.float32")[:30]
        "The example input's dtypes dif"
    """
    return "Way out: " + _ADVICE[classify(cause)]


def _first_sentence(text: str) -> str:
    for raw in text.strip().splitlines():
        line = raw.strip()
        if not line or line.lower().startswith(_BOILERPLATE) or set(line) <= set("=-*#~ "):
            continue
        if len(line) <= _MAX_CHARS:
            return line
        cut = line.rfind(". ", 0, _MAX_CHARS)
        return line[: cut + 1] if cut > 0 else line[:_MAX_CHARS].rsplit(" ", 1)[0] + " ..."
    return ""
