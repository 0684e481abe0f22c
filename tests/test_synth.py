"""The synthetic ReID generator: Market layout and naming, determinism, markers, variants, CLI."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from edgereid.data import DatasetLayoutError, build_dataset
from edgereid.data.synth import (
    MARKER,
    SynthConfig,
    generate,
    make_appearances,
    make_cameras,
    plan,
    preview,
    split_identities,
)
from edgereid.data.synth_render import (
    SUPERSAMPLE,
    _aerial_person,
    make_appearance,
    make_scheme,
    person_layer,
)
from PIL import Image

NAME = re.compile(r"^(-1|\d{4})_c(\d)s(\d)_(\d{6})_(\d{2})\.jpg$")


def small(out: Path, **kw) -> SynthConfig:
    base = dict(out=str(out), ids=10, cameras=3, images_per_camera=2, distractors=4, junk=3,
                height=64, width=32, query_cameras=2)
    base.update(kw)
    return SynthConfig(**base)


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def synth_set(tmp_path_factory) -> Path:
    return generate(small(tmp_path_factory.mktemp("synth") / "set"), progress=False)


def test_writes_market_layout_with_market_names(synth_set):
    groups: dict[str, list[tuple[int, int]]] = {}
    for folder in ("bounding_box_train", "bounding_box_test", "query"):
        names = sorted(p.name for p in (synth_set / folder).iterdir())
        assert names, folder
        for n in names:
            m = NAME.match(n)
            assert m, f"{folder}/{n} does not follow PPPP_cCsS_FFFFFF_NN.jpg"
            assert 1 <= int(m.group(2)) <= 3
        groups[folder] = [(int(NAME.match(n).group(1)), int(NAME.match(n).group(2))) for n in names]
        with Image.open(next((synth_set / folder).iterdir())) as im:
            assert im.size == (32, 64) and im.format == "JPEG"
    train_pids = {p for p, _ in groups["bounding_box_train"]}
    gallery_pids = {p for p, _ in groups["bounding_box_test"]}
    query = groups["query"]
    assert not train_pids & (gallery_pids | {p for p, _ in query}), "train and test identities must be disjoint"
    assert {-1, 0} <= gallery_pids, "gallery holds junk (-1) and distractors (0000)"
    assert len(train_pids) == 5 and len(gallery_pids - {-1, 0}) == 5
    # query: at most one image per camera per identity, and a gallery match in another camera
    per_pid: dict[int, list[int]] = defaultdict(list)
    for pid, cam in query:
        per_pid[pid].append(cam)
    for pid, cams in per_pid.items():
        assert len(cams) == len(set(cams)) <= 2
        for cam in cams:
            assert any(p == pid and c != cam for p, c in groups["bounding_box_test"]), (pid, cam)


def test_marker_records_config_and_true_counts(synth_set):
    marker = json.loads((synth_set / MARKER).read_text())
    cfg = small(synth_set)
    assert marker["config"] == cfg.fingerprint()
    for folder in ("bounding_box_train", "bounding_box_test", "query"):
        assert marker["counts"][folder] == len(list((synth_set / folder).iterdir()))
    assert marker["counts"]["junk"] == 3 and marker["counts"]["distractors"] == 4
    assert not (synth_set / ".generating").exists()


def test_market_loader_reads_the_synthetic_set(synth_set):
    ds = build_dataset("market1501", synth_set)
    assert ds.num_train_pids == 5
    assert sorted({pid for _, pid, _ in ds.train}) == list(range(5))
    assert all(pid != -1 for _, pid, _ in ds.gallery) and any(pid == 0 for _, pid, _ in ds.gallery)
    assert {cam for _, _, cam in ds.train + ds.query + ds.gallery} <= {0, 1, 2}
    assert "synthetic set" in ds.summary()


def test_same_seed_gives_byte_identical_files_and_another_seed_does_not(tmp_path, synth_set):
    again = generate(small(tmp_path / "again"), progress=False)
    a, b = files(synth_set), files(again)
    assert a.keys() == b.keys()
    assert all(a[k] == b[k] for k in a), "same config must give byte-identical files"
    other = generate(small(tmp_path / "other", seed=1), progress=False)
    c = files(other)
    jpgs = [k for k in c if k.endswith(".jpg")]
    assert set(jpgs) != {k for k in a if k.endswith(".jpg")} or any(a[k] != c[k] for k in jpgs)


def test_complete_set_is_reused_and_a_changed_config_regenerates(tmp_path):
    cfg = small(tmp_path / "s")
    out = generate(cfg, progress=False)
    stamp = {p: p.stat().st_mtime_ns for p in out.rglob("*.jpg")}
    generate(cfg, progress=False)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.jpg")} == stamp, "complete set must not be rewritten"
    generate(small(tmp_path / "s", ids=12), progress=False)
    marker = json.loads((out / MARKER).read_text())
    assert marker["config"]["ids"] == 12
    train_pids = {int(p.name[:4]) for p in (out / "bounding_box_train").iterdir()}
    assert len(train_pids) == 6, "old files must be gone after regeneration"


def test_half_written_set_is_detected_and_regenerated(tmp_path):
    cfg = small(tmp_path / "s")
    out = generate(cfg, progress=False)
    (out / MARKER).unlink()
    (out / ".generating").write_text("{}")
    victim = next((out / "query").iterdir())
    victim.unlink()
    with pytest.raises(DatasetLayoutError, match="half-written"):
        build_dataset("market1501", out)
    generate(cfg, progress=False)
    assert (out / MARKER).exists() and victim.exists() and not (out / ".generating").exists()


def test_refuses_to_write_into_a_folder_that_is_not_a_synthetic_set(tmp_path):
    precious = tmp_path / "mine" / "notes.txt"
    precious.parent.mkdir()
    precious.write_text("keep me")
    with pytest.raises(FileExistsError, match="not a synthetic set"):
        generate(small(tmp_path / "mine"), progress=False)
    assert precious.read_text() == "keep me"


def test_bad_config_names_the_field():
    with pytest.raises(ValueError, match="cameras"):
        SynthConfig(cameras=12).validate()
    with pytest.raises(ValueError, match="min_cameras"):
        SynthConfig(min_cameras=1).validate()
    with pytest.raises(ValueError, match="palette_size"):
        SynthConfig(palette_size=1).validate()


def test_identities_share_colour_schemes_but_differ_in_discrete_attributes():
    cfg = SynthConfig(ids=60, ids_per_scheme=3, palette_size=6)
    train, test = split_identities(cfg)
    idents = make_appearances(cfg, train, test)
    for split in (train, test):
        uppers = np.array([idents[p].upper for p in split], dtype=float)
        lowers = np.array([idents[p].lower for p in split], dtype=float)
        # every identity has at least two others in its split with (almost) the same clothes colours
        close = (np.abs(uppers[:, None] - uppers[None]).max(-1) <= 2 * cfg.colour_jitter) & \
                (np.abs(lowers[:, None] - lowers[None]).max(-1) <= 2 * cfg.colour_jitter)
        assert (close.sum(1) >= 3).all()
    # identities drawn for one scheme avoid each other's discrete signature, so they stay separable
    scheme = make_scheme(np.random.default_rng(0), [(200, 0, 0), (0, 0, 200)])
    taken: set[tuple] = set()
    for pid in range(12):
        ident = make_appearance(pid, scheme, np.random.default_rng([7, pid]), avoid=taken)
        assert ident.signature() not in taken
        taken.add(ident.signature())


def test_occluded_variant_occludes_every_query(tmp_path):
    cfg = small(tmp_path / "o", occluded=True, occlusion_prob=0.0)
    items = plan(cfg)
    query = [i for i in items if i.folder == "query"]
    assert query and all(i.occluded for i in query)
    gallery = [i for i in items if i.folder == "bounding_box_test" and i.pid > 0]
    assert not all(i.occluded for i in gallery)
    plain = plan(small(tmp_path / "p", occlusion_prob=0.0))
    assert not any(i.occluded for i in plain)
    out = generate(cfg, progress=False)
    assert json.loads((out / MARKER).read_text())["counts"]["occluded_images"] >= len(query)


def test_aerial_people_are_small_and_foreshortened():
    cfg = SynthConfig(aerial=True)
    cam = make_cameras(cfg)[0]
    ident = make_appearances(cfg, [1], [2])[1]
    hc, wc = cfg.height * SUPERSAMPLE, cfg.width * SUPERSAMPLE
    ground = person_layer((wc, hc), ident, "front", 0.0, wc / 2, hc * 0.05, hc * 0.9)
    air, _ = _aerial_person(ident, "front", 0.0, cam, np.random.default_rng(0), hc, wc)
    ground_px = (np.asarray(ground.getchannel("A")) > 0).sum()
    air_px = (np.asarray(air.getchannel("A")) > 0).sum()
    assert air_px < 0.5 * ground_px
    assert air.size[1] < 0.8 * hc


def test_aerial_set_generates_in_market_layout(tmp_path):
    out = generate(small(tmp_path / "a", aerial=True), progress=False)
    ds = build_dataset("market1501", out)
    assert ds.num_train_pids == 5 and ds.query and ds.gallery


def test_preview_is_a_grid_of_identities_by_camera(synth_set, tmp_path):
    png = preview(synth_set, tmp_path / "p.png", rows=3, cols=4)
    with Image.open(png) as im:
        assert im.format == "PNG"
        assert im.size == (44 + 4 * (32 + 2), 3 * (64 + 2))


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "edgereid.data.synth", *args],
                          capture_output=True, text=True, env=env, timeout=300)


def test_cli_writes_the_set_and_preview_and_says_where(tmp_path):
    out, png = tmp_path / "cli", tmp_path / "prev.png"
    res = _cli("--out", str(out), "--ids", "6", "--cameras", "2", "--images-per-camera", "2", "--height", "64",
               "--width", "32", "--distractors", "1", "--junk", "1", "--preview", str(png), "--quiet")
    assert res.returncode == 0, res.stderr[-2000:]
    assert str(out) in res.stdout and str(png) in res.stdout
    assert (out / MARKER).exists() and png.is_file()
    res = _cli("--out", str(out), "--ids", "6", "--cameras", "2", "--images-per-camera", "2", "--height", "64",
               "--width", "32", "--distractors", "1", "--junk", "1", "--quiet")
    assert res.returncode == 0 and "reused" in res.stdout


def test_cli_rejects_bad_values_without_a_traceback(tmp_path):
    res = _cli("--out", str(tmp_path / "x"), "--cameras", "12", "--quiet")
    assert res.returncode == 2
    assert "cameras" in res.stdout and "Traceback" not in res.stderr
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "a.txt").write_text("x")
    res = _cli("--out", str(tmp_path / "busy"), "--ids", "6", "--quiet")
    assert res.returncode == 2 and "not a synthetic set" in res.stdout and "Traceback" not in res.stderr


def test_edgereid_synth_command(tmp_path):
    exe = Path(sys.executable).parent / "edgereid"
    if not exe.exists():
        pytest.skip("the edgereid console script is not installed in this environment")
    out = tmp_path / "set"
    res = subprocess.run([str(exe), "synth", "--out", str(out), "--ids", "6", "--cameras", "2", "--height", "64",
                          "--width", "32", "--quiet"], capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert str(out) in res.stdout and (out / MARKER).exists()


def test_train_ids_sets_the_split_and_is_validated():
    train, test = split_identities(SynthConfig(ids=50, train_ids=40))
    assert len(train) == 40 and len(test) == 10 and not set(train) & set(test)
    assert sorted(train + test) == list(range(1, 51))
    half = split_identities(SynthConfig(ids=50))
    assert len(half[0]) == 25  # default: half
    with pytest.raises(ValueError, match="train_ids"):
        SynthConfig(ids=50, train_ids=49).validate()


def test_background_saturation_greys_the_street_but_not_the_person(tmp_path):
    grey = generate(small(tmp_path / "grey", ids=4, distractors=0, junk=0, background_saturation=0.0, camera_cast=0.0,
                          camera_light=0.0, max_noise=0.0), progress=False)
    colour = generate(small(tmp_path / "colour", ids=4, distractors=0, junk=0, background_saturation=1.0,
                            camera_cast=0.0, camera_light=0.0, max_noise=0.0), progress=False)

    def border_chroma(root: Path) -> float:  # colourfulness of the left/right 3-pixel borders (mostly background)
        vals = []
        for p in sorted((root / "bounding_box_train").glob("*.jpg")):
            x = np.asarray(Image.open(p).convert("RGB"), np.float32)
            edge = np.concatenate([x[:, :3], x[:, -3:]], 1)
            vals.append(float((edge.max(-1) - edge.min(-1)).mean()))
        return float(np.mean(vals))

    assert border_chroma(grey) < 6.0 < border_chroma(colour)
    with pytest.raises(ValueError, match="background_saturation"):
        SynthConfig(background_saturation=1.5).validate()
