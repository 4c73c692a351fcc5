"""Datasets as uint8 tensors, the standard OSR class splits (stored as data) and device-side augmentation.

Plain PyTorch/numpy: nothing here imports Ray.
"""

from data.pools import (
    CLUSTERING_ONLY,
    DATASETS,
    DataMissingError,
    ImagePool,
    check_available,
    default_data_root,
    load_pool,
)
from data.splitting import (
    Split,
    make_split,
    split_ids,
    to_training_labels,
    transductive_split,
    whole_dataset_split,
)

__all__ = [
    "CLUSTERING_ONLY",
    "DATASETS",
    "DataMissingError",
    "ImagePool",
    "Split",
    "check_available",
    "default_data_root",
    "load_pool",
    "make_split",
    "split_ids",
    "to_training_labels",
    "transductive_split",
    "whole_dataset_split",
]
