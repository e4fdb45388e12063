"""A version is checked before it serves: every listed file, and ember.json against its model."""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from ember.serve.errors import ServeError
from ember.serve.runtime import load_version
from ember.serve.tensors import TensorSpec
from ember.serve.validation import check_manifest, verify_version_files

RUNTIMES = ["onnxruntime", "torch"]


@pytest.fixture
def package(template_repo: Path, tmp_path: Path) -> Path:
    """A copy of models/mlp/1: a 4 -> 3 classifier with labels a, b, c, model.onnx and model.pt2."""
    return Path(shutil.copytree(template_repo / "mlp" / "1", tmp_path / "1"))


def _edit(package: Path, **changes) -> None:
    manifest = json.loads((package / "ember.json").read_text())
    for key, value in changes.items():
        if key in ("inputs", "outputs"):
            manifest["signature"][key][0].update(value)
        else:
            manifest[key] = value
    (package / "ember.json").write_text(json.dumps(manifest))


def _load(package: Path, runtime: str):
    with ThreadPoolExecutor(1) as pool:
        return load_version("m", 1, package, pool, runtime=runtime)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_clean_package_loads_under_each_runtime(package, runtime):
    mv = _load(package, runtime)
    assert mv.labels == ["a", "b", "c"] and mv.outputs[0].shape == [-1, 3]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_labels_that_do_not_match_the_output_width_refuse_the_version(package, runtime):
    _edit(package, labels=["x", "y"])
    with pytest.raises(ServeError, match=r"lists 2 labels but output 'output' has 3 values"):
        _load(package, runtime)
    _edit(package, labels=[str(i) for i in range(10)])
    with pytest.raises(ServeError, match=r"lists 10 labels"):
        _load(package, runtime)
    _edit(package, labels="abc")
    with pytest.raises(ServeError, match=r"'labels' must be a list of strings"):
        _load(package, runtime)


def test_declared_input_shape_or_dtype_that_the_model_does_not_take_is_refused(package):
    _edit(package, inputs={"shape": [-1, 5]})
    with pytest.raises(ServeError, match=r"input 'input' is declared with shape \[-1, 5\], the "
                       r"model's is \[-1, 4\]"):  # fmt: skip
        _load(package, "onnxruntime")
    # Under torch the signature is the manifest's: the stored sample gives the mismatch away.
    with pytest.raises(ServeError, match=r"sample's inputs have shape \[6, 4\], the model's "
                       r"input 'input' takes \[-1, 5\]"):  # fmt: skip
        _load(package, "torch")
    _edit(package, inputs={"shape": [-1, 4], "dtype": "int64"})
    with pytest.raises(ServeError, match=r"input 'input' is declared INT64, the model takes FP32"):
        _load(package, "onnxruntime")


def test_declared_output_shape_that_the_model_does_not_give_is_refused(package):
    _edit(package, outputs={"shape": [-1, 10]}, labels=None)
    for runtime in RUNTIMES:
        with pytest.raises(ServeError, match=r"output"):
            _load(package, runtime)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_tampered_listed_file_is_caught_whatever_runtime_serves(package, runtime):
    weights = load_file(str(package / "weights.safetensors"))
    weights = {k: v + 1.0 for k, v in weights.items()}
    save_file(weights, str(package / "weights.safetensors"))  # ONNX never reads this file
    with pytest.raises(ServeError, match=r"weights.safetensors.*does not match its sha256"):
        _load(package, runtime)


def test_listed_files_must_stay_inside_the_version(package):
    manifest = json.loads((package / "ember.json").read_text())
    for name in ("../1/ember.json", "/etc/passwd", "a\\..\\b"):
        with pytest.raises(ServeError, match="relative path inside the version directory"):
            verify_version_files(package, {**manifest, "files": {name: "0" * 64}})
    with pytest.raises(ServeError, match="expected a JSON object"):
        verify_version_files(package, ["not", "a", "manifest"])
    verify_version_files(package, {})  # a bare ONNX version lists nothing


def test_check_manifest_names_every_problem_and_accepts_dynamic_dims(tmp_path):
    model = ([TensorSpec("x", "FP32", [-1, 4])], [TensorSpec("y", "FP32", [-1, -1])])
    check_manifest(tmp_path, {}, *model)  # no manifest: nothing to compare
    ok = {"signature": {"inputs": [{"name": "x", "dtype": "float32", "shape": [-1, 4]}]},
          "labels": ["a", "b"]}  # fmt: skip
    check_manifest(tmp_path, ok, *model)  # output width unknown: labels cannot be counted
    bad = {"signature": {"inputs": [{"name": "x", "dtype": "float64", "shape": [-1, 4, 1]}],
                         "outputs": []}}  # fmt: skip
    with pytest.raises(ServeError) as info:
        check_manifest(tmp_path, bad, *model)
    message = info.value.message
    assert "declared FP64, the model takes FP32" in message and "[-1, 4, 1]" in message
    assert "it declares 0 outputs, the model has 1" in message
