"""The repository on disk: scan, fingerprints, version policies, config.json, names."""

from __future__ import annotations

import json

import pytest

from ember.serve.errors import ServeError
from ember.serve.versions import (
    check_model_name,
    parse_policy,
    parse_version,
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
