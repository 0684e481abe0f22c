"""What pruning and compression buy together: accuracy vs latency and accuracy vs bytes per embedding.

Reads results the other suites already wrote (nothing is re-measured here):

- ``--latency``: ``bench/bench_models.py``'s JSON (dense and pruned models, every runtime and
  precision, batch-1 median latency with the mAP of that very artifact);
- ``--compression``: the compression sweep's ``sweep.json`` (``edgereid sweep``: every method,
  size and quantisation with its mAP and bytes per embedding);
- ``--demo``: ``edgereid report``'s JSON from ``make demo`` (dense, compressed, pruned+compressed
  bundles: mAP measured through ``reid-runtime eval``, bytes per gallery embedding, latency).

Writes a two-panel PNG (each panel with its Pareto frontier: no other point is both faster/smaller
and more accurate) and a Markdown section listing the frontier points.

Usage: python bench/pareto.py [--latency benchmarks/model_latency.json]
       [--compression benchmarks/compression.json] [--demo runs/demo/report.json]
       [--out-png benchmarks/pareto.png] [--out-md benchmarks/pareto.md]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from edgereid.data.atomic import write_text_atomic


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--latency", default="benchmarks/model_latency.json",
                   help="bench_models.py JSON: latency and mAP per model and runtime (default %(default)s)")
    p.add_argument("--compression", default="benchmarks/compression.json",
                   help="compression sweep JSON (edgereid sweep's sweep.json) (default %(default)s)")
    p.add_argument("--demo", default="runs/demo/report.json",
                   help="edgereid report JSON from make demo; skipped when missing (default %(default)s)")
    p.add_argument("--out-png", default="benchmarks/pareto.png", help="plot path (default %(default)s)")
    p.add_argument("--out-md", default="benchmarks/pareto.md", help="Markdown section path (default %(default)s)")
    return p.parse_args(argv)


def read_json(path: str, what: str, required: bool) -> dict[str, Any] | None:
    p = Path(path)
    if not p.is_file():
        if required:
            raise SystemExit(f"error: {what} not found: {p} (run the suite that writes it first)")
        return None
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise SystemExit(f"error: {what} {p} is not valid JSON: {e}") from e


def frontier(points: list[dict[str, Any]], x: str) -> list[dict[str, Any]]:
    """Points no other point beats on both axes (lower ``x``, higher mAP), by increasing ``x``."""
    best: list[dict[str, Any]] = []
    for pt in sorted(points, key=lambda p: (p[x], -p["mAP"])):
        if not best or pt["mAP"] > best[-1]["mAP"]:
            best.append(pt)
    return best


def latency_points(lat: dict[str, Any] | None, demo: dict[str, Any] | None) -> list[dict[str, Any]]:
    pts = []
    if lat:
        for r in lat.get("rows", []):
            if r.get("mAP") is None or r.get("median_ms") is None:
                continue
            pts.append({"label": f"{r['model']} {r['runtime']} {r['precision']}", "group": r["model"],
                        "kind": f"{r['runtime']} {r['precision']}", "ms": float(r["median_ms"]), "mAP": float(r["mAP"]),
                        "source": "bench_models (1 thread)"})
    if demo:
        for r in demo.get("rows", []):
            for art, ms in (r.get("latency_b1_ms") or {}).items():
                if ms is None or r.get("mAP") is None:
                    continue
                pts.append({"label": f"demo {r['label']} {art}", "group": f"demo {r['model']}", "kind": art,
                            "ms": float(ms), "mAP": float(r["mAP"]), "source": "make demo (reid-runtime bench)"})
    return pts


def bytes_points(comp: dict[str, Any] | None, demo: dict[str, Any] | None) -> list[dict[str, Any]]:
    pts = []
    if comp:
        for r in comp.get("records", []):
            if r.get("mAP") is None or not r.get("bytes_per_embedding"):
                continue
            pts.append({"label": f"{r['method']} {r['dim']}d {r['variant']}", "group": r["method"],
                        "kind": r["variant"], "bytes": float(r["bytes_per_embedding"]), "mAP": float(r["mAP"]),
                        "source": "compression sweep"})
    if demo:
        for r in demo.get("rows", []):
            if r.get("mAP") is None or not r.get("bytes_per_embedding"):
                continue
            pts.append({"label": f"demo {r['label']}", "group": "demo", "kind": r.get("artifact", ""),
                        "bytes": float(r["bytes_per_embedding"]), "mAP": float(r["mAP"]), "source": "make demo"})
    return pts


def plot(lat_pts: list[dict[str, Any]], byte_pts: list[dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2))
    for ax, pts, x, xlabel, title in (
        (axes[0], lat_pts, "ms", "batch-1 latency, ms (CPU, log scale)", "accuracy vs latency (pruning x runtime x precision)"),
        (axes[1], byte_pts, "bytes", "bytes per gallery embedding (log scale)", "accuracy vs bytes (embedding compression)"),
    ):
        groups = sorted({p["group"] for p in pts})
        cmap = plt.get_cmap("tab10")
        for i, g in enumerate(groups):
            gp = [p for p in pts if p["group"] == g]
            ax.scatter([p[x] for p in gp], [100 * p["mAP"] for p in gp], s=28, color=cmap(i % 10), label=g,
                       alpha=0.8, marker="*" if g.startswith("demo") else "o")
        fr = frontier(pts, x)
        if fr:
            ax.step([p[x] for p in fr], [100 * p["mAP"] for p in fr], where="post", color="black", lw=1,
                    label="Pareto frontier")
            for p in fr:
                ax.annotate(p["kind"], (p[x], 100 * p["mAP"]), fontsize=6, xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("mAP, %")
        ax.set_title(title, fontsize=10)
        ax.grid(True, alpha=0.3)
        if pts:
            ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)


def markdown(lat_pts: list[dict[str, Any]], byte_pts: list[dict[str, Any]], args: argparse.Namespace,
             command: str) -> str:
    lines = [
        "## What pruning and compression buy together (Pareto picture)",
        "",
        f"Command: `{command}` (reads the other suites' results; measures nothing itself).",
        "",
        f"![accuracy vs latency and vs bytes](./{Path(args.out_png).name})",
        "",
        "Left: every model x runtime x precision of the latency suite (`bench/bench_models.py`, dense and "
        "pruned) and the demo's bundles. Right: every point of the compression sweep (`edgereid sweep`) and "
        "the demo's gallery codes. The black line is the Pareto frontier: no other point is both faster "
        "(smaller) and more accurate. mAP on the synthetic default query/gallery split.",
        "",
        "Frontier, accuracy vs latency:",
        "",
        "| point | latency ms | mAP | source |",
        "|---|---:|---:|---|",
    ]
    lines += [f"| {p['label']} | {p['ms']:.2f} | {100 * p['mAP']:.1f} | {p['source']} |" for p in frontier(lat_pts, "ms")]
    lines += ["", "Frontier, accuracy vs bytes per embedding:", "", "| point | bytes | mAP | source |",
              "|---|---:|---:|---|"]
    lines += [f"| {p['label']} | {p['bytes']:.0f} | {100 * p['mAP']:.1f} | {p['source']} |"
              for p in frontier(byte_pts, "bytes")]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    lat = read_json(args.latency, "latency results", required=True)
    comp = read_json(args.compression, "compression sweep", required=True)
    demo = read_json(args.demo, "demo report", required=False)
    lat_pts, byte_pts = latency_points(lat, demo), bytes_points(comp, demo)
    if not lat_pts or not byte_pts:
        raise SystemExit(f"error: nothing to plot ({len(lat_pts)} latency points, {len(byte_pts)} bytes points): "
                         "the inputs hold no rows with mAP")
    plot(lat_pts, byte_pts, Path(args.out_png))
    command = "python bench/pareto.py " + " ".join(sys.argv[1:] if argv is None else argv)
    write_text_atomic(args.out_md, markdown(lat_pts, byte_pts, args, command.strip()))
    print(f"wrote {args.out_png} and {args.out_md}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
