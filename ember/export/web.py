"""The web target: a self-contained folder that runs the model in a browser or in Node.js.

``web/`` holds ``model.onnx`` (the package's ONNX target), ``model.json`` (signature, labels, the
sample's input range), ``samples.json`` (the stored sample), ``ember.js`` (an ES module over ONNX
Runtime), ``index.html`` (a demo page: draw a digit or pick a sample) and ``ort/``, the
onnxruntime-web wasm files (single-threaded, so no cross-origin-isolation headers are needed).
Nothing is fetched from a CDN: the folder works offline from any static file server.

The npm packages (onnxruntime-web for the bundle, onnxruntime-node for the parity check) are
pinned in ``web_assets/package-lock.json`` and installed once with ``npm ci`` into
``~/.cache/ember/web/<lock hash>/``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ember import package
from ember.export import verify
from ember.export.errors import ExportError

__all__ = ["WEB_ASSETS", "ensure_npm_runtime", "export_web", "node_predict"]

logger = logging.getLogger(__name__)

WEB_ASSETS = Path(__file__).with_name("web_assets")
_ORT_FILES = ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
_LOCK_FILES = ("package.json", "package-lock.json")
_COMPLETE = ".ember-complete"


def export_web(
    package_dir: str | os.PathLike,
    *,
    rtol: float | None = 1e-4,
    min_top1: float | None = None,
    cache_dir: str | os.PathLike | None = None,
    **_options: Any,
) -> dict:
    """Write ``web/`` into a package and check it under Node.js on the stored sample.

    The ONNX target is exported first when the package has none. The parity check runs the
    bundle's own ``ember.js`` with onnxruntime-node (same ONNX Runtime kernels as the wasm build).

    Args:
        package_dir: the model package directory.
        rtol: largest allowed ``max_rel_diff`` against the trained model's outputs.
        min_top1: smallest allowed top-1 agreement (classifiers); None skips it.
        cache_dir: where the pinned npm packages are installed (default ``~/.cache/ember/web``).
        **_options: options of other targets (ignored).

    Returns:
        The figures recorded under ``targets.web`` in ``ember.json``.

    Raises:
        ExportError: npm/node missing, ``npm ci`` failing, or parity beyond tolerance (the
            ``web/`` folder is then removed).

    Example:
        >>> export_web("digits")["max_abs_diff"] < 1e-4
        True
    """
    pkg = Path(package_dir)
    manifest = _ensure_onnx(pkg)
    npm_dir = ensure_npm_runtime(cache_dir=cache_dir)
    package.remove_target_dir(pkg, "web")
    web = pkg / "web"
    try:
        _write_bundle(web, pkg / manifest["targets"]["onnx"]["file"], manifest, npm_dir)
        start = time.perf_counter()
        if _one_float_input(manifest["signature"]):
            inputs, expected = package.load_sample(pkg)
            _write_samples(web, inputs, expected)
            actual = node_predict(web, npm_dir=npm_dir)
            figures = verify.parity(expected.numpy(), actual, task=manifest.get("task"))
        else:
            _write_named_samples(web, package.load_samples(pkg))
            outputs = [spec["name"] for spec in manifest["signature"]["outputs"]]
            figures = verify.parity_on_samples(
                pkg, lambda feed: node_run(web, feed, outputs, npm_dir=npm_dir),
                task=manifest.get("task"),
            )  # fmt: skip
        seconds = time.perf_counter() - start
    except BaseException:
        shutil.rmtree(web, ignore_errors=True)
        raise
    files = sorted(p.relative_to(pkg).as_posix() for p in web.rglob("*") if p.is_file())
    info = {
        "file": "web/model.onnx",
        "runtime": f"onnxruntime-web {_npm_version(npm_dir, 'onnxruntime-web')} (wasm, 1 thread)",
        "checked_with": f"onnxruntime-node {_npm_version(npm_dir, 'onnxruntime-node')}",
        **figures,
        "size_bytes": sum((pkg / f).stat().st_size for f in files),
        "check_seconds": round(seconds, 3),
    }
    return verify.accept(pkg, "web", info, files, rtol=rtol, min_top1=min_top1)


def ensure_npm_runtime(*, cache_dir: str | os.PathLike | None = None) -> Path:
    """Install the pinned npm packages once (``npm ci``) and return their folder.

    The folder is keyed by the hash of ``package.json`` + ``package-lock.json``, so a new pin
    installs beside the old one. Install scripts are not run (``--ignore-scripts``): the
    packages ship their prebuilt binaries, and nothing else is downloaded.

    Args:
        cache_dir: parent folder (default ``$XDG_CACHE_HOME/ember/web`` or ``~/.cache/ember/web``).

    Returns:
        A folder whose ``node_modules`` holds onnxruntime-web, onnxruntime-node and playwright-core.

    Raises:
        ExportError: npm is not installed or ``npm ci`` fails.

    Example:
        >>> (ensure_npm_runtime() / "node_modules" / "onnxruntime-web").is_dir()
        True
    """
    root = Path(cache_dir) if cache_dir is not None else _default_cache()
    digest = hashlib.sha256(b"".join((WEB_ASSETS / n).read_bytes() for n in _LOCK_FILES))
    target = root / digest.hexdigest()[:16]
    if (target / _COMPLETE).is_file():
        return target
    npm = shutil.which("npm")
    if npm is None:
        raise ExportError(
            "The web target needs Node.js and npm to install onnxruntime-web/onnxruntime-node "
            f"once into {root}, but 'npm' is not on PATH. Install them (Debian: "
            "apt-get install nodejs npm) or skip the target: --to onnx,int8,..."
        )
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{target.name}."))
    try:
        _npm_ci(npm, tmp)
        (tmp / _COMPLETE).write_text("ok\n", encoding="utf-8")
        os.rename(tmp, target)
    except OSError:
        if not target.exists():  # else another process installed it first: use theirs
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not (target / _COMPLETE).is_file():
        raise ExportError(f"{target} exists but is not a complete npm install; delete it and retry")
    return target


def node_predict(web_dir: str | os.PathLike, *, npm_dir: str | os.PathLike) -> np.ndarray:
    """Run a web bundle's ``ember.js`` under Node.js (onnxruntime-node) on its ``samples.json``.

    Args:
        web_dir: the ``web/`` folder of a package.
        npm_dir: the folder returned by :func:`ensure_npm_runtime`.

    Returns:
        The model's outputs on the stored sample, float32, shape ``(N, ...)``.

    Raises:
        ExportError: node is missing or the script fails.

    Example:
        >>> node_predict("digits/web", npm_dir=ensure_npm_runtime()).shape
        (64, 10)
    """
    node = shutil.which("node")
    if node is None:
        raise ExportError("The web target's parity check needs Node.js ('node' is not on PATH)")
    cmd = [node, str(WEB_ASSETS / "node_predict.js"), str(web_dir), str(npm_dir)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    if proc.returncode != 0:
        raise ExportError(f"Running the web bundle under Node.js failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout)
    return np.asarray(result["outputs"], dtype=np.float32).reshape(result["dims"])


def node_run(
    web_dir: str | os.PathLike,
    inputs: dict[str, np.ndarray],
    outputs: list[str],
    *,
    npm_dir: str | os.PathLike,
) -> list[np.ndarray]:
    """Run a web bundle's ``ember.js`` ``model.run`` under Node.js on named inputs of any dtype.

    Args:
        web_dir: the ``web/`` folder of a package.
        inputs: ``{input name: array}`` (int64 ids are sent as BigInt64Array tensors).
        outputs: output names, in the order to return them.
        npm_dir: the folder returned by :func:`ensure_npm_runtime`.

    Returns:
        The outputs as float32 arrays, in ``outputs`` order.

    Example:
        >>> node_run("bert/web", {"input_ids": ids, "attention_mask": mask}, ["logits"],
        ...          npm_dir=ensure_npm_runtime())[0].shape
        (4, 3)
    """
    node = shutil.which("node")
    if node is None:
        raise ExportError("The web target's parity check needs Node.js ('node' is not on PATH)")
    feeds = {n: {"dims": list(a.shape), "data": a.ravel().tolist()} for n, a in inputs.items()}
    with tempfile.TemporaryDirectory(prefix="ember-web-") as tmp:
        feeds_file = Path(tmp) / "feeds.json"
        feeds_file.write_text(json.dumps(feeds), encoding="utf-8")
        cmd = [
            node,
            str(WEB_ASSETS / "node_predict.js"),
            str(web_dir),
            str(npm_dir),
            str(feeds_file),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    if proc.returncode != 0:
        raise ExportError(f"Running the web bundle under Node.js failed:\n{proc.stderr[-3000:]}")
    named = json.loads(proc.stdout)["named"]
    return [np.asarray(named[n]["data"], np.float32).reshape(named[n]["dims"]) for n in outputs]


def _one_float_input(signature: dict) -> bool:
    """The demo page's original form: one float32 input, one output (e.g. digits)."""
    inputs = signature["inputs"]
    return len(inputs) == 1 and len(signature["outputs"]) == 1 and inputs[0]["dtype"] == "float32"


def _write_named_samples(web: Path, samples: dict) -> None:
    """samples.json for several named inputs: every stored sample, dtypes recorded."""

    def tensors(named: dict) -> dict:
        return {
            n: {"dims": list(t.shape), "dtype": str(t.dtype).removeprefix("torch."),
                "data": t.ravel().tolist()}
            for n, t in named.items()
        }  # fmt: skip

    content: dict = {"named": True}
    for kind, (inputs, outputs) in samples.items():
        key = "" if kind == "stored" else f"{kind}_"
        content[f"{key}inputs"] = tensors(inputs)
        content[f"{key}outputs"] = tensors(outputs)
    _write_json(web / "samples.json", content)


def _ensure_onnx(pkg: Path) -> dict:
    """Return the manifest, exporting the ONNX target first when the package has none."""
    manifest = package.read_manifest(pkg)
    if "onnx" not in manifest.get("targets", {}):
        from ember.export import export  # lazy: ember.export imports this module

        logger.info("Package %s has no ONNX target; exporting it for the web bundle", pkg)
        export(pkg, ["onnx"])
        manifest = package.read_manifest(pkg)
    package.verify_files(pkg, manifest, names=[manifest["targets"]["onnx"]["file"]])
    return manifest


def _write_bundle(web: Path, onnx_file: Path, manifest: dict, npm_dir: Path) -> None:
    """Copy the model, ember.js, index.html and the onnxruntime-web wasm files into ``web/``."""
    (web / "ort").mkdir(parents=True)
    shutil.copy2(onnx_file, web / "model.onnx")
    for name in ("ember.js", "index.html"):
        shutil.copy2(WEB_ASSETS / name, web / name)
    for name in _ORT_FILES:
        shutil.copy2(npm_dir / "node_modules" / "onnxruntime-web" / "dist" / name, web / "ort")
    meta = {
        "name": manifest.get("name"),
        "task": manifest.get("task"),
        "signature": manifest.get("signature"),
        "labels": manifest.get("labels"),
        "preprocessing": manifest.get("preprocessing"),
        "model": "model.onnx",
    }  # plus "input_range", added by _write_samples
    # Lets Node.js users `npm install` the runtime next to ember.js (an ES module).
    node_package = {
        "name": "ember-web-model",
        "private": True,
        "type": "module",
        "main": "ember.js",
        "dependencies": {"onnxruntime-node": _npm_version(npm_dir, "onnxruntime-node")},
    }
    _write_json(web / "package.json", node_package, indent=2)
    _write_json(web / "model.json", meta, indent=2)


def _write_samples(web: Path, inputs, expected) -> None:
    """Store the sample for the page's picker and the parity checks; record its value range."""
    x = inputs.detach().float().numpy()
    y = expected.detach().float().numpy()
    samples = {
        "dims": list(x.shape),
        "inputs": x.ravel().tolist(),
        "output_dims": list(y.shape),
        "outputs": y.ravel().tolist(),
    }
    _write_json(web / "samples.json", samples)
    # The demo page maps drawn ink (0..1) onto the range of the real inputs.
    meta = json.loads((web / "model.json").read_text(encoding="utf-8"))
    _write_json(web / "model.json", {**meta, "input_range": [float(x.min()), float(x.max())]}, 2)


def _write_json(file: Path, value: dict, indent: int | None = None) -> None:
    file.write_text(json.dumps(value, indent=indent) + "\n", encoding="utf-8")


def _npm_ci(npm: str, folder: Path) -> None:
    for name in _LOCK_FILES:
        shutil.copy2(WEB_ASSETS / name, folder / name)
    cmd = [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"]
    logger.info("Installing the web target's npm packages into %s (once)", folder)
    try:
        proc = subprocess.run(
            cmd, cwd=folder, capture_output=True, text=True, timeout=900, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise ExportError(f"'npm ci' did not finish in {exc.timeout} s (in {folder})") from exc
    if proc.returncode != 0:
        raise ExportError(
            f"'npm ci' failed (exit {proc.returncode}) installing the web target's packages; "
            f"is the npm registry reachable?\n{proc.stderr[-3000:]}"
        )


def _npm_version(npm_dir: Path, name: str) -> str:
    meta = json.loads((npm_dir / "node_modules" / name / "package.json").read_text("utf-8"))
    return meta["version"]


def _default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ember" / "web"
