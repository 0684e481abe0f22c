"""Exact top-k search over blocks of embedding codes: the runtime's hot path.

``topk`` scans a gallery handed over as blocks (the store yields memory-mapped views) and returns,
per query, the ``k`` nearest rows under the codec's exact distance (``codec.pairwise_distances``),
ties broken by the lower row index. How it stays exact, fast and flat in memory:

- **Integer products.** For 8/4/1-bit codes the distance between integer levels is
  ``||q||^2 + ||g||^2 - 2 q.g``; ``q.g`` for a chunk of rows and ALL queries at once is one uint8 x
  int8 matrix product (``int_gemm``: onnxruntime's MLAS kernels), exact in int32 on every CPU:
  where int8 dot products do not accumulate in 32 bits (x86 without VNNI) the query levels are
  split so that no kernel can saturate (``int_gemm``'s *bounded* form). int8 codes become uint8
  operands by flipping the sign bit (``g + 128``), the zero point 128 undoing it; 4-bit and 1-bit
  codes are expanded to levels per task. numpy has no fast integer matmul, and converting codes
  to float32 for BLAS would quadruple the bytes scanned.
- **One query, int8: a compiled scan.** ``native_scan`` (C, built at install, optional) computes
  ``||q - g||^2`` in int16/int32 with AVX-512BW or AVX2 multiply-adds and keeps the top k in the
  same pass: one read of the codes, no norms, no temporaries. It is what makes a single query
  faster than faiss's SQ8 scan; without it (no compiler at install) the product path below runs.
- **Blocked and batched.** Each block is cut into cache-sized tasks; each task's codes are read
  once for the whole query batch. Temporaries are per task (a few MB), never per gallery; a
  memory-mapped block is only read. Few queries: consecutive rows are folded into one operand row
  against a block-diagonal query matrix (a free reshape that halves MLAS's per-row overhead).
- **Cheap candidate filter, exact decision.** A running k-th best distance per query is the
  threshold. With up to 4 queries every row's exact distance is computed (cheap next to the
  product). With more, a row can only beat the threshold if ``q.g >= (min ||g||^2 over its band
  of 128 rows - threshold) / 2``: a comparison against the raw product (checked on each band's
  maximum first from 32 queries on), exact distances only for rows that pass. The first rows
  scanned bootstrap the thresholds from the k-th best of a sample (an upper bound on the final
  k-th best); thresholds tighten after every block.
- **Parallel.** Tasks run on the calling thread plus a small pool (the product and the numpy
  passes release the GIL); a block is finished before the next is requested, so a store may
  release a block's pages as soon as it yields the next one.
- **float32 codes** use a float64 BLAS product for the filter (with a rounding margin) and
  recompute the candidates' distances exactly the way ``codec.pairwise_distances`` does.

Blocks may carry a 4th element, the rows' squared level norms (``codec.code_sqnorms``). Without
it they are computed per task, which for a single query costs several times the search itself:
a store serving repeated searches should keep them (``SqnormCache``, or stored with the codes).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from edgereid.runtime import native_scan
from edgereid.runtime.codec import (
    NIBBLE_LEVELS,
    CodecSpec,
    check_codes,
    code_sqnorms,
    float_sqdist,
    unpack,
)

__all__ = ["topk", "SqnormCache", "default_threads", "describe_kernels", "KERNELS", "INT_DISTANCE_FILL",
           "FLOAT_DISTANCE_FILL"]

INT_DISTANCE_FILL = np.iinfo(np.int64).max  # distance reported where fewer than k rows exist
FLOAT_DISTANCE_FILL = np.inf
_INF = np.iinfo(np.int64).max // 4  # "no threshold yet" (integer codes), safe against overflow
_BAND = 128  # rows sharing one min-norm in the candidate bound
_EXACT_NQ = 4  # up to this many queries, every row's exact distance is computed (no bound)
_NATIVE_SPLIT_BYTES = 1 << 21  # compiled scan: split a block across threads only into parts this large
_TWO_LEVEL_NQ = 32  # from this many queries, the bound is checked per band maximum first
_I32_MIN, _I32_MAX = np.iinfo(np.int32).min, np.iinfo(np.int32).max
# search kernels -> the integer product form each asks of int_gemm ("auto": int_gemm chooses by CPU)
_KERNEL_FORMS: dict[str, str | None] = {
    "auto": "auto",  # the compiled scan for few int8 queries, else onnxruntime, else numpy
    "native": None,  # the compiled scan only (an error where it does not apply)
    "onnxruntime": "auto",
    "onnxruntime-bounded": "bounded",
    "onnxruntime-direct": "direct",  # refused on a CPU where it is not exact
    "numpy": None,
}
KERNELS = tuple(_KERNEL_FORMS)
# nibble byte -> (low, high) levels + 128, the uint8 operand for 4-bit codes
_NIBBLE_U8 = (NIBBLE_LEVELS.astype(np.int16) + 128).astype(np.uint8)


def default_threads() -> int:
    """Worker threads for search: ``EDGEREID_SEARCH_THREADS`` if set, else the CPU count (max 8),
    or 1 while the machine is saturated (1-minute load average >= CPU count).

    On a saturated machine each hand-off between threads waits for a scheduler slot, and a
    split search measured about twice as slow as a single-threaded one; pass ``threads=``
    (or set the variable) to override.
    """
    env = os.environ.get("EDGEREID_SEARCH_THREADS")
    if env:
        try:
            n = int(env)
        except ValueError as e:
            raise ValueError(f"EDGEREID_SEARCH_THREADS: expected a positive integer, got {env!r}") from e
        if n < 1:
            raise ValueError(f"EDGEREID_SEARCH_THREADS: expected a positive integer, got {env!r}")
        return n
    n = max(1, min(8, os.cpu_count() or 1))
    try:
        if os.getloadavg()[0] >= n:
            return 1
    except OSError:  # no load average on this platform
        pass
    return n


_POOLS: dict[int, ThreadPoolExecutor] = {}
_POOL_LOCK = threading.Lock()


def _pool(threads: int) -> ThreadPoolExecutor:
    """A process-wide pool per thread count (threads are created lazily, reused across searches)."""
    with _POOL_LOCK:
        pool = _POOLS.get(threads)
        if pool is None:
            pool = _POOLS[threads] = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="edgereid-search")
        return pool


_SCRATCH = threading.local()


def _scratch(rows: int, cols: int) -> np.ndarray:
    """A per-thread reusable uint8 buffer (rows, cols): no large allocation per task."""
    buf = getattr(_SCRATCH, "buf", None)
    if buf is None or buf.size < rows * cols:
        buf = np.empty(max(rows * cols, 1 << 16), np.uint8)
        _SCRATCH.buf = buf
    return buf[: rows * cols].reshape(rows, cols)


# ---------------------------------------------------------------------------------------------
# engines: the product of a chunk of gallery codes with all queries
# ---------------------------------------------------------------------------------------------


class _IntEngine:
    """Integer codes: dot products of levels (int32, exact) with all queries, per task.

    For few queries the product is a matrix-vector product, which MLAS pads to a 16-column
    panel; folding ``fold`` consecutive rows into one operand row (a free reshape) against a
    block-diagonal query matrix cuts the per-row overhead for narrow codes (d = 32: about 1.4x).
    The product's form (``int_gemm``: bounded or direct) decides whether each operand row is
    laid out once or twice side by side (``reps``).
    """

    def __init__(self, q: np.ndarray, spec: CodecSpec, kernel: str) -> None:
        self.spec = spec
        nq = q.shape[0]
        lv = unpack(q, spec).astype(np.int64)  # (nq, dim)
        self.qn = (lv * lv).sum(axis=1)  # int64 (nq,)
        # few int8 queries: the compiled scan (distance + top-k in one pass) when it was built
        self.native: Any = None
        if kernel in ("auto", "native") and spec.bits == 8 and nq <= _EXACT_NQ and spec.dim <= native_scan.MAX_DIM:
            self.native = native_scan.load()
        if kernel == "native" and self.native is None:
            raise ValueError("kernel='native': the compiled scan kernel (edgereid.runtime._l2scan) is not built "
                             "for this install, or it serves only int8 codes with up to "
                             f"{_EXACT_NQ} queries (got bits={spec.bits}, {nq} queries)")
        if self.native is not None:
            self.qlv = np.ascontiguousarray(lv.astype(np.int8))
            self.k = spec.dim  # bytes per row: sizes the tasks
            return
        if spec.bits == 8:
            self.kb, zp = spec.dim, 128
        elif spec.bits == 4:
            self.kb, zp = 2 * spec.code_bytes, 128
        else:
            self.kb, zp = 8 * spec.code_bytes, None
        self.zp = zp or 0
        # S = ||g||^2 - 2 q.g lies within +-3 * max_level^2 * dim: int32 unless dim > 44k
        self.sdtype = np.int32 if 3 * spec.max_level**2 * spec.dim < 2**31 else np.int64
        self.smax = int(np.iinfo(self.sdtype).max)
        self.fold = 1
        while self.fold * 2 * self.kb <= 128 and self.fold * 2 * nq <= 8:
            self.fold *= 2
        b = np.zeros((self.kb, nq), np.int8)  # padding rows stay 0: padding nibbles/bits never count
        b[: spec.dim] = lv.T
        bf = np.zeros((self.fold * self.kb, self.fold * nq), np.int8)
        for j in range(self.fold):
            bf[j * self.kb : (j + 1) * self.kb, j * nq : (j + 1) * nq] = b
        self.gemm: Any = None
        self.reps = 1
        if _KERNEL_FORMS[kernel] is not None:
            self.gemm = _int_gemm(bf, zp, kernel)
        if self.gemm is not None:
            self.reps = self.gemm.reps
        else:
            # numpy fallback: float BLAS products of integer levels are exact while every partial
            # sum stays below 2^24 (float32) or 2^53 (float64).
            lim = spec.max_level**2 * spec.dim
            self._bf = bf.astype(np.float32 if lim < 2**24 else np.float64)
        self.k = self.reps * self.kb  # operand bytes per gallery row: sizes the tasks

    def _encode(self, src: np.ndarray, out: np.ndarray) -> None:
        """Codes (..., code_bytes) -> uint8 levels + zero point (..., kb), written into ``out``."""
        if self.spec.bits == 8:
            np.bitwise_xor(src, 0x80, out=out)  # int8 g -> uint8 g + 128
        elif self.spec.bits == 4:
            np.take(_NIBBLE_U8, src, axis=0, out=out.reshape(*out.shape[:-1], out.shape[-1] // 2, 2))
        else:
            out[...] = np.unpackbits(src, axis=-1)

    def operand(self, codes: np.ndarray) -> np.ndarray:
        """uint8 (ceil(rows / fold), reps * fold * kb) operand; the calling thread's scratch buffer.

        Row ``i`` holds gallery rows ``i*fold ... i*fold+fold-1`` side by side, the whole laid out
        ``reps`` times. Rows added to fill the last fold hold the zero level (their products are
        sliced off).
        """
        n, f, kb = codes.shape[0], self.fold, self.kb
        m = -(-n // f)
        a = _scratch(m, self.reps * f * kb)
        a3 = a.reshape(m, self.reps, f * kb)
        first = a3[:, 0].reshape(m, f, kb)  # a view: fold rows of the first copy
        full = n // f
        self._encode(codes[: full * f].reshape(full, f, codes.shape[1]), first[:full])
        if full < m:
            tail = n - full * f
            self._encode(codes[full * f :][None], first[full:, :tail])
            first[full, tail:] = self.zp
        for r in range(1, self.reps):
            a3[:, r] = a3[:, 0]
        return a

    def dots(self, codes: np.ndarray) -> np.ndarray:
        """int32 (rows, nq): level dot products of every row with every query."""
        n = codes.shape[0]
        a = self.operand(codes)
        if self.gemm is not None:
            y = self.gemm(a)
        else:
            af = a.astype(self._bf.dtype)
            if self.zp:
                af -= self.zp
            y = (af @ self._bf).astype(np.int32)
        return y.reshape(-1, y.shape[1] // self.fold)[:n]


def _int_gemm(bf: np.ndarray, zp: int | None, kernel: str) -> Any:
    """The onnxruntime product for ``kernel`` (its form chosen or forced), or None for numpy.

    ``auto`` falls back to numpy where onnxruntime is missing or where even the bounded form
    fails its probe (a kernel unlike any seen); an explicit onnxruntime kernel raises instead.
    """
    try:
        from edgereid.runtime import int_gemm

        form = int_gemm.product_form(_KERNEL_FORMS[kernel])
        if kernel == "auto" and not int_gemm.usable(form):
            return None
        return int_gemm.IntGemm(bf, zp, form)
    except ImportError:
        if kernel != "auto":
            raise
        return None


class _FloatEngine:
    """float32 codes: float64 BLAS products for the filter; exact distances recomputed."""

    def __init__(self, q: np.ndarray, spec: CodecSpec) -> None:
        self.spec = spec
        self.qf = np.ascontiguousarray(q).view("<f4").astype(np.float64)  # (nq, dim)
        self.qn = float_sqdist(self.qf)

    def floats(self, codes: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(codes).view("<f4").astype(np.float64)


# ---------------------------------------------------------------------------------------------
# per-task scan: candidates (query index, distance, row) that may enter the top k
# ---------------------------------------------------------------------------------------------

_Cands = tuple[np.ndarray, np.ndarray, np.ndarray]


def _empty_cands(dist_dtype: Any) -> _Cands:
    return np.empty(0, np.int64), np.empty(0, dist_dtype), np.empty(0, np.int64)


def _sample_threshold(scores: np.ndarray, k: int) -> np.ndarray:
    """k-th smallest score per column of a (rows >= k, nq) sample."""
    return np.partition(scores, k - 1, axis=0)[k - 1]


def _scan_native(eng: _IntEngine, codes: np.ndarray, valid: np.ndarray | None, start: int, thr: np.ndarray,
                 k: int) -> _Cands:
    """int8, few queries: the compiled kernel's k best per query (distances exact, no norms)."""
    codes = np.ascontiguousarray(codes)
    qs, ds, rs = [], [], []
    for qi in range(eng.qlv.shape[0]):
        d, r = eng.native.topk(codes, eng.qlv[qi], valid, int(thr[qi]), k)
        qs.append(np.full(d.size, qi, np.int64))
        ds.append(d)
        rs.append(r + start)
    if len(qs) == 1:
        return qs[0], ds[0], rs[0]
    return np.concatenate(qs), np.concatenate(ds), np.concatenate(rs)


def _scan_int(eng: _IntEngine, codes: np.ndarray, valid: np.ndarray | None, sqn: np.ndarray | None,
              start: int, thr: np.ndarray, k: int) -> _Cands:
    if eng.native is not None:
        return _scan_native(eng, codes, valid, start, thr, k)
    n = codes.shape[0]
    if valid is not None:
        vrows = np.flatnonzero(valid)
        if vrows.size == 0:
            return _empty_cands(np.int64)
    y = eng.dots(codes)  # int32 (n, nq) = q.g
    nq = y.shape[1]
    gn = code_sqnorms(codes, eng.spec) if sqn is None else sqn
    # threshold on S = ||g||^2 - 2 q.g  (distance = ||q||^2 + S)
    t = np.where(thr >= _INF, _INF, thr - eng.qn)
    open_q = t >= _INF
    if nq <= _EXACT_NQ:
        # few queries: the exact S of every row costs little next to the product
        sfull = np.multiply(y, -2, dtype=eng.sdtype)
        sfull += gn.astype(eng.sdtype, copy=False)[:, None]
        if open_q.any():
            m = max(8 * k, 1024)
            smp = sfull[:m] if valid is None else sfull[vrows[:m]]
            if smp.shape[0] >= k:
                t[open_q] = _sample_threshold(smp[:, open_q], k)
        hit = sfull <= np.minimum(t, eng.smax).astype(eng.sdtype)[None, :]
        if valid is not None:
            hit &= valid[:, None]
        r, qi = np.divmod(np.flatnonzero(hit), nq)
        return qi, sfull[r, qi].astype(np.int64) + eng.qn[qi], r + start
    if open_q.any():
        srows = (np.arange(n) if valid is None else vrows)[: max(8 * k, 1024)]
        if srows.size >= k:
            smp = gn[srows, None].astype(np.int64) - 2 * y[srows][:, open_q].astype(np.int64)
            t[open_q] = _sample_threshold(smp, k)
    # many queries: compare the raw products against a per-band bound first (one pass, no
    # arithmetic on the (n, nq) product), exact S only for the rows that pass
    gmin_src = gn if valid is None else np.where(valid, gn, _INF)
    nb, tail = divmod(n, _BAND)
    rs, qs = [], []
    if nb:
        gmin = gmin_src[: nb * _BAND].reshape(nb, _BAND).min(axis=1).astype(np.int64)
        need = -((t[None, :] - gmin[:, None]) // 2)  # ceil((gmin - t) / 2)
        need = np.clip(need, _I32_MIN, _I32_MAX).astype(np.int32)
        y3 = y[: nb * _BAND].reshape(nb, _BAND, nq)
        done = False
        if nq >= _TWO_LEVEL_NQ:
            # two levels: the band maximum of each query's products (a vertical max, cheaper than
            # compare + nonzero over everything), then only the (band, query) pairs that pass
            pb, pq = np.nonzero(y3.max(axis=1) >= need)
            if pb.size * 16 <= nb * nq:
                pi, rr = np.nonzero(y3[pb, :, pq] >= need[pb, pq][:, None])
                rs.append(pb[pi] * _BAND + rr)
                qs.append(pq[pi])
                done = True
        if not done:
            r0, q0 = np.divmod(np.flatnonzero(y3 >= need[:, None, :]), nq)
            rs.append(r0)
            qs.append(q0)
    if tail:
        gmin_t = int(gmin_src[nb * _BAND :].min())
        need_t = np.clip(-((t - gmin_t) // 2), _I32_MIN, _I32_MAX).astype(np.int32)
        r1, q1 = np.divmod(np.flatnonzero(y[nb * _BAND :] >= need_t[None, :]), nq)
        rs.append(r1 + nb * _BAND)
        qs.append(q1)
    r, qi = (rs[0], qs[0]) if len(rs) == 1 else (np.concatenate(rs), np.concatenate(qs))
    if r.size == 0:
        return _empty_cands(np.int64)
    if valid is not None:
        keep = valid[r]
        r, qi = r[keep], qi[keep]
    s = gn[r].astype(np.int64) - 2 * y[r, qi].astype(np.int64)
    keep = s <= t[qi]
    r, qi, s = r[keep], qi[keep], s[keep]
    return qi, s + eng.qn[qi], r + start


def _scan_float(eng: _FloatEngine, codes: np.ndarray, valid: np.ndarray | None, sqn: np.ndarray | None,
                start: int, thr: np.ndarray, k: int) -> _Cands:
    n = codes.shape[0]
    if valid is not None and not valid.any():
        return _empty_cands(np.float64)
    g = eng.floats(codes)
    gn = float_sqdist(g) if sqn is None else sqn.astype(np.float64)
    approx = eng.qn[None, :] + gn[:, None] - 2.0 * (g @ eng.qf.T)  # (n, nq)
    # |approx - exact| is bounded by a few (dim + 2) roundings of ||q||^2 + ||g||^2
    gmax = float(gn.max()) if n else 0.0
    margin = 16.0 * (eng.spec.dim + 2) * np.finfo(np.float64).eps * (eng.qn + gmax) + 1e-300
    if valid is not None:
        approx[~valid] = np.nan  # never <= anything, not even an infinite threshold
    t = thr.astype(np.float64).copy()
    open_q = ~np.isfinite(t)
    if open_q.any():
        srows = np.flatnonzero(np.isfinite(approx[:, 0]))[: max(8 * k, 1024)]
        if srows.size >= k:
            t[open_q] = _sample_threshold(approx[srows][:, open_q], k) + margin[open_q]
    r, qi = np.nonzero(approx <= (t + margin)[None, :])
    if r.size == 0:
        return _empty_cands(np.float64)
    d = float_sqdist(g[r] - eng.qf[qi])
    keep = d <= t[qi]
    return qi[keep], d[keep], r[keep] + start


# ---------------------------------------------------------------------------------------------
# running top-k per query
# ---------------------------------------------------------------------------------------------


class _Best:
    """The k best (distance, row) per query seen so far, merged from candidate batches."""

    def __init__(self, nq: int, k: int, integer: bool) -> None:
        self.nq, self.k = nq, k
        self.fill = INT_DISTANCE_FILL if integer else FLOAT_DISTANCE_FILL
        self.dtype = np.int64 if integer else np.float64
        self.rows = np.full((nq, k), -1, np.int64)
        self.dist = np.full((nq, k), self.fill, self.dtype)
        self.thr = np.full(nq, _INF if integer else np.inf, self.dtype)  # k-th best, or "none yet"
        self._pend: list[_Cands] = []
        self._pend_n = 0

    def add(self, c: _Cands) -> None:
        if c[0].size:
            self._pend.append(c)
            self._pend_n += c[0].size

    @property
    def pending(self) -> int:
        return self._pend_n

    def merge(self) -> None:
        if not self._pend:
            return
        if self.nq == 1:
            self._merge_one()
            return
        have = self.rows >= 0
        qs = [np.nonzero(have)[0]] + [c[0] for c in self._pend]
        ds = [self.dist[have]] + [c[1] for c in self._pend]
        rs = [self.rows[have]] + [c[2] for c in self._pend]
        q, d, r = np.concatenate(qs), np.concatenate(ds), np.concatenate(rs)
        self._pend, self._pend_n = [], 0
        order = np.lexsort((r, d, q))  # by query, then distance, then row (insertion order)
        q, d, r = q[order], d[order], r[order]
        first = np.searchsorted(q, np.arange(self.nq))
        rank = np.arange(q.size) - first[q]
        keep = rank < self.k
        self.rows[...] = -1
        self.dist[...] = self.fill
        self.rows[q[keep], rank[keep]] = r[keep]
        self.dist[q[keep], rank[keep]] = d[keep]
        self._update_thr()

    def _merge_one(self) -> None:
        """Single query: select with a partition first, sort only the survivors."""
        have = self.rows[0] >= 0
        d = np.concatenate([self.dist[0, have]] + [c[1] for c in self._pend])
        r = np.concatenate([self.rows[0, have]] + [c[2] for c in self._pend])
        self._pend, self._pend_n = [], 0
        if d.size > self.k:
            kth = np.partition(d, self.k - 1)[self.k - 1]
            sel = d <= kth  # ties at the k-th distance all survive; the sort orders them by row
            d, r = d[sel], r[sel]
        order = np.lexsort((r, d))[: self.k]
        m = order.size
        self.rows[0, :m], self.dist[0, :m] = r[order], d[order]
        self.rows[0, m:], self.dist[0, m:] = -1, self.fill
        self._update_thr()

    def _update_thr(self) -> None:
        full = self.rows[:, -1] >= 0
        self.thr = np.where(full, self.dist[:, -1], _INF if self.dtype == np.int64 else np.inf).astype(self.dtype)


# ---------------------------------------------------------------------------------------------
# public entry point
# ---------------------------------------------------------------------------------------------


def describe_kernels() -> dict[str, str]:
    """Which kernel runs each kind of search here (``reid-runtime info`` and ``bench`` report it)."""
    from edgereid.runtime import int_gemm

    return {"single_query_int8": native_scan.describe(), "batch": int_gemm.describe()}


def _check_block(item: Any, i: int, spec: CodecSpec) -> tuple[int, np.ndarray, np.ndarray | None, np.ndarray | None]:
    if not isinstance(item, tuple) or len(item) not in (3, 4):
        raise ValueError(f"block {i}: expected a tuple (start_row, codes, valid_mask[, sqnorms]), got "
                         f"{type(item).__name__}{'' if not isinstance(item, tuple) else f' of length {len(item)}'}")
    start, codes, valid = item[0], item[1], item[2]
    sqn = item[3] if len(item) == 4 else None
    if isinstance(start, (bool, np.bool_)) or not isinstance(start, (int, np.integer)) or start < 0:
        raise ValueError(f"block {i}: start_row must be a non-negative integer, got {start!r}")
    codes = check_codes(codes, spec, f"block {i} codes")
    n = codes.shape[0]
    if valid is not None:
        if not isinstance(valid, np.ndarray) or valid.dtype != np.bool_ or valid.shape != (n,):
            raise ValueError(f"block {i}: valid mask must be a bool array of shape ({n},), got "
                             f"{getattr(valid, 'dtype', type(valid).__name__)} {getattr(valid, 'shape', '')}")
    if sqn is not None:
        if not isinstance(sqn, np.ndarray) or sqn.shape != (n,) or sqn.dtype.kind not in ("iu" if spec.is_integer else "f"):
            raise ValueError(f"block {i}: sqnorms must be a {'integer' if spec.is_integer else 'float'} array of "
                             f"shape ({n},) (codec.code_sqnorms), got {getattr(sqn, 'dtype', type(sqn).__name__)} "
                             f"{getattr(sqn, 'shape', '')}")
    return int(start), codes, valid, sqn


class SqnormCache:
    """Remembers each block's squared level norms so repeated searches do not recompute them.

    For a single query, computing ``||g||^2`` costs about as much as the search itself; a store
    that serves many searches over the same immutable rows wraps its block iterator::

        cache = SqnormCache(spec)
        topk(q, cache.wrap(store.iter_blocks()), spec, k)

    Entries are keyed by ``(start_row, rows)``: valid only while a global row always holds the
    same codes (true for an append-only store). Call ``clear()`` whenever rows are renumbered or
    rewritten (compaction, refresh onto a new file). Memory: 4 bytes per cached row (int32).
    """

    def __init__(self, spec: CodecSpec) -> None:
        self.spec = spec
        self._norms: dict[tuple[int, int], np.ndarray] = {}
        # int32 holds every integer-code norm below dim 133k (127^2 * dim < 2^31)
        self._dtype = np.int32 if spec.is_integer and spec.max_level**2 * spec.dim < 2**31 else (
            np.int64 if spec.is_integer else np.float64)

    def __len__(self) -> int:
        return sum(v.size for v in self._norms.values())

    def clear(self) -> None:
        self._norms.clear()

    def wrap(self, blocks: Iterable[tuple[Any, ...]]) -> Iterable[tuple[int, np.ndarray, np.ndarray | None, np.ndarray]]:
        """Yield the blocks with their cached (or newly computed) norms as a 4th element."""
        for item in blocks:
            start, codes, valid = item[0], item[1], item[2]
            key = (int(start), int(len(codes)))
            sq = self._norms.get(key)
            if sq is None:
                sq = code_sqnorms(codes, self.spec).astype(self._dtype)
                self._norms[key] = sq
            yield key[0], codes, valid, sq


def _task_rows(nq: int, k_cols: int, block_rows: int) -> int:
    """Rows per task: the (rows, nq) int32 product and the (rows, K) operand stay cache-sized."""
    rows = (1 << 22) // k_cols if nq <= _EXACT_NQ else (1 << 21) // (4 * nq + k_cols)
    return int(min(block_rows, max(1024, min(65536, rows))))


def topk(
    query_codes: np.ndarray,
    blocks: Iterable[tuple[int, np.ndarray, np.ndarray | None]],
    spec: CodecSpec,
    k: int,
    block_rows: int = 65536,
    *,
    threads: int | None = None,
    kernel: str = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest gallery rows for each query code.

    ``query_codes``: uint8 (nq, code_bytes) (1-D = one query). ``blocks``: iterable of
    ``(start_row, codes, valid)`` or ``(start_row, codes, valid, sqnorms)`` with ``codes`` uint8
    (n, code_bytes) (a ``np.memmap`` view is fine: it is only read), ``valid`` bool (n,) or None,
    ``sqnorms`` the rows' ``codec.code_sqnorms`` (optional; saves recomputing them per query).
    Global row of block entry ``i`` is ``start_row + i``.

    Returns ``(rows, distances)``, both (nq, k), sorted by (distance, row): rows int64 (-1 where
    fewer than k valid rows exist); distances int64 for 8/4/1-bit codes (``INT_DISTANCE_FILL`` =
    int64 max where missing), float64 for float32 codes (inf where missing). Distances equal
    ``codec.pairwise_distances`` exactly. ``threads``: worker threads (``default_threads()``);
    ``kernel`` (one of :data:`KERNELS`): ``"auto"`` (the compiled scan for int8 codes with up to
    4 queries when it is built, else onnxruntime's product in the form ``int_gemm`` chooses for
    this CPU, else numpy), ``"native"`` (the compiled scan, an error where it does not apply),
    ``"onnxruntime"`` (the chosen form), ``"onnxruntime-bounded"`` / ``"onnxruntime-direct"``
    (forced: tests run every body on every machine; ``direct`` is refused where it is not exact)
    or ``"numpy"``.
    """
    if not isinstance(spec, CodecSpec):
        raise ValueError(f"spec: expected a CodecSpec, got {type(spec).__name__}")
    q = check_codes(query_codes, spec, "query codes")
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if isinstance(block_rows, (bool, np.bool_)) or not isinstance(block_rows, (int, np.integer)) or block_rows < 1:
        raise ValueError(f"block_rows must be a positive integer, got {block_rows!r}")
    if kernel not in _KERNEL_FORMS:
        raise ValueError(f"kernel: expected one of {', '.join(KERNELS)}, got {kernel!r}")
    k, block_rows = int(k), int(block_rows)
    nthreads = default_threads() if threads is None else int(threads)
    if nthreads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    nq = q.shape[0]
    best = _Best(nq, k, spec.is_integer)
    if nq == 0:
        return best.rows, best.dist

    if spec.is_integer:
        eng: Any = _IntEngine(q, spec, kernel)
        scan: Any = _scan_int
        step = _task_rows(nq, eng.k, block_rows)
        if eng.native is not None and threads is None:
            # the compiled scan runs near memory speed on one core: a second thread gained 20 % at
            # 1M x 192 on an idle 2-core machine and lost up to 2x (hand-offs) at 100k or under load
            nthreads = 1
    else:
        eng = _FloatEngine(q, spec)
        scan = _scan_float
        step = max(256, min(block_rows, (1 << 20) // (8 * (nq + spec.dim))))
    merge_at = max(2 * nq * k, 4096)
    boot = max(1024, 16 * k)  # rows of the first task, which only has to find thresholds
    # workers besides the calling thread (which scans too); tiny tasks are not worth a hand-off
    pool = _pool(nthreads - 1) if nthreads > 1 else None
    # split a block across threads only when each part has about 0.5 MB of operand and product
    # to chew on: below that, waking a worker costs more than it saves
    if spec.is_integer and eng.native is not None:
        min_split = max(2048, _NATIVE_SPLIT_BYTES // eng.k)  # the compiled scan is near memory speed
    else:
        min_split = max(2048, (1 << 19) // ((eng.k if spec.is_integer else 4 * spec.dim) + 4 * nq))

    def run(c: np.ndarray, vl: np.ndarray | None, sq: np.ndarray | None, st: int) -> None:
        best.add(scan(eng, c, vl, sq, st, best.thr, k))
        if best.pending >= merge_at:
            best.merge()

    for i, item in enumerate(blocks):
        start, codes, valid, sqn = _check_block(item, i, spec)
        n = codes.shape[0]
        lo = 0
        if nq > _EXACT_NQ and best.rows[0, -1] < 0 and n > boot:
            # no k-th best yet (every query sees the same rows, so all fill together): a small
            # task finds thresholds for the rest of the block to filter with
            run(codes[:boot], None if valid is None else valid[:boot], None if sqn is None else sqn[:boot], start)
            best.merge()
            lo = boot
        rest = n - lo
        if rest <= 0:
            continue
        ntasks = max(-(-rest // step), min(nthreads, -(-rest // min_split)))
        cuts = [lo + (rest * j) // ntasks for j in range(ntasks + 1)]
        parts = [(codes[a:b], None if valid is None else valid[a:b], None if sqn is None else sqn[a:b], start + a)
                 for a, b in zip(cuts[:-1], cuts[1:])]
        if pool is None or len(parts) == 1:
            for part in parts:
                run(*part)
            best.merge()
            continue
        thr = best.thr
        groups = [parts[j::nthreads] for j in range(min(nthreads, len(parts)))]

        def scan_group(group: list[tuple[Any, ...]], thr: np.ndarray = thr) -> list[_Cands]:
            return [scan(eng, *part, thr, k) for part in group]

        futures = [pool.submit(scan_group, g) for g in groups[1:]]
        for part in groups[0]:  # the calling thread scans the first group
            run(*part)
        for f in futures:
            for c in f.result():
                best.add(c)
        best.merge()  # tighter thresholds for the next block (cheap next to scanning one)
    best.merge()
    return best.rows, best.dist
