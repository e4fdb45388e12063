import csv
import warnings

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2
from torch.utils.data import DataLoader, TensorDataset

import ember
from ember.train import budget
from ember.train.loggers import CSVLogger, Logger, TensorBoardLogger, next_version
from tests.plugins.models import tiny_sequential

N, BATCH, EPOCHS = 32, 8, 3  # 4 batches per epoch


def _model():
    return tiny_sequential(metrics=["accuracy"])


def _loaders():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(N, 4, generator=g), torch.randint(0, 3, (N,), generator=g)
    xv, yv = torch.randn(16, 4, generator=g), torch.randint(0, 3, (16,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=BATCH, shuffle=True), DataLoader(
        TensorDataset(xv, yv), batch_size=BATCH
    )


class _StepLosses(ember.Callback):
    def __init__(self):
        self.losses = []

    def on_train_batch_end(self, trainer, module, logs, batch_idx):
        self.losses.append((trainer.global_step, logs["loss"].item()))


def _events(log_dir, run="train"):
    """The events of one run directory of Keras's layout (`train/` or `validation/`)."""
    acc = EventAccumulator(str(log_dir / run), size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    return acc


def _scalars(acc, tag):
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def _fit(tmp_path, logger=True, callbacks=(), epochs=EPOCHS, **kwargs):
    model = _model()
    train, val = _loaders()
    trainer = ember.Trainer(
        max_epochs=epochs,
        logger=logger,
        default_root_dir=tmp_path,
        seed=0,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_report=False,
        callbacks=list(callbacks),
        **kwargs,
    )
    history = trainer.fit(model, train, val)
    return model, trainer, history


@pytest.fixture(scope="module")
def tb_run(tmp_path_factory):
    steps = _StepLosses()
    model, trainer, history = _fit(
        tmp_path_factory.mktemp("tb"), callbacks=[steps], log_every_n_steps=1
    )
    return model, trainer, history, steps, _events(trainer.log_dir)


@pytest.fixture(scope="module")
def tb_val(tb_run):
    return _events(tb_run[1].log_dir, "validation")


def test_tensorboard_per_step_loss_matches_the_losses_of_the_steps(tb_run):
    _, trainer, _, steps, acc = tb_run
    logged = _scalars(acc, "batch_loss")
    assert [s for s, _ in logged] == list(range(1, EPOCHS * N // BATCH + 1))
    assert [v for _, v in logged] == pytest.approx([v for _, v in steps.losses], rel=1e-6)
    assert trainer.global_step == EPOCHS * N // BATCH


@pytest.mark.parametrize(
    "key, run, tag",
    [
        ("loss", "train", "epoch_loss"),
        ("accuracy", "train", "epoch_accuracy"),
        ("val_loss", "validation", "epoch_loss"),
        ("val_accuracy", "validation", "epoch_accuracy"),
        ("lr", "train", "epoch_learning_rate"),
    ],
)
def test_tensorboard_epoch_scalars_match_the_history(tb_run, tb_val, key, run, tag):
    _, _, history, _, acc = tb_run
    logged = _scalars(acc if run == "train" else tb_val, tag)
    assert [s for s, _ in logged] == list(range(EPOCHS))
    assert [v for _, v in logged] == pytest.approx(history.history[key], rel=1e-6)


def test_tensorboard_layout_is_keras_train_and_validation_runs_with_the_same_tags(tb_run, tb_val):
    _, trainer, _, _, acc = tb_run
    assert sorted(p.name for p in trainer.log_dir.iterdir() if p.is_dir()) == [
        "train",
        "validation",
    ]
    assert not list(trainer.log_dir.glob("events.out.tfevents.*"))  # only inside the two runs
    train_tags, val_tags = set(acc.Tags()["scalars"]), set(tb_val.Tags()["scalars"])
    assert val_tags == {"epoch_loss", "epoch_accuracy"}  # one chart each with the train curve
    assert val_tags < train_tags
    assert {"batch_loss", "epoch_learning_rate"} < train_tags  # per step and per epoch apart
    assert not [t for t in train_tags | val_tags if t.startswith("val_") or t.startswith("step/")]


def test_tensorboard_histograms_of_every_weight_and_gradient(tmp_path):
    logger = TensorBoardLogger(tmp_path, histogram_budget=None)  # every epoch, whatever it costs
    model, trainer, _ = _fit(tmp_path, logger=logger)
    acc = _events(trainer.log_dir)
    tags = set(acc.Tags()["histograms"])
    for name, p in model.named_parameters():
        for kind in ("weights", "gradients"):
            tag = f"{kind}/{name}"
            assert tag in tags
            events = acc.Histograms(tag)
            assert [e.step for e in events] == list(range(EPOCHS))
            assert events[-1].histogram_value.num == p.numel()
    last = acc.Histograms(f"weights/{next(iter(dict(model.named_parameters())))}")[-1]
    weight = next(iter(model.parameters())).detach()
    assert last.histogram_value.min == pytest.approx(float(weight.min()), rel=1e-5)
    assert last.histogram_value.max == pytest.approx(float(weight.max()), rel=1e-5)


class _TickingClock:
    """A clock that advances 1 ms per reading: histograms 'cost' 1 ms and epochs seem instant."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        self.now += 0.001
        return self.now


def test_default_histograms_keep_to_their_time_budget_first_and_last_epoch_always(
    tmp_path, monkeypatch
):
    # Epochs far shorter than 1000x the histograms' cost: the default budget (0.1% of the time)
    # skips the epochs in between, never the first or the last.
    monkeypatch.setattr(budget, "time", _TickingClock())
    model, trainer, _ = _fit(tmp_path, epochs=6)
    acc = _events(trainer.log_dir)
    for name in dict(model.named_parameters()):
        for kind in ("weights", "gradients"):
            assert [e.step for e in acc.Histograms(f"{kind}/{name}")] == [0, 5]


def test_histogram_budget_must_be_a_share_of_time(tmp_path):
    with pytest.raises(
        ValueError, match=r"histogram_budget.*\(0, 1\].*Received: histogram_budget=2"
    ):
        TensorBoardLogger(tmp_path, histogram_budget=2)


def test_tensorboard_graph_holds_the_model_ops(tb_run):
    _, _, _, _, acc = tb_run
    ops = {node.op for node in acc.Graph().node}
    assert "aten::linear" in ops
    assert "aten::relu" in ops


def test_tensorboard_hparams_and_final_metrics(tb_run):
    _, _, history, _, acc = tb_run
    content = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hparams = start.session_start_info.hparams
    assert hparams["optimizer"].string_value == "sgd"
    assert hparams["loss"].string_value == "cross_entropy"
    assert hparams["lr"].number_value == pytest.approx(0.1)
    assert hparams["seed"].number_value == 0
    assert hparams["max_epochs"].number_value == EPOCHS
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
    metric_tags = {m.name.tag for m in experiment.experiment.metric_infos}
    assert {"hparam/loss", "hparam/val_loss", "hparam/val_accuracy"} <= metric_tags
    for key in ("loss", "val_loss", "val_accuracy"):
        assert _scalars(acc, f"hparam/{key}")[-1][1] == pytest.approx(history.history[key][-1])


def test_tensorboard_files_live_in_numbered_versions(tmp_path):
    _, first, _ = _fit(tmp_path, epochs=1)
    _, second, _ = _fit(tmp_path, epochs=1)
    assert first.log_dir == tmp_path / "default" / "version_0"
    assert second.log_dir == tmp_path / "default" / "version_1"
    assert list((first.log_dir / "train").glob("events.out.tfevents.*"))
    assert next_version(tmp_path / "default") == 2
    assert (second.log_dir / "history.json").is_file()


def test_log_every_n_steps_sets_the_per_step_frequency(tmp_path):
    _, trainer, _ = _fit(tmp_path, epochs=2, log_every_n_steps=3)
    assert [s for s, _ in _scalars(_events(trainer.log_dir), "batch_loss")] == [3, 6]


def test_histogram_frequency_and_graph_can_be_turned_down(tmp_path):
    logger = TensorBoardLogger(tmp_path, name="quiet", histogram_every_n_epochs=2, log_graph=False)
    model, trainer, _ = _fit(tmp_path, logger=logger, epochs=3)
    acc = _events(trainer.log_dir)
    name = next(iter(dict(model.named_parameters())))
    assert [e.step for e in acc.Histograms(f"weights/{name}")] == [0, 2]
    assert not acc.Tags()["graph"]


def test_histograms_off_with_zero(tmp_path):
    logger = TensorBoardLogger(tmp_path, histogram_every_n_epochs=0)
    _, trainer, _ = _fit(tmp_path, logger=logger, epochs=1)
    assert _events(trainer.log_dir).Tags()["histograms"] == []


def test_csv_logger_rows_match_the_history(tmp_path):
    _, trainer, history = _fit(tmp_path, logger=CSVLogger(tmp_path), log_every_n_steps=2)
    with (trainer.log_dir / "metrics.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    epoch_rows = [r for r in rows if r["loss"]]
    assert [int(r["step"]) for r in epoch_rows] == list(range(EPOCHS))
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "lr"):
        assert [float(r[key]) for r in epoch_rows] == pytest.approx(history.history[key])
    step_rows = [r for r in rows if r["step/loss"]]
    assert [int(r["step"]) for r in step_rows] == list(range(2, EPOCHS * N // BATCH + 1, 2))
    with (trainer.log_dir / "hparams.csv").open(newline="") as f:
        hparams = {row["name"]: row["value"] for row in csv.DictReader(f)}
    assert hparams["optimizer"] == "sgd"
    assert float(hparams["lr"]) == 0.1


def test_several_loggers_share_one_run(tmp_path):
    tb, csv_logger = TensorBoardLogger(tmp_path, name="both"), CSVLogger(tmp_path, name="both")
    _, trainer, _ = _fit(tmp_path, logger=[tb, csv_logger], epochs=1)
    assert trainer.log_dir == tb.log_dir
    assert csv_logger.log_dir == tb.log_dir == tmp_path / "both" / "version_0"
    assert (tb.log_dir / "metrics.csv").is_file()
    assert list((tb.log_dir / "train").glob("events.out.tfevents.*"))


def test_logger_false_writes_no_event_files(tmp_path):
    _, trainer, history = _fit(tmp_path, logger=False, epochs=1)
    assert trainer.loggers == []
    assert len(history.history["loss"]) == 1
    assert not list(tmp_path.rglob("events.out.tfevents.*"))


def test_a_logger_of_the_wrong_type_is_refused(tmp_path):
    with pytest.raises(TypeError, match=r"`logger` must be True, False, a Logger .*'tensorboard'"):
        ember.Trainer(logger="tensorboard", default_root_dir=tmp_path)


def test_logger_version_can_be_named(tmp_path):
    assert Logger(tmp_path, name="exp", version="trial-a").log_dir == tmp_path / "exp" / "trial-a"
    assert Logger(tmp_path, name="exp", version=7).log_dir == tmp_path / "exp" / "version_7"


def test_tensorboard_records_use_the_c_crc32c_with_identical_checksums(tmp_path):
    import os

    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c
    from tensorboard.summary.writer import record_writer

    TensorBoardLogger(tmp_path).start()
    assert record_writer.masked_crc32c is not masked_crc32c
    for n in (0, 1, 7, 100, 4097):
        data = os.urandom(n)
        assert record_writer.masked_crc32c(data) == masked_crc32c(data)


class _ReadsEvents(ember.Callback):
    """Reads the run's scalars from disk at the start of every epoch, while fit runs."""

    def __init__(self):
        self.seen = []

    def on_train_epoch_start(self, trainer, module):
        acc = _events(trainer.log_dir)
        self.seen.append(
            [s for s, _ in _scalars(acc, "epoch_loss")]
            if (trainer.log_dir / "train").is_dir() and "epoch_loss" in acc.Tags()["scalars"]
            else []
        )


def test_flush_secs_zero_puts_each_epoch_on_disk_before_the_next(tmp_path):
    reader = _ReadsEvents()
    logger = TensorBoardLogger(tmp_path, flush_secs=0)
    _fit(tmp_path, logger=logger, callbacks=[reader])
    assert reader.seen == [[], [0], [0, 1]]


def test_scalars_wait_for_flush_secs_and_fit_ends_with_all_written(tmp_path):
    reader = _ReadsEvents()
    logger = TensorBoardLogger(tmp_path, flush_secs=3600)
    _, _, history = _fit(tmp_path, logger=logger, callbacks=[reader])
    assert reader.seen == [[], [], []]  # kept in memory while fit runs: one write an hour
    steps, values = zip(*_scalars(_events(logger.log_dir), "epoch_loss"))
    assert steps == (0, 1, 2)
    assert values == pytest.approx(history.history["loss"])


class _FailsAtEpoch(ember.Callback):
    def __init__(self, epoch):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, module):
        if trainer.current_epoch == self.epoch:
            raise RuntimeError("boom")


def test_scalars_kept_for_flush_secs_are_written_when_fit_fails(tmp_path):
    logger = TensorBoardLogger(tmp_path, flush_secs=3600)
    with pytest.raises(ember.train.CallbackError, match="boom"):
        _fit(tmp_path, logger=logger, callbacks=[_FailsAtEpoch(2)])
    assert [step for step, _ in _scalars(_events(logger.log_dir), "epoch_loss")] == [0, 1]


@pytest.mark.parametrize("value", [-1, "2"])
def test_flush_secs_must_be_seconds(tmp_path, value):
    with pytest.raises(ValueError, match=rf"Received: flush_secs={value!r}"):
        TensorBoardLogger(tmp_path, flush_secs=value)


def test_a_later_fit_of_the_same_model_reuses_its_traced_graph(tmp_path, monkeypatch):
    from ember.train.model_graph import model_graph

    traces = []
    trace = torch.jit.trace

    def counted(*args, **kwargs):
        traces.append(kwargs)
        return trace(*args, **kwargs)

    monkeypatch.setattr(torch.jit, "trace", counted)
    model = _model()
    train, val = _loaders()
    graphs = []
    for _ in range(2):
        trainer = ember.Trainer(
            max_epochs=1,
            default_root_dir=tmp_path,
            seed=0,
            enable_progress_bar=False,
            enable_checkpointing=False,
            enable_report=False,
        )
        trainer.fit(model, train, val)
        graphs.append(_events(trainer.log_dir).Graph())
    assert len(traces) == 1 and traces[0]["check_trace"] is False  # traced once, unchecked
    assert graphs[0] == graphs[1] and "aten::linear" in {n.op for n in graphs[1].node}
    with warnings.catch_warnings():  # the layers' shape checks: harmless in a drawn graph
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        model_graph(model, torch.zeros(2, 4))  # another input shape: traced again
    assert len(traces) == 2


def test_a_model_with_named_inputs_gets_its_graph(tmp_path):
    # Dict batches are the model's named inputs (model(**x)): the graph is traced the same way,
    # and a dict output (as Hugging Face models return) does not stop it.
    class TwoInputs(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.fc = torch.nn.Embedding(20, 4), torch.nn.Linear(4, 2)

        def forward(self, ids, mask):
            return {"logits": self.fc((self.emb(ids) * mask.unsqueeze(-1)).mean(1))}

    ids, mask = torch.randint(0, 20, (16, 5)), torch.ones(16, 5)
    batches = [({"ids": ids, "mask": mask}, torch.randint(0, 2, (16,)))]
    trainer = ember.Trainer(
        max_epochs=1, default_root_dir=tmp_path, enable_progress_bar=False, enable_report=False
    )
    trainer.fit(ember.compile(TwoInputs(), "adam", "cross_entropy"), batches)
    ops = {n.op for n in _events(trainer.log_dir).Graph().node}
    assert {"aten::embedding", "aten::linear"} <= ops
