"""Loaders for the user's data: arrays, generators and iterables, CSV / DataFrame tables, image folders.

Everything here produces what `Model.fit` and the `Trainer` iterate over (DataLoaders, Datasets,
batch streams); nothing imports the training or model code.

Example:
    >>> from ember.data import from_csv, image_dataset_from_directory
    >>> table = from_csv("houses.csv", target="price")
    >>> train, val = image_dataset_from_directory("photos/", image_size=(64, 64), validation_split=0.2)
"""

from ember.data.arrays import (
    InputsDataset,
    as_dataset,
    as_tensor,
    collate_inputs,
    is_batch_iterable,
    make_loader,
    pad_sequences,
    split_dataset,
)
from ember.data.batches import BatchStream, to_tensors
from ember.data.checks import explain_loss_error
from ember.data.digits import load_digits
from ember.data.images import ImageFolderDataset, image_dataset_from_directory
from ember.data.tables import TabularData, from_csv, from_dataframe

__all__ = [
    "BatchStream",
    "ImageFolderDataset",
    "InputsDataset",
    "TabularData",
    "as_dataset",
    "as_tensor",
    "collate_inputs",
    "explain_loss_error",
    "from_csv",
    "from_dataframe",
    "image_dataset_from_directory",
    "is_batch_iterable",
    "load_digits",
    "make_loader",
    "pad_sequences",
    "split_dataset",
    "to_tensors",
]
