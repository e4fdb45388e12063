"""ember.data.checks: wrong labels fail with the problem and the fix, not torch's internals."""

import numpy as np
import pytest

import ember
from ember import layers


def _model(outputs=3):
    model = ember.Sequential([layers.Dense(8, activation="relu"), layers.Dense(outputs)])
    model.compile("adam", "cross_entropy", ["accuracy"])
    return model


def test_a_label_larger_than_the_output_names_both_and_the_fix(blobs, quiet):
    x, y = blobs
    with pytest.raises(ValueError, match=r"label is 8.*3 outputs.*0\.\.2.*Dense\(9\)"):
        _model().fit(x, np.where(y == 2, 8, y), **quiet)


def test_a_negative_label_is_out_of_range_too(blobs, quiet):
    x, y = blobs
    with pytest.raises(ValueError, match=r"label is -1.*0\.\.2"):
        _model().fit(x, y - 1, **quiet)


def test_float_labels_for_a_classification_loss_say_astype_int64(blobs, quiet):
    x, y = blobs
    with pytest.raises(ValueError, match=r"float32.*astype\('int64'\).*mse"):
        _model().fit(x, y.astype(np.float32), **quiet)


def test_column_labels_say_reshape(blobs, quiet):
    x, y = blobs
    with pytest.raises(ValueError, match=r"shape \(\d+, 1\).*reshape\(-1\)"):
        _model().fit(x, y[:, None], **quiet)


def test_evaluate_explains_wrong_labels_too(blobs):
    x, y = blobs
    model = _model()
    with pytest.raises(ValueError, match=r"label is \d.*3 outputs.*0\.\.2"):
        model.evaluate(x, y + 5)
