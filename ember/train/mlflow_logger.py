"""MLflowLogger: parameters, metrics, the report and the model package in an MLflow tracking server."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from ember.train.arguments import check_seconds
from ember.train.loggers import Logger, _hparam_value

__all__ = ["MLflowLogger"]

log = logging.getLogger(__name__)

_BATCH = 1000  # MLflow takes at most 1000 metrics in one log_batch call
_RUN_ID_FILE = "mlflow_run_id"


class MLflowLogger(Logger):
    """Log a run to MLflow beside TensorBoard and CSV: hyper-parameters as params, every logged
    value as a metric (epoch values at step = epoch, `step/...` values at the optimizer step),
    and, when `fit` ends, `history.json`, `run.json` and `report.html` as artifacts.
    `log_package` adds a model package and registers it in the Model Registry.

    MLflow is imported when the run starts (`pip install 'ember[mlflow]'`).

    Args:
        experiment_name: the MLflow experiment (created when missing).
        tracking_uri: the tracking server ("http://127.0.0.1:5000") or store; None uses
            MLflow's default (its `MLFLOW_TRACKING_URI` environment variable, else local files).
        run_name: the MLflow run's name (default: the ember run directory's name).
        save_dir, name, version: ember's run directory (see `Logger`); the MLflow run id is
            kept there, so a resumed fit (`ckpt_path="last"`) goes on logging into the same run.
        log_artifacts: upload history.json, run.json and report.html when fit ends.
        flush_secs: metrics are sent in one request at most this often (and when fit ends).

    Example:
        >>> mlflow_logger = MLflowLogger("digits", tracking_uri="http://127.0.0.1:5000")
        >>> trainer = ember.Trainer(logger=[ember.TensorBoardLogger(), mlflow_logger])
        >>> trainer.fit(model, train_loader, val_loader)
        >>> model.save("digits_pkg")
        >>> mlflow_logger.log_package("digits_pkg", registered_model_name="digits")
    """

    def __init__(
        self,
        experiment_name: str = "ember",
        tracking_uri: str | None = None,
        run_name: str | None = None,
        save_dir: str | Path = "runs",
        name: str = "default",
        version: Any = None,
        log_artifacts: bool = True,
        flush_secs: float = 5.0,
    ) -> None:
        super().__init__(save_dir, name, version)
        if not isinstance(experiment_name, str) or not experiment_name:
            raise ValueError(
                "Received an invalid value for `experiment_name`, expected a non-empty string. "
                f"Received: experiment_name={experiment_name!r}"
            )
        self.experiment_name, self.tracking_uri = experiment_name, tracking_uri
        self.run_name, self.log_artifacts_enabled = run_name, log_artifacts
        self.flush_secs = check_seconds("flush_secs", flush_secs)
        self.run_id: str | None = None
        self._client: Any = None
        self._pending: list[Any] = []  # mlflow Metric entities not yet sent
        self._flushed = 0.0

    @property
    def client(self) -> Any:
        """The `mlflow.MlflowClient` of this logger's tracking URI (imports mlflow)."""
        if self._client is None:
            try:
                from mlflow import MlflowClient
            except ImportError:
                raise ImportError(
                    "MLflowLogger needs mlflow: pip install mlflow (or pip install 'ember[mlflow]')."
                ) from None
            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    def start(self, resume_step: int | None = None) -> None:
        id_file = self.log_dir / _RUN_ID_FILE
        if resume_step is not None and id_file.is_file():
            self.run_id = id_file.read_text().strip()
            self.client.update_run(self.run_id, status="RUNNING")
            return
        experiment = self.client.get_experiment_by_name(self.experiment_name)
        experiment_id = (
            experiment.experiment_id
            if experiment is not None
            else self.client.create_experiment(self.experiment_name)
        )
        run = self.client.create_run(
            experiment_id,
            run_name=self.run_name or f"{self.root_dir.name}-{self.log_dir.name}",
            tags={"ember.log_dir": str(self.log_dir.resolve())},
        )
        self.run_id = run.info.run_id
        id_file.write_text(self.run_id)
        self._flushed = time.monotonic()
        log.info("MLflow run %s in experiment %r", self.run_id, self.experiment_name)

    def log_hyperparams(self, params: dict) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(_hparam_value(v))) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params a call
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._pending += [Metric(k, float(v), now, step) for k, v in metrics.items()]
        self.flush()

    def flush(self, force: bool = False) -> None:
        if self.run_id is None or not self._pending:
            return
        if not force and time.monotonic() - self._flushed < self.flush_secs:
            return
        pending, self._pending = self._pending, []
        for i in range(0, len(pending), _BATCH):
            self.client.log_batch(self.run_id, metrics=pending[i : i + _BATCH])
        self._flushed = time.monotonic()

    def finalize(self, final_metrics: dict[str, float]) -> None:
        if self.run_id is None:
            return
        self.flush(force=True)
        if self.log_artifacts_enabled:
            for file in ("history.json", "run.json", "report.html"):
                if (self.log_dir / file).is_file():
                    self.client.log_artifact(self.run_id, str(self.log_dir / file))
        self.client.set_terminated(self.run_id, status="FINISHED" if final_metrics else "FAILED")

    def log_package(self, path: str | Path, registered_model_name: str | None = None) -> Any:
        """Upload a model package (`model.save(path)`) as the run's `model` artifacts, and
        register it as a new version of `registered_model_name` when given.

        Returns:
            The registered `ModelVersion` (its `.version`), or None when not registering.

        Example:
            >>> model.save("pkg")
            >>> mlflow_logger.log_package("pkg", registered_model_name="digits").version
            '1'
        """
        path = Path(path)
        if not (path / "ember.json").is_file():
            raise ValueError(
                f"{path} is not a model package (no ember.json): write one with model.save(path)."
            )
        if self.run_id is None:
            raise RuntimeError("MLflowLogger.log_package needs a run: call it after fit.")
        self.client.log_artifacts(self.run_id, str(path), artifact_path="model")
        if registered_model_name is None:
            return None
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(registered_model_name)
        except MlflowException:
            self.client.create_registered_model(registered_model_name)
        source = f"{self.client.get_run(self.run_id).info.artifact_uri}/model"
        return self.client.create_model_version(
            registered_model_name, source, run_id=self.run_id, tags={"format": "ember.package"}
        )
