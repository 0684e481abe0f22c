"""Open-set operating points: a threshold for a stated false-accept rate, TAR/FAR of a threshold on
queries of enrolled and not-enrolled people, and the exporter's calibration (gallery or training split)."""

import numpy as np
import pytest
from edgereid.runtime.open_set import (
    calibrate_threshold,
    nearest_genuine_impostor,
    open_set_rates,
    split_enrolled,
    threshold_for_far,
)


def test_threshold_for_far_lets_the_stated_fraction_of_impostors_through():
    imp = np.arange(1, 101, dtype=np.float64) / 100  # 0.01 .. 1.00
    for far in (0.0, 0.01, 0.05, 0.5):
        t = threshold_for_far(imp, far)
        assert np.mean(imp <= t) == pytest.approx(far)
    assert threshold_for_far(imp, 0.05) == pytest.approx(0.055)
    with pytest.raises(ValueError, match="false-accept rate"):
        threshold_for_far(imp, 1.0)
    with pytest.raises(ValueError, match="finite impostor distances"):
        threshold_for_far([], 0.1)


def test_genuine_and_impostor_are_leave_one_out_and_cross_camera():
    # 1-D points: identity 1 at 0.0 (cam 1), 0.1 (cam 1), 0.3 (cam 2); identity 2 at 1.0 (cam 1)
    x = np.array([0.0, 0.1, 0.3, 1.0])
    d = np.abs(x[:, None] - x[None, :])
    gen, imp = nearest_genuine_impostor(d, np.array([1, 1, 1, 2]), np.array([1, 1, 2, 1]))
    assert gen.tolist() == pytest.approx([0.3, 0.2, 0.2, np.inf])  # same-camera twins do not count
    assert imp.tolist() == pytest.approx([1.0, 0.9, 0.7, 0.7])


def test_calibrated_threshold_separates_clusters():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(10, 8))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    pids = np.repeat(np.arange(1, 11), 4)
    cams = np.tile([1, 2, 1, 2], 10)
    emb = centres[pids - 1] + rng.normal(scale=0.02, size=(40, 8))
    res = calibrate_threshold(emb, pids, cams, far=0.0)
    assert res["calibration_false_accept_rate"] == 0.0 and res["calibration_true_accept_rate"] == 1.0
    assert res["target_false_accept_rate"] == 0.0 and res["calibration_identities"] == 10


def test_open_set_rates_count_enrolled_and_unknown_queries():
    # gallery: identities 1, 2, 3 at 0, 10, 20 (cameras 2); queries near 1, near 2 (but beyond the
    # threshold), near 3 (not enrolled), and an identity the gallery never had
    g = np.array([0.0, 10.0, 20.0])
    g_ids = np.array([1, 2, 3])
    q = np.array([0.5, 12.5, 20.2, 5.2])
    q_ids = np.array([1, 2, 3, 9])
    d = np.abs(q[:, None] - g[None, :])
    res = open_set_rates(d, q_ids, g_ids, threshold=1.0, enrolled={1, 2})
    assert res["enrolled_queries"] == 2 and res["not_enrolled_queries"] == 2
    assert res["true_accepts"] == 1 and res["true_accept_rate"] == 0.5  # query 2 is rejected (2.5 > 1)
    assert res["false_accepts"] == 0 and res["false_accept_rate"] == 0.0  # query 3's own entry is not enrolled
    loose = open_set_rates(d, q_ids, g_ids, threshold=6.0, enrolled={1, 2})
    assert loose["true_accept_rate"] == 1.0 and loose["false_accepts"] == 1  # query 9 matched to somebody at 4.8
    # query 3 near identity 3's entry, which is out: its nearest enrolled one is 2 at 10.2 > 6
    # the Market rule: a query's own-camera entries of its own identity are left out
    same_cam = open_set_rates(d, q_ids, g_ids, 1.0, None, q_cams=np.array([2, 1, 1, 1]), g_cams=np.array([2, 2, 2]))
    assert same_cam["enrolled_queries"] == 2 and same_cam["not_enrolled_queries"] == 2
    with pytest.raises(ValueError, match="distance matrix"):
        open_set_rates(d[:2], q_ids, g_ids, 1.0)


def test_split_enrolled_is_seeded_and_skips_junk_and_distractors():
    ids = [-1, 0, 1, 2, 3, 4, 5, 6]
    a, b = split_enrolled(ids, 0.5, seed=3), split_enrolled(ids, 0.5, seed=3)
    assert a == b and len(a) == 3 and a <= {1, 2, 3, 4, 5, 6}
    with pytest.raises(ValueError, match="fraction"):
        split_enrolled(ids, 1.0)


def test_export_calibrates_on_training_identities(tmp_path):
    pytest.importorskip("onnx")
    from edgereid.data import build_dataset
    from edgereid.export.accuracy import calibrate_open_set
    from market_tree import write_market_tree

    root = write_market_tree(tmp_path / "m", train_ids=6, test_ids=4)

    ds = build_dataset("market1501", root)
    spec = {"height": 32, "width": 16, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
            "channel_order": "RGB", "layout": "NCHW", "resize": "bilinear", "scale": 1 / 255}
    seen = []

    def runner(x):  # mean colour of the top and bottom halves: enough to tell these people apart
        seen.append(len(x))
        return np.concatenate([x[:, :, :16].mean((2, 3)), x[:, :, 16:].mean((2, 3))], 1).astype(np.float32)

    res = calibrate_open_set(ds.train, spec, runner, far=0.05, max_images=12, source="train")
    assert res["threshold"] is not None and res["target_false_accept_rate"] == 0.05
    assert res["calibration_images"] == sum(seen) >= 12 and res["calibration_identities"] >= 2
    assert "training split" in res["source"] and res["calibration_source"] == "train"
    gal = calibrate_open_set(ds.gallery, spec, runner, far=0.05)  # the default: people the model never saw
    # half of the gallery's people (distractors and junk left out), named so that eval leaves them out
    test_pids = {r[1] for r in ds.gallery if r[1] > 0}
    assert gal["calibration_source"] == "gallery" and gal["calibration_identities"] == 2 == len(test_pids) // 2
    assert set(gal["calibration_pids"]) < test_pids
    assert "calibration_pids" not in res  # training identities are never measured on
    with pytest.raises(ValueError, match="calibration source"):
        calibrate_open_set(ds.train, spec, runner, source="query")


def test_ties_never_let_more_than_the_target_through():
    imp = np.array([0.3, 0.5, 0.5, 0.5, 0.9, 1.0, 1.0, 1.0, 1.2, 1.5])
    t = threshold_for_far(imp, 0.2)  # k = 2, but 0.5 appears three times
    assert np.mean(imp <= t) <= 0.2 and t == pytest.approx(0.4)
    assert threshold_for_far(np.zeros(4), 0.0) == 0.0  # never negative


def test_eval_measures_the_threshold_on_people_it_was_not_calibrated_on():
    from edgereid.runtime.folder_eval import open_set_on_queries

    # identities 1..8, one query (camera 1) and one gallery entry (camera 2) each, all far apart
    ids = np.arange(1, 9)
    x = ids * 10.0
    d = np.abs(x[:, None] - x[None, :]) + 0.5  # own entry at 0.5, others >= 10.5
    manifest = {"threshold": 1.0, "target_false_accept_rate": 0.05, "calibration_pids": [1, 2, 3, 4]}
    res = open_set_on_queries(d, ids, ids, np.ones(8, int), np.full(8, 2), manifest)
    assert res["calibration_identities_left_out"] == 4
    assert res["enrolled_queries"] + res["not_enrolled_queries"] == 4  # only identities 5..8 measured
    assert res["enrolled_identities"] == 2 and res["true_accept_rate"] == 1.0 and res["false_accept_rate"] == 0.0
    everyone = open_set_on_queries(d, ids, ids, np.ones(8, int), np.full(8, 2), {"threshold": 1.0})
    assert everyone["enrolled_queries"] + everyone["not_enrolled_queries"] == 8
    assert everyone["calibration_identities_left_out"] == 0
    assert open_set_on_queries(d, ids, ids, np.ones(8, int), np.full(8, 2), {}) is None  # no threshold
