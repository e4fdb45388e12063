"""The C++ target: an AOTInductor package plus a small CMake runner built against libtorch.

``cpp/model.aoti.pt2`` is compiled by ``torch._inductor.aoti_compile_and_package`` (with a
dynamic batch dimension) and checked from Python with ``torch._inductor.aoti_load_package``.
``cpp/main.cpp`` + ``cpp/CMakeLists.txt`` build ``ember_runner``, which loads the package with
``torch::inductor::AOTIModelPackageLoader`` and runs it on tensors in a tiny binary format
(:func:`write_tensor_file`). :func:`build_cpp_runner` builds it against the libtorch inside the
installed torch wheel. An AOTI package holds compiled native code: load only packages you trust.
"""

from __future__ import annotations

import logging
import os
import shutil
import struct
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ember import package
from ember.export import verify
from ember.export.errors import ExportError, way_out

__all__ = [
    "CPP_RUNNER",
    "build_cpp_runner",
    "export_cpp",
    "read_tensor_file",
    "run_cpp_runner",
    "write_tensor_file",
]

logger = logging.getLogger(__name__)

CPP_RUNNER = Path(__file__).with_name("cpp_runner")
FILE = "cpp/model.aoti.pt2"
_SOURCES = ("main.cpp", "CMakeLists.txt")
_MAGIC = b"EMBT"
_VERSION = 1  # float32 only
_TYPED_VERSION = 2  # a dtype code per tensor
_DTYPES = ("<f4", "<i8", "<i4", "|b1", "<f8")  # code -> numpy dtype


def export_cpp(
    package_dir: str | os.PathLike,
    *,
    rtol: float | None = 1e-4,
    min_top1: float | None = None,
    dynamic_batch: bool = True,
    **_options: Any,
) -> dict:
    """Compile ``cpp/model.aoti.pt2`` with AOTInductor, check it on the stored sample, record it.

    Takes about 30 s on two CPU cores (a C++ compile). The runner sources are copied beside it;
    :func:`build_cpp_runner` builds them.

    Args:
        package_dir: the model package directory.
        rtol: largest allowed ``max_rel_diff`` against the trained model's outputs.
        min_top1: smallest allowed top-1 agreement (classifiers); None skips it.
        dynamic_batch: compile with a dynamic batch and the package's other dynamic axes (falls
            back to the sample's fixed shapes, batch size recorded as ``"batch_size"``, if the
            model cannot be exported that way). Several inputs of any dtype are passed to the
            compiled model in signature order, also by the bundled ``ember_runner``.
        **_options: options of other targets (ignored).

    Returns:
        The figures recorded under ``targets.cpp`` in ``ember.json``.

    Raises:
        ExportError: the model cannot be exported or compiled, or parity is beyond tolerance.

    Example:
        >>> export_cpp("digits")["max_abs_diff"] < 1e-4
        True
    """
    pkg = Path(package_dir)
    manifest = package.read_manifest(pkg)
    signature = manifest["signature"]
    inputs, _ = package.load_named_sample(pkg)
    package.remove_target_dir(pkg, "cpp")
    (pkg / "cpp").mkdir(exist_ok=True)
    try:
        start = time.perf_counter()
        dynamic = _compile(pkg, signature, inputs, dynamic_batch)
        seconds = time.perf_counter() - start
        runner = torch._inductor.aoti_load_package(str(pkg / FILE))

        def run(feed: dict) -> list:
            with torch.inference_mode():
                out = runner(*(torch.from_numpy(a) for a in feed.values()))
            return [t.numpy() for t in (out if isinstance(out, (tuple, list)) else [out])]

        figures = verify.parity_on_samples(pkg, run, task=manifest.get("task"), static=not dynamic)
        for name in _SOURCES:
            shutil.copy2(CPP_RUNNER / name, pkg / "cpp" / name)
    except BaseException:
        shutil.rmtree(pkg / "cpp", ignore_errors=True)
        raise
    info = {
        "file": FILE,
        "runner": ["cpp/main.cpp", "cpp/CMakeLists.txt"],
        **figures,
        "size_bytes": (pkg / FILE).stat().st_size,
        "dynamic_batch": dynamic,
        "dynamic_axes": signature.get("dynamic_axes") or {} if dynamic else {},
        "compile_seconds": round(seconds, 1),
        "runtime": f"AOTInductor (torch {torch.__version__}, cpu)",
    }
    if not dynamic:
        info["batch_size"] = int(next(iter(inputs.values())).shape[0])
    files = [FILE, *info["runner"]]
    return verify.accept(pkg, "cpp", info, files, rtol=rtol, min_top1=min_top1)


def build_cpp_runner(
    package_dir: str | os.PathLike, *, build_dir: str | os.PathLike | None = None, jobs: int = 2
) -> Path:
    """Build ``ember_runner`` from a package's ``cpp/`` sources with CMake and the torch wheel.

    Args:
        package_dir: a package with the ``cpp`` target (see :func:`export_cpp`).
        build_dir: the CMake build folder (default ``<package>/cpp/build``).
        jobs: parallel compile jobs.

    Returns:
        The path of the ``ember_runner`` binary.

    Raises:
        ExportError: no ``cpp/`` sources, cmake or a C++ compiler missing, or the build fails.

    Example:
        >>> binary = build_cpp_runner("digits")
        >>> subprocess.run([binary, "digits/cpp/model.aoti.pt2", "in.bin", "out.bin"], check=True)
    """
    source = Path(package_dir) / "cpp"
    if not (source / "CMakeLists.txt").is_file():
        raise ExportError(
            f"{source} has no CMakeLists.txt; export the C++ target first: "
            f"ember.export.export({str(package_dir)!r}, ['cpp'])"
        )
    missing = [tool for tool in ("cmake", "c++") if shutil.which(tool) is None]
    if missing:
        raise ExportError(
            f"Building the C++ runner needs {' and '.join(missing)} on PATH "
            "(Debian: apt-get install cmake g++)"
        )
    build = Path(build_dir) if build_dir is not None else source / "build"
    configure = [
        "cmake", "-S", str(source), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
        f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}",
    ]  # fmt: skip
    start = time.perf_counter()
    _run_tool(configure, "cmake configure")
    _run_tool(["cmake", "--build", str(build), "-j", str(jobs)], "cmake build")
    logger.info("Built the C++ runner in %.1f s", time.perf_counter() - start)
    return build / "ember_runner"


def run_cpp_runner(
    binary: str | os.PathLike,
    package_dir: str | os.PathLike,
    inputs: np.ndarray | dict[str, np.ndarray],
) -> np.ndarray | list[np.ndarray]:
    """Run a built ``ember_runner`` on one input array, or on named inputs of any dtype.

    Args:
        binary: the path returned by :func:`build_cpp_runner`.
        package_dir: the package whose ``cpp/model.aoti.pt2`` is run.
        inputs: a float32 array ``(N, ...)``, or ``{name: array}`` in signature order (int64
            ids, masks, floats: each keeps its dtype).

    Returns:
        The model's first output for one array; every output (a list) for named inputs.

    Raises:
        ExportError: the runner exits with an error.

    Example:
        >>> run_cpp_runner(binary, "digits", np.zeros((1, 1, 8, 8), np.float32)).shape
        (1, 10)
        >>> logits, = run_cpp_runner(binary, "bert", {"input_ids": ids, "attention_mask": mask})
    """
    arrays = list(inputs.values()) if isinstance(inputs, dict) else [inputs]
    with tempfile.TemporaryDirectory(prefix="ember-cpp-") as tmp:
        write_tensor_file(Path(tmp) / "inputs.bin", arrays)
        cmd = [str(binary), str(Path(package_dir) / FILE), f"{tmp}/inputs.bin", f"{tmp}/out.bin"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
        if proc.returncode != 0:
            raise ExportError(
                f"ember_runner failed (exit {proc.returncode}): {proc.stderr[-2000:]}"
            )
        outputs = read_tensor_file(Path(tmp) / "out.bin")
    return outputs if isinstance(inputs, dict) else outputs[0]


def write_tensor_file(path: str | os.PathLike, arrays: list[np.ndarray]) -> None:
    """Write arrays in the runner's format: ``EMBT``, version, count, then per tensor ``ndim``
    (uint32), [version 2: a dtype code (uint32)], ``dims`` (int64 each) and row-major data,
    all little-endian.

    Float arrays alone give version 1 (float32); any integer or bool array gives version 2,
    where each tensor keeps its dtype (int64 ids, int32, bool masks, float32, float64).

    Args:
        path: the file to write.
        arrays: arrays in the model's input order.

    Example:
        >>> write_tensor_file("inputs.bin", [np.zeros((2, 1, 8, 8), np.float32)])
    """
    arrays = [np.asarray(a) for a in arrays]
    typed = any(a.dtype.kind in "biu" for a in arrays)
    with open(path, "wb") as f:
        f.write(_MAGIC + struct.pack("<II", _TYPED_VERSION if typed else _VERSION, len(arrays)))
        for array in arrays:
            code = _dtype_code(array) if typed else 0
            a = np.ascontiguousarray(array, dtype=_DTYPES[code])
            if typed:
                f.write(struct.pack(f"<II{a.ndim}q", a.ndim, code, *a.shape))
            else:
                f.write(struct.pack(f"<I{a.ndim}q", a.ndim, *a.shape))
            f.write(a.tobytes())


def _dtype_code(array: np.ndarray) -> int:
    if array.dtype == np.bool_:
        return 3
    if array.dtype.kind in "iu":
        return 2 if array.dtype == np.int32 else 1
    return 4 if array.dtype == np.float64 else 0


def read_tensor_file(path: str | os.PathLike) -> list[np.ndarray]:
    """Read a file written by :func:`write_tensor_file` or by ``ember_runner``.

    Args:
        path: the file to read.

    Returns:
        The arrays it holds (float32 for version 1; each tensor's dtype for version 2).

    Raises:
        ExportError: not an EMBT file, an unknown version, or truncated data.

    Example:
        >>> read_tensor_file("outputs.bin")[0].shape
        (2, 10)
    """
    data = Path(path).read_bytes()
    if data[:4] != _MAGIC or len(data) < 12:
        raise ExportError(f"{path} is not an EMBT tensor file (starts with {data[:4]!r})")
    version, count = struct.unpack_from("<II", data, 4)
    if version not in (_VERSION, _TYPED_VERSION):
        raise ExportError(f"{path}: EMBT version {version} is not supported (expected 1 or 2)")
    arrays, offset = [], 12
    for _ in range(count):
        try:
            (ndim,) = struct.unpack_from("<I", data, offset)
            offset += 4
            code = 0
            if version == _TYPED_VERSION:
                (code,) = struct.unpack_from("<I", data, offset)
                offset += 4
            dims = struct.unpack_from(f"<{ndim}q", data, offset)
        except struct.error as exc:
            raise ExportError(f"{path} is truncated") from exc
        if code >= len(_DTYPES):
            raise ExportError(f"{path}: unknown EMBT dtype code {code}")
        dtype = np.dtype(_DTYPES[code])
        offset += 8 * ndim
        count_ = int(np.prod(dims, dtype=np.int64))
        size = count_ * dtype.itemsize
        if offset + size > len(data):
            raise ExportError(f"{path} is truncated: tensor of shape {dims} needs {size} bytes")
        arrays.append(np.frombuffer(data, dtype, count_, offset).reshape(dims).copy())
        offset += size
    return arrays


def _compile(pkg: Path, signature: dict, inputs: dict, dynamic_batch: bool) -> bool:
    """AOT-compile the package's model into ``cpp/model.aoti.pt2``; returns whether its axes
    (batch and the package's other dynamic axes) are dynamic."""
    model = package.load(pkg).flat
    program, dynamic = None, False
    if dynamic_batch:
        try:
            shapes = package.dims_for_export(signature)
            trace = verify.trace_args(inputs)
            program, dynamic = torch.export.export(model, trace, dynamic_shapes=shapes), True
        except Exception as exc:  # export raises many types; fall back to fixed shapes
            logger.warning(
                "Dynamic export failed (%s); compiling fixed shapes", package.first_line(exc)
            )
    try:
        if program is None:
            program = torch.export.export(model, tuple(inputs.values()))
        torch._inductor.aoti_compile_and_package(program, package_path=str(pkg / FILE))
    except Exception as exc:
        raise ExportError("Cannot compile the C++ target: " + way_out(exc, target="cpp")) from exc
    return dynamic


def _run_tool(cmd: list[str], what: str) -> None:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ExportError(f"{what} did not finish in {exc.timeout} s: {' '.join(cmd)}") from exc
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-3000:]
        raise ExportError(f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}")
