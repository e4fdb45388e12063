"""The web target: bundle layout, Node.js parity, and the page in headless chromium."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import ember.export.web as web
from ember import package
from ember.export import ExportError, export, verify

ROOT = Path(__file__).resolve().parents[2]
BROWSER_CHECK = Path(__file__).with_name("js") / "browser_check.mjs"
CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def web_package(digits_mlp_package, npm_dir, tmp_path_factory) -> Path:
    """A copy of the digits MLP package with the onnx and web targets exported."""
    pkg = tmp_path_factory.mktemp("web") / "digits_mlp"
    shutil.copytree(digits_mlp_package, pkg)
    export(pkg, ["web"])
    return pkg


def test_export_web_bundle_matches_trained_model(web_package):
    manifest = package.read_manifest(web_package)
    figures = manifest["targets"]["web"]
    assert figures["file"] == "web/model.onnx"
    assert figures["max_rel_diff"] <= 1e-4
    assert figures["top1_agreement"] == 1.0
    assert figures["checked_with"].startswith("onnxruntime-node ")
    assert "onnx" in manifest["targets"]  # exported first because the package had none
    bundle = web_package / "web"
    for name in ("model.onnx", "ember.js", "index.html", "model.json", "samples.json"):
        assert (bundle / name).is_file(), name
        assert f"web/{name}" in manifest["files"]  # hashed: tampering is detected on load
    assert (bundle / "ort" / "ort-wasm-simd-threaded.wasm").stat().st_size > 1_000_000
    assert (bundle / "model.onnx").read_bytes() == (web_package / "model.onnx").read_bytes()
    meta = json.loads((bundle / "model.json").read_text())
    assert meta["labels"] == [str(i) for i in range(10)]
    assert meta["signature"]["inputs"][0]["shape"] == [-1, 1, 8, 8]
    assert meta["input_range"][0] < meta["input_range"][1]
    for name in ("ember.js", "index.html"):  # offline: nothing fetched from a CDN
        assert "https://" not in (bundle / name).read_text(), name
    package.verify_files(web_package, manifest)


def test_node_predict_matches_stored_outputs(web_package, npm_dir):
    inputs, expected = package.load_sample(web_package)
    actual = web.node_predict(web_package / "web", npm_dir=npm_dir)
    assert actual.shape == tuple(expected.shape)
    np.testing.assert_allclose(actual, expected.numpy(), rtol=1e-4, atol=1e-4)


def test_export_web_again_replaces_the_bundle(web_package):
    (web_package / "web" / "stale.txt").write_text("left over")
    export(web_package, "web")
    manifest = package.read_manifest(web_package)
    assert not (web_package / "web" / "stale.txt").exists()
    assert "web/stale.txt" not in manifest["files"]
    package.verify_files(web_package, manifest)


@pytest.mark.e2e
def test_export_web_cnn(digits_cnn_package, npm_dir, tmp_path):
    pkg = tmp_path / "digits_cnn"
    shutil.copytree(digits_cnn_package, pkg)
    figures = export(pkg, ["onnx", "web"])["web"]
    assert figures["max_rel_diff"] <= 1e-4
    assert figures["top1_agreement"] == 1.0


def test_export_web_off_parity_is_not_kept(web_package, tmp_path, monkeypatch):
    pkg = tmp_path / "pkg"
    shutil.copytree(web_package, pkg)
    _, expected = package.load_sample(pkg)
    monkeypatch.setattr(web, "node_predict", lambda *a, **k: expected.numpy() + 1.0)
    with pytest.raises(ExportError, match="'web' failed parity.*max_rel_diff"):
        web.export_web(pkg)
    assert not any(p.is_file() for p in (pkg / "web").rglob("*"))
    manifest = package.read_manifest(pkg)
    assert "web" not in manifest["targets"]
    assert not [name for name in manifest["files"] if name.startswith("web/")]


def test_ensure_npm_runtime_without_npm_fails_clearly(tmp_path, monkeypatch):
    monkeypatch.setattr(web.shutil, "which", lambda name: None)
    with pytest.raises(ExportError, match="needs Node.js and npm.*'npm' is not on PATH"):
        web.ensure_npm_runtime(cache_dir=tmp_path)


def test_node_predict_without_node_fails_clearly(tmp_path, monkeypatch):
    monkeypatch.setattr(web.shutil, "which", lambda name: None)
    with pytest.raises(ExportError, match="needs Node.js"):
        web.node_predict(tmp_path, npm_dir=tmp_path)


@pytest.fixture
def served_bundle(web_package, static_server):
    return static_server(web_package / "web") + "/index.html"


@pytest.mark.e2e
def test_web_bundle_in_headless_chromium(web_package, served_bundle, npm_dir, tmp_path):
    if not CHROMIUM.is_file():
        pytest.skip("Debian chromium is not installed (apt-get install chromium chromium-driver)")
    screenshot = ROOT / "artifacts" / "web_demo.png"
    screenshot.parent.mkdir(exist_ok=True)
    screenshot.unlink(missing_ok=True)
    cmd = ["node", str(BROWSER_CHECK), served_bundle, str(npm_dir), str(CHROMIUM)]
    cmd += [str(tmp_path / "profile"), str(screenshot)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    _, expected = package.load_sample(web_package)
    actual = np.asarray(result["outputs"], dtype=np.float32).reshape(result["dims"])
    figures = verify.parity(expected.numpy(), actual, task="classification")
    assert figures["max_rel_diff"] <= 1e-4, figures
    np.testing.assert_allclose(actual, expected.numpy(), rtol=1e-4, atol=1e-4)
    assert result["shown"] == str(int(expected[0].argmax()))  # what the page displays
    assert result["drawn"] in [str(i) for i in range(10)]  # the canvas stroke was predicted
    assert "expected a multiple of 64 values" in result["bad_input_error"]
    assert "received 3 values" in result["bad_input_error"]
    assert result["errors"] == [], result["errors"]
    assert screenshot.stat().st_size > 5_000


@pytest.fixture(scope="module")
def two_input_package(npm_dir, tmp_path_factory) -> Path:
    """TwoHeads (int64 input_ids + attention_mask -> logits, score), sequence axis dynamic, with
    its web bundle."""
    import torch

    from tests.plugins.models import TwoHeads

    torch.manual_seed(0)
    ids = torch.randint(0, 50, (4, 10))
    mask = torch.ones_like(ids)
    mask[0, 7:] = 0  # a padded row: the mask changes the pooled result
    pkg = tmp_path_factory.mktemp("web_named") / "two"
    package.save(
        TwoHeads().eval(), pkg, example_input={"input_ids": ids, "attention_mask": mask},
        dynamic_shapes={"input_ids": {1: "sequence"}, "attention_mask": {1: "sequence"}},
        task="classification",
    )  # fmt: skip
    export(pkg, ["web"])
    return pkg


@pytest.mark.e2e
def test_int64_inputs_bundle_in_chromium(two_input_package, static_server, npm_dir, tmp_path):
    """The page of a two-input int64 model runs the stored and the varied sample in the browser."""
    if not CHROMIUM.is_file():
        pytest.skip("Debian chromium is not installed (apt-get install chromium chromium-driver)")
    url = static_server(two_input_package / "web") + "/index.html"
    screenshot = tmp_path / "named.png"
    cmd = ["node", str(BROWSER_CHECK.with_name("named_browser_check.mjs")), url, str(npm_dir)]
    cmd += [str(CHROMIUM), str(tmp_path / "profile"), str(screenshot)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    samples = package.load_samples(two_input_package)
    assert set(result["runs"]) == set(samples) == {"stored", "varied"}
    for kind, (_, expected) in samples.items():
        for name, want in expected.items():
            got = result["runs"][kind][name]
            assert got["dims"] == list(want.shape), (kind, name)
            actual = np.asarray(got["data"], np.float32).reshape(got["dims"])
            np.testing.assert_allclose(actual, want.numpy(), rtol=1e-4, atol=1e-5)
    first = samples["stored"][1]["logits"][0]
    assert result["shown"] == str(int(first.argmax()))  # the page's label for row 0
    assert result["missing_input_error"] == "run: missing input 'attention_mask'"
    assert result["errors"] == [], result["errors"]
    assert screenshot.stat().st_size > 2_000
