"""Open-set operating points: a match/unknown threshold chosen for a stated false-accept rate, and
the true- and false-accept rates a threshold gives on queries whose identity is or is not enrolled.

Distances are what ``reid-runtime`` compares its threshold with: Euclidean between L2-normalised
embeddings (0..2). Definitions (open-set identification):

- a query of an **enrolled** identity is *truly accepted* when its nearest gallery entry is within
  the threshold and has its identity; within the threshold but another identity is a
  *misidentification*; beyond it, a *false reject*;
- a query of an identity **not enrolled** is *falsely accepted* when its nearest entry is within
  the threshold (it is matched to somebody), else correctly rejected.

TAR = true accepts / enrolled queries, FAR = false accepts / not-enrolled queries.

Calibration (``calibrate_threshold``) needs no query set: on a labelled calibration set (the
training split), every image's nearest other-identity image is what an unknown person's best match
looks like (an impostor distance) and its nearest same-identity image from another camera a genuine
one; the threshold lets ``far`` of the impostor distances through. numpy only.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["threshold_for_far", "nearest_genuine_impostor", "calibrate_threshold", "open_set_rates",
           "split_enrolled"]


def threshold_for_far(impostor: Any, far: float) -> float:
    """The distance threshold that accepts a fraction <= ``far`` of the ``impostor`` distances.

    With n impostor distances sorted ascending, k = floor(far * n) of them may pass: the threshold
    is halfway between the k-th smallest and the next larger distinct value (ties never let more
    than k through), or just below the smallest when nothing may pass. Never negative: when the
    smallest impostor distance is 0 the threshold is 0 (and ties at 0 are accepted).
    """
    d = np.sort(np.asarray(impostor, dtype=np.float64).ravel())
    if d.size == 0 or not np.all(np.isfinite(d)):
        raise ValueError(f"threshold_for_far needs finite impostor distances, got {d.size} values"
                         + ("" if d.size == 0 else " with non-finite ones"))
    if not 0.0 <= far < 1.0:
        raise ValueError(f"target false-accept rate must be in [0, 1), got {far}")
    k = int(np.floor(far * d.size + 1e-9))
    below = d[d < d[k]]  # values that may all pass without exceeding k
    if below.size == 0:
        return float(max(d[k] * (1.0 - 1e-6), 0.0))
    return float(0.5 * (below[-1] + d[k]))


def nearest_genuine_impostor(dist: np.ndarray, pids: np.ndarray, cams: np.ndarray | None = None
                             ) -> tuple[np.ndarray, np.ndarray]:
    """Leave-one-out within one labelled set of N images, from its (N, N) distance matrix.

    Returns (genuine, impostor), each (N,): the distance to the nearest *other* image of the same
    identity (from another camera when ``cams`` is given; inf when there is none) and to the
    nearest image of a different identity (inf when there is none).
    """
    dist = np.asarray(dist, dtype=np.float64)
    pids = np.asarray(pids)
    n = len(pids)
    if dist.shape != (n, n):
        raise ValueError(f"distance matrix is {dist.shape}, expected ({n}, {n}) for {n} labelled images")
    same = pids[:, None] == pids[None, :]
    genuine_ok = same & ~np.eye(n, dtype=bool)
    if cams is not None:
        cams = np.asarray(cams)
        genuine_ok &= cams[:, None] != cams[None, :]
    genuine = np.where(genuine_ok, dist, np.inf).min(1) if n else np.zeros(0)
    impostor = np.where(~same, dist, np.inf).min(1) if n else np.zeros(0)
    return genuine, impostor


def calibrate_threshold(embeddings: np.ndarray, pids: Any, cams: Any = None, far: float = 0.05) -> dict[str, Any]:
    """Threshold at the target false-accept rate ``far`` on a labelled calibration set.

    Also reports the genuine accept rate it gives there (an optimistic TAR when the set is the
    training split: the model has seen those people).
    """
    from .metrics import squared_l2_distmat

    e = np.asarray(embeddings, dtype=np.float32)
    pids = np.asarray(pids)
    if len(np.unique(pids)) < 2:
        raise ValueError("open-set calibration needs images of at least 2 identities")
    d = np.sqrt(np.maximum(squared_l2_distmat(e, e), 0.0))
    genuine, impostor = nearest_genuine_impostor(d, pids, cams)
    impostor = impostor[np.isfinite(impostor)]
    genuine = genuine[np.isfinite(genuine)]
    t = threshold_for_far(impostor, far)
    return {"threshold": t, "target_false_accept_rate": far,
            "calibration_false_accept_rate": float(np.mean(impostor <= t)),
            "calibration_true_accept_rate": float(np.mean(genuine <= t)) if genuine.size else None,
            "calibration_images": int(len(pids)), "calibration_identities": int(len(np.unique(pids)))}


def split_enrolled(identities: Any, fraction: float = 0.5, seed: int = 0) -> set:
    """A seeded ``fraction`` of the distinct ``identities`` (junk -1 and distractors 0 excluded): the
    people an open-set evaluation enrols; queries of the others are people the gallery does not know."""
    ids = sorted({i for i in np.asarray(identities).tolist() if i not in (-1, 0)})
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"enrolled fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    k = max(1, min(len(ids) - 1, int(round(fraction * len(ids))))) if len(ids) > 1 else len(ids)
    return set(np.asarray(ids)[rng.permutation(len(ids))[:k]].tolist())


def open_set_rates(dist: np.ndarray, q_ids: Any, g_ids: Any, threshold: float, enrolled: set | None = None,
                   q_cams: Any = None, g_cams: Any = None) -> dict[str, Any]:
    """TAR / misidentification / FAR of ``threshold`` for queries against a gallery.

    dist: (Q, G) Euclidean distances. ``enrolled``: the identities whose gallery entries count as
    enrolled (None = all of the gallery); entries of other identities are left out, so their
    queries are unknown people. With cameras given, a query's own-identity entries from its own
    camera are left out too (the Market-1501 rule), and a query whose identity then has no entry
    counts as not enrolled.
    """
    dist = np.asarray(dist, dtype=np.float64)
    q_ids, g_ids = np.asarray(q_ids), np.asarray(g_ids)
    if dist.shape != (len(q_ids), len(g_ids)):
        raise ValueError(f"distance matrix is {dist.shape}, expected ({len(q_ids)}, {len(g_ids)})")
    keep = np.ones(len(g_ids), dtype=bool) if enrolled is None else np.isin(g_ids, list(enrolled))
    keep &= g_ids != -1  # junk is nobody
    allowed = np.broadcast_to(keep, dist.shape).copy()
    if q_cams is not None and g_cams is not None:
        allowed &= ~((q_ids[:, None] == g_ids[None, :]) & (np.asarray(q_cams)[:, None] == np.asarray(g_cams)[None, :]))
    d = np.where(allowed, dist, np.inf)
    best = d.argmin(1) if d.shape[1] else np.zeros(len(q_ids), dtype=np.int64)
    best_d = d[np.arange(len(q_ids)), best] if d.shape[1] else np.full(len(q_ids), np.inf)
    known = ((allowed & (q_ids[:, None] == g_ids[None, :])).any(1)) & (q_ids > 0)
    accepted = best_d <= threshold
    correct = accepted & known & (g_ids[best] == q_ids) if d.shape[1] else np.zeros(len(q_ids), bool)
    n_known, n_unknown = int(known.sum()), int((~known).sum())
    return {
        "threshold": float(threshold),
        "enrolled_queries": n_known,
        "not_enrolled_queries": n_unknown,
        "true_accepts": int(correct.sum()),
        "misidentified": int((accepted & known & ~correct).sum()),
        "false_accepts": int((accepted & ~known).sum()),
        "true_accept_rate": float(correct.sum() / n_known) if n_known else None,
        "misidentification_rate": float((accepted & known & ~correct).sum() / n_known) if n_known else None,
        "false_accept_rate": float((accepted & ~known).sum() / n_unknown) if n_unknown else None,
    }
