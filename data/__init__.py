"""Data for edgereid: data set loaders behind a registry and the synthetic ReID generator.

Everything imported here is numpy + Pillow only (no torch), so loading and generating data is
fast and testable without the training stack. The torch-side pieces (``sampler``,
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


def __getattr__(name: str):
    # the generator is imported on first use, so `python -m edgereid.data.synth` runs cleanly
    if name in ("SynthConfig", "generate", "preview"):
        from . import synth

        return getattr(synth, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DatasetLayoutError",
    "Record",
    "ReIDDataset",
    "SynthConfig",
    "build_dataset",
    "generate",
    "list_datasets",
    "preview",
    "register_dataset",
]
