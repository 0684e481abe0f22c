"""ReID data sets behind a registry: ``build_dataset(name, root)`` -> ``ReIDDataset``.

Every loader returns the same thing: ``train``, ``query`` and ``gallery`` lists of
``(image_path, pid, camid)`` records, with the Market-1501 rules applied uniformly:

- pid ``-1`` (junk) is dropped everywhere;
- pid ``0`` (distractor) is kept in the gallery only (dropped from train and query);
- camera ids are 0-based;
- train pids are relabelled to ``0..N-1`` in sorted order of the original pid (the classifier's
  labels); query/gallery keep their original pids so they can be compared with each other.

A wrong root or layout raises ``DatasetLayoutError`` (a ``FileNotFoundError``) naming what is
missing and showing the expected layout. Loaders accept the data set folder itself or its parent
when the data set sits in its usual sub-folder (e.g. ``root/Market-1501-v15.09.15``).

Registered here: ``market1501`` (also the synthetic set), ``dukemtmc``, ``occluded_duke``,
``msmt17``, ``prai``, ``imagefolder``; ``prw`` lives in ``prw.py``. Add one with
``@register_dataset("name")`` on a function ``(root: Path, **options) -> ReIDDataset``.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .naming import list_images, parse_market_name

Record = tuple[str, int, int]  # (image_path, pid, camid)

_REGISTRY: dict[str, Callable[..., ReIDDataset]] = {}


class DatasetLayoutError(FileNotFoundError):
    """The data set root does not have the layout its loader expects (message says what and how)."""


@dataclass
class ReIDDataset:
    """Train / query / gallery records of one data set (see the module docstring for the rules)."""

    name: str
    root: str
    train: list[Record]
    query: list[Record]
    gallery: list[Record]
    notes: list[str] = field(default_factory=list)

    @property
    def num_train_pids(self) -> int:
        return len({pid for _, pid, _ in self.train})

    @property
    def num_train_cams(self) -> int:
        return len({cam for _, _, cam in self.train})

    @property
    def num_train_imgs(self) -> int:
        return len(self.train)

    def summary(self) -> str:
        """A small table: identities, images and cameras per subset."""

        def row(name: str, recs: list[Record]) -> str:
            pids = {pid for _, pid, _ in recs}
            cams = {cam for _, _, cam in recs}
            return f"  {name:<8}| {len(pids):>7} | {len(recs):>8} | {len(cams):>9}"

        distractors = sum(1 for _, pid, _ in self.gallery if pid == 0)
        lines = [f"dataset {self.name} at {self.root}", "  subset  | # ids   | # images | # cameras",
                 row("train", self.train), row("query", self.query), row("gallery", self.gallery)]
        if distractors:
            lines.append(f"  (gallery includes {distractors} distractor images, pid 0)")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def register_dataset(name: str) -> Callable[[Callable[..., ReIDDataset]], Callable[..., ReIDDataset]]:
    """Decorator: register a loader ``fn(root: Path, **options) -> ReIDDataset`` under ``name``."""

    def deco(fn: Callable[..., ReIDDataset]) -> Callable[..., ReIDDataset]:
        if name in _REGISTRY and _REGISTRY[name] is not fn:
            raise ValueError(f"dataset {name!r} is already registered")
        _REGISTRY[name] = fn
        return fn

    return deco


def list_datasets() -> list[str]:
    return sorted(_REGISTRY)


def build_dataset(name: str, root: str | Path, **options: object) -> ReIDDataset:
    """Load data set ``name`` from ``root``; ``options`` go to the loader (see its docstring)."""
    key = name.lower().replace("-", "_")
    if key not in _REGISTRY:
        raise ValueError(f"unknown dataset {name!r}: expected one of {', '.join(list_datasets())}")
    loader = _REGISTRY[key]
    try:
        inspect.signature(loader).bind(Path(root), **options)
    except TypeError:
        accepted = [p for p in inspect.signature(loader).parameters][1:]
        raise ValueError(f"dataset {name!r} does not take option(s) {sorted(options)}; "
                         f"it accepts: {accepted or 'none'}") from None
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetLayoutError(f"{name}: data root {root} does not exist or is not a folder")
    return loader(root, **options)


# ----------------------------------------------------------------------------------------------
# shared helpers


def find_root(root: Path, name: str, required: Iterable[str], subdirs: Iterable[str], layout: str) -> Path:
    """``root`` or ``root/<one of subdirs>``, whichever holds every ``required`` entry."""
    required = list(required)
    for cand in [root, *(root / s for s in subdirs)]:
        if all((cand / r).exists() for r in required):
            return cand
    missing = next(r for r in required if not (root / r).exists())
    raise DatasetLayoutError(f"{name}: missing {root / missing}\nexpected layout:\n{layout}")


def check_synthetic_complete(root: Path) -> None:
    """A synthetic set whose generation was interrupted has ``.generating`` but no ``.complete``."""
    if (root / ".generating").exists() and not (root / ".complete").exists():
        raise DatasetLayoutError(f"{root} is a half-written synthetic set (.generating present, .complete missing): "
                                 "rerun `edgereid synth` for it")


def relabel(records: list[Record]) -> list[Record]:
    """Map train pids to 0..N-1 in sorted order of the original pid."""
    mapping = {pid: i for i, pid in enumerate(sorted({pid for _, pid, _ in records}))}
    return [(path, mapping[pid], cam) for path, pid, cam in records]


def apply_rules(records: list[Record], subset: str) -> list[Record]:
    """Drop junk (-1) everywhere and distractors (0) outside the gallery; relabel train."""
    keep = [r for r in records if r[1] != -1 and (subset == "gallery" or r[1] != 0)]
    return relabel(keep) if subset == "train" else keep


def require_records(records: list[Record], name: str, where: Path | str) -> None:
    if not records:
        raise DatasetLayoutError(f"{name}: no usable images in {where}")


# ----------------------------------------------------------------------------------------------
# Market-1501 family: bounding_box_train / bounding_box_test / query with pid_cC... file names

MARKET_LAYOUT = """  ROOT/                      (or ROOT/{sub})
    bounding_box_train/      0002_c1s1_000451_03.jpg ...   pid_cCAMERA..., camera 1-based
    bounding_box_test/       0000_c1s1_000151_01.jpg, -1_c1s1_000401_03.jpg (distractor 0, junk -1) ...
    query/                   0001_c1s1_001051_00.jpg ..."""


def parse_market_dir(folder: Path, name: str) -> list[Record]:
    """Records of one Market-style folder (original pids, 0-based cameras, no rules applied)."""
    out: list[Record] = []
    for p in list_images(folder):
        parsed = parse_market_name(p)
        if parsed is None:
            raise DatasetLayoutError(f"{name}: file {p} does not follow the Market naming PID_cCAMERA..., cameras "
                                     "from c1 (e.g. 0002_c1s1_000451_03.jpg or 0005_c2_f0046985.jpg)")
        out.append((str(p), parsed.pid, parsed.camera))
    return out


def load_market_style(root: Path, name: str, subdirs: Iterable[str]) -> ReIDDataset:
    subdirs = list(subdirs)
    layout = MARKET_LAYOUT.format(sub=" or ".join(subdirs) if subdirs else "-")
    base = find_root(root, name, ("bounding_box_train", "bounding_box_test", "query"), subdirs, layout)
    check_synthetic_complete(base)
    parts = {}
    for subset, folder in (("train", "bounding_box_train"), ("query", "query"), ("gallery", "bounding_box_test")):
        recs = apply_rules(parse_market_dir(base / folder, name), subset)
        require_records(recs, name, base / folder)
        parts[subset] = recs
    notes = []
    marker = base / ".complete"
    if marker.exists():
        try:
            cfg = json.loads(marker.read_text()).get("config", {})
            notes.append(f"synthetic set (seed {cfg.get('seed')}, occluded={cfg.get('occluded')}, aerial={cfg.get('aerial')})")
        except (OSError, ValueError):
            pass
    return ReIDDataset(name, str(base), parts["train"], parts["query"], parts["gallery"], notes)


@register_dataset("market1501")
def market1501(root: Path) -> ReIDDataset:
    """Market-1501 (Zheng et al. 2015), and the synthetic set written by ``edgereid synth``."""
    return load_market_style(root, "market1501", ("Market-1501-v15.09.15", "Market-1501", "market1501"))


@register_dataset("dukemtmc")
def dukemtmc(root: Path) -> ReIDDataset:
    """DukeMTMC-reID: Market layout, names like ``0005_c2_f0046985.jpg``."""
    return load_market_style(root, "dukemtmc", ("DukeMTMC-reID", "dukemtmc-reid", "dukemtmc"))


@register_dataset("occluded_duke")
def occluded_duke(root: Path) -> ReIDDataset:
    """Occluded-Duke (Miao et al. 2019): Duke's layout and naming, occluded queries."""
    return load_market_style(root, "occluded_duke", ("Occluded_Duke", "occluded_duke", "Occluded-Duke"))


# ----------------------------------------------------------------------------------------------
# MSMT17

MSMT_LAYOUT = """  ROOT/                      (or ROOT/MSMT17_V1, ROOT/MSMT17_V2)
    train/ | mask_train_v2/  0000/0000_000_01_0303morning_0015_0.jpg ...  (v1 | v2 folder names)
    test/  | mask_test_v2/   0000/0000_000_01_0303morning_0016_0.jpg ...
    list_train.txt           lines "0000/0000_000_01_0303morning_0015_0.jpg 0" (path, pid)
    list_val.txt             (same format, images in the train folder)
    list_query.txt           (paths under the test folder)
    list_gallery.txt"""


def _read_msmt_list(list_path: Path, image_dir: Path, name: str) -> list[Record]:
    out: list[Record] = []
    for n, line in enumerate(list_path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        try:
            rel, pid = parts[0], int(parts[1])
            cam = int(Path(rel).name.split("_")[2]) - 1
        except (IndexError, ValueError):
            raise DatasetLayoutError(f"{name}: {list_path} line {n} is {line!r}; expected "
                                     "'PID_DIR/PID_INDEX_CAMERA_..._.jpg PID'") from None
        if cam < 0:
            raise DatasetLayoutError(f"{name}: {list_path} line {n}: camera field must be 1-based, got {cam + 1}")
        path = image_dir / rel
        if not path.is_file():
            raise DatasetLayoutError(f"{name}: {list_path} line {n} lists {path}, which does not exist")
        out.append((str(path), pid, cam))
    return out


@register_dataset("msmt17")
def msmt17(root: Path, combine_val: bool = False) -> ReIDDataset:
    """MSMT17 v1 (``train/``, ``test/``) or v2 (``mask_train_v2/``, ``mask_test_v2/``).

    Cameras come from the third field of the file name (1-based there). ``combine_val=True``
    adds ``list_val.txt`` to training (off by default, as in published comparisons).
    """
    lists = ("list_train.txt", "list_val.txt", "list_query.txt", "list_gallery.txt")
    subdirs = ("MSMT17_V1", "MSMT17_V2", "MSMT17", "msmt17")
    base = find_root(root, "msmt17", lists, subdirs, MSMT_LAYOUT)
    for train_dir, test_dir in (("train", "test"), ("mask_train_v2", "mask_test_v2")):
        if (base / train_dir).is_dir() and (base / test_dir).is_dir():
            break
    else:
        raise DatasetLayoutError(f"msmt17: {base} has neither train/ + test/ (v1) nor mask_train_v2/ + mask_test_v2/ (v2)"
                                 f"\nexpected layout:\n{MSMT_LAYOUT}")
    train = _read_msmt_list(base / "list_train.txt", base / train_dir, "msmt17")
    if combine_val:
        train += _read_msmt_list(base / "list_val.txt", base / train_dir, "msmt17")
    parts = {
        "train": apply_rules(train, "train"),
        "query": apply_rules(_read_msmt_list(base / "list_query.txt", base / test_dir, "msmt17"), "query"),
        "gallery": apply_rules(_read_msmt_list(base / "list_gallery.txt", base / test_dir, "msmt17"), "gallery"),
    }
    for subset, recs in parts.items():
        require_records(recs, "msmt17", base / f"list_{subset}.txt")
    return ReIDDataset("msmt17", str(base), parts["train"], parts["query"], parts["gallery"])


# ----------------------------------------------------------------------------------------------
# PRAI-1581

PRAI_LAYOUT = """  ROOT/                      (or ROOT/PRAI-1581)
    images/                  PPPP_CC_....jpg   (first field pid, second field camera/UAV)
    partitions.json          {"trainval_im_names": [...], "test_im_names": [...], "test_marks": [0|1, ...]}
                             (test_marks: 0 = query, 1 = gallery; the official partitions.pkl as JSON)"""

PRAI_CONVERT = ("python -c \"import json, pickle; d = pickle.load(open('partitions.pkl', 'rb')); "
                "json.dump({k: [x if isinstance(x, str) else int(x) for x in d[k]] for k in "
                "('trainval_im_names', 'test_im_names', 'test_marks')}, open('partitions.json', 'w'))\"")


@register_dataset("prai")
def prai(root: Path) -> ReIDDataset:
    """PRAI-1581 (Zhang et al. 2019, aerial ReID): ``images/`` + ``partitions.json``.

    File names start ``PID_CAMERA_``; cameras are mapped to 0-based ids in sorted order of the
    camera field over all listed images. The official split ships as ``partitions.pkl``;
    edgereid reads no pickle, so convert it once to JSON (same keys) with the command in the
    error message. A PRAI copy already converted to the Market layout loads with ``market1501``.
    """
    subdirs = ("PRAI-1581", "prai")
    try:
        base = find_root(root, "prai", ("images", "partitions.json"), subdirs, PRAI_LAYOUT)
    except DatasetLayoutError as exc:
        pkl = next((c / "partitions.pkl" for c in [root, *(root / s for s in subdirs)] if (c / "partitions.pkl").exists()), None)
        if pkl is not None:
            raise DatasetLayoutError(f"prai: found {pkl} but edgereid reads no pickle; convert it once, in {pkl.parent}:\n"
                                     f"  {PRAI_CONVERT}") from exc
        raise
    try:
        part = json.loads((base / "partitions.json").read_text())
        train_names = [str(n) for n in part["trainval_im_names"]]
        test_names = [str(n) for n in part["test_im_names"]]
        marks = [int(m) for m in part["test_marks"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise DatasetLayoutError(f"prai: {base / 'partitions.json'} is not valid: {exc!r}\nexpected layout:\n{PRAI_LAYOUT}") from None
    if len(marks) != len(test_names):
        raise DatasetLayoutError(f"prai: {base / 'partitions.json'} has {len(test_names)} test_im_names but {len(marks)} test_marks")

    def parse(names: list[str]) -> list[tuple[str, int, str]]:
        out = []
        for n in names:
            fields = Path(n).name.split("_")
            if len(fields) < 3 or not fields[0].lstrip("-").isdigit():
                raise DatasetLayoutError(f"prai: image name {n!r} does not start with PID_CAMERA_")
            path = base / "images" / Path(n).name
            if not path.is_file():
                raise DatasetLayoutError(f"prai: partitions.json lists {n}, but {path} does not exist")
            out.append((str(path), int(fields[0]), fields[1]))
        return out

    train_raw, test_raw = parse(train_names), parse(test_names)
    cams = {c: i for i, c in enumerate(sorted({c for *_, c in train_raw + test_raw}, key=lambda s: (len(s), s)))}
    train = [(p, pid, cams[c]) for p, pid, c in train_raw]
    query = [(p, pid, cams[c]) for (p, pid, c), m in zip(test_raw, marks) if m == 0]
    gallery = [(p, pid, cams[c]) for (p, pid, c), m in zip(test_raw, marks) if m != 0]
    parts = {"train": apply_rules(train, "train"), "query": apply_rules(query, "query"), "gallery": apply_rules(gallery, "gallery")}
    for subset, recs in parts.items():
        require_records(recs, "prai", f"{base / 'partitions.json'} ({subset})")
    return ReIDDataset("prai", str(base), parts["train"], parts["query"], parts["gallery"])


# ----------------------------------------------------------------------------------------------
# One folder per identity (LA-Transformer / Person_reID_baseline_pytorch "pytorch/" layout)

IMAGEFOLDER_LAYOUT = """  ROOT/                      (or ROOT/pytorch)
    train/<identity>/*.jpg   one folder per identity (train_folder option; e.g. train_all)
    query/<identity>/*.jpg
    gallery/<identity>/*.jpg folders "0000" (distractors) and "-1" (junk) follow the Market rules"""


@register_dataset("imagefolder")
def imagefolder(root: Path, train_folder: str = "train") -> ReIDDataset:
    """``train/ query/ gallery/`` with one sub-folder per identity.

    Identity: the folder name as an integer when every folder name is one (so ``-1`` and
    ``0000`` keep their junk/distractor meaning); otherwise folder names are numbered 1..N in
    sorted order over all three splits. Camera: from a Market-style file name (``PID_cN...`` ->
    N-1) when present; otherwise camera 0 for train and query and camera 1 for gallery, so that
    same-camera filtering never removes a true match.
    """
    base = find_root(root, "imagefolder", (train_folder, "query", "gallery"), ("pytorch",), IMAGEFOLDER_LAYOUT)
    splits = {"train": base / train_folder, "query": base / "query", "gallery": base / "gallery"}
    folders = {s: sorted(p for p in d.iterdir() if p.is_dir()) for s, d in splits.items()}
    names = sorted({p.name for ps in folders.values() for p in ps})
    numeric = all(re.fullmatch(r"-?\d+", n) for n in names)
    ids = {n: (int(n) if numeric else i + 1) for i, n in enumerate(names)}
    default_cam = {"train": 0, "query": 0, "gallery": 1}
    parts: dict[str, list[Record]] = {}
    for subset, dirs in folders.items():
        recs: list[Record] = []
        for d in dirs:
            for p in list_images(d):
                parsed = parse_market_name(p)
                recs.append((str(p), ids[d.name], parsed.camera if parsed else default_cam[subset]))
        parts[subset] = apply_rules(recs, subset)
        require_records(parts[subset], "imagefolder", f"{splits[subset]}/<identity>/")
    return ReIDDataset("imagefolder", str(base), parts["train"], parts["query"], parts["gallery"])
