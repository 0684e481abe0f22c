"""The iterative prune + fine-tune schedule (seed 003).

Per stage: ``iterations`` rounds of {gathering pass (heads, kv) ; prune ; ``finetune_epochs``
epochs}, then, after the last stage, ``final_epochs`` epochs with a x0.1 step decay. Every
fine-tuning call gets a fresh Adam optimiser (lr 1e-4, weight decay 1e-3 in the seed) because
``engine.fit`` builds one per call, and is distilled from the dense teacher (a frozen copy of the
starting checkpoint) when distillation is on. ``heads+tokens`` runs the head stage first, then
the token stage (``kv`` as in the seed, or ``drop``), both against the same dense teacher.

Outputs in ``out_dir``: the final (best-by-mAP during the final stage) checkpoint, whose config
carries heads per layer / kv positions / drop plan so it rebuilds as is; ``log.jsonl`` +
``summary.json`` of the final stage (from ``engine.fit``); ``prune_log.jsonl`` with one record per
round (what was removed, the structure after it, the fine-tuning log, metrics); and
``prune_summary.json`` (dense vs pruned metrics and structure).
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from ..checkpoint import save_checkpoint, write_json_atomic
from ..engine import DistillConfig, TrainConfig, fit, resolve_device
from ..evaluate import evaluate_model
from .config import PruneConfig
from .modes import STAGES
from .statistics import gather_statistics
from .token_drop_plan import tokens_kept

logger = logging.getLogger(__name__)


def round_train_config(base: TrainConfig, pcfg: PruneConfig, epochs: int, final: bool) -> TrainConfig:
    """Fresh Adam at the pruning lr; constant within a round, step decay in the final stage."""
    steps = pcfg.final_step_epochs
    if final and steps is None:
        steps = [max(1, math.ceil(0.7 * epochs))] if epochs >= 2 else []
    return replace(base, epochs=epochs, optimizer="adam", lr=pcfg.lr, weight_decay=pcfg.weight_decay,
                   warmup_epochs=0.0, schedule="step" if final else "constant", step_epochs=list(steps or []),
                   eval_every=base.eval_every if final else 0)


def stage_plan(bb, pcfg: PruneConfig) -> list[tuple[str, list]]:
    """Per stage, what each round removes: a head count, a key-position count, or the drop rate so far."""
    return [(kind, STAGES[kind].plan(bb, rate, pcfg.iterations)) for kind, rate in pcfg.stages()]


def structure(model) -> dict[str, Any]:
    """Heads, key/value positions and tokens per layer, as the model runs now."""
    model = getattr(model, "module", model)
    bb = model.cfg.backbone
    keys = [len(a.kv_index) if a.kv_index is not None else b.tokens_in
            for a, b in zip(model.backbone.attention_layers(), model.backbone.blocks)]
    return {"heads_per_layer": [b.attn.num_heads for b in model.backbone.blocks], "keys_per_layer": keys,
            "tokens_per_layer": model.backbone.tokens_per_layer, "tokens_out_per_layer": tokens_kept(model),
            "drop_layers": list(bb.drop_layers), "drop_keep": bb.drop_keep if bb.drop_layers else None}


def run_pruning(model, dataset, pcfg: PruneConfig, tcfg: TrainConfig, out_dir: str | Path, teacher=None,
                metadata: dict | None = None, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Prune ``model`` (a trained dense ReIDModel) on ``dataset`` per ``pcfg``; returns the summary.

    ``teacher`` (a frozen dense copy) is used for distillation when ``tcfg.distill`` is enabled. ``log``
    takes the progress lines (default: this module's logger).
    """
    log = log or logger.info
    pcfg.validate()
    plan = stage_plan(model.cfg.backbone, pcfg)  # bad rates fail here, before any work
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plog_path = out / "prune_log.jsonl"
    plog_path.unlink(missing_ok=True)
    device = resolve_device(tcfg.device)
    img_size = tuple(model.cfg.backbone.img_size)
    if teacher is None and tcfg.distill.enabled:
        raise ValueError("distillation is enabled but no teacher was given")
    if teacher is None:
        tcfg = replace(tcfg, distill=DistillConfig())
    start = time.time()

    def write(record: dict[str, Any]) -> None:
        with open(plog_path, "a") as fh:
            fh.write(json.dumps(record) + "\n")

    model.to(device)
    dense_metrics = evaluate_model(model, dataset, img_size, tcfg.eval_batch_size, device) if pcfg.eval_rounds else None
    dense_structure = structure(model)
    write({"round": 0, "stage": "dense", **dense_structure, "metrics": dense_metrics})
    if dense_metrics:
        log(f"dense: rank-1 {dense_metrics['rank1']:.4f}  mAP {dense_metrics['mAP']:.4f}")

    round_no = 0
    for kind, per_round in plan:
        stage = STAGES[kind]
        for r, amount in enumerate(per_round):
            round_no += 1
            t0 = time.time()
            record: dict[str, Any] = {"round": round_no, "stage": kind, "stage_round": r + 1}
            stats = None
            if stage.statistics:
                stats = gather_statistics(model, dataset.train, tcfg.batch_size, device, pcfg.stats_batches,
                                          show_progress=True)
                record["gathered_images"] = stats.images
            model, removed = stage.apply(model, amount, stats, pcfg)
            record.update(removed)
            record.update(structure(model))
            metrics = None
            if pcfg.finetune_epochs > 0:
                with tempfile.TemporaryDirectory(dir=out, prefix=".round-") as tmp:
                    summary = fit(model, dataset, round_train_config(tcfg, pcfg, pcfg.finetune_epochs, False), tmp,
                                  teacher=teacher)
                    record["finetune"] = [json.loads(x) for x in (Path(tmp) / "log.jsonl").read_text().splitlines()]
                metrics = {k: v for k, v in summary["best"].items() if k != "epoch"}
            elif pcfg.eval_rounds:
                metrics = evaluate_model(model, dataset, img_size, tcfg.eval_batch_size, device)
            record["metrics"] = metrics
            record["seconds"] = round(time.time() - t0, 2)
            write(record)
            msg = (f"round {round_no} ({kind} {r + 1}/{len(per_round)}): pruned {stage.describe(amount)}; "
                   f"heads {record['heads_per_layer']}")
            if stage.shows:
                msg += f"; {stage.shows[0]} {record[stage.shows[1]]}"
            if metrics:
                msg += f"; rank-1 {metrics['rank1']:.4f} mAP {metrics['mAP']:.4f}"
            log(msg + f" ({record['seconds']:.0f}s)")

    prune_meta = {"prune": {**asdict(pcfg), "structure": structure(model)}, **(metadata or {})}
    if pcfg.final_epochs > 0:
        summary = fit(model, dataset, round_train_config(tcfg, pcfg, pcfg.final_epochs, True), out,
                      teacher=teacher, metadata=prune_meta)
        final = summary["best"]
    else:
        final = evaluate_model(model, dataset, img_size, tcfg.eval_batch_size, device)
        save_checkpoint(model, out, metadata={"metrics": final, **prune_meta})
    write({"round": round_no + 1, "stage": "final", "epochs": pcfg.final_epochs, "metrics": final})
    result = {"mode": pcfg.mode, "dense": {"metrics": dense_metrics, **dense_structure},
              "pruned": {"metrics": final, **structure(model)}, "rounds": round_no,
              "seconds": round(time.time() - start, 2)}
    write_json_atomic(out / "prune_summary.json", result)
    log(f"final: rank-1 {final['rank1']:.4f}  mAP {final['mAP']:.4f}")
    return result
