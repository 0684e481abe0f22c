"""ReID accuracy of several runners of one model on a data set's query/gallery, in one pass.

Every runner gets the same tensors (the runtime's preprocessing, as on the device), so torch,
onnxruntime and OpenVINO are compared on identical inputs. Integer-code outputs are
dequantised (``scale * q``) before distances. Metrics: ``edgereid.runtime.metrics.evaluate_all``
(standard Market-1501 protocol); the cosine of each runner's embeddings to the reference runner's
is recorded beside them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from edgereid.calibration.calib_set import load_calibration_images
from edgereid.runtime.metrics import squared_l2_distmat

from .parity import cosine_stats
from .runners import Runner


def embed_records(records: Sequence[tuple[str, int, int]], input_spec: dict[str, Any], runners: dict[str, Runner],
                  chunk: int = 64, code_scale: dict[str, float] | None = None) -> dict[str, np.ndarray]:
    """``{runner name: (N, dim) float embeddings}``; ``code_scale[name]`` dequantises integer outputs.

    Runner after runner (not interleaved per chunk): on a small CPU, switching between runtimes
    leaves one's spinning worker threads competing with the next one's (torch after OpenVINO ran
    50x slower here). Images are re-read per runner, so memory stays one chunk.
    """
    code_scale = code_scale or {}
    result: dict[str, np.ndarray] = {}
    for name, run in runners.items():
        parts = []
        for i in range(0, len(records), chunk):
            x = load_calibration_images([r[0] for r in records[i:i + chunk]], input_spec)
            y = np.asarray(run(x))
            if name in code_scale:
                y = y.astype(np.float32) * np.float32(code_scale[name])
            parts.append(y.astype(np.float32))
        result[name] = np.concatenate(parts)
    return result


def evaluate_runners(query: Sequence[tuple[str, int, int]], gallery: Sequence[tuple[str, int, int]],
                     input_spec: dict[str, Any], runners: dict[str, Runner], reference: str,
                     code_scale: dict[str, float] | None = None) -> dict[str, dict[str, float]]:
    """``{name: {rank1, rank5, rank10, mAP, mINP, cosine_to_<reference>_mean/min}}``."""
    from edgereid.runtime.metrics import evaluate_all

    if reference not in runners:
        raise ValueError(f"reference runner {reference!r} is not among {sorted(runners)}")
    qf = embed_records(query, input_spec, runners, code_scale=code_scale)
    gf = embed_records(gallery, input_spec, runners, code_scale=code_scale)
    q_pids, q_cams = np.array([r[1] for r in query]), np.array([r[2] for r in query])
    g_pids, g_cams = np.array([r[1] for r in gallery]), np.array([r[2] for r in gallery])
    results: dict[str, dict[str, float]] = {}
    for name in runners:
        metrics = evaluate_all(squared_l2_distmat(qf[name], gf[name]), q_pids, g_pids, q_cams, g_cams)
        entry = {k: (int(v) if isinstance(v, (int, np.integer)) else float(v))
                 for k, v in metrics.items() if np.isscalar(v)}
        if name != reference:
            cos = cosine_stats(np.concatenate([qf[reference], gf[reference]]), np.concatenate([qf[name], gf[name]]))
            entry[f"cosine_to_{reference}_mean"] = cos["mean"]
            entry[f"cosine_to_{reference}_min"] = cos["min"]
        results[name] = entry
    results[reference]["open_set"] = open_set_threshold(qf[reference], gf[reference], q_pids, g_pids)
    return results


def open_set_threshold(qf: np.ndarray, gf: np.ndarray, q_pids: np.ndarray, g_pids: np.ndarray) -> dict[str, float]:
    """A match/unknown distance threshold for ``reid-runtime`` (Euclidean, on normalised embeddings).

    For each query, the distance to its nearest true match (a known person) and to its nearest
    impostor (what an unknown person's best match looks like) are collected; the threshold is the
    one that maximises the balanced accuracy of accepting the first and rejecting the second.
    Junk (-1) and distractors (0) only count as impostors.
    """
    d = np.sqrt(squared_l2_distmat(qf, gf))
    same = (q_pids[:, None] == g_pids[None, :]) & (g_pids[None, :] > 0)
    has_pos = same.any(1)
    pos = np.where(same, d, np.inf).min(1)[has_pos]
    neg = np.where(~same, d, np.inf).min(1)
    neg = neg[np.isfinite(neg)]
    if len(pos) == 0 or len(neg) == 0:
        return {"threshold": None, "source": "not enough matches to calibrate"}
    candidates = np.unique(np.concatenate([pos, neg]))
    tpr = np.searchsorted(np.sort(pos), candidates, side="right") / len(pos)  # accepted known: d <= t
    tnr = 1.0 - np.searchsorted(np.sort(neg), candidates, side="right") / len(neg)  # rejected unknown: d > t
    best = int(np.argmax(tpr + tnr))
    return {"threshold": float(candidates[best]), "true_accept_rate": float(tpr[best]),
            "true_reject_rate": float(tnr[best]), "queries": int(len(pos)),
            "source": "query/gallery of the export data set: nearest true match vs nearest impostor"}
