"""The no-learning baselines: the raw-pixel nearest neighbour, the table of kinds, the verdict, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from edgereid.runtime.bundle import InputSpec
from edgereid.runtime.preprocess import Preprocessor
from edgereid.train.baselines import (
    BASELINES,
    attach,
    compare,
    read_baselines,
    resolve_baselines,
    run_baselines,
    summary_lines,
    write_baselines,
)
from edgereid.train.pixel_baseline import PixelConfig, distmat, features, run_pixel_baseline
from PIL import Image

BIN = Path(sys.executable).parent


def _shape_image(kind: int, seed: int, size=(64, 32)) -> Image.Image:
    """Grey images told apart only by a bright shape's position: no colour cue, a clear pixel cue."""
    rng = np.random.default_rng(seed)
    h, w = size
    img = np.full((h, w, 3), 90.0) + rng.normal(0, 8, (h, w, 3))
    y = (kind * 13) % (h - 16)
    x = (kind * 7) % (w - 10)
    img[y:y + 16, x:x + 10] = 220
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def write_shape_market(root: Path, ids: int = 4) -> Path:
    for folder in ("bounding_box_train", "bounding_box_test", "query"):
        (root / folder).mkdir(parents=True)
    for pid in range(1, ids + 1):
        _shape_image(pid, pid).save(root / "bounding_box_train" / f"{pid + 50:04d}_c1s1_000001_01.jpg")
        _shape_image(pid, 100 + pid).save(root / "query" / f"{pid:04d}_c1s1_000001_01.jpg")
        for cam in (2, 3):
            _shape_image(pid, 10 * pid + cam).save(root / "bounding_box_test" / f"{pid:04d}_c{cam}s1_000002_01.jpg")
    _shape_image(1, 999).save(root / "bounding_box_test" / "-1_c2s1_000004_01.jpg")  # junk: ignored
    return root


def test_pixel_features_are_the_runtime_input_tensor_normalised(tmp_path):
    path = tmp_path / "a.png"
    _shape_image(1, 0, size=(80, 40)).save(path)
    cfg = PixelConfig(size=(32, 16))
    f = features([str(path)], cfg)
    expected = Preprocessor(InputSpec(height=32, width=16))(str(path)).ravel()
    assert f.shape == (1, 3 * 32 * 16) and f.dtype == np.float32
    assert np.allclose(f[0], expected / np.linalg.norm(expected), atol=1e-6)


def test_blocked_distances_equal_one_block(tmp_path):
    paths = []
    for i in range(7):
        paths.append(str(tmp_path / f"{i}.png"))
        _shape_image(i % 3, i).save(paths[-1])
    one = distmat(paths[:2], paths, PixelConfig(size=(32, 16), block=1000))
    blocked = distmat(paths[:2], paths, PixelConfig(size=(32, 16), block=2))
    assert np.allclose(one, blocked, atol=1e-5)
    assert one[0, 0] == pytest.approx(0.0, abs=1e-5) and one.min() >= 0


def test_pixel_baseline_ranks_an_easy_case_correctly_and_the_histogram_cannot(tmp_path):
    root = write_shape_market(tmp_path / "m")
    pix = run_pixel_baseline("market1501", root, PixelConfig(size=(64, 32)))
    assert pix["method"] == "raw_pixels" and pix["rank1"] == 1.0 and pix["mAP"] == 1.0
    assert pix["num_query"] == 4 and pix["num_gallery"] == 8  # junk dropped
    doc = run_baselines("market1501", root, size=(64, 32))
    assert set(doc["baselines"]) == set(BASELINES)
    assert doc["baselines"]["histogram"]["mAP"] < 1.0  # same colours everywhere: a histogram is lost


def test_bad_pixel_config_and_unknown_kind_are_refused(tmp_path):
    with pytest.raises(ValueError, match="PixelConfig.size"):
        PixelConfig(size=(2, 2)).validate()
    with pytest.raises(ValueError, match="baseline kinds"):
        run_baselines("market1501", tmp_path, kinds=["colour"])


def test_verdict_says_plainly_when_the_model_loses():
    baselines = {"histogram": {"rank1": 0.1, "mAP": 0.107}, "pixels": {"rank1": 0.8, "mAP": 0.75}}
    weak = {"rank1": 0.2, "mAP": 0.155}
    verdicts = {v.kind: v for v in compare(weak, baselines)}
    assert verdicts["histogram"].beaten and not verdicts["pixels"].beaten
    text = "\n".join(summary_lines("the model", weak, baselines))
    assert "WARNING: the model does NOT beat the raw pixels baseline: mAP 0.155 vs 0.750" in text
    assert "the model beats the colour histogram baseline" in text
    strong = attach({"x": 1}, {"rank1": 0.9, "mAP": 0.8}, baselines)
    assert strong["beats_baselines"] == {"histogram": True, "pixels": True}
    assert strong["baselines"]["pixels"]["mAP"] == 0.75 and strong["x"] == 1
    # equal mAP is not a win; neither is a higher mAP with a lower rank-1
    assert not compare({"rank1": 0.9, "mAP": 0.75}, baselines)[1].beaten
    assert not compare({"rank1": 0.7, "mAP": 0.76}, baselines)[1].beaten


def test_baselines_file_round_trip_and_bad_files(tmp_path):
    doc = {"format": "edgereid-baselines", "version": 1, "baselines": {"pixels": {"rank1": 0.5, "mAP": 0.4}}}
    path = write_baselines(tmp_path / "sub" / "b.json", doc)
    assert read_baselines(path) == doc["baselines"]
    assert resolve_baselines(str(path), "market1501", tmp_path, (64, 32)) == doc["baselines"]
    assert resolve_baselines("none", "market1501", tmp_path, (64, 32)) == {}
    old = tmp_path / "hist.json"  # what `edgereid baseline` wrote before there were several kinds
    old.write_text(json.dumps({"method": "colour_histogram", "rank1": 0.01, "mAP": 0.01}))
    assert read_baselines(old) == {"histogram": {"method": "colour_histogram", "rank1": 0.01, "mAP": 0.01}}
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json: not valid JSON"):
        read_baselines(bad)
    bad.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match="field format"):
        read_baselines(bad)
    with pytest.raises(FileNotFoundError, match="--baselines"):
        resolve_baselines(str(tmp_path / "missing.json"), "market1501", tmp_path, (64, 32))


def test_edgereid_baseline_pixels_command_writes_its_json(tmp_path):
    exe = BIN / "edgereid"
    if not exe.exists():
        pytest.skip("the edgereid console script is not installed in this environment")
    root = write_shape_market(tmp_path / "m")
    out = tmp_path / "out" / "pixels.json"
    res = subprocess.run([str(exe), "baseline", "--kind", "pixels", "--img", "64x32", "--data", str(root), "--out", str(out)],
                         capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"wrote {out}" in res.stdout and "raw pixels" in res.stdout
    doc = json.loads(out.read_text())
    assert list(doc["baselines"]) == ["pixels"] and doc["baselines"]["pixels"]["rank1"] == 1.0
    assert doc["baselines"]["pixels"]["config"]["size"] == [64, 32]
    res = subprocess.run([str(exe), "baseline", "--kind", "colour", "--data", str(root)], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 2 and "invalid choice: 'colour'" in res.stderr
