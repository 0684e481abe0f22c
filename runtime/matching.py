"""From nearest rows to answers: best match per identity, and the open-set accept/reject decision.

A gallery holds several entries per identity (views, cameras, times). A re-identification answer
is about identities, so the top-k *identities* rank each identity by its best (closest) entry.
``topk_per_identity`` finds them exactly: it searches for more rows than identities wanted and
deepens the search only for queries whose short list held fewer than k distinct identities.

Open set: a query whose best distance is above a threshold is an unknown person, not the nearest
enrolled one. Thresholds are in the codec's distance units (integer for 8/4/1-bit codes;
``codec.code_distance_to_float`` converts to float squared L2).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from edgereid.runtime.codec import CodecSpec
from edgereid.runtime.search import FLOAT_DISTANCE_FILL, INT_DISTANCE_FILL, topk

__all__ = ["aggregate_by_identity", "topk_per_identity", "open_set_decision", "apply_open_set"]

IdentityOfRow = Callable[[np.ndarray], Any] | np.ndarray


def _identities(rows: np.ndarray, identity_of_row: IdentityOfRow) -> np.ndarray:
    """Identity per row (object array, same shape); rows < 0 map to None."""
    out = np.empty(rows.shape, dtype=object)
    ok = rows >= 0
    if ok.any():
        r = rows[ok]
        if callable(identity_of_row):
            ids = np.asarray(identity_of_row(r), dtype=object)
        else:
            table = np.asarray(identity_of_row)
            if int(r.max()) >= table.shape[0]:
                raise ValueError(f"identity_of_row: row {int(r.max())} is out of range for a table of "
                                 f"{table.shape[0]} rows")
            ids = table[r].astype(object)
        if ids.shape != r.shape:
            raise ValueError(f"identity_of_row: expected {r.shape[0]} identities for {r.shape[0]} rows, got shape "
                             f"{ids.shape}")
        out[ok] = ids
    return out


def aggregate_by_identity(
    rows: np.ndarray, distances: np.ndarray, identity_of_row: IdentityOfRow, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Top-``k`` identities per query from a ranked row list (``search.topk`` output).

    ``identity_of_row``: a callable mapping an int64 array of rows to their identities, or an
    array indexed by row. Each identity is placed at its best row (rows are ranked by distance,
    then row index, so the first occurrence is the best). Returns ``(identities, rows, distances,
    complete)``: identities an object array (nq, k) (None where missing), rows int64 (nq, k)
    (-1), distances (nq, k) (the fill value), and ``complete`` bool (nq,): True when the answer
    is exact, i.e. k identities were found or the row list already held every valid row (it
    ended in -1). An incomplete query needs a deeper row list (``topk_per_identity`` does that).
    """
    rows = np.asarray(rows)
    distances = np.asarray(distances)
    if rows.ndim != 2 or rows.shape != distances.shape:
        raise ValueError(f"rows and distances must be 2-D arrays of one shape, got {rows.shape} and {distances.shape}")
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    nq, depth = rows.shape
    fill = FLOAT_DISTANCE_FILL if distances.dtype.kind == "f" else INT_DISTANCE_FILL
    ids_all = _identities(rows, identity_of_row)
    out_ids = np.full((nq, k), None, dtype=object)
    out_rows = np.full((nq, k), -1, np.int64)
    out_dist = np.full((nq, k), fill, distances.dtype)
    complete = np.zeros(nq, bool)
    for i in range(nq):
        seen: set[Any] = set()
        j = 0
        for c in range(depth):
            if rows[i, c] < 0:
                break
            ident = ids_all[i, c]
            if ident in seen:
                continue
            seen.add(ident)
            out_ids[i, j], out_rows[i, j], out_dist[i, j] = ident, rows[i, c], distances[i, c]
            j += 1
            if j == k:
                break
        complete[i] = j == k or depth == 0 or rows[i, -1] < 0
    return out_ids, out_rows, out_dist, complete


def topk_per_identity(
    query_codes: np.ndarray,
    make_blocks: Callable[[], Iterable[tuple[Any, ...]]],
    spec: CodecSpec,
    k: int,
    identity_of_row: IdentityOfRow,
    *,
    oversample: int = 4,
    **topk_kwargs: Any,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact top-``k`` identities per query (each at its best entry).

    ``make_blocks()`` must return a fresh block iterator each call (the gallery may be scanned
    more than once). Searches ``k * oversample`` rows first; queries that saw fewer than k distinct
    identities are searched again four times deeper, until complete. ``topk_kwargs`` go to
    ``search.topk`` (``block_rows``, ``threads``, ``kernel``). Returns ``(identities, rows,
    distances)`` as ``aggregate_by_identity``.
    """
    if isinstance(oversample, bool) or not isinstance(oversample, int) or oversample < 1:
        raise ValueError(f"oversample must be a positive integer, got {oversample!r}")
    q = np.asarray(query_codes)
    if q.ndim == 1:
        q = q[None, :]
    depth = int(k) * oversample
    rows, dist = topk(q, make_blocks(), spec, depth, **topk_kwargs)
    ids, out_rows, out_dist, complete = aggregate_by_identity(rows, dist, identity_of_row, k)
    while not complete.all():
        todo = np.flatnonzero(~complete)
        depth *= 4
        rows, dist = topk(q[todo], make_blocks(), spec, depth, **topk_kwargs)
        i2, r2, d2, c2 = aggregate_by_identity(rows, dist, identity_of_row, k)
        ids[todo], out_rows[todo], out_dist[todo] = i2, r2, d2
        complete[todo] = c2
    return ids, out_rows, out_dist


def open_set_decision(distance: Any, threshold: float) -> np.ndarray:
    """True where a match is accepted as a known identity: ``distance <= threshold``.

    Missing matches (the search's fill value: int64 max, or inf) are never accepted. NaN
    thresholds are refused.
    """
    d = np.asarray(distance)
    if d.dtype.kind not in "iuf":
        raise ValueError(f"open_set_decision: distances must be numeric, got dtype {d.dtype}")
    if not isinstance(threshold, (int, float, np.integer, np.floating)) or isinstance(threshold, bool) or np.isnan(threshold):
        raise ValueError(f"open_set_decision: threshold must be a number, got {threshold!r}")
    missing = (d == INT_DISTANCE_FILL) if d.dtype.kind in "iu" else ~np.isfinite(d)
    return (d <= threshold) & ~missing


def apply_open_set(identities: np.ndarray, distances: Any, threshold: float, unknown: Any = None) -> np.ndarray:
    """``identities`` with every rejected match (``open_set_decision`` False) replaced by ``unknown``."""
    ids = np.asarray(identities, dtype=object)
    accept = open_set_decision(distances, threshold)
    if accept.shape != ids.shape:
        raise ValueError(f"identities {ids.shape} and distances {accept.shape} must have one shape")
    out = ids.copy()
    out[~accept] = unknown
    return out
