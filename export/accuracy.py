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
    return results


OPEN_SET_SOURCES = {
    "gallery": "gallery images (people the model never saw in training; the query images stay untouched)",
    "train": "training split (people the model was trained on: their impostor distances are larger than "
             "unseen people's, so the false-accept rate on new people comes out higher than the target)",
}


def calibrate_open_set(records: Sequence[tuple[str, int, int]], input_spec: dict[str, Any], runner: Runner,
                       far: float = 0.05, max_images: int = 800, seed: int = 0,
                       code_scale: float | None = None, source: str = "gallery",
                       max_identity_fraction: float | None = None) -> dict[str, Any]:
    """The match/unknown threshold for ``reid-runtime``, chosen for the false-accept rate ``far``.

    ``records``: labelled images of the ``source`` (a key of ``OPEN_SET_SOURCES``); a seeded sample
    of whole identities (up to ``max_images`` images) is embedded; every image's nearest image of
    another identity is what an unknown person's best match looks like, and the threshold lets
    ``far`` of those through (``edgereid.runtime.open_set.calibrate_threshold``). The default source
    is the gallery: people the model has not seen, as on a device, which calibrates its own enrolled
    gallery. The gallery's people are also the query set's, so the calibration takes at most
    ``max_identity_fraction`` of them (default: half for the gallery, all for the training split) and
    records them (``calibration_pids``): ``reid-runtime eval`` measures the threshold on the others
    only, so it is never measured on the people it was chosen on. Junk (-1) and distractors (0) are
    left out.
    """
    if source not in OPEN_SET_SOURCES:
        raise ValueError(f"open-set calibration source {source!r}: expected one of {', '.join(OPEN_SET_SOURCES)}")
    from edgereid.runtime.open_set import calibrate_threshold

    by_pid: dict[int, list[tuple[str, int, int]]] = {}
    for r in records:
        if r[1] > 0:
            by_pid.setdefault(int(r[1]), []).append(r)
    if len(by_pid) < 2:
        return {"threshold": None, "source": f"not enough identities to calibrate ({len(by_pid)})"}
    if max_identity_fraction is None:
        max_identity_fraction = 0.5 if source == "gallery" else 1.0
    max_ids = max(2, int(len(by_pid) * max_identity_fraction))
    order = np.random.default_rng(seed).permutation(sorted(by_pid))[:max_ids]
    chosen: list[tuple[str, int, int]] = []
    for pid in order:
        if len(chosen) >= max_images and len({r[1] for r in chosen}) >= 2:
            break
        chosen += by_pid[int(pid)]
    emb = embed_records(chosen, input_spec, {"ref": runner},
                        code_scale={"ref": code_scale} if code_scale is not None else None)["ref"]
    result = calibrate_threshold(emb, np.array([r[1] for r in chosen]), np.array([r[2] for r in chosen]), far)
    result["calibration_source"] = source
    if source == "gallery":  # the people the threshold was chosen on: an evaluation leaves them out
        result["calibration_pids"] = sorted({int(r[1]) for r in chosen})
    result["source"] = (f"{OPEN_SET_SOURCES[source]}: nearest other-identity image of each of {len(chosen)} images, "
                        f"threshold at a false-accept rate of {far:g}")
    return result
