"""Raw-pixel nearest-neighbour ReID baseline: what a model must beat to have learned anything.

Every image goes through exactly the preprocessing the model and the runtime use
(``edgereid.runtime.preprocess``: bilinear resize of the whole crop to the model's input size,
RGB, /255, ImageNet mean/std), is flattened and L2-normalised; queries are ranked against the
gallery by Euclidean distance (= cosine on these vectors) and scored with the standard Market-1501
protocol (``edgereid.runtime.metrics``). No learning, numpy + Pillow only.

On data where the same person looks nearly the same in every camera (consecutive frames, one
background) this baseline is strong; a trained model that does not beat it has not learned the
task. The gallery is read in blocks, so memory holds the query vectors, one gallery block and the
query x gallery distance matrix, never the whole gallery's pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class PixelConfig:
    """size: (height, width) every image is resized to (the model's input size; default the demo's
    128x64). block: gallery images turned into vectors and compared at a time (memory bound)."""

    size: tuple[int, int] = (128, 64)
    block: int = 512

    def validate(self) -> None:
        h, w = self.size
        if not (8 <= h <= 1024 and 4 <= w <= 1024):
            raise ValueError(f"PixelConfig.size = {self.size!r}: expected (height, width) with 8 <= height <= 1024 "
                             "and 4 <= width <= 1024")
        if self.block < 1:
            raise ValueError(f"PixelConfig.block = {self.block}: expected >= 1")

    @property
    def dim(self) -> int:
        return 3 * self.size[0] * self.size[1]


def _preprocessor(cfg: PixelConfig):
    from edgereid.runtime.bundle import InputSpec
    from edgereid.runtime.preprocess import Preprocessor

    return Preprocessor(InputSpec(height=cfg.size[0], width=cfg.size[1]))


def features(paths: Sequence[str], cfg: PixelConfig) -> np.ndarray:
    """(N, 3*H*W) float32: the model's input tensor of each image, flattened and L2-normalised."""
    from edgereid.runtime.preprocess import ImageError

    prep = _preprocessor(cfg)
    out = np.zeros((len(paths), cfg.dim), dtype=np.float32)
    for i, p in enumerate(paths):
        try:
            out[i] = prep(p).ravel()
        except ImageError as exc:
            raise ValueError(f"pixel baseline: cannot use image {exc}") from None
    out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    return out


def distmat(query_paths: Sequence[str], gallery_paths: Sequence[str], cfg: PixelConfig) -> np.ndarray:
    """Squared Euclidean distances (Q, G) float32 between normalised pixel vectors, gallery in blocks."""
    qf = features(query_paths, cfg)
    d = np.empty((len(query_paths), len(gallery_paths)), dtype=np.float32)
    for start in range(0, len(gallery_paths), cfg.block):
        gf = features(gallery_paths[start:start + cfg.block], cfg)
        # unit vectors: |q - g|^2 = 2 - 2 q.g
        d[:, start:start + len(gf)] = np.maximum(2.0 - 2.0 * (qf @ gf.T), 0.0)
    return d


def run_pixel_baseline(dataset_name: str, root: str | Path, cfg: PixelConfig | None = None) -> dict:
    """Evaluate the baseline on ``build_dataset(dataset_name, root)``: rank1/5/10, mAP, mINP, sizes, config."""
    from .baseline_protocol import score_baseline

    cfg = cfg or PixelConfig()
    cfg.validate()
    return score_baseline("raw_pixels", dataset_name, root, cfg, lambda q, g: distmat(q, g, cfg))
