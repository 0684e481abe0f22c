"""The sweep's report: a Markdown table, a matplotlib plot, and the headline target check.

Reads the ``sweep.json`` data only, so it can be regenerated without training
(``edgereid sweep --report-only``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from edgereid.data.atomic import write_text_atomic

METHOD_ORDER = ("full", "slice", "lowrank", "prune")
VARIANT_ORDER = ("float32", "int8-ptq", "int8-qat", "4bit-ptq", "1bit-ptq", "1bit-ptq+int8-rerank")
STYLE = {"float32": "-", "int8-ptq": "--", "int8-qat": ":", "4bit-ptq": "-.", "1bit-ptq": (0, (1, 3)),
         "1bit-ptq+int8-rerank": (0, (5, 2, 1, 2))}
COLOURS = {"full": "black", "slice": "tab:blue", "lowrank": "tab:orange", "prune": "tab:green"}


def is_control(r: dict[str, Any]) -> bool:
    """The equal-budget control's records: the full model fine-tuned with the methods' schedule."""
    return r["method"] == "full" and r.get("stage") is not None


def _label(r: dict[str, Any]) -> str:
    return f"control (stage {r['stage']})" if is_control(r) else r["method"]


def _sort_key(r: dict[str, Any]) -> tuple:
    m = METHOD_ORDER.index(r["method"]) if r["method"] in METHOD_ORDER else len(METHOD_ORDER)
    v = VARIANT_ORDER.index(r["variant"]) if r["variant"] in VARIANT_ORDER else len(VARIANT_ORDER)
    return m, r.get("stage") or 0, -int(r["dim"]), v


def table(records: list[dict[str, Any]]) -> str:
    lines = ["| method | dims | code | bytes / embedding | ratio vs d x fp32 | fine-tune epochs | rank-1 | mAP | mINP | "
             "train s (own / total) |", "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in sorted(records, key=_sort_key):
        ft = r.get("finetune_epochs")
        lines.append(f"| {_label(r)} | {r['dim']} | {r['variant']} | {r['bytes_per_embedding']} | "
                     f"{r['compression_ratio']:.1f}x | {'-' if ft is None else ft} | {100 * r['rank1']:.1f} | "
                     f"{100 * r['mAP']:.1f} | {100 * r['mINP']:.1f} | {r['train_seconds']:.0f} / "
                     f"{r['total_train_seconds']:.0f} |")
    return "\n".join(lines)


def best_within(records: list[dict[str, Any]], max_bytes: int, exclude_rerank: bool = True) -> dict[str, Any] | None:
    pool = [r for r in records if r["bytes_per_embedding"] <= max_bytes and r["method"] != "full"
            and not (exclude_rerank and r.get("rerank"))]
    return max(pool, key=lambda r: r["mAP"]) if pool else None


def full_float(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    return next((r for r in records if r["method"] == "full" and r["variant"] == "float32" and not is_control(r)),
                None)


def control_for(records: list[dict[str, Any]], point: dict[str, Any]) -> dict[str, Any] | None:
    """The control record with the same fine-tuning epochs as ``point``, in float32 (the uncompressed
    embedding after the same extra training), or None when the sweep has no such stage."""
    ft = point.get("finetune_epochs")
    if ft is None:
        return None
    return next((r for r in records if is_control(r) and r["variant"] == "float32" and r.get("finetune_epochs") == ft),
                None)


def target_lines(records: list[dict[str, Any]], budget: int = 32, tolerance: float = 0.04) -> list[str]:
    """The headline: best point at <= ``budget`` bytes vs the full float32 model (relative mAP drop)."""
    ref = full_float(records)
    if ref is None:
        return ["(no full float32 record: target not evaluated)"]
    lines = [f"- full float32 model: {ref['dim']} dims x 4 bytes = {ref['bytes_per_embedding']} bytes, "
             f"mAP {100 * ref['mAP']:.1f}, rank-1 {100 * ref['rank1']:.1f}"]
    for cap in (budget, budget // 2):
        best = best_within(records, cap)
        if best is None:
            lines.append(f"- no point at <= {cap} bytes")
            continue
        drop = (ref["mAP"] - best["mAP"]) / ref["mAP"] if ref["mAP"] > 0 else math.nan
        verdict = ""
        if cap == budget:
            verdict = (" -> target MET" if drop <= tolerance else " -> target NOT met") + \
                f" (target: within {100 * tolerance:.0f} % relative)"
        lines.append(f"- best at <= {cap} bytes: {best['method']} {best['dim']} dims {best['variant']} = "
                     f"{best['bytes_per_embedding']} bytes ({best['compression_ratio']:.0f}x smaller), mAP "
                     f"{100 * best['mAP']:.1f} ({-100 * drop:+.1f} % relative to the full fp32 mAP), rank-1 "
                     f"{100 * best['rank1']:.1f}"
                     f"{verdict}")
        ctrl = control_for(records, best)
        if ctrl is not None and ctrl["mAP"] > 0:
            cdrop = (ctrl["mAP"] - best["mAP"]) / ctrl["mAP"]
            cverdict = ""
            if cap == budget:
                cverdict = " -> target MET" if cdrop <= tolerance else " -> target NOT met"
            lines.append(f"  - against the equal-budget control (the full model fine-tuned {ctrl['finetune_epochs']} "
                         f"epochs the same way, float32): mAP {100 * ctrl['mAP']:.1f}, so {-100 * cdrop:+.1f} % "
                         f"relative{cverdict}")
    return lines


def plot(records: list[dict[str, Any]], png: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.5))
    for method in METHOD_ORDER:
        rows = [r for r in records if r["method"] == method and not is_control(r)]
        for variant in VARIANT_ORDER:
            pts = sorted((r["bytes_per_embedding"], r["mAP"]) for r in rows if r["variant"] == variant)
            if not pts:
                continue
            xs, ys = zip(*pts)
            label = f"{method} {variant}" if method != "full" else f"full model {variant}"
            ax.plot(xs, [100 * y for y in ys], linestyle=STYLE[variant], marker="o" if variant == "float32" else ".",
                    color=COLOURS.get(method, "grey"), label=label, alpha=0.9 if variant in ("float32", "int8-qat") else 0.6)
    ctrl = [r for r in records if is_control(r) and r["variant"] in ("float32", "int8-qat")]
    if ctrl:
        ax.scatter([r["bytes_per_embedding"] for r in ctrl], [100 * r["mAP"] for r in ctrl], marker="x", color="grey",
                   label="equal-budget control (full, fine-tuned)", zorder=3)
    ref = full_float(records)
    if ref is not None:
        ax.axhline(100 * ref["mAP"], color="black", linewidth=0.8, alpha=0.5)
        ax.axhline(100 * ref["mAP"] * 0.96, color="red", linewidth=0.8, alpha=0.5, linestyle="--")
        ax.text(min(r["bytes_per_embedding"] for r in records), 100 * ref["mAP"] * 0.96, " -4 % of full fp32",
                color="red", fontsize=7, va="bottom")
    ax.axvline(32, color="grey", linewidth=0.8, alpha=0.4)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("bytes per stored embedding (log scale)")
    ax.set_ylabel("mAP (%)")
    ax.set_title("Embedding compression: mAP vs storage")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6, ncol=3, loc="lower right")
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=130)
    plt.close(fig)
    return png


def markdown(data: dict[str, Any], png_name: str | None, command: str | None = None) -> str:
    records = data["records"]
    cfg = data.get("config", {})
    parts = ["# Embedding compression sweep", ""]
    if command:
        parts += ["Commands (in order; a later one resumes the same sweep, skipping finished runs):", "", "```",
                  command, "```", ""]
    train = cfg.get("train", {})
    parts += [f"Backbone {cfg.get('model')} at {tuple(cfg.get('img_size', ()))}, data `{cfg.get('data')}` "
              f"({cfg.get('dataset')}); dense model {cfg.get('epochs')} epochs; slice/low-rank "
              + ("trained from scratch" if cfg.get("from_scratch") else
                 f"fine-tuned from the dense model for {cfg.get('finetune_fraction')} of its epochs") +
              f"; pruning stages {cfg.get('finetune_fraction')} of the epochs each; int8 QAT = "
              f"{cfg.get('qat_epochs')}-epoch fine-tune of each float model; batch {train.get('batch_size')}, "
              f"lr {train.get('lr')}, device {train.get('device')}.", "",
              "Scales are calibrated on the train split; every quantised point is ranked by the runtime codec's "
              "integer distances (1-bit: Hamming; `+int8-rerank`: the Hamming short list of "
              f"{cfg.get('shortlist')} re-ranked by int8 codes, whose bytes are counted). Training seconds: "
              "own = this model's training (for QAT including its float model), total = everything from random "
              "initialisation (the dense model included). Fine-tune epochs: training after the dense model "
              "(QAT included); the control rows are the full model fine-tuned stage after stage with exactly the "
              "methods' fine-tuning schedule and nothing compressed, so a method is compared with the control of "
              "the same fine-tune epochs, not with the less-trained dense model.", "",
              "## Target", "", *target_lines(records), ""]
    if png_name:
        parts += [f"![mAP vs bytes per embedding]({png_name})", ""]
    parts += ["## All runs", "", table(records), ""]
    return "\n".join(parts)


def write_report(data: dict[str, Any], out: Path, md_path: Path | None = None, png_path: Path | None = None,
                 command: str | None = None) -> tuple[Path, Path]:
    """Write the table (``sweep.md``) and plot (``sweep.png``) for ``data`` (the sweep.json content)."""
    md_path = md_path or out / "sweep.md"
    png_path = png_path or out / "sweep.png"
    if data["records"]:
        plot(data["records"], png_path)
    md_path.parent.mkdir(parents=True, exist_ok=True)
    rel = png_path.name if png_path.parent.resolve() == md_path.parent.resolve() else str(png_path)
    write_text_atomic(md_path, markdown(data, rel if data["records"] else None, command) + "\n")
    return md_path, png_path
