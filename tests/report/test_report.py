"""The training report: real runs, a headless browser, crashed runs, bad input."""

from __future__ import annotations

import html
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import ember
from ember.report import ReportCallback, ReportError, confusion_matrix, load_run, write_report
from ember.train.history import History
from ember.train.step_losses import StepLosses

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
CHROMIUM = Path("/usr/bin/chromium")
REPORT_CHECK = Path(__file__).with_name("js") / "report_check.mjs"


class Net(torch.nn.Module):
    """4 features -> 3 classes; `blow_up` makes the output infinite (a diverging run)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)
        )
        self.blow_up = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return out * float("inf") if self.blow_up else out


class BlowUpAfterFirstEpoch(ember.Callback):
    def on_epoch_end(self, trainer, module, logs):
        module.blow_up = True


def _loaders(n: int = 96) -> tuple[DataLoader, DataLoader]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    split = n * 3 // 4
    return (
        DataLoader(TensorDataset(x[:split], y[:split]), batch_size=16, shuffle=True),
        DataLoader(TensorDataset(x[split:], y[split:]), batch_size=16),
    )


def _fit(tmp_path: Path, epochs: int, callbacks: list) -> ember.Trainer:
    net = ember.compile(Net(), "adam", "cross_entropy", ["accuracy"], lr=0.05)
    trainer = ember.Trainer(
        max_epochs=epochs,
        default_root_dir=tmp_path / "runs",
        name="tiny",
        seed=0,
        enable_progress_bar=False,
        enable_checkpointing=False,
        callbacks=callbacks,
    )
    train, val = _loaders()
    trainer.fit(net, train, val)
    return trainer


def _series(dom: str) -> list[dict]:
    """Every line the browser drew: its data attributes and the y coordinates of its SVG path."""
    found = []
    pattern = r'<g id="(series-[^"]+)" class="series"([^>]*)>\s*<path d="([^"]+)"'
    for match in re.finditer(pattern, dom):
        attrs = re.findall(r"""data-([\w-]+)=(?:'([^']*)'|"([^"]*)")""", match.group(2))
        data = {k: json.loads(html.unescape(v1 or v2)) for k, v1, v2 in attrs}
        points = re.findall(r"[ML] ([-\d.e]+) ([-\d.e]+)", match.group(3))
        data["svg_x"] = [float(px) for px, _ in points]
        data["svg_y"] = [float(py) for _, py in points]
        found.append(data)
    return found


def _embedded(page: str) -> dict:
    """The run data the page embeds (and draws its charts from)."""
    text = re.search(r'id="ember-report-data">(.*?)</script>', page, re.S).group(1)
    return json.loads(text)


def _lines(page: str) -> list[dict]:
    """Every line of every chart, as embedded in the file: {**data, "values", "epochs", "chart"}."""
    return [
        {**s["data"], "values": s["y"], "epochs": s["x"], "best": s["best"], "chart": c["id"]}
        for c in _embedded(page)["charts"]
        for s in c["series"]
    ]


def _assert_drawn_at(values: list[float], coords: list[float]) -> None:
    # The path's coordinates must be an affine image of the values (a linear axis): fit it on
    # all points and require every point to sit on the line.
    assert len(values) == len(coords) >= 3
    a, b = np.polyfit(values, coords, 1)
    assert np.allclose(np.polyval([a, b], values), coords, atol=0.05), (values, coords)


def _browser_check(report: Path, tmp_path: Path, screenshot: Path) -> dict:
    """Open the report in headless chromium (playwright-core, as tests/export/test_web.py does)."""
    if not CHROMIUM.is_file():
        pytest.skip("Debian chromium is not installed (apt-get install chromium chromium-driver)")
    from ember.export import web

    try:
        npm_dir = web.ensure_npm_runtime()
    except Exception as exc:  # no node/npm: the page cannot be driven
        pytest.skip(f"playwright-core is not available: {exc}")
    cmd = ["node", str(REPORT_CHECK), report.resolve().as_uri(), str(npm_dir), str(CHROMIUM)]
    cmd += [str(tmp_path / "profile"), str(screenshot)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


@pytest.mark.e2e
def test_report_of_a_short_run_opens_in_chromium_and_plots_the_history(tmp_path: Path) -> None:
    x = torch.randn(32, 4)
    test_data = DataLoader(TensorDataset(x, (x[:, 0] > 0).long()), batch_size=16)
    trainer = _fit(tmp_path, epochs=4, callbacks=[ReportCallback(test_data=test_data)])
    report = trainer.log_dir / "report.html"
    assert report.is_file()
    assert report.stat().st_size < 60_000  # data and script, no rendered figures
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    result = _browser_check(report, tmp_path, shot)

    assert result["errors"] == [] and result["requests"] == []  # no console error, no network
    charts = _embedded(report.read_text())["charts"]
    assert result["charts"] == result["drawn"] == len(charts) >= 7  # every chart drawn
    assert all(n >= 1 for n in result["paths"])  # each with its lines
    assert result["clipped"] == []  # every label inside its chart
    assert re.search(r"epoch \d+.*train: [\d.]+.*val: [\d.]+", result["tip"])  # hover reads values
    assert result["zoomed"] and result["smoothed"]
    assert shot.stat().st_size > 20_000  # not a blank page

    dom = result["dom"]  # the page as the browser drew it
    history = json.loads((trainer.log_dir / "history.json").read_text())
    lines = {s["metric"]: s for s in _series(dom) if "metric" in s}
    for key in ("loss", "val_loss", "accuracy", "val_accuracy", "lr"):
        assert lines[key]["values"] == pytest.approx(history["history"][key], rel=1e-9), key
        assert lines[key]["epochs"] == [1, 2, 3, 4]
        if key != "lr":  # lr is constant: any y works
            _assert_drawn_at(lines[key]["values"], lines[key]["svg_y"])
    best = 1 + int(np.argmin(history["history"]["val_loss"]))
    assert lines["val_loss"]["best"] == best
    steps = lines["step/loss"]
    assert steps["epochs"] == list(range(1, 21))  # 72 rows, 16 a batch: 5 steps an epoch
    _assert_drawn_at(steps["values"], steps["svg_y"])
    assert _embedded(dom)["runs"][0]["history"] == history["history"]
    confusion = json.loads((trainer.log_dir / "confusion.json").read_text())
    assert sum(map(sum, confusion["matrix"])) == 24  # every validation sample, once
    assert "per-class" in dom and "gradient norm per layer" in dom
    # The header: environment and test metrics.
    assert re.search(r"<th>seed</th><td>0</td>", dom) and "<th>batch size</th><td>16</td>" in dom
    assert "<th>effective lr</th><td>0.05</td>" in dom and torch.__version__ in dom
    tested = json.loads((trainer.log_dir / "report.json").read_text())["test"]
    assert set(tested) == {"loss", "accuracy"}
    assert f"<td>{tested['accuracy']:.4g}</td>" in dom and f"<td>{tested['loss']:.4g}</td>" in dom


def test_crashed_run_still_gets_a_report(tmp_path: Path) -> None:
    with pytest.raises(FloatingPointError):
        _fit(tmp_path, epochs=5, callbacks=[BlowUpAfterFirstEpoch(), ReportCallback()])
    run = tmp_path / "runs" / "tiny" / "version_0"
    page = (run / "report.html").read_text()
    assert "Training stopped: FloatingPointError" in page
    assert "1 of 5 planned (stopped early)" in page
    loss = next(s for s in _lines(page) if s.get("metric") == "loss")
    assert loss["values"] == pytest.approx(load_run(run).history["loss"])
    assert len(loss["values"]) == 1


def test_a_directory_that_is_not_a_run_says_what_was_looked_for(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(
        ReportError, match=r"not a training run.*history\.json.*run\.json.*notes\.txt"
    ):
        write_report(tmp_path)
    (tmp_path / "version_0").mkdir()
    with pytest.raises(ReportError, match="It holds runs: version_0; pass one of those"):
        write_report(tmp_path)
    with pytest.raises(ReportError, match="does not exist"):
        write_report(tmp_path / "missing")
    with pytest.raises(ReportError, match="at least one run directory"):
        write_report([])


def _fake_run(path: Path, losses: list[float], lr: float) -> Path:
    history = History()
    for epoch, loss in enumerate(losses):
        norms = {
            "norm/weight/fc.weight": 3.0,
            "norm/weight/fc.bias": 4.0,
            "norm/grad/fc.weight": 0.1,
        }
        info = {"epoch_time": 0.5, "samples_per_sec": 100.0 + epoch, "norms": norms}
        history.append(epoch, {"loss": loss, "val_loss": loss + 0.1, "lr": lr}, info)
    path.mkdir(parents=True)
    history.write(path / "history.json")
    record = {"hparams": {"lr": lr, "max_epochs": len(losses)}, "model": "Net", "summary": "fc"}
    (path / "run.json").write_text(json.dumps(record))
    return path


def test_several_runs_overlay_with_a_parity_table(tmp_path: Path) -> None:
    a = _fake_run(tmp_path / "runs" / "a" / "version_0", [1.0, 0.6, 0.5], lr=0.1)
    b = _fake_run(tmp_path / "runs" / "b" / "version_3", [0.9, 0.7, 0.2], lr=0.01)
    package = tmp_path / "pkg"
    package.mkdir()
    targets = {"onnx": {"max_abs_diff": 1.5e-7, "top1_agreement": 1.0, "file": "model.onnx"}}
    (package / "ember.json").write_text(json.dumps({"name": "tiny", "targets": targets}))

    out = write_report([a, b], tmp_path / "compare.html", package_dir=package)
    page = out.read_text()
    losses = {s["run"]: s["values"] for s in _lines(page) if s.get("metric") == "loss"}
    assert losses == {"a/version_0": [1.0, 0.6, 0.5], "b/version_3": [0.9, 0.7, 0.2]}
    assert "1.5e-07" in page and "model.onnx" in page
    assert '<tr class="differs"><td>lr</td>' in page
    # layer norm = norm of all its parameters together: sqrt(3^2 + 4^2)
    weight = next(s for s in _lines(page) if s.get("layer") == "fc" and s.get("kind") == "weight")
    assert weight["values"] == pytest.approx([5.0, 5.0, 5.0])
    # self-contained: nothing fetched from the network
    assert not re.search(r'(src|href)="https?:|<link|url\(http|@import', page)


def test_norms_of_some_epochs_only_are_joined(tmp_path: Path) -> None:
    # Short epochs get norms every few epochs (their time budget): the line joins those epochs.
    history = History()
    for epoch in range(5):
        norms = {"norm/weight/fc.weight": 3.0 + epoch} if epoch in (0, 3, 4) else {}
        history.append(epoch, {"loss": 1.0 / (epoch + 1)}, {"epoch_time": 0.1, "norms": norms})
    run = tmp_path / "run"
    run.mkdir()
    history.write(run / "history.json")
    page = write_report(run).read_text()
    weight = next(s for s in _lines(page) if s.get("layer") == "fc" and s.get("kind") == "weight")
    assert weight["epochs"] == [1, 4, 5] and weight["values"] == [3.0, 6.0, 7.0]


def test_package_without_manifest_is_rejected(tmp_path: Path) -> None:
    run = _fake_run(tmp_path / "run", [1.0], lr=0.1)
    with pytest.raises(ReportError, match="no ember.json"):
        write_report(run, package_dir=tmp_path)


def test_run_without_finished_epochs_gets_a_report(tmp_path: Path) -> None:
    (tmp_path / "run.json").write_text(json.dumps({"model": "Net", "hparams": {"max_epochs": 3}}))
    page = write_report(tmp_path).read_text()
    assert "<td>none</td>" in page and _embedded(page)["charts"] == []


def test_confusion_matrix_counts_true_rows_predicted_columns() -> None:
    matrix = confusion_matrix(torch.tensor([0, 2, 2, 1]), torch.tensor([0, 2, 1, 1]), 3)
    assert matrix == [[1, 0, 0], [0, 1, 1], [0, 0, 1]]


def test_report_callback_rejects_a_path_as_filename() -> None:
    with pytest.raises(ValueError, match="Received: filename='a/b.html'"):
        ReportCallback(filename="a/b.html")


def test_the_report_needs_no_plotting_library(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # any import of it fails
    trainer = _fit(tmp_path, epochs=2, callbacks=[ReportCallback()])
    page = (trainer.log_dir / "report.html").read_text()
    charts = {c["id"] for c in _embedded(page)["charts"]}
    assert {"loss", "accuracy", "step_loss", "lr"} <= charts
    assert "<script>" in page and "createElementNS" in page  # drawn in the page


def test_step_losses_average_the_epoch_loss_and_the_environment_is_recorded(tmp_path) -> None:
    trainer = _fit(tmp_path, epochs=2, callbacks=[ReportCallback()])
    extra = json.loads((trainer.log_dir / "report.json").read_text())
    steps = extra["steps"]
    assert steps["step"] == list(range(1, 11)) and steps["every"] == 1  # 5 batches an epoch
    sizes = [16, 16, 16, 16, 8]  # 72 training rows
    history = load_run(trainer.log_dir).history
    for epoch in range(2):
        losses = steps["loss"][5 * epoch : 5 * epoch + 5]
        mean = sum(v * n for v, n in zip(losses, sizes)) / sum(sizes)
        assert mean == pytest.approx(history["loss"][epoch], rel=1e-6)
    env = extra["environment"]
    assert env["seed"] == 0 and env["batch_size"] == 16 and env["lr"] == 0.05
    assert env["torch"] == torch.__version__ and env["device"] == "cpu"
    assert env["optimizer"] == "Adam" and "effective_batch_size" not in env


def test_step_losses_keep_a_bounded_curve_by_averaging_neighbours() -> None:
    losses = StepLosses(limit=4)
    for step in range(1, 11):
        losses.add(step, torch.tensor(float(step)))
    # 1..8 halved twice at the limit -> points of 4 steps; 9, 10 wait in an unfinished point
    assert losses.as_dict() == {"step": [4, 8], "loss": [2.5, 6.5], "every": 4}
    with pytest.raises(ValueError, match="even integer >= 2. Received: limit=3"):
        StepLosses(limit=3)


def test_non_finite_values_embed_as_null(tmp_path: Path) -> None:
    run = _fake_run(tmp_path / "run", [1.0, float("nan"), 0.5], lr=0.1)
    page = write_report(run).read_text()

    def reject(constant: str) -> None:
        raise AssertionError(f"{constant} is not JSON a browser can parse")

    text = re.search(r'id="ember-report-data">(.*?)</script>', page, re.S).group(1)
    data = json.loads(text, parse_constant=reject)
    loss = next(s for c in data["charts"] for s in c["series"] if s["data"].get("metric") == "loss")
    assert loss["y"] == [1.0, None, 0.5]
