"""ember.data.arrays: arrays, several inputs, and the clear errors for common data mistakes."""

import numpy as np
import pytest
import torch

import ember
from ember import layers
from ember.data import InputsDataset, as_tensor, make_loader, pad_sequences


def _mlp():
    model = ember.Sequential([layers.Dense(8, activation="relu"), layers.Dense(3)])
    model.compile("adam", "cross_entropy", ["accuracy"])
    return model


def test_load_digits_still_imports_from_ember_data():
    from ember.data import load_digits

    (x, y), _ = load_digits(images=False)
    assert x.shape[1] == 64 and y.dtype == np.int64


@pytest.mark.parametrize(
    ("path", "loader"),
    [
        ("data.csv", r"from_csv\('data.csv'"),
        ("images/", "image_dataset_from_directory"),
        ("x.bin", "from_csv.*image_dataset"),
    ],
)
def test_a_file_path_passed_to_fit_names_the_loader(path, loader, quiet):
    with pytest.raises(TypeError, match=rf"file path .*{loader}.*ember train"):
        _mlp().fit(path, **quiet)


def test_a_file_path_as_x_with_y_names_the_loaders(blobs, quiet):
    with pytest.raises(TypeError, match="file path"):
        _mlp().fit("data.csv", blobs[1], validation_split=0.2, **quiet)


def test_ragged_rows_say_how_to_pad():
    with pytest.raises(ValueError, match=r"ragged.*\[3, 1\].*pad_sequences"):
        as_tensor([[1, 2, 3], [4]], "x")
    with pytest.raises(ValueError, match="ragged"):
        as_tensor(np.array([np.zeros(3), np.zeros(1)], dtype=object), "x")


def test_pad_sequences_pads_and_cuts_like_keras():
    np.testing.assert_array_equal(pad_sequences([[1, 2, 3], [4]]), [[1, 2, 3], [4, 0, 0]])
    np.testing.assert_array_equal(
        pad_sequences([[1, 2, 3], [4]], maxlen=2, value=-1), [[1, 2], [4, -1]]
    )


def test_text_values_point_to_from_dataframe():
    with pytest.raises(ValueError, match="text or mixed values.*from_dataframe"):
        as_tensor(np.array([["a", 1.0], ["b", 2.0]], dtype=object), "x")


def test_a_numeric_dataframe_trains_like_an_array(blobs, quiet):
    pd = pytest.importorskip("pandas")
    x, y = blobs
    history = _mlp().fit(pd.DataFrame(x), pd.Series(y), epochs=1, **quiet)
    assert len(history.history["loss"]) == 1


class _TwoInputs(ember.Model):
    def __init__(self):
        super().__init__()
        self.image = layers.Dense(4)
        self.meta = layers.Dense(4)
        self.out = layers.Dense(2)

    def forward(self, image, meta):
        return self.out(torch.relu(self.image(image.flatten(1)) + self.meta(meta)))


def _two_inputs_data(n=48):
    rng = np.random.default_rng(0)
    return (
        rng.random((n, 1, 8, 8), dtype=np.float32),
        rng.random((n, 3), dtype=np.float32),
        rng.integers(0, 2, n),
    )


@pytest.mark.parametrize("kind", ["dict", "tuple", "list"])
def test_a_model_with_two_inputs_fits_evaluates_and_predicts(kind, quiet):
    image, meta, y = _two_inputs_data()
    x = {"dict": {"image": image, "meta": meta}, "tuple": (image, meta), "list": [image, meta]}[
        kind
    ]
    model = _TwoInputs()
    model.compile("adam", "cross_entropy", ["accuracy"])
    history = model.fit(x, y, epochs=1, batch_size=16, validation_split=0.25, **quiet)
    assert "val_accuracy" in history.history
    assert set(model.evaluate(x, y)) == {"loss", "accuracy"}
    assert model.predict(x).shape == (48, 2)


def test_inputs_of_different_lengths_are_named():
    image, meta, y = _two_inputs_data()
    with pytest.raises(ValueError, match=r"same number of samples.*len\(x\['meta'\]\)=47"):
        InputsDataset({"image": image, "meta": meta[:-1]}, y)


def test_a_tuple_of_inputs_stays_a_tuple_in_each_batch():
    image, meta, y = _two_inputs_data()
    x, target = next(iter(make_loader((image, meta), y, batch_size=8)))
    assert isinstance(x, tuple) and x[0].shape == (8, 1, 8, 8) and target.shape == (8,)
