"""Folders of images, one sub-folder per class, like Keras' `image_dataset_from_directory`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["IMAGE_EXTENSIONS", "ImageFolderDataset", "image_dataset_from_directory"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
_MODES = {"rgb": "RGB", "grayscale": "L", "rgba": "RGBA"}
_SUBSETS = ("training", "validation", "both")


class ImageFolderDataset(Dataset):
    """Image files and their class indices; each item is `(image, label)`, read when asked for.

    Args:
        files: the image paths.
        labels: one class index per file.
        class_names: the class names (index i is class i).
        image_size: `(height, width)` every image is resized to.
        color_mode: "rgb", "grayscale" or "rgba".

    Shape:
        image: `(C, H, W)` float32 in [0, 1] (C = 3, 1 or 4); label: an int64 scalar.

    Example:
        >>> ds = image_dataset_from_directory("photos/", image_size=(32, 32))
        >>> image, label = ds[0]
    """

    def __init__(
        self,
        files: Sequence[Path],
        labels: Sequence[int],
        class_names: list[str],
        image_size: tuple[int, int],
        color_mode: str = "rgb",
    ) -> None:
        self.files = list(files)
        self.labels = list(labels)
        self.class_names = list(class_names)
        self.image_size = tuple(image_size)
        self.color_mode = color_mode

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return load_image(self.files[i], self.image_size, self.color_mode), torch.tensor(
            self.labels[i]
        )

    @property
    def preprocessing(self) -> dict:
        """What a client must send, for `model.save(..., preprocessing=ds.preprocessing)`."""
        channels = {"rgb": 3, "grayscale": 1, "rgba": 4}[self.color_mode]
        h, w = self.image_size
        return {
            "kind": "image",
            "input": f"float32 (N, {channels}, {h}, {w}): the image resized to {h}x{w} "
            f"(bilinear), {self.color_mode}, pixel values / 255, channels first (NCHW)",
            "image_size": [h, w],
            "color_mode": self.color_mode,
            "scale": 1 / 255,
        }


def load_image(path: str | os.PathLike, image_size: tuple[int, int], color_mode: str = "rgb"):
    """One image file -> a `(C, H, W)` float32 tensor in [0, 1], resized to `image_size`.

    Example:
        >>> load_image("photos/cat/1.png", (32, 32)).shape
        torch.Size([3, 32, 32])
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = img.convert(_MODES[color_mode])
            img = img.resize((image_size[1], image_size[0]), Image.Resampling.BILINEAR)
            a = np.asarray(img, dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"Cannot read the image {path}: {exc}. Remove or replace it.") from exc
    a = a[:, :, None] if a.ndim == 2 else a
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))  # (H, W, C) -> (C, H, W)


def image_dataset_from_directory(
    directory: str | os.PathLike,
    *,
    image_size: tuple[int, int] = (64, 64),
    color_mode: str = "rgb",
    class_names: list[str] | None = None,
    validation_split: float | None = None,
    subset: str | None = None,
    seed: int = 0,
) -> ImageFolderDataset | tuple[ImageFolderDataset, ImageFolderDataset]:
    """Images in `directory/<class>/*.png|jpg|...` -> a Dataset of `(image, label)`, as in Keras.

    Classes are the sub-folders in alphabetical order (or `class_names`); images are resized
    to `image_size` and scaled to [0, 1], channels first.

    Args:
        directory: the folder holding one sub-folder per class.
        image_size: `(height, width)`.
        color_mode: "rgb", "grayscale" or "rgba".
        class_names: the sub-folders to use, in label order; default all, sorted.
        validation_split: the share of files held out for validation (shuffled with `seed`).
        subset: "training", "validation" or "both" (the default when `validation_split` is set).
        seed: the shuffle's seed.

    Returns:
        An `ImageFolderDataset` (`.class_names`, `.preprocessing`), or `(train, validation)`.

    Example:
        >>> train, val = image_dataset_from_directory("photos/", validation_split=0.2)
        >>> model.fit(train, validation_data=val, epochs=5)
    """
    directory = Path(directory)
    if color_mode not in _MODES:
        raise ValueError(f"Unknown color_mode {color_mode!r}. Choose one of: {', '.join(_MODES)}")
    if not directory.is_dir():
        raise FileNotFoundError(f"No folder at {directory}: pass a folder of class sub-folders.")
    if subset is not None and subset not in _SUBSETS:
        raise ValueError(f"Unknown subset {subset!r}. Choose one of: {', '.join(_SUBSETS)}")
    classes = class_names or sorted(p.name for p in directory.iterdir() if p.is_dir())
    files, labels = _list_images(directory, classes)
    order = np.random.default_rng(seed).permutation(len(files))
    files, labels = [files[i] for i in order], [labels[i] for i in order]

    def dataset(part: slice) -> ImageFolderDataset:
        return ImageFolderDataset(files[part], labels[part], classes, image_size, color_mode)

    if validation_split is None:
        return dataset(slice(None))
    if not 0.0 < validation_split < 1.0:
        raise ValueError(
            f"Received an invalid value for `validation_split`, expected a float in (0, 1). "
            f"Received: validation_split={validation_split!r}"
        )
    n_val = max(1, int(round(len(files) * validation_split)))
    train, val = dataset(slice(0, len(files) - n_val)), dataset(slice(len(files) - n_val, None))
    return {"training": train, "validation": val}.get(subset or "both", (train, val))


def _list_images(directory: Path, classes: list[str]) -> tuple[list[Path], list[int]]:
    if not classes:
        raise ValueError(
            f"{directory} has no sub-folders: put each class's images in its own folder, e.g. "
            f"{directory}/cat/1.png and {directory}/dog/1.png."
        )
    files, labels = [], []
    for label, name in enumerate(classes):
        folder = directory / name
        if not folder.is_dir():
            raise ValueError(f"No class folder {folder}. Found: {sorted(os.listdir(directory))}")
        found = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        files += found
        labels += [label] * len(found)
    if not files:
        raise ValueError(
            f"No images ({', '.join(IMAGE_EXTENSIONS)}) in the class folders of {directory}."
        )
    return files, labels
