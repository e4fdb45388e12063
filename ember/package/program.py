"""The package's ``torch.export`` program (``model.pt2``): writing it, and loading it without pickle.

``torch.export.load`` can unpickle objects and load shared libraries; :func:`load_program` first
proves that the archive holds only what a plain exported program holds (see docs/export.md,
"No pickle").
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from ember.package.cause import advice, first_line
from ember.package.manifest import PackageError

__all__ = ["check_archive", "check_graph", "load_program", "save_program"]

logger = logging.getLogger(__name__)

BATCH = "batch"
# torch.export notices that nn.LSTM/GRU refresh their `_flat_weights` list (views of registered
# parameters) while tracing; the program holds the parameters and matches the model (parity-
# checked by every target), so this one warning is hidden where ember calls torch.export.
_RNN_FLAT_WEIGHTS = r"The tensor attributes .*_flat_weights\[\d+\].* were assigned during export"

# The exact entries torch.export.save writes for one program named "model" (inside its top folder).
_PROGRAM_JSON = "models/model.json"
_PT2_CONFIGS = (
    ("weights", "data/weights/model_weights_config.json", re.compile(r"weight_\d{1,9}")),
    ("constants", "data/constants/model_constants_config.json", re.compile(r"tensor_\d{1,9}")),
)
_PT2_REQUIRED = ("archive_format", "archive_version", _PROGRAM_JSON) + tuple(
    entry for _, entry, _ in _PT2_CONFIGS
)
# sample_inputs/model.pt is a pickle torch writes; it is allowed in the archive but never read.
_PT2_FIXED = frozenset(
    _PT2_REQUIRED
    + ("byteorder", ".data/version", ".data/serialization_id", "data/sample_inputs/model.pt")
)
_PT2_PAYLOAD = re.compile(r"data/(weights/weight|constants/tensor)_\d{1,9}")
_SAFE_TOP = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_MAX_PT2_BYTES = 8 << 30
_MAX_JSON_BYTES = 256 << 20


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
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", _RNN_FLAT_WEIGHTS, UserWarning)
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
    """Load a ``model.pt2`` without unpickling or executing anything the archive holds.

    ``torch.export.load`` loads every program an archive lists, unpickles payloads flagged
    ``use_pickle`` (and example inputs on a ``weights_only=False`` fallback), loads AOTInductor
    libraries, and hands expressions in the graph to ``sympy.sympify`` (an ``eval``). So ember
    does not call it. The archive is read into memory once, checked against the exact layout
    ``torch.export.save`` writes for one program named ``model`` (see :func:`check_archive`), its
    graph is checked by :func:`check_graph` (operators and shape expressions from allow-lists),
    and only then is that one program deserialized from raw tensor bytes, without example inputs.

    Args:
        file: path of a ``torch.export.save`` archive.

    Returns:
        The ``ExportedProgram``.

    Raises:
        PackageError: the archive is not exactly a plain ``torch.export`` program.

    Example:
        >>> program = load_program("digits/model.pt2")
    """
    file = Path(file)
    data = _read_bounded(file)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            prefix, configs = check_archive(file.name, archive, len(data))
            graph = _json_entry(file.name, archive, prefix + _PROGRAM_JSON)
    except zipfile.BadZipFile as exc:
        raise PackageError(f"{file.name} is not a torch.export archive: {exc}") from exc
    check_graph(file.name, graph)
    try:
        return _deserialize(data, prefix, graph, configs)
    except PackageError:
        raise
    except Exception as exc:  # torch's deserializer raises many types for a malformed program
        raise PackageError(
            f"{file.name} could not be loaded as a torch.export program: {exc}"
        ) from exc


def check_archive(name: str, archive: zipfile.ZipFile, size: int) -> tuple[str, dict[str, dict]]:
    """Refuse any ``.pt2`` archive that is not exactly what ``torch.export.save`` writes.

    Accepted: one top folder; the fixed entries of one program named ``model``; raw tensor payloads
    ``data/weights/weight_<n>`` and ``data/constants/tensor_<n>`` that the configs reference, each
    described as plain bytes (``use_pickle: false``) whose declared shape fits its payload. Every
    entry is stored uncompressed (torch never compresses), names are unique, sizes add up.

    Args:
        name: the file name, for messages.
        archive: the open archive.
        size: the archive's size in bytes.

    Returns:
        The top folder (``"model/"``) and the two payload configs ``{"weights": ..., "constants": ...}``.

    Raises:
        PackageError: naming the first entry or field that is not allowed.
    """
    infos = archive.infolist()
    names = [i.filename for i in infos]
    if not names:
        raise PackageError(f"{name} is an empty archive; refusing to load it")
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise PackageError(f"{name} holds duplicate entries {_short(dup)}; refusing to load it")
    prefix = names[0].split("/", 1)[0] + "/"
    if not _SAFE_TOP.fullmatch(prefix[:-1]):
        raise PackageError(
            f"{name} has an unexpected top folder {prefix[:40]!r}; refusing to load it"
        )
    inner = {}
    for info in infos:
        rel = info.filename[len(prefix) :] if info.filename.startswith(prefix) else None
        if rel is None or not (rel in _PT2_FIXED or _PT2_PAYLOAD.fullmatch(rel)):
            raise PackageError(
                f"{name} holds an entry ember does not write: {info.filename[:200]!r}; "
                "a package's model.pt2 holds exactly one plain torch.export program"
            )
        if info.compress_type != zipfile.ZIP_STORED or info.file_size != info.compress_size:
            raise PackageError(
                f"{name}: entry {rel!r} is compressed; torch.export never compresses"
            )
        inner[rel] = info
    if sum(i.file_size for i in infos) > size:
        raise PackageError(f"{name}: entry sizes exceed the archive's size; refusing to load it")
    missing = [e for e in _PT2_REQUIRED if e not in inner]
    if missing:
        raise PackageError(f"{name} lacks {missing}; it is not a torch.export archive")
    for entry, value in (("archive_format", b"pt2"), ("archive_version", b"0")):
        if archive.read(prefix + entry).strip() != value:
            raise PackageError(f"{name}: {entry} is not {value.decode()!r}; refusing to load it")
    configs = {}
    for kind, entry, stem in _PT2_CONFIGS:
        config = _json_entry(name, archive, prefix + entry).get("config")
        if not isinstance(config, dict):
            raise PackageError(f"{name}: {entry} has no 'config' object")
        for fqn, meta in config.items():
            _check_payload(name, kind, fqn, meta, stem, inner)
        configs[kind] = config
    referenced = {
        f"data/{kind}/{meta['path_name']}"
        for kind, config in configs.items()
        for meta in config.values()
    }
    stray = [n for n in inner if _PT2_PAYLOAD.fullmatch(n) and n not in referenced]
    if stray:
        raise PackageError(f"{name} holds payloads no config references: {_short(stray)}")
    return prefix, configs


def check_graph(name: str, program: dict) -> None:
    """Refuse a serialized program whose graph calls anything but tensor and shape operators.

    Every node target must be an ``aten``/``prims`` operator, an allowed higher-order operator, a
    ``torch.sym_*`` helper, or an arithmetic function of ``operator``/``math``; every symbolic
    expression (torch parses them with ``sympy.sympify``, an ``eval``) must be arithmetic over
    shape symbols and integers; torchbind objects are refused.

    Args:
        name: the file name, for messages.
        program: the parsed ``models/model.json``.

    Raises:
        PackageError: naming the first target or expression that is not allowed.
    """
    stack: list = [program]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                if key == "target" and isinstance(value, str):
                    _check_target(name, value)
                elif key == "expr_str":
                    _check_expr(name, value)
                elif key == "range_constraints" and isinstance(value, dict):
                    for symbol in value:
                        _check_expr(name, symbol)
                elif key == "custom_obj_values" and value:
                    raise PackageError(f"{name} holds torchbind objects; refusing to load it")
                stack.append(value)
        elif isinstance(item, list):
            stack.extend(item)


# -- helpers --------------------------------------------------------------------------------------

# Operators a plain exported program calls; anything else (torch.os.system, operator.call, ...) is
# refused. aten::from_file reads an arbitrary file.
_OP_NAMESPACES = ("aten", "prims", "quantized_decomposed")
_DENIED_OPS = frozenset({"from_file"})
_HIGHER_ORDER = frozenset(
    {
        "cond",
        "while_loop",
        "map_impl",
        "scan",
        "associative_scan",
        "wrap_with_set_grad_enabled",
        "wrap_with_autocast",
        "invoke_subgraph",
        "auto_functionalized",
        "auto_functionalized_v2",
    }
)
_OPERATOR_FNS = frozenset(
    "getitem add sub mul truediv floordiv mod pow neg pos abs eq ne lt le gt ge and_ or_ xor "
    "not_ invert lshift rshift matmul truth".split()
)
_MATH_FNS = frozenset(n for n in dir(math) if not n.startswith("_"))
_TARGET = re.compile(
    r"torch\.ops\.(?P<ns>[a-z_]+)\.(?P<op>[A-Za-z0-9_]+)(\.[A-Za-z0-9_]+)?"
    r"|_operator\.(?P<operator>[a-z_]+)|math\.(?P<math>[a-z0-9_]+)|torch\._?sym_[a-z_]+"
)
# Names torch's serializer writes into shape expressions (its sympy functions and sympy's own).
_EXPR_NAMES = frozenset(
    "FloorDiv ModularIndexing Where PythonMod Mod CleanDiv CeilToInt FloorToInt CeilDiv LShift "
    "RShift PowByNatural FloatPow FloatTrueDiv IntTrueDiv IsNonOverlappingAndDenseIndicator "
    "TruncToFloat TruncToInt RoundToInt RoundDecimal ToFloat Identity Max Min Abs Eq Ne Lt Le Gt "
    "Ge And Or Not Xor Piecewise True False oo zoo nan floor ceiling sqrt Integer Rational Symbol "
    "Add Mul Pow positive negative nonnegative nonpositive integer real finite".split()
)
_EXPR_TOKEN = re.compile(
    r"\s*(?:(\d{1,30}(?:\.\d{1,30})?)|([A-Za-z][A-Za-z0-9]{0,63})|'([a-z]{1,8}\d{1,9})'"
    r"|(\*\*|//|[-+*/%(),<>=!&|~]))"
)
# Pow(base, exponent) in sympy's srepr form: a symbol or small integer to a small integer power.
_POW = re.compile(
    r"Pow\((?:Symbol\('[a-z]{1,8}\d{1,9}'(?:, [a-z]+=(?:True|False))*\)|Integer\(\d{1,4}\)), "
    r"Integer\(-?\d{1,2}\)\)"
)
_SYMBOL = re.compile(r"[a-z]{1,8}\d{1,9}")
_MAX_EXPR = 1024


def _check_target(name: str, target: str) -> None:
    match = _TARGET.fullmatch(target)
    allowed = False
    if match:
        ns, op = match["ns"], match["op"]
        if ns is not None:
            allowed = (ns in _OP_NAMESPACES and op not in _DENIED_OPS) or (
                ns == "higher_order" and op in _HIGHER_ORDER
            )
        elif match["operator"] is not None:
            allowed = match["operator"] in _OPERATOR_FNS
        elif match["math"] is not None:
            allowed = match["math"] in _MATH_FNS
        else:
            allowed = True  # torch.sym_* helpers
    if not allowed:
        raise PackageError(
            f"{name} calls {target[:120]!r}, which is not a tensor or shape operator; refusing to load it"
        )


def _check_expr(name: str, expr: Any) -> None:
    """Allow arithmetic over shape symbols only: sympy.sympify would eval anything else."""
    bad = not isinstance(expr, str) or len(expr) > _MAX_EXPR
    pos, previous = 0, []
    while not bad and pos < len(expr):
        token = _EXPR_TOKEN.match(expr, pos)
        if token is None:
            bad = True
            break
        number, ident, quoted, op = token.groups()
        if ident is not None and ident not in _EXPR_NAMES and not _SYMBOL.fullmatch(ident):
            bad = True
        if ident == "Pow" and not _POW.match(expr, token.start(2)):
            bad = True
        # A power's exponent is a small integer and powers never chain: 9**9**9 would not finish.
        if len(previous) >= 1 and previous[-1] == "**":
            bad = (
                bad
                or number is None
                or len(number) > 2
                or (len(previous) >= 3 and previous[-3] == "**")
            )
        previous.append(number or ident or quoted or op)
        pos = token.end()
    if bad:
        raise PackageError(
            f"{name} holds a shape expression that is not plain arithmetic: {str(expr)[:80]!r}; "
            "refusing to load it"
        )


def _check_payload(
    name: str, kind: str, fqn: str, meta: Any, stem: re.Pattern, inner: dict
) -> None:
    where = f"{name}: {kind} {str(fqn)[:80]!r}"
    if not isinstance(meta, dict) or meta.get("use_pickle") is not False:
        raise PackageError(f"{where} is stored as a pickled object; refusing to load it")
    path_name = meta.get("path_name")
    info = inner.get(f"data/{kind}/{path_name}") if isinstance(path_name, str) else None
    if not isinstance(path_name, str) or not stem.fullmatch(path_name) or info is None:
        raise PackageError(
            f"{where} points to a payload ember does not write: {str(path_name)[:80]!r}"
        )
    tensor = meta.get("tensor_meta")
    try:
        sizes = [s["as_int"] for s in tensor["sizes"]]
        strides = [s["as_int"] for s in tensor["strides"]]
        offset = tensor["storage_offset"]["as_int"]
        dtype = _deserialize_dtype(tensor["dtype"])
        ok = all(isinstance(v, int) and v >= 0 for v in (*sizes, *strides, offset))
        ok = ok and len(sizes) == len(strides) and tensor.get("layout") == _STRIDED
    except (KeyError, TypeError, ValueError):
        ok = False
    if not ok:
        raise PackageError(f"{where} has a malformed tensor description")
    numel_span = (
        0 if 0 in sizes else offset + 1 + sum((s - 1) * st for s, st in zip(sizes, strides))
    )
    if numel_span * torch._utils._element_size(dtype) > info.file_size:
        raise PackageError(f"{where} declares more data than its payload holds")


_STRIDED = 7  # torch._export.serde.schema.Layout.Strided


def _deserialize_dtype(code: Any) -> torch.dtype:
    from torch._export.serde import schema
    from torch._export.serde.serialize import deserialize_scalar_type

    if not isinstance(code, int):
        raise ValueError(code)
    return deserialize_scalar_type(schema.ScalarType(code))


def _deserialize(data: bytes, prefix: str, graph: dict, configs: dict[str, dict]):
    """Build the program from raw tensor bytes: torch never opens the archive, nothing unpickled."""
    from torch._export.serde import schema
    from torch._export.serde.serialize import ExportedProgramDeserializer, _dict_to_dataclass

    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        tensors = {}
        for kind, config in configs.items():
            payloads: dict[str, torch.Tensor] = {}
            tensors[kind] = {}
            for fqn, meta in config.items():
                t = meta["tensor_meta"]
                dtype = _deserialize_dtype(t["dtype"])
                if meta["path_name"] not in payloads:
                    raw = bytearray(archive.read(f"{prefix}data/{kind}/{meta['path_name']}"))
                    flat = (
                        torch.frombuffer(raw, dtype=torch.uint8)
                        if raw
                        else torch.empty(0, dtype=torch.uint8)
                    )
                    payloads[meta["path_name"]] = flat
                flat = payloads[meta["path_name"]]
                usable = flat[: len(flat) - len(flat) % torch._utils._element_size(dtype)]
                tensor = torch.as_strided(
                    usable.view(dtype),
                    [s["as_int"] for s in t["sizes"]],
                    [s["as_int"] for s in t["strides"]],
                    t["storage_offset"]["as_int"],
                )
                if kind == "weights" and meta.get("is_param"):
                    tensor = torch.nn.Parameter(tensor, requires_grad=bool(t.get("requires_grad")))
                tensors[kind][fqn] = tensor
    program = _dict_to_dataclass(schema.ExportedProgram, graph)
    return ExportedProgramDeserializer().deserialize(
        program, tensors["weights"], tensors["constants"], None
    )


def _read_bounded(file: Path) -> bytes:
    try:
        size = file.stat().st_size
        if size > _MAX_PT2_BYTES:
            raise PackageError(f"{file.name} is {size} bytes, over the {_MAX_PT2_BYTES} limit")
        return file.read_bytes()
    except OSError as exc:
        raise PackageError(f"Cannot read {file.name}: {exc}") from exc


def _json_entry(name: str, archive: zipfile.ZipFile, entry: str) -> dict:
    try:
        info = archive.getinfo(entry)
        if info.file_size > _MAX_JSON_BYTES:
            raise PackageError(f"{name}: {entry} is {info.file_size} bytes; refusing to parse it")
        value = json.loads(archive.read(info))
    except (KeyError, ValueError, UnicodeDecodeError) as exc:
        raise PackageError(f"{name}: {entry} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise PackageError(f"{name}: {entry} is not a JSON object")
    return value


def _short(items: list) -> str:
    return repr([str(i)[:80] for i in items[:5]])
