"""Benchmark table for pruning: dense vs pruned checkpoints, cost measured in one process.

``python -m edgereid.train.prune.report --dense RUN --run LABEL=RUN [--run ...] --out benchmarks/pruning.md``

For every checkpoint: heads kept, tokens kept (query/MLP tokens summed over blocks, and key/value
positions), deployable parameters, MACs as run (``cost.count_macs``), rank-1 / mAP as recorded in
the checkpoint's config (the evaluation ``engine.fit`` ran when it saved it), and torch-eager CPU
latency at batch 1. Latencies of all models are measured interleaved (round-robin, several
rounds) in this one process, so a busy shared machine slows every model alike. Reported: the
wall-clock median and minimum, and the median CPU time of the process per call
(``time.process_time``), which on an oversubscribed machine is far less disturbed by preemption
than wall time (with one torch thread it equals the wall time of a quiet machine).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import load_model, read_config, write_json_atomic
from .cost import count_macs, count_params


@torch.inference_mode()
def interleaved_latency(models: dict[str, Any], rounds: int = 5, runs: int = 20, warmup: int = 5,
                        threads: int | None = None) -> dict[str, dict[str, float]]:
    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    times: dict[str, list[float]] = {k: [] for k in models}
    cpu: dict[str, list[float]] = {k: [] for k in models}
    inputs = {}
    for k, m in models.items():
        m.eval().cpu()
        h, w = m.cfg.backbone.img_size
        inputs[k] = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(0))
        for _ in range(warmup):
            m(inputs[k])
    try:
        for _ in range(rounds):
            for k, m in models.items():
                for _ in range(runs):
                    c0, t0 = time.process_time(), time.perf_counter()
                    m(inputs[k])
                    times[k].append((time.perf_counter() - t0) * 1000.0)
                    cpu[k].append((time.process_time() - c0) * 1000.0)
    finally:
        torch.set_num_threads(old)
    return {k: {"median_ms": statistics.median(v), "min_ms": min(v), "cpu_median_ms": statistics.median(cpu[k]),
                "runs": len(v), "threads": threads or old} for k, v in times.items()}


def describe(label: str, ckpt: Path) -> tuple[dict[str, Any], Any]:
    data = read_config(ckpt)
    model = load_model(ckpt)
    bb = model.cfg.backbone
    tokens = sum(model.backbone.tokens_per_layer)
    keys = sum(len(b.attn.kv_index) if b.attn.kv_index is not None else b.tokens_in for b in model.backbone.blocks)
    dense_tokens = bb.depth * (1 + bb.num_patches)
    prune = data.get("prune", {})
    row = {
        "label": label, "ckpt": str(ckpt), "mode": prune.get("mode", "dense"),
        "distill": data.get("distill", "-") if prune else "-",
        "heads_kept": sum(b.attn.num_heads for b in model.backbone.blocks), "heads_total": bb.depth * bb.num_heads,
        "tokens_kept": tokens / dense_tokens, "keys_kept": keys / dense_tokens,
        "params": count_params(model)["deploy"], "macs": count_macs(model)["total"],
        "rank1": data.get("metrics", {}).get("rank1"), "mAP": data.get("metrics", {}).get("mAP"),
        "epochs": (prune.get("iterations", 0) * prune.get("finetune_epochs", 0) + prune.get("final_epochs", 0))
        if prune else data.get("epoch"),
    }
    return row, model


def markdown(rows: list[dict[str, Any]], title: str, note: str) -> str:
    dense = rows[0]
    lines = [f"### {title}", "", note, "",
             "| method | distill | heads kept | tokens kept (q/MLP) | keys kept | params (M) | MACs (M) | "
             "latency wall median / wall min / CPU-time median (ms) | speed-up (wall / CPU) | rank-1 | mAP |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lat = r["latency"]
        speed = dense["latency"]["median_ms"] / lat["median_ms"]
        speed_cpu = dense["latency"]["cpu_median_ms"] / lat["cpu_median_ms"]
        d_r1 = "" if r is dense or r["rank1"] is None else f" ({100 * (r['rank1'] - dense['rank1']):+.1f})"
        d_map = "" if r is dense or r["mAP"] is None else f" ({100 * (r['mAP'] - dense['mAP']):+.1f})"
        lines.append(
            f"| {r['label']} | {r['distill']} | {r['heads_kept']}/{r['heads_total']} | {100 * r['tokens_kept']:.0f} % | "
            f"{100 * r['keys_kept']:.0f} % | {r['params'] / 1e6:.2f} | {r['macs'] / 1e6:.1f} | "
            f"{lat['median_ms']:.2f} / {lat['min_ms']:.2f} / {lat['cpu_median_ms']:.2f} | x{speed:.2f} / x{speed_cpu:.2f} | "
            f"{100 * (r['rank1'] or 0):.1f}{d_r1} | {100 * (r['mAP'] or 0):.1f}{d_map} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edgereid.train.prune.report", description=__doc__.splitlines()[0])
    p.add_argument("--dense", required=True, help="dense checkpoint folder (the reference row)")
    p.add_argument("--run", action="append", default=[], metavar="LABEL=DIR", help="a pruned checkpoint folder")
    p.add_argument("--title", default="Pruning", help="table heading")
    p.add_argument("--note", default="", help="a paragraph printed above the table")
    p.add_argument("--rounds", type=int, default=5, help="interleaved latency rounds (default 5)")
    p.add_argument("--runs", type=int, default=20, help="timed calls per model per round (default 20)")
    p.add_argument("--threads", type=int, default=None, help="torch threads while timing (default: torch's)")
    p.add_argument("--out", required=True, help="markdown file to write (the table section)")
    p.add_argument("--json", default=None, help="also write the rows as JSON here")
    args = p.parse_args(argv)
    entries = [("dense", Path(args.dense))]
    for item in args.run:
        if "=" not in item:
            p.error(f"--run {item!r}: expected LABEL=DIR")
        label, d = item.split("=", 1)
        entries.append((label, Path(d)))
    rows, models = [], {}
    for i, (label, ckpt) in enumerate(entries):
        row, model = describe(label, ckpt)
        rows.append(row)
        models[str(i)] = model  # labels may repeat (with / without distillation)
    lat = interleaved_latency(models, rounds=args.rounds, runs=args.runs, threads=args.threads)
    for i, r in enumerate(rows):
        r["latency"] = lat[str(i)]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(markdown(rows, args.title, args.note))
    print(out.read_text())
    print(f"wrote {out}")
    if args.json:
        write_json_atomic(Path(args.json), rows)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
