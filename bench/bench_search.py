"""Gallery search benchmark: edgereid's exact int8 top-k against faiss, plus the metrics' speed.

For each gallery size and embedding width it builds a random int8 gallery (quantised unit vectors
by default, the way the runtime stores embeddings; ``--data uniform`` for uniform random levels),
writes it to a file and memory-maps it like the gallery store does, then times:

- edgereid ``search.topk`` on 65,536-row blocks: with the rows' squared norms supplied (how a store
  with a ``SqnormCache`` serves repeated searches) and without (first search, norms computed);
- faiss ``IndexScalarQuantizer(d, QT_8bit)`` (the floor to beat) and ``IndexFlatL2`` (float32) on
  the same levels; single queries run faiss with one OpenMP thread (its fastest setting for one
  query), batches with all threads; the flat index's batch uses BLAS or not, whichever is faster
  (``faiss.cvar.distance_compute_blas_threshold``), and the JSON says which;
- single-query latency (median over distinct queries) and batch-of-256 throughput (median of
  repeats), peak growth of anonymous RSS during the searches, and whether edgereid's distances
  equal faiss IndexFlatL2's (exact arithmetic on integer levels). The contenders take turns
  query by query (and batch by batch) in a random order, so a load swing on a shared machine, and
  the cache eviction by whoever ran before, hit all of them alike.

Run without ``OPENBLAS_CORETYPE`` (``make bench`` unexports it: set, it pins numpy's OpenBLAS to
its AVX2 kernels on some machines). The machine may be
shared: the report records the load average before and after.

Usage: python bench/bench_search.py [--quick] [--sizes 100000,1000000] [--dims 32,64,192]
       [--out-json benchmarks/search.json] [--out-md benchmarks/search.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from bench_common import load_average, write_report
from edgereid.runtime import codec, int_gemm, metrics, native_scan, search
from edgereid.runtime.cpu_features import cpu_info

BLOCK_ROWS = 65536  # what the gallery store hands the kernel per block


def _ints(text: str) -> list[int]:
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from e
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return vals


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=_ints, default=[100_000, 1_000_000],
                   help="gallery sizes, comma-separated (default 100000,1000000)")
    p.add_argument("--dims", type=_ints, default=[32, 64, 192], help="embedding widths (default 32,64,192)")
    p.add_argument("--batch", type=int, default=256, help="queries per batch (default 256)")
    p.add_argument("--k", type=int, default=10, help="neighbours per query (default 10)")
    p.add_argument("--single-queries", type=int, default=30,
                   help="distinct single queries timed per configuration (default 30)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats of each batch search (default 3)")
    p.add_argument("--data", choices=["unit", "uniform"], default="unit",
                   help="gallery content: quantised random unit vectors (default) or uniform random int8 levels")
    p.add_argument("--threads", type=int, default=None,
                   help="edgereid search threads (default: search.default_threads()); a single-thread run "
                        "is always timed too")
    p.add_argument("--no-faiss", action="store_true", help="skip the faiss references (edgereid timings only)")
    p.add_argument("--no-metrics", action="store_true",
                   help="skip timing evaluate_rank on a Market-1501-sized distance matrix")
    p.add_argument("--quick", action="store_true",
                   help="small smoke run: one 20,000-row gallery of width 32, few repeats")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--workdir", default=None,
                   help="folder for the temporary gallery files (default: the system temp folder)")
    p.add_argument("--out-json", default="benchmarks/search.json", help="JSON results path (default benchmarks/search.json)")
    p.add_argument("--out-md", default="benchmarks/search.md", help="Markdown section path (default benchmarks/search.md)")
    args = p.parse_args(argv)
    if args.quick:
        args.sizes, args.dims, args.single_queries, args.repeats = [20_000], [32], 10, 2
    for name in ("batch", "k", "single_queries", "repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be positive")
    return args


# ---------------------------------------------------------------------------------------------
# measurement helpers
# ---------------------------------------------------------------------------------------------


def rss_anon_bytes() -> int:
    """Anonymous resident memory of this process (file-backed pages of a memory map excluded)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class PeakRss:
    """Samples anonymous RSS every millisecond in a thread; ``growth`` = peak minus the start."""

    def __enter__(self) -> PeakRss:
        self.base = self.peak = rss_anon_bytes()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_anon_bytes())
            time.sleep(0.001)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, rss_anon_bytes())

    @property
    def growth(self) -> int:
        return self.peak - self.base


def timed(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t




# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------


def make_gallery(path: Path, n: int, d: int, data: str, rng: np.random.Generator) -> codec.CodecSpec:
    """Write n int8 codes of width d to ``path`` in chunks (bounded memory); return their spec."""
    sample = codec.l2_normalize(rng.standard_normal((20_000, d)))
    spec = codec.CodecSpec(d, 8, codec.calibrate_scale(sample, 8))
    with open(path, "wb") as f:
        for s in range(0, n, 100_000):
            m = min(100_000, n - s)
            if data == "uniform":
                codes = rng.integers(-127, 128, (m, d), dtype=np.int8).view(np.uint8)
            else:
                codes = codec.quantize(codec.l2_normalize(rng.standard_normal((m, d))), spec)
            f.write(codes.tobytes())
    return spec


def make_queries(nq: int, spec: codec.CodecSpec, data: str, rng: np.random.Generator) -> np.ndarray:
    if data == "uniform":
        return rng.integers(-127, 128, (nq, spec.dim), dtype=np.int8).view(np.uint8)
    return codec.quantize(codec.l2_normalize(rng.standard_normal((nq, spec.dim))), spec)


# ---------------------------------------------------------------------------------------------
# one configuration
# ---------------------------------------------------------------------------------------------


def bench_one(n: int, d: int, args: argparse.Namespace, workdir: Path, rng: np.random.Generator) -> dict[str, Any]:
    """Time one (size, width); the contenders alternate query by query so load swings hit all alike."""
    path = workdir / f"gallery_{n}_{d}.i8"
    spec = make_gallery(path, n, d, args.data, rng)
    mm = np.memmap(path, dtype=np.uint8, mode="r", shape=(n, d))
    threads = args.threads or search.default_threads()
    norms = search.SqnormCache(spec)

    def blocks_cold():
        return ((s, mm[s : s + BLOCK_ROWS], None) for s in range(0, n, BLOCK_ROWS))

    def blocks_warm():
        return norms.wrap(blocks_cold())

    t_norms = timed(lambda: list(blocks_warm()))  # fill the cache once (what a store does at open)
    singles = make_queries(args.single_queries, spec, args.data, rng)
    batch = make_queries(args.batch, spec, args.data, rng)
    k = args.k
    res: dict[str, Any] = {"n": n, "dim": d, "k": k, "batch": args.batch, "threads": threads,
                           "gallery_bytes": n * d, "norm_cache_fill_s": t_norms}

    # contenders: name -> (single-query fn(i), batch fn(), threads for faiss or None)
    single: dict[str, Callable[[int], Any]] = {
        # threads=None unless --threads: the library's own choice (one thread for the compiled scan)
        "edgereid": lambda i: search.topk(singles[i : i + 1], blocks_warm(), spec, k, threads=args.threads),
        "edgereid_1t": lambda i: search.topk(singles[i : i + 1], blocks_warm(), spec, k, threads=1),
        "edgereid_cold": lambda i: search.topk(singles[i : i + 1], blocks_cold(), spec, k, threads=args.threads),
        # the fallback where the compiled scan is not built: onnxruntime MatMulInteger
        "edgereid_ort_1t": lambda i: search.topk(singles[i : i + 1], blocks_warm(), spec, k, threads=1,
                                                 kernel="onnxruntime"),
    }
    batched: dict[str, Callable[[], Any]] = {
        "edgereid": lambda: search.topk(batch, blocks_warm(), spec, k, threads=threads),
        # the product form every CPU can run exactly (what an AVX2-only CPU gets), side by side
        "edgereid_bounded": lambda: search.topk(batch, blocks_warm(), spec, k, threads=threads,
                                                kernel="onnxruntime-bounded"),
        "edgereid_1t": lambda: search.topk(batch, blocks_warm(), spec, k, threads=1),
        "edgereid_cold": lambda: search.topk(batch, blocks_cold(), spec, k, threads=threads),
    }
    if threads == 1:  # the single-thread variant is the main run: time it once
        del single["edgereid_1t"], batched["edgereid_1t"]
    faiss: Any = None
    if not args.no_faiss:
        import faiss

        levels = lambda a: a.view(np.int8).astype(np.float32)  # noqa: E731
        sq = faiss.IndexScalarQuantizer(d, faiss.ScalarQuantizer.QT_8bit)
        flat = faiss.IndexFlatL2(d)
        sq.train(levels(mm[: min(n, 200_000)]))
        for s in range(0, n, 100_000):
            chunk = levels(mm[s : s + 100_000])
            sq.add(chunk)
            flat.add(chunk)
        qs, qb = levels(singles), levels(batch)
        ncpu = faiss.omp_get_max_threads()
        blas_default = faiss.cvar.distance_compute_blas_threshold

        def faiss_call(index: Any, x: np.ndarray, omp: int, blas: bool = False) -> Any:
            faiss.omp_set_num_threads(omp)
            faiss.cvar.distance_compute_blas_threshold = 1 if blas else blas_default
            try:
                return index.search(x, k)
            finally:
                faiss.cvar.distance_compute_blas_threshold = blas_default
                faiss.omp_set_num_threads(ncpu)

        single["faiss_sq8"] = lambda i: faiss_call(sq, qs[i : i + 1], 1)
        single["faiss_flat"] = lambda i: faiss_call(flat, qs[i : i + 1], 1)
        batched["faiss_sq8"] = lambda: faiss_call(sq, qb, ncpu)
        batched["faiss_flat"] = lambda: faiss_call(flat, qb, ncpu)
        batched["faiss_flat_blas"] = lambda: faiss_call(flat, qb, ncpu, blas=True)

    for fn in single.values():
        fn(0)  # warm-up: sessions, thread pools, page cache
    times: dict[str, list[float]] = {name: [] for name in single}
    order_rng = np.random.default_rng(args.seed + 1)
    for i in range(len(singles)):
        # a fresh random order per query: whoever runs right after faiss Flat (a float32 copy 4x
        # the gallery) finds the codes evicted from the cache, so no contender may always be it
        for name in order_rng.permutation(list(single)):
            times[name].append(timed(lambda fn=single[name], i=i: fn(i)))
    for name, ts in times.items():
        res[f"{name}_single_ms"] = 1e3 * statistics.median(ts)
    for fn in batched.values():
        fn()
    times = {name: [] for name in batched}
    for _ in range(args.repeats):
        for name in order_rng.permutation(list(batched)):
            times[name].append(timed(batched[name]))
    for name, ts in times.items():
        res[f"{name}_batch_qps"] = args.batch / statistics.median(ts)
        res[f"{name}_batch_qps_best"] = args.batch / min(ts)
    if threads == 1:
        for key in ("single_ms", "batch_qps", "batch_qps_best"):
            res[f"edgereid_1t_{key}"] = res[f"edgereid_{key}"]
    if faiss is not None:
        # the flat index's batch: BLAS or not, whichever was faster here
        res["faiss_flat_batch_blas"] = res.pop("faiss_flat_blas_batch_qps") > res["faiss_flat_batch_qps"]
        blas_best = res.pop("faiss_flat_blas_batch_qps_best")
        if res["faiss_flat_batch_blas"]:
            res["faiss_flat_batch_qps"] = args.batch / statistics.median(times["faiss_flat_blas"])
            res["faiss_flat_batch_qps_best"] = blas_best

    with PeakRss() as mem:
        _, ours = batched["edgereid"]()
    res["edgereid_batch_rss_growth_bytes"] = mem.growth
    with PeakRss() as mem:
        single["edgereid"](0)
    res["edgereid_single_rss_growth_bytes"] = mem.growth
    if faiss is not None:
        with PeakRss() as mem:
            batched["faiss_sq8"]()
        res["faiss_sq8_batch_rss_growth_bytes"] = mem.growth
        ref_d, _ = flat.search(qb, k)
        _, bounded = batched["edgereid_bounded"]()
        res["exact_vs_faiss_flat"] = bool(np.array_equal(ours.astype(np.float64), ref_d.astype(np.float64))
                                          and np.array_equal(bounded.astype(np.float64), ref_d.astype(np.float64)))
        single.clear()
        batched.clear()
        del sq, flat
    path.unlink()  # the mapping stays readable until it is dropped; the disk space is freed then
    return res


def bench_metrics(rng: np.random.Generator, nq: int = 3368, ng: int = 15913) -> dict[str, Any]:
    """evaluate_all on a Market-1501-sized integer distance matrix (751 identities, 6 cameras)."""
    q_pids, g_pids = rng.integers(0, 751, nq), rng.integers(-1, 751, ng)
    q_cams, g_cams = rng.integers(0, 6, nq), rng.integers(0, 6, ng)
    dist = rng.integers(0, 200_000, (nq, ng), dtype=np.int64)
    t = timed(lambda: metrics.evaluate_all(dist, q_pids, g_pids, q_cams, g_cams))
    return {"num_query": nq, "num_gallery": ng, "evaluate_all_s": t}


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------


def fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def markdown(report: dict[str, Any], command: str) -> str:
    rows = report["results"]
    lines = [
        "## Gallery search (exact int8 top-k)",
        "",
        f"Command: `{command}`",
        "",
        f"CPU: {report['cpu_summary']}{report.get('cpu_note', '')}; faiss: {report.get('faiss_build', '-')}.",
        "",
        f"Gallery: {report['data_note']}; k = {report['k']}; edgereid threads = {report['threads']}; "
        f"load average before/after: {report['load_before']} / {report['load_after']} (the machine is "
        "shared with other jobs: a load above the core count slows everything, threads most).",
        "",
        f"Single query: median latency in ms (lower is better). Kernel: {report.get('single_kernel', '-')}; "
        f"threads: {report.get('single_threads', '-')}. "
        "faiss runs one OpenMP thread for single queries, so \"vs SQ8\" compares one thread with one thread.",
        "edgereid \"warm\" has the rows' squared norms cached (a store's `SqnormCache`), \"cold\" computes them "
        "(the compiled scan needs none: the two read alike); \"onnxruntime\" is the fallback kernel used where "
        "the C extension was not built.",
        "",
        "| entries | dim | edgereid | 1 thread | cold | onnxruntime, 1 thread | faiss SQ8 | faiss Flat | "
        "vs SQ8 (1 thread) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        sq = r.get("faiss_sq8_single_ms")
        lines.append(f"| {r['n']:,} | {r['dim']} | {fmt(r['edgereid_single_ms'], '.2f')} | "
                     f"{fmt(r['edgereid_1t_single_ms'], '.2f')} | "
                     f"{fmt(r['edgereid_cold_single_ms'], '.2f')} | {fmt(r.get('edgereid_ort_1t_single_ms'), '.2f')} | "
                     f"{fmt(sq, '.2f')} | {fmt(r.get('faiss_flat_single_ms'), '.2f')} | "
                     f"{fmt(sq / r['edgereid_1t_single_ms'] if sq else None, '.2f')}x |")
    lines += [
        "",
        f"Batch of {report['batch']} queries: queries per second (median of repeats; higher is better).",
        "",
        f"Product form: {report.get('batch_kernel', '-')}. \"bounded\" forces the form every CPU can run exactly "
        "(the one an x86 CPU without VNNI gets: twice the multiply-adds).",
        "",
        "| entries | dim | edgereid warm | warm, 1 thread | bounded form | edgereid cold | faiss SQ8 | faiss Flat | "
        "vs SQ8 (warm) | bounded vs SQ8 | exact | RSS growth edgereid / SQ8 |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|---:|",
    ]
    for r in rows:
        sq = r.get("faiss_sq8_batch_qps")
        exact = {True: "yes", False: "NO", None: "-"}[r.get("exact_vs_faiss_flat")]
        mb = lambda b: "-" if b is None else f"{b / 2**20:.1f} MB"  # noqa: E731
        lines.append(f"| {r['n']:,} | {r['dim']} | {fmt(r['edgereid_batch_qps'], ',.0f')} | "
                     f"{fmt(r['edgereid_1t_batch_qps'], ',.0f')} | {fmt(r.get('edgereid_bounded_batch_qps'), ',.0f')} | "
                     f"{fmt(r['edgereid_cold_batch_qps'], ',.0f')} | {fmt(sq, ',.0f')} | "
                     f"{fmt(r.get('faiss_flat_batch_qps'), ',.0f')} | "
                     f"{fmt(r['edgereid_batch_qps'] / sq if sq else None, '.2f')}x | "
                     f"{fmt(r['edgereid_bounded_batch_qps'] / sq if sq and 'edgereid_bounded_batch_qps' in r else None, '.2f')}x | "
                     f"{exact} | "
                     f"{mb(r['edgereid_batch_rss_growth_bytes'])} / {mb(r.get('faiss_sq8_batch_rss_growth_bytes'))} |")
    lines += ["", "\"exact\": edgereid's k distances (both product forms) equal faiss IndexFlatL2's on the integer "
              "levels for every batch query. RSS growth: peak anonymous memory added during the batch searches (the gallery "
              "itself is memory-mapped, faiss holds its own copy).", ""]
    if report.get("metrics"):
        m = report["metrics"]
        lines += [f"`metrics.evaluate_all` on a {m['num_query']:,} x {m['num_gallery']:,} distance matrix "
                  f"(Market-1501 size): {m['evaluate_all_s']:.2f} s.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.environ.get("OPENBLAS_CORETYPE"):
        print(f"note: OPENBLAS_CORETYPE={os.environ['OPENBLAS_CORETYPE']} is set (slows BLAS; make bench unsets it)",
              file=sys.stderr)
    rng = np.random.default_rng(args.seed)
    report: dict[str, Any] = {
        "command": " ".join([Path(sys.argv[0]).name] + (sys.argv[1:] if argv is None else argv)),
        "python": platform.python_version(), "numpy": np.__version__, "cpu_count": os.cpu_count(),
        "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE"), "load_before": load_average(),
        "k": args.k, "batch": args.batch, "threads": args.threads or search.default_threads(), "data": args.data,
        "data_note": ("quantised random unit vectors (int8, calibrated scale)" if args.data == "unit"
                      else "uniform random int8 levels"),
        "results": [],
    }
    cpu = cpu_info()
    report["cpu"] = cpu.to_dict()
    report["cpu_summary"] = cpu.summary()
    if cpu.overridden:
        report["cpu_note"] = (" (features forced by EDGEREID_CPU_FEATURES: edgereid chooses its kernel bodies and "
                              "product form as on such a CPU; onnxruntime's and faiss's own kernels still use "
                              "this CPU's instructions unless FAISS_OPT_LEVEL says otherwise)")
    report["single_kernel"] = native_scan.describe()
    report["batch_kernel"] = int_gemm.describe()
    try:
        import faiss

        report["faiss_build"] = (f"faiss {faiss.__version__}, compiled {faiss.get_compile_options().strip()}; "
                                 f"FAISS_OPT_LEVEL={os.environ.get('FAISS_OPT_LEVEL', 'unset')}")
    except Exception:  # noqa: BLE001 (faiss is optional here)
        report["faiss_build"] = None
    report["single_threads"] = (args.threads if args.threads else
                                "library default (1 for the compiled scan, else as for batches)")
    try:
        import onnxruntime

        report["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        report["onnxruntime"] = None
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        for n in args.sizes:
            for d in args.dims:
                r = bench_one(n, d, args, Path(tmp), rng)
                report["results"].append(r)
                print(f"n={n:,} d={d}: single {r['edgereid_single_ms']:.2f} ms (cold {r['edgereid_cold_single_ms']:.2f}, "
                      f"faiss SQ8 {r.get('faiss_sq8_single_ms', float('nan')):.2f}); batch {r['edgereid_batch_qps']:,.0f} q/s "
                      f"(faiss SQ8 {r.get('faiss_sq8_batch_qps', float('nan')):,.0f}); exact {r.get('exact_vs_faiss_flat')}",
                      flush=True)
    if not args.no_metrics:
        report["metrics"] = bench_metrics(rng) if not args.quick else bench_metrics(rng, 500, 3000)
    report["load_after"] = load_average()
    write_report(report, args.out_json, args.out_md, markdown, "bench/bench_search.py", argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
