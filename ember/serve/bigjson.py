"""JSON request bodies with big arrays of numbers, parsed in chunks straight into numpy.

orjson turns a 60 MB array of numbers into some 6 M Python floats (32 bytes each: several times
the text) in one call that holds the GIL for most of a second. ``loads`` instead leaves each array
of numbers longer than ``CHUNK`` bytes as a ``RawArray`` (where it lies in the body and its shape,
checked to be regular) and parses the rest of the document with orjson. ``RawArray.to_numpy``
then reads the numbers ``CHUNK`` bytes at a time into one preallocated array of the input's
dtype: the memory used is the body, the array and one chunk, and no single call holds the GIL
for more than a millisecond or two, so the event loop keeps answering other clients.
"""

from __future__ import annotations

import math
import re
import secrets
from typing import Any

import numpy as np
import orjson

__all__ = ["CHUNK", "RawArray", "loads"]

CHUNK = 256 * 1024
_BLOCK = 1024 * 1024
_MAX_DEPTH = 32
_RUN_CHARS = rb"-+.0-9eE,\s\[\]"  # what an array of numbers is made of
# What cannot hold a big array: whole strings (brackets inside them are never taken for arrays),
# other characters, and short arrays of numbers. Possessive: no backtracking; one call per window.
_SKIP = re.compile(
    rb'(?>"(?:[^"\\]++|\\.)*+"|[^"\[]++|\[['
    + _RUN_CHARS
    + rb"]{0,4096}+(?=[^"
    + _RUN_CHARS
    + rb"]))*+"
)
_STRING_REST = re.compile(rb'(?:[^"\\]++|\\.)*+(")?')
_RUN_BYTES = b"-+.0123456789eE,[] \t\n\r"
# bytes.translate runs at C speed: these map run characters to 0 and drop all but , [ ].
_OUTSIDE_RUN = bytes(0 if c in _RUN_BYTES else 1 for c in range(256))
_NOT_TOKENS = bytes(c for c in range(256) if c not in b",[]")
_NO_BRACKETS = bytes.maketrans(b"[]", b"  ")
_OPEN, _CLOSE, _COMMA, _QUOTE = ord("["), ord("]"), ord(","), ord('"')


class RawArray:
    """A regular (rectangular) JSON array of numbers, left unparsed in the request body.

    Args:
        view: the body.
        start: offset of its ``[``.
        end: offset just past its ``]``.
        shape: its shape, from its brackets.

    Example:
        >>> body = b'{"data": [[1, 2], [3, 4]]}'
        >>> RawArray(memoryview(body), 9, 25, [2, 2]).to_numpy(np.float32).tolist()
        [[1.0, 2.0], [3.0, 4.0]]
    """

    __slots__ = ("_view", "start", "end", "shape")

    def __init__(self, view: memoryview, start: int, end: int, shape: list[int]) -> None:
        self._view = view
        self.start = start
        self.end = end
        self.shape = shape

    def __repr__(self) -> str:
        return f"RawArray(shape={self.shape}, bytes={self.end - self.start})"

    def to_numpy(self, dtype: Any) -> np.ndarray:
        """The numbers as an array of ``dtype`` and ``shape``.

        Raises:
            ValueError, TypeError, OverflowError: invalid JSON, or a value ``dtype`` cannot hold.
        """
        view, out = self._view, np.empty(math.prod(self.shape), dtype)
        pos, filled = self.start, 0
        while pos < self.end:
            cut = _next_comma(view, min(pos + CHUNK, self.end), self.end)
            text = bytes(view[pos:cut]).translate(_NO_BRACKETS)
            try:
                values = orjson.loads(b"[" + text + b"]")
                if out.dtype.kind in "iu" and (b"." in text or b"e" in text or b"E" in text):
                    bad = first_fraction(values)  # numpy would cut 9.5 to 9 silently
                    if bad is not None:
                        raise ValueError(f"integer data must be whole numbers, received {bad!r}")
                values = np.asarray(values, dtype=dtype)
            except orjson.JSONDecodeError as exc:
                if self.shape[-1] == 1:  # [[1], [], ...]: its brackets read as shape (n, 1)
                    return self._parse_all(dtype)
                raise ValueError(f"invalid JSON in an array of numbers: {exc}") from None
            if filled + values.size > out.size:
                return self._parse_all(dtype)
            out[filled : filled + values.size] = values
            filled += values.size
            pos = cut + 1
        if filled != out.size:  # an empty innermost list ([[1], []]): not what the shape says
            return self._parse_all(dtype)
        return out.reshape(self.shape)

    def value(self) -> Any:
        """The array as orjson parses it (nested lists), for the rare caller that wants that."""
        return orjson.loads(self._view[self.start : self.end])

    def _parse_all(self, dtype: Any) -> np.ndarray:
        return np.asarray(self.value(), dtype=dtype)


def loads(body: bytes | bytearray | memoryview) -> Any:
    """Parses a JSON document, leaving its big arrays of numbers as ``RawArray``.

    Args:
        body: the JSON text; it must not change while the ``RawArray`` objects are in use.

    Returns:
        What ``orjson.loads`` returns, with a ``RawArray`` in place of each regular array of
        numbers longer than ``CHUNK`` bytes.

    Raises:
        orjson.JSONDecodeError: the text is not JSON.

    Example:
        >>> loads(b'{"data": [1, 2]}')  # small arrays are plain lists
        {'data': [1, 2]}
    """
    if len(body) < CHUNK:
        return orjson.loads(body)
    view = memoryview(body).cast("B")
    runs = []
    for start, end in _long_runs(view):
        shape = _regular_shape(view[start:end])
        if shape is not None:
            runs.append(RawArray(view, start, end, shape))
    if not runs:
        return orjson.loads(body)
    nonce = secrets.token_hex(8)
    pieces: list[Any] = []
    placeholders: dict[str, RawArray] = {}
    last = 0
    for index, run in enumerate(runs):
        key = f"\x00ember-array:{nonce}:{index}"
        placeholders[key] = run
        pieces += [view[last : run.start], orjson.dumps(key)]
        last = run.end
    pieces.append(view[last:])
    return _substitute(orjson.loads(b"".join(pieces)), placeholders)


def _long_runs(view: memoryview) -> list[tuple[int, int]]:
    """``(start, end)`` of each run of array characters of ``CHUNK`` bytes or more outside
    strings, from its ``[`` to its last ``]``. No regex call reads more than ``CHUNK`` bytes, so
    the GIL is let go between them."""
    runs, pos, n = [], 0, len(view)
    while pos < n:
        pos = _SKIP.match(view, pos, min(n, pos + CHUNK)).end()
        if pos >= n or view[pos] not in (_OPEN, _QUOTE):
            continue  # the window ended inside something boring: go on from there
        start = pos
        if view[pos] == _QUOTE:
            pos = _string_end(view, pos + 1)
            continue
        pos = _run_end(view, pos + 1)
        if pos - start >= CHUNK:
            tail = max(start, pos - 4096)
            last = bytes(view[tail:pos]).rfind(b"]")
            if last >= 0:
                runs.append((start, tail + last + 1))
    return runs


def _run_end(view: memoryview, pos: int) -> int:
    """Offset of the first character at or after ``pos`` that cannot be in an array of numbers."""
    while pos < len(view):
        window = bytes(view[pos : pos + CHUNK])
        first = window.translate(_OUTSIDE_RUN).find(1)
        if first >= 0:
            return pos + first
        pos += len(window)
    return len(view)


def _string_end(view: memoryview, pos: int) -> int:
    """Offset just past the string whose text starts at ``pos`` (``len(view)`` if unterminated)."""
    n = len(view)
    while pos < n:
        stop = min(n, pos + CHUNK)
        match = _STRING_REST.match(view, pos, stop)
        if match.group(1) is not None or stop == n:
            return match.end()
        pos = match.end()  # the window cut the string (maybe right after a backslash)
    return n


def _substitute(root: Any, placeholders: dict[str, RawArray]) -> Any:
    """Puts each ``RawArray`` where its placeholder string landed in the parsed skeleton
    (with a stack, not recursion: JSON may nest 1,024 deep)."""
    if isinstance(root, str):
        return placeholders.get(root, root)
    stack = [root]
    while stack:
        node = stack.pop()
        for key, item in node.items() if isinstance(node, dict) else enumerate(node):
            if isinstance(item, str):
                if item in placeholders:
                    node[key] = placeholders[item]
            elif isinstance(item, (dict, list)):
                stack.append(item)
    return root


def _next_comma(view: memoryview, pos: int, end: int) -> int:
    """Offset of the first ``,`` at or after ``pos`` (``end`` when there is none)."""
    while pos < end:
        found = bytes(view[pos : min(pos + 4096, end)]).find(b",")
        if found >= 0:
            return pos + found
        pos += 4096
    return end


def _tokens(view: memoryview) -> np.ndarray:
    """The ``[``, ``]`` and ``,`` of the text, in order (one byte each), read 1 MiB at a time."""
    parts = [
        bytes(view[start : start + _BLOCK]).translate(None, _NOT_TOKENS)
        for start in range(0, len(view), _BLOCK)
    ]
    return np.frombuffer(b"".join(parts), np.uint8)


def _regular_shape(view: memoryview) -> list[int] | None:
    """The shape of a regular nested array from its brackets and commas, or None.

    The first element at each depth gives the shape; ``_regular`` then checks that every other
    element has the same bracket structure. That numbers fill exactly the slots between commas
    (no number beside a bracket, no empty slot) is checked when they are parsed.
    """
    t = _tokens(view)
    depth = int(np.argmax(t != _OPEN)) if len(t) else 0
    if not 0 < depth <= _MAX_DEPTH:
        return None
    close = int(np.argmax(t == _CLOSE))
    if t[close] != _CLOSE or close < depth or (t[depth:close] != _COMMA).any():
        return None
    dims = [close - depth + 1]
    length = close - depth + 2  # tokens of one innermost array: "[" + commas + "]"
    for level in range(depth - 2, -1, -1):
        seps = t[level + 1 + length :: length + 1]  # what follows each element at this level
        if not len(seps):
            return None
        n = int(np.argmax(seps != _COMMA))
        if seps[n] != _CLOSE:
            return None
        dims.insert(0, n + 1)
        length = (n + 1) * (length + 1) + 1
    if length != len(t) or not _regular(t, dims):
        return None
    return dims


def _regular(t: np.ndarray, dims: list[int]) -> bool:
    """Whether the tokens ``t`` are exactly those of a nested array of shape ``dims``."""
    if t[0] != _OPEN or t[-1] != _CLOSE:
        return False
    if len(dims) == 1:
        return bool((t[1:-1] == _COMMA).all())
    inner = len(t[1:]) // dims[0] - 1  # tokens of one element
    first = t[1 : 1 + inner]
    if not _regular(first, dims[1:]):
        return False
    rows = t[1:].reshape(dims[0], inner + 1)  # each element and the token after it
    return bool(
        (rows[:, :inner] == first).all()
        and (rows[:-1, inner] == _COMMA).all()
        and rows[-1, inner] == _CLOSE
    )


def first_fraction(values: list) -> float | None:
    """The first float of a flat list that is not a whole number, or None: integer data must
    not hold one (numpy would cut 9.5 to 9 silently)."""
    return next((v for v in values if type(v) is float and not v.is_integer()), None)
