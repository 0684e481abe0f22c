"""Dataset loaders: every supported layout written as a tiny tree of real JPEGs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from edgereid.data import (
    DatasetLayoutError,
    ReIDDataset,
    build_dataset,
    list_datasets,
    register_dataset,
)
from PIL import Image


def jpeg(path: Path, colour=(120, 60, 30), size=(16, 32)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, quality=90)
    return path


def names(records) -> list[str]:
    return sorted(Path(r[0]).name for r in records)


# ---------------------------------------------------------------------------------------------
# One file-name parser, one camera numbering: every layer reads a Market name the same way


def test_market_names_read_alike_in_data_calibration_and_runtime(tmp_path):
    from edgereid.calibration.calib_set import scan_train_folder
    from edgereid.data import market_name, parse_market_name
    from edgereid.data.datasets import parse_market_dir
    from edgereid.runtime.image_sources import labelled_images

    assert parse_market_name("0002_c1s1_000451_03.jpg") == (2, 0)
    assert parse_market_name("dir/-1_c3_f0046985.jpg") == (-1, 2)
    assert parse_market_name("0002_c0s1_000451_03.jpg") is None and parse_market_name("img_c2.jpg") is None
    assert market_name(2, 0, 1, 451, 3) == "0002_c1s1_000451_03.jpg"
    assert parse_market_name(market_name(-1, 5, 2, 7)) == (-1, 5)
    train = tmp_path / "bounding_box_train"
    for pid, cam in [(7, 0), (7, 2), (3, 1)]:
        jpeg(train / market_name(pid, cam, 1, 100 + cam))
    want = sorted((n, *parse_market_name(n)) for n in names([(str(p), 0, 0) for p in train.iterdir()]))
    runtime = sorted((im.path.name, im.identity, im.camera) for im in labelled_images(train, "market")[0])
    assert runtime == want
    assert sorted((Path(p).name, pid, cam) for p, pid, cam in parse_market_dir(train, "x")) == want
    jpeg(train / "photo.webp")  # one suffix set: a .webp is an image for every reader
    calib = sorted((Path(p).name, pid, cam) for p, pid, cam in scan_train_folder(train))
    assert [r for r in calib if r[0] != "photo.webp"] == want and len(calib) == 4


# ---------------------------------------------------------------------------------------------
# Market-1501 family


def write_market(root: Path, duke: bool = False) -> Path:
    """Train pids 7, 3, 12 (unsorted on purpose) + a junk and a distractor in every folder."""

    def n(pid: int, cam: int, k: int) -> str:
        head = "-1" if pid == -1 else f"{pid:04d}"
        return f"{head}_c{cam}_f{k:07d}.jpg" if duke else f"{head}_c{cam}s1_{k:06d}_01.jpg"

    for pid, cam, k in [(7, 1, 1), (7, 2, 2), (3, 1, 3), (3, 3, 4), (12, 2, 5), (-1, 1, 6), (0, 2, 7)]:
        jpeg(root / "bounding_box_train" / n(pid, cam, k))
    for pid, cam, k in [(5, 2, 10), (5, 3, 11), (9, 1, 12), (9, 1, 13), (0, 1, 14), (-1, 2, 15)]:
        jpeg(root / "bounding_box_test" / n(pid, cam, k))
    for pid, cam, k in [(5, 1, 20), (9, 2, 21), (-1, 1, 22), (0, 3, 23)]:
        jpeg(root / "query" / n(pid, cam, k))
    (root / "bounding_box_test" / "Thumbs.db").write_bytes(b"not an image")  # Market ships one
    return root


def test_market_rules_junk_distractors_relabel_cameras(tmp_path):
    ds = build_dataset("market1501", write_market(tmp_path / "m"))
    assert isinstance(ds, ReIDDataset)
    # junk dropped everywhere, distractor kept only in the gallery
    assert all(pid != -1 for _, pid, _ in ds.query + ds.gallery)
    assert all(pid != 0 for _, pid, _ in ds.query)
    assert not [n for n in names(ds.train) if n.startswith(("-1_", "0000_"))]
    assert [pid for _, pid, _ in ds.gallery].count(0) == 1
    # train pids relabelled in sorted order of the original pid: 3 -> 0, 7 -> 1, 12 -> 2
    label = {Path(p).name[:4]: pid for p, pid, _ in ds.train}
    assert label == {"0003": 0, "0007": 1, "0012": 2}
    # query/gallery keep original pids; cameras are 0-based
    assert sorted((pid, cam) for _, pid, cam in ds.query) == [(5, 0), (9, 1)]
    assert {cam for _, _, cam in ds.train} == {0, 1, 2}
    assert ds.num_train_pids == 3 and ds.num_train_cams == 3 and ds.num_train_imgs == 5
    assert all(Path(p).is_file() for p, _, _ in ds.train + ds.query + ds.gallery)
    s = ds.summary()
    assert "train" in s and "1 distractor" in s and str(tmp_path / "m") in s


def test_market_found_in_its_usual_subfolder(tmp_path):
    write_market(tmp_path / "Market-1501-v15.09.15")
    ds = build_dataset("market1501", tmp_path)
    assert ds.root == str(tmp_path / "Market-1501-v15.09.15") and ds.num_train_pids == 3


@pytest.mark.parametrize("name,sub", [("dukemtmc", "DukeMTMC-reID"), ("occluded_duke", "Occluded_Duke")])
def test_duke_family_naming(tmp_path, name, sub):
    write_market(tmp_path / sub, duke=True)
    ds = build_dataset(name, tmp_path)
    assert ds.num_train_pids == 3
    assert sorted((pid, cam) for _, pid, cam in ds.query) == [(5, 0), (9, 1)]


def test_missing_folder_names_it_and_shows_layout(tmp_path):
    root = write_market(tmp_path / "m")
    for p in (root / "query").iterdir():
        p.unlink()
    (root / "query").rmdir()
    with pytest.raises(DatasetLayoutError) as info:
        build_dataset("market1501", root)
    msg = str(info.value)
    assert str(root / "query") in msg and "bounding_box_train/" in msg and "expected layout" in msg
    assert isinstance(info.value, FileNotFoundError)


def test_badly_named_image_and_empty_folder_are_reported(tmp_path):
    root = write_market(tmp_path / "m")
    jpeg(root / "query" / "holiday.jpg")
    with pytest.raises(DatasetLayoutError, match="holiday.jpg"):
        build_dataset("market1501", root)
    root2 = write_market(tmp_path / "m2")
    for p in (root2 / "bounding_box_train").iterdir():
        p.unlink()
    with pytest.raises(DatasetLayoutError, match="no usable images"):
        build_dataset("market1501", root2)


def test_wrong_root_and_unknown_name(tmp_path):
    with pytest.raises(DatasetLayoutError, match="does not exist"):
        build_dataset("market1501", tmp_path / "nowhere")
    with pytest.raises(ValueError, match="market1501"):
        build_dataset("market9999", tmp_path)
    with pytest.raises(ValueError, match="combine_val"):
        build_dataset("market1501", tmp_path, combine_val=True)


def test_registry_lists_and_accepts_new_loaders(tmp_path, monkeypatch):
    from edgereid.data import datasets

    # the registration is this test's own: other tests (the tables') see the built-in loaders only
    monkeypatch.setattr(datasets, "_REGISTRY", dict(datasets._REGISTRY))
    assert {"market1501", "dukemtmc", "occluded_duke", "msmt17", "prw", "prai", "imagefolder"} <= set(list_datasets())

    @register_dataset("toy_for_test")
    def toy(root: Path) -> ReIDDataset:
        return ReIDDataset("toy_for_test", str(root), [("a.jpg", 0, 0)], [("b.jpg", 1, 0)], [("c.jpg", 1, 1)])

    assert "toy_for_test" in list_datasets()
    assert build_dataset("toy_for_test", tmp_path).num_train_pids == 1
    with pytest.raises(ValueError, match="already registered"):
        register_dataset("toy_for_test")(lambda root: None)


# ---------------------------------------------------------------------------------------------
# MSMT17


def write_msmt(root: Path, v2: bool) -> Path:
    train_dir, test_dir = ("mask_train_v2", "mask_test_v2") if v2 else ("train", "test")

    def entries(folder: str, items) -> list[str]:
        lines = []
        for pid, idx, cam in items:
            rel = f"{pid:04d}/{pid:04d}_{idx:03d}_{cam:02d}_0303morning_{idx:04d}_0.jpg"
            jpeg(root / folder / rel)
            lines.append(f"{rel} {pid}")
        return lines

    (root / "list_train.txt").write_text("\n".join(entries(train_dir, [(10, 0, 1), (10, 1, 15), (4, 2, 3)])) + "\n")
    (root / "list_val.txt").write_text("\n".join(entries(train_dir, [(20, 0, 2)])) + "\n")
    (root / "list_query.txt").write_text("\n".join(entries(test_dir, [(30, 0, 1)])) + "\n")
    (root / "list_gallery.txt").write_text("\n".join(entries(test_dir, [(30, 1, 2), (31, 2, 5)])) + "\n")
    return root


@pytest.mark.parametrize("v2,sub", [(False, "MSMT17_V1"), (True, "MSMT17_V2")])
def test_msmt17_v1_and_v2(tmp_path, v2, sub):
    write_msmt(tmp_path / sub, v2)
    ds = build_dataset("msmt17", tmp_path)
    assert sorted((Path(p).name[:4], pid) for p, pid, _ in ds.train) == [("0004", 0), ("0010", 1), ("0010", 1)]
    assert sorted(cam for _, _, cam in ds.train) == [0, 2, 14]
    assert [(pid, cam) for _, pid, cam in ds.query] == [(30, 0)]
    assert sorted((pid, cam) for _, pid, cam in ds.gallery) == [(30, 1), (31, 4)]
    with_val = build_dataset("msmt17", tmp_path, combine_val=True)
    assert with_val.num_train_pids == 3


def test_msmt17_listed_file_missing_is_named(tmp_path):
    root = write_msmt(tmp_path / "MSMT17_V1", v2=False)
    victim = next((root / "test").rglob("*.jpg"))
    victim.unlink()
    with pytest.raises(DatasetLayoutError, match=victim.name):
        build_dataset("msmt17", root)


def test_msmt17_without_image_folders(tmp_path):
    root = tmp_path / "MSMT17_V1"
    root.mkdir()
    for n in ("list_train.txt", "list_val.txt", "list_query.txt", "list_gallery.txt"):
        (root / n).write_text("")
    with pytest.raises(DatasetLayoutError, match="mask_train_v2"):
        build_dataset("msmt17", root)


# ---------------------------------------------------------------------------------------------
# PRAI-1581


def write_prai(root: Path) -> Path:
    train = [f"{pid:04d}_{cam:02d}_{k:04d}.jpg" for pid, cam, k in [(8, 1, 0), (8, 2, 1), (2, 1, 2)]]
    test = [f"{pid:04d}_{cam:02d}_{k:04d}.jpg" for pid, cam, k in [(40, 1, 3), (40, 2, 4), (41, 2, 5)]]
    for n in train + test:
        jpeg(root / "images" / n)
    (root / "partitions.json").write_text(json.dumps(
        {"trainval_im_names": train, "test_im_names": test, "test_marks": [0, 1, 1]}))
    return root


def test_prai_partition_json(tmp_path):
    write_prai(tmp_path / "PRAI-1581")
    ds = build_dataset("prai", tmp_path)
    assert sorted((Path(p).name[:4], pid) for p, pid, _ in ds.train) == [("0002", 0), ("0008", 1), ("0008", 1)]
    assert [(pid, cam) for _, pid, cam in ds.query] == [(40, 0)]
    assert sorted((pid, cam) for _, pid, cam in ds.gallery) == [(40, 1), (41, 1)]


def test_prai_pickle_partition_gets_conversion_advice(tmp_path):
    root = write_prai(tmp_path / "PRAI-1581")
    (root / "partitions.json").unlink()
    (root / "partitions.pkl").write_bytes(b"never read")
    with pytest.raises(DatasetLayoutError, match="partitions.json") as info:
        build_dataset("prai", tmp_path)
    assert "pickle" in str(info.value)


def test_prai_bad_partition_is_named(tmp_path):
    root = write_prai(tmp_path / "p")
    (root / "partitions.json").write_text(json.dumps({"trainval_im_names": []}))
    with pytest.raises(DatasetLayoutError, match="partitions.json"):
        build_dataset("prai", root)


# ---------------------------------------------------------------------------------------------
# ImageFolder (LA-Transformer layout)


def test_imagefolder_numeric_folders_with_market_names(tmp_path):
    root = tmp_path / "pytorch"
    for split, pid, cam, k in [("train", "0007", 1, 0), ("train", "0002", 3, 1), ("query", "0005", 1, 2),
                               ("gallery", "0005", 2, 3), ("gallery", "0000", 4, 4), ("gallery", "-1", 1, 5)]:
        jpeg(root / split / pid / f"{pid}_c{cam}s1_{k:06d}_00.jpg")
    ds = build_dataset("imagefolder", tmp_path)
    assert sorted((Path(p).parent.name, pid, cam) for p, pid, cam in ds.train) == [("0002", 0, 2), ("0007", 1, 0)]
    assert [(pid, cam) for _, pid, cam in ds.query] == [(5, 0)]
    assert sorted((pid, cam) for _, pid, cam in ds.gallery) == [(0, 3), (5, 1)]


def test_imagefolder_named_folders_and_default_cameras(tmp_path):
    root = tmp_path / "people"
    for split, who in [("train", "bob"), ("train", "alice"), ("query", "carol"), ("gallery", "carol"), ("gallery", "dave")]:
        jpeg(root / split / who / "img1.jpg")
    ds = build_dataset("imagefolder", root)
    # names numbered 1.. in sorted order over all splits: alice 1, bob 2, carol 3, dave 4
    assert ds.num_train_pids == 2
    assert ds.query == [(str(root / "query" / "carol" / "img1.jpg"), 3, 0)]
    assert sorted((pid, cam) for _, pid, cam in ds.gallery) == [(3, 1), (4, 1)]


def test_imagefolder_missing_gallery(tmp_path):
    jpeg(tmp_path / "train" / "a" / "x.jpg")
    jpeg(tmp_path / "query" / "a" / "x.jpg")
    with pytest.raises(DatasetLayoutError, match="gallery"):
        build_dataset("imagefolder", tmp_path)


# ---------------------------------------------------------------------------------------------
# PRW (needs scipy to write and read .mat files)


def write_prw(root: Path) -> Path:
    savemat = pytest.importorskip("scipy.io", reason="PRW annotations are .mat files: scipy is needed").savemat
    rng = np.random.default_rng(0)
    frames = {"c1s1_000100": [(5, 10, 5, 20, 40), (-2, 60, 10, 20, 45)],
              "c2s1_000200": [(5, 30, 20, 22, 50), (9, 70, 0, 18, 40)],
              "c3s2_000300": [(7, 5, 5, 20, 40), (-2, 50, 20, 20, 40), (8, 80, 30, 16, 30)],
              "c4s1_000400": [(7, 40, 10, 20, 40), (8, -4, 2, 20, 40)]}
    (root / "annotations").mkdir(parents=True)
    for frame, boxes in frames.items():
        jpeg(root / "frames" / f"{frame}.jpg", tuple(int(v) for v in rng.integers(0, 255, 3)), size=(120, 80))
        savemat(str(root / "annotations" / f"{frame}.jpg.mat"), {"box_new": np.array(boxes, dtype=np.float64)})
    cell = lambda xs: np.array([[x] for x in xs], dtype=object)  # noqa: E731  (MATLAB cell column)
    savemat(str(root / "frame_train.mat"), {"img_index_train": cell(["c1s1_000100", "c2s1_000200"])})
    savemat(str(root / "frame_test.mat"), {"img_index_test": cell(["c3s2_000300", "c4s1_000400"])})
    (root / "query_info.txt").write_text("7 5 5 20 40 c3s2_000300\r\n8 80 30 16 30 c3s2_000300\r\n")
    return root


def test_prw_crops_boxes_and_applies_the_rules(tmp_path):
    root = write_prw(tmp_path / "PRW-v16.04.20")
    cache = tmp_path / "crops"
    ds = build_dataset("prw", tmp_path, cache_dir=cache)
    # train: labelled boxes only (-2 dropped), relabelled 5 -> 0, 9 -> 1; cameras from cN (0-based)
    assert sorted((pid, cam) for _, pid, cam in ds.train) == [(0, 0), (0, 1), (1, 1)]
    assert sorted((pid, cam) for _, pid, cam in ds.query) == [(7, 2), (8, 2)]
    # gallery: every test box; the unlabelled one is a distractor (pid 0)
    assert sorted((pid, cam) for _, pid, cam in ds.gallery) == [(0, 2), (7, 2), (7, 3), (8, 2), (8, 3)]
    with Image.open(ds.query[0][0]) as im:
        assert im.size in {(20, 40), (16, 30)}
    # the clipped box (x = -4) is cropped inside the frame
    sizes = []
    for p, pid, cam in ds.gallery:
        with Image.open(p) as im:
            sizes.append((pid, cam, im.size))
    assert (8, 3, (16, 40)) in sizes
    assert (cache / "index.json").is_file()
    # the cache is reused: the frames are no longer needed
    for f in (root / "frames").iterdir():
        f.unlink()
    again = build_dataset("prw", tmp_path, cache_dir=cache)
    assert len(again.gallery) == len(ds.gallery)


def test_prw_missing_annotation_is_named(tmp_path):
    root = write_prw(tmp_path / "prw")
    (root / "annotations" / "c2s1_000200.jpg.mat").unlink()
    with pytest.raises(DatasetLayoutError, match="c2s1_000200.jpg.mat"):
        build_dataset("prw", root, cache_dir=tmp_path / "c")


def test_prw_layout_error_without_scipy_files(tmp_path):
    (tmp_path / "frames").mkdir()
    with pytest.raises(DatasetLayoutError, match="annotations"):
        build_dataset("prw", tmp_path)


def test_data_modules_do_not_import_torch():
    code = ("import sys, edgereid.train.data, edgereid.data.synth, edgereid.train.histogram_baseline; "
            "bad = [m for m in ('torch', 'timm') if m in sys.modules]; assert not bad, bad")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
