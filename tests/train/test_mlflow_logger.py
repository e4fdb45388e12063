"""MLflowLogger against a real MLflow tracking server (SQLite backend) that the test starts."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import ember
from ember import layers
from ember.train.mlflow_logger import MLflowLogger
from tests.plugins.waiting import free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory):
    pytest.importorskip("mlflow")
    import httpx

    root, port = tmp_path_factory.mktemp("mlflow"), free_port()
    argv = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
            "--workers", "1", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination", str(root / "artifacts")]  # fmt: skip
    log = (root / "server.log").open("w")
    proc = subprocess.Popen(argv, cwd=root, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:

        def healthy() -> bool:
            assert proc.poll() is None, (root / "server.log").read_text()[-3000:]
            try:
                return httpx.get(url + "/health", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        # migrations and imports: slow on a busy machine
        wait_until(healthy, 240, "the MLflow server never answered /health", interval=0.25)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int64)


@pytest.mark.e2e
def test_mlflow_gets_params_metrics_artifacts_and_a_registered_model(tracking_uri, tmp_path):
    x, y = _data()
    torch.manual_seed(0)
    model = ember.Sequential([layers.Input((4,)), layers.Dense(2)])
    model.compile("adam", "cross_entropy", ["accuracy"], lr=0.05)
    mlflow_logger = MLflowLogger("habits", tracking_uri=tracking_uri, save_dir=tmp_path / "runs")
    history = model.fit(x, y, epochs=2, validation_split=0.25, verbose=False, seed=0,
                        log_every_n_steps=1, enable_checkpointing=False,
                        logger=[ember.TensorBoardLogger(tmp_path / "runs"), mlflow_logger])  # fmt: skip
    model.save(tmp_path / "pkg")
    version = mlflow_logger.log_package(tmp_path / "pkg", registered_model_name="habits-model")

    client = mlflow_logger.client
    run = client.get_run(mlflow_logger.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["optimizer"] == "adam" and run.data.params["lr"] == "0.05"
    assert run.data.params["seed"] == "0"
    for key in ("loss", "val_loss", "val_accuracy"):
        logged = client.get_metric_history(mlflow_logger.run_id, key)
        assert [m.step for m in logged] == [0, 1]
        assert [m.value for m in logged] == pytest.approx(history.history[key])
    assert len(client.get_metric_history(mlflow_logger.run_id, "step/loss")) == 4  # 2 x 2 steps
    files = {a.path for a in client.list_artifacts(mlflow_logger.run_id)}
    assert {"history.json", "report.html", "run.json", "model"} <= files
    package = {a.path for a in client.list_artifacts(mlflow_logger.run_id, "model")}
    assert {"model/ember.json", "model/weights.safetensors"} <= package
    assert version.version == "1" and version.run_id == mlflow_logger.run_id
    assert client.get_registered_model("habits-model").latest_versions[0].version == "1"
    # ember keeps the MLflow run id in its run directory (a resumed fit logs into the same run)
    assert (mlflow_logger.log_dir / "mlflow_run_id").read_text() == mlflow_logger.run_id


def test_mlflow_logger_checks_its_arguments_before_any_import(tmp_path):
    with pytest.raises(ValueError, match="experiment_name"):
        MLflowLogger("")
    with pytest.raises(ValueError, match="flush_secs"):
        MLflowLogger("x", flush_secs=-1)
    logger = MLflowLogger("x", save_dir=tmp_path)
    with pytest.raises(ValueError, match="not a model package"):
        logger.log_package(tmp_path)


def test_import_ember_imports_neither_mlflow_nor_matplotlib():
    code = (
        "import sys, ember, ember.train; print(sorted({'mlflow', 'matplotlib'} & set(sys.modules)))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.stdout.strip() == "[]", out.stderr
