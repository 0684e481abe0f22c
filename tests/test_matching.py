"""Best match per identity and the open-set decision."""

from __future__ import annotations

import numpy as np
import pytest
from edgereid.runtime import codec, search
from edgereid.runtime.codec import CodecSpec
from edgereid.runtime.matching import (
    aggregate_by_identity,
    apply_open_set,
    open_set_decision,
    topk_per_identity,
)

FILL = search.INT_DISTANCE_FILL


def test_aggregate_keeps_each_identitys_best_row() -> None:
    rows = np.array([[4, 2, 7, 1, 3], [9, -1, -1, -1, -1]])
    dist = np.array([[1, 2, 2, 5, 6], [3, FILL, FILL, FILL, FILL]])
    ident = {4: "ann", 2: "bob", 7: "ann", 1: "cy", 3: "bob", 9: 17}
    ids, r, d, complete = aggregate_by_identity(rows, dist, lambda rr: [ident[int(x)] for x in rr], 3)
    assert ids.tolist() == [["ann", "bob", "cy"], [17, None, None]]
    assert r.tolist() == [[4, 2, 1], [9, -1, -1]]
    assert d.tolist() == [[1, 2, 5], [3, FILL, FILL]]
    assert complete.tolist() == [True, True]  # row list 2 held every valid row (it ends in -1)
    # too short a list: only 2 identities in 3 rows, more rows may exist
    ids, _, _, complete = aggregate_by_identity(rows[:1, :3], dist[:1, :3], np.array([0, 0, "x", 0, "y", 0, 0, "x", 0, 0], object), 3)
    assert ids.tolist() == [["y", "x", None]] and complete.tolist() == [False]


def test_topk_per_identity_equals_brute_force() -> None:
    spec = CodecSpec(16, 8, 0.05)
    rng = np.random.default_rng(3)
    n = 2000
    ident = rng.integers(0, 40, n)  # 40 identities, ~50 entries each: a 2k-row list is never enough
    centres = codec.l2_normalize(rng.standard_normal((40, 16)))
    x = codec.l2_normalize(centres[ident] + 0.3 * rng.standard_normal((n, 16)))
    g = codec.quantize(x, spec)
    q = codec.quantize(codec.l2_normalize(centres[:5] + 0.3 * rng.standard_normal((5, 16))), spec)
    calls = []

    def make_blocks():
        calls.append(1)
        return ((s, g[s : s + 500], None) for s in range(0, n, 500))

    ids, rows, dist = topk_per_identity(q, make_blocks, spec, 6, ident, oversample=1)
    assert len(calls) > 1  # the first short list was too short: the search deepened
    d = codec.pairwise_distances(q, g, spec)
    for i in range(5):
        best = {}
        for r in np.argsort(d[i], kind="stable"):
            best.setdefault(int(ident[r]), (int(d[i, r]), int(r)))
        ranked = sorted(best.items(), key=lambda kv: kv[1])[:6]
        assert ids[i].tolist() == [p for p, _ in ranked]
        assert rows[i].tolist() == [r for _, (_, r) in ranked]
        assert dist[i].tolist() == [dd for _, (dd, _) in ranked]


def test_open_set_decision() -> None:
    d = np.array([[10, 25, FILL]])
    assert open_set_decision(d, 20).tolist() == [[True, False, False]]
    assert open_set_decision(d, FILL).tolist() == [[True, True, False]]  # a missing match is never accepted
    assert open_set_decision(np.array([0.5, np.inf]), np.inf).tolist() == [True, False]
    ids = np.array([["ann", "bob", None]], object)
    assert apply_open_set(ids, d, 20, unknown="?").tolist() == [["ann", "?", "?"]]
    with pytest.raises(ValueError, match="threshold must be a number"):
        open_set_decision(d, float("nan"))
    with pytest.raises(ValueError, match="distances must be numeric"):
        open_set_decision(np.array(["a"]), 1.0)
