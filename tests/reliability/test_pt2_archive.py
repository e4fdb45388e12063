"""A crafted ``model.pt2`` never runs code: not under ``ember.load``, not under ``ember serve``.

Each case rewrites the package's archive the way an attacker would (and fixes the sha256 in
``ember.json``), then loads it through every path; the payload creates a marker directory when it
runs, so ``not marker.exists()`` proves it never did. Issue 13, part 1.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from ember import package
from ember.package import PackageError
from ember.serve.runtime import load_version
from tests.plugins.models import make_package, tiny_mlp


class _Payload:
    """Unpickling this runs ``os.makedirs(marker)``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (str(self.marker),))


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pt2") / "mlp"
    return make_package(tiny_mlp(0), path, torch.randn(3, 4), name="mlp")


def _evil_pickle(tmp_path: Path) -> tuple[bytes, Path]:
    marker, control = tmp_path / "pwned", tmp_path / "control"
    torch.save({"w": _Payload(marker)}, tmp_path / "evil.pt")
    torch.save({"w": _Payload(control)}, tmp_path / "proof.pt")
    torch.load(tmp_path / "proof.pt", weights_only=False)
    assert control.is_dir(), "the payload is not live: the test would prove nothing"
    return (tmp_path / "evil.pt").read_bytes(), marker


def _rewrite(clean: Path, tmp_path: Path, edit, *, compression=zipfile.ZIP_STORED) -> Path:
    """Copy the package, let ``edit(entries, top)`` change the archive's entries, fix the hash."""
    path = Path(shutil.copytree(clean, tmp_path / "pkg"))
    with zipfile.ZipFile(path / "model.pt2") as src:
        entries = [(n, src.read(n)) for n in src.namelist()]
    top = entries[0][0].split("/", 1)[0]
    entries = edit(entries, top)
    with zipfile.ZipFile(path / "model.pt2", "w", compression=compression) as dst:
        for name, data in entries:
            dst.writestr(name, data)
    _fix_hash(path)
    return path


def _fix_hash(path: Path) -> None:
    manifest = json.loads((path / "ember.json").read_text())
    manifest["files"]["model.pt2"] = hashlib.sha256((path / "model.pt2").read_bytes()).hexdigest()
    (path / "ember.json").write_text(json.dumps(manifest))


def _second_program(payload: bytes, program: str = "evil", folder: str = ""):
    """The issue's probe: a second program whose weights are a torch.save pickle."""

    def edit(entries, top):
        files = dict(entries)
        root = f"{top}/{folder}"
        extra = [
            (f"{root}models/{program}.json", files[f"{top}/models/model.json"]),
            (f"{root}data/sample_inputs/{program}.pt", files[f"{top}/data/sample_inputs/model.pt"]),
            (f"{root}data/constants/{program}.pt", _benign()),
            (f"{root}data/weights/{program}.pt", payload),
        ]
        return entries + extra

    return edit


def _benign() -> bytes:
    import io

    buffer = io.BytesIO()
    torch.save({}, buffer)
    return buffer.getvalue()


def _assert_refused_everywhere(path: Path, marker: Path, match: str) -> None:
    with pytest.raises(PackageError, match=match):
        package.load(path)
    assert not marker.exists(), "the payload ran under ember.load"
    with ThreadPoolExecutor(1) as executor:
        with pytest.raises(Exception, match="model.pt2|" + match):  # the torch runtime reads it
            load_version("mlp", 1, path, executor, runtime="torch")
    assert not marker.exists(), "the payload ran under the server's torch runtime"


@pytest.mark.parametrize(
    "program,folder",
    [("evil", ""), ("model2", ""), ("a", "nested/"), ("model", "../")],
    ids=["issue-probe", "other-name", "nested-path", "dot-dot"],
)
def test_a_second_program_never_runs(clean, tmp_path, program, folder):
    payload, marker = _evil_pickle(tmp_path)
    path = _rewrite(clean, tmp_path, _second_program(payload, program, folder))
    _assert_refused_everywhere(path, marker, "entry ember does not write|duplicate")


def test_the_issue_probe_would_run_under_torch_export_load(clean, tmp_path):
    """The control: torch's own loader does run this payload, so the tests above mean something."""
    payload, marker = _evil_pickle(tmp_path)
    path = _rewrite(clean, tmp_path, _second_program(payload))
    try:
        torch.export.load(str(path / "model.pt2"))
    except Exception:
        pass
    assert marker.exists()


def test_duplicate_entries_are_refused(clean, tmp_path):
    payload, marker = _evil_pickle(tmp_path)

    def edit(entries, top):
        return entries + [(f"{top}/data/weights/weight_0", payload)]

    with pytest.warns(UserWarning, match="Duplicate name"):
        path = _rewrite(clean, tmp_path, edit)
    _assert_refused_everywhere(path, marker, "duplicate entries")


def test_a_zip_bomb_is_refused_before_it_is_inflated(clean, tmp_path):
    def edit(entries, top):
        return entries + [(f"{top}/data/weights/weight_99", b"\0" * (64 << 20))]

    path = _rewrite(clean, tmp_path, edit, compression=zipfile.ZIP_DEFLATED)
    assert (path / "model.pt2").stat().st_size < 1 << 20
    with pytest.raises(PackageError, match="compressed"):
        package.load(path)


def test_pickled_payload_flagged_in_the_config_is_refused(clean, tmp_path):
    payload, marker = _evil_pickle(tmp_path)

    def edit(entries, top):
        files = dict(entries)
        config_name = f"{top}/data/weights/model_weights_config.json"
        config = json.loads(files[config_name])
        first = next(iter(config["config"].values()))
        first["use_pickle"] = True
        files[config_name] = json.dumps(config).encode()
        files[f"{top}/data/weights/{first['path_name']}"] = payload
        return list(files.items())

    path = _rewrite(clean, tmp_path, edit)
    _assert_refused_everywhere(path, marker, "pickled object")


def test_a_poisoned_sample_input_is_never_read(clean, tmp_path):
    """torch.save writes example inputs as a pickle; ember never reads them, so a payload there is
    inert and the program still loads."""
    payload, marker = _evil_pickle(tmp_path)

    def edit(entries, top):
        return [
            (n, payload if n.endswith("data/sample_inputs/model.pt") else d) for n, d in entries
        ]

    path = _rewrite(clean, tmp_path, edit)
    assert package.load(path)(torch.zeros(2, 4)).shape == (2, 3)
    with ThreadPoolExecutor(1) as executor:
        load_version("mlp", 1, path, executor, runtime="torch")
    assert not marker.exists()


def _edit_graph(change):
    def edit(entries, top):
        out = []
        for name, data in entries:
            if name.endswith("models/model.json"):
                program = json.loads(data)
                change(program)
                data = json.dumps(program).encode()
            out.append((name, data))
        return out

    return edit


def test_a_graph_calling_python_is_refused(clean, tmp_path):
    marker = tmp_path / "pwned"

    def change(program):
        node = program["graph_module"]["graph"]["nodes"][0]
        node["target"] = "torch.os.makedirs"
        node["inputs"] = [{"name": "name", "arg": {"as_string": str(marker)}, "kind": 1}]

    path = _rewrite(clean, tmp_path, _edit_graph(change))
    _assert_refused_everywhere(path, marker, "not a tensor or shape operator")


@pytest.mark.parametrize(
    "expr",
    [
        "__import__('os').makedirs('{marker}')",
        "Symbol('s0').__class__",
        "Pow(Integer(9), Pow(Integer(9), Integer(9)))",
        "9**9**9",
    ],
)
def test_a_shape_expression_that_is_code_is_refused(clean, tmp_path, expr):
    """torch parses expressions with sympy.sympify, which evals them."""
    marker = tmp_path / "pwned"
    expr = expr.format(marker=marker)

    def change(program):
        program["range_constraints"] = {expr: {"min_val": 1, "max_val": None}}

    path = _rewrite(clean, tmp_path, _edit_graph(change))
    _assert_refused_everywhere(path, marker, "shape expression")


def test_a_weight_larger_than_its_payload_is_refused(clean, tmp_path):
    def edit(entries, top):
        out = []
        for name, data in entries:
            if name.endswith("model_weights_config.json"):
                config = json.loads(data)
                meta = next(iter(config["config"].values()))["tensor_meta"]
                meta["sizes"] = [{"as_int": 1 << 40}]
                meta["strides"] = [{"as_int": 1}]
                data = json.dumps(config).encode()
            out.append((name, data))
        return out

    path = _rewrite(clean, tmp_path, edit)
    with pytest.raises(PackageError, match="more data than its payload"):
        package.load(path)


def test_a_clean_program_loads_and_matches(clean):
    model = package.load(clean)
    x = torch.randn(5, 4)
    reference = torch.export.load(str(clean / "model.pt2")).module()
    (expected,) = reference(x)  # format 2 programs return a tuple of outputs
    torch.testing.assert_close(model(x), expected)
