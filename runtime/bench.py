"""``reid-runtime bench``: what this device really does with this bundle.

Measures, on the device it runs on, with the backend the command line picks:

- ``preprocess``: one image file -> input tensor (decode, resize, normalise), per image;
- ``embed_b1`` / ``embed_bN``: one backend call at batch 1 and at batch N (latency per call;
  throughput in images/s);
- ``search_1`` / ``search_batch``: one query, and a batch of queries, against a gallery (an
  existing store, or a synthetic one of random codes with the bundle's spec, deleted after);
- ``pipeline_b1``: image file -> identity for one image (preprocess + embed + search), the
  latency a camera stream sees;
- peak resident memory of the process (``ru_maxrss``) and its resident size after each stage;

and records the device: the CPU (model, AVX2/AVX-512BW/VNNI/NEON dot product), the search
kernels, and which artifact ran and why (the automatic choice's timings, or the flag that named it).

Every latency is reported as p50/p95/p99/mean/min over ``--iterations`` timed runs after
``--warmup`` untimed ones. Results go to ``bench.json`` and ``bench.md`` in ``--out-dir``. These
are benchmarks, not tests: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from edgereid.data.atomic import write_json_atomic, write_text_atomic

from .device_report import device_report

__all__ = ["add_bench_args", "run_bench", "latency_stats", "peak_rss_bytes", "current_rss_bytes"]


def add_bench_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("benchmark")
    g.add_argument("--images", default=None, metavar="DIR",
                   help="folder of real images for the preprocessing and pipeline timings (default: a synthetic "
                        "JPEG crop made in memory)")
    g.add_argument("--batch", type=int, default=16, metavar="N",
                   help="batch size of the batched embedding measurement (default 16)")
    g.add_argument("--iterations", type=int, default=50, metavar="N", help="timed runs per measurement (default 50)")
    g.add_argument("--warmup", type=int, default=5, metavar="N", help="untimed runs before each measurement (default 5)")
    g.add_argument("--gallery", default=None, metavar="STORE",
                   help="search this existing gallery store (default: a synthetic one, see --gallery-size)")
    g.add_argument("--gallery-size", type=int, default=100_000, metavar="N",
                   help="entries of the synthetic gallery (random codes, 10 per identity; default 100000)")
    g.add_argument("--query-batch", type=int, default=64, metavar="N",
                   help="queries per batched search measurement (default 64)")
    g.add_argument("--topk", type=int, default=5, metavar="K", help="results per search (default 5)")
    g.add_argument("--out-dir", default="reid-bench", metavar="DIR",
                   help="where bench.json and bench.md are written (default ./reid-bench)")


# ---------------------------------------------------------------------------------------------
# measuring
# ---------------------------------------------------------------------------------------------


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def current_rss_bytes() -> int | None:
    """Resident set size now (Linux /proc; None elsewhere)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def latency_stats(seconds: list[float], items_per_call: int = 1) -> dict[str, float]:
    """Latency percentiles in milliseconds and throughput in items per second."""
    ms = np.asarray(seconds, np.float64) * 1e3
    total = float(np.sum(seconds))
    return {
        "calls": len(seconds),
        "items_per_call": items_per_call,
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
        "min_ms": float(ms.min()),
        "throughput_per_s": (len(seconds) * items_per_call / total) if total > 0 else float("inf"),
    }


def _time(fn: Callable[[int], Any], iterations: int, warmup: int) -> list[float]:
    for i in range(warmup):
        fn(i)
    out = []
    for i in range(iterations):
        t0 = time.perf_counter()
        fn(i)
        out.append(time.perf_counter() - t0)
    return out


def _synthetic_jpeg(height: int, width: int) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _synthetic_gallery(path: str, spec, n: int) -> None:
    from .codec import l2_normalize, quantize
    from .store import GalleryStore

    rng = np.random.default_rng(1)
    with GalleryStore.create(path, dim=spec.dim, bits=spec.bits, scale=spec.scale, metric=spec.metric) as store:
        for lo in range(0, n, 65536):
            hi = min(n, lo + 65536)
            emb = l2_normalize(rng.normal(size=(hi - lo, spec.dim)).astype(np.float32))
            store.add((np.arange(lo, hi) // 10).tolist(), quantize(emb, spec))


# ---------------------------------------------------------------------------------------------
# the command
# ---------------------------------------------------------------------------------------------


def run_bench(args: argparse.Namespace) -> int:
    from edgereid.data.naming import list_images

    from .cli import UsageError, _embedder
    from .codec import quantize
    from .store import GalleryStore

    for name in ("batch", "iterations", "gallery_size", "query_batch", "topk"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.warmup < 0:
        raise UsageError(f"--warmup must be >= 0, got {args.warmup}")
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rss: dict[str, int | None] = {"start": current_rss_bytes()}
    embedder = _embedder(args)
    rss["backend_loaded"] = current_rss_bytes()
    spec, inp = embedder.spec, embedder.bundle.input
    results: dict[str, Any] = {}

    # image sources for preprocessing
    if args.images:
        files = list_images(args.images, recursive=True)
        if not files:
            raise UsageError(f"--images {args.images}: no images found")
        sources: list[Any] = [str(f) for f in files]
        source_note = f"{len(files)} images from {args.images}"
    else:
        sources = [_synthetic_jpeg(max(inp.height, 1), max(inp.width, 1))]
        source_note = f"one synthetic {inp.width}x{inp.height} JPEG (in memory)"
    pre = embedder.preprocessor
    results["preprocess"] = latency_stats(_time(lambda i: pre(sources[i % len(sources)]), args.iterations, args.warmup))

    rng = np.random.default_rng(0)
    x1 = rng.normal(size=(1, *embedder.backend.input_shape)).astype(np.float32)
    xn = rng.normal(size=(args.batch, *embedder.backend.input_shape)).astype(np.float32)
    results["embed_b1"] = latency_stats(_time(lambda i: embedder.embed_array(x1), args.iterations, args.warmup), 1)
    results[f"embed_b{args.batch}"] = latency_stats(
        _time(lambda i: embedder.embed_array(xn), args.iterations, args.warmup), args.batch)
    rss["after_embedding"] = current_rss_bytes()

    tmpdir = None
    gallery_path = args.gallery
    if gallery_path is None:
        tmpdir = tempfile.mkdtemp(prefix="reid-bench-")
        gallery_path = os.path.join(tmpdir, "store.bin")
        _synthetic_gallery(gallery_path, spec, args.gallery_size)
    try:
        store = GalleryStore.open(gallery_path, "r", spec=spec)
        try:
            if len(store) == 0:
                raise UsageError(f"gallery {gallery_path} is empty: nothing to search")
            queries = quantize(embedder.embed_array(
                rng.normal(size=(args.query_batch, *embedder.backend.input_shape)).astype(np.float32)), spec)
            k = min(args.topk, len(store))
            results["search_1"] = latency_stats(
                _time(lambda i: store.search(queries[i % len(queries)][None], k), args.iterations, args.warmup), 1)
            results[f"search_q{args.query_batch}"] = latency_stats(
                _time(lambda i: store.search(queries, k), max(3, args.iterations // 5), min(args.warmup, 2)),
                args.query_batch)

            def pipeline(i: int) -> None:
                x = pre(sources[i % len(sources)])[None]
                store.search(embedder.encode(embedder.embed_array(x)), k)

            results["pipeline_b1"] = latency_stats(_time(pipeline, args.iterations, args.warmup), 1)
            gallery_info = {"path": args.gallery or "synthetic, deleted after the run", "entries": len(store),
                            "identities": len(store.identities()), "file_bytes": os.path.getsize(gallery_path)}
        finally:
            store.close()
    finally:
        if tmpdir:
            shutil.rmtree(tmpdir, ignore_errors=True)
    rss["after_search"] = current_rss_bytes()

    device = device_report()
    report = {
        "bundle": str(embedder.bundle.root),
        "backend": embedder.describe(),
        "artifact_choice": embedder.choice.to_dict(),
        "cpu": device["cpu"],
        "input": {"height": inp.height, "width": inp.width},
        "codec": spec.to_dict(),
        "search_kernel": device["search_kernel"],
        "images": source_note,
        "gallery": gallery_info,
        "iterations": args.iterations,
        "warmup": args.warmup,
        "results": results,
        "memory": {"peak_rss_bytes": peak_rss_bytes(), "rss_bytes": rss},
        "machine": {"platform": platform.platform(), "machine": platform.machine(), "cpus": os.cpu_count(),
                    "python": platform.python_version(), "numpy": np.__version__,
                    "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")},
    }
    embedder.close()
    json_path, md_path = out_dir / "bench.json", out_dir / "bench.md"
    write_json_atomic(json_path, report)
    write_text_atomic(md_path, to_markdown(report))
    print(to_markdown(report), flush=True)
    print(f"reid-runtime: bench results written to {json_path} and {md_path}", file=sys.stderr, flush=True)
    return 0


def to_markdown(report: dict[str, Any]) -> str:
    b = report["backend"]
    kernels = report.get("search_kernel") or {}
    kernel_text = ("; ".join(f"{k.replace('_', ' ')}: {v}" for k, v in kernels.items())
                   if isinstance(kernels, dict) else str(kernels))
    lines = [
        f"# reid-runtime bench: {b.get('artifact')} on {b.get('backend')}",
        "",
        f"- bundle: `{report['bundle']}`; input {report['input']['width']}x{report['input']['height']}; "
        f"codec dim {report['codec']['dim']}, {report['codec']['bits']} bits",
        f"- cpu: {report['cpu']['summary']}" if report.get("cpu") else "- cpu: -",
        f"- {report['artifact_choice']['line']}" if report.get("artifact_choice") else "- artifact: -",
        f"- search kernels: {kernel_text or '-'}",
        f"- images: {report['images']}; gallery: {report['gallery']['entries']} entries "
        f"({report['gallery']['path']})",
        f"- machine: {report['machine']['platform']}, {report['machine']['cpus']} CPUs; "
        f"{report['iterations']} timed runs after {report['warmup']} warm-up runs",
        "",
        "| measurement | items/call | p50 ms | p95 ms | p99 ms | mean ms | throughput /s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in report["results"].items():
        lines.append(f"| {name} | {r['items_per_call']} | {r['p50_ms']:.3f} | {r['p95_ms']:.3f} | {r['p99_ms']:.3f} "
                     f"| {r['mean_ms']:.3f} | {r['throughput_per_s']:.1f} |")
    mem = report["memory"]
    lines += ["", f"Peak resident memory: {mem['peak_rss_bytes'] / 2**20:.1f} MiB. Resident after each stage: "
              + ", ".join(f"{k} {v / 2**20:.1f} MiB" for k, v in mem["rss_bytes"].items() if v is not None), ""]
    return "\n".join(lines)
