"""Data for edgereid, the bottom layer: data set readers behind a registry, the one file-name
parser (``naming``) and the synthetic ReID generator.

Everything here is numpy + Pillow only and imports nothing else of edgereid, so runtime,
calibration and train all read data the same way, and loading and generating data is fast and
testable without the training stack. The torch-side pieces (``sampler``,
``image_dataset``, ``transforms``) live in ``edgereid.train.data``.
"""

from . import prw as _prw  # noqa: F401  (registers the "prw" loader)
from .datasets import (
    DatasetLayoutError,
    Record,
    ReIDDataset,
    build_dataset,
    list_datasets,
    register_dataset,
)
from .naming import IMAGE_SUFFIXES, MarketName, list_images, market_name, parse_market_name


def __getattr__(name: str):
    # the generator is imported on first use, so `python -m edgereid.data.synth` runs cleanly
    if name in ("SynthConfig", "generate", "preview"):
        from . import synth

        return getattr(synth, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "IMAGE_SUFFIXES",
    "DatasetLayoutError",
    "MarketName",
    "Record",
    "ReIDDataset",
    "SynthConfig",
    "build_dataset",
    "generate",
    "list_datasets",
    "list_images",
    "market_name",
    "parse_market_name",
    "preview",
    "register_dataset",
]
