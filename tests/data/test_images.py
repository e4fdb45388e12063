"""ember.data.images: image_dataset_from_directory as Keras users know it."""

import numpy as np
import pytest
import torch

import ember
from ember import layers
from ember.data import image_dataset_from_directory

Image = pytest.importorskip("PIL.Image")


def _folder(root, per_class=6):
    rng = np.random.default_rng(0)
    for name, value in [("dark", 40), ("light", 210)]:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.full((12, 10, 3), value, np.uint8) + rng.integers(
                0, 20, (12, 10, 3), np.uint8
            )
            Image.fromarray(pixels).save(root / name / f"{i}.{'png' if i % 2 else 'jpg'}")
    (root / "dark" / "notes.txt").write_text("not an image")
    return root


def test_classes_come_from_sub_folders_and_images_are_resized_chw_in_0_1(tmp_path):
    ds = image_dataset_from_directory(_folder(tmp_path / "img"), image_size=(8, 16))
    assert ds.class_names == ["dark", "light"] and len(ds) == 12
    image, label = ds[0]
    assert image.shape == (3, 8, 16) and image.dtype == torch.float32
    assert 0.0 <= image.min() and image.max() <= 1.0
    assert sorted(ds.labels) == [0] * 6 + [1] * 6
    assert ds.preprocessing["image_size"] == [8, 16]


def test_validation_split_and_grayscale(tmp_path):
    train, val = image_dataset_from_directory(
        _folder(tmp_path / "img"), image_size=(8, 8), color_mode="grayscale", validation_split=0.25
    )
    assert (len(train), len(val)) == (9, 3)
    assert not set(train.files) & set(val.files)
    assert train[0][0].shape == (1, 8, 8)


def test_missing_or_empty_folders_say_what_is_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match="No folder"):
        image_dataset_from_directory(tmp_path / "nope")
    (tmp_path / "flat").mkdir()
    with pytest.raises(ValueError, match="no sub-folders.*cat/1.png"):
        image_dataset_from_directory(tmp_path / "flat")
    with pytest.raises(ValueError, match="Unknown color_mode 'cmyk'"):
        image_dataset_from_directory(tmp_path / "flat", color_mode="cmyk")


def test_an_unreadable_image_is_named(tmp_path):
    root = _folder(tmp_path / "img")
    (root / "dark" / "broken.png").write_bytes(b"not a png")
    ds = image_dataset_from_directory(root, image_size=(8, 8))
    broken = ds.files.index(root / "dark" / "broken.png")
    with pytest.raises(ValueError, match="Cannot read the image .*broken.png"):
        ds[broken]


def test_a_model_learns_the_folders(tmp_path, quiet):
    train, val = image_dataset_from_directory(
        _folder(tmp_path / "img", per_class=10), image_size=(8, 8), validation_split=0.2
    )
    torch.manual_seed(0)
    model = ember.Sequential([layers.Flatten(), layers.Dense(2)])
    model.compile("adam", "cross_entropy", ["accuracy"], lr=0.01)
    history = model.fit(train, validation_data=val, epochs=10, batch_size=4, **quiet)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert set(model.evaluate(val)) == {"loss", "accuracy"}
