"""Exact blocked top-k search: equals brute force over the codec's distances, ties by row."""

from __future__ import annotations

import platform
import shutil
import tracemalloc

import numpy as np
import pytest
from edgereid.runtime import codec, int_gemm, native_scan, search
from edgereid.runtime.codec import CodecSpec
from edgereid.runtime.int_gemm import IntGemm, matmul_integer_model


def brute_force(q: np.ndarray, g: np.ndarray, spec: CodecSpec, k: int, valid: np.ndarray | None = None):
    """Reference: every distance, invalid rows dropped, stable sort (ties by row index)."""
    d = codec.pairwise_distances(q, g, spec)
    fill = search.INT_DISTANCE_FILL if spec.is_integer else search.FLOAT_DISTANCE_FILL
    rows = np.arange(g.shape[0]) if valid is None else np.flatnonzero(valid)
    d = d[:, rows]
    order = np.argsort(d, axis=1, kind="stable")[:, :k]
    out_r = np.full((q.shape[0], k), -1, np.int64)
    out_d = np.full((q.shape[0], k), fill, d.dtype)
    m = order.shape[1]
    out_r[:, :m] = rows[order]
    out_d[:, :m] = np.take_along_axis(d, order, axis=1)
    return out_r, out_d


def make_data(spec: CodecSpec, n: int, nq: int, seed: int, dup: bool = True):
    """Quantised unit vectors with exact duplicates (ties) and queries equal to gallery rows."""
    rng = np.random.default_rng(seed)
    x = codec.l2_normalize(rng.standard_normal((n, spec.dim)))
    if dup and n >= 8:
        x[n // 2 : n // 2 + n // 4] = x[: n // 4]  # duplicate rows in another block
    g = codec.quantize(x, spec)
    q = codec.quantize(codec.l2_normalize(rng.standard_normal((nq, spec.dim))), spec)
    if nq >= 2:
        q[0] = g[1]  # distance 0 to row 1 and to its duplicate
    return q, g


def blocks_of(g: np.ndarray, size: int, valid: np.ndarray | None = None):
    return [(s, g[s : s + size], None if valid is None else valid[s : s + size]) for s in range(0, g.shape[0], size)]


def check(q, g, spec, k, blocks, valid=None, **kw):
    rows, dist = search.topk(q, iter(blocks), spec, k, **kw)
    ref_rows, ref_dist = brute_force(q, g, spec, k, valid)
    assert rows.dtype == np.int64 and rows.shape == (q.shape[0], k)
    np.testing.assert_array_equal(rows, ref_rows)
    np.testing.assert_array_equal(dist, ref_dist)
    return rows, dist


SPECS = [CodecSpec(32, 8, 0.02), CodecSpec(33, 4, 0.12), CodecSpec(13, 1, 0.1), CodecSpec(8, 32), CodecSpec(7, 8, 0.05)]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"d{s.dim}b{s.bits}")
@pytest.mark.parametrize("kernel", ["auto", "onnxruntime", "numpy"])
def test_equals_brute_force_with_masks_and_many_blocks(spec: CodecSpec, kernel: str) -> None:
    q, g = make_data(spec, 2500, 6, seed=spec.dim + spec.bits)
    valid = np.random.default_rng(0).random(g.shape[0]) > 0.25
    for threads in (1, 3):
        # blocks of 700 rows, scanned in chunks of 300 (block_rows), by 1 or 3 worker threads;
        # 6 queries take the bound-filter path, 1 and 3 queries the all-exact path
        for nq in (6, 1, 3):
            check(q[:nq], g, spec, 10, blocks_of(g, 700, valid), valid, block_rows=300, threads=threads, kernel=kernel)
    check(q, g, spec, 1, blocks_of(g, 1000), kernel=kernel)  # no masks, k = 1


@pytest.mark.parametrize("two_level", [True, False])
@pytest.mark.parametrize("data", ["unit", "uniform"])
def test_many_queries(two_level: bool, data: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # 40 queries: the candidate bound is checked per band maximum first (or directly); uniform
    # random levels have widely spread norms, which makes the band bound loose (the fallback path)
    if not two_level:
        monkeypatch.setattr(search, "_TWO_LEVEL_NQ", 10**9)
    rng = np.random.default_rng(21)
    spec = CodecSpec(24, 8, codec.calibrate_scale(codec.l2_normalize(rng.standard_normal((1000, 24)))))
    n = 20_000
    if data == "unit":
        q, g = make_data(spec, n, 40, seed=21)
    else:
        g = rng.integers(-127, 128, (n, 24), dtype=np.int8).view(np.uint8)
        q = rng.integers(-127, 128, (40, 24), dtype=np.int8).view(np.uint8)
    valid = np.random.default_rng(1).random(n) > 0.1
    check(q, g, spec, 1, blocks_of(g, 2500, valid), valid, block_rows=3000, threads=2)


def test_duplicates_tie_by_insertion_order_across_k_boundary() -> None:
    spec = CodecSpec(16, 8, 0.05)
    rng = np.random.default_rng(7)
    base = codec.quantize(codec.l2_normalize(rng.standard_normal((1, 16))), spec)
    far = codec.quantize(codec.l2_normalize(rng.standard_normal((3000, 16))), spec)
    g = far.copy()
    dup_rows = np.array([5, 17, 900, 1500, 1501, 2999])
    g[dup_rows] = base  # six rows at distance 0, spread over blocks; k = 4 cuts through them
    rows, dist = check(base, g, spec, 4, blocks_of(g, 512)[::-1], block_rows=256, threads=2)  # blocks out of order
    assert rows.tolist() == [[5, 17, 900, 1500]] and dist.tolist() == [[0, 0, 0, 0]]


@pytest.mark.parametrize("bits", [8, 4, 1, 32])
def test_k_larger_than_gallery_and_fully_masked(bits: int) -> None:
    spec = CodecSpec(10, bits, 0.1)
    q, g = make_data(spec, 5, 3, seed=1, dup=False)
    rows, dist = check(q, g, spec, 8, blocks_of(g, 2))
    assert (rows[:, 5:] == -1).all()
    fill = search.INT_DISTANCE_FILL if bits != 32 else np.inf
    assert (dist[:, 5:] == fill).all()
    rows, dist = search.topk(q, [(0, g, np.zeros(5, bool))], spec, 3)
    assert (rows == -1).all() and (dist == fill).all()
    rows, _ = search.topk(q, [], spec, 3)  # an empty gallery
    assert (rows == -1).all()


def test_memmap_blocks_and_row_gaps(tmp_path) -> None:
    spec = CodecSpec(24, 8, 0.03)
    q, g = make_data(spec, 3000, 4, seed=3)
    path = tmp_path / "codes.bin"
    g.tofile(path)
    mm = np.memmap(path, dtype=np.uint8, mode="r", shape=g.shape)
    # rows are numbered with gaps: block i starts at 10_000 * i
    blocks = [(10_000 * i, mm[s : s + 1000], None) for i, s in enumerate(range(0, 3000, 1000))]
    rows, dist = search.topk(q, iter(blocks), spec, 7, block_rows=400)
    ref_rows, ref_dist = brute_force(q, g, spec, 7)
    np.testing.assert_array_equal(rows, (ref_rows // 1000) * 10_000 + ref_rows % 1000)
    np.testing.assert_array_equal(dist, ref_dist)


@pytest.mark.parametrize("bits", [8, 4, 1, 32])
def test_precomputed_sqnorms_and_cache(bits: int) -> None:
    spec = CodecSpec(20, bits, 0.08)
    q, g = make_data(spec, 1500, 5, seed=bits)
    blocks = blocks_of(g, 400)
    with_norms = [(s, c, v, codec.code_sqnorms(c, spec)) for s, c, v in blocks]
    check(q, g, spec, 6, with_norms)
    cache = search.SqnormCache(spec)
    check(q, g, spec, 6, list(cache.wrap(iter(blocks))))
    assert len(cache) == 1500
    check(q, g, spec, 6, list(cache.wrap(iter(blocks))))  # second search served from the cache
    cache.clear()
    assert len(cache) == 0


def test_one_dimensional_query_and_int8_codes() -> None:
    spec = CodecSpec(12, 8, 0.1)
    q, g = make_data(spec, 300, 2, seed=9)
    rows, dist = search.topk(q[1], [(0, g.view(np.int8), None)], spec, 5)
    ref_rows, ref_dist = brute_force(q[1:2], g, spec, 5)
    np.testing.assert_array_equal(rows, ref_rows)
    np.testing.assert_array_equal(dist, ref_dist)


def test_search_memory_stays_flat(tmp_path) -> None:
    # a 4 MB memory-mapped gallery searched in 4096-row blocks: the search's own allocations stay
    # far below the gallery (let alone its float32 copy, 16 MB)
    spec = CodecSpec(32, 8, 0.02)
    n = 125_000
    rng = np.random.default_rng(5)
    path = tmp_path / "big.bin"
    rng.integers(-127, 128, (n, 32), dtype=np.int8).tofile(path)
    mm = np.memmap(path, dtype=np.uint8, mode="r", shape=(n, 32))
    q = np.ascontiguousarray(mm[:2])
    blocks = ((s, mm[s : s + 4096], None) for s in range(0, n, 4096))
    search.topk(q, [(0, mm[:4096], None)], spec, 5, threads=1)  # warm up sessions and scratch buffers
    tracemalloc.start()
    rows, _ = search.topk(q, blocks, spec, 5, block_rows=4096, threads=1)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert rows[0, 0] == 0 and rows[1, 0] == 1
    assert peak < n * 32 / 4, f"search allocated {peak} bytes at peak for a {n * 32}-byte gallery"


def test_bad_inputs_name_the_problem() -> None:
    spec = CodecSpec(8, 8, 0.1)
    g = np.zeros((4, 8), np.uint8)
    q = np.zeros((1, 8), np.uint8)
    with pytest.raises(ValueError, match=r"query codes: expected shape \(n, 8\)"):
        search.topk(np.zeros((1, 9), np.uint8), [(0, g, None)], spec, 1)
    with pytest.raises(ValueError, match=r"block 1 codes: expected shape \(n, 8\) .* got \(4, 4\)"):
        search.topk(q, [(0, g, None), (4, np.zeros((4, 4), np.uint8), None)], spec, 1)
    with pytest.raises(ValueError, match=r"block 0 codes: expected dtype uint8 .* got float32"):
        search.topk(q, [(0, g.astype(np.float32), None)], spec, 1)
    with pytest.raises(ValueError, match=r"block 0: valid mask must be a bool array of shape \(4,\)"):
        search.topk(q, [(0, g, np.ones(3, bool))], spec, 1)
    with pytest.raises(ValueError, match=r"block 0: expected a tuple"):
        search.topk(q, [[0, g, None]], spec, 1)
    with pytest.raises(ValueError, match=r"block 0: start_row must be a non-negative integer"):
        search.topk(q, [(-1, g, None)], spec, 1)
    with pytest.raises(ValueError, match=r"block 0: sqnorms must be"):
        search.topk(q, [(0, g, None, np.zeros(4, np.float32))], spec, 1)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        search.topk(q, [(0, g, None)], spec, 0)
    with pytest.raises(ValueError, match="kernel"):
        search.topk(q, [(0, g, None)], spec, 1, kernel="cuda")


def test_int_gemm_model_is_valid_onnx() -> None:
    onnx = pytest.importorskip("onnx")
    model = onnx.load_from_string(matmul_integer_model(40, 128))
    onnx.checker.check_model(model)
    assert [n.op_type for n in model.graph.node] == ["MatMulInteger"]


@pytest.mark.parametrize("form", int_gemm.FORMS)
def test_every_product_form_is_exact_or_refused(form: str, record_property) -> None:
    # operands at the extremes (a = 255 and 0, b = -128 and 127): a kernel that adds two products
    # in saturating 16-bit lanes (x86 without VNNI) gets these wrong
    rng = np.random.default_rng(2)
    a = rng.integers(0, 256, (300, 40), dtype=np.uint8)
    a[0], a[1] = 255, 0
    b = rng.integers(-128, 128, (40, 4), dtype=np.int8)
    b[:, 0], b[:, 1] = -128, 127
    if form == "direct" and not int_gemm.usable("direct"):
        # this CPU's kernel saturates: the direct form must be refused, never used
        with pytest.raises(ValueError, match="not exact on this CPU"):
            int_gemm.product_form("direct")
        assert int_gemm.product_form() == "bounded"
        record_property("kernel_body", ("batch product: direct", "refused here (its kernel saturates)"))
        return
    assert int_gemm.probe(form)
    for zp in (128, None):
        gemm = IntGemm(b, zp, form)
        assert gemm.reps == (2 if form == "bounded" else 1)
        assert form == "direct" or int(np.abs(gemm.b.astype(np.int16)).max()) <= int_gemm.BOUNDED_MAX
        expect = (a.astype(np.int64) - (zp or 0)) @ b.astype(np.int64)
        np.testing.assert_array_equal(gemm.product(a), expect)
    narrow = (b // 4).astype(np.int8)  # already within +-64: no split needed
    assert IntGemm(narrow, 128, "bounded").reps == 1
    record_property("kernel_body", (f"batch product: {form}", "ran, exact"))


def test_product_form_follows_the_cpu_features(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEREID_CPU_FEATURES", "avx2")  # taken as a CPU without VNNI: bounded
    if platform.machine() in ("x86_64", "AMD64"):
        assert int_gemm.product_form() == "bounded"
        assert "bounded" in int_gemm.describe()
    monkeypatch.setenv("EDGEREID_CPU_FEATURES", "avx2,avx512bw,vnni")
    assert int_gemm.product_form() == ("direct" if int_gemm.usable("direct") else "bounded")
    with pytest.raises(ValueError, match="integer product form"):
        int_gemm.product_form("fast")
    kernels = search.describe_kernels()
    assert set(kernels) == {"single_query_int8", "batch"} and "onnxruntime" in kernels["batch"]


def int64_reference(q: np.ndarray, g: np.ndarray, spec: CodecSpec, k: int):
    """Brute force in int64 arithmetic only: squared differences of integer levels, stable sort."""
    lq = codec.unpack(q, spec).astype(np.int64)
    lg = codec.unpack(g, spec).astype(np.int64)
    d = ((lq[:, None, :] - lg[None, :, :]) ** 2).sum(axis=2)
    order = np.argsort(d, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(d, order, axis=1)


EXTREME = [(CodecSpec(1100, 8, 1.0), (-127, 127, -126, 126)), (CodecSpec(192, 8, 1.0), (-127, 127)),
           (CodecSpec(1999, 4, 1.0), (-7, 7)), (CodecSpec(4099, 1, 1.0), (0, 1))]


@pytest.mark.parametrize("spec,levels", EXTREME, ids=lambda v: f"d{v.dim}b{v.bits}" if isinstance(v, CodecSpec) else "")
@pytest.mark.parametrize("kernel", search.KERNELS)
def test_every_kernel_is_exact_at_extreme_levels(spec: CodecSpec, levels: tuple, kernel: str, record_property) -> None:
    # long vectors of extreme levels: int32 products near their limits, float32 sums past 2^24
    rng = np.random.default_rng(spec.dim)
    lv = rng.choice(np.array(levels, np.int8), (300, spec.dim))
    lv[7] = levels[0]
    lv[8] = levels[1]
    # levels -> codes through the codec (scale 1: level = value; 1-bit codes keep the sign, level 1 = positive)
    g = codec.quantize(lv.astype(np.float32) - (0.5 if spec.bits == 1 else 0.0), spec)
    assert (codec.unpack(g, spec) == lv).all()
    q_all = g[[7, 8, 3, 40, 41, 42]].copy()
    for nq in (1, 2, 6):  # one query, the few-queries path, the bound-filter path
        q = q_all[:nq]
        if kernel == "native" and (spec.bits != 8 or nq > 4 or native_scan.load() is None):
            continue
        if kernel == "onnxruntime-direct" and not int_gemm.usable("direct"):
            with pytest.raises(ValueError, match="not exact on this CPU"):
                search.topk(q, [(0, g, None)], spec, 5, kernel=kernel)
            continue
        rows, dist = search.topk(q, [(0, g[:150], None), (150, g[150:], None)], spec, 20, kernel=kernel)
        ref_rows, ref_dist = int64_reference(q, g, spec, 20)
        np.testing.assert_array_equal(dist, ref_dist, err_msg=f"{kernel} nq={nq}")
        np.testing.assert_array_equal(rows, ref_rows, err_msg=f"{kernel} nq={nq}")
    record_property("kernel_body", (f"search kernel {kernel}", "ran, exact" if kernel != "onnxruntime-direct"
                                    or int_gemm.usable("direct") else "refused here (not exact on this CPU)"))


def test_default_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEREID_SEARCH_THREADS", "3")
    assert search.default_threads() == 3
    monkeypatch.setenv("EDGEREID_SEARCH_THREADS", "zero")
    with pytest.raises(ValueError, match="EDGEREID_SEARCH_THREADS: expected a positive integer, got 'zero'"):
        search.default_threads()
    monkeypatch.delenv("EDGEREID_SEARCH_THREADS")
    monkeypatch.setattr(search.os, "getloadavg", lambda: (1e9, 0.0, 0.0))
    assert search.default_threads() == 1  # a saturated machine: no hand-offs between threads


# ---- the compiled single-query scan (runtime/_l2scan.c) ----------------------------------------


def test_native_kernel_is_built_where_a_compiler_exists() -> None:
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler on this machine: the install falls back to the onnxruntime kernel")
    lib = native_scan.load()
    assert lib is not None, "setup.py should have built edgereid.runtime._l2scan (pip install -e . rebuilds it)"
    assert lib.isa in native_scan.ISA_NAMES


@pytest.mark.parametrize("dim", [1, 7, 16, 31, 32, 33, 45, 64, 100, 192])
def test_native_kernel_every_isa_equals_brute_force(dim: int, record_property) -> None:
    lib = native_scan.load()
    if lib is None:
        pytest.skip("native kernel not built")
    rng = np.random.default_rng(dim)
    n = 1500
    g = rng.integers(-127, 128, (n, dim), dtype=np.int8)
    g[700:900] = g[100:300]  # duplicates: ties broken by the lower row
    g[5] = 127  # extreme levels: distances up to 254^2 * dim stay exact
    valid = rng.random(n) > 0.2
    q = g[150].copy()
    q[0] = -127
    ref = ((g.astype(np.int64) - q.astype(np.int64)) ** 2).sum(axis=1)
    for isa in range(lib.isa + 1):  # the portable body and every SIMD body this CPU has
        for k, thr, mask in ((10, 2**62, None), (10, 2**62, valid), (3000, 2**62, valid), (7, int(np.median(ref)), None)):
            rows = np.flatnonzero(mask) if mask is not None else np.arange(n)
            rows = rows[ref[rows] <= thr]
            order = rows[np.lexsort((rows, ref[rows]))][:k]
            d, r = lib.topk(g, q, mask, thr, k, isa=isa)
            got = np.lexsort((r, d))
            np.testing.assert_array_equal(r[got], order, err_msg=f"isa {isa} k {k} thr {thr}")
            np.testing.assert_array_equal(d[got], ref[order])
    for isa, name in native_scan.ISA_NAMES.items():
        record_property("kernel_body", (f"compiled scan {name}", "ran, exact" if isa <= lib.isa
                                        else "not on this CPU (an emulated CPU test covers x86 bodies)"))


def test_native_kernel_rejects_bad_arguments() -> None:
    lib = native_scan.load()
    if lib is None:
        pytest.skip("native kernel not built")
    g = np.zeros((10, 8), np.int8)
    with pytest.raises(ValueError, match="C-contiguous"):
        lib.topk(g[:, ::2], np.zeros(4, np.int8), None, 10, 3)
    with pytest.raises(ValueError, match="query must have 8 levels"):
        lib.topk(g, np.zeros(5, np.int8), None, 10, 3)
    with pytest.raises(ValueError, match="valid mask"):
        lib.topk(g, np.zeros(8, np.int8), np.ones(3, bool), 10, 3)
    with pytest.raises(ValueError, match="refused"):
        lib.topk(g, np.zeros(8, np.int8), None, 10, 0)
    d, r = lib.topk(g[:0], np.zeros(8, np.int8), None, 10, 3)  # empty scan: nothing found
    assert d.size == 0 and r.size == 0


def test_search_without_native_kernel_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = CodecSpec(32, 8, 0.02)
    q, g = make_data(spec, 900, 2, seed=4)
    monkeypatch.setattr(native_scan, "load", lambda: None)
    check(q[:1], g, spec, 5, blocks_of(g, 400), kernel="auto")  # the onnxruntime product path
    with pytest.raises(ValueError, match="compiled scan kernel"):
        search.topk(q[:1], iter(blocks_of(g, 400)), spec, 5, kernel="native")
    monkeypatch.undo()
    if native_scan.load() is not None:
        with pytest.raises(ValueError, match="only int8"):
            search.topk(codec.quantize(np.ones((1, 16), np.float32) / 4, CodecSpec(16, 4, 0.1)), iter([]),
                        CodecSpec(16, 4, 0.1), 5, kernel="native")


def test_auto_kernel_picks_the_compiled_scan_for_few_int8_queries() -> None:
    # without this, "auto" could silently fall back to onnxruntime and every equality test above
    # would still pass
    lib = native_scan.load()
    spec = CodecSpec(32, 8, 0.02)
    q, _ = make_data(spec, 16, 6, seed=1)
    assert (search._IntEngine(q[:1], spec, "auto").native is lib)
    assert (search._IntEngine(q[:4], spec, "auto").native is lib)
    assert search._IntEngine(q, spec, "auto").native is None  # 6 queries: the batched product
    assert search._IntEngine(q[:1], spec, "onnxruntime").native is None
    q4 = codec.quantize(codec.l2_normalize(np.ones((1, 33), np.float32)), CodecSpec(33, 4, 0.12))
    assert search._IntEngine(q4, CodecSpec(33, 4, 0.12), "auto").native is None


def test_feature_override_selects_the_scan_body(monkeypatch: pytest.MonkeyPatch) -> None:
    lib = native_scan.load()
    if lib is None:
        pytest.skip("native kernel not built")
    assert lib.default_isa == lib.isa
    monkeypatch.setenv("EDGEREID_CPU_FEATURES", "")
    assert lib.default_isa == 0 and native_scan.describe() == "compiled scan (portable C)"
    if lib.isa >= 1:
        monkeypatch.setenv("EDGEREID_CPU_FEATURES", "avx2,vnni")
        assert lib.default_isa == 1 and native_scan.describe() == "compiled scan (AVX2)"
    spec = CodecSpec(40, 8, 0.02)
    q, g = make_data(spec, 700, 1, seed=5)
    check(q, g, spec, 9, blocks_of(g, 300), kernel="native")  # the forced body is exact too
