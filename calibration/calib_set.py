"""The calibration set: images drawn from the TRAIN split only, stratified over identities and cameras.

Why the train split: calibrating on query or gallery images would leak the evaluation data into
the quantisation ranges and flatter the int8 accuracy reported in the bundle. Nothing in this
module is given query or gallery records: the entry points take train records (or a data set
object, of which only ``.train`` is read).

Why stratified: int8 ranges come from activation statistics; a handful of identities or one
camera's colour cast would set ranges that clip the rest. The selection walks the identities
round-robin (each identity contributes before any contributes twice), and within an identity
takes different cameras before repeating one. Deterministic for a given seed.
"""

from __future__ import annotations

import hashlib
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from edgereid.data.atomic import write_text_atomic
from edgereid.data.naming import list_images, parse_market_name

Record = tuple[str, int, int]  # (image_path, pid, camid)
# Sub-folders that hold query/gallery images in the supported layouts: never calibration material.
EVALUATION_FOLDERS = frozenset({"query", "gallery", "bounding_box_test", "test", "query_images", "gallery_images"})


@dataclass
class CalibrationConfig:
    """size: images in the set (all train images if fewer); seed: the draw's seed."""

    size: int = 256
    seed: int = 0


@dataclass
class CalibrationSet:
    records: list[Record]
    source: str = "train split"
    seed: int = 0
    requested: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def paths(self) -> list[str]:
        return [r[0] for r in self.records]

    def list_text(self) -> str:
        """One line per image: ``path<TAB>pid<TAB>camid`` (the file stored in the bundle)."""
        return "".join(f"{p}\t{pid}\t{cam}\n" for p, pid, cam in self.records)

    def sha256_list(self) -> str:
        return hashlib.sha256(self.list_text().encode("utf-8")).hexdigest()

    def write_list(self, path: str | Path) -> Path:
        return write_text_atomic(path, self.list_text())

    def summary(self) -> dict[str, Any]:
        return {"images": len(self.records), "requested": self.requested, "source": self.source, "seed": self.seed,
                "identities": len({r[1] for r in self.records}), "cameras": len({r[2] for r in self.records}),
                "sha256_list": self.sha256_list(), **self.extra}


def select_calibration_records(train: Sequence[Record], size: int, seed: int = 0) -> list[Record]:
    """Stratified draw of ``size`` records (see the module docstring); all of them if fewer."""
    if size < 1:
        raise ValueError(f"calibration size must be >= 1, got {size}")
    if not train:
        raise ValueError("the train split is empty: no calibration images to draw from")
    rng = random.Random(seed)
    by_pid: dict[int, dict[int, list[Record]]] = defaultdict(lambda: defaultdict(list))
    for rec in train:
        by_pid[rec[1]][rec[2]].append(rec)
    queues: list[list[Record]] = []
    pids = sorted(by_pid)
    rng.shuffle(pids)
    for pid in pids:
        cams = sorted(by_pid[pid])
        rng.shuffle(cams)
        per_cam = []
        for cam in cams:
            recs = sorted(by_pid[pid][cam])
            rng.shuffle(recs)
            per_cam.append(recs)
        # interleave cameras: c1[0], c2[0], ..., c1[1], c2[1], ...
        order = [recs[i] for i in range(max(map(len, per_cam))) for recs in per_cam if i < len(recs)]
        queues.append(order)
    chosen: list[Record] = []
    depth = 0
    while len(chosen) < size and any(depth < len(q) for q in queues):
        for q in queues:
            if depth < len(q):
                chosen.append(q[depth])
                if len(chosen) == size:
                    break
        depth += 1
    return chosen


def calibration_set_from_dataset(dataset: Any, cfg: CalibrationConfig | None = None) -> CalibrationSet:
    """Draw the set from ``dataset.train`` (query and gallery are never touched)."""
    cfg = cfg or CalibrationConfig()
    records = select_calibration_records(list(dataset.train), cfg.size, cfg.seed)
    return CalibrationSet(records, source="train split", seed=cfg.seed, requested=cfg.size)


def calibration_set_from_records(train: Sequence[Record], cfg: CalibrationConfig | None = None,
                                 source: str = "train split") -> CalibrationSet:
    cfg = cfg or CalibrationConfig()
    return CalibrationSet(select_calibration_records(train, cfg.size, cfg.seed), source=source, seed=cfg.seed,
                          requested=cfg.size)


def scan_train_folder(folder: str | Path) -> list[Record]:
    """Records of a folder of train images: Market-style names give pid/camera (``0002_c1s1_...``),
    other names get their sub-folder as the identity and camera 0."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: calibration image folder not found")
    paths = list_images(folder, recursive=True)
    held_out = sorted({part for p in paths for part in p.relative_to(folder).parts[:-1]
                       if part.lower() in EVALUATION_FOLDERS})
    if held_out:
        raise ValueError(f"{folder}: contains evaluation folders {held_out}; calibration must use train images only: "
                         "pass the train folder (e.g. bounding_box_train) instead")
    if not paths:
        raise FileNotFoundError(f"{folder}: no images found")
    folders: dict[str, int] = {}
    records: list[Record] = []
    for p in paths:
        parsed = parse_market_name(p)
        if parsed:
            pid, cam = parsed
            if pid < 0:
                continue  # junk
        else:
            pid, cam = folders.setdefault(str(p.parent.relative_to(folder)), len(folders)), 0
        records.append((str(p), pid, cam))
    return records


def read_image_list(path: str | Path) -> list[Record]:
    """A list file: one image per line, ``path`` or ``path<whitespace>pid<whitespace>camid``; '#' comments.

    Relative paths are relative to the list file's folder.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: image list not found")
    records: list[Record] = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split("\t") if "\t" in line else line.split()
        if len(parts) not in (1, 3):
            raise ValueError(f"{path}:{n}: expected 'path' or 'path pid camid', got {line!r}")
        img = Path(parts[0])
        img = img if img.is_absolute() else path.parent / img
        try:
            pid, cam = (int(parts[1]), int(parts[2])) if len(parts) == 3 else (n, 0)
        except ValueError:
            raise ValueError(f"{path}:{n}: pid and camid must be integers, got {parts[1:]!r}") from None
        records.append((str(img), pid, cam))
    if not records:
        raise ValueError(f"{path}: the image list is empty")
    return records


def calibration_batches(images: np.ndarray, batch: int | None) -> list[np.ndarray]:
    """Calibration images (N, 3, H, W) as contiguous float32 batches of ``batch`` (1 when None), the
    last partial batch left out (a fixed-batch graph takes whole batches only)."""
    if images.ndim != 4:
        raise ValueError(f"calibration images must be (N, 3, H, W), got shape {images.shape}")
    if len(images) == 0:
        raise ValueError("no calibration images")
    b = batch or 1
    usable = (len(images) // b) * b
    if usable == 0:
        raise ValueError(f"{len(images)} calibration images are fewer than the graph's fixed batch {b}")
    return [np.ascontiguousarray(images[i:i + b], np.float32) for i in range(0, usable, b)]


def load_calibration_images(paths: Sequence[str], input_spec: dict[str, Any]) -> np.ndarray:
    """Images -> the graph input (N, 3, H, W) float32, through the runtime's preprocessing."""
    from edgereid.runtime.bundle import InputSpec
    from edgereid.runtime.preprocess import Preprocessor

    known = {"name", "layout", "dtype", "height", "width", "channel_order", "resize", "scale", "mean", "std", "batch"}
    spec = {k: v for k, v in input_spec.items() if k in known}
    spec["mean"], spec["std"] = tuple(spec.get("mean", InputSpec.mean)), tuple(spec.get("std", InputSpec.std))
    batch = Preprocessor(InputSpec(**spec)).batch(list(paths))
    if batch.errors:
        _, err = batch.errors[0]
        raise ValueError(f"{len(batch.errors)} calibration image(s) could not be read, first: {err}")
    return batch.array


def input_spec_from_onnx(onnx_path: str | Path) -> dict[str, Any]:
    """The input spec the exporter stored in the ONNX metadata (``edgereid.input``)."""
    import json

    import onnx

    proto = onnx.load(str(onnx_path), load_external_data=False)
    for p in proto.metadata_props:
        if p.key == "edgereid.input":
            return json.loads(p.value)
    raise ValueError(f"{onnx_path}: no 'edgereid.input' metadata (not exported by edgereid?); "
                     "give the input size explicitly")
