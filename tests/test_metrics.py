"""Market-1501 protocol metrics: hand-computed cases, protocol rules, and a naive reference."""

from __future__ import annotations

import numpy as np
import pytest
from edgereid.runtime import metrics
from edgereid.runtime.metrics import evaluate_all, evaluate_rank


def naive_market1501(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50):
    """Straightforward per-query loop of the protocol, written independently as the reference."""
    cmcs, aps, inps = [], [], []
    for i in range(distmat.shape[0]):
        ranked = sorted(range(distmat.shape[1]), key=lambda j: (distmat[i, j], j))
        hits = []
        for j in ranked:
            if g_pids[j] == -1:
                continue  # junk
            if g_pids[j] == q_pids[i] and g_camids[j] == q_camids[i]:
                continue  # same identity, same camera
            hits.append(bool(g_pids[j] == q_pids[i] and q_pids[i] != -1))
        if not any(hits):
            continue
        first = hits.index(True) + 1
        cmcs.append([1.0 if first <= r else 0.0 for r in range(1, max_rank + 1)])
        found, precisions = 0, []
        for pos, h in enumerate(hits, start=1):
            if h:
                found += 1
                precisions.append(found / pos)
        last = max(pos for pos, h in enumerate(hits, start=1) if h)
        aps.append(sum(precisions) / found)
        inps.append(found / last)
    return np.mean(cmcs, axis=0), float(np.mean(aps)), float(np.mean(inps)), len(aps)


def test_hand_computed_single_query() -> None:
    # gallery:        pid  cam  dist
    #   0              1    1   0.3   true match
    #   1              2    1   0.1   distractor
    #   2              1    0   0.05  same pid + same camera as the query -> removed
    #   3              1    2   0.5   true match
    #   4             -1    1   0.2   junk -> removed
    #   5              3    2   0.4   distractor
    # kept ranking: g1 (miss), g0 (hit at 2), g5 (miss), g3 (hit at 4)
    d = np.array([[0.3, 0.1, 0.05, 0.5, 0.2, 0.4]])
    g_pids, g_cams = [1, 2, 1, 1, -1, 3], [1, 1, 0, 2, 1, 2]
    cmc, mAP = evaluate_rank(d, np.array([1]), np.array(g_pids), np.array([0]), np.array(g_cams), max_rank=5)
    np.testing.assert_array_equal(cmc, [0, 1, 1, 1, 1])
    assert mAP == pytest.approx((1 / 2 + 2 / 4) / 2)  # 0.5
    m = evaluate_all(d, np.array([1]), np.array(g_pids), np.array([0]), np.array(g_cams))
    assert m == {"rank1": 0.0, "rank5": 1.0, "rank10": 1.0, "mAP": pytest.approx(0.5), "mINP": pytest.approx(2 / 4),
                 "num_valid_queries": 1}


def test_two_queries_average_and_invalid_query_skipped() -> None:
    g_pids = np.array([1, 2, 3, 1])
    g_cams = np.array([1, 1, 1, 0])
    q_pids = np.array([1, 2, 7])  # pid 7 is not in the gallery: skipped
    q_cams = np.array([0, 0, 0])
    d = np.array([[0.1, 0.2, 0.3, 0.0],    # g3 same pid+cam removed; g0 hit at rank 1 -> AP 1
                  [0.1, 0.3, 0.2, 0.4],    # g1 at rank 3 -> AP 1/3
                  [0.1, 0.2, 0.3, 0.4]])
    cmc, mAP = evaluate_rank(d, q_pids, g_pids, q_cams, g_cams, max_rank=4)
    np.testing.assert_allclose(cmc, [0.5, 0.5, 1.0, 1.0])
    assert mAP == pytest.approx((1 + 1 / 3) / 2)
    assert evaluate_all(d, q_pids, g_pids, q_cams, g_cams)["num_valid_queries"] == 2


def test_same_camera_other_identity_is_kept_as_a_distractor() -> None:
    # a different identity seen by the query's camera still competes (only same pid+cam is removed)
    d = np.array([[0.1, 0.2]])
    cmc, mAP = evaluate_rank(d, np.array([5]), np.array([9, 5]), np.array([2]), np.array([2, 3]), max_rank=2)
    np.testing.assert_array_equal(cmc, [0, 1])
    assert mAP == pytest.approx(0.5)


def test_junk_never_matches_and_does_not_push_ranks() -> None:
    d = np.array([[0.0, 0.1, 0.2], [0.0, 0.1, 0.2]])
    g_pids, g_cams = np.array([-1, 4, -1]), np.array([1, 1, 1])
    # query pid 4: the junk at distance 0 is removed, so the true match is rank 1
    cmc, mAP = evaluate_rank(d[:1], np.array([4]), g_pids, np.array([0]), g_cams, max_rank=1)
    assert cmc.tolist() == [1.0] and mAP == 1.0
    # a junk query (pid -1) has no true match even against junk gallery samples: skipped
    m = evaluate_all(d, np.array([4, -1]), g_pids, np.array([0, 0]), g_cams)
    assert m["num_valid_queries"] == 1


def test_all_queries_invalid_is_a_clear_error() -> None:
    d = np.zeros((2, 2))
    with pytest.raises(ValueError, match="no valid query"):
        evaluate_rank(d, np.array([1, 2]), np.array([1, 2]), np.array([0, 0]), np.array([0, 0]))
    with pytest.raises(ValueError, match="no valid query"):
        evaluate_all(d, np.array([1, 2]), np.array([3, 4]), np.array([0, 0]), np.array([1, 1]))


def test_ties_broken_by_gallery_index() -> None:
    d = np.array([[7, 7, 7]], dtype=np.int64)  # integer code distances tie
    q, qc, gc = np.array([1]), np.array([0]), np.array([1, 1, 1])
    cmc, mAP = evaluate_rank(d, q, np.array([2, 1, 3]), qc, gc, max_rank=3)
    np.testing.assert_array_equal(cmc, [0, 1, 1])
    assert mAP == pytest.approx(0.5)
    cmc, mAP = evaluate_rank(d, q, np.array([1, 2, 3]), qc, gc, max_rank=3)
    np.testing.assert_array_equal(cmc, [1, 1, 1])
    assert mAP == 1.0


def test_short_gallery_pads_with_last_value() -> None:
    d = np.array([[0.3, 0.1, 0.2]])
    cmc, _ = evaluate_rank(d, np.array([1]), np.array([2, 3, 1]), np.array([0]), np.array([1, 1, 1]), max_rank=50)
    assert cmc.shape == (50,)
    np.testing.assert_array_equal(cmc[:3], [0, 1, 1])  # ranking: g1, g2 (match), g0
    assert (cmc[3:] == 1).all()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_naive_reference_on_random_data(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(seed)
    nq, ng = 40, 120
    q_pids = rng.integers(-1, 15, nq)
    g_pids = rng.integers(-1, 15, ng)
    q_cams, g_cams = rng.integers(0, 3, nq), rng.integers(0, 3, ng)
    d = rng.integers(0, 30, (nq, ng))  # small integer range: many ties
    if seed == 2:
        d = d.astype(np.float32) / 7
    monkeypatch.setattr(metrics, "_BLOCK_ELEMENTS", 1000)  # several query blocks
    cmc, mAP = evaluate_rank(d, q_pids, g_pids, q_cams, g_cams, max_rank=20)
    m = evaluate_all(d, q_pids, g_pids, q_cams, g_cams)
    ref_cmc, ref_map, ref_minp, ref_n = naive_market1501(d, q_pids, g_pids, q_cams, g_cams, max_rank=20)
    np.testing.assert_allclose(cmc, ref_cmc, rtol=0, atol=1e-12)
    assert mAP == pytest.approx(ref_map, abs=1e-12)
    assert m["mINP"] == pytest.approx(ref_minp, abs=1e-12)
    assert m["num_valid_queries"] == ref_n
    assert (m["rank1"], m["rank5"], m["rank10"]) == pytest.approx((ref_cmc[0], ref_cmc[4], ref_cmc[9]))


def test_input_errors_name_array_and_shape() -> None:
    d = np.zeros((2, 3))
    ok = dict(q_pids=np.array([1, 2]), g_pids=np.array([1, 2, 3]), q_camids=np.array([0, 0]), g_camids=np.array([1, 1, 1]))
    with pytest.raises(ValueError, match=r"q_pids: expected 2 entries .* got shape \(3,\)"):
        evaluate_rank(d, **{**ok, "q_pids": np.array([1, 2, 3])})
    with pytest.raises(ValueError, match=r"g_camids: expected 3 entries .*distmat is \(2, 3\).* got shape \(2,\)"):
        evaluate_rank(d, **{**ok, "g_camids": np.array([1, 1])})
    with pytest.raises(ValueError, match=r"distmat: expected a 2-D array .* got shape \(6,\)"):
        evaluate_rank(d.ravel(), **ok)
    with pytest.raises(ValueError, match="NaN"):
        evaluate_all(np.full((2, 3), np.nan), **ok)
    with pytest.raises(ValueError, match="g_pids: expected integer ids, got dtype float64"):
        evaluate_rank(d, **{**ok, "g_pids": np.array([1.0, 2.0, 3.0])})
    with pytest.raises(ValueError, match="max_rank"):
        evaluate_rank(d, **ok, max_rank=0)


@pytest.mark.parametrize("kind", ["int", "int_huge", "float32_ties", "float64", "signed_zero"])
def test_fast_order_equals_stable_argsort(kind: str) -> None:
    rng = np.random.default_rng(4)
    if kind == "int":
        d = rng.integers(-5, 20, (30, 500))
    elif kind == "int_huge":
        d = rng.integers(-(2**62), 2**62, (5, 50))  # too wide for the composite key: stable sort
        d[:, ::2] = d[:, 1::2]
    elif kind == "float32_ties":
        d = (rng.integers(0, 40, (30, 500)) / 7).astype(np.float32)
    elif kind == "float64":
        d = rng.random((30, 500))
        d[:5, :10] = 0.25  # ties in some rows only
    else:
        d = np.array([[0.0, -0.0, 1.0, 0.0, -0.0]])
    np.testing.assert_array_equal(metrics._stable_order(d), np.argsort(d, axis=1, kind="stable"))
