"""quiet_toolchains hides the exporters' known chatter during an export and restores everything."""

import logging
import warnings

import pytest

from ember.export.quiet import quiet_toolchains

REGISTRATION = "torch.onnx._internal.exporter._registration"


def test_known_chatter_is_hidden_and_other_messages_pass(caplog):
    caplog.set_level(logging.INFO)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with quiet_toolchains():
            _chatter()
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["a real problem", "a real failure"]
    assert [str(w.message) for w in seen] == ["something else"]


def _chatter():
    logging.getLogger(REGISTRATION).warning("torchvision is not installed. Skipping x")
    logging.getLogger("torchao.kernel.intmm").warning("Detected no triton")
    logging.warning("Axis 1 is out-of-range for weight 'w' with rank 1")
    logging.warning("a real problem")
    logging.getLogger(REGISTRATION).error("a real failure")
    warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated", FutureWarning, stacklevel=1)
    warnings.warn("_check_is_size will be removed in a future release", FutureWarning, stacklevel=1)
    warnings.warn("something else", FutureWarning, stacklevel=1)


def test_exporting_an_lstm_to_onnx_shows_no_torch_deprecation(tmp_path):
    # torch.onnx printed five "_check_is_size will be removed" FutureWarnings for an nn.LSTM
    import torch

    import ember

    class Tagger(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed, self.lstm = torch.nn.Embedding(50, 8), torch.nn.LSTM(8, 8, batch_first=True)
            self.head = torch.nn.Linear(8, 2)

        def forward(self, ids):
            return self.head(self.lstm(self.embed(ids))[0][:, -1])

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        path = ember.save(
            Tagger().eval(), tmp_path / "p", example_input=torch.randint(0, 50, (4, 6))
        )
        ember.export(path, ["onnx"])
    assert not [str(w.message)[:80] for w in seen if "_check_is_size" in str(w.message)
                or "_flat_weights" in str(w.message)]  # fmt: skip


def test_levels_and_filters_are_restored_and_verbose_hides_nothing(caplog):
    logging.getLogger(REGISTRATION).setLevel(logging.NOTSET)
    with pytest.raises(RuntimeError), quiet_toolchains():
        raise RuntimeError("an export failure propagates")
    assert logging.getLogger(REGISTRATION).level == logging.NOTSET
    assert not logging.getLogger().filters
    caplog.set_level(logging.INFO)
    with quiet_toolchains(verbose=True):
        logging.getLogger(REGISTRATION).warning("shown")
    assert [r.getMessage() for r in caplog.records] == ["shown"]
