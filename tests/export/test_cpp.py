"""The C++ target: AOTInductor package, the EMBT tensor file format, and the CMake runner."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

import ember.export.cpp as cpp
from ember import package
from ember.export import ExportError, export


def test_tensor_file_roundtrip(tmp_path):
    arrays = [
        np.arange(24, dtype=np.float32).reshape(2, 1, 3, 4),
        np.array([1.5, -2.25], dtype=np.float64),  # converted to float32
        np.zeros((0, 3), dtype=np.float32),
    ]
    cpp.write_tensor_file(tmp_path / "t.bin", arrays)
    back = cpp.read_tensor_file(tmp_path / "t.bin")
    assert [a.shape for a in back] == [(2, 1, 3, 4), (2,), (0, 3)]
    assert all(a.dtype == np.float32 for a in back)
    np.testing.assert_array_equal(back[0], arrays[0])
    np.testing.assert_array_equal(back[1], np.array([1.5, -2.25], dtype=np.float32))


def test_read_tensor_file_rejects_bad_files(tmp_path):
    (tmp_path / "bad.bin").write_bytes(b"NOPE" + bytes(12))
    with pytest.raises(ExportError, match="not an EMBT tensor file.*NOPE"):
        cpp.read_tensor_file(tmp_path / "bad.bin")
    cpp.write_tensor_file(tmp_path / "t.bin", [np.ones((4, 4), np.float32)])
    data = (tmp_path / "t.bin").read_bytes()
    (tmp_path / "short.bin").write_bytes(data[:-8])
    with pytest.raises(ExportError, match=r"truncated: tensor of shape \(4, 4\)"):
        cpp.read_tensor_file(tmp_path / "short.bin")
    (tmp_path / "v3.bin").write_bytes(data[:4] + (3).to_bytes(4, "little") + data[8:])
    with pytest.raises(ExportError, match="version 3 is not supported"):
        cpp.read_tensor_file(tmp_path / "v3.bin")


def test_tensor_file_keeps_int64_ids_and_bool_masks(tmp_path):
    ids = np.arange(12, dtype=np.int64).reshape(2, 6) * (1 << 40)  # needs all 64 bits
    mask = np.array([[True, False] * 3] * 2)
    scores = np.ones((2, 3), np.float32)
    cpp.write_tensor_file(tmp_path / "typed.bin", [ids, mask, scores])
    assert (tmp_path / "typed.bin").read_bytes()[4:8] == (2).to_bytes(4, "little")
    back = cpp.read_tensor_file(tmp_path / "typed.bin")
    assert [a.dtype for a in back] == [np.int64, np.bool_, np.float32]
    for want, got in zip([ids, mask, scores], back):
        np.testing.assert_array_equal(got, want)


def test_build_cpp_runner_without_cpp_target_fails_clearly(tmp_path):
    with pytest.raises(ExportError, match=r"no CMakeLists.txt; export the C\+\+ target first"):
        cpp.build_cpp_runner(tmp_path)


def test_build_cpp_runner_names_missing_tools(tmp_path, monkeypatch):
    (tmp_path / "cpp").mkdir()
    shutil.copy2(cpp.CPP_RUNNER / "CMakeLists.txt", tmp_path / "cpp")
    monkeypatch.setattr(cpp.shutil, "which", lambda name: None)
    with pytest.raises(ExportError, match=r"needs cmake and c\+\+ on PATH"):
        cpp.build_cpp_runner(tmp_path)


@pytest.mark.parametrize(
    ("wrong", "message"),
    [
        (lambda x: torch.zeros(x.shape[0], 10), "'cpp' failed parity.*max_rel_diff"),
        (lambda x: x.flatten(1), r"shape \(64, 64\) differs from the expected \(64, 10\)"),
    ],
    ids=["wrong-values", "wrong-shape"],
)
def test_export_cpp_off_parity_is_not_kept(
    digits_mlp_package, tmp_path, monkeypatch, wrong, message
):
    # Stand in for the 30 s compile: a package file that "computes" the wrong outputs.
    pkg = tmp_path / "pkg"
    shutil.copytree(digits_mlp_package, pkg)

    def fake_compile(pkg_dir: Path, signature: dict, inputs: dict, dynamic_batch: bool) -> bool:
        (pkg_dir / cpp.FILE).write_bytes(b"not a real package")
        return dynamic_batch

    monkeypatch.setattr(cpp, "_compile", fake_compile)
    monkeypatch.setattr(torch._inductor, "aoti_load_package", lambda path: wrong)
    with pytest.raises(ExportError, match=message):
        cpp.export_cpp(pkg)
    manifest = package.read_manifest(pkg)
    assert "cpp" not in manifest.get("targets", {})
    assert not (pkg / cpp.FILE).exists()
    assert not [name for name in manifest["files"] if name.startswith("cpp/")]


@pytest.mark.e2e
def test_cpp_runner_end_to_end(digits_mlp_package, tmp_path):
    if shutil.which("cmake") is None or shutil.which("c++") is None:
        pytest.skip("building the C++ runner needs cmake and g++ (apt-get install cmake g++)")
    pkg = tmp_path / "digits_mlp"
    shutil.copytree(digits_mlp_package, pkg)
    figures = export(pkg, ["cpp"])["cpp"]
    assert figures["file"] == "cpp/model.aoti.pt2"
    assert figures["dynamic_batch"] is True
    assert figures["max_rel_diff"] <= 1e-4 and figures["top1_agreement"] == 1.0
    manifest = package.read_manifest(pkg)
    for name in ("cpp/model.aoti.pt2", "cpp/main.cpp", "cpp/CMakeLists.txt"):
        assert name in manifest["files"], name

    binary = cpp.build_cpp_runner(pkg)
    inputs, expected = package.load_sample(pkg)
    outputs = cpp.run_cpp_runner(binary, pkg, inputs.numpy())
    np.testing.assert_allclose(outputs, expected.numpy(), rtol=1e-4, atol=1e-4)
    # The batch dimension is dynamic in C++ too: three rows give three rows.
    three = cpp.run_cpp_runner(binary, pkg, inputs[:3].numpy())
    np.testing.assert_allclose(three, expected[:3].numpy(), rtol=1e-4, atol=1e-4)

    (tmp_path / "bad.bin").write_bytes(b"garbage")
    proc = subprocess.run(
        [str(binary), str(pkg / cpp.FILE), str(tmp_path / "bad.bin"), str(tmp_path / "o.bin")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "not an EMBT tensor file" in proc.stderr
