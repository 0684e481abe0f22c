"""``edgereid report``: the demo's closing table, read from the files each pipeline step wrote.

For each model (dense, compressed, pruned+compressed) it reads, under ``--work``:

- ``bundle-<name>/manifest.json``: bytes per embedding (dim x bits), the torch float accuracy;
- ``runtime-<name>/eval.json``: rank-1 / mAP measured by ``reid-runtime eval`` on the device path
  (the artifact reid-runtime picks on this machine, gallery codes, integer distances);
- ``gallery-<name>.bin``: the gallery store that ``reid-runtime enroll`` wrote;
- ``runtime-<name>/bench-<artifact>/bench.json``: batch-1 embedding latency per backend.

Pure JSON reading (no torch): it prints a Markdown table and writes it beside a JSON copy.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from edgereid.data.atomic import write_json_atomic, write_text_atomic

DEFAULT_MODELS = "dense,compressed,pruned"
LABELS = {"dense": "dense", "compressed": "compressed embedding", "pruned": "pruned + compressed"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="the demo's summary table (accuracy, bytes, gallery size, latency)",
                       description="Summarise a pipeline run: rank-1, mAP, bytes per embedding, gallery file size "
                                   "and batch-1 latency per backend for each model.")
    p.add_argument("--work", required=True, help="the pipeline's work folder (make's WORK, default runs/demo)")
    p.add_argument("--models", default=DEFAULT_MODELS,
                   help=f"comma-separated model names under WORK (default {DEFAULT_MODELS})")
    p.add_argument("--baseline", default=None, help="histogram baseline metrics JSON to show as the floor")
    p.add_argument("--out", default=None, help="Markdown output (default WORK/report.md; JSON beside it)")
    p.set_defaults(func=cmd_report)


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _median_ms(stats: dict[str, Any]) -> float:
    return stats["median_ms"] if "median_ms" in stats else stats["p50_ms"]  # p50_ms: bench.json of older versions


def collect(work: Path, name: str) -> dict[str, Any]:
    row: dict[str, Any] = {"model": name, "label": LABELS.get(name, name)}
    manifest = _read(work / f"bundle-{name}" / "manifest.json")
    if manifest:
        emb = manifest.get("embedding", {})
        bits = int(emb.get("bits", 32))
        row["dim"] = emb.get("dim")
        row["bits"] = bits
        row["bytes_per_embedding"] = (int(emb["dim"]) * bits + 7) // 8 if emb.get("dim") else None
        torch_acc = (manifest.get("accuracy") or {}).get("torch-fp32") or {}
        row["torch_mAP"] = torch_acc.get("mAP")
        row["params"] = (manifest.get("model") or {}).get("params")
        row["macs"] = (manifest.get("model") or {}).get("macs")
    ev = _read(work / f"runtime-{name}" / "eval.json")
    if ev:
        row["artifact"] = ev.get("artifact")
        row["rank1"] = ev["codes"]["rank1"]
        row["mAP"] = ev["codes"]["mAP"]
    gallery = work / f"gallery-{name}.bin"
    if gallery.is_file():
        row["gallery_bytes"] = gallery.stat().st_size
    latency = {}
    for bench in sorted((work / f"runtime-{name}").glob("bench-*/bench.json")):
        data = _read(bench)
        if data and "embed_b1" in data.get("results", {}):
            latency[bench.parent.name.removeprefix("bench-")] = _median_ms(data["results"]["embed_b1"])
    row["latency_b1_ms"] = latency
    return row


def _fmt(v: Any, spec: str = "") -> str:
    if v is None:
        return "-"
    return format(v, spec) if spec else str(v)


def to_markdown(rows: list[dict[str, Any]], baseline: dict[str, Any] | None) -> str:
    backends = sorted({b for r in rows for b in r.get("latency_b1_ms", {})})
    head = (["model", "rank-1", "mAP", "bytes/embedding", "gallery file", "artifact run"]
            + [f"{b} b1 ms" for b in backends])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["label"], _fmt(r.get("rank1"), ".3f"), _fmt(r.get("mAP"), ".3f"),
                 _fmt(r.get("bytes_per_embedding")),
                 f"{r['gallery_bytes'] / 1024:.1f} KiB" if r.get("gallery_bytes") else "-", _fmt(r.get("artifact"))]
        cells += [_fmt(r["latency_b1_ms"].get(b), ".2f") for b in backends]
        lines.append("| " + " | ".join(cells) + " |")
    if baseline:
        lines.append(f"| colour-histogram baseline | {baseline.get('rank1', 0):.3f} | {baseline.get('mAP', 0):.3f} | "
                     + " | ".join(["-"] * (len(head) - 3)) + " |")
    lines += ["", "rank-1/mAP: `reid-runtime eval` on the query/gallery folders, running the artifact it picks on "
              "this machine (`artifact run`: the fastest within the bundle's recorded accuracy tolerance), "
              "ranking gallery codes with integer distances (standard Market-1501 protocol). Latency: "
              "`reid-runtime bench`, batch 1, median."]
    return "\n".join(lines) + "\n"


def cmd_report(args: argparse.Namespace) -> int:
    work = Path(args.work)
    if not work.is_dir():
        raise FileNotFoundError(f"--work {work}: no such folder (run the pipeline first: make demo)")
    rows = [collect(work, name.strip()) for name in args.models.split(",") if name.strip()]
    baseline = _read(Path(args.baseline)) if args.baseline else None
    md = to_markdown(rows, baseline)
    out = Path(args.out) if args.out else work / "report.md"
    write_text_atomic(out, md)
    write_json_atomic(out.with_suffix(".json"), {"rows": rows, "baseline": baseline})
    print(md)
    print(f"wrote {out} and {out.with_suffix('.json')}")
    return 0
