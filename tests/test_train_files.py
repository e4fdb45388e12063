"""`ember train data.csv --target label`, `ember train images/`, `--model module:function`."""

import json

import numpy as np
import pytest

import ember
from ember.cli import main

pd = pytest.importorskip("pandas")
Image = pytest.importorskip("PIL.Image")


def _csv(path, n=160):
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"area": rng.normal(80, 20, n), "city": rng.choice(["Lyon", "Paris"], n)})
    df["label"] = np.where((df.area > 80) | (df.city == "Paris"), "big", "small")
    df.to_csv(path, index=False)
    return path


def _images(root, per_class=5):
    for name, value in [("cat", 30), ("dog", 220)]:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(np.full((10, 10, 3), value + i, np.uint8)).save(
                root / name / f"{i}.png"
            )
    return root


def test_train_a_csv_writes_package_report_and_tensorboard_logs(tmp_path, capsys):
    csv = _csv(tmp_path / "houses.csv")
    argv = ["train", str(csv), "--target", "label", "--epochs", "3", "--no-progress"]
    assert main([*argv, "--output", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "validation:" in out and "accuracy=" in out
    run = tmp_path / "out" / "runs" / "houses" / "version_0"
    assert (run / "report.html").exists() and list(run.glob("train/events.out.tfevents.*"))
    manifest = json.loads((tmp_path / "out" / "model" / "ember.json").read_text())
    assert manifest["labels"] == ["big", "small"] and manifest["task"] == "classification"
    assert manifest["preprocessing"]["columns"][1]["vocabulary"] == ["Lyon", "Paris"]
    model = ember.load(tmp_path / "out" / "model")
    rows = np.array([[120.0, 0.0], [50.0, 0.0]], np.float32)  # area, city=Lyon (index 0)
    assert model.predict(rows).shape == (2, 2)


def test_train_an_image_folder(tmp_path, capsys):
    folder = _images(tmp_path / "pets")
    argv = ["train", str(folder), "--epochs", "1", "--image-size", "8", "8", "--no-progress"]
    assert main([*argv, "--output", str(tmp_path / "out")]) == 0
    manifest = json.loads((tmp_path / "out" / "model" / "ember.json").read_text())
    assert manifest["labels"] == ["cat", "dog"]
    assert manifest["signature"]["inputs"][0]["shape"] == [-1, 3, 8, 8]


def test_train_with_your_own_model_function(tmp_path, monkeypatch, capsys):
    (tmp_path / "mymodels.py").write_text(
        "import torch\n"
        "def build(input_shape, num_outputs):\n"
        "    return torch.nn.Sequential(torch.nn.Linear(input_shape[0], 8), torch.nn.ReLU(),\n"
        "                               torch.nn.Linear(8, num_outputs))\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    csv = _csv(tmp_path / "houses.csv")
    argv = ["train", str(csv), "--target", "label", "--model", "mymodels:build", "--epochs", "1"]
    assert main([*argv, "--no-progress"]) == 0
    assert (tmp_path / "ember_output" / "model" / "ember.json").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "houses.csv"], r"--target COLUMN \(columns: area, city, label\)"),
        (["train", "nothing.csv", "--target", "y"], "does not exist"),
        (["train", "houses.csv", "--target", "label", "--model", "nope"], "module:function"),
        (["train", "houses.csv", "--target", "price"], "Unknown target column 'price'"),
    ],
)
def test_train_on_files_errors_name_the_fix(argv, message, tmp_path, capsys):
    _csv(tmp_path / "houses.csv")
    assert main([*argv, "--epochs", "1", "--no-progress"]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "error:" in err and "Traceback" not in err
    import re

    assert re.search(message, err), err


def test_train_a_regression_target_in_its_own_units(tmp_path, capsys):
    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {"rooms": rng.integers(1, 6, 200), "city": rng.choice(["Lyon", "Paris"], 200)}
    )
    df["price"] = 100_000 * df.rooms + np.where(df.city == "Paris", 200_000, 0)  # large units
    df.to_csv(tmp_path / "prices.csv", index=False)  # integers with few values: say --task
    argv = ["train", str(tmp_path / "prices.csv"), "--target", "price", "--task", "regression"]
    argv += ["--epochs", "10"]
    assert main([*argv, "--no-progress", "--lr", "0.01", "--output", str(tmp_path / "out")]) == 0
    manifest = json.loads((tmp_path / "out" / "model" / "ember.json").read_text())
    assert manifest["task"] == "regression"
    # The network predicts the standardised price and a last Rescaling layer restores its units.
    assert manifest["architecture"]["layers"][-1]["class"] == "Rescaling"
    assert manifest["metrics"]["val_mae"] < 0.5 * df.price.std()
    model = ember.load(tmp_path / "out" / "model")
    assert isinstance(model, ember.Sequential)
