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

``--split NAME=FILE`` adds rank-1 / mAP columns for another evaluation split: ``FILE`` is a JSON
file name inside every checkpoint folder, as written by ``edgereid eval --ckpt CKPT --data OTHER
--out CKPT/FILE`` (e.g. ``--split occluded=eval_occluded.json``). A checkpoint without that file
shows ``-`` in those columns. ``--plot PNG`` draws rank-1 and mAP against the CPU-time latency,
one panel per split.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
from edgereid.data.atomic import write_text_atomic
from edgereid.data.json_file import read_json_object
from edgereid.runtime.timing import latency_stats, time_calls

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
                wall, cpu_s = time_calls(lambda _i, m=m, k=k: m(inputs[k]), runs)
                times[k] += wall
                cpu[k] += cpu_s
    finally:
        torch.set_num_threads(old)
    stats = {k: latency_stats(v, cpu_seconds=cpu[k]) for k, v in times.items()}
    return {k: {"median_ms": s["median_ms"], "min_ms": s["min_ms"], "cpu_median_ms": s["cpu_median_ms"],
                "runs": s["calls"], "threads": threads or old} for k, s in stats.items()}


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


def read_split_metrics(ckpt: Path, filename: str) -> dict[str, float | None]:
    """rank-1 / mAP from ``ckpt/filename`` (an ``edgereid eval`` JSON); None where it is missing."""
    path = Path(ckpt) / filename
    if not path.is_file():
        return {"rank1": None, "mAP": None}
    data = read_json_object(path, "an `edgereid eval` JSON object with rank1 / mAP")
    return {"rank1": data.get("rank1"), "mAP": data.get("mAP"), "file": str(path), "data": data.get("data")}


def _metric(value: float | None, ref: float | None, is_ref: bool) -> str:
    if value is None:
        return "-"
    delta = "" if is_ref or ref is None else f" ({100 * (value - ref):+.1f})"
    return f"{100 * value:.1f}{delta}"


def markdown(rows: list[dict[str, Any]], title: str, note: str, splits: list[str] | None = None) -> str:
    dense = rows[0]
    splits = list(splits or [])
    extra_head = "".join(f" rank-1 ({s}) | mAP ({s}) |" for s in splits)
    lines = [f"### {title}", "", note, "",
             "| method | distill | heads kept | tokens kept (q/MLP) | keys kept | params (M) | MACs (M) | "
             "latency wall median / wall min / CPU-time median (ms) | speed-up (wall / CPU) | rank-1 | mAP |" + extra_head,
             "|---|---|---|---|---|---|---|---|---|---|---|" + "---|" * (2 * len(splits))]
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
            f"{100 * (r['rank1'] or 0):.1f}{d_r1} | {100 * (r['mAP'] or 0):.1f}{d_map} |"
            + "".join(f" {_metric(r['splits'][s]['rank1'], dense['splits'][s]['rank1'], r is dense)} |"
                      f" {_metric(r['splits'][s]['mAP'], dense['splits'][s]['mAP'], r is dense)} |" for s in splits))
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], png: Path, splits: list[str] | None = None, title: str = "Pruning") -> Path:
    """rank-1 and mAP (%) against the median CPU-time latency, one point per row; one panel per split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("default", lambda r: r)] + [(s, lambda r, s=s: r["splits"][s]) for s in (splits or [])]
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 5.0), squeeze=False)
    labels = list(dict.fromkeys(r["label"] for r in rows))  # one colour per method; hollow = no distillation
    cmap = plt.get_cmap("tab20" if len(labels) > 10 else "tab10")
    for ax, (name, get) in zip(axes[0], panels):
        for r in rows:
            m = get(r)
            if m.get("rank1") is None or m.get("mAP") is None:
                continue
            x = r["latency"]["cpu_median_ms"]
            c = cmap(labels.index(r["label"]) % cmap.N)
            hollow = r.get("distill") == "none"
            label = f"{r['label']}" + (" (no KD)" if hollow else "")
            ax.scatter([x], [100 * m["rank1"]], marker="o", s=46, color=c, facecolors="none" if hollow else c,
                       label=label)
            ax.scatter([x], [100 * m["mAP"]], marker="s", s=46, color=c, facecolors="none" if hollow else c)
            ax.plot([x, x], [100 * m["rank1"], 100 * m["mAP"]], color=c, linewidth=0.6, alpha=0.5)
        dense = get(rows[0])
        if dense.get("rank1") is not None:
            x0 = rows[0]["latency"]["cpu_median_ms"]
            ax.axvline(x0 / 1.5, color="red", linestyle="--", linewidth=0.8, alpha=0.6)
            ax.text(x0 / 1.5, ax.get_ylim()[1], " 1.5x faster", color="red", fontsize=7, va="top")
            ax.axhline(100 * dense["rank1"] - 1, color="grey", linestyle=":", linewidth=0.8)
            ax.axhline(100 * dense["mAP"] - 2, color="grey", linestyle="-.", linewidth=0.8)
        ax.set_xlabel("latency, torch eager batch 1, 1 thread: median CPU time per call (ms)")
        ax.set_ylabel("rank-1 (circles) / mAP (squares), %")
        ax.set_title(f"{name} split", fontsize=10)
        ax.grid(True, alpha=0.3)
    handles, names = axes[0][0].get_legend_handles_labels()
    rows_of_legend = -(-len(names) // 3)
    bottom = 0.05 + 0.035 * rows_of_legend
    fig.legend(handles, names, loc="lower center", ncol=3, fontsize=7, bbox_to_anchor=(0.5, 0.025))
    fig.suptitle(title, fontsize=10)
    fig.text(0.01, 0.005, "dotted: dense rank-1 - 1 pt; dash-dot: dense mAP - 2 pts; hollow: no distillation",
             fontsize=7)
    fig.set_size_inches(6.5 * len(panels), 5.0 + 0.25 * rows_of_legend)
    fig.tight_layout(rect=(0, bottom, 1, 1))
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return png


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
    p.add_argument("--split", action="append", default=[], metavar="NAME=FILE",
                   help="extra rank-1 / mAP columns NAME from FILE in every checkpoint folder (an `edgereid eval "
                        "--out CKPT/FILE` JSON, e.g. occluded=eval_occluded.json); repeatable")
    p.add_argument("--plot", default=None, metavar="PNG", help="also plot rank-1 / mAP against latency here")
    args = p.parse_args(argv)
    splits: list[tuple[str, str]] = []
    for item in args.split:
        name, _, filename = item.partition("=")
        if not name or not filename:
            p.error(f"--split {item!r}: expected NAME=FILE")
        if name in {n for n, _ in splits}:
            p.error(f"--split {name!r} given twice")
        splits.append((name, filename))
    entries = [("dense", Path(args.dense))]
    for item in args.run:
        if "=" not in item:
            p.error(f"--run {item!r}: expected LABEL=DIR")
        label, d = item.split("=", 1)
        entries.append((label, Path(d)))
    rows, models = [], {}
    for i, (label, ckpt) in enumerate(entries):
        row, model = describe(label, ckpt)
        row["splits"] = {name: read_split_metrics(ckpt, filename) for name, filename in splits}
        rows.append(row)
        models[str(i)] = model  # labels may repeat (with / without distillation)
    lat = interleaved_latency(models, rounds=args.rounds, runs=args.runs, threads=args.threads)
    for i, r in enumerate(rows):
        r["latency"] = lat[str(i)]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, markdown(rows, args.title, args.note, [name for name, _ in splits]))
    print(out.read_text())
    print(f"wrote {out}")
    if args.json:
        write_json_atomic(Path(args.json), rows)
        print(f"wrote {args.json}")
    if args.plot:
        print(f"wrote {plot(rows, Path(args.plot), [name for name, _ in splits], args.title)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
