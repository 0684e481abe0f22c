"""Accuracy of a bundle on this device: embed a Market-style query/gallery folder pair and score it.

This is the on-device counterpart of the accuracy the exporter writes into the manifest: the same
images through this device's backend and preprocessing, scored under the standard Market-1501
protocol by ``edgereid.runtime.metrics``. Two scores come out: ``codes`` (distances between the
gallery codes the store would hold: what the device really ranks with) and ``float`` (the
backend's float embeddings before the gallery codec), so the cost of the codec is visible.

Query images with junk identity -1 are skipped (they are nobody); gallery junk and distractors
(0) stay in, as the protocol requires.

When the bundle's manifest holds an open-set threshold, ``open_set`` says what it does on these
queries: the identities the threshold was calibrated on (``open_set.calibration_pids``) are left
out, a seeded half of the others is enrolled (their gallery entries kept), the rest are people the
gallery does not know, and the true- and false-accept rates of the threshold are measured on the
gallery codes' distances, as ``reid-runtime`` matches (``open_set.open_set_rates``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from edgereid.data.datasets import parse_market_dir

from .codec import code_distance_to_float, pairwise_distances
from .embedder import Embedder
from .metrics import evaluate_all, squared_l2_distmat

__all__ = ["evaluate_folders", "market_records", "open_set_on_queries"]


def market_records(folder: str | os.PathLike, skip_junk: bool) -> list[tuple[str, int, int]]:
    """``(path, pid, camera)`` for every image of a Market-named folder (non-recursive; cameras from 0)."""
    records = parse_market_dir(Path(folder), "eval (identities and cameras come from the file names)")
    records = [r for r in records if not (skip_junk and r[1] == -1)]
    if not records:
        raise ValueError(f"{folder}: no Market-named images")
    return records


def _embed(embedder: Embedder, records: list[tuple[str, int, int]]):
    emb, codes, keep, errors = [], [], [], []
    for start, batch in zip(range(0, len(records), embedder.config.batch_size),
                            embedder.iter_images([r[0] for r in records])):
        for pos, err in batch.errors:
            errors.append({"image": records[start + pos][0], "error": err.reason})
        keep += [start + i for i in batch.indices]
        emb.append(batch.embeddings)
        codes.append(batch.codes)
    kept = [records[i] for i in keep]
    return (np.concatenate(emb) if emb else np.zeros((0, embedder.spec.dim), np.float32),
            np.concatenate(codes) if codes else np.zeros((0, embedder.spec.code_bytes), np.uint8),
            np.asarray([r[1] for r in kept], np.int64), np.asarray([r[2] for r in kept], np.int64), errors)


def evaluate_folders(embedder: Embedder, query_dir: str, gallery_dir: str) -> dict[str, Any]:
    """Embed both folders and score them; a JSON-ready dict (``error_list`` holds per-image errors)."""
    q_rec = market_records(query_dir, skip_junk=True)
    g_rec = market_records(gallery_dir, skip_junk=False)
    q_emb, q_codes, q_pids, q_cams, q_err = _embed(embedder, q_rec)
    g_emb, g_codes, g_pids, g_cams, g_err = _embed(embedder, g_rec)
    if not len(q_pids) or not len(g_pids):
        raise ValueError(f"nothing to evaluate: {len(q_pids)} usable query and {len(g_pids)} usable gallery images")
    code_d = pairwise_distances(q_codes, g_codes, embedder.spec)
    scores = {
        "codes": evaluate_all(code_d, q_pids, g_pids, q_cams, g_cams),
        "float": evaluate_all(squared_l2_distmat(q_emb, g_emb), q_pids, g_pids, q_cams, g_cams),
    }
    errors = q_err + g_err
    return {
        "bundle": str(embedder.bundle.root),
        "backend": embedder.backend.name,
        "artifact": embedder.backend.artifact.name,
        "codec": embedder.spec.to_dict(),
        "query_dir": str(query_dir),
        "gallery_dir": str(gallery_dir),
        "queries": int(len(q_pids)),
        "gallery": int(len(g_pids)),
        "codes": dict(scores["codes"]),
        "float": dict(scores["float"]),
        "open_set": open_set_on_queries(np.sqrt(np.maximum(code_distance_to_float(code_d, embedder.spec), 0.0)),
                                        q_pids, g_pids, q_cams, g_cams, embedder.bundle.manifest.get("open_set")),
        "errors": len(errors),
        "error_list": errors,
    }


def open_set_on_queries(dist: np.ndarray, q_pids: np.ndarray, g_pids: np.ndarray, q_cams: np.ndarray,
                        g_cams: np.ndarray, manifest_open_set: Any, enrolled_fraction: float = 0.5,
                        seed: int = 0) -> dict[str, Any] | None:
    """TAR/FAR of the manifest's threshold with a seeded half of the query identities enrolled
    (None when the manifest has no threshold). ``dist``: Euclidean distances (Q, G).

    Identities the threshold was calibrated on (the manifest's ``calibration_pids``: the export
    calibrates on part of the gallery's people, who are also the queries') are left out of queries
    and gallery alike, so the rates are measured on people the threshold never saw.
    """
    from .open_set import open_set_rates, split_enrolled

    t = manifest_open_set.get("threshold") if isinstance(manifest_open_set, dict) else None
    if not isinstance(t, (int, float)) or isinstance(t, bool):
        return None
    q_pids, g_pids, q_cams, g_cams = map(np.asarray, (q_pids, g_pids, q_cams, g_cams))
    used = np.asarray(manifest_open_set.get("calibration_pids") or [], dtype=np.int64)
    q_keep, g_keep = ~np.isin(q_pids, used), ~np.isin(g_pids, used)
    left_out = len(np.intersect1d(q_pids, used))
    if not q_keep.any():
        return None
    dist = np.asarray(dist)[q_keep][:, g_keep]
    q_pids, q_cams, g_pids, g_cams = q_pids[q_keep], q_cams[q_keep], g_pids[g_keep], g_cams[g_keep]
    enrolled = split_enrolled(q_pids, enrolled_fraction, seed)
    rates = open_set_rates(dist, q_pids, g_pids, float(t), enrolled, q_cams, g_cams)
    return {**rates, "target_false_accept_rate": manifest_open_set.get("target_false_accept_rate"),
            "enrolled_identities": len(enrolled), "enrolled_fraction": enrolled_fraction, "seed": seed,
            "calibration_identities_left_out": left_out,
            "how": "query identities the threshold was not calibrated on, a seeded half of them enrolled (their "
                   "gallery entries kept, the others' left out); distances between gallery codes"}
