"""History's JSON (history.json) stays equal to its state after every append and reload."""

import json

import pytest

from ember.train.history import History


def test_json_matches_state_after_each_epoch_with_a_late_key_and_a_reload():
    history = History()
    for epoch in range(4):
        logs = {"loss": 1.0 / (epoch + 1)}
        if epoch >= 2:
            logs["val_loss"] = 0.5 * epoch  # first seen late: padded with None before
        history.append(epoch, logs, {"norms": {"w": float(epoch)}, "epoch_time": 0.01})
        assert json.loads(history.to_json()) == history.state_dict()
    assert history.history["val_loss"][:2] == [None, None]
    reloaded = History()
    reloaded.load_state_dict({"history": {"loss": [3.0]}, "epochs": [0], "epoch_info": [{}]})
    reloaded.to_json()
    reloaded.load_state_dict(history.state_dict())
    assert json.loads(reloaded.to_json()) == history.state_dict()


def test_write_is_atomic_and_readable(tmp_path):
    history = History()
    history.append(0, {"loss": 2.0})
    history.write(tmp_path / "history.json")
    assert json.loads((tmp_path / "history.json").read_text())["history"] == {"loss": [2.0]}
    assert not (tmp_path / "history.json.tmp").exists()


def test_history_plot_draws_each_metric_with_its_validation_curve():
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    from ember.train.history import History

    h = History()
    for e in range(3):
        h.append(e, {"loss": 1.0 / (e + 1), "accuracy": 0.5 + e / 10, "val_loss": 1.2 / (e + 1),
                     "val_accuracy": 0.4 + e / 10, "lr": 0.1})  # fmt: skip
    axes = h.plot()
    assert [ax.get_title() for ax in axes] == ["loss", "accuracy"]
    lines = {line.get_label(): list(line.get_ydata()) for line in axes[0].lines}
    assert lines == {"loss": h.history["loss"], "val_loss": h.history["val_loss"]}
    assert list(axes[0].lines[0].get_xdata()) == [1, 2, 3]
    with pytest.raises(ValueError, match="unknown metrics \\['f1'\\]"):
        h.plot(["f1"])


def test_history_plot_without_matplotlib_says_how_to_install_it(monkeypatch):
    import sys

    from ember.train.history import History

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match="pip install matplotlib"):
        History().plot()
