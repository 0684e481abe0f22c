"""Colour-histogram ReID baseline: the sanity floor every trained model must clear.

Each image becomes a joint colour histogram (HSV by default) over a few horizontal stripes,
normalised per stripe; queries are ranked against the gallery by Hellinger (default) or
Euclidean distance and scored with the standard Market-1501 protocol
(``edgereid.runtime.metrics``). No learning, numpy + Pillow only.

Why it exists: it measures what clothing colour alone gives. On real cameras (Market-1501) such
hand-made colour features reach an mAP of about 0.2; a model must do far better than that. The
command ``edgereid baseline`` (``baselines.py``) runs it beside the raw-pixel baseline.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from edgereid.data.atomic import write_json_atomic
from PIL import Image

SPACES = ("hsv", "rgb")
DISTANCES = ("hellinger", "euclidean")


@dataclass
class HistogramConfig:
    """space: ``hsv`` or ``rgb``; bins: per channel (H, S, V or R, G, B); stripes: horizontal
    bands (a coarse layout: upper vs lower body); size: (height, width) every image is resized
    to; distance: ``hellinger`` (Euclidean between square-rooted L1 histograms) or ``euclidean``
    (between L2-normalised histograms)."""

    space: str = "hsv"
    bins: tuple[int, int, int] = (8, 4, 4)
    stripes: int = 6
    size: tuple[int, int] = (128, 64)
    distance: str = "hellinger"

    def validate(self) -> None:
        if self.space not in SPACES:
            raise ValueError(f"HistogramConfig.space = {self.space!r}: expected one of {SPACES}")
        if self.distance not in DISTANCES:
            raise ValueError(f"HistogramConfig.distance = {self.distance!r}: expected one of {DISTANCES}")
        if len(self.bins) != 3 or any(not 1 <= int(b) <= 64 for b in self.bins):
            raise ValueError(f"HistogramConfig.bins = {self.bins!r}: expected three integers in 1..64")
        if not 1 <= self.stripes <= self.size[0]:
            raise ValueError(f"HistogramConfig.stripes = {self.stripes}: expected 1..height ({self.size[0]})")

    @property
    def dim(self) -> int:
        return self.stripes * int(np.prod(self.bins))


def histogram(img: Image.Image, cfg: HistogramConfig) -> np.ndarray:
    """The (stripes * prod(bins),) float64 feature of one image, each stripe L1-normalised."""
    h, w = cfg.size
    img = img.convert("RGB").resize((w, h), Image.BILINEAR)  # RGB first: PIL has no L/P -> HSV path
    if cfg.space == "hsv":
        img = img.convert("HSV")
    x = np.asarray(img, dtype=np.int64)
    b = np.asarray(cfg.bins, dtype=np.int64)
    q = (x * b) >> 8  # 0..255 -> 0..bins-1 per channel
    code = (q[..., 0] * b[1] + q[..., 1]) * b[2] + q[..., 2]
    band = (np.arange(h) * cfg.stripes // h)[:, None]
    flat = (band * int(np.prod(b)) + code).ravel()
    hist = np.bincount(flat, minlength=cfg.dim).astype(np.float64).reshape(cfg.stripes, -1)
    hist /= hist.sum(axis=1, keepdims=True)
    return hist.ravel()


def features(paths: Sequence[str], cfg: HistogramConfig) -> np.ndarray:
    """Stacked descriptors, transformed so that Euclidean distance is the configured distance."""
    feats = np.zeros((len(paths), cfg.dim), dtype=np.float64)
    for i, p in enumerate(paths):
        try:
            with Image.open(p) as im:
                feats[i] = histogram(im, cfg)
        except OSError as exc:
            raise OSError(f"histogram baseline: cannot read image {p}: {exc}") from None
    if cfg.distance == "hellinger":
        return np.sqrt(feats)
    return feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)


def euclidean_distmat(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return np.sqrt(np.maximum(d2, 0.0))


def run_baseline(dataset_name: str, root: str | Path, out: str | Path | None = None,
                 cfg: HistogramConfig | None = None) -> dict:
    """Evaluate the baseline on ``build_dataset(dataset_name, root)``; optionally write JSON to ``out``.

    Returns rank1/rank5/rank10/mAP/mINP (fractions in 0..1) plus the data set sizes, the config
    and the run time.
    """
    from .baseline_protocol import score_baseline

    cfg = cfg or HistogramConfig()
    cfg.validate()
    result = score_baseline("colour_histogram", dataset_name, root, cfg,
                            lambda q, g: euclidean_distmat(features(q, cfg), features(g, cfg)))
    if out is not None:
        write_json_atomic(out, result)
    return result


# ----------------------------------------------------------------------------------------------


def parse_bins(text: str) -> tuple[int, int, int]:
    """``8x4x4`` -> (8, 4, 4) for the ``--bins`` flag of ``edgereid baseline`` (train/baselines.py)."""
    try:
        vals = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        vals = ()
    if len(vals) != 3:
        raise argparse.ArgumentTypeError(f"--bins {text!r}: expected three counts like 8x4x4")
    return vals  # type: ignore[return-value]
