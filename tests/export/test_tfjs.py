"""The tfjs target: conversion of every supported layer, training in Node.js and in the browser,
and the weights coming back into ember."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

import ember
from ember import layers as L
from ember import package
from ember.export import ExportError, export
from ember.export.tfjs import _build, convert, import_tfjs, tfjs_predict

ROOT = Path(__file__).resolve().parents[2]
BROWSER_CHECK = Path(__file__).with_name("js") / "tfjs_browser_check.mjs"
CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def digits():
    (x, y), (x_test, y_test) = ember.load_digits()
    return x, y, x_test, y_test


@pytest.fixture(scope="module")
def tfjs_package(digits, npm_dir, tmp_path_factory) -> Path:
    """An ember CNN trained briefly on digits, saved and exported to tfjs."""
    x, y, x_test, _ = digits
    torch.manual_seed(0)
    model = ember.Sequential([
        L.Input((1, 8, 8)),
        L.Conv2D(8, 3, padding="same", activation="relu"),
        L.BatchNorm(),
        L.MaxPool2D(2),
        L.Flatten(),
        L.Dropout(0.1),
        L.Dense(10),
    ])  # fmt: skip
    model.compile(optimizer="adam", loss="cross_entropy", lr=3e-3)
    model.fit(x, y, epochs=2, batch_size=64, verbose=0)
    path = tmp_path_factory.mktemp("tfjs") / "digits"
    ember.save(model, path, example_input=torch.as_tensor(x_test[:64]), task="classification",
               labels=[str(i) for i in range(10)])  # fmt: skip
    export(path, ["tfjs"])
    return path


def test_export_tfjs_matches_the_trained_model(tfjs_package):
    figures = package.read_manifest(tfjs_package)["targets"]["tfjs"]
    assert figures["file"] == "tfjs/model.json"
    assert figures["max_rel_diff"] <= 1e-5 and figures["top1_agreement"] == 1.0
    assert figures["checked_with"].startswith("@tensorflow/tfjs 4.")
    bundle = tfjs_package / "tfjs"
    spec = json.loads((bundle / "model.json").read_text())
    assert spec["format"] == "layers-model"
    classes = [layer["class_name"] for layer in spec["modelTopology"]["config"]["layers"]]
    assert classes[:2] == ["Conv2D", "Permute"] and "BatchNormalization" in classes
    for name in ("weights.bin", "tf.min.js", "index.html", "train.js", "predict.js", "meta.json"):
        assert (bundle / name).is_file(), name
        assert f"tfjs/{name}" in package.read_manifest(tfjs_package)["files"]
    for name in ("index.html", "ember_tfjs.js", "train.js"):  # offline: no CDN
        assert "https://" not in (bundle / name).read_text(), name
    pins = json.loads((bundle / "package.json").read_text())["dependencies"]
    assert pins["@tensorflow/tfjs"] == figures["checked_with"].split()[1]


SEQUENCES = torch.randint(0, 20, (4, 6))
CASES = {
    "dense-activations": (
        [L.Input((6,)), L.Dense(5, activation="relu"), L.Dense(5, activation="gelu"),
         L.Dense(5, activation="tanh"), L.Activation("leaky_relu"), L.Dense(4, activation="softmax")],
        torch.randn(4, 6),
    ),
    "conv2d-pooling-norm": (
        [L.Input((2, 7, 7)), L.Conv2D(4, 3, padding="same", activation="elu"), L.BatchNorm(),
         L.AvgPool2D(2), L.Conv2D(3, 2, strides=1), L.MaxPool2D(2, padding="same"),
         L.GlobalAvgPool2D(), L.LayerNorm()],
        torch.randn(4, 2, 7, 7),
    ),
    "conv1d-reshape": (
        [L.Input((12,)), L.Reshape((3, 4)), L.Conv1D(5, 3, padding="same", activation="sigmoid"),
         L.BatchNorm(), L.Flatten(), L.Dense(3)],
        torch.randn(4, 12),
    ),
    "embedding-lstm-gru": (
        [L.Embedding(20, 8), L.LSTM(6, return_sequences=True), L.GRU(5, return_sequences=True),
         L.GRU(4), L.Dense(2)],
        SEQUENCES,
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_every_supported_layer_converts_exactly(case, npm_dir, tmp_path):
    blocks, x = CASES[case]
    torch.manual_seed(0)
    model = ember.Sequential(blocks).eval()
    with torch.no_grad():
        model(x)
        for module in model.modules():  # non-trivial statistics, so a wrong layout shows
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.5, 2)
                module.weight.uniform_(0.5, 2)
        expected = model(x).numpy()
    layers, weights = convert(model, x)
    actual = _build(tmp_path / "bundle", layers, weights, x, npm_dir)
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)


def test_a_layer_without_a_tfjs_equivalent_is_refused_by_name(npm_dir, tmp_path):
    model = ember.Sequential([L.Input((4,)), L.Dense(3), torch.nn.Hardswish()])
    with pytest.raises(ExportError, match=r"Layer 'hardswish' \(Hardswish\) has no TF.js"):
        convert(model.eval(), torch.randn(2, 4))
    model = ember.Sequential([L.Input((4,)), L.Dense(3, activation="log_softmax")])
    with pytest.raises(ExportError, match="Layer 'dense' uses the activation LogSoftmax"):
        convert(model.eval(), torch.randn(2, 4))


def test_a_plain_module_package_is_refused_clearly(tmp_path):
    net = torch.nn.Sequential(torch.nn.Linear(4, 2))
    path = package.save(net, tmp_path / "plain", example_input=torch.randn(2, 4))
    with pytest.raises(ExportError, match=r"ember.Sequential.*--to web"):
        export(path, ["tfjs"])


def _bundle_with_runtime(tfjs_package: Path, npm_dir: Path, tmp_path: Path) -> Path:
    """A copy of the bundle with its npm dependency installed (as `npm install` would)."""
    bundle = Path(shutil.copytree(tfjs_package / "tfjs", tmp_path / "bundle"))
    os.symlink(npm_dir / "node_modules", bundle / "node_modules")
    return bundle


def test_train_in_node_then_import_back(tfjs_package, digits, npm_dir, tmp_path):
    x, y, _, _ = digits
    bundle = _bundle_with_runtime(tfjs_package, npm_dir, tmp_path)
    data = tmp_path / "data.json"
    data.write_text(json.dumps({"dims": [128, 1, 8, 8], "inputs": x[:128].ravel().tolist(),
                                "labels": y[:128].tolist()}))  # fmt: skip
    proc = subprocess.run(["node", "train.js", str(data), "--epochs", "4", "--lr", "0.003"],
                          cwd=bundle, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["loss_last"] < summary["loss_first"], summary
    trained = bundle / "trained" / "model.json"
    assert trained.is_file()

    out = import_tfjs(trained, tfjs_package, tmp_path / "back")
    inputs, _ = package.load_sample(tfjs_package)
    js = tfjs_predict(trained.parent, inputs, npm_dir=npm_dir)
    with torch.no_grad():
        back = package.load(out)(inputs).numpy()
        before = package.load(tfjs_package)(inputs).numpy()
    np.testing.assert_allclose(back, js, rtol=1e-4, atol=1e-5)  # parity the other way round
    assert np.abs(back - before).max() > 1e-3  # it is the JS-trained model, not the original
    assert package.read_manifest(out)["metrics"]["tfjs_import_max_rel_diff"] <= 1e-4


def test_import_refuses_a_model_of_another_architecture(tfjs_package, npm_dir, tmp_path):
    other = ember.Sequential([L.Input((1, 8, 8)), L.Flatten(), L.Dense(10)]).eval()
    inputs, _ = package.load_sample(tfjs_package)
    layers, weights = convert(other, inputs)
    _build(tmp_path / "other", layers, weights, inputs, npm_dir)
    with pytest.raises(ExportError, match="does not hold the weights of layer 'conv2d'"):
        import_tfjs(tmp_path / "other" / "model.json", tfjs_package, tmp_path / "x")


def test_train_js_rejects_bad_arguments(tfjs_package, npm_dir, tmp_path):
    bundle = _bundle_with_runtime(tfjs_package, npm_dir, tmp_path)
    proc = subprocess.run(["node", "train.js", "x.json", "--epochs", "abc"], cwd=bundle,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 2 and "usage: node train.js" in proc.stderr


@pytest.mark.parametrize("content", [None, "{not json"])
def test_train_js_names_a_missing_or_malformed_data_file_in_one_line(
    content, tfjs_package, npm_dir, tmp_path
):
    # README's `node train.js data.json` before data.json existed printed Node's stack trace
    bundle = _bundle_with_runtime(tfjs_package, npm_dir, tmp_path)
    if content is not None:
        (bundle / "data.json").write_text(content)
    proc = subprocess.run(["node", "train.js", "data.json"], cwd=bundle,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("cannot read data.json (") and '"labels"' in lines[0]


@pytest.fixture
def served_bundle(tfjs_package, static_server):
    return static_server(tfjs_package / "tfjs") + "/index.html"


@pytest.mark.e2e
def test_fine_tune_drawn_examples_in_headless_chromium(served_bundle, npm_dir, tmp_path):
    if not CHROMIUM.is_file():
        pytest.skip("Debian chromium is not installed (apt-get install chromium chromium-driver)")
    screenshot = ROOT / "artifacts" / "tfjs_fine_tune.png"
    screenshot.parent.mkdir(exist_ok=True)
    cmd = ["node", str(BROWSER_CHECK), served_bundle, str(npm_dir), str(CHROMIUM)]
    cmd += [str(tmp_path / "profile"), str(screenshot)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result["errors"] == [], result["errors"]
    assert result["before"] == 0.0  # every drawing was labelled with a class not predicted
    assert result["after"] >= 0.75, result
    assert result["losses"][-1] < result["losses"][0]
    assert result["shown"] == f"{result['after']:.3f}"
