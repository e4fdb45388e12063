"""The tfjs target: a TF.js Layers model that keeps learning in the browser and in Node.js.

``tfjs/`` holds ``model.json`` (topology + weight manifest) and ``weights.bin``, which
``tf.loadLayersModel`` reads; ``meta.json`` (task, labels, the head's activation, input shape
and range); ``samples.json`` (the stored sample); ``ember_tfjs.js`` (loading, ember's loss for the
head, fine-tuning, accuracy), ``train.js`` and ``predict.js`` for Node.js, ``index.html`` (draw
examples, label them, fine-tune in the page, download the weights) with ``tf.min.js`` beside it,
and ``package.json`` pinning ``@tensorflow/tfjs``. Nothing is fetched from a CDN.

Only models made of ember's Keras-style layers convert (see :mod:`ember.export.tfjs_layers` for
the layouts). Weights trained in JavaScript come back with :func:`import_tfjs`
(``ember import-tfjs``), checked the other way round: the rebuilt ember model must match what
TF.js computes with those weights on the stored sample.
"""

from __future__ import annotations

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
import torch

from ember import package
from ember.export import verify
from ember.export.errors import ExportError
from ember.export.tfjs_layers import from_tfjs, to_tfjs
from ember.export.web import ensure_npm_runtime

__all__ = ["TFJS_ASSETS", "export_tfjs", "import_tfjs", "tfjs_predict"]

logger = logging.getLogger(__name__)

TFJS_ASSETS = Path(__file__).with_name("tfjs_assets")
_BUNDLE_FILES = ("ember_tfjs.js", "node_io.js", "predict.js", "train.js", "index.html")
_TFJS = "@tensorflow/tfjs"


def export_tfjs(
    package_dir: str | os.PathLike,
    *,
    rtol: float | None = 1e-4,
    min_top1: float | None = None,
    cache_dir: str | os.PathLike | None = None,
    **_options: Any,
) -> dict:
    """Write ``tfjs/`` into a package and check it under Node.js on the stored sample.

    Args:
        package_dir: a package of an ``ember.Sequential`` made of ember layers.
        rtol: largest allowed ``max_rel_diff`` against the trained model's outputs.
        min_top1: smallest allowed top-1 agreement (classifiers); None skips it.
        cache_dir: where the pinned npm packages are installed (default ``~/.cache/ember/web``).
        **_options: options of other targets (ignored).

    Returns:
        The figures recorded under ``targets.tfjs`` in ``ember.json``.

    Raises:
        ExportError: the model is not an ember Sequential, holds a layer with no TF.js
            equivalent (named), node/npm are missing, or parity is beyond tolerance.

    Example:
        >>> export_tfjs("digits")["max_abs_diff"] < 1e-4
        True
    """
    pkg = Path(package_dir)
    manifest = package.read_manifest(pkg)
    model, inputs, expected = _rebuild(pkg, manifest)
    layers, weights = convert(model, inputs)
    npm_dir = ensure_npm_runtime(cache_dir=cache_dir)
    package.remove_target_dir(pkg, "tfjs")
    bundle = pkg / "tfjs"
    try:
        start = time.perf_counter()
        actual = _build(bundle, layers, weights, inputs, npm_dir)
        seconds = time.perf_counter() - start
        _write_bundle(bundle, manifest, model, inputs, expected, npm_dir)
        figures = verify.parity(expected.numpy(), actual, task=manifest.get("task"))
    except BaseException:
        shutil.rmtree(bundle, ignore_errors=True)
        raise
    files = sorted(str(p.relative_to(pkg)) for p in bundle.rglob("*") if p.is_file())
    info = {
        "file": "tfjs/model.json",
        "checked_with": f"{_TFJS} {_npm_version(npm_dir)} (Node.js, cpu backend)",
        **figures,
        "size_bytes": sum((pkg / f).stat().st_size for f in files),
        "check_seconds": round(seconds, 3),
    }
    return verify.accept(pkg, "tfjs", info, files, rtol=rtol, min_top1=min_top1)


def import_tfjs(
    model_json: str | os.PathLike,
    package_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    rtol: float = 1e-4,
    cache_dir: str | os.PathLike | None = None,
) -> Path:
    """Read weights trained in TF.js back into the package's ember model; write a new package.

    Args:
        model_json: a TF.js ``model.json`` (from ``train.js``, or the page's download) whose
            weight files lie beside it.
        package_dir: the package the ``tfjs`` target was exported from (its architecture).
        out: the new package directory.
        rtol: largest allowed ``max_rel_diff`` between the rebuilt ember model and TF.js on the
            stored sample (the parity the other way round).
        cache_dir: where the pinned npm packages are installed.

    Returns:
        The new package directory; its ``metrics`` record the parity as ``tfjs_import_*``.

    Raises:
        ExportError: a missing weight file, a topology that does not match the package, or
            parity beyond tolerance.

    Example:
        >>> import_tfjs("digits/tfjs/trained/model.json", "digits", "digits_js")
    """
    model_json, pkg = Path(model_json), Path(package_dir)
    manifest = package.read_manifest(pkg)
    model, inputs, _ = _rebuild(pkg, manifest)
    _, expected = convert(model, inputs)
    found = _read_weights(model_json)
    ember_layers = dict(zip(_names(model), model.layers))
    for name, arrays in expected:  # the weighted TF.js layer is named after its ember layer
        got = found.get(name)
        if got is None or [a.shape for a in got] != [a.shape for a in arrays]:
            raise ExportError(
                f"{model_json} does not hold the weights of layer {name!r} as the package's "
                f"model has them (found layers {sorted(found)[:10]}); was it exported from {pkg}?"
            )
        from_tfjs(ember_layers[name], name, got)
    npm_dir = ensure_npm_runtime(cache_dir=cache_dir)
    js = tfjs_predict(model_json.parent, inputs, npm_dir=npm_dir)
    with torch.no_grad():
        ours = model.eval()(inputs).float().numpy()
    figures = verify.parity(js, ours, task=manifest.get("task"))
    verify.check(figures, target="tfjs import", rtol=rtol, min_top1=None)
    metrics = {**(manifest.get("metrics") or {})}
    metrics.update({f"tfjs_import_{k}": v for k, v in figures.items()})
    return package.save(
        model,
        out,
        example_input=inputs,
        name=Path(out).resolve().name,
        task=manifest.get("task"),
        labels=manifest.get("labels"),
        preprocessing=manifest.get("preprocessing"),
        metrics=metrics,
    )


def tfjs_predict(
    model_dir: str | os.PathLike, inputs: torch.Tensor, *, npm_dir: str | os.PathLike
) -> np.ndarray:
    """Run a TF.js model folder under Node.js (``@tensorflow/tfjs``, cpu backend) on ``inputs``.

    Example:
        >>> tfjs_predict("digits/tfjs", x, npm_dir=ensure_npm_runtime()).shape
        (64, 10)
    """
    with tempfile.TemporaryDirectory() as tmp:
        samples, result = Path(tmp) / "samples.json", Path(tmp) / "result.json"
        samples.write_text(json.dumps(_samples(inputs)))
        script = Path(tmp) / "predict.js"
        for name in ("predict.js", "node_io.js", "ember_tfjs.js"):
            shutil.copy2(TFJS_ASSETS / name, Path(tmp) / name)
        os.symlink(Path(npm_dir) / "node_modules", Path(tmp) / "node_modules")
        _node([str(script), str(samples), "--model", str(Path(model_dir)), "--out", str(result)])
        out = json.loads(result.read_text())
    return np.asarray(out["outputs"], dtype=np.float32).reshape(out["dims"])


def convert(
    model: torch.nn.Module, inputs: torch.Tensor
) -> tuple[list[dict], list[tuple[str, list[np.ndarray]]]]:
    """The TF.js layer configs of an ember ``Sequential`` and each TF.js layer's weights.

    Returns:
        ``(layers, weights)``: Keras-style ``{"class_name", "config"}`` dicts, and
        ``(layer name, [arrays in the layer's own order])`` for each layer that has weights.

    Raises:
        ExportError: a layer with no TF.js equivalent, named.
    """
    layers: list[dict] = []
    weights: list[tuple[str, list[np.ndarray]]] = []
    shapes = _input_shapes(model, inputs)
    for name, layer in zip(_names(model), model.layers):
        for cls, config, arrays in to_tfjs(layer, name, shapes[id(layer)]):
            layers.append({"class_name": cls, "config": config})
            if arrays:
                weights.append(
                    (config["name"], [np.ascontiguousarray(a, dtype=np.float32) for a in arrays])
                )
    if not layers:
        raise ExportError("The model has no layers to convert")
    layers[0]["config"]["batch_input_shape"] = [None, *inputs.shape[1:]]
    return layers, weights


# -- helpers --------------------------------------------------------------------------------------


def _rebuild(pkg: Path, manifest: dict) -> tuple[Any, torch.Tensor, torch.Tensor]:
    """The package's ember Sequential with its weights, and the stored sample."""
    architecture = manifest.get("architecture")
    if not (isinstance(architecture, dict) and architecture.get("kind") == "sequential"):
        raise ExportError(
            f"The tfjs target converts models made of ember's Keras-style layers "
            f"(ember.Sequential), but {pkg} holds a {manifest.get('name')!r} model with no "
            "Sequential architecture. Use --to web for any model (onnxruntime-web, inference only)."
        )
    from safetensors.torch import load_file

    from ember.model import Sequential

    package.verify_files(pkg, manifest, names=[package.WEIGHTS])  # load_sample checks its own
    inputs, expected = package.load_sample(pkg)
    model = Sequential.from_config(architecture).eval()
    with torch.no_grad():
        model(inputs[:1])  # builds lazy layers
    model.load_state_dict(load_file(str(pkg / package.WEIGHTS)))
    return model, inputs, expected


def _input_shapes(model: Any, inputs: torch.Tensor) -> dict[int, tuple[int, ...]]:
    """Each layer's input shape (without the batch dimension), from one forward pass."""
    shapes: dict[int, tuple[int, ...]] = {}

    def record(module: torch.nn.Module, args: tuple) -> None:
        shapes.setdefault(id(module), tuple(args[0].shape[1:]))

    hooks = [layer.register_forward_pre_hook(record) for layer in model.layers]
    try:
        with torch.no_grad():
            model.eval()(inputs[:2])
    finally:
        for hook in hooks:
            hook.remove()
    return shapes


def _names(model: Any) -> list[str]:
    from ember.layers.base import auto_names

    return auto_names(model.layers)


def _build(bundle: Path, layers: list, weights: list, inputs: torch.Tensor, npm_dir: Path):
    topology = {
        "class_name": "Sequential",
        "config": {"name": "ember", "layers": layers},
        "keras_version": "tfjs-layers",
        "backend": "tensor_flow.js",
    }
    with tempfile.TemporaryDirectory() as tmp:
        spec, raw, result = Path(tmp) / "spec.json", Path(tmp) / "w.f32", Path(tmp) / "out.json"
        shapes = [{"layer": n, "shapes": [list(a.shape) for a in arrays]} for n, arrays in weights]
        spec.write_text(
            json.dumps({"topology": topology, "weights": shapes, "sample": _samples(inputs)})
        )
        raw.write_bytes(b"".join(a.tobytes() for _, arrays in weights for a in arrays))
        script = TFJS_ASSETS / "build.mjs"
        _node([str(script), str(spec), str(raw), str(bundle), str(npm_dir), str(result)])
        out = json.loads(result.read_text())
    return np.asarray(out["outputs"], dtype=np.float32).reshape(out["dims"])


def _write_bundle(
    bundle: Path, manifest: dict, model: Any, inputs, expected, npm_dir: Path
) -> None:
    for name in _BUNDLE_FILES:
        shutil.copy2(TFJS_ASSETS / name, bundle / name)
    shutil.copy2(npm_dir / "node_modules" / _TFJS / "dist" / "tf.min.js", bundle / "tf.min.js")
    last = model.layers[-1]
    activation = getattr(last, "activation", getattr(last, "fn", None))
    head = {"Softmax": "softmax", "Sigmoid": "sigmoid"}.get(type(activation).__name__, "linear")
    x = inputs.float()
    meta = {
        "name": manifest.get("name"),
        "task": manifest.get("task"),
        "labels": manifest.get("labels"),
        "outputs": int(expected.shape[-1]) if expected.dim() > 1 else 1,
        "output_activation": head,
        "input_shape": list(inputs.shape[1:]),
        "input_range": [float(x.min()), float(x.max())],
        "input_integer": not inputs.dtype.is_floating_point,
    }
    node_package = {
        "name": "ember-tfjs-model",
        "private": True,
        "type": "module",
        "scripts": {"train": "node train.js", "predict": "node predict.js"},
        "dependencies": {_TFJS: _npm_version(npm_dir)},
    }
    for name, value in (("meta.json", meta), ("package.json", node_package)):
        (bundle / name).write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")
    samples = {**_samples(inputs), "outputs": expected.float().numpy().ravel().tolist()}
    (bundle / "samples.json").write_text(json.dumps(samples) + "\n", encoding="utf-8")


def _read_weights(model_json: Path) -> dict[str, list[np.ndarray]]:
    """``{layer name: [arrays in manifest order]}`` from a TF.js model.json and its weight files."""
    try:
        spec = json.loads(model_json.read_text(encoding="utf-8"))
        groups = spec["weightsManifest"]
        data = b"".join((model_json.parent / p).read_bytes() for g in groups for p in g["paths"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ExportError(
            f"{model_json} is not a TF.js Layers model with its weights: {exc}"
        ) from exc
    out: dict[str, list[np.ndarray]] = {}
    offset = 0
    for group in groups:
        for w in group["weights"]:
            if w.get("dtype", "float32") != "float32" or w.get("quantization"):
                raise ExportError(f"{model_json}: weight {w.get('name')!r} is not plain float32")
            count = int(np.prod(w["shape"])) if w["shape"] else 1
            if offset + 4 * count > len(data):
                raise ExportError(
                    f"{model_json}: the weight files are shorter than the manifest says"
                )
            array = np.frombuffer(data, dtype="<f4", count=count, offset=offset).reshape(w["shape"])
            offset += 4 * count
            out.setdefault(w["name"].split("/", 1)[0], []).append(array.copy())
    return out


def _samples(inputs: torch.Tensor) -> dict:
    return {"dims": list(inputs.shape), "inputs": inputs.float().numpy().ravel().tolist()}


def _node(args: list[str]) -> None:
    node = shutil.which("node")
    if node is None:
        raise ExportError(
            "The tfjs target needs Node.js ('node' is not on PATH): apt-get install nodejs"
        )
    proc = subprocess.run([node, *args], capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0:
        raise ExportError(f"TF.js under Node.js failed:\n{proc.stderr[-3000:]}")


def _npm_version(npm_dir: Path) -> str:
    meta = json.loads((Path(npm_dir) / "node_modules" / _TFJS / "package.json").read_text("utf-8"))
    return meta["version"]
