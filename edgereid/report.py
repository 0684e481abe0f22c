"""``edgereid report``: the demo's closing tables, read from the files each pipeline step wrote.

For each model under ``--work`` (dense, control, compressed, pruned by default) it reads:

- the training side: ``dense/summary.json``, ``<name>/compress.json`` (the compressed model and
  the *control*: the dense model fine-tuned by the same command for the same epochs with nothing
  compressed, so that compressed-vs-dense deltas are the method's, not the extra epochs'),
  ``pruned/prune_summary.json``: rank-1 / mAP in PyTorch and the epochs each model trained;
- ``bundle-<name>/manifest.json``: bytes per embedding (dim x bits), the open-set threshold;
- ``runtime-<name>/eval.json``: rank-1 / mAP measured by ``reid-runtime eval`` on the device path
  (the artifact reid-runtime picks on this machine, gallery codes, integer distances) and the
  open-set true/false-accept rates of the threshold on queries of enrolled and not-enrolled people;
- ``gallery-<name>.bin``: the gallery store that ``reid-runtime enroll`` wrote;
- ``runtime-<name>/bench-<artifact>/bench.json``: batch-1 embedding latency per backend;
- ``--baselines``: the no-learning baselines (``edgereid baseline --out``), with a plain verdict.

Pure JSON reading (no torch): it prints Markdown tables and writes them beside a JSON copy.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from edgereid.data.atomic import write_json_atomic, write_text_atomic
from edgereid.data.json_file import read_json_object

DEFAULT_MODELS = "dense,control,compressed,pruned"
LABELS = {"dense": "dense", "control": "dense control (same fine-tuning, nothing compressed)",
          "compressed": "compressed embedding", "pruned": "pruned + compressed"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="the demo's summary tables (accuracy vs baselines and control, bytes, open set, latency)",
                       description="Summarise a pipeline run: rank-1 and mAP (PyTorch and on the device path) beside "
                                   "the no-learning baselines and the equal-budget dense control, bytes per embedding, "
                                   "gallery file size, open-set true/false-accept rates, batch-1 latency per backend.")
    p.add_argument("--work", required=True, help="the pipeline's work folder (make's WORK, default runs/demo)")
    p.add_argument("--models", default=DEFAULT_MODELS,
                   help=f"comma-separated model names under WORK (default {DEFAULT_MODELS}; missing ones are skipped)")
    p.add_argument("--baselines", "--baseline", dest="baselines", default=None,
                   help="baselines JSON (`edgereid baseline --out`) to show as the floor the models must beat")
    p.add_argument("--out", default=None, help="Markdown output (default WORK/report.md; JSON beside it)")
    p.set_defaults(func=cmd_report)


def _read(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None when a step did not write it (or wrote something else)."""
    try:
        return read_json_object(path)
    except (OSError, ValueError):
        return None


def _own_epochs(work: Path, name: str) -> int | None:
    """Epochs this step itself trained (dense: from scratch; the others: fine-tuning)."""
    folder = work / name
    if name == "dense":
        return (_read(folder / "summary.json") or {}).get("epochs")
    if (folder / "compress.json").is_file():
        return (_read(folder / "train" / "summary.json") or {}).get("epochs")
    try:
        lines = (folder / "prune_log.jsonl").read_text().splitlines()
    except OSError:
        return None
    epochs = 0
    for line in lines:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        epochs += int(rec.get("epochs") or 0) if isinstance(rec, dict) else 0
    return epochs


# which step each demo model was fine-tuned from (for the epochs column: "24 + 4 + 3")
PARENT = {"control": "dense", "compressed": "dense", "pruned": "compressed"}


def _epochs_text(work: Path, name: str) -> str | None:
    chain, node = [], name
    while node is not None:
        chain.append(_own_epochs(work, node))
        node = PARENT.get(node)
    if any(e is None for e in chain):
        return None
    return " + ".join(str(e) for e in reversed(chain))


def _train_side(work: Path, name: str) -> dict[str, Any]:
    """PyTorch metrics, epochs and training seconds, from whichever training record the folder holds."""
    folder = work / name
    out: dict[str, Any] = {"epochs": _epochs_text(work, name)}
    summary = _read(folder / "summary.json") if name == "dense" else None
    comp = _read(folder / "compress.json")
    pruned = _read(folder / "prune_summary.json")
    if summary:
        best = summary.get("best", {})
        out.update(torch_rank1=best.get("rank1"), torch_mAP=best.get("mAP"), train_seconds=summary.get("train_seconds"))
    elif comp:
        out.update(torch_rank1=comp.get("rank1"), torch_mAP=comp.get("mAP"), train_seconds=comp.get("train_seconds"))
    elif pruned:
        m = (pruned.get("pruned") or {}).get("metrics") or {}
        out.update(torch_rank1=m.get("rank1"), torch_mAP=m.get("mAP"), train_seconds=pruned.get("seconds"))
    return out


def _median_ms(stats: dict[str, Any]) -> float:
    return stats["median_ms"] if "median_ms" in stats else stats["p50_ms"]  # p50_ms: bench.json of older versions


def collect(work: Path, name: str) -> dict[str, Any]:
    row: dict[str, Any] = {"model": name, "label": LABELS.get(name, name), **_train_side(work, name)}
    manifest = _read(work / f"bundle-{name}" / "manifest.json")
    if manifest:
        emb = manifest.get("embedding", {})
        bits = int(emb.get("bits", 32))
        row["dim"] = emb.get("dim")
        row["bits"] = bits
        row["bytes_per_embedding"] = (int(emb["dim"]) * bits + 7) // 8 if emb.get("dim") else None
        torch_acc = (manifest.get("accuracy") or {}).get("torch-fp32") or {}
        row["export_torch_mAP"] = torch_acc.get("mAP")
        row["params"] = (manifest.get("model") or {}).get("params")
        row["macs"] = (manifest.get("model") or {}).get("macs")
        row["open_set_calibration"] = manifest.get("open_set")
    ev = _read(work / f"runtime-{name}" / "eval.json")
    if ev:
        row["artifact"] = ev.get("artifact")
        row["rank1"] = ev["codes"]["rank1"]
        row["mAP"] = ev["codes"]["mAP"]
        row["open_set"] = ev.get("open_set")
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


def present(row: dict[str, Any]) -> bool:
    """Whether any step of this model ran (missing models, e.g. no control, are left out)."""
    return any(row.get(k) is not None for k in ("torch_mAP", "mAP", "bytes_per_embedding"))


def _fmt(v: Any, spec: str = "") -> str:
    if v is None:
        return "-"
    return format(v, spec) if spec else str(v)


def verdicts(rows: list[dict[str, Any]], baselines: dict[str, dict[str, Any]]) -> list[str]:
    """One plain sentence per model and baseline: beaten or not (device metrics, else PyTorch's)."""
    from edgereid.train.baselines import compare

    lines = []
    for r in rows:
        metrics = ({"rank1": r["rank1"], "mAP": r["mAP"]} if r.get("mAP") is not None else
                   {"rank1": r.get("torch_rank1"), "mAP": r.get("torch_mAP")})
        if metrics["mAP"] is None or metrics["rank1"] is None:
            continue
        for v in compare(metrics, baselines):
            lines.append(f"- {r['label']} {v.sentence()}" if v.beaten else f"- **{r['label']} {v.sentence()}**")
    return lines


def to_markdown(rows: list[dict[str, Any]], baselines: dict[str, dict[str, Any]] | None) -> str:
    from edgereid.train.baselines import BASELINES

    head = ["model", "epochs", "rank-1 (PyTorch)", "mAP (PyTorch)", "rank-1 (device)", "mAP (device)", "bytes/embedding"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for r in rows:
        lines.append("| " + " | ".join([r["label"], _fmt(r.get("epochs")), _fmt(r.get("torch_rank1"), ".3f"),
                                        _fmt(r.get("torch_mAP"), ".3f"), _fmt(r.get("rank1"), ".3f"),
                                        _fmt(r.get("mAP"), ".3f"), _fmt(r.get("bytes_per_embedding"))]) + " |")
    for kind, res in (baselines or {}).items():
        label = BASELINES[kind].label if kind in BASELINES else kind
        lines.append(f"| {label} baseline (no learning) | - | {res.get('rank1', 0):.3f} | {res.get('mAP', 0):.3f} "
                     "| - | - | - |")
    lines += ["", "PyTorch: the training-side evaluation (float embedding; the compressed models' integer codes). "
              "Device: `reid-runtime eval` on the query/gallery folders, running the artifact it picks on this "
              "machine (the fastest within the bundle's recorded accuracy tolerance; `artifact run` below), "
              "ranking gallery codes with integer distances. Standard Market-1501 protocol. The control is the dense model "
              "fine-tuned by the compression command for the same epochs with nothing compressed: the compressed "
              "model's delta against it is the method's, its delta against dense includes the extra epochs."]
    if baselines:
        lines += ["", *verdicts(rows, baselines)]
    open_rows = [r for r in rows if r.get("open_set")]
    if open_rows:
        lines += ["", "Open set (`reid-runtime` match/unknown decisions at the bundle's threshold, measured on the "
                  "query identities the threshold was not calibrated on: a seeded half of them enrolled, the others "
                  "are people the gallery does not know):", "",
                  "| model | threshold | target false-accept rate (calibrated on) | true-accept rate | "
                  "misidentified | false-accept rate |", "|---|---:|---:|---:|---:|---:|"]
        for r in open_rows:
            o = r["open_set"]
            cal = (r.get("open_set_calibration") or {}).get("calibration_source")
            lines.append(f"| {r['label']} | {o['threshold']:.3f} | {_fmt(o.get('target_false_accept_rate'), '.3f')}"
                         f"{f' ({cal})' if cal else ''} | "
                         f"{_fmt(o.get('true_accept_rate'), '.3f')} ({o.get('true_accepts')}/{o.get('enrolled_queries')}) | "
                         f"{_fmt(o.get('misidentification_rate'), '.3f')} | {_fmt(o.get('false_accept_rate'), '.3f')} "
                         f"({o.get('false_accepts')}/{o.get('not_enrolled_queries')}) |")
    deployed = [r for r in rows if r.get("gallery_bytes") or r.get("latency_b1_ms")]
    if deployed:
        backends = sorted({b for r in deployed for b in r.get("latency_b1_ms", {})})
        head = ["model", "gallery file", "artifact run"] + [f"{b} b1 ms" for b in backends]
        lines += ["", "| " + " | ".join(head) + " |", "|---|---:|---|" + "---:|" * (len(head) - 3)]
        for r in deployed:
            cells = [r["label"], f"{r['gallery_bytes'] / 1024:.1f} KiB" if r.get("gallery_bytes") else "-",
                     _fmt(r.get("artifact"))]
            cells += [_fmt(r["latency_b1_ms"].get(b), ".2f") for b in backends]
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", "Latency: `reid-runtime bench`, batch 1, median."]
    return "\n".join(lines) + "\n"


def cmd_report(args: argparse.Namespace) -> int:
    from edgereid.train.baselines import read_baselines

    work = Path(args.work)
    if not work.is_dir():
        raise FileNotFoundError(f"--work {work}: no such folder (run the pipeline first: make demo)")
    rows = [collect(work, name.strip()) for name in args.models.split(",") if name.strip()]
    rows = [r for r in rows if present(r)]
    baselines = read_baselines(args.baselines) if args.baselines else None
    md = to_markdown(rows, baselines)
    out = Path(args.out) if args.out else work / "report.md"
    write_text_atomic(out, md)
    write_json_atomic(out.with_suffix(".json"), {"rows": rows, "baselines": baselines})
    print(md)
    print(f"wrote {out} and {out.with_suffix('.json')}")
    return 0
