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
    warnings.warn("something else", FutureWarning, stacklevel=1)


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
