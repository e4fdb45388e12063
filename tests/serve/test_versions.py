"""The repository on disk: scan, fingerprints, version policies, config.json, names."""

from __future__ import annotations

import json

import pytest

from ember.serve.errors import ServeError
from ember.serve.versions import (
    check_model_name,
    model_dir,
    parse_policy,
    parse_version,
    pending_versions,
    read_config,
    scan,
    select_versions,
)


def test_scan_finds_numbered_versions_and_skips_the_rest(tmp_path):
    (tmp_path / "digits" / "1").mkdir(parents=True)
    (tmp_path / "digits" / "1" / "model.onnx").write_bytes(b"x")
    (tmp_path / "digits" / "2").mkdir()
    (tmp_path / "digits" / "tmp").mkdir()  # not a number: not a version
    (tmp_path / ".hidden").mkdir()  # not a valid model name
    (tmp_path / "notes.txt").write_text("not a model")
    layout = scan(tmp_path, single=False)
    assert set(layout) == {"digits"} and set(layout["digits"]) == {1, 2}
    path, fp = layout["digits"][1]
    assert path == tmp_path / "digits" / "1" and fp[0][:2] == ("model.onnx", 1)
    (tmp_path / "digits" / "1" / "model.onnx").write_bytes(b"xy")
    assert scan(tmp_path, single=False)["digits"][1][1] != fp  # a changed file: new fingerprint


def test_single_file_is_version_1_named_after_it(tmp_path):
    onnx = tmp_path / "my model.onnx"
    onnx.write_bytes(b"x")
    assert list(scan(onnx, single=True)) == ["my_model"]
    assert set(scan(onnx, single=True)["my_model"]) == {1}


def test_policies_select_versions():
    newest_first = [5, 3, 2, 1]
    assert select_versions({"latest": {"num_versions": 2}}, newest_first) == {5, 3}
    assert select_versions({"all": {}}, newest_first) == {5, 3, 2, 1}
    assert select_versions({"specific": {"versions": [1, 4]}}, newest_first) == {1}
    assert parse_policy("all", "m") == {"all": {}}
    with pytest.raises(ValueError, match=r"Invalid version_policy for model 'm': \{'newest': 1\}"):
        parse_policy({"newest": 1}, "m")


def test_config_json_labels_and_override(tmp_path):
    (tmp_path / "m").mkdir()
    config = {"version_policy": {"all": {}}, "labels": {"stable": "2"}}
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    assert read_config(tmp_path / "m", None) == ({"all": {}}, {"stable": 2})
    assert read_config(tmp_path / "m", {"latest": {}})[0] == {"latest": {}}
    (tmp_path / "m" / "config.json").write_text("{not json")
    assert read_config(tmp_path / "m", None) == ({"latest": {"num_versions": 1}}, {})


def test_versions_and_names_are_validated():
    assert parse_version("12") == 12 and parse_version(3) == 3
    for bad in ("-1", "1.5", True, "9" * 20):
        with pytest.raises(ServeError, match="Invalid version"):
            parse_version(bad)
    assert check_model_name("digits-v2.1") == "digits-v2.1"
    for bad in ("../etc", "/abs", "a/b", "", ".hidden"):
        with pytest.raises(ServeError, match="Invalid model name"):
            check_model_name(bad)


def test_names_and_labels_need_a_full_match():
    for bad in ("mlp\n", "mlp\n\n", "\nmlp"):
        with pytest.raises(ServeError, match="Invalid model name"):
            check_model_name(bad)


def test_scan_refuses_symlinks_out_of_the_repository(tmp_path):
    root, outside = tmp_path / "models", tmp_path / "outside"
    (outside / "1").mkdir(parents=True)
    (outside / "1" / "model.onnx").write_bytes(b"x")
    (root / "inside" / "1").mkdir(parents=True)
    (root / "inside" / "1" / "model.onnx").write_bytes(b"x")
    (root / "evil").symlink_to(outside)  # a model directory pointing out
    (root / "alias").symlink_to(root / "inside")  # pointing in: a second name, allowed
    (root / "inside" / "2").symlink_to(outside / "1")  # a version directory pointing out
    (root / "inside" / "²").mkdir()  # not an ASCII number: not a version (int() refuses it)
    refused = []
    layout = scan(root, single=False, on_refused=lambda path, why: refused.append(path))
    assert set(layout) == {"alias", "inside"} and set(layout["inside"]) == {1}
    assert sorted(refused) == sorted([root / "evil", root / "inside" / "2", root / "alias" / "2"])
    with pytest.raises(ServeError, match="symlink to outside the repository") as info:
        model_dir(root, "evil")
    assert info.value.status == 400
    with pytest.raises(ServeError, match="No model directory 'ghost'"):
        model_dir(root, "ghost")
    assert model_dir(root, "alias") == root / "inside"


def test_versions_whose_files_are_still_arriving_are_pending(tmp_path):
    model = tmp_path / "m"
    for v in (1, 2, 3, 4):
        (model / str(v)).mkdir(parents=True)
    files = {"model.onnx": "0" * 64, "weights.safetensors": "0" * 64}
    (model / "1" / "ember.json").write_text(json.dumps({"files": files}))
    for name in files:
        (model / "1" / name).write_bytes(b"x")  # complete (checksums are the load's business)
    (model / "2" / "ember.json").write_text(json.dumps({"files": files}))
    (model / "2" / "model.onnx").write_bytes(b"x")  # weights not there yet
    (model / "3" / "model.onnx").write_bytes(b"x")  # no manifest, its siblings are packages
    (model / "4" / "weights.safetensors").write_bytes(b"x")
    pending = pending_versions(scan(tmp_path, single=False))["m"]
    assert set(pending) == {2, 3, 4}
    assert pending[2] == "waiting for files listed in ember.json: weights.safetensors"
    assert "other versions of this model are packages" in pending[3]
    assert pending[4] == "waiting for ember.json (the directory holds weights.safetensors)"
    # A model made only of bare model.onnx directories has nothing pending.
    (tmp_path / "bare" / "1").mkdir(parents=True)
    (tmp_path / "bare" / "1" / "model.onnx").write_bytes(b"x")
    assert "bare" not in pending_versions(scan(tmp_path, single=False))
