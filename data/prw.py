"""PRW (Person Re-identification in the Wild, Zheng et al. 2017) as a crop-level ReID set.

PRW is a person-search set: whole frames plus boxes. This loader crops every person box out of
the frames once into a cache folder and then serves the crops like any ReID set:

- train: labelled boxes of the frames in ``frame_train.mat`` (unlabelled, id -2, dropped);
- query: the boxes of ``query_info.txt`` (``pid x y w h frame`` per line);
- gallery: every box of the frames in ``frame_test.mat``; unlabelled people (id -2) become
  distractors (pid 0), as in Market.

Annotations are MATLAB files, read with ``scipy.io.loadmat`` (imported only here, lazily:
scipy comes with the calibration extra via nncf). The cache holds ``index.json`` (written
last) so later loads do not touch the .mat files or the frames again.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
from PIL import Image

from .atomic import write_json_atomic
from .datasets import (
    DatasetLayoutError,
    Record,
    ReIDDataset,
    apply_rules,
    find_root,
    register_dataset,
    require_records,
)

CACHE_VERSION = 1

PRW_LAYOUT = """  ROOT/                      (or ROOT/PRW-v16.04.20)
    frames/                  c1s1_000151.jpg ...            (cCAMERAsSEQ_FRAME, camera 1-based)
    annotations/             c1s1_000151.jpg.mat ...        (box_new | anno_file | anno_previous: N x [id, x, y, w, h])
    frame_train.mat          img_index_train: frame names (no extension)
    frame_test.mat           img_index_test
    query_info.txt           lines "pid x y w h frame_name\""""


def _loadmat(path: Path) -> dict:
    try:
        from scipy.io import loadmat
    except ImportError:
        raise ImportError("reading PRW's .mat annotations needs scipy: pip install scipy "
                          "(edgereid[calibration] brings it through nncf)") from None
    try:
        return loadmat(str(path))
    except Exception as exc:  # scipy raises several types for corrupt files
        raise DatasetLayoutError(f"prw: cannot read {path} as a MATLAB file: {exc}") from None


def _strings(value: object) -> list[str]:
    """Flatten a loadmat cell array / char array of names into a list of str."""
    arr = np.asarray(value)
    if arr.dtype.kind == "U":
        return [str(s).strip() for s in arr.ravel()]
    out: list[str] = []
    for item in arr.ravel():
        out += [item] if isinstance(item, str) else _strings(item)
    return out


def _camera(frame: str) -> int:
    m = re.match(r"c(\d+)s(\d+)_(\d+)", frame)
    if not m:
        raise DatasetLayoutError(f"prw: frame name {frame!r} does not follow cCAMERAsSEQ_FRAME")
    return int(m.group(1)) - 1


def _boxes(anno_path: Path) -> np.ndarray:
    mat = _loadmat(anno_path)
    for key in ("box_new", "anno_file", "anno_previous"):
        if key in mat:
            arr = np.atleast_2d(np.asarray(mat[key], dtype=np.float64))
            if arr.size == 0:
                return np.zeros((0, 5))
            if arr.shape[1] != 5:
                raise DatasetLayoutError(f"prw: {anno_path}[{key}] has shape {arr.shape}, expected N x 5 (id, x, y, w, h)")
            return arr
    raise DatasetLayoutError(f"prw: {anno_path} has none of box_new, anno_file, anno_previous")


class _Cropper:
    """Crops boxes out of frames (each frame opened once per call) into the cache folder."""

    def __init__(self, base: Path, cache: Path) -> None:
        self.base, self.cache = base, cache

    def crop(self, frame: str, boxes: list[tuple[int, float, float, float, float]], subset: str) -> list[tuple[str, int, int]]:
        path = self.base / "frames" / f"{frame}.jpg"
        if not path.is_file():
            raise DatasetLayoutError(f"prw: frame {path} is missing (listed in the split or query file)")
        cam = _camera(frame)
        out = []
        with Image.open(path) as im:
            im = im.convert("RGB")
            for k, (pid, x, y, w, h) in enumerate(boxes):
                x0, y0 = max(0, int(round(x))), max(0, int(round(y)))
                x1, y1 = min(im.width, int(round(x + w))), min(im.height, int(round(y + h)))
                if x1 - x0 < 2 or y1 - y0 < 2:
                    continue
                head = "-1" if pid < 0 else f"{pid:04d}"
                rel = f"{subset}/{head}_{frame}_{k:02d}.jpg"
                im.crop((x0, y0, x1, y1)).save(self.cache / rel, quality=95)
                out.append((rel, pid, cam))
        return out


def _build_cache(base: Path, cache: Path) -> dict[str, list]:
    for sub in ("train", "query", "gallery"):
        (cache / sub).mkdir(parents=True, exist_ok=True)
    cropper = _Cropper(base, cache)
    train_frames = _strings(_loadmat(base / "frame_train.mat").get("img_index_train", []))
    test_frames = _strings(_loadmat(base / "frame_test.mat").get("img_index_test", []))
    if not train_frames or not test_frames:
        raise DatasetLayoutError(f"prw: frame_train.mat needs img_index_train and frame_test.mat img_index_test "
                                 f"(got {len(train_frames)} and {len(test_frames)} frames)")
    index: dict[str, list] = {"train": [], "query": [], "gallery": []}
    for subset, frames in (("train", train_frames), ("gallery", test_frames)):
        for frame in frames:
            frame = frame[:-4] if frame.endswith(".jpg") else frame
            anno = base / "annotations" / f"{frame}.jpg.mat"
            if not anno.is_file():
                raise DatasetLayoutError(f"prw: annotation {anno} is missing\nexpected layout:\n{PRW_LAYOUT}")
            boxes = []
            for pid, x, y, w, h in _boxes(anno):
                pid = int(pid)
                if pid == -2:
                    if subset == "train":
                        continue  # unlabelled people cannot supervise training
                    pid = 0  # unlabelled in the test frames: a distractor
                boxes.append((pid, x, y, w, h))
            index[subset] += cropper.crop(frame, boxes, subset)
    by_frame: dict[str, list[tuple[int, float, float, float, float]]] = {}
    for n, line in enumerate((base / "query_info.txt").read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            pid, x, y, w, h, frame = int(parts[0]), *map(float, parts[1:5]), parts[5]
        except (ValueError, IndexError):
            raise DatasetLayoutError(f"prw: {base / 'query_info.txt'} line {n} is {line!r}; expected 'pid x y w h frame'") from None
        by_frame.setdefault(frame.removesuffix(".jpg"), []).append((pid, x, y, w, h))
    for frame, boxes in by_frame.items():
        index["query"] += cropper.crop(frame, boxes, "query")
    write_json_atomic(cache / "index.json", {"version": CACHE_VERSION, "source": str(base), **index}, indent=None)
    return index


@register_dataset("prw")
def prw(root: Path, cache_dir: str | Path | None = None) -> ReIDDataset:
    """PRW: crops cached in ``cache_dir`` (default ``ROOT/edgereid_crops``; pass another folder
    when the data set is read-only). Delete the cache folder to re-crop."""
    required = ("frames", "annotations", "frame_train.mat", "frame_test.mat", "query_info.txt")
    base = find_root(root, "prw", required, ("PRW-v16.04.20", "PRW"), PRW_LAYOUT)
    cache = Path(cache_dir) if cache_dir is not None else base / "edgereid_crops"
    index = None
    try:
        loaded = json.loads((cache / "index.json").read_text())
        if loaded.get("version") == CACHE_VERSION and loaded.get("source") == str(base):
            index = loaded
    except (OSError, ValueError):
        pass
    if index is None:
        index = _build_cache(base, cache)
    parts: dict[str, list[Record]] = {}
    for subset in ("train", "query", "gallery"):
        recs = [(str(cache / rel), int(pid), int(cam)) for rel, pid, cam in index[subset]]
        parts[subset] = apply_rules(recs, subset)
        require_records(parts[subset], "prw", f"{cache / subset} (crops of {subset})")
    return ReIDDataset("prw", str(base), parts["train"], parts["query"], parts["gallery"],
                       notes=[f"person crops cached in {cache}"])
