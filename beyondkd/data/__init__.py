"""Datasets and loaders (see :mod:`beyondkd.data.registry` and :mod:`beyondkd.data.loaders`)."""

from beyondkd._discovery import import_submodules
from beyondkd.data.base import Batch, DatasetInfo, Splits, TensorImages
from beyondkd.data.loaders import Augment, DatasetLoader, TensorLoader, epoch_permutation
from beyondkd.data.registry import build_splits, dataset_names, get_dataset_spec, register_dataset

import_submodules(__name__)

__all__ = [
    "Augment",
    "Batch",
    "DatasetInfo",
    "DatasetLoader",
    "Splits",
    "TensorImages",
    "TensorLoader",
    "build_splits",
    "dataset_names",
    "epoch_permutation",
    "get_dataset_spec",
    "register_dataset",
]
