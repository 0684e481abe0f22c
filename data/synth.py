"""Deterministic synthetic person-ReID data, written in the real Market-1501 layout.

``generate(SynthConfig(out="runs/synth"))`` writes::

    runs/synth/
      bounding_box_train/  0007_c1s3_000151_01.jpg ...   train identities (disjoint from test)
      bounding_box_test/   0002_c4s1_000913_01.jpg ...   gallery: test identities, plus
                           0000_c2s5_001201_01.jpg       distractors (pid 0000, bad detections)
                           -1_c3s2_000412_01.jpg         junk (pid -1, ignored by the protocol)
      query/               0002_c2s4_000388_01.jpg ...   one image per camera for some cameras
      .complete            JSON: generator version, config, counts (written last)

File names follow Market-1501: ``PPPP_cCsS_FFFFFF_NN.jpg`` = pid (4 digits; ``-1`` for junk),
1-based camera, sequence, frame, box index. So the ``market1501`` loader reads this set as is.

How hard it is, and why: identities are drawn from a clothing palette (``palette_size`` colours;
``ids_per_scheme`` identities may share one colour scheme) and differ in pattern, lower-garment
type, bag and its side, hair length, hat, body build and view-dependent details; cameras differ in
resolution, blur, noise, exposure, background and viewpoint. The defaults are calibrated against
the no-learning baselines (``edgereid baseline``) to look like real cameras: a colour histogram is
informative (mAP ~0.17 on the 400-identity demo set, as hand-made colour features reach ~0.2 on
Market-1501) and a raw-pixel nearest neighbour weak (~0.07), so a model has a lot to learn and the
baselines say how much it did. Flat synthetic colours make the histogram brittle: even a small
per-camera colour cast (``camera_cast`` 0.02) takes it to ~0.04 and the earlier default (0.12,
shared schemes, colourful backgrounds) to chance (0.01), which is why the default has none.
``--occluded`` gives an Occluded-Duke-like split (every query occluded),
``--aerial`` a PRAI-like one (small people seen from a drone). See ``synth_render`` for drawing.

Determinism: every image has its own ``numpy.random.Generator`` seeded from (seed, what, pid,
camera, index); drawing is PIL, colour arithmetic element-wise numpy, JPEG quality fixed. The
same config gives byte-identical files. A set whose ``.complete`` marker matches the config is
not regenerated; a half-written set (no marker) is detected and rewritten.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from .atomic import write_json_atomic
from .flags import add_options, option, options_from_args
from .naming import market_name, parse_market_name
from .synth_render import (
    CLOTHING,
    Appearance,
    Camera,
    make_appearance,
    make_camera,
    make_scheme,
    random_appearance,
    render,
)

GENERATOR_VERSION = 3  # bump whenever the pixels for a given config change
MARKER = ".complete"
IN_PROGRESS = ".generating"
SPLIT_FOLDERS = ("bounding_box_train", "bounding_box_test", "query")


@dataclass
class SynthConfig:
    """Size, layout and difficulty of a synthetic set. The defaults are the demo set.

    Size: ``ids`` identities in total, split into disjoint train and test sets (``train_ids`` train
    identities, default half of them: more training identities cost nothing but generation time);
    each identity is seen by a random subset of ``min_cameras``..``cameras`` cameras with
    ``images_per_camera`` images in each. Test identities give ``query_cameras`` query images
    (one per camera) and leave the rest in the gallery.

    Difficulty: ``palette_size`` clothing colours in use; ``ids_per_scheme`` identities share one
    colour scheme; ``camera_cast`` (0 = none, 0.3 = strong) scales each camera's colour mixing,
    ``camera_light`` its exposure/contrast spread; ``background_saturation`` how colourful the street
    backgrounds are (0 = grey); ``max_blur`` (px), ``max_noise`` (0..255 sigma)
    and ``min_resolution`` (fraction of the output resolution) bound the cameras' optics;
    ``occlusion_prob`` occludes that fraction of all images.

    Variants: ``occluded`` occludes every query, ``occluded_gallery`` of the gallery and
    ``occluded_train`` of the train images (Occluded-Duke-like); ``aerial`` draws every camera
    as a drone looking down (PRAI-like).
    """

    out: str = option("runs/synth", "output folder (Market-1501 layout)")
    ids: int = option(120, "identities in total, split ~50/50 into disjoint train/test")
    train_ids: int | None = option(None, "identities in the train split; the other ids - train-ids are the test "
                                         "identities (default: half of --ids)")
    seed: int = option(0, "random seed; the same seed gives byte-identical files")
    cameras: int = option(6, "number of cameras, 2..9")
    min_cameras: int = option(2, "fewest cameras an identity appears in")
    images_per_camera: int = option(3, "images per identity per camera")
    query_cameras: int = option(2, "query images per test identity, one per camera")
    height: int = option(128, "image height in pixels (as Market crops)")
    width: int = option(64, "image width in pixels")
    distractors: int = option(60, "gallery distractor images, pid 0000")
    junk: int = option(20, "gallery junk images, pid -1, ignored by evaluation")
    occluded: bool = option(False, "Occluded-Duke-like: every query occluded, some gallery/train images too")
    occluded_gallery: float = 0.2
    occluded_train: float = 0.15
    aerial: bool = option(False, "PRAI-like: every camera is a drone looking down at small people")
    palette_size: int = option(16, "clothing colours in use (fewer = harder)")
    ids_per_scheme: int = option(1, "identities sharing one clothing colour scheme (more = harder for colour)")
    camera_cast: float = option(0.0, "strength of each camera's colour cast, 0..1")
    camera_light: float = option(0.05, "spread of camera brightness/contrast, 0..<1")
    max_blur: float = 0.9
    max_noise: float = 8.0
    min_resolution: float = 0.45
    occlusion_prob: float = option(0.05, "fraction of all images with an occluder")
    colour_jitter: float = 6.0
    background_saturation: float = option(0.1, "colourfulness of the street backgrounds, 0 = grey .. 1 = as drawn")
    jpeg_quality: int = option(90, "JPEG quality 1..95")

    def validate(self) -> None:
        """Raise ValueError naming the field, its value and what is expected."""

        def need(ok: bool, field: str, expected: str) -> None:
            if not ok:
                raise ValueError(f"SynthConfig.{field} = {getattr(self, field)!r}: expected {expected}")

        need(4 <= self.ids <= 9999, "ids", "4..9999 (4-digit Market pids, at least 2 train and 2 test identities)")
        need(self.train_ids is None or 2 <= self.train_ids <= self.ids - 2, "train_ids",
             f"None (half of ids) or 2..ids-2 ({self.ids - 2}): both splits need at least 2 identities")
        need(2 <= self.cameras <= 9, "cameras", "2..9 (Market names hold one camera digit)")
        need(2 <= self.min_cameras <= self.cameras, "min_cameras", f"2..cameras ({self.cameras}): a query needs a match in another camera")
        need(self.images_per_camera >= 1, "images_per_camera", ">= 1")
        need(self.query_cameras >= 1, "query_cameras", ">= 1")
        need(self.height >= 32 and self.width >= 16, "height", "height >= 32 and width >= 16")
        need(self.distractors >= 0, "distractors", ">= 0")
        need(self.junk >= 0, "junk", ">= 0")
        need(2 <= self.palette_size <= len(CLOTHING), "palette_size", f"2..{len(CLOTHING)}")
        need(self.ids_per_scheme >= 1, "ids_per_scheme", ">= 1")
        for f in ("occluded_gallery", "occluded_train", "occlusion_prob"):
            need(0.0 <= getattr(self, f) <= 1.0, f, "a probability in [0, 1]")
        need(0.0 <= self.camera_cast <= 1.0, "camera_cast", "0..1")
        need(0.0 <= self.camera_light < 1.0, "camera_light", "0..<1")
        need(self.max_blur >= 0 and self.max_noise >= 0, "max_blur", "max_blur >= 0 and max_noise >= 0")
        need(0.1 <= self.min_resolution <= 1.0, "min_resolution", "0.1..1")
        need(0.0 <= self.background_saturation <= 1.0, "background_saturation", "0..1")
        need(1 <= self.jpeg_quality <= 95, "jpeg_quality", "1..95")

    def fingerprint(self) -> dict[str, Any]:
        """Everything that determines the pixels (all fields but ``out``): compared with the marker."""
        d = dataclasses.asdict(self)
        d.pop("out")
        return d


@dataclass(frozen=True)
class _Item:
    folder: str
    name: str
    pid: int  # pid written in the file name (-1 junk, 0 distractor)
    cam: int  # 0-based
    draw_pid: int | None  # identity drawn (None: a random passer-by or nothing)
    mode: str  # person | partial | background
    occluded: bool
    seed: tuple[int, ...]


def split_identities(cfg: SynthConfig) -> tuple[list[int], list[int]]:
    """Disjoint (train, test) pid lists, each sorted; pids are 1..ids, the split is seeded.

    ``train_ids`` of them train (default half); the rest are the test identities (query + gallery).
    """
    rng = np.random.default_rng([cfg.seed, 0])
    pids = rng.permutation(np.arange(1, cfg.ids + 1))
    n_train = cfg.ids // 2 if cfg.train_ids is None else cfg.train_ids
    return sorted(int(p) for p in pids[:n_train]), sorted(int(p) for p in pids[n_train:])


def make_appearances(cfg: SynthConfig, train: list[int], test: list[int]) -> dict[int, Appearance]:
    """The look of every person, by pid, grouped (within each split) into colour schemes of ``ids_per_scheme``."""
    rng = np.random.default_rng([cfg.seed, 1])
    palette_idx = rng.choice(len(CLOTHING), size=cfg.palette_size, replace=False)
    palette = [CLOTHING[int(i)] for i in sorted(palette_idx)]
    out: dict[int, Appearance] = {}
    for split in (train, test):
        order = rng.permutation(split)
        for start in range(0, len(order), cfg.ids_per_scheme):
            scheme = make_scheme(rng, palette)
            taken: set[tuple] = set()
            for pid in order[start:start + cfg.ids_per_scheme]:
                ident = make_appearance(int(pid), scheme, np.random.default_rng([cfg.seed, 2, int(pid)]),
                                      cfg.colour_jitter, avoid=taken)
                taken.add(ident.signature())
                out[int(pid)] = ident
    return out


def make_cameras(cfg: SynthConfig) -> list[Camera]:
    return [make_camera(c, np.random.default_rng([cfg.seed, 3, c]), cfg) for c in range(cfg.cameras)]


def plan(cfg: SynthConfig) -> list[_Item]:
    """Every file of the set, in a fixed order, with the seed its pixels come from."""
    train, test = split_identities(cfg)
    rng = np.random.default_rng([cfg.seed, 4])
    frame = [int(f) for f in rng.integers(1, 500, size=cfg.cameras)]

    def name(pid: int, cam: int) -> str:
        frame[cam] += int(rng.integers(5, 120))
        return market_name(pid, cam, int(rng.integers(1, 7)), frame[cam], int(rng.integers(1, 4)))

    def occluded(p: float) -> bool:
        return bool(rng.random() < max(p, cfg.occlusion_prob))

    items: list[_Item] = []
    for split, pids in (("train", train), ("test", test)):
        for pid in pids:
            n_cams = int(rng.integers(cfg.min_cameras, cfg.cameras + 1))
            cams = sorted(int(c) for c in rng.choice(cfg.cameras, size=n_cams, replace=False))
            query_cams: set[int] = set()
            if split == "test":
                # keep a gallery match in another camera for every query
                n_q = min(cfg.query_cameras, n_cams - (1 if cfg.images_per_camera == 1 else 0))
                query_cams = {int(c) for c in rng.choice(cams, size=n_q, replace=False)}
            for cam in cams:
                for k in range(cfg.images_per_camera):
                    if split == "train":
                        folder, occ = "bounding_box_train", occluded(cfg.occluded_train if cfg.occluded else 0.0)
                    elif k == 0 and cam in query_cams:
                        folder, occ = "query", occluded(1.0 if cfg.occluded else 0.0)
                    else:
                        folder, occ = "bounding_box_test", occluded(cfg.occluded_gallery if cfg.occluded else 0.0)
                    items.append(_Item(folder, name(pid, cam), pid, cam, pid, "person", occ, (cfg.seed, 5, pid, cam, k)))
    for i in range(cfg.distractors):
        cam = int(rng.integers(cfg.cameras))
        mode = "background" if rng.random() < 0.35 else "partial"
        items.append(_Item("bounding_box_test", name(0, cam), 0, cam, None, mode, False, (cfg.seed, 6, i)))
    for i in range(cfg.junk):
        cam = int(rng.integers(cfg.cameras))
        mode = "background" if rng.random() < 0.5 else "partial"
        items.append(_Item("bounding_box_test", name(-1, cam), -1, cam, int(rng.choice(test)), mode, False, (cfg.seed, 7, i)))
    return items


def read_marker(root: str | Path) -> dict[str, Any] | None:
    """The ``.complete`` marker of a finished set, or None (missing or unreadable)."""
    path = Path(root) / MARKER
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def is_complete(root: str | Path, cfg: SynthConfig) -> bool:
    marker = read_marker(root)
    return bool(marker and marker.get("version") == GENERATOR_VERSION and marker.get("config") == cfg.fingerprint())


def _prepare_folder(out: Path) -> None:
    """Empty ``out`` of a previous synthetic set; refuse to touch a folder that is not one."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"synth output {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        ours = (out / MARKER).exists() or (out / IN_PROGRESS).exists()
        if not ours:
            raise FileExistsError(
                f"synth output {out} is a non-empty folder without a {MARKER} or {IN_PROGRESS} marker: "
                "it is not a synthetic set written by edgereid, so it is left untouched. "
                "Choose an empty or new folder.")
        for sub in SPLIT_FOLDERS:
            if (out / sub).exists():
                shutil.rmtree(out / sub)
        (out / MARKER).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)


def generate(cfg: SynthConfig, *, force: bool = False, progress: bool = True) -> Path:
    """Write the set described by ``cfg`` to ``cfg.out`` and return that path.

    Skips the work when ``cfg.out`` already holds a complete set made with the same config
    (unless ``force``). The ``.complete`` marker (config + counts) is written last, atomically.
    ``progress`` shows a tqdm bar when tqdm is installed (it comes with ``edgereid[train]``).
    """
    cfg.validate()
    out = Path(cfg.out)
    if not force and is_complete(out, cfg):
        return out
    _prepare_folder(out)
    write_json_atomic(out / IN_PROGRESS, {"version": GENERATOR_VERSION, "config": cfg.fingerprint()}, indent=None)
    for sub in SPLIT_FOLDERS:
        (out / sub).mkdir()
    train, test = split_identities(cfg)
    looks = make_appearances(cfg, train, test)
    cameras = make_cameras(cfg)
    items = plan(cfg)
    counts = {sub: 0 for sub in SPLIT_FOLDERS}
    for item in _progress(items, f"synth -> {out}", progress):
        rng = np.random.default_rng(list(item.seed))
        if item.draw_pid is None:
            look = random_appearance(rng) if item.mode != "background" else None
        else:
            look = looks[item.draw_pid]
        img = render(look, cameras[item.cam], rng, cfg, occluded=item.occluded, mode=item.mode)
        img.save(out / item.folder / item.name, "JPEG", quality=cfg.jpeg_quality)
        counts[item.folder] += 1
    counts.update(
        train_ids=len(train), test_ids=len(test),
        query_ids=len({i.pid for i in items if i.folder == "query"}),
        distractors=cfg.distractors, junk=cfg.junk,
        occluded_images=sum(i.occluded for i in items),
    )
    marker = {"format": "edgereid-synth", "version": GENERATOR_VERSION, "config": cfg.fingerprint(), "counts": counts}
    write_json_atomic(out / MARKER, marker, sort_keys=True)
    (out / IN_PROGRESS).unlink(missing_ok=True)
    return out


def _progress(items: list, desc: str, enabled: bool):
    """``items`` behind a tqdm bar when one is wanted and tqdm is installed."""
    if not enabled:
        return items
    try:
        from tqdm import tqdm
    except ImportError:
        return items
    return tqdm(items, desc=desc, unit="img", mininterval=1.0)


def preview(root: str | Path, out_png: str | Path, rows: int = 8, cols: int = 8) -> Path:
    """A PNG grid of samples: one row per identity (first ``rows`` pids), columns by camera.

    Each row shows one image per camera first, then further images; the pid is written on the
    left. Reads the Market layout, so it also previews a real data set.
    """
    root = Path(root)
    by_pid: dict[int, list[tuple[int, Path]]] = {}
    for sub in ("bounding_box_train", "query", "bounding_box_test"):
        for p in sorted((root / sub).glob("*.jpg")):
            parsed = parse_market_name(p)
            if parsed is None or parsed.pid <= 0:
                continue
            by_pid.setdefault(parsed.pid, []).append((parsed.camera, p))
    if not by_pid:
        raise FileNotFoundError(f"no identity images (PPPP_cC...jpg) under {root}/bounding_box_train, query or bounding_box_test")
    pids = sorted(by_pid)[:rows]
    first = Image.open(by_pid[pids[0]][0][1])
    w, h = first.size
    margin, gap = 44, 2
    grid = Image.new("RGB", (margin + cols * (w + gap), len(pids) * (h + gap)), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for r, pid in enumerate(pids):
        imgs = sorted(by_pid[pid])
        seen: set[int] = set()
        firsts = [x for x in imgs if not (x[0] in seen or seen.add(x[0]))]
        ordered = firsts + [x for x in imgs if x not in firsts]
        draw.text((4, r * (h + gap) + h // 2 - 6), f"{pid:04d}", fill=(0, 0, 0))
        for c, (_cam, path) in enumerate(ordered[:cols]):
            with Image.open(path) as im:
                grid.paste(im.convert("RGB").resize((w, h)), (margin + c * (w + gap), r * (h + gap)))
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    grid.save(out_png)
    return out_png


# ----------------------------------------------------------------------------------------------
# CLI glue: the lead's train/cli.py adds a `synth` subcommand with these.


def add_synth_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``edgereid synth``: the SynthConfig fields, and what to do with the set."""
    add_options(parser, SynthConfig)
    a = parser.add_argument
    a("--force", action="store_true", help="regenerate even when a complete set with the same config exists")
    a("--preview", default=None, metavar="PNG", help="also write a grid of samples (rows = identities, columns = cameras) to this PNG")
    a("--quiet", action="store_true", help="no progress bar")


def main_synth(args: argparse.Namespace) -> int:
    """``edgereid synth``: generate (or reuse) the set, optionally a preview; print where it wrote."""
    cfg = options_from_args(SynthConfig, args)
    try:
        cfg.validate()
    except ValueError as exc:
        print(f"edgereid synth: {exc}")
        return 2
    reused = not args.force and is_complete(cfg.out, cfg)
    try:
        out = generate(cfg, force=args.force, progress=not args.quiet)
    except FileExistsError as exc:
        print(f"edgereid synth: {exc}")
        return 2
    counts = (read_marker(out) or {}).get("counts", {})
    state = "already complete, reused" if reused else "written"
    print(f"synthetic set {state}: {out} ({counts.get('bounding_box_train', '?')} train, "
          f"{counts.get('query', '?')} query, {counts.get('bounding_box_test', '?')} gallery images)")
    if args.preview:
        print(f"preview written: {preview(out, args.preview)}")
    return 0


run_synth_command = main_synth  # the name train/cli.py calls


def main(argv: list[str] | None = None) -> int:
    """``python -m edgereid.data.synth``: the same as ``edgereid synth``."""
    parser = argparse.ArgumentParser(prog="python -m edgereid.data.synth", description=main_synth.__doc__)
    add_synth_arguments(parser)
    return main_synth(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
