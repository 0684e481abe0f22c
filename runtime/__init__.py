"""edgereid.runtime: torch-free re-identification on the device, as a library (``reid-runtime`` is a thin CLI on it).

::

    from edgereid.runtime import Embedder, GalleryStore, Matcher, MatchConfig

    with Embedder("bundle") as embedder, GalleryStore.open("store.bin", "a", spec=embedder.spec) as store:
        for m in Matcher(embedder, store, MatchConfig(enroll_unknown=True)).match_images(["crop.jpg"]):
            print(m.identity, m.decision, m.distance)

``docs/python.md`` walks through it. The names below are imported on first use, so importing the
package stays cheap (``reid-runtime --help`` loads only what it needs) and no optional backend
library is imported until a backend of it is opened.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# name -> the module (of edgereid.runtime) that defines it
_EXPORTS: dict[str, str] = {
    # a model bundle: load and verify it
    "Bundle": "bundle", "BundleError": "bundle", "load_bundle": "bundle",
    # images -> embeddings -> gallery codes
    "Embedder": "embedder", "EmbedderConfig": "embedder", "EmbeddedBatch": "embedder",
    "Preprocessor": "preprocess", "ImageError": "preprocess",
    "BACKENDS": "backends", "BackendUnavailable": "backends", "open_backend": "backends",
    "CodecSpec": "codec", "quantize": "codec", "l2_normalize": "codec",
    # the gallery store
    "GalleryStore": "store", "StoreError": "store_format", "SpecMismatchError": "store",
    "StoreLockedError": "store_lock",
    # enrolment and open-set matching
    "LabelledImage": "image_sources", "labelled_images": "image_sources", "enroll_images": "matcher",
    "Matcher": "matcher", "MatchConfig": "matcher", "Match": "matcher",
    # accuracy and speed on this device
    "evaluate_rank": "metrics", "evaluate_all": "metrics", "evaluate_folders": "folder_eval",
    "BenchConfig": "bench", "run_bench": "bench", "latency_stats": "timing",
}

__all__ = [
    "BACKENDS", "BackendUnavailable", "BenchConfig", "Bundle", "BundleError", "CodecSpec", "EmbeddedBatch",
    "Embedder", "EmbedderConfig", "GalleryStore", "ImageError", "LabelledImage", "Match", "MatchConfig",
    "Matcher", "Preprocessor", "SpecMismatchError", "StoreError", "StoreLockedError", "enroll_images",
    "evaluate_all", "evaluate_folders", "evaluate_rank", "l2_normalize", "labelled_images", "latency_stats",
    "load_bundle", "open_backend", "quantize", "run_bench",
]  # the names of _EXPORTS (a test checks both agree)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # for type checkers and editors: the same names, imported eagerly
    from .backends import BACKENDS, BackendUnavailable, open_backend
    from .bench import BenchConfig, run_bench
    from .bundle import Bundle, BundleError, load_bundle
    from .codec import CodecSpec, l2_normalize, quantize
    from .embedder import EmbeddedBatch, Embedder, EmbedderConfig
    from .folder_eval import evaluate_folders
    from .image_sources import LabelledImage, labelled_images
    from .matcher import Match, MatchConfig, Matcher, enroll_images
    from .metrics import evaluate_all, evaluate_rank
    from .preprocess import ImageError, Preprocessor
    from .store import GalleryStore, SpecMismatchError
    from .store_format import StoreError
    from .store_lock import StoreLockedError
    from .timing import latency_stats
