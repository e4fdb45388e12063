import json
import logging
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from ember import package
from ember.package import PackageError, sha256_file


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))


class _Branchy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: torch.export can't trace it
            return self.fc(x)
        return -self.fc(x)


@pytest.fixture
def saved(tmp_path):
    model = _mlp()
    x = torch.randn(5, 1, 4, 4)
    path = package.save(model, tmp_path / "pkg", example_input=x[:1], task="classification")
    return model, x, path


def test_save_load_round_trip_plain_module(saved):
    model, x, path = saved
    manifest = package.read_manifest(path)
    assert manifest["signature"]["inputs"][0] == {
        "name": "input",
        "dtype": "float32",
        "shape": [-1, 1, 4, 4],
    }
    assert manifest["signature"]["outputs"][0]["shape"] == [-1, 3]
    assert set(manifest["files"]) == {"weights.safetensors", "sample.safetensors", "model.pt2"}
    loaded = package.load(path).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model.eval()(x))
        assert loaded(x[:1]).shape == (1, 3)  # batch dim is dynamic
    inputs, outputs = package.load_sample(path)
    torch.testing.assert_close(outputs, model(inputs).detach())


def test_sample_is_capped_at_64_rows(tmp_path):
    path = package.save(
        _mlp(), tmp_path / "p", example_input=torch.randn(2, 16), sample_inputs=torch.randn(100, 16)
    )
    inputs, outputs = package.load_sample(path)
    assert inputs.shape == (64, 16) and outputs.shape == (64, 3)


def test_tampered_weights_error(saved):
    _, _, path = saved
    save_file({"1.weight": torch.zeros(8, 16)}, str(path / "weights.safetensors"))
    with pytest.raises(PackageError, match="weights.safetensors.*sha256"):
        package.load(path)


def test_newer_format_error(saved):
    _, _, path = saved
    manifest = package.read_manifest(path)
    manifest["format_version"] = package.FORMAT_VERSION + 1
    package.write_manifest(path, manifest)
    with pytest.raises(PackageError, match=f"format_version {package.FORMAT_VERSION + 1} is newer"):
        package.load(path)


def test_missing_file_error(saved):
    _, _, path = saved
    (path / "model.pt2").unlink()
    with pytest.raises(PackageError, match="missing 'model.pt2'"):
        package.load(path)


def test_not_a_package_error(tmp_path):
    with pytest.raises(PackageError, match="ember.json is missing"):
        package.load(tmp_path)


def test_weights_that_do_not_match_the_program(saved):
    _, _, path = saved
    save_file({"1.weight": torch.zeros(9, 16)}, str(path / "weights.safetensors"))
    manifest = package.read_manifest(path)
    manifest["files"]["weights.safetensors"] = sha256_file(path / "weights.safetensors")
    package.write_manifest(path, manifest)
    with pytest.raises(PackageError, match=r"missing=\['1.bias'.*1.weight: \(9, 16\) != \(8, 16\)"):
        package.load(path)


def test_pt2_with_pickled_weights_is_refused(saved):
    _, _, path = saved
    file = path / "model.pt2"
    with zipfile.ZipFile(file) as src:
        entries = {n: src.read(n) for n in src.namelist()}
    config_name = next(n for n in entries if n.endswith("weights_config.json"))
    config = json.loads(entries[config_name])
    next(iter(config["config"].values()))["use_pickle"] = True
    entries[config_name] = json.dumps(config).encode()
    with zipfile.ZipFile(file, "w") as dst:
        for name, data in entries.items():
            dst.writestr(name, data)
    with pytest.raises(PackageError, match="pickled object"):
        package.load_program(file)


def test_load_never_unpickles(saved, monkeypatch):
    _, x, path = saved
    real_load = torch.load

    def guarded_load(f, *args, weights_only=None, **kwargs):
        assert weights_only is True, "torch.load called without weights_only=True"
        return real_load(f, *args, weights_only=True, **kwargs)

    def no_pickle(*args, **kwargs):
        raise AssertionError("pickle.loads called")

    monkeypatch.setattr(torch, "load", guarded_load)
    monkeypatch.setattr(pickle, "loads", no_pickle)
    monkeypatch.setattr(pickle, "load", no_pickle)
    assert package.load(path)(x).shape == (5, 3)


def test_non_exportable_model_saves_without_program(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="ember.package"):
        path = package.save(_Branchy(), tmp_path / "b", example_input=torch.randn(3, 4))
    assert "torch.export failed" in caplog.text and "torch.cond" in caplog.text
    manifest = package.read_manifest(path)
    assert "model.pt2" not in manifest["files"] and manifest["export_error"]
    with pytest.raises(PackageError, match="no torch.export program"):
        package.load(path)


def test_bad_arguments_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="Unknown task 'ranking'"):
        package.save(_mlp(), tmp_path / "p", example_input=torch.randn(2, 16), task="ranking")
    with pytest.raises(ValueError, match="example_input.*Received: list"):
        package.save(_mlp(), tmp_path / "p", example_input=[1, 2])


def test_record_target_and_inspect_text(saved):
    _, _, path = saved
    (path / "model.onnx").write_bytes(b"fake")
    package.record_target(
        path, "onnx", {"file": "model.onnx", "max_abs_diff": 1.5e-7}, ["model.onnx"]
    )
    manifest = package.read_manifest(path)
    assert manifest["targets"]["onnx"]["max_abs_diff"] == 1.5e-7
    assert len(manifest["files"]["model.onnx"]) == 64
    text = package.inspect_text(path)
    assert "input: float32 [-1, 1, 4, 4]" in text
    assert "onnx    model.onnx  max_abs_diff=1.5e-07" in text
    package.remove_target(path, "onnx", ["model.onnx"])
    assert "onnx" not in package.read_manifest(path)["targets"]
    assert not (path / "model.onnx").exists()


def test_rebuild_from_sequential_architecture(tmp_path):
    model_module = pytest.importorskip("ember.model")
    sequential = getattr(model_module, "Sequential", None)
    if sequential is None or not hasattr(sequential, "from_config"):
        pytest.skip("ember.Sequential.from_config is not available yet")
    layers = pytest.importorskip("ember.layers")
    model = sequential([layers.Dense(4)])
    x = torch.randn(3, 6)
    path = package.save(model, tmp_path / "s", example_input=x)
    (path / "model.pt2").unlink()
    manifest = package.read_manifest(path)
    manifest["files"].pop("model.pt2")
    package.write_manifest(path, manifest)
    torch.testing.assert_close(package.load(path)(x), model(x).detach())


def test_write_manifest_is_atomic(saved):
    _, _, path = saved
    package.write_manifest(path, {**package.read_manifest(path), "name": "renamed"})
    assert package.read_manifest(path)["name"] == "renamed"
    assert not [p for p in path.iterdir() if p.name.endswith(".tmp")]


def test_saving_again_removes_the_earlier_export_targets(saved, caplog):
    """A re-saved package must not keep model.onnx (or web/...) exported from the old weights."""
    _, x, path = saved
    for name in ("model.onnx", "web/model.onnx"):
        (path / name).parent.mkdir(exist_ok=True)
        (path / name).write_bytes(b"exported from the old weights")
        package.record_target(path, name.split("/")[0].split(".")[0], {"file": name}, [name])
    (path / "notes.txt").write_text("mine")  # not listed by ember: kept
    with caplog.at_level(logging.INFO, logger="ember.package.save"):
        package.save(nn.Linear(16, 3), path, example_input=x[:1].flatten(1))
    assert not (path / "model.onnx").exists() and not (path / "web").exists()
    assert (path / "notes.txt").read_text() == "mine"
    manifest = package.read_manifest(path)
    assert manifest["targets"] == {} and "model.onnx" not in manifest["files"]
    assert "Removed 2 export file(s)" in caplog.text
    package.load(path)  # every listed file is there


SAVE_BERT = """
import sys, torch
from transformers import BertConfig, BertForSequenceClassification  # torchao's notices come here
import ember
model = BertForSequenceClassification(BertConfig(
    vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
    intermediate_size=64, max_position_embeddings=64, num_labels=2)).eval()
ids = torch.randint(1, 64, (4, 12))
print("--- save ---", file=sys.stderr, flush=True)
seq = {"input_ids": {1: "sequence"}, "attention_mask": {1: "sequence"}}
ember.save(model, sys.argv[1], example_input={"input_ids": ids, "attention_mask": torch.ones_like(ids)},
           dynamic_shapes=seq, task="classification")
"""


@pytest.mark.e2e
def test_saving_a_hugging_face_model_prints_nothing(tmp_path):
    """ember.save on a transformers BERT adds no warning of its own (docs/export.md says so)."""
    pytest.importorskip("transformers")
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    proc = subprocess.run([sys.executable, "-c", SAVE_BERT, str(tmp_path / "bert")], env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    after = proc.stderr.split("--- save ---", 1)[1]
    assert after.strip() == "" and proc.stdout == "", after
