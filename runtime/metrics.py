"""Re-identification accuracy under the standard Market-1501 protocol: CMC, mAP and mINP.

Protocol, per query:

- gallery samples with the query's identity AND camera are removed from its ranking (the same
  person seen by the same camera is too easy to count);
- junk samples (identity ``-1``) are removed from every ranking and are never a true match; a
  query with identity ``-1`` never has a true match;
- a query with no true match left is skipped (it counts in no average);
- the ranking sorts distances ascending with a STABLE sort, so equal distances are broken by
  gallery index (integer code distances tie often; the result must be reproducible);
- ``cmc[k]`` = fraction of valid queries with a true match in the top ``k + 1``; if a ranking is
  shorter than ``max_rank`` its last value carries on;
- AP = mean over the true matches of the precision at each match's rank; mAP = mean AP;
- INP = (number of true matches) / (rank of the last true match); mINP = mean INP (Ye et al.,
  "Deep Learning for Person Re-identification: A Survey and Outlook", 2021).

Everything is vectorised over blocks of queries (bounded temporary memory), so a full
Market-1501 evaluation (3,368 x 15,913) takes seconds.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["evaluate_rank", "evaluate_all", "squared_l2_distmat", "JUNK_PID"]

JUNK_PID = -1
_BLOCK_ELEMENTS = 1 << 20  # queries per block x gallery size: bounds the temporaries (~60 MB)


def squared_l2_distmat(q: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances (nq, ng) of float embeddings, in float64 (what evaluation ranks)."""
    q64, g64 = np.asarray(q, np.float64), np.asarray(g, np.float64)
    d = (q64 * q64).sum(1)[:, None] + (g64 * g64).sum(1)[None, :] - 2.0 * (q64 @ g64.T)
    return np.maximum(d, 0.0)


def _as_ids(x: Any, name: str, n: int | None, what: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array, got shape {a.shape}")
    if a.dtype.kind not in "iu":
        raise ValueError(f"{name}: expected integer ids, got dtype {a.dtype}")
    if n is not None and a.shape[0] != n:
        raise ValueError(f"{name}: expected {n} entries ({what}), got shape {a.shape}")
    return a.astype(np.int64, copy=False)


def _check(distmat: Any, q_pids: Any, g_pids: Any, q_camids: Any, g_camids: Any, max_rank: Any
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    d = np.asarray(distmat)
    if d.ndim != 2:
        raise ValueError(f"distmat: expected a 2-D array (num_query, num_gallery), got shape {d.shape}")
    if d.dtype.kind not in "iuf":
        raise ValueError(f"distmat: expected numeric distances, got dtype {d.dtype}")
    if d.dtype.kind == "f" and d.size and np.isnan(d).any():
        raise ValueError("distmat: contains NaN (a NaN distance has no place in a ranking)")
    nq, ng = d.shape
    qp = _as_ids(q_pids, "q_pids", nq, f"one per distmat row; distmat is {d.shape}")
    gp = _as_ids(g_pids, "g_pids", ng, f"one per distmat column; distmat is {d.shape}")
    qc = _as_ids(q_camids, "q_camids", nq, f"one per distmat row; distmat is {d.shape}")
    gc = _as_ids(g_camids, "g_camids", ng, f"one per distmat column; distmat is {d.shape}")
    if isinstance(max_rank, (bool, np.bool_)) or not isinstance(max_rank, (int, np.integer)) or max_rank < 1:
        raise ValueError(f"max_rank: expected a positive integer, got {max_rank!r}")
    return d, qp, gp, qc, gc, int(max_rank)


def _stable_order(d: np.ndarray) -> np.ndarray:
    """``argsort(d, axis=1, kind="stable")``, computed faster.

    numpy's default (SIMD) sort is several times faster than its stable sort but orders ties
    arbitrarily. Integer distances (ties are common) are made unique by appending the column
    index to the key. Float rows are sorted fast; in rows that contain ties, a second fast sort
    on (run of equal values, column index) puts each run in column order.
    """
    n = d.shape[1]
    idx = np.arange(n, dtype=np.int64)
    if d.dtype.kind in "iu":
        lo, hi = int(d.min()), int(d.max())
        if (hi - lo + 1) * n < 2**62:
            return np.argsort((d.astype(np.int64) - lo) * n + idx, axis=1)
        return np.argsort(d, axis=1, kind="stable")
    order = np.argsort(d, axis=1)
    s = np.take_along_axis(d, order, axis=1)
    same = s[:, 1:] == s[:, :-1]
    ties = same.any(axis=1)
    if ties.any():
        o = order[ties]
        run = np.zeros(o.shape, np.int64)
        np.cumsum(~same[ties], axis=1, out=run[:, 1:])
        fix = np.argsort(run * n + o, axis=1)
        order[ties] = np.take_along_axis(o, fix, axis=1)
    return order


def _per_query(d: np.ndarray, qp: np.ndarray, gp: np.ndarray, qc: np.ndarray, gc: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(first-match rank, AP, INP, valid) per query; ranks are 1-based among kept samples."""
    nq, ng = d.shape
    first = np.zeros(nq, np.int64)
    ap = np.zeros(nq, np.float64)
    inp = np.zeros(nq, np.float64)
    valid = np.zeros(nq, bool)
    if ng == 0:
        return first, ap, inp, valid
    step = max(1, _BLOCK_ELEMENTS // ng)
    gp_junk = gp == JUNK_PID
    for s in range(0, nq, step):
        e = min(nq, s + step)
        order = _stable_order(d[s:e])
        p, c = gp[order], gc[order]
        same_id = p == qp[s:e, None]
        keep = ~((same_id & (c == qc[s:e, None])) | gp_junk[order])
        good = same_id & keep & (qp[s:e, None] != JUNK_PID)
        rank = np.cumsum(keep, axis=1)  # 1-based rank among kept samples (at kept positions)
        hits = np.cumsum(good, axis=1)  # true matches so far
        n_good = hits[:, -1]
        ok = n_good > 0
        # precision at each true match, summed per query
        prec = np.where(good, hits / np.maximum(rank, 1), 0.0).sum(axis=1)
        first_pos = np.argmax(good, axis=1)
        last_pos = ng - 1 - np.argmax(good[:, ::-1], axis=1)
        rows = np.arange(e - s)
        first[s:e] = rank[rows, first_pos]
        ap[s:e] = np.where(ok, prec / np.maximum(n_good, 1), 0.0)
        inp[s:e] = np.where(ok, n_good / rank[rows, last_pos], 0.0)
        valid[s:e] = ok
    return first, ap, inp, valid


def _no_valid_error(nq: int) -> ValueError:
    return ValueError(f"no valid query: none of the {nq} queries has a true match in the gallery after removing "
                      "same-identity same-camera samples and junk (identity -1); check the query/gallery split")


def evaluate_rank(distmat: Any, q_pids: Any, g_pids: Any, q_camids: Any, g_camids: Any,
                  max_rank: int = 50) -> tuple[np.ndarray, float]:
    """CMC curve (float64, ``max_rank`` values) and mAP under the Market-1501 protocol.

    ``distmat`` (num_query, num_gallery): smaller is closer (any numeric dtype; integer code
    distances are ranked exactly). Raises ValueError when no query is valid.
    """
    d, qp, gp, qc, gc, max_rank = _check(distmat, q_pids, g_pids, q_camids, g_camids, max_rank)
    first, ap, _, valid = _per_query(d, qp, gp, qc, gc)
    if not valid.any():
        raise _no_valid_error(d.shape[0])
    f = first[valid]
    cmc = (f[None, :] <= np.arange(1, max_rank + 1)[:, None]).mean(axis=1)
    return cmc.astype(np.float64), float(ap[valid].mean())


def evaluate_all(distmat: Any, q_pids: Any, g_pids: Any, q_camids: Any, g_camids: Any,
                 max_rank: int = 50) -> dict[str, float]:
    """``{rank1, rank5, rank10, mAP, mINP, num_valid_queries}`` (fractions in [0, 1])."""
    d, qp, gp, qc, gc, max_rank = _check(distmat, q_pids, g_pids, q_camids, g_camids, max_rank)
    first, ap, inp, valid = _per_query(d, qp, gp, qc, gc)
    if not valid.any():
        raise _no_valid_error(d.shape[0])
    f = first[valid]
    return {
        "rank1": float((f <= 1).mean()),
        "rank5": float((f <= 5).mean()),
        "rank10": float((f <= 10).mean()),
        "mAP": float(ap[valid].mean()),
        "mINP": float(inp[valid].mean()),
        "num_valid_queries": int(valid.sum()),
    }
