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

Every latency is reported as median/p90/p95/p99/mean/min (``timing.latency_stats``) over
``iterations`` timed runs after ``warmup`` untimed ones. ``write_bench`` puts the report into
``bench.json`` and ``bench.md``. These are benchmarks, not tests: nothing here asserts a speed.
"""

from __future__ import annotations

import io
import os
import platform
import resource
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from edgereid.data.atomic import write_json_atomic, write_text_atomic
from edgereid.data.flags import option
from edgereid.data.naming import list_images

from .device_report import device_report
from .embedder import Embedder
from .timing import latency_stats, time_calls

__all__ = ["BenchConfig", "run_bench", "write_bench", "to_markdown", "peak_rss_bytes", "current_rss_bytes"]


@dataclass
class BenchConfig:
    """What ``reid-runtime bench`` measures (the flags of the command come from these fields)."""

    images: str | None = option(None, "folder of real images for the preprocessing and pipeline timings (default: a "
                                      "synthetic JPEG crop made in memory)", metavar="DIR", show_default=False)
    batch: int = option(16, "batch size of the batched embedding measurement", metavar="N")
    iterations: int = option(50, "timed runs per measurement", metavar="N")
    warmup: int = option(5, "untimed runs before each measurement", metavar="N")
    gallery: str | None = option(None, "search this existing gallery store (default: a synthetic one, see "
                                       "--gallery-size)", metavar="STORE", show_default=False)
    gallery_size: int = option(100_000, "entries of the synthetic gallery (random codes, 10 per identity)",
                               metavar="N")
    query_batch: int = option(64, "queries per batched search measurement", metavar="N")
    topk: int = option(5, "results per search", metavar="K")
    out_dir: str = option("reid-bench", "where bench.json and bench.md are written", metavar="DIR")

    def validate(self) -> None:
        for name in ("batch", "iterations", "gallery_size", "query_batch", "topk"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.warmup < 0:
            raise ValueError(f"--warmup must be >= 0, got {self.warmup}")


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


def run_bench(embedder: Embedder, cfg: BenchConfig | None = None, start_rss: int | None = None) -> dict[str, Any]:
    """Measure ``embedder`` on this device; returns the report (``write_bench`` saves it).

    ``start_rss``: the resident size before the embedder was opened (to report what loading cost).
    """
    from .codec import quantize
    from .store import GalleryStore

    cfg = cfg or BenchConfig()
    cfg.validate()
    rss: dict[str, int | None] = {"start": start_rss, "backend_loaded": current_rss_bytes()}
    spec, inp = embedder.spec, embedder.bundle.input
    results: dict[str, Any] = {}

    def timed(fn, items: int = 1, iterations: int = cfg.iterations, warmup: int = cfg.warmup) -> dict[str, float]:
        return latency_stats(time_calls(fn, iterations, warmup)[0], items)

    # image sources for preprocessing
    if cfg.images:
        files = list_images(cfg.images, recursive=True)
        if not files:
            raise ValueError(f"--images {cfg.images}: no images found")
        sources: list[Any] = [str(f) for f in files]
        source_note = f"{len(files)} images from {cfg.images}"
    else:
        sources = [_synthetic_jpeg(max(inp.height, 1), max(inp.width, 1))]
        source_note = f"one synthetic {inp.width}x{inp.height} JPEG (in memory)"
    pre = embedder.preprocessor
    results["preprocess"] = timed(lambda i: pre(sources[i % len(sources)]))

    rng = np.random.default_rng(0)
    x1 = rng.normal(size=(1, *embedder.backend.input_shape)).astype(np.float32)
    xn = rng.normal(size=(cfg.batch, *embedder.backend.input_shape)).astype(np.float32)
    results["embed_b1"] = timed(lambda i: embedder.embed_array(x1))
    results[f"embed_b{cfg.batch}"] = timed(lambda i: embedder.embed_array(xn), cfg.batch)
    rss["after_embedding"] = current_rss_bytes()

    tmpdir = None
    gallery_path = cfg.gallery
    if gallery_path is None:
        tmpdir = tempfile.mkdtemp(prefix="reid-bench-")
        gallery_path = os.path.join(tmpdir, "store.bin")
        _synthetic_gallery(gallery_path, spec, cfg.gallery_size)
    try:
        store = GalleryStore.open(gallery_path, "r", spec=spec)
        try:
            if len(store) == 0:
                raise ValueError(f"gallery {gallery_path} is empty: nothing to search")
            queries = quantize(embedder.embed_array(
                rng.normal(size=(cfg.query_batch, *embedder.backend.input_shape)).astype(np.float32)), spec)
            k = min(cfg.topk, len(store))
            results["search_1"] = timed(lambda i: store.search(queries[i % len(queries)][None], k))
            results[f"search_q{cfg.query_batch}"] = timed(lambda i: store.search(queries, k), cfg.query_batch,
                                                           max(3, cfg.iterations // 5), min(cfg.warmup, 2))

            def pipeline(i: int) -> None:
                x = pre(sources[i % len(sources)])[None]
                store.search(embedder.encode(embedder.embed_array(x)), k)

            results["pipeline_b1"] = timed(pipeline)
            gallery_info = {"path": cfg.gallery or "synthetic, deleted after the run", "entries": len(store),
                            "identities": len(store.identities()), "file_bytes": os.path.getsize(gallery_path)}
        finally:
            store.close()
    finally:
        if tmpdir:
            shutil.rmtree(tmpdir, ignore_errors=True)
    rss["after_search"] = current_rss_bytes()

    device = device_report()
    return {
        "bundle": str(embedder.bundle.root),
        "backend": embedder.describe(),
        "artifact_choice": embedder.choice.to_dict(),
        "cpu": device["cpu"],
        "input": {"height": inp.height, "width": inp.width},
        "codec": spec.to_dict(),
        "search_kernel": device["search_kernel"],
        "images": source_note,
        "gallery": gallery_info,
        "iterations": cfg.iterations,
        "warmup": cfg.warmup,
        "results": results,
        "memory": {"peak_rss_bytes": peak_rss_bytes(), "rss_bytes": rss},
        "machine": {"platform": platform.platform(), "machine": platform.machine(), "cpus": os.cpu_count(),
                    "python": platform.python_version(), "numpy": np.__version__,
                    "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")},
    }


def write_bench(report: dict[str, Any], out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``bench.json`` and ``bench.md`` into ``out_dir``; returns their paths."""
    out = Path(out_dir)
    return write_json_atomic(out / "bench.json", report), write_text_atomic(out / "bench.md", to_markdown(report))


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
        "| measurement | items/call | median ms | p95 ms | p99 ms | mean ms | throughput /s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in report["results"].items():
        lines.append(f"| {name} | {r['items_per_call']} | {r['median_ms']:.3f} | {r['p95_ms']:.3f} | {r['p99_ms']:.3f} "
                     f"| {r['mean_ms']:.3f} | {r['throughput_per_s']:.1f} |")
    mem = report["memory"]
    lines += ["", f"Peak resident memory: {mem['peak_rss_bytes'] / 2**20:.1f} MiB. Resident after each stage: "
              + ", ".join(f"{k} {v / 2**20:.1f} MiB" for k, v in mem["rss_bytes"].items() if v is not None), ""]
    return "\n".join(lines)
