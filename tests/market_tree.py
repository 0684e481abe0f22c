"""Write tiny Market-1501-style trees of real JPEGs for tests (identities = distinct colour/pattern)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def person(pid: int, cam: int, seq: int, size=(64, 32)) -> Image.Image:
    rng = np.random.default_rng(pid * 1000 + cam * 10 + seq)
    base = np.random.default_rng(pid).integers(30, 225, size=(2, 3))
    h, w = size
    img = np.empty((h, w, 3), np.float32)
    img[: h // 2] = base[0]
    img[h // 2:] = base[1]
    if pid % 2:
        img[:, ::4] *= 0.5  # a pattern the histogram cannot see but a ViT can
    img += rng.normal(0, 12, img.shape) + cam * 6
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def write_market_tree(root: Path, train_ids=8, test_ids=6, per_cam=2, cams=3, size=(64, 32)) -> Path:
    """bounding_box_train/ (train_ids), query/ + bounding_box_test/ (test_ids), with junk/distractors."""
    for folder in ("bounding_box_train", "query", "bounding_box_test"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for pid in range(1, train_ids + 1):
        for cam in range(1, cams + 1):
            for s in range(per_cam):
                person(pid, cam, s, size).save(root / "bounding_box_train" / f"{pid:04d}_c{cam}s1_{s:06d}_00.jpg")
    for pid in range(100, 100 + test_ids):
        person(pid, 1, 0, size).save(root / "query" / f"{pid:04d}_c1s1_000000_00.jpg")
        for cam in range(2, cams + 1):
            for s in range(per_cam):
                person(pid, cam, s, size).save(root / "bounding_box_test" / f"{pid:04d}_c{cam}s1_{s:06d}_00.jpg")
    person(900, 2, 0, size).save(root / "bounding_box_test" / "0000_c2s1_000001_00.jpg")
    person(901, 3, 0, size).save(root / "bounding_box_test" / "-1_c3s1_000002_00.jpg")
    return root
