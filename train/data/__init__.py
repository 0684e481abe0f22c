"""The torch side of the data: PK sampler, torch Dataset, transforms (their own modules).

The data set readers and the synthetic generator are ``edgereid.data``; their names are
re-exported here for code written against ``edgereid.train.data``.
"""

from edgereid.data import (
    DatasetLayoutError,
    Record,
    ReIDDataset,
    build_dataset,
    list_datasets,
    register_dataset,
)

__all__ = [
    "DatasetLayoutError",
    "Record",
    "ReIDDataset",
    "build_dataset",
    "list_datasets",
    "register_dataset",
]
