"""History's JSON (history.json) stays equal to its state after every append and reload."""

import json

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
