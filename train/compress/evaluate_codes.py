"""Evaluate a model the way the device will run it: through the runtime codec.

Query and gallery embeddings (float, L2-normalised) are quantised to integer codes with one scale
(``edgereid.runtime.codec``), ranked by the codec's integer distances (squared L2 between int8/4-bit
levels; Hamming between 1-bit sign codes), and scored under the standard Market-1501 protocol.
1-bit codes can be re-ranked: the ``shortlist`` nearest gallery entries by Hamming distance are
re-ordered by int8 distance (the store then keeps int8 codes beside the bits; their bytes are
counted in that record). Because one scale serves every vector, ranking by integer distances is
exactly ranking by distances between the dequantised vectors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from edgereid.runtime import codec
from edgereid.runtime.metrics import evaluate_all, squared_l2_distmat

from ..models.reid_model import ReIDModel
from .ptq import normalised_embeddings
from .sizes import bytes_per_embedding


def encode(x: np.ndarray, bits: int, scale: float) -> tuple[np.ndarray, Any]:
    """(codes, spec): the codec's codes for normalised embeddings ``x``."""
    spec = codec.CodecSpec(dim=int(x.shape[1]), bits=int(bits), scale=float(scale), metric="l2")
    return codec.quantize(np.ascontiguousarray(x, dtype=np.float32), spec), spec


def code_distances(qc: np.ndarray, gc: np.ndarray, spec) -> np.ndarray:
    """The codec's integer distance matrix (nq, ng), int64."""
    return np.asarray(codec.pairwise_distances(qc, gc, spec), dtype=np.int64)


def rerank_shortlist(coarse: np.ndarray, fine_rows, shortlist: int) -> np.ndarray:
    """Re-order each query's ``shortlist`` nearest (by ``coarse``, ties by gallery index) with finer distances.

    ``fine_rows(i, idx)`` returns query i's fine (non-negative integer) distances to gallery entries
    ``idx``. The result ranks the short list by fine distance first, then everything else by coarse
    distance: short-list entries get their fine distance, the rest ``offset + coarse`` where ``offset``
    exceeds every fine distance.
    """
    nq, ng = coarse.shape
    L = min(max(int(shortlist), 1), ng)
    short = np.argsort(coarse, axis=1, kind="stable")[:, :L]
    fine = np.stack([np.asarray(fine_rows(i, short[i]), dtype=np.int64) for i in range(nq)]) if nq else \
        np.zeros((0, L), np.int64)
    if fine.size and fine.min() < 0:
        raise ValueError("fine distances must be non-negative")
    offset = (int(fine.max()) + 1) if fine.size else 0
    out = coarse.astype(np.int64) + offset
    np.put_along_axis(out, short, fine, axis=1)
    return out


def _metrics(dist: np.ndarray, query, gallery) -> dict[str, float]:
    q_pids, q_cams = np.array([r[1] for r in query]), np.array([r[2] for r in query])
    g_pids, g_cams = np.array([r[1] for r in gallery]), np.array([r[2] for r in gallery])
    return {k: float(v) for k, v in evaluate_all(dist, q_pids, g_pids, q_cams, g_cams).items()}


def evaluate_embeddings(qf: np.ndarray, gf: np.ndarray, query: Sequence, gallery: Sequence, bits: int = 32,
                        scale: float | None = None, rerank_scale: float | None = None,
                        shortlist: int = 100) -> dict[str, Any]:
    """Metrics of normalised float embeddings stored as ``bits``-bit codes (32 = float, no codes).

    rerank_scale: with 1-bit codes, re-rank the Hamming short list by int8 codes of this scale.
    Returns rank-1/5/10, mAP, mINP plus ``bits``, ``dim``, ``bytes_per_embedding`` (all bytes a
    gallery entry stores, re-ranking codes included) and ``rerank``.
    """
    dim = int(qf.shape[1])
    if gf.shape[1] != dim:
        raise ValueError(f"query dim {dim} != gallery dim {gf.shape[1]}")
    info: dict[str, Any] = {"bits": bits, "dim": dim, "rerank": None}
    if bits == 32:
        dist = squared_l2_distmat(qf, gf)
        info["bytes_per_embedding"] = bytes_per_embedding(dim, 32)
        return {**_metrics(dist, query, gallery), **info}
    if scale is None or not scale > 0:
        raise ValueError(f"{bits}-bit evaluation needs a positive scale, got {scale}")
    qc, spec = encode(qf, bits, scale)
    gc, _ = encode(gf, bits, scale)
    dist = code_distances(qc, gc, spec)
    info["bytes_per_embedding"] = bytes_per_embedding(dim, bits)
    if rerank_scale is not None:
        if bits != 1:
            raise ValueError("short-list re-ranking is for 1-bit codes")
        q8, spec8 = encode(qf, 8, rerank_scale)
        g8, _ = encode(gf, 8, rerank_scale)
        dist = rerank_shortlist(dist, lambda i, idx: code_distances(q8[i:i + 1], g8[idx], spec8)[0], shortlist)
        info["bytes_per_embedding"] += bytes_per_embedding(dim, 8)
        info["rerank"] = {"bits": 8, "shortlist": int(shortlist), "scan_bytes": bytes_per_embedding(dim, 1)}
    return {**_metrics(dist, query, gallery), **info}


def evaluate_model_codes(model: ReIDModel, dataset, batch_size: int = 128, device: str | torch.device = "cpu",
                         bits: int | None = None, scale: float | None = None, rerank_scale: float | None = None,
                         shortlist: int = 100) -> dict[str, Any]:
    """Evaluate ``model`` through the codec; bits/scale default to the model's own (its config)."""
    emb = model.cfg.embedding
    bits = emb.bits if bits is None else bits
    if scale is None and bits < 32:
        if not model.quant.has_scale or bits != emb.bits:
            raise ValueError(f"{bits}-bit evaluation needs a scale: the model has none for {bits} bits "
                             "(calibrate it with PTQ or train it with QAT first)")
        scale = float(model.quant.scale.detach().abs())
    qf = normalised_embeddings(model, dataset.query, batch_size, device, desc="query")
    gf = normalised_embeddings(model, dataset.gallery, batch_size, device, desc="gallery")
    return evaluate_embeddings(qf, gf, dataset.query, dataset.gallery, bits, scale, rerank_scale, shortlist)
