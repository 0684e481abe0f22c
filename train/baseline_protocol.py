"""What every no-learning baseline shares: features of the query and gallery images -> a distance
matrix -> the standard Market-1501 scores, recorded in one result layout (numpy only)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["score_baseline"]


def score_baseline(method: str, dataset_name: str, root: str | Path, config: Any,
                   distances: Callable[[Sequence[str], Sequence[str]], np.ndarray]) -> dict[str, Any]:
    """Evaluate ``distances(query_paths, gallery_paths) -> (Q, G)`` on ``build_dataset(dataset_name,
    root)``: rank-1/5/10, mAP, mINP, the data set sizes, ``config`` (a dataclass) and the run time."""
    from edgereid.data import build_dataset
    from edgereid.runtime.metrics import evaluate_all

    t0 = time.perf_counter()
    ds = build_dataset(dataset_name, root)
    d = distances([r[0] for r in ds.query], [r[0] for r in ds.gallery])
    q_pids, q_cams = (np.asarray([r[i] for r in ds.query]) for i in (1, 2))
    g_pids, g_cams = (np.asarray([r[i] for r in ds.gallery]) for i in (1, 2))
    return {"method": method, **evaluate_all(d, q_pids, g_pids, q_cams, g_cams), "dataset": dataset_name,
            "data": str(root), "num_query": len(ds.query), "num_gallery": len(ds.gallery), "config": asdict(config),
            "seconds": round(time.perf_counter() - t0, 3)}
